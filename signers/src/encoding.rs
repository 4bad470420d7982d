//! Small DER encoders for what backends hand us: public keys as SubjectPublicKeyInfo
//! and ECDSA signatures as ECDSA-Sig-Value.
//!
//! Backends give key material in pieces (an RSA modulus and exponent, an EC point with
//! or without an OCTET STRING around it, a raw `r || s` signature); signers return
//! DER. Everything here is hand-written DER with definite, minimal lengths.
//!
//! Refused (as [`ErrorKind::Backend`](crate::ErrorKind::Backend), since the bytes come
//! from a backend): signatures that are neither `r || s` with equal non-zero halves nor
//! a DER ECDSA-Sig-Value, points of the wrong length for the curve, compressed EC
//! points. An RSA key type given to [`ec_spki_der`] is
//! [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput).

use crate::{KeyType, SignerError};

const TAG_INTEGER: u8 = 0x02;
const TAG_BIT_STRING: u8 = 0x03;
const TAG_OCTET_STRING: u8 = 0x04;
const TAG_NULL: u8 = 0x05;
const TAG_SEQUENCE: u8 = 0x30;

/// DER of the OID rsaEncryption, 1.2.840.113549.1.1.1.
pub const OID_RSA_ENCRYPTION: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
];
/// DER of the OID id-ecPublicKey, 1.2.840.10045.2.1.
pub const OID_EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// DER of the OID prime256v1 (P-256), 1.2.840.10045.3.1.7: CKA_EC_PARAMS for P-256.
pub const OID_P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// DER of the OID secp384r1 (P-384), 1.3.132.0.34: CKA_EC_PARAMS for P-384.
pub const OID_P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
/// DER of the OID id-Ed25519, 1.3.101.112 (RFC 8410).
pub const OID_ED25519: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];
/// DER of the PrintableString "edwards25519", the curve-name form of CKA_EC_PARAMS
/// for Ed25519 in PKCS#11 3.0.
pub const EC_PARAMS_EDWARDS25519_NAME: &[u8] = b"\x13\x0cedwards25519";

/// Appends a DER length (short form below 128, long form above).
fn push_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

/// One TLV with the given tag and contents.
fn tlv(tag: u8, contents: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(contents.len() + 6);
    out.push(tag);
    push_len(&mut out, contents.len());
    out.extend_from_slice(contents);
    out
}

/// A SEQUENCE of already encoded elements.
fn sequence(elements: &[&[u8]]) -> Vec<u8> {
    tlv(TAG_SEQUENCE, &elements.concat())
}

/// A non-negative INTEGER from big-endian magnitude bytes: leading zeros dropped, one
/// 0x00 added when the high bit is set. Empty or all-zero input encodes 0.
fn unsigned_integer(magnitude: &[u8]) -> Vec<u8> {
    let start = magnitude
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(magnitude.len());
    let digits = &magnitude[start..];
    let mut contents = Vec::with_capacity(digits.len() + 1);
    if digits.first().is_none_or(|b| b & 0x80 != 0) {
        contents.push(0);
    }
    contents.extend_from_slice(digits);
    tlv(TAG_INTEGER, &contents)
}

/// A BIT STRING with no unused bits.
fn bit_string(bytes: &[u8]) -> Vec<u8> {
    let mut contents = Vec::with_capacity(bytes.len() + 1);
    contents.push(0);
    contents.extend_from_slice(bytes);
    tlv(TAG_BIT_STRING, &contents)
}

/// The modulus and public exponent of a DER
/// `RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }` (PKCS#1), as
/// their INTEGER contents; `None` for anything else, trailing bytes included.
pub fn rsa_public_key_parts(der: &[u8]) -> Option<(&[u8], &[u8])> {
    let (TAG_SEQUENCE, body, []) = read_tlv(der)? else {
        return None;
    };
    let (TAG_INTEGER, n, rest) = read_tlv(body)? else {
        return None;
    };
    let (TAG_INTEGER, e, []) = read_tlv(rest)? else {
        return None;
    };
    Some((n, e))
}

/// Reads one DER TLV (single-byte tag, definite minimal length) from the front of
/// `input`: `(tag, contents, rest)`, or `None` when it is not well-formed DER.
fn read_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None; // multi-byte tags: nothing we read uses them
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > std::mem::size_of::<usize>() || rest.len() < n {
            return None; // indefinite length, or absurd
        }
        let (len_bytes, rest) = rest.split_at(n);
        if len_bytes[0] == 0 {
            return None; // not minimal
        }
        let len = len_bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | *b as usize);
        if len < 0x80 {
            return None; // long form where the short one fits
        }
        (len, rest)
    };
    if rest.len() < len {
        return None;
    }
    let (contents, rest) = rest.split_at(len);
    Some((tag, contents, rest))
}

/// The contents of `input` if it is exactly one DER OCTET STRING.
fn octet_string_contents(input: &[u8]) -> Option<&[u8]> {
    match read_tlv(input)? {
        (TAG_OCTET_STRING, contents, []) => Some(contents),
        _ => None,
    }
}

/// Whether `contents` is a minimally encoded, positive (non-zero) INTEGER value.
fn is_positive_integer(contents: &[u8]) -> bool {
    match contents {
        [] => false,
        [first, ..] if first & 0x80 != 0 => false,
        [0] => false,
        [0, second, ..] => second & 0x80 != 0,
        _ => true,
    }
}

/// Whether `sig` is a DER `ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }` with
/// positive, minimally encoded integers and nothing after it.
pub fn is_der_ecdsa_signature(sig: &[u8]) -> bool {
    let Some((TAG_SEQUENCE, body, [])) = read_tlv(sig) else {
        return false;
    };
    let Some((TAG_INTEGER, r, rest)) = read_tlv(body) else {
        return false;
    };
    let Some((TAG_INTEGER, s, [])) = read_tlv(rest) else {
        return false;
    };
    is_positive_integer(r) && is_positive_integer(s)
}

/// Converts an ECDSA signature `r || s` (two equal halves, as PKCS#11 CKM_ECDSA gives
/// it) into a DER ECDSA-Sig-Value. Input that already is a DER ECDSA-Sig-Value (as some
/// KMIP servers answer) is returned unchanged.
///
/// Refused: empty or odd-length input that is not DER, and an `r` or `s` of zero.
pub fn ecdsa_raw_to_der(raw: &[u8]) -> Result<Vec<u8>, SignerError> {
    if is_der_ecdsa_signature(raw) {
        return Ok(raw.to_vec());
    }
    if raw.is_empty() || raw.len() % 2 != 0 {
        return Err(SignerError::backend(format!(
            "ECDSA signature of {} bytes is neither r||s with equal halves nor DER",
            raw.len()
        )));
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    if r.iter().all(|b| *b == 0) || s.iter().all(|b| *b == 0) {
        return Err(SignerError::backend(
            "ECDSA signature has r or s equal to zero",
        ));
    }
    Ok(sequence(&[&unsigned_integer(r), &unsigned_integer(s)]))
}

/// A SubjectPublicKeyInfo for an RSA key: algorithm rsaEncryption with NULL
/// parameters, key `RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }`.
/// `modulus` and `exponent` are unsigned big-endian (leading zeros allowed).
pub fn rsa_spki_der(modulus: &[u8], exponent: &[u8]) -> Vec<u8> {
    let algorithm = sequence(&[OID_RSA_ENCRYPTION, &[TAG_NULL, 0x00]]);
    let rsa_public_key = sequence(&[&unsigned_integer(modulus), &unsigned_integer(exponent)]);
    sequence(&[&algorithm, &bit_string(&rsa_public_key)])
}

/// The CKA_EC_PARAMS (DER namedCurve OID) of an EC key type; `None` for others.
pub fn ec_params_der(curve: KeyType) -> Option<&'static [u8]> {
    match curve {
        KeyType::EcP256 => Some(OID_P256),
        KeyType::EcP384 => Some(OID_P384),
        KeyType::Ed25519 => Some(OID_ED25519),
        KeyType::Rsa2048 => None,
    }
}

/// The key type named by CKA_EC_PARAMS bytes: a P-256, P-384 or Ed25519 OID, or the
/// PrintableString "edwards25519". `None` for any other curve or encoding.
pub fn key_type_from_ec_params(params: &[u8]) -> Option<KeyType> {
    match params {
        OID_P256 => Some(KeyType::EcP256),
        OID_P384 => Some(KeyType::EcP384),
        OID_ED25519 | EC_PARAMS_EDWARDS25519_NAME => Some(KeyType::Ed25519),
        _ => None,
    }
}

/// Length in bytes of one coordinate on a NIST curve.
fn field_len(curve: KeyType) -> Option<usize> {
    match curve {
        KeyType::EcP256 => Some(32),
        KeyType::EcP384 => Some(48),
        _ => None,
    }
}

/// Takes `point` raw when it has exactly `expected` bytes (and, for EC, the right first
/// byte), else unwraps one OCTET STRING around it and checks the same.
fn unwrap_point(point: &[u8], expected: usize, first: Option<u8>) -> Option<&[u8]> {
    let fits = |p: &[u8]| p.len() == expected && first.is_none_or(|f| p.first() == Some(&f));
    if fits(point) {
        return Some(point);
    }
    octet_string_contents(point).filter(|inner| fits(inner))
}

/// A SubjectPublicKeyInfo for an EC key on P-256 or P-384: algorithm id-ecPublicKey with
/// the namedCurve, key the uncompressed point.
///
/// `point` is `0x04 || X || Y`, either raw or DER-wrapped in an OCTET STRING (as
/// CKA_EC_POINT usually is). Refused: a key type that is not a NIST curve
/// (InvalidInput), a point of another length or a compressed point (Backend).
pub fn ec_spki_der(curve: KeyType, point: &[u8]) -> Result<Vec<u8>, SignerError> {
    let (Some(field), Some(curve_oid)) = (field_len(curve), ec_params_der(curve)) else {
        return Err(SignerError::invalid_input(format!(
            "{curve} is not an ECDSA curve"
        )));
    };
    let expected = 1 + 2 * field;
    let raw = unwrap_point(point, expected, Some(0x04)).ok_or_else(|| {
        SignerError::backend(format!(
            "EC point of {} bytes is not an uncompressed {curve} point \
             ({expected} bytes starting 04, raw or in an OCTET STRING)",
            point.len()
        ))
    })?;
    let algorithm = sequence(&[OID_EC_PUBLIC_KEY, curve_oid]);
    Ok(sequence(&[&algorithm, &bit_string(raw)]))
}

/// A SubjectPublicKeyInfo for an Ed25519 key (RFC 8410): algorithm id-Ed25519 without
/// parameters, key the 32-byte public key.
///
/// `point` is the 32-byte key, raw or DER-wrapped in an OCTET STRING (as CKA_EC_POINT
/// usually is). Refused: anything else (Backend).
pub fn ed25519_spki_der(point: &[u8]) -> Result<Vec<u8>, SignerError> {
    let raw = unwrap_point(point, 32, None).ok_or_else(|| {
        SignerError::backend(format!(
            "Ed25519 public key of {} bytes is not 32 bytes, raw or in an OCTET STRING",
            point.len()
        ))
    })?;
    let algorithm = sequence(&[OID_ED25519]);
    Ok(sequence(&[&algorithm, &bit_string(raw)]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
    use rstest::rstest;
    use spki::SubjectPublicKeyInfoRef;

    fn wrap_octets(bytes: &[u8]) -> Vec<u8> {
        tlv(TAG_OCTET_STRING, bytes)
    }

    fn parses_as_spki(der: &[u8], oid: &str) {
        let spki = SubjectPublicKeyInfoRef::try_from(der).expect("SPKI parses");
        assert_eq!(spki.algorithm.oid.to_string(), oid);
    }

    #[test]
    fn lengths_use_the_short_and_long_forms() {
        let mut v = Vec::new();
        for len in [0, 0x7f, 0x80, 0xff, 0x100, 0x1_0000] {
            v.clear();
            push_len(&mut v, len);
            let expected: Vec<u8> = match len {
                0 => vec![0],
                0x7f => vec![0x7f],
                0x80 => vec![0x81, 0x80],
                0xff => vec![0x81, 0xff],
                0x100 => vec![0x82, 0x01, 0x00],
                _ => vec![0x83, 0x01, 0x00, 0x00],
            };
            assert_eq!(v, expected, "length {len}");
            // and it reads back
            let mut t = vec![TAG_OCTET_STRING];
            t.extend_from_slice(&v);
            t.resize(t.len() + len, 0xaa);
            let (_, contents, rest) = read_tlv(&t).unwrap();
            assert_eq!((contents.len(), rest.len()), (len, 0));
        }
    }

    #[rstest]
    #[case::zero(&[], &[0x02, 0x01, 0x00])]
    #[case::strips_zeros(&[0, 0, 0x01], &[0x02, 0x01, 0x01])]
    #[case::high_bit(&[0x80], &[0x02, 0x02, 0x00, 0x80])]
    #[case::zeros_then_high_bit(&[0, 0xff, 0x01], &[0x02, 0x03, 0x00, 0xff, 0x01])]
    #[case::exponent(&[0x01, 0x00, 0x01], &[0x02, 0x03, 0x01, 0x00, 0x01])]
    fn integers_are_minimal(#[case] magnitude: &[u8], #[case] der: &[u8]) {
        assert_eq!(unsigned_integer(magnitude), der);
    }

    #[rstest]
    #[case::p256(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &signature::ECDSA_P256_SHA256_ASN1, 64)]
    #[case::p384(&signature::ECDSA_P384_SHA384_FIXED_SIGNING, &signature::ECDSA_P384_SHA384_ASN1, 96)]
    fn raw_ecdsa_signatures_become_verifiable_der(
        #[case] signing: &'static signature::EcdsaSigningAlgorithm,
        #[case] verifying: &'static signature::EcdsaVerificationAlgorithm,
        #[case] raw_len: usize,
    ) {
        let key = EcdsaKeyPair::generate(signing).unwrap();
        let rng = SystemRandom::new();
        // Enough signatures that some r or s has its high bit set or a leading zero byte.
        for i in 0..32u8 {
            let msg = [i; 10];
            let raw = key.sign(&rng, &msg).unwrap();
            assert_eq!(raw.as_ref().len(), raw_len);
            let der = ecdsa_raw_to_der(raw.as_ref()).unwrap();
            assert!(is_der_ecdsa_signature(&der), "{}", hex::encode(&der));
            signature::UnparsedPublicKey::new(verifying, key.public_key().as_ref())
                .verify(&msg, &der)
                .expect("converted signature verifies");
            // Already DER: returned unchanged.
            assert_eq!(ecdsa_raw_to_der(&der).unwrap(), der);
        }
    }

    #[test]
    fn raw_halves_with_high_bits_and_zeros() {
        let mut raw = vec![0u8; 64];
        raw[0] = 0x80; // r has its high bit set
        raw[31] = 1;
        raw[63] = 5; // s = 5 after 31 zero bytes
        let der = ecdsa_raw_to_der(&raw).unwrap();
        let mut expected = vec![0x30, 0x26, 0x02, 0x21, 0x00, 0x80];
        expected.extend_from_slice(&[0; 30]);
        expected.extend_from_slice(&[0x01, 0x02, 0x01, 0x05]);
        assert_eq!(der, expected);
    }

    #[rstest]
    #[case::empty(&[])]
    #[case::odd(&[1, 2, 3])]
    #[case::zero_r(&[0, 0, 1, 1])]
    #[case::zero_s(&[1, 1, 0, 0])]
    fn bad_signatures_are_refused(#[case] raw: &[u8]) {
        assert_eq!(ecdsa_raw_to_der(raw).unwrap_err().kind, ErrorKind::Backend);
    }

    #[rstest]
    #[case::negative(&[0x30, 0x06, 0x02, 0x01, 0x80, 0x02, 0x01, 0x01], false)]
    #[case::non_minimal(&[0x30, 0x07, 0x02, 0x02, 0x00, 0x01, 0x02, 0x01, 0x01], false)]
    #[case::trailing(&[0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01, 0x00], false)]
    #[case::three_ints(&[0x30, 0x09, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01], false)]
    #[case::ok(&[0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x7f], true)]
    fn der_signature_check(#[case] sig: &[u8], #[case] ok: bool) {
        assert_eq!(is_der_ecdsa_signature(sig), ok);
    }

    #[rstest]
    #[case::p256(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, KeyType::EcP256, "1.2.840.10045.3.1.7")]
    #[case::p384(&signature::ECDSA_P384_SHA384_ASN1_SIGNING, KeyType::EcP384, "1.3.132.0.34")]
    fn ec_spki_matches_aws_lc(
        #[case] alg: &'static signature::EcdsaSigningAlgorithm,
        #[case] curve: KeyType,
        #[case] curve_oid: &str,
    ) {
        let key = EcdsaKeyPair::generate(alg).unwrap();
        let point = key.public_key().as_ref();
        let reference: PublicKeyX509Der = key.public_key().as_der().unwrap();
        let raw = ec_spki_der(curve, point).unwrap();
        let wrapped = ec_spki_der(curve, &wrap_octets(point)).unwrap();
        assert_eq!(raw, reference.as_ref());
        assert_eq!(wrapped, raw);
        parses_as_spki(&raw, "1.2.840.10045.2.1");
        let spki = SubjectPublicKeyInfoRef::try_from(raw.as_slice()).unwrap();
        let params = spki.algorithm.parameters_oid().unwrap();
        assert_eq!(params.to_string(), curve_oid);
    }

    #[test]
    fn ec_points_of_the_wrong_shape_are_refused() {
        let key = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_ASN1_SIGNING).unwrap();
        let point = key.public_key().as_ref();
        // A P-256 point is not a P-384 point.
        let e = ec_spki_der(KeyType::EcP384, point).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Backend);
        // Compressed form (02/03 || X) is refused.
        let mut compressed = vec![0x02];
        compressed.extend_from_slice(&point[1..33]);
        assert!(ec_spki_der(KeyType::EcP256, &compressed).is_err());
        // Wrong first byte at the right length.
        let mut hybrid = point.to_vec();
        hybrid[0] = 0x06;
        assert!(ec_spki_der(KeyType::EcP256, &hybrid).is_err());
        // RSA is not a curve.
        let e = ec_spki_der(KeyType::Rsa2048, point).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidInput);
    }

    #[test]
    fn ed25519_spki_matches_aws_lc() {
        let key = Ed25519KeyPair::generate().unwrap();
        let raw_key = key.public_key().as_ref();
        let reference: PublicKeyX509Der = key.public_key().as_der().unwrap();
        let raw = ed25519_spki_der(raw_key).unwrap();
        assert_eq!(raw, reference.as_ref());
        assert_eq!(ed25519_spki_der(&wrap_octets(raw_key)).unwrap(), raw);
        parses_as_spki(&raw, "1.3.101.112");
        assert!(ed25519_spki_der(&raw_key[1..]).is_err());
        assert!(ed25519_spki_der(&wrap_octets(&raw_key[1..])).is_err());
    }

    #[test]
    fn rsa_spki_matches_aws_lc() {
        let key = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let public = key.public_key();
        let reference: PublicKeyX509Der = public.as_der().unwrap();
        let n = public.modulus().big_endian_without_leading_zero().to_vec();
        let e = public.exponent().big_endian_without_leading_zero().to_vec();
        let der = rsa_spki_der(&n, &e);
        assert_eq!(der, reference.as_ref());
        // Leading zero bytes (some tokens pad) make no difference.
        let mut padded = vec![0, 0];
        padded.extend_from_slice(&n);
        assert_eq!(rsa_spki_der(&padded, &[0, 1, 0, 1]), der);
        parses_as_spki(&der, "1.2.840.113549.1.1.1");
    }

    #[rstest]
    #[case(OID_P256, Some(KeyType::EcP256))]
    #[case(OID_P384, Some(KeyType::EcP384))]
    #[case(OID_ED25519, Some(KeyType::Ed25519))]
    #[case(EC_PARAMS_EDWARDS25519_NAME, Some(KeyType::Ed25519))]
    #[case(&[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23], None)] // P-521
    fn ec_params_are_recognised(#[case] params: &[u8], #[case] kt: Option<KeyType>) {
        assert_eq!(key_type_from_ec_params(params), kt);
        if let Some(kt) = kt.filter(|_| params != EC_PARAMS_EDWARDS25519_NAME) {
            assert_eq!(ec_params_der(kt), Some(params));
        }
    }

    #[test]
    fn read_tlv_refuses_malformed_lengths() {
        assert!(read_tlv(&[0x04, 0x81, 0x05, 1, 2, 3, 4, 5]).is_none()); // long form < 128
        assert!(read_tlv(&[0x04, 0x80]).is_none()); // indefinite
        assert!(read_tlv(&[0x04, 0x82, 0x00, 0x80]).is_none()); // leading zero
        assert!(read_tlv(&[0x04, 0x03, 1, 2]).is_none()); // short
        assert!(read_tlv(&[]).is_none());
    }
}
