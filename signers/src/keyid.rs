//! Key identifiers: SHA-1 over the subjectPublicKey bits of a SubjectPublicKeyInfo.
//!
//! This is RFC 5280 section 4.2.1.2 method (1), the Subject Key Identifier RPKI uses,
//! so the identifier a signer prints is the one a CA would put in its certificates.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha1::{Digest, Sha1};
use spki::SubjectPublicKeyInfoRef;

/// A 20-byte key identifier, shown as 40 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyIdentifier([u8; 20]);

impl KeyIdentifier {
    /// Computes the identifier of a DER SubjectPublicKeyInfo.
    ///
    /// Refused: input that is not a DER SPKI, or a BIT STRING with unused bits
    /// (no public key we handle has them).
    pub fn from_spki_der(spki_der: &[u8]) -> Result<Self, String> {
        let spki = SubjectPublicKeyInfoRef::try_from(spki_der)
            .map_err(|e| format!("not a DER SubjectPublicKeyInfo: {e}"))?;
        let bits = spki
            .subject_public_key
            .as_bytes()
            .ok_or("subjectPublicKey has unused bits")?;
        Ok(Self::from_public_key_bits(bits))
    }

    /// The identifier of the contents of a subjectPublicKey BIT STRING.
    pub fn from_public_key_bits(bits: &[u8]) -> Self {
        Self(Sha1::digest(bits).into())
    }

    pub fn as_bytes(&self) -> &[u8; 20] {
        &self.0
    }

    pub fn from_bytes(bytes: [u8; 20]) -> Self {
        Self(bytes)
    }
}

impl fmt::Display for KeyIdentifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for KeyIdentifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyIdentifier({self})")
    }
}

/// Accepts 40 hex digits, either case, with or without `:` separators.
impl FromStr for KeyIdentifier {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let compact: String = s.chars().filter(|c| *c != ':').collect();
        let bytes = hex::decode(&compact)
            .map_err(|_| format!("key identifier '{s}' is not hex (expected 40 hex digits)"))?;
        let bytes: [u8; 20] = bytes.try_into().map_err(|b: Vec<u8>| {
            format!("key identifier '{s}' has {} bytes, expected 20", b.len())
        })?;
        Ok(Self(bytes))
    }
}

impl Serialize for KeyIdentifier {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for KeyIdentifier {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_with_and_without_colons() {
        let a: KeyIdentifier = "e83e96883ee73e69e0e57d54b6726c9d45f788c5".parse().unwrap();
        let b: KeyIdentifier = "E8:3E:96:88:3E:E7:3E:69:E0:E5:7D:54:B6:72:6C:9D:45:F7:88:C5"
            .parse()
            .unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "e83e96883ee73e69e0e57d54b6726c9d45f788c5");
    }

    #[test]
    fn refuses_wrong_length_and_non_hex() {
        assert!("abcd"
            .parse::<KeyIdentifier>()
            .unwrap_err()
            .contains("2 bytes"));
        assert!("zz".repeat(20).parse::<KeyIdentifier>().is_err());
    }

    #[test]
    fn refuses_garbage_as_spki() {
        assert!(KeyIdentifier::from_spki_der(b"\x30\x03\x02\x01\x00").is_err());
    }
}
