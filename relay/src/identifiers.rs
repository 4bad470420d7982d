//! KMIP Unique Identifiers for PKCS#11 key objects.
//!
//! An identifier names the half (CKO_PRIVATE_KEY or CKO_PUBLIC_KEY) and the object's
//! CKA_ID. It is computed from what the token stores, so it stays valid across relay
//! restarts and maps back to exactly the objects it came from; the two halves of a pair
//! share the CKA_ID. Two spellings ([`Style`]), one per relay mode:
//!
//! - [`Style::Relay`] (the relay's own): `priv-<hex>` or `pub-<hex>`, lowercase hex.
//! - [`Style::Seed003`] (`[testing] mimic = "seed-003"`, as the released seed-003
//!   relay spells them): `<HEX>_priv` or `<HEX>_pub`, upper-case hex.
//!
//! Refused by [`ObjectId::parse`] / [`ObjectId::parse_as`] (the caller answers Item Not
//! Found): anything but the one spelling of the style, i.e. another prefix or suffix,
//! an empty, odd-length or non-hex id, hex of the other case, or an id longer than
//! [`MAX_ID_BYTES`] bytes. One spelling per object keeps identifiers one-to-one.

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

/// How identifiers are spelled (see the module documentation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Style {
    /// `priv-<hex>` / `pub-<hex>`.
    #[default]
    Relay,
    /// `<HEX>_priv` / `<HEX>_pub`, as the released seed-003 relay hands them out.
    Seed003,
}

impl Half {
    fn suffix(self) -> &'static str {
        match self {
            Half::Private => "_priv",
            Half::Public => "_pub",
        }
    }
}

/// A key object: its half and its CKA_ID, and how its identifier is spelled.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ObjectId {
    pub half: Half,
    pub id: Vec<u8>,
    pub style: Style,
}

impl ObjectId {
    /// An identifier in the relay's own style.
    pub fn new(half: Half, id: &[u8]) -> Self {
        ObjectId {
            half,
            id: id.to_vec(),
            style: Style::Relay,
        }
    }

    /// The same object, spelled in `style`.
    pub fn styled(mut self, style: Style) -> Self {
        self.style = style;
        self
    }

    /// Parses an identifier of the relay's own style; `None` when it is not one.
    pub fn parse(text: &str) -> Option<Self> {
        Self::parse_as(text, Style::Relay)
    }

    /// Parses an identifier spelled in `style`; `None` when it is not one.
    pub fn parse_as(text: &str, style: Style) -> Option<Self> {
        let split = |half: Half| match style {
            Style::Relay => text.strip_prefix(half.prefix()),
            Style::Seed003 => text.strip_suffix(half.suffix()),
        };
        let (half, hex_id) = if let Some(rest) = split(Half::Private) {
            (Half::Private, rest)
        } else if let Some(rest) = split(Half::Public) {
            (Half::Public, rest)
        } else {
            return None;
        };
        let letters = match style {
            Style::Relay => b'a'..=b'f',
            Style::Seed003 => b'A'..=b'F',
        };
        if hex_id.is_empty()
            || hex_id.len() > 2 * MAX_ID_BYTES
            || !hex_id
                .bytes()
                .all(|b| b.is_ascii_digit() || letters.contains(&b))
        {
            return None;
        }
        let id = hex::decode(hex_id).ok()?;
        Some(ObjectId { half, id, style })
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.style {
            Style::Relay => write!(f, "{}{}", self.half.prefix(), hex::encode(&self.id)),
            Style::Seed003 => write!(f, "{}{}", hex::encode_upper(&self.id), self.half.suffix()),
        }
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

    #[rstest]
    #[case(Half::Private, "00AB7F_priv")]
    #[case(Half::Public, "00AB7F_pub")]
    fn seed003_style_is_upper_hex_with_a_suffix(#[case] half: Half, #[case] text: &str) {
        let id = ObjectId::new(half, &[0, 0xab, 0x7f]).styled(Style::Seed003);
        assert_eq!(id.to_string(), text);
        assert_eq!(ObjectId::parse_as(text, Style::Seed003), Some(id));
        // Each style reads only its own spelling.
        assert_eq!(ObjectId::parse(text), None);
    }

    #[rstest]
    #[case("")]
    #[case("_priv")]
    #[case("0_pub")]
    #[case("00ab_priv")]
    #[case("priv-00ab")]
    #[case("00AB_secret")]
    #[case("00AB_priv ")]
    #[case("ZZ_pub")]
    fn seed003_style_refuses_malformed(#[case] text: &str) {
        assert_eq!(ObjectId::parse_as(text, Style::Seed003), None);
    }

    #[test]
    fn refuses_overlong_ids() {
        let long = format!("pub-{}", "ab".repeat(MAX_ID_BYTES + 1));
        assert_eq!(ObjectId::parse(&long), None);
        let ok = format!("pub-{}", "ab".repeat(MAX_ID_BYTES));
        assert!(ObjectId::parse(&ok).is_some());
    }
}
