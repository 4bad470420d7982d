//! Public keys built from the pieces a backend holds (an RSA modulus and exponent, EC
//! parameters and a point, a PKCS#1 RSAPublicKey) into a DER SubjectPublicKeyInfo, the
//! form key identifiers and verification start from.
//!
//! The output is canonical DER, the same bytes whichever way the backend stored the
//! key, so an inventory's key identifiers equal those computed from the SPKI a signer
//! returns for the same key.
//!
//! [`of_pkcs8`] takes the public key out of a PKCS#8 private key file (RSA, P-256,
//! P-384, Ed25519) and builds its SPKI the same way; the oracle's `pkcs8` module has the
//! forms read and the checks made.
//!
//! Refused, with a message: a zero RSA modulus or exponent, a PKCS#1 structure that is
//! not exactly `SEQUENCE { INTEGER, INTEGER }` with non-negative integers, an EC point
//! that is compressed or of the wrong length for its curve (raw or inside one OCTET
//! STRING, as CKA_EC_POINT usually is).

use std::fmt;

use spki::ObjectIdentifier;

use crate::der;
use crate::oid;
use crate::pkcs8::{self, PublicPart};

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

/// The SPKI of the key in a DER PKCS#8 private key document (`PrivateKeyInfo` or
/// `OneAsymmetricKey`), as aws-lc-rs writes the software signer's key files: RSA,
/// EC on P-256 or P-384, Ed25519.
///
/// The public key comes from the key material, not from the file's name, and must
/// belong to the private key: an RSA modulus that is not p·q, an EC point that is not
/// d·G or an Ed25519 publicKey field that is not the seed's key is refused. Refused
/// too: malformed DER, bytes after the document, another algorithm (its OID named in
/// the message), another curve, an EC key whose ECPrivateKey does not carry its public
/// key.
pub fn of_pkcs8(der: &[u8]) -> Result<Vec<u8>, PublicKeyError> {
    match pkcs8::public_part(der)? {
        PublicPart::Rsa { modulus, exponent } => rsa(modulus, exponent),
        PublicPart::Ec { curve, key } => ec(curve, &key),
    }
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::encoding::AsDer;
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

    /// The key files the software signer writes (signers/src/software.rs: the same
    /// aws-lc-rs calls), Ed25519 in PKCS#8 v1 too, which it reads as well.
    #[derive(Clone, Copy, Debug)]
    enum KeyFile {
        Rsa2048,
        P256,
        P384,
        Ed25519,
        Ed25519V1,
    }

    /// A key file's bytes and the SPKI aws-lc-rs reports for the same key.
    fn aws_lc_key_file(kind: KeyFile) -> (Vec<u8>, Vec<u8>) {
        use aws_lc_rs::encoding::{Pkcs8V1Der, PublicKeyX509Der};
        let ecdsa = |alg| {
            let k = sig::EcdsaKeyPair::generate(alg).unwrap();
            let spki = AsDer::<PublicKeyX509Der>::as_der(k.public_key()).unwrap();
            (
                k.to_pkcs8v1().unwrap().as_ref().to_vec(),
                spki.as_ref().to_vec(),
            )
        };
        let ed25519 = |v2: bool| {
            let k = sig::Ed25519KeyPair::generate().unwrap();
            let spki = AsDer::<PublicKeyX509Der>::as_der(k.public_key()).unwrap();
            let file = if v2 {
                k.to_pkcs8().unwrap().as_ref().to_vec()
            } else {
                k.to_pkcs8v1().unwrap().as_ref().to_vec()
            };
            (file, spki.as_ref().to_vec())
        };
        match kind {
            KeyFile::Rsa2048 => {
                let k = sig::RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
                let file = AsDer::<Pkcs8V1Der>::as_der(&k).unwrap();
                let spki = k.public_key().as_der().unwrap();
                (file.as_ref().to_vec(), spki.as_ref().to_vec())
            }
            KeyFile::P256 => ecdsa(&sig::ECDSA_P256_SHA256_ASN1_SIGNING),
            KeyFile::P384 => ecdsa(&sig::ECDSA_P384_SHA384_ASN1_SIGNING),
            KeyFile::Ed25519 => ed25519(true),
            KeyFile::Ed25519V1 => ed25519(false),
        }
    }

    #[rstest]
    #[case(KeyFile::Rsa2048)]
    #[case(KeyFile::P256)]
    #[case(KeyFile::P384)]
    #[case(KeyFile::Ed25519)]
    #[case(KeyFile::Ed25519V1)]
    fn a_key_file_makes_the_spki_aws_lc_makes(#[case] kind: KeyFile) {
        let (file, spki) = aws_lc_key_file(kind);
        let ours = of_pkcs8(&file).unwrap();
        assert_eq!(hex::encode(&ours), hex::encode(&spki));
        assert_eq!(
            crate::KeyId::of_spki(&ours).unwrap(),
            crate::KeyId::of_spki(&spki).unwrap()
        );
    }

    /// What aws-lc-rs writes, as the reader expects it: Ed25519 as OneAsymmetricKey
    /// (version 1) with an IMPLICIT [1] publicKey, EC with the point in the
    /// ECPrivateKey's [1], RSA with NULL parameters.
    #[test]
    fn aws_lc_writes_the_forms_read() {
        let (ed, spki) = aws_lc_key_file(KeyFile::Ed25519);
        let public = &spki[spki.len() - 32..];
        assert_eq!(ed[2..5], [0x02, 0x01, 0x01]);
        assert!(ed.ends_with(&[&[0x81, 0x21, 0x00][..], public].concat()));
        let (p256, spki) = aws_lc_key_file(KeyFile::P256);
        let point = &spki[spki.len() - 65..];
        assert!(p256.ends_with(&[&[0xa1, 0x44, 0x03, 0x42, 0x00][..], point].concat()));
        let (rsa_file, _) = aws_lc_key_file(KeyFile::Rsa2048);
        assert_eq!(
            hex::encode(&rsa_file[4..22]),
            "020100300d06092a864886f70d0101010500"
        );
    }

    #[rstest]
    #[case(KeyFile::Rsa2048)]
    #[case(KeyFile::P256)]
    #[case(KeyFile::P384)]
    #[case(KeyFile::Ed25519)]
    fn a_cut_or_padded_key_file_is_refused(#[case] kind: KeyFile) {
        let (file, _) = aws_lc_key_file(kind);
        for len in 0..file.len() {
            assert!(of_pkcs8(&file[..len]).is_err(), "{len} bytes of {kind:?}");
        }
        let padded = [&file[..], &[0]].concat();
        let err = of_pkcs8(&padded).unwrap_err();
        assert!(err.0.contains("1 bytes after"), "{err}");
        // The length says more than there is.
        let mut longer = file.clone();
        longer[3] = longer[3].wrapping_add(1);
        assert!(of_pkcs8(&longer).is_err());
    }

    #[rstest]
    #[case::empty("", "do not start with one whole DER element")]
    #[case::empty_sequence("3000", "the version is missing")]
    #[case::octet_string("0400", "not a SEQUENCE")]
    #[case::bad_version("3003020102", "version 02")]
    #[case::indefinite_length("3080020100", "one whole DER element")]
    // RFC 8410 section 10.3's Ed25519 key, with id-Ed448 / id-X25519 for id-Ed25519.
    #[case::ed448(
        "302e020100300506032b657104220420d4ee72dbf913584ad5b6d8f1f769f8ad3afe7c28cbf1d4fbe097a88f44755842",
        "id-Ed448 (1.3.101.113)"
    )]
    #[case::x25519(
        "302e020100300506032b656e04220420d4ee72dbf913584ad5b6d8f1f769f8ad3afe7c28cbf1d4fbe097a88f44755842",
        "id-X25519"
    )]
    #[case::ed25519_with_parameters(
        "3030020100300706032b6570050004220420d4ee72dbf913584ad5b6d8f1f769f8ad3afe7c28cbf1d4fbe097a88f44755842",
        "parameters"
    )]
    #[case::ed25519_short_seed(
        "302d020100300506032b657004210420d4ee72dbf913584ad5b6d8f1f769f8ad3afe7c28cbf1d4fbe097a88f447558",
        "32 bytes"
    )]
    #[case::ed25519_trailing_field(
        "3031020100300506032b657004220420d4ee72dbf913584ad5b6d8f1f769f8ad3afe7c28cbf1d4fbe097a88f44755842020100",
        "unexpected bytes at the end of the PrivateKeyInfo"
    )]
    fn what_is_not_a_key_file_read_here_is_refused(#[case] der: &str, #[case] message: &str) {
        let err = of_pkcs8(&hex::decode(der).unwrap()).unwrap_err();
        assert!(err.0.contains(message), "{err}");
    }

    #[test]
    fn the_rfc8410_example_key_reads() {
        // RFC 8410 section 10.3: the private key, and its public key from section 10.1.
        let file = hex::decode(
            "302e020100300506032b657004220420d4ee72dbf913584ad5b6d8f1f769f8ad3afe7c28cbf1d4fbe097a88f44755842",
        )
        .unwrap();
        let public =
            hex::decode("19bf44096984cdfe8541bac167dc3b96c85086aa30b6b6cb0c5c38ad703166e1")
                .unwrap();
        assert_eq!(of_pkcs8(&file), ec(Curve::Ed25519, &public));
    }

    /// A PKCS#8 v1 EC key on the curve `params` with private scalar `d` and, when
    /// given, `point` in the ECPrivateKey.
    fn ec_key_file(params: &[u8], d: &[u8], point: Option<&[u8]>) -> Vec<u8> {
        let mut fields = vec![
            der::element(der::INTEGER, &[1]),
            der::element(der::OCTET_STRING, d),
        ];
        if let Some(p) = point {
            fields.push(der::element(
                der::CONTEXT_1_CONSTRUCTED,
                &der::bit_string(p),
            ));
        }
        let ec_private_key = der::sequence(&fields.iter().map(Vec::as_slice).collect::<Vec<_>>());
        let algorithm = der::sequence(&[
            &der::element(der::OBJECT_IDENTIFIER, oid::EC_PUBLIC_KEY.as_bytes()),
            params,
        ]);
        der::sequence(&[
            &der::element(der::INTEGER, &[0]),
            &algorithm,
            &der::element(der::OCTET_STRING, &ec_private_key),
        ])
    }

    fn p256_point(d: &[u8]) -> Vec<u8> {
        use p256::elliptic_curve::sec1::ToEncodedPoint as _;
        p256::SecretKey::from_slice(d)
            .unwrap()
            .public_key()
            .to_encoded_point(false)
            .as_bytes()
            .to_vec()
    }

    #[test]
    fn an_ec_key_file_built_here_reads() {
        let d = [0x11; 32];
        let point = p256_point(&d);
        let file = ec_key_file(&Curve::P256.ec_params(), &d, Some(&point));
        assert_eq!(of_pkcs8(&file), ec(Curve::P256, &point));
    }

    #[test]
    fn an_ec_key_without_its_public_key_is_refused() {
        let file = ec_key_file(&Curve::P256.ec_params(), &[0x11; 32], None);
        let err = of_pkcs8(&file).unwrap_err();
        assert!(err.0.contains("without its public key"), "{err}");
    }

    #[test]
    fn an_ec_key_with_another_keys_point_is_refused() {
        let other = p256_point(&[0x22; 32]);
        let file = ec_key_file(&Curve::P256.ec_params(), &[0x11; 32], Some(&other));
        let err = of_pkcs8(&file).unwrap_err();
        assert!(err.0.contains("not the P256 point"), "{err}");
    }

    #[test]
    fn an_ec_key_of_the_wrong_size_for_its_curve_is_refused() {
        let d = [0x11; 32];
        let file = ec_key_file(&Curve::P384.ec_params(), &d, Some(&p256_point(&d)));
        let err = of_pkcs8(&file).unwrap_err();
        assert!(err.0.contains("not a P384 private key"), "{err}");
    }

    #[rstest]
    #[case::p521("06052b81040023", "P-521")]
    #[case::secp256k1("06052b8104000a", "secp256k1")]
    #[case::ed25519_as_a_curve("06032b6570", "id-Ed25519")]
    #[case::explicit_parameters("3000", "not a namedCurve OID")]
    fn an_ec_key_on_another_curve_is_refused(#[case] params: &str, #[case] message: &str) {
        let d = [0x11; 32];
        let file = ec_key_file(&hex::decode(params).unwrap(), &d, Some(&p256_point(&d)));
        let err = of_pkcs8(&file).unwrap_err();
        assert!(err.0.contains(message), "{err}");
    }

    #[test]
    fn an_aws_lc_p521_key_is_refused_by_its_curve() {
        let k = sig::EcdsaKeyPair::generate(&sig::ECDSA_P521_SHA512_ASN1_SIGNING).unwrap();
        let err = of_pkcs8(k.to_pkcs8v1().unwrap().as_ref()).unwrap_err();
        assert!(err.0.contains("P-521"), "{err}");
    }

    #[test]
    fn an_ed25519_key_with_another_keys_public_key_is_refused() {
        let (file, _) = aws_lc_key_file(KeyFile::Ed25519);
        let (_, other) = aws_lc_key_file(KeyFile::Ed25519);
        let mut mixed = file.clone();
        let at = mixed.len() - 32;
        mixed[at..].copy_from_slice(&other[other.len() - 32..]);
        let err = of_pkcs8(&mixed).unwrap_err();
        assert!(err.0.contains("publicKey field is not"), "{err}");
    }

    #[test]
    fn an_explicitly_tagged_public_key_field_reads_too() {
        let (file, spki) = aws_lc_key_file(KeyFile::Ed25519);
        // 30 51 ... 81 21 00 <key>  becomes  30 53 ... a1 23 03 21 00 <key>.
        let (head, public) = file.split_at(file.len() - 35);
        assert_eq!(public[..3], [0x81, 0x21, 0x00]);
        let mut explicit = [head, &[0xa1, 0x23, 0x03, 0x21], &public[2..]].concat();
        explicit[1] += 2;
        assert_eq!(of_pkcs8(&explicit), Ok(spki));
    }

    #[test]
    fn a_public_key_field_in_a_version_0_file_is_refused() {
        let (file, _) = aws_lc_key_file(KeyFile::Ed25519);
        let mut v0 = file.clone();
        v0[4] = 0;
        let err = of_pkcs8(&v0).unwrap_err();
        assert!(err.0.contains("version 0"), "{err}");
    }

    #[test]
    fn an_rsa_key_whose_modulus_is_not_its_primes_product_is_refused() {
        let (file, spki) = aws_lc_key_file(KeyFile::Rsa2048);
        let bits = spki::SubjectPublicKeyInfoRef::try_from(spki.as_slice())
            .unwrap()
            .subject_public_key
            .raw_bytes()
            .to_vec();
        let key =
            <rsa::RsaPublicKey as rsa::pkcs1::DecodeRsaPublicKey>::from_pkcs1_der(&bits).unwrap();
        let n = key.n().to_bytes_be();
        let at = file
            .windows(n.len())
            .position(|w| w == n.as_slice())
            .expect("the modulus is in the file");
        let mut tampered = file.clone();
        tampered[at + 100] ^= 0x01;
        let err = of_pkcs8(&tampered).unwrap_err();
        assert!(err.0.contains("do not belong"), "{err}");
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
