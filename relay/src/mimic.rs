//! `[testing] mimic = "seed-003"`: the relay stands in for seed 003's relay as released
//! (cascade-hsm-bridge 0.1.0-alpha), a minimal real-world KMIP server, so that KMIP
//! clients can be tested against one. For conformance tests of clients only.
//!
//! Contract in this mode (what is not named here is as in normal mode):
//!
//! - Operations: Discover Versions, Query, Create Key Pair, Activate, Get and Sign, all
//!   advertised by Query; Modify Attribute (Name only) runs but is left out of Query, as
//!   the released relay does. Every other operation (Locate, Destroy, Revoke, Add
//!   Attribute, Get Attributes, RNG Retrieve, ...) is Operation Not Supported and left
//!   out of Query. `[testing] withhold_operations` removes operations on top of that.
//! - The released relay reads requests with kmip-protocol 0.5, whose parser knows a
//!   fixed set of attribute names ([`KNOWN_ATTRIBUTES`] and custom `x-` names) and fails
//!   the whole request on any other. So a request holding an Attribute with another name
//!   (in a template of Create Key Pair, or as Modify Attribute's Attribute) is answered
//!   with one failed batch item, General Failure, naming the attribute; no item of it
//!   runs. `Cryptographic Domain Parameters` and `Recommended Curve` are such names.
//! - Create Key Pair reads the Common template's Cryptographic Algorithm and
//!   Cryptographic Length, and Names (a Common one names both halves); the other known
//!   attributes (Cryptographic Usage Mask, Object Type, ...) are accepted and ignored, so
//!   private keys may always sign. RSA needs a Cryptographic Length (2048 to 4096, as in
//!   normal mode); ECDSA and EC always give P-256, whatever the length.
//! - Get ignores the requested Key Format Type: RSA keys as Transparent RSA Public Key,
//!   EC keys as Raw holding a DER SubjectPublicKeyInfo ([`crate::formats`]).
//! - Sign hashes the data here with SHA-256 and has the token sign the digest (RSA:
//!   PKCS#1 v1.5 over the DigestInfo, CKM_RSA_PKCS; EC: CKM_ECDSA, DER signature out).
//!   It needs Cryptographic Parameters holding a Cryptographic Algorithm that fits the
//!   key (RSA; ECDSA or EC). Refused with General Failure: no Cryptographic Algorithm,
//!   one that does not fit the key, a Hashing Algorithm other than SHA-256, a Padding
//!   Method other than PKCS#1 v1.5, a Digital Signature Algorithm other than SHA-256
//!   with RSA or ECDSA with SHA-256 (so PSS is refused either way). Which reason the
//!   released relay gives could not be told from what is known of it: General Failure
//!   is the reason it gives for requests it cannot handle.
//! - Unique Identifiers are `<HEX CKA_ID>_priv` / `<HEX CKA_ID>_pub`
//!   ([`Style::Seed003`]); only that spelling is accepted.
//! - Login: the configuration must say `[auth] credentials = "token"` (Username = the
//!   token label, Password = the user PIN), as the released relay logs in.

use crate::formats::Offer;
use crate::identifiers::Style;
use crate::kmip::{self, operation as op, tag};
use crate::message::{Fields, KmipError, Request};
use crate::operations::{attribute, enum_value, int_value, name_value};
use crate::token::{Curve, KeySpec, SigningKey};
use crate::ttlv::Item;

/// A released server the relay can stand in for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mimic {
    /// Seed 003's relay, cascade-hsm-bridge 0.1.0-alpha.
    Seed003,
}

/// The values `[testing] mimic` accepts.
pub const NAMES: [&str; 1] = ["seed-003"];

/// Attribute names kmip-protocol 0.5's request parser knows (besides custom `x-`
/// names); any other fails a request in mimic mode.
///
/// Chosen from what could be checked: kmip-protocol 0.5's request-side attribute
/// parser is not in the sources at hand (the stored history of NLnetLabs/kmip-protocol
/// holds an earlier, serialize-only request.rs and a later fast-scan parser whose set
/// includes Cryptographic Domain Parameters, which the released relay is seen to
/// refuse). So this is the harness's list of the KMIP 1.0 attributes that parser
/// handles; it agrees with what is seen of the released relay: Create Key Pair with
/// Cryptographic Algorithm, Length, Usage Mask, Object Type and Name works, and
/// Cryptographic Domain Parameters (hence also Recommended Curve) fails the request.
pub const KNOWN_ATTRIBUTES: [&str; 17] = [
    "Activation Date",
    "Application Specific Information",
    "Contact Information",
    "Cryptographic Algorithm",
    "Cryptographic Length",
    "Cryptographic Parameters",
    "Cryptographic Usage Mask",
    "Digest",
    "Initial Date",
    "Link",
    "Name",
    "Object Type",
    "Operation Policy Name",
    "Original Creation Date",
    "Process Start Date",
    "Protect Stop Date",
    "Unique Identifier",
];

/// Whether kmip-protocol 0.5's parser knows the attribute `name`.
pub fn is_known_attribute(name: &str) -> bool {
    KNOWN_ATTRIBUTES.contains(&name) || name.starts_with("x-")
}

const ADVERTISED: [u32; 6] = [
    op::DISCOVER_VERSIONS,
    op::QUERY,
    op::CREATE_KEY_PAIR,
    op::GET,
    op::ACTIVATE,
    op::SIGN,
];

impl Mimic {
    /// The server named `name` (one of [`NAMES`]).
    pub fn from_name(name: &str) -> Option<Mimic> {
        match name {
            "seed-003" => Some(Mimic::Seed003),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mimic::Seed003 => "seed-003",
        }
    }

    /// What the server is, for logs and Query's vendor identification.
    pub fn describe(self) -> &'static str {
        match self {
            Mimic::Seed003 => "seed-003 relay (cascade-hsm-bridge 0.1.0-alpha)",
        }
    }

    /// The operations Query lists.
    pub fn advertised(self) -> &'static [u32] {
        &ADVERTISED
    }

    /// Whether the server runs `operation` (all it advertises, and Modify Attribute).
    pub fn runs(self, operation: u32) -> bool {
        ADVERTISED.contains(&operation) || operation == op::MODIFY_ATTRIBUTE
    }

    pub fn style(self) -> Style {
        Style::Seed003
    }

    pub fn offer(self) -> Offer {
        Offer::Seed003
    }

    /// The first attribute name the server's parser would fail the request on, in the
    /// items of operations it runs; `None` when it would read the request.
    pub fn unknown_attribute(self, request: &Request) -> Option<String> {
        const TEMPLATES: [u32; 4] = [
            tag::COMMON_TEMPLATE_ATTRIBUTE,
            tag::PRIVATE_KEY_TEMPLATE_ATTRIBUTE,
            tag::PUBLIC_KEY_TEMPLATE_ATTRIBUTE,
            tag::TEMPLATE_ATTRIBUTE,
        ];
        let payloads = request
            .items
            .iter()
            .filter(|i| self.runs(i.operation))
            .filter_map(|i| i.payload.as_ref());
        for p in payloads {
            let templates = p.children().iter().filter(|c| TEMPLATES.contains(&c.tag));
            let attributes = p
                .all(tag::ATTRIBUTE)
                .chain(templates.flat_map(|t| t.all(tag::ATTRIBUTE)));
            for a in attributes {
                // A nameless or mistyped Attribute is left to the operation to refuse.
                if let Ok(Some(name)) = a.opt_text(tag::ATTRIBUTE_NAME, "Attribute Name") {
                    if !is_known_attribute(name) {
                        return Some(name.to_string());
                    }
                }
            }
        }
        None
    }
}

/// What Create Key Pair asks for, read as the released relay reads it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct KeyRequest {
    pub algorithm: Option<u32>,
    pub length: Option<i32>,
    pub private_name: Option<String>,
    pub public_name: Option<String>,
}

impl KeyRequest {
    /// Reads a Create Key Pair payload (see the module documentation).
    pub fn read(p: &Item) -> Result<KeyRequest, KmipError> {
        let mut req = KeyRequest::default();
        for (t, private, public) in [
            (tag::COMMON_TEMPLATE_ATTRIBUTE, true, true),
            (tag::PRIVATE_KEY_TEMPLATE_ATTRIBUTE, true, false),
            (tag::PUBLIC_KEY_TEMPLATE_ATTRIBUTE, false, true),
        ] {
            let Some(template) = p.child(t) else {
                continue;
            };
            let common = t == tag::COMMON_TEMPLATE_ATTRIBUTE;
            for a in template.all(tag::ATTRIBUTE) {
                let (name, _, value) = attribute(a)?;
                match name {
                    "Cryptographic Algorithm" if common => {
                        req.algorithm = Some(enum_value(value, name)?)
                    }
                    "Cryptographic Length" if common => req.length = Some(int_value(value, name)?),
                    "Name" => {
                        let n = name_value(value)?;
                        if private {
                            req.private_name = Some(n.clone());
                        }
                        if public {
                            req.public_name = Some(n);
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(req)
    }

    /// The key pair to create.
    pub fn spec(&self) -> Result<KeySpec, KmipError> {
        match self.algorithm {
            Some(kmip::algorithm::RSA) => {
                let bits = self.length.ok_or_else(|| {
                    KmipError::missing("RSA needs a Cryptographic Length in the Common template")
                })?;
                if !(2048..=4096).contains(&bits) || bits % 8 != 0 {
                    return Err(KmipError::invalid_field(format!(
                        "RSA length {bits} is not supported: 2048 to 4096 bits"
                    )));
                }
                Ok(KeySpec::Rsa(bits as u32))
            }
            // The released relay makes every EC key on P-256.
            Some(kmip::algorithm::ECDSA | kmip::algorithm::EC) => Ok(KeySpec::Ec(Curve::P256)),
            Some(a) => Err(KmipError::invalid_field(format!(
                "cryptographic algorithm {a:#x} is not supported: RSA or EC/ECDSA"
            ))),
            None => Err(KmipError::missing(
                "Cryptographic Algorithm is required in the Common template",
            )),
        }
    }
}

/// How Sign signs in this mode: SHA-256 of the data, hashed here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signature {
    /// PKCS#1 v1.5 over the SHA-256 DigestInfo (CKM_RSA_PKCS).
    RsaPkcs1Sha256,
    /// ECDSA over the SHA-256 digest (CKM_ECDSA).
    EcdsaSha256,
}

/// The signature for Sign's Cryptographic Parameters and the key; every refusal is
/// General Failure (see the module documentation).
pub fn signature(params: Option<&Item>, key: SigningKey) -> Result<Signature, KmipError> {
    use kmip::signature_algorithm as dsa;
    let refuse = |why: String| Err(KmipError::general(why));
    let Some(p) = params else {
        return refuse("Sign needs Cryptographic Parameters with a Cryptographic Algorithm".into());
    };
    let algorithm = p.opt_enum(tag::CRYPTOGRAPHIC_ALGORITHM, "Cryptographic Algorithm")?;
    let hashing = p.opt_enum(tag::HASHING_ALGORITHM, "Hashing Algorithm")?;
    let padding = p.opt_enum(tag::PADDING_METHOD, "Padding Method")?;
    let dsa_v = p.opt_enum(
        tag::DIGITAL_SIGNATURE_ALGORITHM,
        "Digital Signature Algorithm",
    )?;
    let s = match (algorithm, key) {
        (None, _) => {
            return refuse(
                "Sign needs a Cryptographic Algorithm in Cryptographic Parameters".into(),
            )
        }
        (Some(kmip::algorithm::RSA), SigningKey::Rsa { .. }) => Signature::RsaPkcs1Sha256,
        (Some(kmip::algorithm::ECDSA | kmip::algorithm::EC), SigningKey::Ec(_)) => {
            Signature::EcdsaSha256
        }
        (Some(a), k) => {
            return refuse(format!(
                "cryptographic algorithm {a:#x} does not fit the key ({k:?})"
            ))
        }
    };
    if let Some(h) = hashing.filter(|h| *h != kmip::hashing::SHA_256) {
        return refuse(format!("hashing algorithm {h:#x}: only SHA-256 is used"));
    }
    if let Some(m) = padding.filter(|m| *m != kmip::padding::PKCS1_V1_5) {
        return refuse(format!("padding method {m:#x}: only PKCS#1 v1.5 is used"));
    }
    let fitting = match s {
        Signature::RsaPkcs1Sha256 => dsa::SHA256_WITH_RSA,
        Signature::EcdsaSha256 => dsa::ECDSA_SHA256,
    };
    if let Some(d) = dsa_v.filter(|d| *d != fitting) {
        return refuse(format!(
            "digital signature algorithm {d:#x}: only SHA-256 with RSA (PKCS#1 v1.5) or ECDSA with SHA-256"
        ));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kmip::ResultReason;
    use rstest::rstest;

    fn params(fields: &[(u32, u32)]) -> Item {
        Item::structure(
            tag::CRYPTOGRAPHIC_PARAMETERS,
            fields
                .iter()
                .map(|(t, v)| Item::enumeration(*t, *v))
                .collect(),
        )
    }

    const RSA: SigningKey = SigningKey::Rsa { bits: 2048 };
    const EC: SigningKey = SigningKey::Ec(Curve::P256);

    #[rstest]
    #[case::rsa(RSA, &[(tag::CRYPTOGRAPHIC_ALGORITHM, 4)], Signature::RsaPkcs1Sha256)]
    #[case::rsa_pkcs1_sha256(RSA, &[(tag::CRYPTOGRAPHIC_ALGORITHM, 4), (tag::PADDING_METHOD, 8), (tag::HASHING_ALGORITHM, 6)], Signature::RsaPkcs1Sha256)]
    #[case::ecdsa(EC, &[(tag::CRYPTOGRAPHIC_ALGORITHM, 6)], Signature::EcdsaSha256)]
    #[case::ec(EC, &[(tag::CRYPTOGRAPHIC_ALGORITHM, 0x1A), (tag::DIGITAL_SIGNATURE_ALGORITHM, 0x0E)], Signature::EcdsaSha256)]
    fn signs_sha256_with_the_named_algorithm(
        #[case] key: SigningKey,
        #[case] fields: &[(u32, u32)],
        #[case] want: Signature,
    ) {
        assert_eq!(signature(Some(&params(fields)), key), Ok(want));
    }

    #[rstest]
    #[case::no_algorithm(RSA, &[(tag::PADDING_METHOD, 8), (tag::HASHING_ALGORITHM, 6)])]
    #[case::only_signature_algorithm(EC, &[(tag::DIGITAL_SIGNATURE_ALGORITHM, 0x0E)])]
    #[case::pss_padding(RSA, &[(tag::CRYPTOGRAPHIC_ALGORITHM, 4), (tag::PADDING_METHOD, 0x0A)])]
    #[case::pss_algorithm(RSA, &[(tag::CRYPTOGRAPHIC_ALGORITHM, 4), (tag::DIGITAL_SIGNATURE_ALGORITHM, 8)])]
    #[case::sha384(EC, &[(tag::CRYPTOGRAPHIC_ALGORITHM, 6), (tag::HASHING_ALGORITHM, 7)])]
    #[case::rsa_on_ec_key(EC, &[(tag::CRYPTOGRAPHIC_ALGORITHM, 4)])]
    #[case::ecdsa_on_rsa_key(RSA, &[(tag::CRYPTOGRAPHIC_ALGORITHM, 6)])]
    fn refuses_with_general_failure(#[case] key: SigningKey, #[case] fields: &[(u32, u32)]) {
        let e = signature(Some(&params(fields)), key).unwrap_err();
        assert_eq!(e.reason, ResultReason::GeneralFailure, "{e}");
        let e = signature(None, key).unwrap_err();
        assert_eq!(e.reason, ResultReason::GeneralFailure, "{e}");
    }

    #[rstest]
    #[case("Cryptographic Usage Mask", true)]
    #[case("Object Type", true)]
    #[case("x-Purpose", true)]
    #[case("Cryptographic Domain Parameters", false)]
    #[case("Recommended Curve", false)]
    #[case("State", false)]
    #[case("y-Purpose", false)]
    fn known_attributes(#[case] name: &str, #[case] known: bool) {
        assert_eq!(is_known_attribute(name), known);
    }

    #[test]
    fn ec_keys_are_p256_whatever_the_length() {
        let req = KeyRequest {
            algorithm: Some(kmip::algorithm::ECDSA),
            length: Some(384),
            ..Default::default()
        };
        assert_eq!(req.spec(), Ok(KeySpec::Ec(Curve::P256)));
    }

    #[test]
    fn only_the_common_template_names_the_algorithm() {
        let attr = |name: &str, value: Item| {
            Item::structure(
                tag::ATTRIBUTE,
                vec![Item::text(tag::ATTRIBUTE_NAME, name), value],
            )
        };
        let p = Item::structure(
            tag::REQUEST_PAYLOAD,
            vec![Item::structure(
                tag::PRIVATE_KEY_TEMPLATE_ATTRIBUTE,
                vec![attr(
                    "Cryptographic Algorithm",
                    Item::enumeration(tag::ATTRIBUTE_VALUE, kmip::algorithm::RSA),
                )],
            )],
        );
        let req = KeyRequest::read(&p).unwrap();
        assert_eq!(req.algorithm, None);
        assert_eq!(req.spec().unwrap_err().reason, ResultReason::MissingData);
    }
}
