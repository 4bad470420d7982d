//! The KMIP signer. Configuration parses today; connecting lands with the KMIP signer
//! issue, so until then every operation answers [`ErrorKind::Unsupported`] with a
//! message that says so, and nothing pretends to work.

use crate::config::KmipConfig;
use crate::{Algorithm, CreatedKey, ErrorKind, KeyIdentifier, Signer, SignerError, SignerInfo};

pub struct KmipSigner {
    name: String,
    config: KmipConfig,
}

impl KmipSigner {
    pub fn new(name: &str, config: &KmipConfig) -> Self {
        Self {
            name: name.to_string(),
            config: config.clone(),
        }
    }

    fn not_yet(&self) -> SignerError {
        SignerError::new(
            ErrorKind::Unsupported,
            format!(
                "signer '{}': the KMIP signer type is not supported yet (server {}:{})",
                self.name, self.config.host, self.config.port
            ),
        )
    }
}

impl Signer for KmipSigner {
    fn name(&self) -> &str {
        &self.name
    }
    fn info(&self) -> Result<SignerInfo, SignerError> {
        Ok(SignerInfo {
            name: self.name.clone(),
            signer_type: "KMIP".into(),
            details: vec![
                ("host".into(), self.config.host.clone()),
                ("port".into(), self.config.port.to_string()),
                ("state".into(), "not supported yet".into()),
            ],
        })
    }
    fn supports(&self, _alg: Algorithm) -> Result<bool, SignerError> {
        Ok(false)
    }
    fn create_key(&self, _alg: Algorithm) -> Result<CreatedKey, SignerError> {
        Err(self.not_yet())
    }
    fn public_key(&self, _key: &KeyIdentifier) -> Result<Vec<u8>, SignerError> {
        Err(self.not_yet())
    }
    fn sign(&self, _: &KeyIdentifier, _: Algorithm, _: &[u8]) -> Result<Vec<u8>, SignerError> {
        Err(self.not_yet())
    }
    fn destroy_key(&self, _key: &KeyIdentifier) -> Result<(), SignerError> {
        Err(self.not_yet())
    }
    fn random(&self, _len: usize) -> Result<Vec<u8>, SignerError> {
        Err(self.not_yet())
    }
    fn list_keys(&self) -> Result<Vec<KeyIdentifier>, SignerError> {
        Err(self.not_yet())
    }
}
