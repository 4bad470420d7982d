//! KMIP's Tag-Type-Length-Value encoding (KMIP 1.2 section 9.1), written and read
//! here rather than with the signers' or the relay's codec, so that a codec mistake
//! they share cannot pass unseen.
//!
//! An item is a 3-byte tag, a 1-byte type, a 4-byte length and the value padded to a
//! multiple of 8 bytes. Decoding refuses (never panics on): unknown types, fixed-size
//! values of the wrong length, lengths running past the input, missing padding,
//! bytes after the item, text that is not UTF-8, and nesting deeper than
//! [`MAX_DEPTH`]. Padding bytes are not checked to be zero.

use std::fmt;

/// Deepest structure nesting decoded; KMIP 1.2 responses need about six levels.
pub const MAX_DEPTH: usize = 16;

/// One TTLV item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    /// The 3-byte tag, e.g. 0x42007B for Response Message.
    pub tag: u32,
    pub value: Value,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Structure(Vec<Item>),
    Integer(i32),
    LongInteger(i64),
    /// Two's-complement big-endian bytes, as sent (a multiple of 8 bytes).
    BigInteger(Vec<u8>),
    Enumeration(u32),
    Boolean(bool),
    TextString(String),
    ByteString(Vec<u8>),
    DateTime(i64),
    Interval(u32),
}

impl Value {
    fn type_code(&self) -> u8 {
        match self {
            Value::Structure(_) => 0x01,
            Value::Integer(_) => 0x02,
            Value::LongInteger(_) => 0x03,
            Value::BigInteger(_) => 0x04,
            Value::Enumeration(_) => 0x05,
            Value::Boolean(_) => 0x06,
            Value::TextString(_) => 0x07,
            Value::ByteString(_) => 0x08,
            Value::DateTime(_) => 0x09,
            Value::Interval(_) => 0x0A,
        }
    }
}

/// Why bytes are not one TTLV item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TtlvError(pub String);

impl fmt::Display for TtlvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TtlvError {}

impl Item {
    pub fn new(tag: u32, value: Value) -> Item {
        Item { tag, value }
    }

    pub fn structure(tag: u32, items: Vec<Item>) -> Item {
        Item::new(tag, Value::Structure(items))
    }

    /// The item's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.tag.to_be_bytes()[1..]);
        out.push(self.value.type_code());
        let length_at = out.len();
        out.extend_from_slice(&[0; 4]);
        let start = out.len();
        match &self.value {
            Value::Structure(items) => items.iter().for_each(|i| i.write(out)),
            Value::Integer(v) => out.extend_from_slice(&v.to_be_bytes()),
            Value::Enumeration(v) | Value::Interval(v) => out.extend_from_slice(&v.to_be_bytes()),
            Value::LongInteger(v) | Value::DateTime(v) => out.extend_from_slice(&v.to_be_bytes()),
            Value::Boolean(v) => out.extend_from_slice(&u64::from(*v).to_be_bytes()),
            Value::TextString(s) => out.extend_from_slice(s.as_bytes()),
            Value::ByteString(b) | Value::BigInteger(b) => out.extend_from_slice(b),
        }
        // The length counts the value without its padding; a structure's value is its
        // children, each already padded.
        let length = (out.len() - start) as u32;
        out[length_at..start].copy_from_slice(&length.to_be_bytes());
        out.resize(start + padded(out.len() - start), 0);
    }

    /// The one item `bytes` hold, nothing before or after it.
    pub fn decode(bytes: &[u8]) -> Result<Item, TtlvError> {
        let (item, rest) = read(bytes, 0)?;
        if !rest.is_empty() {
            return Err(TtlvError(format!(
                "{} bytes after the item {:06X}",
                rest.len(),
                item.tag
            )));
        }
        Ok(item)
    }

    /// The first direct child with `tag`.
    pub fn child(&self, tag: u32) -> Option<&Item> {
        self.children().iter().find(|i| i.tag == tag)
    }

    /// Every direct child with `tag`.
    pub fn all(&self, tag: u32) -> impl Iterator<Item = &Item> {
        self.children().iter().filter(move |i| i.tag == tag)
    }

    fn children(&self) -> &[Item] {
        match &self.value {
            Value::Structure(items) => items,
            _ => &[],
        }
    }

    pub fn as_enum(&self) -> Option<u32> {
        match self.value {
            Value::Enumeration(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i32> {
        match self.value {
            Value::Integer(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_text(&self) -> Option<&str> {
        match &self.value {
            Value::TextString(s) => Some(s),
            _ => None,
        }
    }

    /// A Byte String's bytes, or a Big Integer's (servers use either for key parts).
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match &self.value {
            Value::ByteString(b) | Value::BigInteger(b) => Some(b),
            _ => None,
        }
    }
}

/// A length rounded up to the next multiple of 8.
fn padded(len: usize) -> usize {
    len.div_ceil(8) * 8
}

/// The length of an item whose 8-byte header is `header`: the bytes that follow it.
/// This lets a reader learn how much to read before it has the rest.
pub fn body_len(header: &[u8; 8]) -> usize {
    let length = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
    // A structure's length already counts its padded children.
    padded(length)
}

/// The tag and type code of an 8-byte item header.
pub fn header_tag_type(header: &[u8; 8]) -> (u32, u8) {
    (
        u32::from_be_bytes([0, header[0], header[1], header[2]]),
        header[3],
    )
}

fn read(bytes: &[u8], depth: usize) -> Result<(Item, &[u8]), TtlvError> {
    let Some((header, rest)) = bytes.split_first_chunk::<8>() else {
        return Err(TtlvError(format!(
            "{} bytes are too few for an item header (8)",
            bytes.len()
        )));
    };
    let (tag, type_code) = header_tag_type(header);
    let length = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
    let total = padded(length);
    if rest.len() < total {
        return Err(TtlvError(format!(
            "item {tag:06X} says {length} bytes (padded {total}), {} follow",
            rest.len()
        )));
    }
    let (body, rest) = rest.split_at(total);
    let data = &body[..length];
    let value = match type_code {
        0x01 => {
            if depth >= MAX_DEPTH {
                return Err(TtlvError(format!(
                    "structures nested deeper than {MAX_DEPTH}"
                )));
            }
            let mut items = Vec::new();
            let mut inner = data;
            while !inner.is_empty() {
                let (item, after) = read(inner, depth + 1)?;
                items.push(item);
                inner = after;
            }
            Value::Structure(items)
        }
        0x02 => Value::Integer(i32::from_be_bytes(fixed(tag, type_code, data)?)),
        0x03 => Value::LongInteger(i64::from_be_bytes(fixed(tag, type_code, data)?)),
        0x04 => {
            if length % 8 != 0 {
                return Err(TtlvError(format!(
                    "big integer {tag:06X} of {length} bytes, not a multiple of 8"
                )));
            }
            Value::BigInteger(data.to_vec())
        }
        0x05 => Value::Enumeration(u32::from_be_bytes(fixed(tag, type_code, data)?)),
        0x06 => match u64::from_be_bytes(fixed(tag, type_code, data)?) {
            0 => Value::Boolean(false),
            1 => Value::Boolean(true),
            other => {
                return Err(TtlvError(format!(
                    "boolean {tag:06X} holds {other}, expected 0 or 1"
                )))
            }
        },
        0x07 => Value::TextString(
            String::from_utf8(data.to_vec())
                .map_err(|_| TtlvError(format!("text string {tag:06X} is not UTF-8")))?,
        ),
        0x08 => Value::ByteString(data.to_vec()),
        0x09 => Value::DateTime(i64::from_be_bytes(fixed(tag, type_code, data)?)),
        0x0A => Value::Interval(u32::from_be_bytes(fixed(tag, type_code, data)?)),
        other => {
            return Err(TtlvError(format!(
                "item {tag:06X} has unknown type {other:#04x}"
            )))
        }
    };
    Ok((Item { tag, value }, rest))
}

/// A fixed-size value's bytes; refused when the item's length is not that size.
fn fixed<const N: usize>(tag: u32, type_code: u8, data: &[u8]) -> Result<[u8; N], TtlvError> {
    data.try_into().map_err(|_| {
        TtlvError(format!(
            "item {tag:06X} of type {type_code:#04x} has length {}, expected {N}",
            data.len()
        ))
    })
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    fn item(value: Value) -> Item {
        Item::new(0x420001, value)
    }

    /// Examples from the KMIP 1.2 specification, section 9.1.2.
    #[rstest]
    #[case::integer(Value::Integer(8), "42002002000000040000000800000000")]
    #[case::long_integer(
        Value::LongInteger(123_456_789_000_000_000),
        "420020030000000801B69B4BA5749200"
    )]
    #[case::big_integer(
        Value::BigInteger(hex::decode("0000000003FD35EB6BC2DF4618080000").unwrap()),
        "42002004000000100000000003FD35EB6BC2DF4618080000"
    )]
    #[case::enumeration(Value::Enumeration(255), "4200200500000004000000FF00000000")]
    #[case::boolean(Value::Boolean(true), "42002006000000080000000000000001")]
    #[case::text_string(
        Value::TextString("Hello World".into()),
        "420020070000000B48656C6C6F20576F726C640000000000"
    )]
    #[case::byte_string(
        Value::ByteString(vec![1, 2, 3]),
        "42002008000000030102030000000000"
    )]
    #[case::date_time(Value::DateTime(0x47DA67F8), "42002009000000080000000047DA67F8")]
    #[case::interval(Value::Interval(864_000), "4200200A00000004000D2F0000000000")]
    #[case::structure(
        Value::Structure(vec![
            Item::new(0x420004, Value::Enumeration(254)),
            Item::new(0x420005, Value::Integer(255)),
        ]),
        "42002001000000204200040500000004000000FE000000004200050200000004000000FF00000000"
    )]
    fn the_specification_examples_encode_and_decode(#[case] value: Value, #[case] bytes: &str) {
        let item = Item::new(0x420020, value);
        let bytes = hex::decode(bytes).unwrap();
        assert_eq!(hex::encode_upper(item.encode()), hex::encode_upper(&bytes));
        assert_eq!(Item::decode(&bytes), Ok(item));
    }

    #[rstest]
    #[case::too_short_for_a_header("42002002000000")]
    #[case::length_past_the_end("420020020000000400000008")]
    #[case::missing_padding("4200200800000003010203")]
    #[case::integer_of_eight_bytes("42002002000000080000000000000008")]
    #[case::enumeration_of_two_bytes("42002005000000020001000000000000")]
    #[case::boolean_two("42002006000000080000000000000002")]
    #[case::big_integer_not_a_multiple_of_8("42002004000000040000000100000000")]
    #[case::unknown_type("4200200B000000040000000100000000")]
    #[case::text_not_utf8("4200200700000002FFFE000000000000")]
    #[case::bytes_after_the_item("4200200200000004000000080000000000")]
    #[case::child_past_its_structure("42002001000000084200040500000004000000FE00000000")]
    fn malformed_bytes_are_refused(#[case] bytes: &str) {
        assert!(Item::decode(&hex::decode(bytes).unwrap()).is_err());
    }

    #[test]
    fn nesting_deeper_than_the_limit_is_refused() {
        let nest = |depth: usize| {
            let mut i = item(Value::Integer(1));
            for _ in 0..depth {
                i = Item::structure(0x420001, vec![i]);
            }
            i.encode()
        };
        assert!(Item::decode(&nest(MAX_DEPTH)).is_ok());
        let err = Item::decode(&nest(MAX_DEPTH + 1)).unwrap_err();
        assert!(err.0.contains("nested"), "{err}");
    }

    #[test]
    fn children_are_found_by_tag() {
        let s = Item::structure(
            0x420001,
            vec![
                Item::new(0x420094, Value::TextString("a".into())),
                Item::new(0x420094, Value::TextString("b".into())),
                Item::new(0x42007F, Value::Enumeration(0)),
                Item::new(0x420052, Value::BigInteger(vec![0; 8])),
            ],
        );
        let uids: Vec<&str> = s.all(0x420094).filter_map(Item::as_text).collect();
        assert_eq!(uids, ["a", "b"]);
        assert_eq!(s.child(0x42007F).and_then(Item::as_enum), Some(0));
        assert_eq!(
            s.child(0x420052).and_then(Item::as_bytes),
            Some(&[0; 8][..])
        );
        assert_eq!(s.child(0x420099), None);
        // A leaf has no children.
        assert_eq!(item(Value::Integer(1)).all(0x420001).count(), 0);
    }

    #[test]
    fn the_header_says_how_much_follows() {
        let bytes = item(Value::TextString("Hello World".into())).encode();
        let header: [u8; 8] = bytes[..8].try_into().unwrap();
        assert_eq!(body_len(&header), bytes.len() - 8);
        assert_eq!(header_tag_type(&header), (0x420001, 0x07));
    }
}
