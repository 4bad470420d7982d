//! Backend files (`fixtures/backends/*.yaml`) and the local providers that bring a
//! backend up for one cell.
//!
//! A backend file says how to reach a backend and what it can do (its capability
//! profile). A case that needs a capability the profile lacks is skipped with that
//! reason. Providers give every cell its own backend: the `software` provider a
//! fresh keys directory, the `softhsm` provider a fresh SoftHSMv2 token in its own
//! token directory, with a random label and random PINs, found by label.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::backends::shim::{self, ShimSpec};
use crate::model::suite::{yaml_error, Capability, SuiteError};

/// The JSON Schema of backend files (`fixtures/backend.schema.json`).
///
/// HOOK: for now the committed, hand-written file; the backend and provider types are
/// being rewritten, and this will generate the schema from them as
/// `crate::model::suite::schema` does for suites.
pub fn schema() -> serde_json::Value {
    serde_json::from_str(include_str!("../../../fixtures/backend.schema.json"))
        .expect("fixtures/backend.schema.json is JSON")
}

/// Where Debian and other systems put the SoftHSMv2 module.
pub const SOFTHSM_MODULE_PATHS: &[&str] = &[
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
];

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
        /// Put the PKCS#11 shim in front of the module in every cell, with these
        /// settings (`{}`: trace only), before any settings of the case.
        #[serde(default)]
        shim: Option<ShimSpec>,
    },
    /// Our KMIP-to-PKCS#11 relay (`kmip2pkcs11`, built beside this program) on a fresh
    /// SoftHSMv2 token, TLS 1.3, with generated certificates, on an ephemeral port.
    Relay {
        #[serde(default)]
        module: Option<PathBuf>,
        /// As for `softhsm`: the relay loads the shim in front of the module.
        #[serde(default)]
        shim: Option<ShimSpec>,
        /// Make the relay behave like another KMIP server (its `[testing] mimic`); its
        /// signer then logs in as that server wants and sets `force`.
        #[serde(default)]
        mimic: Option<Mimic>,
    },
    /// A PyKMIP server (`pykmip-server`) with generated certificates, a fresh database
    /// and an ephemeral port. It speaks TLS 1.2 only, so its signer opts in to TLS 1.2.
    Pykmip,
    /// A Cosmian KMS server (`cosmian_kms`, see [`crate::backends::cosmian_config`]) with generated
    /// certificates, a fresh SQLite database and ephemeral loopback ports per instance,
    /// reached over its KMIP socket server with the signer's default (TLS 1.3) settings.
    Cosmian,
}

/// A KMIP server the relay can stand in for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum Mimic {
    /// The seed-003 relay as released (cascade-hsm-bridge 0.1.0-alpha): Discover
    /// Versions, Query, Create Key Pair, Activate, Get, Sign and Modify Attribute only;
    /// General Failure on attributes it does not parse; fixed key formats; username =
    /// token label, password = user PIN.
    #[serde(rename = "seed-003")]
    Seed003,
}

impl Mimic {
    /// The value of the relay's `[testing] mimic`.
    pub fn name(self) -> &'static str {
        match self {
            Mimic::Seed003 => "seed-003",
        }
    }
}

/// The relay binary: next to this program (cargo puts all of a workspace's binaries
/// in one directory).
pub fn relay_binary() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let dir = exe.parent().ok_or("this program has no directory")?;
    // Integration tests run from target/<profile>/deps.
    for candidate in [dir.join("kmip2pkcs11"), dir.join("../kmip2pkcs11")] {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(format!(
        "kmip2pkcs11 is not built next to {} (cargo build -p kmip-relay)",
        exe.display()
    ))
}

/// The PyKMIP server program, from PATH.
pub fn pykmip_server() -> Result<PathBuf, String> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("pykmip-server"))
        .find(|p| p.is_file())
        .ok_or_else(|| "pykmip-server not found (install python3-pykmip)".to_string())
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
        if let Provider::Softhsm {
            shim: Some(shim), ..
        }
        | Provider::Relay {
            shim: Some(shim), ..
        } = &raw.provider
        {
            shim.check().map_err(|m| SuiteError {
                file: path.display().to_string(),
                line: 0,
                column: 0,
                message: format!("provider shim: {m}"),
            })?;
        }
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
            Provider::Relay { .. } => "relay",
            Provider::Pykmip => "pykmip",
            Provider::Cosmian => "cosmian",
        }
    }

    /// Why this backend cannot start on this machine, if it cannot.
    pub fn unavailable_reason(&self) -> Option<String> {
        match &self.provider {
            Provider::Software => None,
            Provider::Softhsm { module, shim } => softhsm_module(module.as_deref())
                .and_then(|_| shim.as_ref().map_or(Ok(()), |_| shim::library().map(drop)))
                .err(),
            Provider::Relay { module, shim, .. } => softhsm_module(module.as_deref())
                .and_then(|_| relay_binary())
                .and_then(|_| shim.as_ref().map_or(Ok(()), |_| shim::library().map(drop)))
                .err(),
            Provider::Pykmip => pykmip_server().err(),
            Provider::Cosmian => crate::backends::cosmian_config::binary().err(),
        }
    }

    /// The shim settings the provider puts in front of every cell's module, if any.
    pub fn shim(&self) -> Option<&ShimSpec> {
        match &self.provider {
            Provider::Softhsm { shim, .. } | Provider::Relay { shim, .. } => shim.as_ref(),
            Provider::Software | Provider::Pykmip | Provider::Cosmian => None,
        }
    }

    /// The first capability of `needed` this backend's profile lacks.
    pub fn missing(&self, needed: &[Capability]) -> Option<Capability> {
        needed
            .iter()
            .copied()
            .find(|c| !self.capabilities.contains(c))
    }

    /// The capability profile says the backend holds login credentials.
    pub fn has(&self, c: Capability) -> bool {
        self.capabilities.contains(&c)
    }
}

pub(crate) fn softhsm_module(configured: Option<&Path>) -> Result<PathBuf, String> {
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

pub(crate) fn random_hex(bytes: usize) -> String {
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
