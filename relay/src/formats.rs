//! Public key formats for Get: which Key Format Type a request gets, and its Key Material.
//!
//! Contract of [`public_key`] with [`Offer::Relay`] (the relay's own behaviour):
//!
//! - No Key Format Type named: RSA keys as PKCS#1 (an RSAPublicKey); EC keys as Raw
//!   holding a DER SubjectPublicKeyInfo. The EC default is what Cascade's client (on
//!   kmip-protocol 0.5) reads: it sends Get without a format, takes key material as
//!   bytes only for Raw, Opaque, PKCS#1, PKCS#8 and EC Private Key, and reads EC public
//!   keys only as Raw + SPKI.
//! - A named format gets exactly that format, or Key Format Type Not Supported naming
//!   the requested format and the formats offered for that kind of key:
//!   - RSA: PKCS#1, X.509 (DER SPKI), Transparent RSA Public Key (Modulus, Public
//!     Exponent). Raw is refused: KMIP gives Raw no defined content for RSA public keys,
//!     and PKCS#1 bytes labelled Raw would be read as whatever each client thinks Raw is.
//!   - EC: Raw (DER SPKI, as the default), X.509 (DER SPKI), Transparent ECDSA Public
//!     Key (0x0F, KMIP 1.x) and Transparent EC Public Key (0x15, KMIP 1.3 and 2.x), the
//!     last two with the same fields: Recommended Curve and Q String (the uncompressed
//!     point).
//!
//! With [`Offer::Seed003`] the requested format is ignored, as the released seed-003
//! relay does: RSA keys as Transparent RSA Public Key, EC keys as Raw + DER SPKI.
//!
//! Key material the token gave in a shape the relay cannot read (an empty RSA modulus
//! or exponent, an EC point that is not an uncompressed point of the key's curve) is
//! General Failure, whatever the format.

use crate::der;
use crate::kmip::{self, key_format as kf, tag, ResultReason};
use crate::message::KmipError;
use crate::token::{Curve, KeyMaterial};
use crate::ttlv::Item;

/// Which formats Get offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offer {
    /// The relay's own (see the module documentation).
    Relay,
    /// The released seed-003 relay's: one fixed format per key type.
    Seed003,
}

/// A public key as Get answers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    /// The Key Format Type answered.
    pub format: u32,
    /// The Key Material item (a Byte String or a structure).
    pub material: Item,
    /// The Cryptographic Algorithm of the Key Block.
    pub algorithm: u32,
}

/// RSA public key formats offered, the default first.
pub const RSA_OFFERED: [u32; 3] = [kf::PKCS1, kf::X509, kf::TRANSPARENT_RSA_PUBLIC];
/// EC public key formats offered, the default first.
pub const EC_OFFERED: [u32; 4] = [
    kf::RAW,
    kf::X509,
    kf::TRANSPARENT_ECDSA_PUBLIC,
    kf::TRANSPARENT_EC_PUBLIC,
];

fn not_offered(requested: u32, kind: &str, offered: &[u32]) -> KmipError {
    let names: Vec<String> = offered.iter().map(|f| kf::name(*f)).collect();
    KmipError::new(
        ResultReason::KeyFormatTypeNotSupported,
        format!(
            "{} is not offered for {kind} public keys; offered: {}",
            kf::name(requested),
            names.join(", ")
        ),
    )
}

/// Encodes `key` in the format `requested` (or the default). See the module
/// documentation for what is offered and refused.
pub fn public_key(
    key: &KeyMaterial,
    requested: Option<u32>,
    offer: Offer,
) -> Result<Encoded, KmipError> {
    match key {
        KeyMaterial::Rsa { modulus, exponent } => {
            if modulus.is_empty() || exponent.is_empty() {
                return Err(KmipError::general(
                    "the token did not give the RSA public key",
                ));
            }
            let format = match offer {
                Offer::Seed003 => kf::TRANSPARENT_RSA_PUBLIC,
                Offer::Relay => requested.unwrap_or(kf::PKCS1),
            };
            let material = match format {
                kf::PKCS1 => Item::bytes(tag::KEY_MATERIAL, der::rsa_public_key(modulus, exponent)),
                kf::X509 => Item::bytes(tag::KEY_MATERIAL, der::rsa_spki(modulus, exponent)),
                kf::TRANSPARENT_RSA_PUBLIC => Item::structure(
                    tag::KEY_MATERIAL,
                    vec![
                        Item::big_unsigned(tag::MODULUS, modulus),
                        Item::big_unsigned(tag::PUBLIC_EXPONENT, exponent),
                    ],
                ),
                other => return Err(not_offered(other, "RSA", &RSA_OFFERED)),
            };
            Ok(Encoded {
                format,
                material,
                algorithm: kmip::algorithm::RSA,
            })
        }
        KeyMaterial::Ec { curve, point } => {
            let point = der::ec_point(point, curve.field_len()).ok_or_else(|| {
                KmipError::general("the token's CKA_EC_POINT is not an uncompressed point")
            })?;
            let format = match offer {
                Offer::Seed003 => kf::RAW,
                Offer::Relay => requested.unwrap_or(kf::RAW),
            };
            let material = match format {
                kf::RAW | kf::X509 => {
                    Item::bytes(tag::KEY_MATERIAL, der::ec_spki(curve.oid(), point))
                }
                kf::TRANSPARENT_ECDSA_PUBLIC | kf::TRANSPARENT_EC_PUBLIC => Item::structure(
                    tag::KEY_MATERIAL,
                    vec![
                        Item::enumeration(tag::RECOMMENDED_CURVE, recommended_curve(*curve)),
                        Item::bytes(tag::Q_STRING, point.to_vec()),
                    ],
                ),
                other => return Err(not_offered(other, "EC", &EC_OFFERED)),
            };
            Ok(Encoded {
                format,
                material,
                algorithm: kmip::algorithm::ECDSA,
            })
        }
    }
}

fn recommended_curve(curve: Curve) -> u32 {
    match curve {
        Curve::P256 => kmip::curve::P_256,
        Curve::P384 => kmip::curve::P_384,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ttlv::Value;
    use rstest::rstest;

    fn ec() -> KeyMaterial {
        let mut point = vec![4u8];
        point.extend([7u8; 64]);
        KeyMaterial::Ec {
            curve: Curve::P256,
            point,
        }
    }

    fn rsa() -> KeyMaterial {
        KeyMaterial::Rsa {
            modulus: vec![0xc5; 256],
            exponent: vec![1, 0, 1],
        }
    }

    #[rstest]
    #[case::ec_default(ec(), None, kf::RAW)]
    #[case::ec_raw(ec(), Some(kf::RAW), kf::RAW)]
    #[case::ec_x509(ec(), Some(kf::X509), kf::X509)]
    #[case::ec_transparent_ecdsa(ec(), Some(0x0F), 0x0F)]
    #[case::ec_transparent_ec(ec(), Some(0x15), 0x15)]
    #[case::rsa_default(rsa(), None, kf::PKCS1)]
    #[case::rsa_x509(rsa(), Some(kf::X509), kf::X509)]
    #[case::rsa_transparent(rsa(), Some(0x0B), 0x0B)]
    fn a_named_format_gets_exactly_that_format(
        #[case] key: KeyMaterial,
        #[case] requested: Option<u32>,
        #[case] answered: u32,
    ) {
        assert_eq!(
            public_key(&key, requested, Offer::Relay).unwrap().format,
            answered
        );
    }

    #[test]
    fn ec_raw_and_x509_hold_the_same_spki() {
        let raw = public_key(&ec(), None, Offer::Relay).unwrap();
        let x509 = public_key(&ec(), Some(kf::X509), Offer::Relay).unwrap();
        assert_eq!(raw.material, x509.material);
        assert!(matches!(&raw.material.value, Value::ByteString(b) if b[0] == 0x30));
    }

    #[rstest]
    #[case::ec_pkcs8(ec(), kf::PKCS8, "PKCS#8 (0x04)")]
    #[case::ec_opaque(ec(), kf::OPAQUE, "Opaque (0x02)")]
    #[case::ec_pkcs1(ec(), kf::PKCS1, "PKCS#1 (0x03)")]
    #[case::rsa_raw(rsa(), kf::RAW, "Raw (0x01)")]
    #[case::rsa_transparent_ec(rsa(), 0x15, "Transparent EC Public Key (0x15)")]
    #[case::unknown(rsa(), 0x8000_0001, "key format type 0x80000001")]
    fn other_formats_are_refused_naming_what_is_offered(
        #[case] key: KeyMaterial,
        #[case] requested: u32,
        #[case] named: &str,
    ) {
        let e = public_key(&key, Some(requested), Offer::Relay).unwrap_err();
        assert_eq!(e.reason, ResultReason::KeyFormatTypeNotSupported);
        assert!(e.message.starts_with(named), "{}", e.message);
        assert!(e.message.contains("offered: "), "{}", e.message);
        assert!(e.message.contains("X.509 (0x05)"), "{}", e.message);
    }

    #[rstest]
    #[case::nothing(None)]
    #[case::x509(Some(kf::X509))]
    #[case::pkcs8(Some(kf::PKCS8))]
    fn seed003_ignores_the_requested_format(#[case] requested: Option<u32>) {
        assert_eq!(
            public_key(&ec(), requested, Offer::Seed003).unwrap().format,
            kf::RAW
        );
        assert_eq!(
            public_key(&rsa(), requested, Offer::Seed003)
                .unwrap()
                .format,
            kf::TRANSPARENT_RSA_PUBLIC
        );
    }

    #[test]
    fn unreadable_token_material_is_general_failure() {
        let bad = KeyMaterial::Ec {
            curve: Curve::P256,
            point: vec![4, 1, 2],
        };
        let e = public_key(&bad, None, Offer::Relay).unwrap_err();
        assert_eq!(e.reason, ResultReason::GeneralFailure);
        let empty = KeyMaterial::Rsa {
            modulus: vec![],
            exponent: vec![1, 0, 1],
        };
        let e = public_key(&empty, Some(kf::PKCS8), Offer::Relay).unwrap_err();
        assert_eq!(e.reason, ResultReason::GeneralFailure);
    }
}
