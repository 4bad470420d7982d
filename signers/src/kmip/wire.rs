//! KMIP 1.2 messages: requests built from kmip-protocol's types (plus the few it lacks:
//! EC algorithms, curves, Maximum Items), responses read with our TTLV reader.

use kmip_protocol::auth::{CredentialType, UsernameAndPasswordCredential};
use kmip_protocol::types::common::{
    Data, DigitalSignatureAlgorithm, HashingAlgorithm, Operation, PaddingMethod, UniqueBatchItemID,
    UniqueIdentifier,
};
use kmip_protocol::types::request::{
    self as req, Authentication, BatchCount, MaximumResponseSize, ProtocolVersion,
    ProtocolVersionMajor, ProtocolVersionMinor, RequestHeader,
};
use serde::Serialize;

use super::ttlv::{self, Item};

/// Largest response accepted (and announced to the server as Maximum Response Size).
pub const MAX_RESPONSE: usize = 1 << 20;

pub mod tag {
    pub const ATTRIBUTE: u32 = 0x420008;
    pub const ATTRIBUTE_NAME: u32 = 0x42000A;
    pub const ATTRIBUTE_VALUE: u32 = 0x42000B;
    pub const BATCH_ITEM: u32 = 0x42000F;
    pub const DATA: u32 = 0x4200C2;
    pub const KEY_BLOCK: u32 = 0x420040;
    pub const KEY_FORMAT_TYPE: u32 = 0x420042;
    pub const KEY_MATERIAL: u32 = 0x420043;
    pub const KEY_VALUE: u32 = 0x420045;
    pub const MODULUS: u32 = 0x420052;
    pub const NAME_VALUE: u32 = 0x420055;
    pub const OPERATION: u32 = 0x42005C;
    pub const PRIVATE_KEY_UNIQUE_IDENTIFIER: u32 = 0x420066;
    pub const PROTOCOL_VERSION: u32 = 0x420069;
    pub const PROTOCOL_VERSION_MAJOR: u32 = 0x42006A;
    pub const PROTOCOL_VERSION_MINOR: u32 = 0x42006B;
    pub const PUBLIC_EXPONENT: u32 = 0x42006C;
    pub const PUBLIC_KEY: u32 = 0x42006D;
    pub const PUBLIC_KEY_UNIQUE_IDENTIFIER: u32 = 0x42006F;
    pub const Q_STRING: u32 = 0x420072;
    pub const RECOMMENDED_CURVE: u32 = 0x420075;
    pub const RESPONSE_MESSAGE: u32 = 0x42007B;
    pub const RESPONSE_PAYLOAD: u32 = 0x42007C;
    pub const RESULT_MESSAGE: u32 = 0x42007D;
    pub const RESULT_REASON: u32 = 0x42007E;
    pub const RESULT_STATUS: u32 = 0x42007F;
    pub const SIGNATURE_DATA: u32 = 0x4200C3;
    pub const UNIQUE_IDENTIFIER: u32 = 0x420094;
    pub const VENDOR_IDENTIFICATION: u32 = 0x42009D;
}

/// Result Reason values (KMIP 1.2 section 9.1.3.2.29) we act on.
pub mod reason {
    pub const ITEM_NOT_FOUND: u32 = 0x01;
    /// KMIP 2.x's Object Not Found, which Cosmian KMS answers even to KMIP 1.2
    /// requests: read as Item Not Found.
    pub const OBJECT_NOT_FOUND: u32 = 0x37;
    pub const AUTHENTICATION_NOT_SUCCESSFUL: u32 = 0x03;
    pub const INVALID_MESSAGE: u32 = 0x04;
    pub const OPERATION_NOT_SUPPORTED: u32 = 0x05;
    pub const PERMISSION_DENIED: u32 = 0x0C;
}

/// The name of a Result Reason, as the specification writes it.
pub fn reason_name(code: u32) -> String {
    let name = match code {
        0x01 => "Item Not Found",
        0x02 => "Response Too Large",
        0x03 => "Authentication Not Successful",
        0x04 => "Invalid Message",
        0x05 => "Operation Not Supported",
        0x06 => "Missing Data",
        0x07 => "Invalid Field",
        0x08 => "Feature Not Supported",
        0x09 => "Operation Canceled By Requester",
        0x0A => "Cryptographic Failure",
        0x0B => "Illegal Operation",
        0x0C => "Permission Denied",
        0x0D => "Object archived",
        0x0E => "Index Out of Bounds",
        0x0F => "Application Namespace Not Supported",
        0x10 => "Key Format Type Not Supported",
        0x11 => "Key Compression Type Not Supported",
        0x12 => "Encoding Option Error",
        0x13 => "Key Value Not Present",
        0x14 => "Attestation Required",
        0x15 => "Attestation Failed",
        0x37 => "Object Not Found",
        0x100 => "General Failure",
        other => return format!("Result Reason {other:#x}"),
    };
    name.to_string()
}

/// The name of an Operation, as the specification writes it.
pub fn operation_name(code: u32) -> String {
    let name = match code {
        0x01 => "Create",
        0x02 => "Create Key Pair",
        0x03 => "Register",
        0x04 => "Re-key",
        0x05 => "Derive Key",
        0x06 => "Certify",
        0x07 => "Re-certify",
        0x08 => "Locate",
        0x09 => "Check",
        0x0A => "Get",
        0x0B => "Get Attributes",
        0x0C => "Get Attribute List",
        0x0D => "Add Attribute",
        0x0E => "Modify Attribute",
        0x0F => "Delete Attribute",
        0x10 => "Obtain Lease",
        0x11 => "Get Usage Allocation",
        0x12 => "Activate",
        0x13 => "Revoke",
        0x14 => "Destroy",
        0x15 => "Archive",
        0x16 => "Recover",
        0x17 => "Validate",
        0x18 => "Query",
        0x19 => "Cancel",
        0x1A => "Poll",
        0x1B => "Notify",
        0x1C => "Put",
        0x1D => "Re-key Key Pair",
        0x1E => "Discover Versions",
        0x1F => "Encrypt",
        0x20 => "Decrypt",
        0x21 => "Sign",
        0x22 => "Signature Verify",
        0x23 => "MAC",
        0x24 => "MAC Verify",
        0x25 => "RNG Retrieve",
        0x26 => "RNG Seed",
        0x27 => "Hash",
        0x28 => "Create Split Key",
        0x29 => "Join Split Key",
        other => return format!("operation {other:#x}"),
    };
    name.to_string()
}

/// Seed 001's required operations: (code, name).
pub const REQUIRED_OPERATIONS: [(u32, &str); 8] = [
    (0x12, "Activate"),
    (0x02, "Create Key Pair"),
    (0x14, "Destroy"),
    (0x0A, "Get"),
    (0x0E, "Modify Attribute"),
    (0x18, "Query"),
    (0x13, "Revoke"),
    (0x21, "Sign"),
];

/// A request message of one batch item, generic over the payload so that payloads
/// kmip-protocol cannot express (EC templates) use the same header.
#[derive(Serialize)]
#[serde(rename = "0x420078")]
struct RequestMessage<P: Serialize>(RequestHeader, BatchItem<P>);

#[derive(Serialize)]
#[serde(rename = "0x42000F")]
struct BatchItem<P: Serialize>(
    Operation,
    #[serde(skip_serializing_if = "Option::is_none")] Option<UniqueBatchItemID>,
    P,
);

/// Username and password for the request header.
#[derive(Clone)]
pub struct Credential {
    pub username: String,
    pub password: Option<secrecy::SecretString>,
}

/// Encodes one KMIP 1.2 request for `operation` with `payload`.
pub fn encode<P: Serialize>(
    operation: Operation,
    payload: P,
    credential: Option<&Credential>,
) -> Result<Vec<u8>, String> {
    let auth = credential.map(|c| {
        Authentication::build(CredentialType::UsernameAndPassword(
            UsernameAndPasswordCredential::new(
                c.username.clone(),
                // kmip-protocol takes a String; it lives only while the request is encoded.
                c.password
                    .as_ref()
                    .map(|p| secrecy::ExposeSecret::expose_secret(p).to_string()),
            ),
        ))
    });
    let header = RequestHeader(
        ProtocolVersion(ProtocolVersionMajor(1), ProtocolVersionMinor(2)),
        Some(MaximumResponseSize(MAX_RESPONSE as i32)),
        auth,
        BatchCount(1),
    );
    let message = RequestMessage(header, BatchItem(operation, None, payload));
    kmip_ttlv::ser::to_vec(&message).map_err(|e| format!("cannot encode the request: {e}"))
}

/// Encodes a request whose payload kmip-protocol has a type for.
pub fn encode_std(
    payload: req::RequestPayload,
    credential: Option<&Credential>,
) -> Result<Vec<u8>, String> {
    encode(payload.operation(), payload, credential)
}

// ---- What kmip-protocol lacks -------------------------------------------------------

/// KMIP Cryptographic Algorithm RSA (0x04) and ECDSA (0x06).
pub const ALG_RSA: u32 = 0x04;
pub const ALG_ECDSA: u32 = 0x06;

/// Operation codes the signer asks about.
pub mod op {
    pub const LOCATE: u32 = 0x08;
}

/// A Cryptographic Algorithm value (kmip-protocol's enum has no ECDSA).
#[derive(Clone, Copy, Debug, Serialize)]
#[serde(rename = "Transparent:0x420028")]
pub struct AlgorithmCode(pub u32);

/// The Cryptographic Parameters of a Sign: padding (RSA), hash, signature algorithm
/// and, always, the Cryptographic Algorithm, which some servers need to pick the
/// mechanism (the seed-003 relay). Fields in KMIP 1.2's order.
#[derive(Clone, Debug, Serialize)]
#[serde(rename = "0x42002B")]
pub struct SignParameters {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub padding_method: Option<PaddingMethod>,
    pub hashing_algorithm: HashingAlgorithm,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digital_signature_algorithm: Option<DigitalSignatureAlgorithm>,
    pub cryptographic_algorithm: AlgorithmCode,
}

/// Sign: the private key, its parameters and the data.
#[derive(Clone, Debug, Serialize)]
#[serde(rename = "0x420079")]
pub struct SignPayload(pub UniqueIdentifier, pub SignParameters, pub Data);
/// KMIP Recommended Curve P-256 and P-384.
pub const CURVE_P256: u32 = 0x07;
pub const CURVE_P384: u32 = 0x0A;

/// `Cryptographic Domain Parameters { Recommended Curve }` as an Attribute.
#[derive(Clone, Debug, Serialize)]
#[serde(rename = "0x420008")]
pub struct DomainParametersAttribute(
    kmip_protocol::types::common::AttributeName,
    DomainParametersValue,
);

#[derive(Clone, Debug, Serialize)]
#[serde(rename = "0x42000B")]
pub struct DomainParametersValue(RecommendedCurve);

#[derive(Clone, Copy, Debug, Serialize)]
#[serde(rename = "Transparent:0x420075")]
pub struct RecommendedCurve(pub u32);

impl DomainParametersAttribute {
    pub fn curve(curve: u32) -> Self {
        Self(
            kmip_protocol::types::common::AttributeName("Cryptographic Domain Parameters".into()),
            DomainParametersValue(RecommendedCurve(curve)),
        )
    }
}

/// A Create Key Pair template with kmip-protocol attributes plus the domain parameters.
#[derive(Clone, Debug, Serialize)]
#[serde(rename = "0x42001F")]
pub struct EcCommonTemplate(pub Vec<req::Attribute>, pub DomainParametersAttribute);

/// Create Key Pair for an EC key: common (algorithm, length, curve), private and public
/// templates.
#[derive(Clone, Debug, Serialize)]
#[serde(rename = "0x420079")]
pub struct EcCreateKeyPair(
    pub EcCommonTemplate,
    pub req::PrivateKeyTemplateAttribute,
    pub req::PublicKeyTemplateAttribute,
);

// ---- Responses ----------------------------------------------------------------------

/// One answered batch item.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u32,
    pub reason: Option<u32>,
    pub message: Option<String>,
    pub payload: Option<Item>,
}

impl Answer {
    /// "Item Not Found: no such object" style text for messages.
    pub fn describe(&self) -> String {
        let status = self.status_name();
        let reason = self.reason.map(reason_name);
        match (reason, &self.message) {
            (Some(r), Some(m)) => format!("{status}, {r}: {m}"),
            (Some(r), None) => format!("{status}, {r}"),
            (None, Some(m)) => format!("{status}: {m}"),
            (None, None) => status,
        }
    }

    /// The Result Status and Reason alone, without the server's message: "Success",
    /// "Operation Failed (Item Not Found)".
    pub fn outcome(&self) -> String {
        match self.reason {
            Some(r) => format!("{} ({})", self.status_name(), reason_name(r)),
            None => self.status_name(),
        }
    }

    fn status_name(&self) -> String {
        match self.status {
            0 => "Success".to_string(),
            1 => "Operation Failed".to_string(),
            2 => "Operation Pending".to_string(),
            3 => "Operation Undone".to_string(),
            s => format!("Result Status {s:#x}"),
        }
    }
}

/// The Operation of the (first) batch item of a request this client encoded.
pub fn request_operation(request: &[u8]) -> Option<u32> {
    ttlv::parse(request)
        .ok()?
        .child(tag::BATCH_ITEM)?
        .enum_of(tag::OPERATION)
}

/// Longest server-chosen text kept, in characters (before escaping).
pub const SERVER_TEXT_MAX: usize = 256;

/// Server-chosen text made fit for errors and logs: at most [`SERVER_TEXT_MAX`]
/// characters (a longer text says how much was cut), control characters escaped
/// (`\n`, `\u{1b}`), so a hostile server can neither flood a log nor forge lines or
/// terminal sequences in it.
pub fn server_text(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars().take(SERVER_TEXT_MAX) {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    let total = text.chars().count();
    if total > SERVER_TEXT_MAX {
        out.push_str(&format!(
            "... ({} more characters)",
            total - SERVER_TEXT_MAX
        ));
    }
    out
}

/// Reads the one batch item of a response message body (header already checked).
pub fn decode_response(frame: &[u8]) -> Result<Answer, String> {
    let top = ttlv::parse(frame)?;
    if top.tag != tag::RESPONSE_MESSAGE {
        return Err(format!(
            "expected a Response Message (0x42007B), got item {:#08x}",
            top.tag
        ));
    }
    let items: Vec<&Item> = top.all(tag::BATCH_ITEM).collect();
    let item = match items.as_slice() {
        [one] => *one,
        [] => return Err("the response has no batch item".into()),
        more => {
            return Err(format!(
                "the response has {} batch items, expected 1",
                more.len()
            ))
        }
    };
    let status = item
        .enum_of(tag::RESULT_STATUS)
        .ok_or("the batch item has no Result Status")?;
    Ok(Answer {
        status,
        reason: item.enum_of(tag::RESULT_REASON),
        message: item.text_of(tag::RESULT_MESSAGE).map(server_text),
        payload: item.child(tag::RESPONSE_PAYLOAD).cloned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kmip_protocol::types::common::{
        AttributeName, AttributeValue, CryptographicUsageMask, DataLength, ObjectType,
    };
    use kmip_protocol::types::request::{
        Attribute, PrivateKeyTemplateAttribute, PublicKeyTemplateAttribute, RequestPayload,
    };

    #[rstest::rstest]
    #[case::plain("no such key", "no such key")]
    #[case::newline("bad\nINFO forged line", "bad\\nINFO forged line")]
    #[case::escape_sequence("\u{1b}[31mred", "\\u{1b}[31mred")]
    #[case::nul("a\0b", "a\\u{0}b")]
    #[case::unicode_kept("clé über", "clé über")]
    fn server_text_escapes_control_characters(#[case] text: &str, #[case] shown: &str) {
        assert_eq!(server_text(text), shown);
    }

    #[rstest::rstest]
    #[case::success(0, None, "Success")]
    #[case::with_reason(1, Some(reason::ITEM_NOT_FOUND), "Operation Failed (Item Not Found)")]
    #[case::unknown_status(9, None, "Result Status 0x9")]
    fn outcome_is_status_and_reason_without_the_message(
        #[case] status: u32,
        #[case] reason: Option<u32>,
        #[case] said: &str,
    ) {
        let answer = Answer {
            status,
            reason,
            message: Some("server, words; = here".into()),
            payload: None,
        };
        assert_eq!(answer.outcome(), said);
    }

    #[test]
    fn server_text_is_capped() {
        let long = "é".repeat(SERVER_TEXT_MAX + 1000);
        let shown = server_text(&long);
        assert!(shown.starts_with(&"é".repeat(SERVER_TEXT_MAX)));
        assert!(shown.ends_with("... (1000 more characters)"), "{shown}");
        assert_eq!(
            server_text(&"x".repeat(SERVER_TEXT_MAX)).len(),
            SERVER_TEXT_MAX
        );
    }

    #[test]
    fn requests_are_kmip_1_2_with_credential_and_size_limit() {
        let cred = Credential {
            username: "u".into(),
            password: Some("p".to_string().into()),
        };
        let bytes = encode_std(RequestPayload::RNGRetrieve(DataLength(16)), Some(&cred)).unwrap();
        let msg = ttlv::parse(&bytes).unwrap();
        assert_eq!(msg.tag, 0x420078);
        let header = msg.child(0x420077).unwrap();
        let v = header.child(tag::PROTOCOL_VERSION).unwrap();
        assert_eq!(v.int_of(tag::PROTOCOL_VERSION_MAJOR), Some(1));
        assert_eq!(v.int_of(tag::PROTOCOL_VERSION_MINOR), Some(2));
        assert_eq!(header.int_of(0x420050), Some(MAX_RESPONSE as i32));
        let auth = header.child(0x42000C).unwrap().child(0x420023).unwrap();
        let value = auth.child(0x420025).unwrap();
        assert_eq!(value.text_of(0x420099), Some("u"));
        assert_eq!(value.text_of(0x4200A1), Some("p"));
        let item = msg.child(tag::BATCH_ITEM).unwrap();
        assert_eq!(item.enum_of(tag::OPERATION), Some(0x25));
        assert_eq!(request_operation(&bytes), Some(0x25));
        assert_eq!(request_operation(b"not ttlv"), None);
        assert_eq!(item.child(0x420079).unwrap().int_of(0x4200C4), Some(16));
    }

    #[test]
    fn ec_create_key_pair_carries_algorithm_length_and_curve() {
        let payload = EcCreateKeyPair(
            EcCommonTemplate(
                vec![
                    Attribute(
                        AttributeName("Cryptographic Algorithm".into()),
                        None,
                        AttributeValue::Enumeration(ALG_ECDSA),
                    ),
                    Attribute::CryptographicLength(256),
                ],
                DomainParametersAttribute::curve(CURVE_P256),
            ),
            PrivateKeyTemplateAttribute::unnamed(vec![
                Attribute::Name("n_priv".into()),
                Attribute::CryptographicUsageMask(CryptographicUsageMask::Sign),
            ]),
            PublicKeyTemplateAttribute::unnamed(vec![Attribute::ObjectType(ObjectType::PublicKey)]),
        );
        let bytes = encode(Operation::CreateKeyPair, payload, None).unwrap();
        let msg = ttlv::parse(&bytes).unwrap();
        let p = msg.child(tag::BATCH_ITEM).unwrap().child(0x420079).unwrap();
        let common = p.child(0x42001F).unwrap();
        let attrs: Vec<&Item> = common.all(tag::ATTRIBUTE).collect();
        assert_eq!(attrs.len(), 3);
        assert_eq!(attrs[0].enum_of(tag::ATTRIBUTE_VALUE), Some(ALG_ECDSA));
        assert_eq!(attrs[1].int_of(tag::ATTRIBUTE_VALUE), Some(256));
        assert_eq!(
            attrs[2].text_of(tag::ATTRIBUTE_NAME),
            Some("Cryptographic Domain Parameters")
        );
        let dp = attrs[2].child(tag::ATTRIBUTE_VALUE).unwrap();
        assert_eq!(dp.enum_of(tag::RECOMMENDED_CURVE), Some(CURVE_P256));
        let private = p.child(0x420065).unwrap();
        let name = private.child(tag::ATTRIBUTE).unwrap();
        assert_eq!(
            name.child(tag::ATTRIBUTE_VALUE)
                .unwrap()
                .text_of(tag::NAME_VALUE),
            Some("n_priv")
        );
    }
}
