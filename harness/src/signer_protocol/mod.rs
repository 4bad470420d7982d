//! The signer protocol (`docs/signer-protocol.md`): the messages a signer implementation
//! and the harness exchange as JSON lines, as Rust types.
//!
//! Both ends use them: [`crate::cli::signer_serve`] (our router behind the protocol) and
//! [`child`] (the harness driving any implementation). The JSON Schemas committed in
//! `docs/signer-protocol/` are generated from them ([`request_schema`],
//! [`response_schema`]).
//!
//! Reading is liberal: unknown fields are ignored, and algorithm names the harness does
//! not know are kept as strings (`hello` may offer more than we test). Writing is exact:
//! optional fields are left out rather than sent as `null`.

pub mod child;

use std::collections::BTreeMap;

use base64::Engine;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{json, Value};

use crate::model::schema::{AlgorithmName, ErrorKindName};

/// The protocol version this harness speaks.
pub const PROTOCOL: u64 = 1;

/// The longest line either side accepts.
pub const MAX_LINE: usize = 1 << 20;

/// Bytes, written as standard base64 with padding.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct B64(pub Vec<u8>);

impl Serialize for B64 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for B64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map(B64)
            .map_err(|e| serde::de::Error::custom(format!("not base64: {e}")))
    }
}

impl JsonSchema for B64 {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Base64".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "Bytes in standard base64, with padding.",
            "type": "string",
            "contentEncoding": "base64"
        })
    }
}

/// A key identifier: 40 lowercase hex digits, the SHA-1 of the public key's
/// subjectPublicKey bits.
pub struct KeyHex;

impl JsonSchema for KeyHex {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "KeyIdentifier".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A key identifier: the SHA-1 of the public key's subjectPublicKey bits (RFC 5280 method 1), 40 lowercase hex digits.",
            "type": "string",
            "pattern": "^[0-9a-f]{40}$"
        })
    }
}

/// One request: its `id` (chosen by the harness, unique per process) and its operation.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct Request {
    pub id: u64,
    #[serde(flatten)]
    pub op: Op,
}

/// What a request asks, by `op`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Always the first request: the protocol version the harness speaks. Answered with
    /// [`Hello`].
    Hello { protocol: u64 },
    /// Make a key pair with the default signer (or `signer`). Answered with `Created`.
    CreateKey {
        #[schemars(with = "AlgorithmName")]
        alg: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signer: Option<String>,
    },
    /// Sign `data` with a key. Answered with `Signed`.
    Sign {
        #[schemars(with = "KeyHex")]
        key: String,
        #[schemars(with = "AlgorithmName")]
        alg: String,
        data: B64,
    },
    /// A key's public key. Answered with `PublicKey`.
    PublicKey {
        #[schemars(with = "KeyHex")]
        key: String,
    },
    /// Destroy a key pair. Answered with `Destroyed`.
    Destroy {
        #[schemars(with = "KeyHex")]
        key: String,
    },
    /// The keys the implementation knows, and (when asked and offered) the keys its
    /// backends hold that it does not. Answered with `Listing`.
    List {
        #[serde(default)]
        orphans: bool,
    },
    /// Random bytes. Answered with `Random`.
    Random { bytes: usize },
    /// Each configured signer's roles and state. Answered with `Status`.
    Status,
    /// What a configured signer (default: the default signer) knows of its backend.
    /// Answered with `Info`.
    Info {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signer: Option<String>,
    },
    /// The identity key configured signer `signer` was last bound by. Answered with
    /// [`Identity`].
    Identity { signer: String },
    /// Sign with a key made for this signature alone and destroyed afterwards. Answered
    /// with `OneOff`.
    SignOneOff {
        #[schemars(with = "AlgorithmName")]
        alg: String,
        data: B64,
    },
    /// End: answer, then exit 0. Answered with `Empty`.
    Shutdown,
}

impl Op {
    /// The `op` name, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Hello { .. } => "hello",
            Op::CreateKey { .. } => "create_key",
            Op::Sign { .. } => "sign",
            Op::PublicKey { .. } => "public_key",
            Op::Destroy { .. } => "destroy",
            Op::List { .. } => "list",
            Op::Random { .. } => "random",
            Op::Status => "status",
            Op::Info { .. } => "info",
            Op::Identity { .. } => "identity",
            Op::SignOneOff { .. } => "sign_one_off",
            Op::Shutdown => "shutdown",
        }
    }
}

/// A refusal: one of the error kinds the suites name in `expect_error`, and a message
/// for people.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct ErrorBody {
    #[schemars(with = "ErrorKindName")]
    pub kind: String,
    pub message: String,
}

/// Who answered `hello`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct Implementation {
    pub name: String,
    pub version: String,
}

/// The answer to `hello`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct Hello {
    /// The highest version the implementation speaks that is at most the harness's.
    pub protocol: u64,
    pub implementation: Implementation,
    /// What `create_key` may be asked for (`rsa2048`, `rsa2048-pss`, `ecdsa-p256`,
    /// `ecdsa-p384`, `ed25519`; others are ignored).
    pub algorithms: Vec<String>,
    /// Optional features: `one-off`, `random`, `owners`, `orphans`, `status`, `info`,
    /// `identity`.
    #[serde(default)]
    pub features: Vec<String>,
}

/// The answer to `create_key`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct Created {
    #[schemars(with = "KeyHex")]
    pub key: String,
    /// DER SubjectPublicKeyInfo.
    pub public_key: B64,
    /// The configured signer that owns the new key.
    pub signer: String,
}

/// The answer to `sign`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct Signed {
    /// ECDSA: DER Ecdsa-Sig-Value; RSA and Ed25519: raw.
    pub signature: B64,
}

/// The answer to `public_key`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct PublicKey {
    /// DER SubjectPublicKeyInfo.
    pub public_key: B64,
}

/// The answer to `destroy`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct Destroyed {
    /// The configured signer whose backend held the key.
    pub signer: String,
}

/// One key in a [`Listing`].
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct Listed {
    #[schemars(with = "KeyHex")]
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<AlgorithmName>")]
    pub alg: Option<String>,
    /// The configured signer that owns it (feature `owners`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
    /// The signer identity that owns it (feature `owners`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer_id: Option<String>,
}

/// Keys one signer's backend holds that the implementation does not know.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct Orphans {
    pub signer: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Vec<KeyHex>>")]
    pub keys: Option<Vec<String>>,
    /// Why the backend could not be asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

/// The answer to `list`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct Listing {
    pub keys: Vec<Listed>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orphans: Option<Vec<Orphans>>,
}

/// The answer to `random`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct Random {
    pub random: B64,
    /// `default-signer` (its own generator) or `fallback` (the software signer's).
    pub source: String,
}

/// One configured signer in a [`Status`].
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct SignerStatus {
    pub name: String,
    #[serde(rename = "type")]
    pub signer_type: String,
    #[serde(default)]
    pub roles: Vec<String>,
    /// `not-connected`, `bound`, `waiting`, `unusable`, ...
    pub state: String,
    /// Anything else the implementation says (signer id, error, retry time).
    #[serde(flatten)]
    pub more: BTreeMap<String, Value>,
}

/// The answer to `status`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct Status {
    pub signers: Vec<SignerStatus>,
}

/// The answer to `info`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct Info {
    pub name: String,
    #[serde(rename = "type")]
    pub signer_type: String,
    /// Facts about the backend (`tls_version`, library, token label, ...).
    #[serde(default)]
    pub details: BTreeMap<String, String>,
}

/// The answer to `identity`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct Identity {
    pub signer_id: String,
    #[schemars(with = "KeyHex")]
    pub identity_key: String,
    #[schemars(with = "AlgorithmName")]
    pub identity_alg: String,
}

/// The answer to `sign_one_off`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct OneOff {
    pub signature: B64,
    /// DER SubjectPublicKeyInfo of the (destroyed) key.
    pub public_key: B64,
    /// The signer that made the key.
    #[serde(default)]
    pub signer: String,
}

/// The answer to `shutdown`: nothing.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct Empty {}

/// The JSON Schema of a request line.
pub fn request_schema() -> Value {
    crate::model::schema::generate::<Request>(
        "urn:hsm-harness:schema:signer-request",
        "hsm-harness signer protocol request",
    )
}

/// Every answer, for the response schema: `ok: false` with an error, or `ok: true`
/// with one op's fields.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum Answer {
    Hello(Hello),
    Created(Created),
    Signed(Signed),
    PublicKey(PublicKey),
    Destroyed(Destroyed),
    Listing(Listing),
    Random(Random),
    Status(Status),
    Info(Info),
    Identity(Identity),
    OneOff(OneOff),
    Empty(Empty),
}

/// The JSON Schema of a response line.
pub fn response_schema() -> Value {
    let mut schema = crate::model::schema::generate::<Answer>(
        "urn:hsm-harness:schema:signer-response",
        "hsm-harness signer protocol response",
    );
    let answers = schema
        .as_object_mut()
        .and_then(|m| m.remove("anyOf"))
        .unwrap_or(Value::Null);
    let map = schema.as_object_mut().expect("a root schema is an object");
    map.insert(
        "description".into(),
        json!("One response line: the request's id, and ok with that op's fields, or not ok with an error."),
    );
    map.insert("type".into(), json!("object"));
    map.insert("required".into(), json!(["id", "ok"]));
    map.insert(
        "properties".into(),
        json!({
            "id": {
                "description": "The request's id; null when the request's could not be read (a line that is not JSON).",
                "type": ["integer", "null"],
                "minimum": 0
            },
            "ok": { "type": "boolean" }
        }),
    );
    map.insert(
        "oneOf".into(),
        json!([
            {
                "properties": { "ok": { "const": false }, "error": { "$ref": "#/$defs/ErrorBody" } },
                "required": ["error"]
            },
            { "properties": { "ok": { "const": true } }, "anyOf": answers }
        ]),
    );
    // `ErrorBody` is among the definitions already: `Orphans` uses it.
    schema
}

/// A response line as read, before the op's fields are parsed.
#[derive(Debug, Deserialize)]
pub struct Envelope {
    pub id: Option<u64>,
    pub ok: Option<bool>,
    pub error: Option<ErrorBody>,
    #[serde(flatten)]
    pub fields: serde_json::Map<String, Value>,
}

/// A response line: `answer`'s fields with `id` and `ok: true`.
pub fn ok_line(id: Value, answer: impl Serialize) -> String {
    let mut fields = match serde_json::to_value(answer) {
        Ok(Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    fields.insert("id".into(), id);
    fields.insert("ok".into(), true.into());
    Value::Object(fields).to_string()
}

/// A response line refusing request `id`.
pub fn error_line(id: Value, kind: &str, message: &str) -> String {
    json!({ "id": id, "ok": false, "error": { "kind": kind, "message": message } }).to_string()
}
