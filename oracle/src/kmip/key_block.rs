//! Reading the public key in a Get answer into a DER SubjectPublicKeyInfo.
//!
//! Servers answer a Get without a Key Format Type in the form they keep the key in.
//! Read here, as servers send them: X.509 (an SPKI); PKCS#1 (RSAPublicKey); Raw holding
//! a DER SPKI (the relays) or a bare EC point; Transparent RSA Public Key; Transparent
//! ECDSA Public Key (0x0F, KMIP 1.x) and Transparent EC Public Key (0x15, Cosmian KMS),
//! which carry the same fields. A bare point's curve is its Recommended Curve, else
//! told by its length (65 bytes P-256, 97 bytes P-384).
//!
//! Refused, with a message: no Public Key, Key Block, Key Format Type or Key Value;
//! another format; a recommended curve other than P-256 and P-384; material that does
//! not make a valid SPKI.

use super::message::tag;
use super::ttlv::Item;
use crate::keyid::KeyId;
use crate::public_key::{self, Curve};

/// Key Format Type values read here.
mod format {
    pub const RAW: u32 = 0x01;
    pub const PKCS1: u32 = 0x03;
    pub const X509: u32 = 0x05;
    pub const TRANSPARENT_RSA_PUBLIC_KEY: u32 = 0x0B;
    pub const TRANSPARENT_ECDSA_PUBLIC_KEY: u32 = 0x0F;
    pub const TRANSPARENT_EC_PUBLIC_KEY: u32 = 0x15;
}

/// Recommended Curve values read here.
mod curve {
    pub const P256: u32 = 0x07;
    pub const P384: u32 = 0x0A;
}

/// The public key in a Get Response Payload, as a DER SubjectPublicKeyInfo.
pub fn public_key_spki(payload: &Item) -> Result<Vec<u8>, String> {
    let block = payload
        .child(tag::PUBLIC_KEY)
        .ok_or("the answer holds no Public Key object")?
        .child(tag::KEY_BLOCK)
        .ok_or("the Public Key has no Key Block")?;
    let format = block
        .child(tag::KEY_FORMAT_TYPE)
        .and_then(Item::as_enum)
        .ok_or("the Key Block has no Key Format Type")?;
    let value = block
        .child(tag::KEY_VALUE)
        .ok_or("the Key Block has no Key Value")?;
    // The Key Value is a structure holding Key Material (and perhaps attributes); a
    // server may also put the material there directly.
    let material = value.child(tag::KEY_MATERIAL).unwrap_or(value);
    let bytes = |what: &str| {
        material
            .as_bytes()
            .ok_or_else(|| format!("{what} key material is not a byte string"))
    };
    let spki = match format {
        format::X509 => bytes("X.509")?.to_vec(),
        format::PKCS1 => public_key::rsa_from_pkcs1(bytes("PKCS#1")?).map_err(|e| e.0)?,
        format::RAW => {
            let raw = bytes("Raw")?;
            if KeyId::of_spki(raw).is_ok() {
                raw.to_vec()
            } else {
                ec_point(material, raw)?
            }
        }
        format::TRANSPARENT_RSA_PUBLIC_KEY => {
            let part = |t: u32, name: &str| {
                material
                    .child(t)
                    .and_then(Item::as_bytes)
                    .ok_or_else(|| format!("a transparent RSA key without {name}"))
            };
            public_key::rsa(
                part(tag::MODULUS, "Modulus")?,
                part(tag::PUBLIC_EXPONENT, "Public Exponent")?,
            )
            .map_err(|e| e.0)?
        }
        format::TRANSPARENT_ECDSA_PUBLIC_KEY | format::TRANSPARENT_EC_PUBLIC_KEY => {
            let point = material
                .child(tag::Q_STRING)
                .and_then(Item::as_bytes)
                .ok_or("a transparent EC key without Q String")?;
            ec_point(material, point)?
        }
        other => return Err(format!("key format type {other:#x} is not read")),
    };
    KeyId::of_spki(&spki).map_err(|e| format!("the public key: {e}"))?;
    Ok(spki)
}

/// The SPKI of a bare EC point; the curve from the material's Recommended Curve, else
/// from the point's length.
fn ec_point(material: &Item, point: &[u8]) -> Result<Vec<u8>, String> {
    let named = match material
        .child(tag::RECOMMENDED_CURVE)
        .and_then(Item::as_enum)
    {
        Some(curve::P256) => Some(Curve::P256),
        Some(curve::P384) => Some(Curve::P384),
        Some(other) => return Err(format!("recommended curve {other:#x} is not read")),
        None => None,
    };
    let curve = named
        .or(match point.len() {
            65 => Some(Curve::P256),
            97 => Some(Curve::P384),
            _ => None,
        })
        .ok_or_else(|| {
            format!(
                "an EC point of {} bytes without a curve, not the size of a P-256 or P-384 point",
                point.len()
            )
        })?;
    public_key::ec(curve, point).map_err(|e| e.0)
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;
    use crate::der;
    use crate::kmip::ttlv::Value;

    const P256_POINT_X: u8 = 0x11;

    fn p256_point() -> Vec<u8> {
        // Not on the curve: the SPKI is built, not verified, here.
        [&[0x04][..], &[P256_POINT_X; 64]].concat()
    }

    fn payload(format: u32, material: Item) -> Item {
        Item::structure(
            0x42007C,
            vec![Item::structure(
                tag::PUBLIC_KEY,
                vec![Item::structure(
                    tag::KEY_BLOCK,
                    vec![
                        Item::new(tag::KEY_FORMAT_TYPE, Value::Enumeration(format)),
                        Item::structure(tag::KEY_VALUE, vec![material]),
                    ],
                )],
            )],
        )
    }

    fn bytes_material(b: Vec<u8>) -> Item {
        Item::new(tag::KEY_MATERIAL, Value::ByteString(b))
    }

    fn transparent_ec(curve: Option<u32>, point: Vec<u8>) -> Item {
        let mut fields = Vec::new();
        if let Some(c) = curve {
            fields.push(Item::new(tag::RECOMMENDED_CURVE, Value::Enumeration(c)));
        }
        fields.push(Item::new(tag::Q_STRING, Value::ByteString(point)));
        Item::structure(tag::KEY_MATERIAL, fields)
    }

    fn rsa_spki() -> Vec<u8> {
        public_key::rsa(&[0xc5; 256], &[1, 0, 1]).unwrap()
    }

    fn pkcs1() -> Vec<u8> {
        der::sequence(&[
            &der::unsigned_integer(&[0xc5; 256]),
            &der::unsigned_integer(&[1, 0, 1]),
        ])
    }

    #[rstest]
    #[case::x509(format::X509, bytes_material(rsa_spki()))]
    #[case::pkcs1(format::PKCS1, bytes_material(pkcs1()))]
    #[case::raw_spki(format::RAW, bytes_material(rsa_spki()))]
    #[case::transparent_rsa_big_integers(
        format::TRANSPARENT_RSA_PUBLIC_KEY,
        Item::structure(tag::KEY_MATERIAL, vec![
            Item::new(tag::MODULUS, Value::BigInteger([&[0u8; 8][..], &[0xc5; 256]].concat())),
            Item::new(tag::PUBLIC_EXPONENT, Value::BigInteger(vec![0, 0, 0, 0, 0, 1, 0, 1])),
        ])
    )]
    #[case::transparent_rsa_byte_strings(
        format::TRANSPARENT_RSA_PUBLIC_KEY,
        Item::structure(tag::KEY_MATERIAL, vec![
            Item::new(tag::MODULUS, Value::ByteString(vec![0xc5; 256])),
            Item::new(tag::PUBLIC_EXPONENT, Value::ByteString(vec![1, 0, 1])),
        ])
    )]
    fn every_rsa_form_gives_the_same_spki(#[case] format: u32, #[case] material: Item) {
        assert_eq!(public_key_spki(&payload(format, material)), Ok(rsa_spki()));
    }

    #[rstest]
    #[case::raw_point(format::RAW, bytes_material(p256_point()))]
    #[case::ecdsa_named(
        format::TRANSPARENT_ECDSA_PUBLIC_KEY,
        transparent_ec(Some(curve::P256), p256_point())
    )]
    #[case::ec_named(
        format::TRANSPARENT_EC_PUBLIC_KEY,
        transparent_ec(Some(curve::P256), p256_point())
    )]
    #[case::ec_by_length(format::TRANSPARENT_EC_PUBLIC_KEY, transparent_ec(None, p256_point()))]
    #[case::ec_wrapped_point(
        format::TRANSPARENT_EC_PUBLIC_KEY,
        transparent_ec(Some(curve::P256), der::element(der::OCTET_STRING, &p256_point()))
    )]
    fn every_ec_form_gives_the_same_spki(#[case] format: u32, #[case] material: Item) {
        let expected = public_key::ec(Curve::P256, &p256_point()).unwrap();
        assert_eq!(public_key_spki(&payload(format, material)), Ok(expected));
    }

    #[rstest]
    #[case::opaque(payload(0x02, bytes_material(rsa_spki())), "format type 0x2")]
    #[case::x509_garbage(payload(format::X509, bytes_material(vec![0x30, 0])), "SubjectPublicKeyInfo")]
    #[case::pkcs1_garbage(payload(format::PKCS1, bytes_material(vec![0x30, 0])), "RSAPublicKey")]
    #[case::raw_of_no_size(payload(format::RAW, bytes_material(vec![4; 40])), "40 bytes")]
    #[case::p521(
        payload(
            format::TRANSPARENT_EC_PUBLIC_KEY,
            transparent_ec(Some(0x0E), p256_point())
        ),
        "curve 0xe"
    )]
    #[case::p384_named_p256_point(
        payload(
            format::TRANSPARENT_EC_PUBLIC_KEY,
            transparent_ec(Some(curve::P384), p256_point())
        ),
        "P-384"
    )]
    #[case::no_q_string(
        payload(format::TRANSPARENT_EC_PUBLIC_KEY, Item::structure(tag::KEY_MATERIAL, vec![])),
        "Q String"
    )]
    #[case::no_modulus(
        payload(format::TRANSPARENT_RSA_PUBLIC_KEY, Item::structure(tag::KEY_MATERIAL, vec![])),
        "Modulus"
    )]
    #[case::structure_as_x509(
        payload(format::X509, Item::structure(tag::KEY_MATERIAL, vec![])),
        "not a byte string"
    )]
    #[case::no_public_key(Item::structure(0x42007C, vec![]), "no Public Key")]
    fn what_is_not_a_public_key_is_refused(#[case] payload: Item, #[case] says: &str) {
        let err = public_key_spki(&payload).unwrap_err();
        assert!(err.contains(says), "{err}");
    }
}
