//! Signing algorithms the signers know, by the names suites and the CLI use.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A key type together with the signature scheme used with it.
///
/// The name (`rsa2048`, `ecdsa-p256`, ...) is what suites, backend profiles and the
/// `signer` command accept. An RSA key may be used with either RSA scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Algorithm {
    /// RSA 2048, PKCS#1 v1.5 signatures over SHA-256 (required by RPKI).
    #[serde(rename = "rsa2048")]
    Rsa2048Pkcs1Sha256,
    /// RSA 2048, RSASSA-PSS over SHA-256, MGF1-SHA-256, salt length 32.
    #[serde(rename = "rsa2048-pss")]
    Rsa2048PssSha256,
    /// ECDSA on P-256 over SHA-256, signature DER-encoded.
    #[serde(rename = "ecdsa-p256")]
    EcdsaP256Sha256,
    /// ECDSA on P-384 over SHA-384, signature DER-encoded.
    #[serde(rename = "ecdsa-p384")]
    EcdsaP384Sha384,
    /// Ed25519 (pure EdDSA).
    #[serde(rename = "ed25519")]
    Ed25519,
}

/// The kind of key pair an [`Algorithm`] needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyType {
    Rsa2048,
    EcP256,
    EcP384,
    Ed25519,
}

impl Algorithm {
    pub const ALL: [Algorithm; 5] = [
        Algorithm::Rsa2048Pkcs1Sha256,
        Algorithm::Rsa2048PssSha256,
        Algorithm::EcdsaP256Sha256,
        Algorithm::EcdsaP384Sha384,
        Algorithm::Ed25519,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Rsa2048Pkcs1Sha256 => "rsa2048",
            Algorithm::Rsa2048PssSha256 => "rsa2048-pss",
            Algorithm::EcdsaP256Sha256 => "ecdsa-p256",
            Algorithm::EcdsaP384Sha384 => "ecdsa-p384",
            Algorithm::Ed25519 => "ed25519",
        }
    }

    pub fn key_type(self) -> KeyType {
        match self {
            Algorithm::Rsa2048Pkcs1Sha256 | Algorithm::Rsa2048PssSha256 => KeyType::Rsa2048,
            Algorithm::EcdsaP256Sha256 => KeyType::EcP256,
            Algorithm::EcdsaP384Sha384 => KeyType::EcP384,
            Algorithm::Ed25519 => KeyType::Ed25519,
        }
    }

    /// The comma-separated list of names, for error messages.
    pub fn allowed() -> String {
        Self::ALL.map(Algorithm::name).join(", ")
    }
}

impl KeyType {
    pub fn name(self) -> &'static str {
        match self {
            KeyType::Rsa2048 => "rsa2048",
            KeyType::EcP256 => "ec-p256",
            KeyType::EcP384 => "ec-p384",
            KeyType::Ed25519 => "ed25519",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Refused: any name not in [`Algorithm::ALL`]; the error lists the allowed names.
impl FromStr for Algorithm {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| format!("unknown algorithm '{s}' (allowed: {})", Self::allowed()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("rsa2048", Algorithm::Rsa2048Pkcs1Sha256)]
    #[case("rsa2048-pss", Algorithm::Rsa2048PssSha256)]
    #[case("ecdsa-p256", Algorithm::EcdsaP256Sha256)]
    #[case("ecdsa-p384", Algorithm::EcdsaP384Sha384)]
    #[case("ed25519", Algorithm::Ed25519)]
    fn names_round_trip(#[case] name: &str, #[case] alg: Algorithm) {
        assert_eq!(name.parse::<Algorithm>().unwrap(), alg);
        assert_eq!(alg.to_string(), name);
    }

    #[test]
    fn unknown_name_lists_the_allowed_ones() {
        let err = "rsa1024".parse::<Algorithm>().unwrap_err();
        assert!(
            err.contains("rsa1024") && err.contains("ecdsa-p384"),
            "{err}"
        );
    }
}
