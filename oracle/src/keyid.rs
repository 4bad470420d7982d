//! Key identifiers: SHA-1 of the subjectPublicKey BIT STRING's contents in a
//! SubjectPublicKeyInfo (RFC 5280 section 4.2.1.2, method 1), the identifier RPKI
//! puts in certificates and the signers promise to name keys by.
//!
//! Computed here, from the public key, so that a signer naming a key wrongly is seen.

use std::fmt;

use sha1::{Digest, Sha1};
use spki::SubjectPublicKeyInfoRef;

use crate::public_key::PublicKeyError;

/// A 20-byte key identifier; shown as 40 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId([u8; 20]);

impl KeyId {
    /// The identifier of a DER SubjectPublicKeyInfo.
    ///
    /// Refused: bytes that are not exactly one DER SPKI, and a subjectPublicKey with
    /// unused bits (no key type the harness knows has them, and method 1 hashes whole
    /// bytes).
    pub fn of_spki(spki_der: &[u8]) -> Result<KeyId, PublicKeyError> {
        let spki = SubjectPublicKeyInfoRef::try_from(spki_der)
            .map_err(|e| PublicKeyError(format!("not a DER SubjectPublicKeyInfo: {e}")))?;
        let bits = spki.subject_public_key.as_bytes().ok_or_else(|| {
            PublicKeyError("the subjectPublicKey BIT STRING has unused bits".into())
        })?;
        Ok(KeyId(Sha1::digest(bits).into()))
    }

    pub fn as_bytes(&self) -> &[u8; 20] {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;
    use crate::public_key::{self, Curve};

    /// RFC 8410 section 10.1's example Ed25519 public key.
    const RFC8410_KEY: &str = "19bf44096984cdfe8541bac167dc3b96c85086aa30b6b6cb0c5c38ad703166e1";

    #[test]
    fn the_identifier_is_sha1_of_the_key_bytes() {
        let key = hex::decode(RFC8410_KEY).unwrap();
        let spki = public_key::ec(Curve::Ed25519, &key).unwrap();
        let id = KeyId::of_spki(&spki).unwrap();
        assert_eq!(id.as_bytes(), &<[u8; 20]>::from(Sha1::digest(&key)));
        assert_eq!(id.to_string(), hex::encode(Sha1::digest(&key)));
        assert_eq!(format!("{id:?}"), format!("KeyId({id})"));
    }

    #[test]
    fn a_known_spki_has_its_known_identifier() {
        // RFC 8410's example key as an SPKI; the SHA-1 computed elsewhere.
        let spki = hex::decode(format!("302a300506032b6570032100{RFC8410_KEY}")).unwrap();
        assert_eq!(
            KeyId::of_spki(&spki).unwrap().to_string(),
            "a28cc1f86e5960d3e03ae75c962c97a8d448293c"
        );
    }

    #[rstest]
    #[case::empty("")]
    #[case::not_a_sequence("0400")]
    #[case::integer_inside("3003020100")]
    #[case::trailing_byte("302a300506032b6570032100{KEY}00")]
    #[case::unused_bits("302a300506032b6570032101{KEY}")]
    fn what_is_not_an_spki_is_refused(#[case] der: &str) {
        let der = hex::decode(der.replace("{KEY}", RFC8410_KEY)).unwrap();
        assert!(KeyId::of_spki(&der).is_err());
    }
}
