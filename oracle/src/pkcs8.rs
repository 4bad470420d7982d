//! The public half of a PKCS#8 private key file, read with the oracle's own DER reader,
//! for [`crate::public_key::of_pkcs8`].
//!
//! The forms read are those aws-lc-rs writes (and reads back) for the software
//! signer's keys:
//!
//! - `PrivateKeyInfo` (RFC 5208, version 0) and `OneAsymmetricKey` (RFC 5958,
//!   version 1, with an optional `publicKey [1] IMPLICIT BIT STRING`; the `[1]
//!   EXPLICIT` form some older writers use is read too). Attributes `[0]` are skipped.
//! - rsaEncryption (NULL or no parameters) over an `RSAPrivateKey` (RFC 8017): the
//!   modulus and public exponent, after checking with RustCrypto's `rsa` that the
//!   private parts belong to them (n = p·q, d inverts e).
//! - id-ecPublicKey with a namedCurve (P-256, P-384) over an `ECPrivateKey` (RFC 5915)
//!   that carries its public key (`[1]`): the point, after checking that it is d·G
//!   (RustCrypto's `p256`/`p384`). An ECPrivateKey without it is refused.
//! - id-Ed25519 (no parameters, RFC 8410) over a 32-byte `CurvePrivateKey`: the key
//!   derived from the seed (`ed25519-dalek`), which must equal the `publicKey` field
//!   when there is one.
//!
//! A key whose written public key is not its private key's is refused: naming it by
//! either half would be wrong for the other.

use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use spki::ObjectIdentifier;

use crate::der;
use crate::oid;
use crate::public_key::{Curve, PublicKeyError};

/// The public half of a private key, in the pieces [`crate::public_key`] builds from.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PublicPart<'a> {
    Rsa {
        modulus: &'a [u8],
        exponent: &'a [u8],
    },
    /// The uncompressed point, or Ed25519's 32 bytes.
    Ec { curve: Curve, key: Vec<u8> },
}

fn malformed(what: impl std::fmt::Display) -> PublicKeyError {
    PublicKeyError(format!("not a DER PKCS#8 private key: {what}"))
}

/// Takes the next element of `input`, which must have tag `tag`.
fn take<'a>(input: &mut &'a [u8], tag: u8, what: &str) -> Result<&'a [u8], PublicKeyError> {
    match der::first(input) {
        Some((t, contents, rest)) if t == tag => {
            *input = rest;
            Ok(contents)
        }
        Some((t, ..)) => Err(malformed(format_args!(
            "{what}: tag {t:#04x} where {tag:#04x} belongs"
        ))),
        None if input.is_empty() => Err(malformed(format_args!("{what} is missing"))),
        None => Err(malformed(format_args!("{what} is not DER (or cut short)"))),
    }
}

/// Takes the next element of `input` if it has tag `tag`.
fn take_optional<'a>(input: &mut &'a [u8], tag: u8) -> Option<&'a [u8]> {
    match der::first(input) {
        Some((t, contents, rest)) if t == tag => {
            *input = rest;
            Some(contents)
        }
        _ => None,
    }
}

/// Refuses what is left after the last field read from a structure.
fn end(rest: &[u8], what: &str) -> Result<(), PublicKeyError> {
    if rest.is_empty() {
        Ok(())
    } else {
        Err(malformed(format_args!(
            "{} unexpected bytes at the end of the {what}",
            rest.len()
        )))
    }
}

/// The contents of a BIT STRING without unused bits.
fn bit_string_bytes<'a>(contents: &'a [u8], what: &str) -> Result<&'a [u8], PublicKeyError> {
    der::whole_bytes(contents)
        .ok_or_else(|| malformed(format_args!("{what} is a BIT STRING with unused bits")))
}

/// The public half of the key in the DER PKCS#8 document `input`.
pub(crate) fn public_part(input: &[u8]) -> Result<PublicPart<'_>, PublicKeyError> {
    let (tag, mut body, after) = der::first(input).ok_or_else(|| {
        malformed(format_args!(
            "{} bytes that do not start with one whole DER element",
            input.len()
        ))
    })?;
    if tag != der::SEQUENCE {
        return Err(malformed(format_args!(
            "a DER element of tag {tag:#04x}, not a SEQUENCE"
        )));
    }
    if !after.is_empty() {
        return Err(malformed(format_args!(
            "{} bytes after the PrivateKeyInfo SEQUENCE",
            after.len()
        )));
    }
    let version = take(&mut body, der::INTEGER, "the version")?;
    let v2 = match version {
        [0] => false,
        [1] => true,
        _ => {
            return Err(malformed(format_args!(
                "version {} (0 for PrivateKeyInfo, 1 for OneAsymmetricKey)",
                hex::encode(version)
            )))
        }
    };
    let mut algorithm = take(&mut body, der::SEQUENCE, "the privateKeyAlgorithm")?;
    let oid_bytes = take(&mut algorithm, der::OBJECT_IDENTIFIER, "the algorithm OID")?;
    let algorithm_oid = ObjectIdentifier::from_bytes(oid_bytes)
        .map_err(|e| malformed(format_args!("the algorithm OID: {e}")))?;
    let parameters = algorithm;
    let one_element = matches!(der::first(parameters), Some((_, _, [])));
    if !parameters.is_empty() && !one_element {
        return Err(malformed(
            "the algorithm parameters are not one DER element",
        ));
    }
    let private_key = take(&mut body, der::OCTET_STRING, "the privateKey")?;
    let _attributes = take_optional(&mut body, der::CONTEXT_0_CONSTRUCTED);
    let public_key = if let Some(bits) = take_optional(&mut body, der::CONTEXT_1_PRIMITIVE) {
        Some(bit_string_bytes(bits, "the publicKey")?)
    } else if let Some(explicit) = take_optional(&mut body, der::CONTEXT_1_CONSTRUCTED) {
        let bits = der::only(explicit, der::BIT_STRING)
            .ok_or_else(|| malformed("the publicKey [1] does not hold one BIT STRING"))?;
        Some(bit_string_bytes(bits, "the publicKey")?)
    } else {
        None
    };
    end(body, "PrivateKeyInfo")?;
    if public_key.is_some() && !v2 {
        return Err(malformed(
            "a publicKey [1] in a version 0 PrivateKeyInfo (only OneAsymmetricKey, version 1, has one)",
        ));
    }
    let part = match algorithm_oid {
        oid::RSA_ENCRYPTION => rsa(parameters, private_key)?,
        oid::EC_PUBLIC_KEY => ec(parameters, private_key)?,
        oid::ED25519 => ed25519(parameters, private_key)?,
        other => {
            return Err(PublicKeyError(format!(
                "a PKCS#8 private key of algorithm {}; known are {}, {} and {}",
                oid::name(other),
                oid::name(oid::RSA_ENCRYPTION),
                oid::name(oid::EC_PUBLIC_KEY),
                oid::name(oid::ED25519),
            )))
        }
    };
    if let Some(written) = public_key {
        let own = match &part {
            PublicPart::Rsa { modulus, exponent } => der::sequence(&[
                &der::unsigned_integer(modulus),
                &der::unsigned_integer(exponent),
            ]),
            PublicPart::Ec { key, .. } => key.clone(),
        };
        if written != own.as_slice() {
            return Err(PublicKeyError(
                "the PKCS#8 publicKey field is not the public key of its private key".into(),
            ));
        }
    }
    Ok(part)
}

/// rsaEncryption: `RSAPrivateKey ::= SEQUENCE { version, modulus, publicExponent,
/// privateExponent, prime1, prime2, exponent1, exponent2, coefficient,
/// otherPrimeInfos OPTIONAL }`.
fn rsa<'a>(parameters: &[u8], private_key: &'a [u8]) -> Result<PublicPart<'a>, PublicKeyError> {
    if !(parameters.is_empty() || parameters == [der::NULL, 0]) {
        return Err(malformed("rsaEncryption with parameters other than NULL"));
    }
    let mut body = der::only(private_key, der::SEQUENCE)
        .ok_or_else(|| malformed("the privateKey does not hold one RSAPrivateKey SEQUENCE"))?;
    let names = [
        "version",
        "modulus",
        "publicExponent",
        "privateExponent",
        "prime1",
        "prime2",
        "exponent1",
        "exponent2",
        "coefficient",
    ];
    let mut values: Vec<&[u8]> = Vec::with_capacity(names.len());
    for name in names {
        let contents = take(
            &mut body,
            der::INTEGER,
            &format!("the RSAPrivateKey {name}"),
        )?;
        let value = der::non_negative(contents).ok_or_else(|| {
            malformed(format_args!(
                "the RSAPrivateKey {name} is negative or not minimally encoded"
            ))
        })?;
        values.push(value);
    }
    let multi_prime = match values[0] {
        [] => false,
        [1] => true,
        v => {
            return Err(malformed(format_args!(
                "RSAPrivateKey version {}",
                hex::encode(v)
            )))
        }
    };
    if multi_prime {
        take(
            &mut body,
            der::SEQUENCE,
            "the RSAPrivateKey otherPrimeInfos",
        )?;
        return Err(PublicKeyError(
            "a multi-prime RSA key (RSAPrivateKey version 1); only two-prime keys are read".into(),
        ));
    }
    end(body, "RSAPrivateKey")?;
    let big = rsa::BigUint::from_bytes_be;
    let (modulus, exponent) = (values[1], values[2]);
    rsa::RsaPrivateKey::from_components(
        big(modulus),
        big(exponent),
        big(values[3]),
        vec![big(values[4]), big(values[5])],
    )
    .map_err(|e| {
        PublicKeyError(format!(
            "the RSAPrivateKey's private parts do not belong to its modulus and exponent: {e}"
        ))
    })?;
    Ok(PublicPart::Rsa { modulus, exponent })
}

/// id-ecPublicKey: `ECPrivateKey ::= SEQUENCE { version 1, privateKey OCTET STRING,
/// parameters [0] OPTIONAL, publicKey [1] BIT STRING OPTIONAL }` (RFC 5915).
fn ec(parameters: &[u8], private_key: &[u8]) -> Result<PublicPart<'static>, PublicKeyError> {
    let curve = match Curve::from_ec_params(parameters) {
        Some(c @ (Curve::P256 | Curve::P384)) => c,
        _ => {
            let named = der::only(parameters, der::OBJECT_IDENTIFIER)
                .and_then(|b| ObjectIdentifier::from_bytes(b).ok());
            return Err(PublicKeyError(match named {
                Some(oid) => format!(
                    "an EC private key on curve {}; known are {} and {}",
                    oid::name(oid),
                    oid::name(oid::PRIME256V1),
                    oid::name(oid::SECP384R1),
                ),
                None => format!(
                    "an EC private key whose parameters ({}) are not a namedCurve OID",
                    hex::encode(parameters)
                ),
            }));
        }
    };
    let mut body = der::only(private_key, der::SEQUENCE)
        .ok_or_else(|| malformed("the privateKey does not hold one ECPrivateKey SEQUENCE"))?;
    let version = take(&mut body, der::INTEGER, "the ECPrivateKey version")?;
    if version != [1] {
        return Err(malformed(format_args!(
            "ECPrivateKey version {} (RFC 5915 has 1)",
            hex::encode(version)
        )));
    }
    let scalar = take(&mut body, der::OCTET_STRING, "the ECPrivateKey privateKey")?;
    if let Some(inner) = take_optional(&mut body, der::CONTEXT_0_CONSTRUCTED) {
        if inner != curve.ec_params().as_slice() {
            return Err(malformed(format_args!(
                "the ECPrivateKey parameters ({}) are not the algorithm's curve",
                hex::encode(inner)
            )));
        }
    }
    let written = match take_optional(&mut body, der::CONTEXT_1_CONSTRUCTED) {
        Some(explicit) => {
            let bits = der::only(explicit, der::BIT_STRING).ok_or_else(|| {
                malformed("the ECPrivateKey publicKey [1] does not hold one BIT STRING")
            })?;
            Some(bit_string_bytes(bits, "the ECPrivateKey publicKey")?)
        }
        None => None,
    };
    end(body, "ECPrivateKey")?;
    let written = written.ok_or_else(|| {
        PublicKeyError(
            "an EC private key without its public key (the ECPrivateKey has no publicKey [1])"
                .into(),
        )
    })?;
    let not_a_scalar = || {
        PublicKeyError(format!(
            "the ECPrivateKey privateKey ({} bytes) is not a {curve:?} private key",
            scalar.len()
        ))
    };
    let derived = match curve {
        Curve::P256 if scalar.len() == 32 => p256::SecretKey::from_slice(scalar)
            .map_err(|_| not_a_scalar())?
            .public_key()
            .to_encoded_point(false)
            .as_bytes()
            .to_vec(),
        Curve::P384 if scalar.len() == 48 => p384::SecretKey::from_slice(scalar)
            .map_err(|_| not_a_scalar())?
            .public_key()
            .to_encoded_point(false)
            .as_bytes()
            .to_vec(),
        _ => return Err(not_a_scalar()),
    };
    if written != derived.as_slice() {
        return Err(PublicKeyError(format!(
            "the ECPrivateKey publicKey is not the {curve:?} point of its privateKey"
        )));
    }
    Ok(PublicPart::Ec {
        curve,
        key: derived,
    })
}

/// id-Ed25519: `CurvePrivateKey ::= OCTET STRING` of 32 bytes (RFC 8410).
fn ed25519(parameters: &[u8], private_key: &[u8]) -> Result<PublicPart<'static>, PublicKeyError> {
    if !parameters.is_empty() {
        return Err(malformed("id-Ed25519 with parameters (RFC 8410 has none)"));
    }
    let seed: [u8; 32] = der::only(private_key, der::OCTET_STRING)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| {
            malformed("the privateKey does not hold one OCTET STRING of 32 bytes (the seed)")
        })?;
    let key = ed25519_dalek::SigningKey::from_bytes(&seed)
        .verifying_key()
        .to_bytes()
        .to_vec();
    Ok(PublicPart::Ec {
        curve: Curve::Ed25519,
        key,
    })
}
