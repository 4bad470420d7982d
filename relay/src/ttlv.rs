//! TTLV framing and a generic item tree, on kmip-ttlv's primitive readers and writers.
//!
//! The relay reads requests into a tree of [`Item`]s and picks fields out by tag, rather
//! than through kmip-ttlv's serde layer: that layer decodes positionally (a client that
//! sends optional fields in another order, or one more field, fails as a whole), has no
//! size limit and cannot write Big Integers. The primitives (tag, type, length and every
//! value type) are kmip-ttlv's.
//!
//! This codec is deliberately not shared with the KMIP signer's
//! (`signers/src/kmip/ttlv.rs`): the signer is tested against this server, and a bug
//! the two shared would let them agree with each other while both are wrong, and no
//! test would see it.
//!
//! Contract of [`decode`], for untrusted input of any length:
//!
//! - No allocation larger than the input: every length is checked against the bytes
//!   that remain before anything is read or allocated.
//! - Refused with a [`DecodeError`] (never a panic): a truncated item, a length that
//!   overruns its enclosing structure, an unknown type byte, a fixed-size value
//!   (Integer, Long Integer, Enumeration, Boolean, Date-Time, Interval) of the wrong
//!   length, a Boolean other than 0 or 1, a Text String that is not UTF-8, a Big
//!   Integer whose length is not a multiple of 8, nesting deeper than [`MAX_DEPTH`], and
//!   bytes after the one top-level item.

use std::fmt;
use std::io::{Cursor, Read};

use kmip_ttlv::types::{
    SerializableTtlvType, TtlvBigInteger, TtlvBoolean, TtlvByteString, TtlvDateTime,
    TtlvEnumeration, TtlvInteger, TtlvLength, TtlvLongInteger, TtlvTag, TtlvTextString, TtlvType,
};

/// Bytes in a TTLV item header: 3 tag, 1 type, 4 length.
pub const HEADER_LEN: usize = 8;

/// Deepest structure nesting accepted. KMIP 1.2 messages nest about 8 deep.
pub const MAX_DEPTH: usize = 32;

const TYPE_STRUCTURE: u8 = 0x01;
const TYPE_INTERVAL: u8 = 0x0A;

/// The 8-byte header of a TTLV item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub tag: u32,
    pub item_type: u8,
    /// Length of the value in bytes, without padding.
    pub length: u32,
}

impl Header {
    /// Splits the first 8 bytes into tag, type and length (no validation).
    pub fn parse(bytes: &[u8; HEADER_LEN]) -> Self {
        Header {
            tag: u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]),
            item_type: bytes[3],
            length: u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
        }
    }

    /// Whether this is a Structure header.
    pub fn is_structure(&self) -> bool {
        self.item_type == TYPE_STRUCTURE
    }
}

/// A TTLV value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Structure(Vec<Item>),
    Integer(i32),
    LongInteger(i64),
    /// Two's complement, big-endian, as on the wire (padding included).
    BigInteger(Vec<u8>),
    Enumeration(u32),
    Boolean(bool),
    TextString(String),
    ByteString(Vec<u8>),
    DateTime(i64),
    Interval(u32),
}

/// One tagged TTLV item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub tag: u32,
    pub value: Value,
}

/// Why bytes are not one well-formed TTLV item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError {
    /// Offset of the item that failed, from the start of the input.
    pub offset: usize,
    pub reason: String,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed TTLV at byte {}: {}", self.offset, self.reason)
    }
}

impl std::error::Error for DecodeError {}

impl Item {
    pub fn new(tag: u32, value: Value) -> Self {
        Item { tag, value }
    }
    pub fn structure(tag: u32, children: Vec<Item>) -> Self {
        Item::new(tag, Value::Structure(children))
    }
    pub fn enumeration(tag: u32, v: u32) -> Self {
        Item::new(tag, Value::Enumeration(v))
    }
    pub fn integer(tag: u32, v: i32) -> Self {
        Item::new(tag, Value::Integer(v))
    }
    pub fn text(tag: u32, v: impl Into<String>) -> Self {
        Item::new(tag, Value::TextString(v.into()))
    }
    pub fn bytes(tag: u32, v: impl Into<Vec<u8>>) -> Self {
        Item::new(tag, Value::ByteString(v.into()))
    }
    pub fn boolean(tag: u32, v: bool) -> Self {
        Item::new(tag, Value::Boolean(v))
    }
    pub fn date_time(tag: u32, v: i64) -> Self {
        Item::new(tag, Value::DateTime(v))
    }
    /// A Big Integer from an unsigned big-endian magnitude, sign-extended with zeros to
    /// a multiple of 8 bytes as KMIP requires (so the value stays positive).
    pub fn big_unsigned(tag: u32, magnitude: &[u8]) -> Self {
        let start = magnitude
            .iter()
            .position(|b| *b != 0)
            .unwrap_or(magnitude.len());
        let digits = &magnitude[start..];
        let positive_len = digits.len() + usize::from(digits.first().is_none_or(|b| b & 0x80 != 0));
        let mut v = vec![0; padded(positive_len) - digits.len()];
        v.extend_from_slice(digits);
        Item::new(tag, Value::BigInteger(v))
    }

    /// The children of a Structure (empty for other types).
    pub fn children(&self) -> &[Item] {
        match &self.value {
            Value::Structure(c) => c,
            _ => &[],
        }
    }

    /// The first child with `tag`.
    pub fn child(&self, tag: u32) -> Option<&Item> {
        self.children().iter().find(|i| i.tag == tag)
    }

    /// Every child with `tag`, in order.
    pub fn all(&self, tag: u32) -> impl Iterator<Item = &Item> {
        self.children().iter().filter(move |i| i.tag == tag)
    }

    /// A short name of the value's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self.value {
            Value::Structure(_) => "Structure",
            Value::Integer(_) => "Integer",
            Value::LongInteger(_) => "Long Integer",
            Value::BigInteger(_) => "Big Integer",
            Value::Enumeration(_) => "Enumeration",
            Value::Boolean(_) => "Boolean",
            Value::TextString(_) => "Text String",
            Value::ByteString(_) => "Byte String",
            Value::DateTime(_) => "Date-Time",
            Value::Interval(_) => "Interval",
        }
    }
}

/// Decodes exactly one TTLV item from `bytes`. See the module documentation.
pub fn decode(bytes: &[u8]) -> Result<Item, DecodeError> {
    let (item, used) = decode_at(bytes, 0, 0)?;
    if used != bytes.len() {
        return Err(DecodeError {
            offset: used,
            reason: format!("{} bytes after the message", bytes.len() - used),
        });
    }
    Ok(item)
}

fn err(offset: usize, reason: impl Into<String>) -> DecodeError {
    DecodeError {
        offset,
        reason: reason.into(),
    }
}

/// Padding after a value of `len` bytes, to the next multiple of 8.
fn padded(len: usize) -> usize {
    len.div_ceil(8) * 8
}

/// Decodes the item that starts at `bytes[0]` (which is `base` in the whole input);
/// returns it and the bytes it used, padding included.
fn decode_at(bytes: &[u8], base: usize, depth: usize) -> Result<(Item, usize), DecodeError> {
    let Some(head) = bytes.first_chunk::<HEADER_LEN>() else {
        return Err(err(
            base,
            format!("item header needs 8 bytes, {} left", bytes.len()),
        ));
    };
    let header = Header::parse(head);
    let len = header.length as usize;
    let rest = &bytes[HEADER_LEN..];
    let value_bytes = if header.item_type == TYPE_STRUCTURE {
        len
    } else {
        padded(len)
    };
    if value_bytes > rest.len() {
        return Err(err(
            base,
            format!(
                "item {:#08x} declares {len} bytes of value, {} left",
                header.tag,
                rest.len()
            ),
        ));
    }
    let value = &rest[..value_bytes];
    let value = match header.item_type {
        TYPE_STRUCTURE => {
            if depth >= MAX_DEPTH {
                return Err(err(
                    base,
                    format!("structures nested deeper than {MAX_DEPTH}"),
                ));
            }
            let mut children = Vec::new();
            let mut pos = 0;
            while pos < value.len() {
                let (child, used) = decode_at(&value[pos..], base + HEADER_LEN + pos, depth + 1)?;
                children.push(child);
                pos += used;
            }
            Value::Structure(children)
        }
        TYPE_INTERVAL => Value::Interval(read_primitive::<TtlvEnumeration>(value, len, base)?.0),
        other => {
            let ttlv_type = TtlvType::try_from(other)
                .map_err(|_| err(base, format!("unknown item type {other:#04x}")))?;
            match ttlv_type {
                TtlvType::Integer => {
                    Value::Integer(read_primitive::<TtlvInteger>(value, len, base)?.0)
                }
                TtlvType::LongInteger => {
                    Value::LongInteger(read_primitive::<TtlvLongInteger>(value, len, base)?.0)
                }
                TtlvType::BigInteger => {
                    if len % 8 != 0 {
                        return Err(err(
                            base,
                            format!("Big Integer of {len} bytes is not a multiple of 8"),
                        ));
                    }
                    Value::BigInteger(read_primitive::<TtlvBigInteger>(value, len, base)?.0)
                }
                TtlvType::Enumeration => {
                    Value::Enumeration(read_primitive::<TtlvEnumeration>(value, len, base)?.0)
                }
                TtlvType::Boolean => {
                    Value::Boolean(read_primitive::<TtlvBoolean>(value, len, base)?.0)
                }
                TtlvType::TextString => {
                    Value::TextString(read_primitive::<TtlvTextString>(value, len, base)?.0)
                }
                TtlvType::ByteString => {
                    Value::ByteString(read_primitive::<TtlvByteString>(value, len, base)?.0)
                }
                TtlvType::DateTime => {
                    Value::DateTime(read_primitive::<TtlvDateTime>(value, len, base)?.0)
                }
                TtlvType::Structure => {
                    return Err(err(base, "structure type in a primitive position"))
                }
            }
        }
    };
    Ok((
        Item {
            tag: header.tag,
            value,
        },
        HEADER_LEN + value_bytes,
    ))
}

/// Reads one primitive value with kmip-ttlv; `value` holds the value and its padding,
/// already checked to be in bounds.
fn read_primitive<T: SerializableTtlvType>(
    value: &[u8],
    len: usize,
    base: usize,
) -> Result<T, DecodeError> {
    let mut cursor = Cursor::new(value);
    let v = T::read_value(&mut cursor, len as u32)
        .map_err(|e| err(base, format!("bad {} value: {e:?}", T::TTLV_TYPE)))?;
    let mut pad = Vec::new();
    // The rest of `value` is padding; its content is not checked.
    let _ = cursor.read_to_end(&mut pad);
    Ok(v)
}

/// Encodes `item` (and everything under it) as TTLV bytes.
pub fn encode(item: &Item) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(item, &mut out);
    out
}

fn encode_into(item: &Item, out: &mut Vec<u8>) {
    let [_, t0, t1, t2] = item.tag.to_be_bytes();
    // Writing into a Vec cannot fail: the io::Results below are always Ok.
    let _ = TtlvTag::from([t0, t1, t2]).write(out);
    let _ = match &item.value {
        Value::Structure(children) => {
            let mut body = Vec::new();
            for c in children {
                encode_into(c, &mut body);
            }
            let _ = TtlvType::Structure.write(out);
            let _ = TtlvLength::new(body.len() as u32).write(out);
            out.extend_from_slice(&body);
            Ok(())
        }
        Value::Integer(v) => TtlvInteger(*v).write(out),
        Value::LongInteger(v) => TtlvLongInteger(*v).write(out),
        Value::BigInteger(v) => TtlvBigInteger(v.clone()).write(out),
        Value::Enumeration(v) => TtlvEnumeration(*v).write(out),
        Value::Boolean(v) => TtlvBoolean(*v).write(out),
        Value::TextString(v) => TtlvTextString(v.clone()).write(out),
        Value::ByteString(v) => TtlvByteString(v.clone()).write(out),
        Value::DateTime(v) => TtlvDateTime(*v).write(out),
        Value::Interval(v) => {
            out.push(TYPE_INTERVAL);
            out.extend_from_slice(&4u32.to_be_bytes());
            out.extend_from_slice(&v.to_be_bytes());
            out.extend_from_slice(&[0; 4]);
            Ok(())
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn sample() -> Item {
        Item::structure(
            0x420078,
            vec![
                Item::integer(0x42006A, 1),
                Item::new(0x420001, Value::LongInteger(-5)),
                Item::big_unsigned(0x420052, &[0x80, 1, 2]),
                Item::enumeration(0x42005C, 0x18),
                Item::boolean(0x420007, true),
                Item::text(0x420055, "héllo"),
                Item::bytes(0x4200C2, vec![1, 2, 3, 4, 5, 6, 7, 8, 9]),
                Item::date_time(0x420092, 1_700_000_000),
                Item::new(0x420100, Value::Interval(7)),
                Item::structure(0x420069, vec![]),
            ],
        )
    }

    #[test]
    fn round_trips_every_type() {
        let item = sample();
        let bytes = encode(&item);
        assert_eq!(bytes.len() % 8, 0);
        assert_eq!(decode(&bytes).unwrap(), item);
    }

    #[test]
    fn kmip_ttlv_reads_what_we_write() {
        // kmip-ttlv's own pretty printer walks our bytes without complaint.
        let bytes = encode(&Item::structure(
            0x420078,
            vec![Item::integer(0x42006A, 1), Item::text(0x420055, "x")],
        ));
        let text = kmip_ttlv::PrettyPrinter::new().to_string(&bytes);
        assert!(text.contains("42006A"), "{text}");
    }

    #[test]
    fn big_integers_are_padded_positive() {
        let item = Item::big_unsigned(0x420052, &[0xff; 3]);
        let Value::BigInteger(v) = &item.value else {
            panic!()
        };
        assert_eq!(v, &vec![0, 0, 0, 0, 0, 0xff, 0xff, 0xff]);
        let bytes = encode(&item);
        // 8-byte header, then 8 bytes: 4 sign-extension zeros then 00 ff ff ff.
        assert_eq!(&bytes[4..8], &8u32.to_be_bytes());
        assert_eq!(&bytes[8..], &[0, 0, 0, 0, 0, 0xff, 0xff, 0xff]);
    }

    #[rstest]
    #[case::empty(vec![])]
    #[case::short_header(vec![0x42, 0, 0x78, 1])]
    #[case::structure_overruns(vec![0x42, 0, 0x78, 1, 0, 0, 0, 16, 0, 0, 0, 0])]
    #[case::huge_length(vec![0x42, 0, 0x78, 8, 0xff, 0xff, 0xff, 0xff])]
    #[case::unknown_type(vec![0x42, 0, 0x78, 0x0b, 0, 0, 0, 0])]
    #[case::integer_wrong_length(vec![0x42, 0, 1, 2, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0])]
    #[case::boolean_two(vec![0x42, 0, 1, 6, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 2])]
    #[case::bad_utf8(vec![0x42, 0, 1, 7, 0, 0, 0, 1, 0xff, 0, 0, 0, 0, 0, 0, 0])]
    #[case::big_integer_not_8(vec![0x42, 0, 1, 4, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0])]
    #[case::trailing(vec![0x42, 0, 0x78, 1, 0, 0, 0, 0, 0])]
    fn refuses_malformed_input(#[case] bytes: Vec<u8>) {
        assert!(decode(&bytes).is_err());
    }

    #[test]
    fn refuses_deep_nesting() {
        let mut item = Item::structure(0x420001, vec![]);
        for _ in 0..MAX_DEPTH + 1 {
            item = Item::structure(0x420001, vec![item]);
        }
        let e = decode(&encode(&item)).unwrap_err();
        assert!(e.reason.contains("nested"), "{e}");
    }
}
