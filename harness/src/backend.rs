//! Backend files (`fixtures/backends/*.yaml`) and the local providers that bring a
//! backend up for one cell.
//!
//! A backend file says how to reach a backend and what it can do (its capability
//! profile). A case that needs a capability the profile lacks is skipped with that
//! reason. Providers give every cell its own backend: the `software` provider a
//! fresh keys directory, the `softhsm` provider a fresh SoftHSMv2 token in its own
//! token directory, with a random label and random PINs, found by label.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use hsm_signers::config::{OpenSslConfig, Pkcs11Config, SignerConfig, SignerKind, SlotSelector};
use hsm_signers::{Secret, SignerSetup};
use serde::Deserialize;

use crate::suite::{yaml_error, Capability, SuiteError};

/// Where Debian and other systems put the SoftHSMv2 module.
pub const SOFTHSM_MODULE_PATHS: &[&str] = &[
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
];

/// The environment variable a cell's signer configuration reads its PIN from.
pub const CELL_PIN_ENV: &str = "HSM_HARNESS_CELL_PIN";

/// A backend file, loaded.
#[derive(Clone, Debug)]
pub struct Backend {
    pub name: String,
    pub about: String,
    pub path: PathBuf,
    pub provider: Provider,
    pub capabilities: Vec<Capability>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    backend: String,
    about: String,
    provider: Provider,
    capabilities: Vec<Capability>,
}

/// How the backend comes up for a cell.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Provider {
    /// The software (OpenSSL-type) signer with a fresh keys directory.
    Software,
    /// A fresh SoftHSMv2 token per cell.
    Softhsm {
        /// The module; default: the first of [`SOFTHSM_MODULE_PATHS`] that exists.
        #[serde(default)]
        module: Option<PathBuf>,
    },
}

/// A backend brought up for one cell: the signer configuration that reaches it and
/// facts for the report.
pub struct Provisioned {
    pub setup: SignerSetup,
    pub properties: Vec<(String, String)>,
}

impl Backend {
    pub fn load(path: &Path) -> Result<Backend, SuiteError> {
        let text = std::fs::read_to_string(path).map_err(|e| SuiteError {
            file: path.display().to_string(),
            line: 0,
            column: 0,
            message: format!("cannot read: {e}"),
        })?;
        let raw: RawBackend = serde_saphyr::from_str(&text).map_err(|e| yaml_error(path, &e))?;
        Ok(Backend {
            name: raw.backend,
            about: raw.about,
            path: path.to_path_buf(),
            provider: raw.provider,
            capabilities: raw.capabilities,
        })
    }

    pub fn provider_name(&self) -> &'static str {
        match self.provider {
            Provider::Software => "software",
            Provider::Softhsm { .. } => "softhsm",
        }
    }

    /// Why this backend cannot start on this machine, if it cannot.
    pub fn unavailable_reason(&self) -> Option<String> {
        match &self.provider {
            Provider::Software => None,
            Provider::Softhsm { module } => softhsm_module(module.as_deref()).err(),
        }
    }

    /// The first capability of `needed` this backend's profile lacks.
    pub fn missing(&self, needed: &[Capability]) -> Option<Capability> {
        needed
            .iter()
            .copied()
            .find(|c| !self.capabilities.contains(c))
    }

    /// Brings the backend up for one cell whose private directory is `workdir`.
    ///
    /// For `softhsm` this sets `SOFTHSM2_CONF` and [`CELL_PIN_ENV`] in this process, so
    /// it must run in the cell's own process before any signer loads the module.
    pub fn provision(&self, workdir: &Path) -> anyhow::Result<Provisioned> {
        let mut properties = vec![
            ("backend".to_string(), self.name.clone()),
            ("provider".to_string(), self.provider_name().to_string()),
        ];
        let kind = match &self.provider {
            Provider::Software => SignerKind::OpenSsl(OpenSslConfig {
                keys_dir: Some(workdir.join("keys")),
            }),
            Provider::Softhsm { module } => {
                let module = softhsm_module(module.as_deref()).map_err(|e| anyhow!(e))?;
                let token = fresh_softhsm_token(&module, workdir)?;
                properties.push(("module".into(), module.display().to_string()));
                properties.push(("token_label".into(), token.label.clone()));
                // The PIN reaches the signer through the environment, never argv or logs.
                std::env::set_var(CELL_PIN_ENV, &token.user_pin);
                SignerKind::Pkcs11(Pkcs11Config {
                    lib_path: module,
                    slot: SlotSelector::Label(token.label),
                    user_pin: Some(Secret::Env(CELL_PIN_ENV.into())),
                    login: true,
                })
            }
        };
        Ok(Provisioned {
            setup: SignerSetup {
                signers: vec![SignerConfig {
                    name: self.name.clone(),
                    kind,
                }],
                default_signer: 0,
                one_off_signer: None,
                retry: Default::default(),
            },
            properties,
        })
    }
}

fn softhsm_module(configured: Option<&Path>) -> Result<PathBuf, String> {
    match configured {
        Some(p) if p.exists() => Ok(p.to_path_buf()),
        Some(p) => Err(format!(
            "SoftHSMv2 module {} not found (install softhsm2)",
            p.display()
        )),
        None => SOFTHSM_MODULE_PATHS
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .ok_or_else(|| {
                format!(
                    "SoftHSMv2 module not found in {} (install softhsm2)",
                    SOFTHSM_MODULE_PATHS.join(", ")
                )
            }),
    }
}

struct FreshToken {
    label: String,
    user_pin: String,
}

/// Creates a token directory and configuration under `workdir`, points
/// `SOFTHSM2_CONF` at it, and initialises one token with random PINs.
///
/// The module is finalised afterwards so that the signer starts from a clean
/// C_Initialize, as it would against any HSM.
fn fresh_softhsm_token(module: &Path, workdir: &Path) -> anyhow::Result<FreshToken> {
    let dir = workdir.join("softhsm");
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens).with_context(|| format!("creating {}", tokens.display()))?;
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
            tokens.display()
        ),
    )
    .with_context(|| format!("writing {}", conf.display()))?;
    std::env::set_var("SOFTHSM2_CONF", &conf);

    let label = format!("hsm-harness-{}", random_hex(4));
    let so_pin = random_hex(8);
    let user_pin = random_hex(8);
    let p11 = Pkcs11::new(module).with_context(|| format!("loading {}", module.display()))?;
    p11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .context("C_Initialize")?;
    let slot = p11
        .get_slots_with_token()
        .context("C_GetSlotList")?
        .into_iter()
        .find(|s| {
            p11.get_token_info(*s)
                .map(|t| !t.token_initialized())
                .unwrap_or(false)
        })
        .ok_or_else(|| anyhow!("SoftHSMv2 offers no uninitialised token slot"))?;
    p11.init_token(slot, &AuthPin::from(so_pin.clone()), &label)
        .context("C_InitToken")?;
    // After C_InitToken SoftHSMv2 moves the token to a new slot: find it by label.
    let slot = p11
        .get_slots_with_token()
        .context("C_GetSlotList")?
        .into_iter()
        .find(|s| {
            p11.get_token_info(*s)
                .map(|t| t.label().trim_end() == label)
                .unwrap_or(false)
        })
        .ok_or_else(|| anyhow!("token '{label}' not found after C_InitToken"))?;
    {
        let session = p11.open_rw_session(slot).context("C_OpenSession")?;
        session
            .login(UserType::So, Some(&AuthPin::from(so_pin)))
            .context("C_Login(SO)")?;
        session
            .init_pin(&AuthPin::from(user_pin.clone()))
            .context("C_InitPIN")?;
        session.logout().context("C_Logout")?;
    }
    p11.finalize().context("C_Finalize")?;
    Ok(FreshToken { label, user_pin })
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::Rng::fill(&mut rand::thread_rng(), buf.as_mut_slice());
    hex::encode(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_file_loads_with_its_profile() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b.yaml");
        std::fs::write(
            &p,
            "backend: soft\nabout: x\nprovider: software\ncapabilities: [rsa2048, random]\n",
        )
        .unwrap();
        let b = Backend::load(&p).unwrap();
        assert_eq!(b.name, "soft");
        assert_eq!(b.missing(&[Capability::Rsa2048]), None);
        assert_eq!(
            b.missing(&[Capability::Rsa2048, Capability::Ed25519]),
            Some(Capability::Ed25519)
        );
    }

    #[test]
    fn unknown_provider_names_the_allowed_ones() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b.yaml");
        std::fs::write(
            &p,
            "backend: x\nabout: x\nprovider: cloud\ncapabilities: []\n",
        )
        .unwrap();
        let e = Backend::load(&p).unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        assert!(e.message.contains("software"), "{e}");
    }
}
