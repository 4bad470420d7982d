//! A small, strict TTLV reader for KMIP responses.
//!
//! Responses are read into a generic tree rather than into kmip-protocol's serde types:
//! those fail on any enumeration value they do not list (a KMIP 1.3+ operation in a
//! Query answer, a result reason added after 1.2, a vendor extension), so one unknown
//! value would hide the whole answer, error message included. The tree keeps every
//! value and the signer picks what it needs.
//!
//! This codec is deliberately not shared with the relay's (`relay/src/ttlv.rs`): the
//! relay is the server this client is tested against, and a bug the two shared would
//! let them agree with each other while both are wrong, and no test would see it.
//!
//! Refused (as a description for the caller to wrap): truncated items, lengths that do
//! not fit their type, structures nested deeper than [`MAX_DEPTH`], padding that is not
//! zero, text that is not UTF-8, trailing bytes. Nothing here panics on any input.

/// TTLV item types (KMIP 1.2 section 9.1.1.2).
pub mod kind {
    pub const STRUCTURE: u8 = 0x01;
    pub const INTEGER: u8 = 0x02;
    pub const LONG_INTEGER: u8 = 0x03;
    pub const BIG_INTEGER: u8 = 0x04;
    pub const ENUMERATION: u8 = 0x05;
    pub const BOOLEAN: u8 = 0x06;
    pub const TEXT_STRING: u8 = 0x07;
    pub const BYTE_STRING: u8 = 0x08;
    pub const DATE_TIME: u8 = 0x09;
    pub const INTERVAL: u8 = 0x0A;
}

/// Deepest nesting accepted; real responses stay below 8.
pub const MAX_DEPTH: usize = 32;

/// One TTLV value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Structure(Vec<Item>),
    Integer(i32),
    LongInteger(i64),
    BigInteger(Vec<u8>),
    Enumeration(u32),
    Boolean(bool),
    Text(String),
    Bytes(Vec<u8>),
    DateTime(i64),
    Interval(u32),
}

/// One TTLV item: a tag and its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub tag: u32,
    pub value: Value,
}

/// The 8-byte header of an item: (tag, type, length).
pub fn header(bytes: &[u8; 8]) -> (u32, u8, u32) {
    let tag = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]);
    let len = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    (tag, bytes[3], len)
}

/// Parses exactly one item filling `bytes`.
pub fn parse(bytes: &[u8]) -> Result<Item, String> {
    let (item, rest) = parse_item(bytes, 0, 0)?;
    if !rest.is_empty() {
        return Err(format!("{} bytes after the message", rest.len()));
    }
    Ok(item)
}

fn parse_item(input: &[u8], depth: usize, offset: usize) -> Result<(Item, &[u8]), String> {
    if depth > MAX_DEPTH {
        return Err(format!("structures nested deeper than {MAX_DEPTH}"));
    }
    let Some((head, rest)) = input.split_first_chunk::<8>() else {
        return Err(format!("truncated item header at byte {offset}"));
    };
    let (tag, ty, len) = header(head);
    let len = len as usize;
    let padded = len
        .checked_add(7)
        .map(|l| l / 8 * 8)
        .ok_or("length overflow")?;
    if rest.len() < padded {
        return Err(format!(
            "item {tag:#08x} at byte {offset} claims {len} bytes, {} remain",
            rest.len()
        ));
    }
    let (body, rest) = rest.split_at(padded);
    let (data, pad) = body.split_at(len);
    if pad.iter().any(|b| *b != 0) {
        return Err(format!(
            "non-zero padding in item {tag:#08x} at byte {offset}"
        ));
    }
    let fixed = |want: usize| -> Result<(), String> {
        if len == want {
            Ok(())
        } else {
            Err(format!(
                "item {tag:#08x} of type {ty:#04x} has length {len}, expected {want}"
            ))
        }
    };
    let be4 = |d: &[u8]| u32::from_be_bytes([d[0], d[1], d[2], d[3]]);
    let be8 = |d: &[u8]| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&d[..8]);
        i64::from_be_bytes(b)
    };
    let value = match ty {
        kind::STRUCTURE => {
            let mut children = Vec::new();
            let mut inner = data;
            while !inner.is_empty() {
                let at = offset + 8 + (len - inner.len());
                let (child, more) = parse_item(inner, depth + 1, at)?;
                children.push(child);
                inner = more;
            }
            Value::Structure(children)
        }
        kind::INTEGER => {
            fixed(4)?;
            Value::Integer(be4(data) as i32)
        }
        kind::LONG_INTEGER => {
            fixed(8)?;
            Value::LongInteger(be8(data))
        }
        kind::BIG_INTEGER => {
            if len == 0 || len % 8 != 0 {
                return Err(format!("big integer {tag:#08x} has length {len}"));
            }
            Value::BigInteger(data.to_vec())
        }
        kind::ENUMERATION => {
            fixed(4)?;
            Value::Enumeration(be4(data))
        }
        kind::BOOLEAN => {
            fixed(8)?;
            match be8(data) {
                0 => Value::Boolean(false),
                1 => Value::Boolean(true),
                other => return Err(format!("boolean {tag:#08x} has value {other}")),
            }
        }
        kind::TEXT_STRING => Value::Text(
            String::from_utf8(data.to_vec())
                .map_err(|_| format!("text string {tag:#08x} is not UTF-8"))?,
        ),
        kind::BYTE_STRING => Value::Bytes(data.to_vec()),
        kind::DATE_TIME => {
            fixed(8)?;
            Value::DateTime(be8(data))
        }
        kind::INTERVAL => {
            fixed(4)?;
            Value::Interval(be4(data))
        }
        other => return Err(format!("item {tag:#08x} has unknown type {other:#04x}")),
    };
    Ok((Item { tag, value }, rest))
}

impl Item {
    /// The children of a structure (none for other types).
    pub fn children(&self) -> &[Item] {
        match &self.value {
            Value::Structure(c) => c,
            _ => &[],
        }
    }

    /// The first child with `tag`.
    pub fn child(&self, tag: u32) -> Option<&Item> {
        self.children().iter().find(|c| c.tag == tag)
    }

    /// Every child with `tag`.
    pub fn all(&self, tag: u32) -> impl Iterator<Item = &Item> {
        self.children().iter().filter(move |c| c.tag == tag)
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
            Value::Text(t) => Some(t),
            _ => None,
        }
    }

    /// Byte strings, and big integers as their big-endian bytes.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match &self.value {
            Value::Bytes(b) | Value::BigInteger(b) => Some(b),
            _ => None,
        }
    }

    pub fn enum_of(&self, tag: u32) -> Option<u32> {
        self.child(tag).and_then(Item::as_enum)
    }

    pub fn int_of(&self, tag: u32) -> Option<i32> {
        self.child(tag).and_then(Item::as_int)
    }

    pub fn text_of(&self, tag: u32) -> Option<&str> {
        self.child(tag).and_then(Item::as_text)
    }

    pub fn bytes_of(&self, tag: u32) -> Option<&[u8]> {
        self.child(tag).and_then(Item::as_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(tag: u32, ty: u8, data: &[u8]) -> Vec<u8> {
        let mut out = tag.to_be_bytes()[1..].to_vec();
        out.push(ty);
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend_from_slice(data);
        while out.len() % 8 != 0 {
            out.push(0);
        }
        out
    }

    #[test]
    fn reads_a_structure_with_every_leaf_type() {
        let mut body = Vec::new();
        body.extend(item(0x420001, kind::INTEGER, &7i32.to_be_bytes()));
        body.extend(item(0x420002, kind::ENUMERATION, &5u32.to_be_bytes()));
        body.extend(item(0x420003, kind::TEXT_STRING, b"hello"));
        body.extend(item(0x420004, kind::BYTE_STRING, &[1, 2, 3]));
        body.extend(item(0x420005, kind::BOOLEAN, &1u64.to_be_bytes()));
        body.extend(item(0x420006, kind::BIG_INTEGER, &[0, 0, 0, 0, 0, 1, 0, 1]));
        let bytes = item(0x42007B, kind::STRUCTURE, &body);
        let top = parse(&bytes).unwrap();
        assert_eq!(top.int_of(0x420001), Some(7));
        assert_eq!(top.enum_of(0x420002), Some(5));
        assert_eq!(top.text_of(0x420003), Some("hello"));
        assert_eq!(top.bytes_of(0x420004), Some(&[1u8, 2, 3][..]));
        assert_eq!(top.child(0x420005).unwrap().value, Value::Boolean(true));
        assert_eq!(top.bytes_of(0x420006).unwrap().len(), 8);
    }

    #[test]
    fn refuses_malformed_input_without_panicking() {
        let good = item(
            0x42007B,
            kind::STRUCTURE,
            &item(0x420001, kind::INTEGER, &[0; 4]),
        );
        for cut in 0..good.len() {
            assert!(parse(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad_len = good.clone();
        bad_len[15] = 5; // inner integer claims 5 bytes
        assert!(parse(&bad_len).is_err());
        let mut huge = good.clone();
        huge[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(parse(&huge).is_err());
        let mut bad_type = good.clone();
        bad_type[11] = 0x0B;
        assert!(parse(&bad_type).is_err());
        // Deep nesting is refused, not a stack overflow.
        let mut deep = item(0x420001, kind::INTEGER, &[0; 4]);
        for _ in 0..100 {
            deep = item(0x420002, kind::STRUCTURE, &deep);
        }
        assert!(parse(&deep).unwrap_err().contains("nested"));
        // Arbitrary bytes never panic.
        let mut x: u32 = 12345;
        for _ in 0..2000 {
            let mut buf = good.clone();
            x = x.wrapping_mul(1103515245).wrapping_add(12345);
            let i = (x as usize) % buf.len();
            buf[i] = (x >> 16) as u8;
            let _ = parse(&buf);
        }
    }
}
