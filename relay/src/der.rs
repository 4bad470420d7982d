//! The few DER encodings the relay hands out: RSA public keys (PKCS#1 and
//! SubjectPublicKeyInfo), EC public keys (SubjectPublicKeyInfo) and ECDSA signatures
//! (ECDSA-Sig-Value from the token's raw `r || s`), and the SHA-256 DigestInfo that
//! PKCS#1 v1.5 signs.
//!
//! Kept here rather than borrowed from hsm-signers so that the relay, a separate
//! deployable, depends on nothing of the signers under test.
//!
//! Refused (`None`): EC points that are neither a raw uncompressed point of the
//! curve's size nor one wrapped in an OCTET STRING; signatures of odd or zero length.

const TAG_INTEGER: u8 = 0x02;
const TAG_BIT_STRING: u8 = 0x03;
const TAG_OCTET_STRING: u8 = 0x04;
const TAG_SEQUENCE: u8 = 0x30;

/// rsaEncryption, 1.2.840.113549.1.1.1.
const OID_RSA_ENCRYPTION: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
];
/// id-ecPublicKey, 1.2.840.10045.2.1.
const OID_EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// prime256v1: also CKA_EC_PARAMS for P-256.
pub const OID_P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// secp384r1: also CKA_EC_PARAMS for P-384.
pub const OID_P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];

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

fn tlv(tag: u8, contents: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(contents.len() + 6);
    out.push(tag);
    push_len(&mut out, contents.len());
    out.extend_from_slice(contents);
    out
}

fn sequence(parts: &[&[u8]]) -> Vec<u8> {
    tlv(TAG_SEQUENCE, &parts.concat())
}

/// A non-negative INTEGER from an unsigned big-endian magnitude.
fn unsigned_integer(magnitude: &[u8]) -> Vec<u8> {
    let start = magnitude
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(magnitude.len());
    let digits = &magnitude[start..];
    let mut c = Vec::with_capacity(digits.len() + 1);
    if digits.first().is_none_or(|b| b & 0x80 != 0) {
        c.push(0);
    }
    c.extend_from_slice(digits);
    tlv(TAG_INTEGER, &c)
}

fn bit_string(bytes: &[u8]) -> Vec<u8> {
    let mut c = Vec::with_capacity(bytes.len() + 1);
    c.push(0);
    c.extend_from_slice(bytes);
    tlv(TAG_BIT_STRING, &c)
}

/// PKCS#1 `RSAPublicKey ::= SEQUENCE { modulus, publicExponent }`.
pub fn rsa_public_key(modulus: &[u8], exponent: &[u8]) -> Vec<u8> {
    sequence(&[&unsigned_integer(modulus), &unsigned_integer(exponent)])
}

/// SubjectPublicKeyInfo of an RSA key.
pub fn rsa_spki(modulus: &[u8], exponent: &[u8]) -> Vec<u8> {
    let alg = sequence(&[OID_RSA_ENCRYPTION, &[0x05, 0x00]]);
    sequence(&[&alg, &bit_string(&rsa_public_key(modulus, exponent))])
}

/// The uncompressed point `04 || X || Y` from CKA_EC_POINT (raw or in an OCTET
/// STRING) for a curve whose coordinates have `field_len` bytes.
pub fn ec_point(point: &[u8], field_len: usize) -> Option<&[u8]> {
    let expected = 1 + 2 * field_len;
    let fits = |p: &[u8]| p.len() == expected && p.first() == Some(&0x04);
    if fits(point) {
        return Some(point);
    }
    let (&tag, rest) = point.split_first()?;
    if tag != TAG_OCTET_STRING {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let inner = match first {
        l if l < 0x80 => rest
            .get(..l as usize)
            .filter(|_| rest.len() == l as usize)?,
        0x81 => {
            let (&l, rest) = rest.split_first()?;
            rest.get(..l as usize)
                .filter(|_| rest.len() == l as usize)?
        }
        _ => return None,
    };
    fits(inner).then_some(inner)
}

/// SubjectPublicKeyInfo of an EC key: `curve_oid` is CKA_EC_PARAMS (a namedCurve OID),
/// `point` the uncompressed point.
pub fn ec_spki(curve_oid: &[u8], point: &[u8]) -> Vec<u8> {
    let alg = sequence(&[OID_EC_PUBLIC_KEY, curve_oid]);
    sequence(&[&alg, &bit_string(point)])
}

/// DigestInfo `SEQUENCE { AlgorithmIdentifier { id-sha256, NULL }, OCTET STRING }` of a
/// SHA-256 digest: what PKCS#1 v1.5 signs (RFC 8017 section 9.2).
pub fn sha256_digest_info(digest: &[u8; 32]) -> Vec<u8> {
    /// id-sha256, 2.16.840.1.101.3.4.2.1.
    const OID_SHA256: &[u8] = &[
        0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
    ];
    let alg = sequence(&[OID_SHA256, &[0x05, 0x00]]);
    sequence(&[&alg, &tlv(TAG_OCTET_STRING, digest)])
}

/// ECDSA-Sig-Value from `r || s` (equal halves).
pub fn ecdsa_signature(raw: &[u8]) -> Option<Vec<u8>> {
    if raw.is_empty() || raw.len() % 2 != 0 {
        return None;
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    Some(sequence(&[&unsigned_integer(r), &unsigned_integer(s)]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ec_point_accepts_raw_and_wrapped() {
        let mut raw = vec![4u8];
        raw.extend([7u8; 64]);
        assert_eq!(ec_point(&raw, 32), Some(&raw[..]));
        let wrapped = tlv(TAG_OCTET_STRING, &raw);
        assert_eq!(ec_point(&wrapped, 32), Some(&raw[..]));
        assert_eq!(ec_point(&wrapped, 48), None);
        assert_eq!(ec_point(&[4, 1, 2], 32), None);
        assert_eq!(ec_point(&[], 32), None);
    }

    #[test]
    fn sha256_digest_info_has_the_rfc_8017_prefix() {
        let info = sha256_digest_info(&[0xaa; 32]);
        let prefix = [
            0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x01, 0x05, 0x00, 0x04, 0x20,
        ];
        assert_eq!(&info[..19], &prefix);
        assert_eq!(&info[19..], &[0xaa; 32]);
    }

    #[test]
    fn ecdsa_signature_is_der() {
        let mut raw = vec![0x80u8; 32];
        raw.extend([0x01u8; 32]);
        let der = ecdsa_signature(&raw).unwrap();
        assert_eq!(der[0], TAG_SEQUENCE);
        assert_eq!(&der[2..5], &[TAG_INTEGER, 33, 0]);
        assert!(ecdsa_signature(&[1, 2, 3]).is_none());
    }
}
