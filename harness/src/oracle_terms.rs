//! Where the product's terms meet the oracle's: an algorithm goes to the oracle by
//! name, a key identifier comes back as its 20 bytes. Nothing here decides anything;
//! the checks are in the `oracle` crate, which cannot see `hsm_signers`.

use hsm_signers::{Algorithm, KeyIdentifier};

/// The oracle's algorithm of the same name. Exhaustive on purpose: an algorithm the
/// product adds does not compile here until the oracle can check it.
pub fn algorithm(alg: Algorithm) -> oracle::Algorithm {
    match alg {
        Algorithm::Rsa2048Pkcs1Sha256 => oracle::Algorithm::Rsa2048Pkcs1Sha256,
        Algorithm::Rsa2048PssSha256 => oracle::Algorithm::Rsa2048PssSha256,
        Algorithm::EcdsaP256Sha256 => oracle::Algorithm::EcdsaP256Sha256,
        Algorithm::EcdsaP384Sha384 => oracle::Algorithm::EcdsaP384Sha384,
        Algorithm::Ed25519 => oracle::Algorithm::Ed25519,
    }
}

/// The oracle's key identifier in the type suites compare signers' answers with.
pub fn key_identifier(id: oracle::KeyId) -> KeyIdentifier {
    KeyIdentifier::from_bytes(*id.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_algorithm_keeps_its_name() {
        for alg in Algorithm::ALL {
            assert_eq!(algorithm(alg).name(), alg.name());
        }
    }
}
