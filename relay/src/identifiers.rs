//! KMIP Unique Identifiers for PKCS#11 key objects.
//!
//! An identifier is `priv-<hex>` or `pub-<hex>`: the half (CKO_PRIVATE_KEY or
//! CKO_PUBLIC_KEY) and the object's CKA_ID in lowercase hex. It is computed from what
//! the token stores, so it stays valid across relay restarts and maps back to exactly
//! the objects it came from; the two halves of a pair share the CKA_ID.
//!
//! Refused by [`ObjectId::parse`] (the caller answers Item Not Found): anything else,
//! i.e. another prefix, an empty, odd-length, upper-case or non-hex id, or an id longer
//! than [`MAX_ID_BYTES`] bytes.

use std::fmt;

/// Longest CKA_ID accepted in an identifier.
pub const MAX_ID_BYTES: usize = 64;

/// Which half of a key pair an identifier names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Half {
    Private,
    Public,
}

impl Half {
    fn prefix(self) -> &'static str {
        match self {
            Half::Private => "priv-",
            Half::Public => "pub-",
        }
    }
}

/// A key object: its half and its CKA_ID.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ObjectId {
    pub half: Half,
    pub id: Vec<u8>,
}

impl ObjectId {
    pub fn new(half: Half, id: &[u8]) -> Self {
        ObjectId {
            half,
            id: id.to_vec(),
        }
    }

    /// Parses an identifier; `None` when it is not one this relay hands out.
    pub fn parse(text: &str) -> Option<Self> {
        let (half, hex_id) = if let Some(rest) = text.strip_prefix("priv-") {
            (Half::Private, rest)
        } else if let Some(rest) = text.strip_prefix("pub-") {
            (Half::Public, rest)
        } else {
            return None;
        };
        if hex_id.is_empty()
            || hex_id.len() > 2 * MAX_ID_BYTES
            || !hex_id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return None;
        }
        let id = hex::decode(hex_id).ok()?;
        Some(ObjectId { half, id })
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.half.prefix(), hex::encode(&self.id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[test]
    fn round_trips() {
        for half in [Half::Private, Half::Public] {
            let id = ObjectId::new(half, &[0, 1, 0xab, 0xff]);
            assert_eq!(ObjectId::parse(&id.to_string()), Some(id));
        }
    }

    #[rstest]
    #[case("")]
    #[case("priv-")]
    #[case("pub-0")]
    #[case("priv-ABCD")]
    #[case("priv-zz")]
    #[case("secret-abcd")]
    #[case("priv- ab")]
    #[case("priv-ab\0")]
    #[case("1")]
    fn refuses_malformed(#[case] text: &str) {
        assert_eq!(ObjectId::parse(text), None);
    }

    #[test]
    fn refuses_overlong_ids() {
        let long = format!("pub-{}", "ab".repeat(MAX_ID_BYTES + 1));
        assert_eq!(ObjectId::parse(&long), None);
        let ok = format!("pub-{}", "ab".repeat(MAX_ID_BYTES));
        assert!(ObjectId::parse(&ok).is_some());
    }
}
