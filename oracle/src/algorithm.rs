//! The signature algorithms the oracle checks, by the names suites use.
//!
//! This is the oracle's own list, not the signers': a caller holding the product's
//! algorithm maps it here by name, so an algorithm the product adds is not checked
//! until the oracle learns it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A key type together with the signature scheme used with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Algorithm {
    /// RSA 2048, PKCS#1 v1.5 over SHA-256.
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
    /// Ed25519 (pure EdDSA, RFC 8032).
    #[serde(rename = "ed25519")]
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

    /// The name suites use (`rsa2048`, `ecdsa-p256`, ...), as serde writes it too.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Rsa2048Pkcs1Sha256 => "rsa2048",
            Algorithm::Rsa2048PssSha256 => "rsa2048-pss",
            Algorithm::EcdsaP256Sha256 => "ecdsa-p256",
            Algorithm::EcdsaP384Sha384 => "ecdsa-p384",
            Algorithm::Ed25519 => "ed25519",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Refused: any name not in [`Algorithm::ALL`]; the error lists the known names.
impl FromStr for Algorithm {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| {
                let known: Vec<&str> = Self::ALL.iter().map(|a| a.name()).collect();
                format!("unknown algorithm '{s}' (known: {})", known.join(", "))
            })
    }
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    #[rstest]
    #[case("rsa2048", Algorithm::Rsa2048Pkcs1Sha256)]
    #[case("rsa2048-pss", Algorithm::Rsa2048PssSha256)]
    #[case("ecdsa-p256", Algorithm::EcdsaP256Sha256)]
    #[case("ecdsa-p384", Algorithm::EcdsaP384Sha384)]
    #[case("ed25519", Algorithm::Ed25519)]
    fn a_name_parses_prints_and_serialises_the_same(#[case] name: &str, #[case] alg: Algorithm) {
        assert_eq!(name.parse::<Algorithm>(), Ok(alg));
        assert_eq!(alg.to_string(), name);
        let quoted = format!("\"{name}\"");
        assert_eq!(serde_json::to_string(&alg).unwrap(), quoted);
        assert_eq!(serde_json::from_str::<Algorithm>(&quoted).unwrap(), alg);
    }

    #[rstest]
    #[case("rsa1024")]
    #[case("RSA2048")]
    #[case("")]
    fn an_unknown_name_is_refused_with_the_known_ones(#[case] name: &str) {
        let err = name.parse::<Algorithm>().unwrap_err();
        assert!(
            err.contains(&format!("'{name}'")) && err.contains("ecdsa-p384"),
            "{err}"
        );
    }
}
