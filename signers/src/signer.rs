//! The contract every signer implements.

use serde::Serialize;

use crate::{Algorithm, KeyIdentifier, KeyType, SignerError};

/// A key pair a signer just created.
#[derive(Clone, Debug)]
pub struct CreatedKey {
    pub id: KeyIdentifier,
    /// The public key as a DER SubjectPublicKeyInfo.
    pub public_key: Vec<u8>,
    /// How the backend names the key, as the key map records it and hands it back
    /// through [`Signer::recall`]: opaque to everyone but the signer that made it
    /// (PKCS#11 and OpenSSL: the identifier in hex; KMIP: both Unique Identifiers).
    pub handle: String,
}

/// What a signer can say about itself and its backend, for logs and report properties.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SignerInfo {
    /// The configured name.
    pub name: String,
    /// The configured type: "OpenSSL", "PKCS#11" or "KMIP".
    pub signer_type: String,
    /// Free-form facts about the backend: library, version, token label, server, ...
    pub details: Vec<(String, String)>,
}

/// A signer: creates key pairs, signs with them, destroys them, and makes random bytes.
///
/// Keys are addressed by their [`KeyIdentifier`]. Implementations connect lazily: a
/// signer is constructed without touching its backend, and the first call that needs
/// the backend connects. Every method is safe to call from several threads.
pub trait Signer: Send + Sync {
    /// The configured name.
    fn name(&self) -> &str;

    /// Facts about the signer and its backend; connects if needed.
    fn info(&self) -> Result<SignerInfo, SignerError>;

    /// Whether this signer can create keys for and sign with `alg`.
    fn supports(&self, alg: Algorithm) -> Result<bool, SignerError>;

    /// Creates a key pair for `alg`. The private half never leaves the backend.
    fn create_key(&self, alg: Algorithm) -> Result<CreatedKey, SignerError>;

    /// The public key of `key` as a DER SubjectPublicKeyInfo.
    fn public_key(&self, key: &KeyIdentifier) -> Result<Vec<u8>, SignerError>;

    /// Signs `data` (the message, not a digest) with `key` under `alg`.
    ///
    /// Refused with [`crate::ErrorKind::InvalidInput`]: an `alg` whose key type differs
    /// from the key's. ECDSA signatures are returned DER-encoded whatever the backend
    /// produced; RSA and Ed25519 signatures are returned as the backend made them.
    fn sign(
        &self,
        key: &KeyIdentifier,
        alg: Algorithm,
        data: &[u8],
    ) -> Result<Vec<u8>, SignerError>;

    /// Destroys both halves of `key`. A key that does not exist is
    /// [`crate::ErrorKind::NotFound`].
    fn destroy_key(&self, key: &KeyIdentifier) -> Result<(), SignerError>;

    /// `len` random bytes from the backend's generator. A backend without one answers
    /// [`crate::ErrorKind::Unsupported`].
    fn random(&self, len: usize) -> Result<Vec<u8>, SignerError>;

    /// The identifiers of the key pairs this signer's backend holds.
    fn list_keys(&self) -> Result<Vec<KeyIdentifier>, SignerError>;

    /// Whether `key`, as [`Signer::list_keys`] last found it, is a pair whose creation
    /// was interrupted before it was finished (a KMIP pair still under its temporary
    /// names). Such a pair is an orphan that [`Signer::destroy_key`] removes.
    fn is_pending(&self, _key: &KeyIdentifier) -> bool {
        false
    }

    /// Tells the signer the handle recorded for `key` when it was created (its
    /// [`CreatedKey::handle`]), so that later calls on `key` need not search the backend
    /// for it (a KMIP server may have no Locate). A handle the signer does not
    /// recognise (written by an older version, or another signer type) is ignored.
    fn recall(&self, _key: &KeyIdentifier, _handle: &str) {}

    /// Key types this signer found it cannot create, each with the backend's reason.
    /// Learned by trying (a refused Create Key Pair); empty when nothing was refused.
    fn unavailable(&self) -> Vec<(KeyType, String)> {
        Vec::new()
    }
}
