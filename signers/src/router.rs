//! The signer router: which signer creates new keys, which one owns a key, where
//! random values come from.
//!
//! Roles follow seed 001: the default signer creates every new key; with several
//! signers it must be named. When the default is not an OpenSSL signer and no one-off
//! signer is named, an OpenSSL signer is added for one-off keys, and it also answers
//! for OpenSSL keys made before the HSM was configured.
//!
//! Ownership is found by asking each signer whether it holds the key. The persistent
//! key map and signer identity binding come with the router issue; until then a key
//! is owned by the first signer, in configuration order, that has it.

use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use crate::config::{SignerConfig, SignerKind, SignerSetup};
use crate::kmip::KmipSigner;
use crate::pkcs11::Pkcs11Signer;
use crate::software::SoftwareSigner;
use crate::{Algorithm, CreatedKey, ErrorKind, KeyIdentifier, Signer, SignerError};

/// Name of the OpenSSL signer the router adds for one-off keys when none is configured.
pub const ONE_OFF_FALLBACK_NAME: &str = "OpenSSL one-off signer";

/// The configured signers and their roles.
pub struct Router {
    signers: Vec<Arc<dyn Signer>>,
    default_signer: usize,
    one_off_signer: usize,
    /// The OpenSSL signer used when the default signer has no random generator.
    software_signer: Arc<dyn Signer>,
}

/// One key as `list` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct KeyListing {
    pub key: KeyIdentifier,
    pub signer: String,
}

/// Builds the signer a configuration entry describes; nothing is connected yet.
///
/// `state` is where signers keep what they persist (OpenSSL key files by default).
pub fn build_signer(config: &SignerConfig, state: &Path) -> Arc<dyn Signer> {
    match &config.kind {
        SignerKind::OpenSsl(c) => Arc::new(SoftwareSigner::new(
            &config.name,
            c.keys_dir.clone().unwrap_or_else(|| state.join("keys")),
        )),
        SignerKind::Pkcs11(c) => Arc::new(Pkcs11Signer::new(&config.name, c)),
        SignerKind::Kmip(c) => Arc::new(KmipSigner::new(&config.name, c)),
    }
}

impl Router {
    /// The router for `setup`, with signer state under `state`. Connects to nothing.
    pub fn new(setup: &SignerSetup, state: &Path) -> Self {
        let mut signers: Vec<Arc<dyn Signer>> = setup
            .signers
            .iter()
            .map(|c| build_signer(c, state))
            .collect();
        let default_signer = setup.default_signer;
        let is_software = |i: usize| matches!(setup.signers[i].kind, SignerKind::OpenSsl(_));
        let configured_software = (0..setup.signers.len()).find(|&i| is_software(i));
        let one_off_signer = match setup.one_off_signer {
            Some(i) => i,
            None if is_software(default_signer) => default_signer,
            None => configured_software.unwrap_or_else(|| {
                // Seed 001: this signer also finds OpenSSL keys made before the HSM.
                signers.push(Arc::new(SoftwareSigner::new(
                    ONE_OFF_FALLBACK_NAME,
                    state.join("keys"),
                )));
                signers.len() - 1
            }),
        };
        // Random values must not fail for want of an HSM RNG, even when no OpenSSL
        // signer takes part in key ownership.
        let software_signer = match configured_software {
            Some(i) => signers[i].clone(),
            None if one_off_signer >= setup.signers.len() || is_software(one_off_signer) => {
                signers[one_off_signer].clone()
            }
            None => Arc::new(SoftwareSigner::new("OpenSSL random", state.join("keys"))),
        };
        tracing::info!(
            signers = %signers.iter().map(|s| s.name().to_string()).collect::<Vec<_>>().join(", "),
            default = signers[default_signer].name(),
            one_off = signers[one_off_signer].name(),
            "configured signers (not connected yet)"
        );
        Router {
            signers,
            default_signer,
            one_off_signer,
            software_signer,
        }
    }

    pub fn signers(&self) -> &[Arc<dyn Signer>] {
        &self.signers
    }

    pub fn default_signer(&self) -> &Arc<dyn Signer> {
        &self.signers[self.default_signer]
    }

    pub fn one_off_signer(&self) -> &Arc<dyn Signer> {
        &self.signers[self.one_off_signer]
    }

    /// Creates a key with the default signer.
    pub fn create_key(&self, alg: Algorithm) -> Result<CreatedKey, SignerError> {
        self.default_signer().create_key(alg)
    }

    /// The signer that holds `key`.
    ///
    /// Refused with [`ErrorKind::NotFound`] when no signer has it; when some signer
    /// could not be asked (unreachable), the error says so, since the key may be there.
    pub fn owner(&self, key: &KeyIdentifier) -> Result<&Arc<dyn Signer>, SignerError> {
        let mut unreachable = Vec::new();
        for s in &self.signers {
            match s.public_key(key) {
                Ok(_) => return Ok(s),
                Err(e) if e.kind == ErrorKind::NotFound => {}
                Err(e) => unreachable.push(format!("'{}': {e}", s.name())),
            }
        }
        let mut message = format!("no configured signer has key {key}");
        if !unreachable.is_empty() {
            message.push_str(&format!("; could not ask {}", unreachable.join("; ")));
        }
        Err(SignerError::new(ErrorKind::NotFound, message))
    }

    pub fn public_key(&self, key: &KeyIdentifier) -> Result<Vec<u8>, SignerError> {
        self.owner(key)?.public_key(key)
    }

    pub fn sign(
        &self,
        key: &KeyIdentifier,
        alg: Algorithm,
        data: &[u8],
    ) -> Result<Vec<u8>, SignerError> {
        self.owner(key)?.sign(key, alg, data)
    }

    pub fn destroy_key(&self, key: &KeyIdentifier) -> Result<(), SignerError> {
        self.owner(key)?.destroy_key(key)
    }

    /// Random bytes from the default signer, or from the OpenSSL signer when the
    /// default has no generator. Never fails because an HSM lacks an RNG.
    pub fn random(&self, len: usize) -> Result<Vec<u8>, SignerError> {
        match self.default_signer().random(len) {
            Err(e) if e.kind == ErrorKind::Unsupported => {
                tracing::info!(
                    signer = self.default_signer().name(),
                    "no random generator ({e}); using the OpenSSL signer"
                );
                self.software_signer.random(len)
            }
            other => other,
        }
    }

    /// Every key of every reachable signer; unreachable signers are reported apart.
    pub fn list(&self) -> (Vec<KeyListing>, Vec<(String, SignerError)>) {
        let mut keys = Vec::new();
        let mut errors = Vec::new();
        for s in &self.signers {
            match s.list_keys() {
                Ok(ids) => keys.extend(ids.into_iter().map(|key| KeyListing {
                    key,
                    signer: s.name().to_string(),
                })),
                Err(e) => errors.push((s.name().to_string(), e)),
            }
        }
        (keys, errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(text: &str) -> SignerSetup {
        SignerSetup::parse(text, "test.conf").unwrap()
    }

    #[test]
    fn single_hsm_default_gets_an_openssl_one_off_signer() {
        let dir = tempfile::tempdir().unwrap();
        let r = Router::new(
            &setup("[[signers]]\ntype = \"PKCS#11\"\nname = \"hsm\"\nlib_path = \"/nonexistent.so\"\nslot = 1\n"),
            dir.path(),
        );
        assert_eq!(r.default_signer().name(), "hsm");
        assert_eq!(r.one_off_signer().name(), ONE_OFF_FALLBACK_NAME);
    }

    #[test]
    fn random_falls_back_when_the_default_cannot() {
        let dir = tempfile::tempdir().unwrap();
        let r = Router::new(
            &setup("[[signers]]\ntype = \"KMIP\"\nname = \"k\"\nhost = \"localhost\"\n"),
            dir.path(),
        );
        assert_eq!(r.random(16).unwrap().len(), 16);
    }

    #[test]
    fn keys_are_found_at_their_owner() {
        let dir = tempfile::tempdir().unwrap();
        let text = "default_signer = \"a\"\n[[signers]]\ntype = \"OpenSSL\"\nname = \"a\"\nkeys_dir = \"KA\"\n[[signers]]\ntype = \"OpenSSL\"\nname = \"b\"\nkeys_dir = \"KB\"\n"
            .replace("KA", &dir.path().join("a").display().to_string())
            .replace("KB", &dir.path().join("b").display().to_string());
        let r = Router::new(&setup(&text), dir.path());
        let k = r.create_key(Algorithm::EcdsaP256Sha256).unwrap();
        assert_eq!(r.owner(&k.id).unwrap().name(), "a");
        r.destroy_key(&k.id).unwrap();
        assert_eq!(r.owner(&k.id).unwrap_err().kind, ErrorKind::NotFound);
    }
}
