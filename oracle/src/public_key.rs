//! Public keys built from the pieces a backend holds (an RSA modulus and exponent, EC
//! parameters and a point, a PKCS#1 RSAPublicKey) into a DER SubjectPublicKeyInfo, the
//! form key identifiers and verification start from.
//!
//! The output is canonical DER, the same bytes whichever way the backend stored the
//! key, so an inventory's key identifiers equal those computed from the SPKI a signer
//! returns for the same key.
//!
//! Refused, with a message: a zero RSA modulus or exponent, a PKCS#1 structure that is
//! not exactly `SEQUENCE { INTEGER, INTEGER }` with non-negative integers, an EC point
//! that is compressed or of the wrong length for its curve (raw or inside one OCTET
//! STRING, as CKA_EC_POINT usually is).

use std::fmt;

use spki::ObjectIdentifier;

use crate::der;
use crate::oid;

/// Why the pieces do not make a public key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKeyError(pub String);

impl fmt::Display for PublicKeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PublicKeyError {}

/// The curves inventories know; keys on any other curve are not counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Curve {
    P256,
    P384,
    Ed25519,
}

/// The PKCS#11 3.0 curve-name form of CKA_EC_PARAMS for Ed25519.
const EDWARDS25519_NAME: &[u8] = b"edwards25519";

impl Curve {
    /// The curve named by CKA_EC_PARAMS: a namedCurve OID (P-256, P-384, id-Ed25519) or
    /// the PrintableString "edwards25519". `None` for other curves, explicit curve
    /// parameters and anything that is not one DER element.
    pub fn from_ec_params(params: &[u8]) -> Option<Curve> {
        if let Some(name) = der::only(params, der::PRINTABLE_STRING) {
            return (name == EDWARDS25519_NAME).then_some(Curve::Ed25519);
        }
        let arcs = der::only(params, der::OBJECT_IDENTIFIER)?;
        [Curve::P256, Curve::P384, Curve::Ed25519]
            .into_iter()
            .find(|c| c.oid().as_bytes() == arcs)
    }

    /// CKA_EC_PARAMS for this curve: its namedCurve OID in DER.
    pub fn ec_params(self) -> Vec<u8> {
        der::element(der::OBJECT_IDENTIFIER, self.oid().as_bytes())
    }

    fn oid(self) -> ObjectIdentifier {
        match self {
            Curve::P256 => oid::PRIME256V1,
            Curve::P384 => oid::SECP384R1,
            Curve::Ed25519 => oid::ED25519,
        }
    }

    /// The length of the public key bytes: an uncompressed point (04 || X || Y) for
    /// the NIST curves, the 32-byte key for Ed25519.
    fn key_len(self) -> usize {
        match self {
            Curve::P256 => 1 + 2 * 32,
            Curve::P384 => 1 + 2 * 48,
            Curve::Ed25519 => 32,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Curve::P256 => "P-256",
            Curve::P384 => "P-384",
            Curve::Ed25519 => "Ed25519",
        }
    }
}

/// The SPKI of an RSA key: rsaEncryption with NULL parameters over
/// `RSAPublicKey { modulus, publicExponent }`. Both are unsigned big-endian; leading
/// zero bytes are allowed (PKCS#11 and KMIP Big Integers carry them).
pub fn rsa(modulus: &[u8], exponent: &[u8]) -> Result<Vec<u8>, PublicKeyError> {
    let is_zero = |v: &[u8]| v.iter().all(|b| *b == 0);
    if is_zero(modulus) || is_zero(exponent) {
        return Err(PublicKeyError(
            "an RSA key with a zero modulus or exponent".into(),
        ));
    }
    let algorithm = der::sequence(&[
        &der::element(der::OBJECT_IDENTIFIER, oid::RSA_ENCRYPTION.as_bytes()),
        &der::element(der::NULL, &[]),
    ]);
    let key = der::sequence(&[
        &der::unsigned_integer(modulus),
        &der::unsigned_integer(exponent),
    ]);
    Ok(der::sequence(&[&algorithm, &der::bit_string(&key)]))
}

/// The SPKI of an RSA key given as a DER PKCS#1 RSAPublicKey.
pub fn rsa_from_pkcs1(pkcs1: &[u8]) -> Result<Vec<u8>, PublicKeyError> {
    let (n, e) = der::rsa_public_key(pkcs1).ok_or_else(|| {
        PublicKeyError(format!(
            "{} bytes that are not a DER RSAPublicKey SEQUENCE {{ modulus, publicExponent }}",
            pkcs1.len()
        ))
    })?;
    rsa(n, e)
}

/// The SPKI of a key on `curve`: id-ecPublicKey with the namedCurve for P-256 and
/// P-384, id-Ed25519 without parameters (RFC 8410) for Ed25519.
///
/// `point` is the uncompressed point (or the 32-byte Ed25519 key), raw or inside one
/// DER OCTET STRING.
pub fn ec(curve: Curve, point: &[u8]) -> Result<Vec<u8>, PublicKeyError> {
    let fits = |p: &[u8]| {
        p.len() == curve.key_len() && (curve == Curve::Ed25519 || p.first() == Some(&0x04))
    };
    let key = if fits(point) {
        point
    } else {
        der::only(point, der::OCTET_STRING)
            .filter(|inner| fits(inner))
            .ok_or_else(|| {
                PublicKeyError(format!(
                    "{} bytes are not a {} public key ({} bytes{}, raw or in an OCTET STRING)",
                    point.len(),
                    curve.name(),
                    curve.key_len(),
                    if curve == Curve::Ed25519 {
                        ""
                    } else {
                        " starting 04, uncompressed"
                    }
                ))
            })?
    };
    let algorithm = match curve {
        Curve::Ed25519 => der::sequence(&[&der::element(
            der::OBJECT_IDENTIFIER,
            oid::ED25519.as_bytes(),
        )]),
        Curve::P256 | Curve::P384 => der::sequence(&[
            &der::element(der::OBJECT_IDENTIFIER, oid::EC_PUBLIC_KEY.as_bytes()),
            &curve.ec_params(),
        ]),
    };
    Ok(der::sequence(&[&algorithm, &der::bit_string(key)]))
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::encoding::AsDer as _;
    use aws_lc_rs::signature::{self as sig, KeyPair as _};
    use rsa::traits::PublicKeyParts as _;
    use rstest::rstest;

    use super::*;

    /// An SPKI made by aws-lc-rs (the software signer's library) and the raw key bits.
    fn aws_lc_key(curve: Option<Curve>) -> (Vec<u8>, Vec<u8>) {
        let spki = match curve {
            None => sig::RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                .unwrap()
                .public_key()
                .as_der()
                .unwrap()
                .as_ref()
                .to_vec(),
            Some(Curve::P256 | Curve::P384) => {
                let alg = if curve == Some(Curve::P256) {
                    &sig::ECDSA_P256_SHA256_ASN1_SIGNING
                } else {
                    &sig::ECDSA_P384_SHA384_ASN1_SIGNING
                };
                sig::EcdsaKeyPair::generate(alg)
                    .unwrap()
                    .public_key()
                    .as_der()
                    .unwrap()
                    .as_ref()
                    .to_vec()
            }
            Some(Curve::Ed25519) => sig::Ed25519KeyPair::generate()
                .unwrap()
                .public_key()
                .as_der()
                .unwrap()
                .as_ref()
                .to_vec(),
        };
        let bits = spki::SubjectPublicKeyInfoRef::try_from(spki.as_slice())
            .unwrap()
            .subject_public_key
            .raw_bytes()
            .to_vec();
        (spki, bits)
    }

    #[rstest]
    #[case(Curve::P256)]
    #[case(Curve::P384)]
    #[case(Curve::Ed25519)]
    fn a_point_makes_the_spki_aws_lc_makes(#[case] curve: Curve) {
        let (spki, point) = aws_lc_key(Some(curve));
        assert_eq!(ec(curve, &point), Ok(spki.clone()));
        // CKA_EC_POINT's usual form: the point inside an OCTET STRING.
        let wrapped = der::element(der::OCTET_STRING, &point);
        assert_eq!(ec(curve, &wrapped), Ok(spki));
    }

    #[test]
    fn modulus_and_exponent_make_the_spki_aws_lc_makes() {
        let (spki, bits) = aws_lc_key(None);
        let key =
            <rsa::RsaPublicKey as rsa::pkcs1::DecodeRsaPublicKey>::from_pkcs1_der(&bits).unwrap();
        let (n, e) = (key.n().to_bytes_be(), key.e().to_bytes_be());
        assert_eq!(rsa(&n, &e), Ok(spki.clone()));
        // Leading zeros (a Big Integer's padding) change nothing.
        let padded = [&[0u8; 8][..], &n].concat();
        assert_eq!(rsa(&padded, &[0, 0, 1, 0, 1]), Ok(spki.clone()));
        assert_eq!(rsa_from_pkcs1(&bits), Ok(spki));
    }

    #[rstest]
    #[case::zero_modulus(&[0, 0], &[1, 0, 1])]
    #[case::empty_modulus(&[], &[1, 0, 1])]
    #[case::zero_exponent(&[0xc0, 1], &[0])]
    fn a_zero_rsa_part_is_refused(#[case] n: &[u8], #[case] e: &[u8]) {
        assert!(rsa(n, e).unwrap_err().0.contains("zero"));
    }

    #[rstest]
    #[case::compressed_p256(Curve::P256, [&[0x02u8][..], &[7; 32]].concat())]
    #[case::short_p256(Curve::P256, [&[0x04u8][..], &[7; 63]].concat())]
    #[case::p256_point_for_p384(Curve::P384, [&[0x04u8][..], &[7; 64]].concat())]
    #[case::long_ed25519(Curve::Ed25519, vec![7; 33])]
    #[case::twice_wrapped(Curve::Ed25519, der::element(der::OCTET_STRING, &der::element(der::OCTET_STRING, &[7; 32])))]
    #[case::empty(Curve::P384, vec![])]
    fn a_point_of_the_wrong_shape_is_refused(#[case] curve: Curve, #[case] point: Vec<u8>) {
        let err = ec(curve, &point).unwrap_err();
        assert!(err.0.contains(curve.name()), "{err}");
    }

    #[rstest]
    #[case::p256("06082a8648ce3d030107", Some(Curve::P256))]
    #[case::p384("06052b81040022", Some(Curve::P384))]
    #[case::ed25519_oid("06032b6570", Some(Curve::Ed25519))]
    #[case::edwards25519_name("130c656477617264733235353139", Some(Curve::Ed25519))]
    #[case::p521("06052b81040023", None)]
    #[case::ed448("06032b6571", None)]
    #[case::other_name("130a6375727665323535", None)]
    #[case::trailing_byte("06032b657000", None)]
    #[case::explicit_parameters("3000", None)]
    #[case::empty("", None)]
    fn ec_params_name_a_curve(#[case] params: &str, #[case] curve: Option<Curve>) {
        assert_eq!(Curve::from_ec_params(&hex::decode(params).unwrap()), curve);
    }

    #[rstest]
    #[case(Curve::P256)]
    #[case(Curve::P384)]
    #[case(Curve::Ed25519)]
    fn ec_params_round_trip(#[case] curve: Curve) {
        assert_eq!(Curve::from_ec_params(&curve.ec_params()), Some(curve));
    }
}
