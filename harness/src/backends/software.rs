//! Provider `software`: the software signer (configuration type "OpenSSL") with a fresh
//! keys directory per instance. No server, no credentials; keys are files, so the
//! harness can wipe the directory and put an impostor key under a key's file name.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use hsm_signers::config::{OpenSslConfig, SignerKind};
use hsm_signers::software::SoftwareSigner;
use hsm_signers::{Algorithm, KeyIdentifier, Signer};
use serde::Deserialize;

use super::server::Runtime;
use super::{CellBackend, Instance, Provider, SignerOptions};
use crate::model::suite::{Capability, InstanceSpec};
use crate::oracle_terms;

/// The software signer (configuration type "OpenSSL") with a fresh keys directory per
/// instance. No settings: `provider: software`.
#[derive(Clone, Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Software {}

impl Provider for Software {
    /// Nothing to start.
    fn start_cost(&self) -> u32 {
        0
    }

    fn name(&self) -> &'static str {
        "software"
    }

    fn signer_type(&self) -> super::SignerType {
        super::SignerType::Software
    }

    fn administers(&self) -> &'static [Capability] {
        &[Capability::ReplaceKeys]
    }

    fn open(&self, _workdir: &Path, _runtime: &Runtime) -> anyhow::Result<Box<dyn CellBackend>> {
        Ok(Box::new(SoftwareCell))
    }
}

struct SoftwareCell;

impl CellBackend for SoftwareCell {
    fn make(
        &mut self,
        name: &str,
        dir: &Path,
        _spec: &InstanceSpec,
    ) -> anyhow::Result<Box<dyn Instance>> {
        Ok(Box::new(KeysDir {
            name: name.to_string(),
            workdir: dir.to_path_buf(),
            keys_dir: dir.join("keys"),
        }))
    }
}

/// An instance: a keys directory.
struct KeysDir {
    name: String,
    workdir: PathBuf,
    keys_dir: PathBuf,
}

impl Instance for KeysDir {
    fn signer_kind(&self, _options: &SignerOptions<'_>) -> anyhow::Result<SignerKind> {
        Ok(SignerKind::OpenSsl(OpenSslConfig {
            keys_dir: Some(self.keys_dir.clone()),
        }))
    }

    fn inventory(&mut self) -> anyhow::Result<Vec<KeyIdentifier>> {
        inventory(&self.keys_dir)
    }

    fn wipe(&mut self) -> anyhow::Result<()> {
        if self.keys_dir.exists() {
            std::fs::remove_dir_all(&self.keys_dir)
                .with_context(|| format!("wiping {}", self.keys_dir.display()))?;
        }
        Ok(())
    }

    fn change_credentials(&mut self) -> anyhow::Result<()> {
        bail!("instance '{}' has no credentials to change", self.name)
    }

    fn replace_key(&mut self, id: &KeyIdentifier, alg: Algorithm) -> anyhow::Result<()> {
        replace_key(&self.workdir, &self.keys_dir, id, alg)
    }

    fn start_server(&mut self) -> anyhow::Result<()> {
        bail!("instance '{}' has no server process", self.name)
    }
}

/// The identifiers of the keys in `dir`, sorted (a missing directory holds none):
/// each `*.key` file is read and its identifier computed by the oracle from the key
/// material (PKCS#8), not taken from the file name, so a signer that files a key
/// under the wrong name is caught. A file the oracle cannot read is an error.
pub(crate) fn inventory(dir: &Path) -> anyhow::Result<Vec<KeyIdentifier>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(anyhow!("listing {}: {e}", dir.display())),
    };
    let mut ids = Vec::new();
    for entry in entries {
        let path = entry
            .with_context(|| format!("listing {}", dir.display()))?
            .path();
        if path.extension().and_then(|e| e.to_str()) != Some("key") {
            continue;
        }
        let der = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let spki = oracle::public_key::of_pkcs8(&der)
            .map_err(|e| anyhow!("key file {}: {e}", path.display()))?;
        let id = oracle::KeyId::of_spki(&spki).map_err(|e| anyhow!("{e}"))?;
        ids.push(oracle_terms::key_identifier(id));
    }
    ids.sort();
    Ok(ids)
}

/// Puts the key file of a new key pair where key `id` was: same name, other key.
pub(crate) fn replace_key(
    workdir: &Path,
    keys_dir: &Path,
    id: &KeyIdentifier,
    alg: Algorithm,
) -> anyhow::Result<()> {
    let scratch = workdir.join("impostor");
    let other = SoftwareSigner::new("impostor", scratch.clone());
    let made = other.create_key(alg).map_err(|e| anyhow!("{e}"))?;
    std::fs::copy(
        scratch.join(format!("{}.key", made.id)),
        keys_dir.join(format!("{id}.key")),
    )
    .context("putting the impostor key in place")?;
    Ok(())
}
