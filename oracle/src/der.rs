//! The few DER forms the oracle writes (SubjectPublicKeyInfo pieces) and reads (EC
//! parameters, a wrapped EC point, PKCS#1 RSAPublicKey, the parts of a PKCS#8 private
//! key that name its public key).
//!
//! Written here rather than taken from the signers so that a DER mistake in the
//! product cannot hide itself. Reading is strict DER: single-byte tags, definite and
//! minimal lengths; anything else reads as "not this form" (`None`), never a panic.

pub const INTEGER: u8 = 0x02;
pub const BIT_STRING: u8 = 0x03;
pub const OCTET_STRING: u8 = 0x04;
pub const NULL: u8 = 0x05;
pub const OBJECT_IDENTIFIER: u8 = 0x06;
pub const PRINTABLE_STRING: u8 = 0x13;
pub const SEQUENCE: u8 = 0x30;
/// `[0]`, constructed: PKCS#8 attributes, ECPrivateKey parameters.
pub const CONTEXT_0_CONSTRUCTED: u8 = 0xa0;
/// `[1]`, primitive: OneAsymmetricKey's publicKey (an IMPLICIT BIT STRING).
pub const CONTEXT_1_PRIMITIVE: u8 = 0x81;
/// `[1]`, constructed: ECPrivateKey's publicKey (an EXPLICIT BIT STRING).
pub const CONTEXT_1_CONSTRUCTED: u8 = 0xa1;

/// One element: tag, length, contents.
pub fn element(tag: u8, contents: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = contents.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let be = len.to_be_bytes();
        let first = be.iter().position(|b| *b != 0).unwrap_or(be.len() - 1);
        out.push(0x80 | (be.len() - first) as u8);
        out.extend_from_slice(&be[first..]);
    }
    out.extend_from_slice(contents);
    out
}

/// A SEQUENCE of encoded elements.
pub fn sequence(elements: &[&[u8]]) -> Vec<u8> {
    element(SEQUENCE, &elements.concat())
}

/// An INTEGER holding the unsigned big-endian `magnitude` (leading zero bytes allowed):
/// the minimal two's-complement form, a 0x00 in front when the top bit is set.
pub fn unsigned_integer(magnitude: &[u8]) -> Vec<u8> {
    let significant = match magnitude.iter().position(|b| *b != 0) {
        Some(i) => &magnitude[i..],
        None => &[][..],
    };
    let mut contents = Vec::with_capacity(significant.len() + 1);
    match significant.first() {
        None => contents.push(0),
        Some(b) if b & 0x80 != 0 => contents.push(0),
        Some(_) => {}
    }
    contents.extend_from_slice(significant);
    element(INTEGER, &contents)
}

/// A BIT STRING of whole bytes (no unused bits).
pub fn bit_string(bytes: &[u8]) -> Vec<u8> {
    let mut contents = Vec::with_capacity(bytes.len() + 1);
    contents.push(0);
    contents.extend_from_slice(bytes);
    element(BIT_STRING, &contents)
}

/// The first element of `input`: `(tag, contents, what follows)`.
pub fn first(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None; // a multi-byte tag: none of the forms read here has one
    }
    let (&len0, rest) = rest.split_first()?;
    let (len, rest) = if len0 < 0x80 {
        (usize::from(len0), rest)
    } else {
        let count = usize::from(len0 & 0x7f);
        // 0x80 is the indefinite length (BER only); more than 4 length bytes is absurd.
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (len_bytes, rest) = rest.split_at(count);
        let len = len_bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        // Minimal: no leading zero byte, and the long form only where it is needed.
        if len_bytes[0] == 0 || len < 0x80 {
            return None;
        }
        (len, rest)
    };
    if rest.len() < len {
        return None;
    }
    let (contents, rest) = rest.split_at(len);
    Some((tag, contents, rest))
}

/// The contents of `input` when it is exactly one element with tag `tag`.
pub fn only(input: &[u8], tag: u8) -> Option<&[u8]> {
    match first(input)? {
        (t, contents, []) if t == tag => Some(contents),
        _ => None,
    }
}

/// The unsigned magnitude of a minimally encoded, non-negative INTEGER's contents.
pub fn non_negative(contents: &[u8]) -> Option<&[u8]> {
    match contents {
        [] => None,
        [b, ..] if b & 0x80 != 0 => None,
        [0, next, ..] if next & 0x80 == 0 => None,
        [0, rest @ ..] => Some(rest),
        _ => Some(contents),
    }
}

/// The bytes of a BIT STRING's contents that has no unused bits; `None` for an empty
/// contents or one with unused bits.
pub fn whole_bytes(bit_string_contents: &[u8]) -> Option<&[u8]> {
    match bit_string_contents {
        [0, bytes @ ..] => Some(bytes),
        _ => None,
    }
}

/// `RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }` (PKCS#1):
/// the modulus and exponent as unsigned big-endian bytes. `None` for anything else,
/// negative or non-minimal integers included.
pub fn rsa_public_key(input: &[u8]) -> Option<(&[u8], &[u8])> {
    let body = only(input, SEQUENCE)?;
    let (INTEGER, n, rest) = first(body)? else {
        return None;
    };
    let e = only(rest, INTEGER)?;
    Some((non_negative(n)?, non_negative(e)?))
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    #[rstest]
    #[case::empty(0, "00")]
    #[case::largest_short(0x7f, "7f")]
    #[case::smallest_long(0x80, "8180")]
    #[case::one_byte_long(0xff, "81ff")]
    #[case::two_bytes(0x100, "820100")]
    #[case::three_bytes(0x1_0000, "83010000")]
    fn lengths_are_minimal(#[case] len: usize, #[case] header: &str) {
        let encoded = element(OCTET_STRING, &vec![0xaa; len]);
        assert_eq!(hex::encode(&encoded[1..1 + header.len() / 2]), header);
        assert_eq!(
            first(&encoded),
            Some((OCTET_STRING, &vec![0xaa; len][..], &[][..]))
        );
    }

    #[rstest]
    #[case::zero("", "020100")]
    #[case::zeros_only("0000", "020100")]
    #[case::small("01", "020101")]
    #[case::top_bit_set("80", "02020080")]
    #[case::leading_zeros_dropped("00007f", "02017f")]
    #[case::leading_zero_kept_for_top_bit("0080", "02020080")]
    fn integers_are_minimal_and_non_negative(#[case] magnitude: &str, #[case] der: &str) {
        let encoded = unsigned_integer(&hex::decode(magnitude).unwrap());
        assert_eq!(hex::encode(encoded), der);
    }

    #[rstest]
    #[case::nothing("")]
    #[case::tag_only("04")]
    #[case::short_contents("0403aabb")]
    #[case::indefinite_length("0480aabb0000")]
    #[case::long_form_for_a_short_length("048102aabb")]
    #[case::leading_zero_in_length("04820080")]
    #[case::multi_byte_tag("1f8101")]
    #[case::huge_length("048fffffffffffffffffffffffffffffff")]
    fn malformed_elements_are_not_read(#[case] input: &str) {
        assert_eq!(first(&hex::decode(input).unwrap()), None);
    }

    #[test]
    fn only_refuses_trailing_bytes_and_other_tags() {
        assert_eq!(only(&[0x04, 0x01, 0xaa], OCTET_STRING), Some(&[0xaa][..]));
        assert_eq!(only(&[0x04, 0x01, 0xaa, 0x00], OCTET_STRING), None);
        assert_eq!(only(&[0x04, 0x01, 0xaa], SEQUENCE), None);
    }

    #[rstest]
    #[case::plain("3006020100020103", Some(("", "03")))]
    #[case::top_bit_modulus("300702020080020103", Some(("80", "03")))]
    #[case::negative_modulus("3006020180020103", None)]
    #[case::non_minimal_modulus("300702020001020103", None)]
    #[case::trailing_bytes("300602010002010300", None)]
    #[case::three_integers("3009020100020103020101", None)]
    #[case::not_a_sequence("3106020100020103", None)]
    fn pkcs1_public_keys_are_read_strictly(
        #[case] der: &str,
        #[case] expected: Option<(&str, &str)>,
    ) {
        let der = hex::decode(der).unwrap();
        let got = rsa_public_key(&der).map(|(n, e)| (hex::encode(n), hex::encode(e)));
        let expected = expected.map(|(n, e)| (n.to_string(), e.to_string()));
        assert_eq!(got, expected);
    }
}
