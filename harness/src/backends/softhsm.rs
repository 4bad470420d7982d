//! Provider `softhsm`: a fresh SoftHSMv2 token per instance, in a token directory of
//! the cell's own, reached through the PKCS#11 signer; optionally with the PKCS#11
//! shim in front of the module in every cell.

use std::path::{Path, PathBuf};

use anyhow::bail;
use hsm_signers::config::{Pkcs11Config, SignerKind, SlotSelector};
use hsm_signers::{Algorithm, KeyIdentifier};
use serde::Deserialize;

use super::container::p11_kit_client;
use super::server::Runtime;
use super::shim::{self, ShimSpec};
use super::token::{softhsm_module, Module, Token};
use super::{CellBackend, Instance, Provider, SignerOptions};
use crate::model::backend::Placement;
use crate::model::suite::{Capability, InstanceSpec};

/// A fresh SoftHSMv2 token per instance, in a token directory of the cell's own,
/// through the PKCS#11 signer: `provider: { softhsm: { module, shim } }`.
#[derive(Clone, Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Softhsm {
    /// The SoftHSMv2 module; default: the first of the usual Debian paths that exists.
    #[serde(default)]
    pub module: Option<PathBuf>,
    /// Put the PKCS#11 shim in front of the module in every cell, with these settings
    /// (`{}`: trace only), before any settings of the case.
    #[serde(default)]
    pub shim: Option<ShimSpec>,
}

impl Provider for Softhsm {
    fn name(&self) -> &'static str {
        "softhsm"
    }

    fn check(&self) -> Result<(), String> {
        match &self.shim {
            Some(s) => s.check().map_err(|m| format!("provider shim: {m}")),
            None => Ok(()),
        }
    }

    fn signer_type(&self) -> super::SignerType {
        super::SignerType::Pkcs11
    }

    fn administers(&self) -> &'static [Capability] {
        &[
            Capability::Credentials,
            Capability::ReplaceKeys,
            Capability::Pkcs11Shim,
            Capability::Pkcs11,
        ]
    }

    fn unavailable_reason(&self, placement: Placement) -> Option<String> {
        let module = match placement {
            Placement::Local => softhsm_module(self.module.as_deref()).map(drop),
            Placement::Container => p11_kit_client().map(drop),
        };
        module
            .and_then(|_| {
                self.shim
                    .as_ref()
                    .map_or(Ok(()), |_| shim::library().map(drop))
            })
            .err()
    }

    /// The `softhsm2` image, one container per cell serving its tokens over p11-kit.
    fn container_twin(&self) -> bool {
        true
    }

    fn container_lacks(&self) -> &'static [(Capability, &'static str)] {
        P11_KIT_LACKS
    }

    fn shim(&self) -> Option<&ShimSpec> {
        self.shim.as_ref()
    }

    fn open(&self, workdir: &Path, runtime: &Runtime) -> anyhow::Result<Box<dyn CellBackend>> {
        Ok(Box::new(SofthsmCell {
            module: Module::prepare(self.module.as_deref(), workdir, runtime)?,
        }))
    }
}

/// What the p11-kit client cannot carry to a `softhsm2` container.
pub(crate) const P11_KIT_LACKS: &[(Capability, &str)] = &[(
    Capability::Ed25519,
    "p11-kit 0.24's RPC (the softhsm2 container's socket) passes neither CKM_EC_EDWARDS_KEY_PAIR_GEN nor CKM_EDDSA",
)];

struct SofthsmCell {
    module: Module,
}

impl CellBackend for SofthsmCell {
    fn make(
        &mut self,
        name: &str,
        _dir: &Path,
        _spec: &InstanceSpec,
    ) -> anyhow::Result<Box<dyn Instance>> {
        Ok(Box::new(TokenInstance {
            name: name.to_string(),
            token: self.module.new_token(name)?,
            signer_module: self.module.signer_module(),
        }))
    }

    fn module(&self) -> Option<&Module> {
        Some(&self.module)
    }

    fn module_mut(&mut self) -> Option<&mut Module> {
        Some(&mut self.module)
    }

    fn properties(&self) -> Vec<(String, String)> {
        self.module.properties()
    }
}

/// An instance: one token.
struct TokenInstance {
    name: String,
    token: Token,
    /// The module the signer loads (the shim, when the cell has one).
    signer_module: PathBuf,
}

impl Instance for TokenInstance {
    fn signer_kind(&self, options: &SignerOptions<'_>) -> anyhow::Result<SignerKind> {
        Ok(SignerKind::Pkcs11(Pkcs11Config {
            lib_path: self.signer_module.clone(),
            slot: SlotSelector::Label(self.token.label.clone()),
            user_pin: Some(self.token.pin_source()),
            login: true,
            force: options.pkcs11.and_then(|o| o.force).unwrap_or(false),
        }))
    }

    fn inventory(&mut self) -> anyhow::Result<Vec<KeyIdentifier>> {
        self.token.inventory()
    }

    fn wipe(&mut self) -> anyhow::Result<()> {
        self.token.wipe()
    }

    fn change_credentials(&mut self) -> anyhow::Result<()> {
        self.token.change_pin()
    }

    fn replace_key(&mut self, id: &KeyIdentifier, alg: Algorithm) -> anyhow::Result<()> {
        self.token.replace_key(id, alg)
    }

    fn start_server(&mut self) -> anyhow::Result<()> {
        bail!("instance '{}' has no server process", self.name)
    }

    fn properties(&self) -> Vec<(String, String)> {
        vec![("token_label".to_string(), self.token.label.clone())]
    }

    fn probe(&mut self) -> anyhow::Result<Vec<super::Observed>> {
        self.token.probe()
    }

    fn describe(&mut self) -> anyhow::Result<super::Description> {
        self.token.describe()
    }
}
