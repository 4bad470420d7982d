//! Signer identity: the key pair that proves a backend is the one a signer id names.
//!
//! On first connect the router creates an identity key in the backend and signs a
//! fresh random challenge with it. On later connects a backend is bound to a recorded
//! signer id only if the identity key exists there **and** signs a fresh challenge that
//! verifies with the public key recorded at registration. The check uses the recorded
//! public key, never the one the backend reports now, so a different key pair placed
//! under the identity key's handle does not bind.

use aws_lc_rs::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use spki::SubjectPublicKeyInfoRef;

use crate::{Algorithm, KeyIdentifier, Signer, SignerError};

/// A fresh random challenge, from the local generator (not the backend's, which is
/// what is being tested).
pub fn challenge() -> Result<[u8; 32], SignerError> {
    let mut c = [0u8; 32];
    aws_lc_rs::rand::fill(&mut c)
        .map_err(|_| SignerError::backend("the local random generator failed"))?;
    Ok(c)
}

/// The algorithm for a new identity key: ECDSA P-256 when the backend has it (fast),
/// else RSA-2048 (every backend we accept has it).
pub fn identity_algorithm(signer: &dyn Signer) -> Result<Algorithm, SignerError> {
    Ok(if signer.supports(Algorithm::EcdsaP256Sha256)? {
        Algorithm::EcdsaP256Sha256
    } else {
        Algorithm::Rsa2048Pkcs1Sha256
    })
}

/// Whether `sig` over `data` verifies under the DER SubjectPublicKeyInfo `spki`.
pub fn verifies(spki: &[u8], alg: Algorithm, data: &[u8], sig: &[u8]) -> bool {
    let Ok(spki) = SubjectPublicKeyInfoRef::try_from(spki) else {
        return false;
    };
    let Some(key) = spki.subject_public_key.as_bytes() else {
        return false;
    };
    let verifier: &'static dyn VerificationAlgorithm = match alg {
        Algorithm::Rsa2048Pkcs1Sha256 => &signature::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::Rsa2048PssSha256 => &signature::RSA_PSS_2048_8192_SHA256,
        Algorithm::EcdsaP256Sha256 => &signature::ECDSA_P256_SHA256_ASN1,
        Algorithm::EcdsaP384Sha384 => &signature::ECDSA_P384_SHA384_ASN1,
        Algorithm::Ed25519 => &signature::ED25519,
    };
    UnparsedPublicKey::new(verifier, key)
        .verify(data, sig)
        .is_ok()
}

/// Asks `signer` to sign a fresh challenge with `key` and checks it against `spki`.
///
/// `Ok(true)`: proven; `Ok(false)`: the key exists but made a signature the recorded
/// public key does not accept; `Err`: the signer could not be asked (the caller decides
/// whether that is "not here" or "try again later").
pub fn prove(
    signer: &dyn Signer,
    key: &KeyIdentifier,
    alg: Algorithm,
    spki: &[u8],
) -> Result<bool, SignerError> {
    let c = challenge()?;
    let sig = signer.sign(key, alg, &c)?;
    Ok(verifies(spki, alg, &c, &sig))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::software::SoftwareSigner;

    #[test]
    fn a_key_proves_itself_and_not_another() {
        let dir = tempfile::tempdir().unwrap();
        let s = SoftwareSigner::new("s", dir.path().to_path_buf());
        let a = s.create_key(Algorithm::EcdsaP256Sha256).unwrap();
        let b = s.create_key(Algorithm::EcdsaP256Sha256).unwrap();
        assert!(prove(&s, &a.id, Algorithm::EcdsaP256Sha256, &a.public_key).unwrap());
        assert!(!prove(&s, &a.id, Algorithm::EcdsaP256Sha256, &b.public_key).unwrap());
    }
}
