//! The JSON Schema of suite files, generated from the Rust model with `schemars`.
//!
//! The model's types derive `JsonSchema` next to `Deserialize`, and their doc comments
//! become the schema's descriptions. This module holds what the derive cannot give:
//! schemas of the names and values the model keeps as plain strings (instance names,
//! PKCS#11 functions, KMIP operations), of types from other crates (algorithms, error
//! kinds) and of types of `backends/` (the shim's settings, the proxy's faults), and
//! the last touches on the generated document. The loader stays the authority; what
//! JSON Schema cannot say (names bound by earlier steps, unique names) only it checks.

use std::borrow::Cow;
use std::marker::PhantomData;

use hsm_signers::{Algorithm, ErrorKind};
use schemars::generate::SchemaSettings;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde_json::{json, Value};

use crate::backends::proxy::Fault;
use crate::backends::shim::ShimSpec;

/// Generates the root schema of `T` with `$id` and `title`, in the form committed to
/// the repository: no `null` for optional fields (the suite format never needs it) and
/// descriptions unwrapped to one line per paragraph.
pub fn generate<T: JsonSchema>(id: &str, title: &str) -> Value {
    let generator = SchemaSettings::draft2020_12().into_generator();
    let schema = generator.into_root_schema_for::<T>();
    let mut value = schema.to_value();
    strip_null(&mut value);
    unwrap_descriptions(&mut value);
    let map = value.as_object_mut().expect("a root schema is an object");
    let mut root = serde_json::Map::new();
    // The editor metadata first, for people who read the file.
    for key in ["$schema"] {
        if let Some(v) = map.remove(key) {
            root.insert(key.into(), v);
        }
    }
    root.insert("$id".into(), json!(id));
    root.insert("title".into(), json!(title));
    map.remove("title");
    root.extend(std::mem::take(map));
    Value::Object(root)
}

/// Optional fields are `Option<T>` in the model, which schemars lets be `null`. YAML's
/// `~` there means "absent" to the loader, but no suite needs it, and without it the
/// schema reads as the README describes the format.
fn strip_null(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(Value::Array(types)) = map.get_mut("type") {
                types.retain(|t| t != "null");
                if types.len() == 1 {
                    let only = types.remove(0);
                    map.insert("type".into(), only);
                }
            }
            if map.get("default") == Some(&Value::Null) {
                map.remove("default");
            }
            if let Some(Value::Array(values)) = map.get_mut("enum") {
                values.retain(|v| !v.is_null());
            }
            if let Some(Value::Array(options)) = map.get_mut("anyOf") {
                options.retain(|o| o.get("type") != Some(&json!("null")));
                if options.len() == 1 {
                    let only = options.remove(0);
                    map.remove("anyOf");
                    if let Value::Object(inner) = only {
                        for (k, v) in inner {
                            map.entry(k).or_insert(v);
                        }
                    }
                }
            }
            map.values_mut().for_each(strip_null);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_null),
        _ => {}
    }
}

/// Doc comments wrap at 88 columns; a description reads better as one line per
/// paragraph.
fn unwrap_descriptions(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                match v {
                    Value::String(text) if k == "description" => {
                        *text = text
                            .split("\n\n")
                            .map(|p| p.split('\n').map(str::trim).collect::<Vec<_>>().join(" "))
                            .collect::<Vec<_>>()
                            .join("\n\n");
                    }
                    _ => unwrap_descriptions(v),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(unwrap_descriptions),
        _ => {}
    }
}

/// A string schema named `name`, with a description.
fn named_string(description: &str, extra: Value) -> Schema {
    let mut schema = json_schema!({ "type": "string", "description": description });
    if let Value::Object(extra) = extra {
        for (k, v) in extra {
            schema.insert(k, v);
        }
    }
    schema
}

macro_rules! string_schema {
    ($(#[$doc:meta])* $ty:ident, $name:literal, $description:literal, $extra:tt) => {
        $(#[$doc])*
        pub struct $ty;

        impl JsonSchema for $ty {
            fn schema_name() -> Cow<'static, str> {
                $name.into()
            }

            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                named_string($description, json!($extra))
            }
        }
    };
}

string_schema!(
    /// A key name bound earlier in the case.
    KeyName,
    "keyName",
    "A key name bound by the `as:` of an earlier create_key step of this case that does not expect an error.",
    {}
);
string_schema!(
    /// A signature name bound earlier in the case.
    SignatureName,
    "signatureName",
    "A signature name bound by the `as:` of an earlier sign or sign_one_off step of this case that does not expect an error.",
    {}
);
string_schema!(
    /// A name a step binds its result to.
    NewName,
    "newName",
    "A name for this step's result, for later steps of the case. It must not be bound already (keys, signatures and inventories are separate sets of names).",
    {}
);
string_schema!(
    /// A key or a one-off signature, in an inventory.
    KeyOrOneOffName,
    "keyOrOneOffName",
    "A key (bound by create_key ... as:) or a one-off signature (bound by sign_one_off ... as:; it stands for the one-off key that made it).",
    {}
);
string_schema!(
    /// A configured signer's name.
    SignerName,
    "signerName",
    "The name of a configured signer of the case (signers: block). Without a block, the one signer is named after the backend (e.g. softhsm), and the loader does not check the names.",
    { "minLength": 1 }
);
string_schema!(
    /// A backend instance's name (`crate::model::suite::check_instance` in the loader).
    InstanceName,
    "instanceName",
    "A backend instance of the cell: a fresh backend of the cell's kind (a SoftHSMv2 token, or a keys directory for the software backend), made on first use. Lowercase letters, digits and hyphens, at most 13 characters (the SoftHSMv2 token label is `hsm-harness-NAME-XXXXXX`, at most 32 bytes; the PIN variable is HSM_HARNESS_PIN_NAME). `software` is reserved: it means the OpenSSL signer's keys directory in inventory: { of: software }.",
    { "pattern": "^[a-z0-9][a-z0-9-]{0,12}$", "not": { "const": "software" } }
);

/// What an `inventory` looks at: an instance, or `software`.
pub struct InventoryOf;

impl JsonSchema for InventoryOf {
    fn schema_name() -> Cow<'static, str> {
        "inventoryOf".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "anyOf": [generator.subschema_for::<InstanceName>(), { "const": "software" }]
        })
    }
}

/// A string enumeration of `values`.
fn names(description: &str, values: impl IntoIterator<Item = String>) -> Schema {
    json_schema!({
        "description": description,
        "type": "string",
        "enum": values.into_iter().collect::<Vec<_>>(),
    })
}

/// `hsm_signers::Algorithm` by its names.
pub struct AlgorithmName;

impl JsonSchema for AlgorithmName {
    fn schema_name() -> Cow<'static, str> {
        "algorithm".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        names(
            "rsa2048: RSA 2048, PKCS#1 v1.5, SHA-256. rsa2048-pss: RSA 2048, PSS, SHA-256, MGF1-SHA-256, salt 32. ecdsa-p256: ECDSA P-256, SHA-256, DER. ecdsa-p384: ECDSA P-384, SHA-384, DER. ed25519: Ed25519.",
            Algorithm::ALL.iter().map(|a| a.name().to_string()),
        )
    }
}

/// `hsm_signers::ErrorKind` by its names.
pub struct ErrorKindName;

impl JsonSchema for ErrorKindName {
    fn schema_name() -> Cow<'static, str> {
        "errorKind".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        names(
            "A signer error kind. not-found: no key with that identifier. unsupported: algorithm or operation not offered. invalid-input: the request is wrong (e.g. an ECDSA algorithm with an RSA key). unavailable: the backend cannot be reached right now (retried). tls-refused: the KMIP server and the signer have no TLS version in common (not retried). unusable: the signer cannot be used and is not retried (module does not load, wrong PIN, missing functions). signer-not-bound: the key belongs to a signer id no configured signer is bound to. backend: another backend error. protocol: the backend's answer could not be read (malformed, or a format the signer does not handle). config: bad signer configuration. io: local storage failed.",
            ErrorKind::ALL.iter().map(|k| k.name().to_string()),
        )
    }
}

/// A PKCS#11 2.40 function name, as the shim knows them.
pub struct Pkcs11Function;

impl JsonSchema for Pkcs11Function {
    fn schema_name() -> Cow<'static, str> {
        "pkcs11Function".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A PKCS#11 2.40 function name.",
            "enum": p11shim::FUNCTIONS,
        })
    }
}

/// A KMIP 1.2 operation name, as the KMIP signer reports Query answers.
pub struct KmipOperation;

impl JsonSchema for KmipOperation {
    fn schema_name() -> Cow<'static, str> {
        "kmipOperation".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A KMIP 1.2 operation, as the specification names it.",
            "enum": crate::model::suite::kmip_operation_names(),
        })
    }
}

/// A map whose keys follow `K`'s schema and whose values follow `V`'s.
pub struct MapOf<K, V>(PhantomData<(K, V)>);

impl<K: JsonSchema, V: JsonSchema> JsonSchema for MapOf<K, V> {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        format!("Map_from_{}_to_{}", K::schema_name(), V::schema_name()).into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "object",
            "propertyNames": generator.subschema_for::<K>(),
            "additionalProperties": generator.subschema_for::<V>(),
        })
    }
}

/// A `signers:` list of several needs a `default_signer` (a signers block, a restart's
/// new list).
pub fn default_signer_with_several(schema: &mut Schema) {
    schema.insert(
        "if".into(),
        json!({ "required": ["signers"], "properties": { "signers": { "type": "array", "minItems": 2 } } }),
    );
    schema.insert("then".into(), json!({ "required": ["default_signer"] }));
}

/// A signer has exactly one of `on: INSTANCE` or `software: true`.
pub fn on_or_software(schema: &mut Schema) {
    schema.insert("if".into(), json!({ "required": ["on"] }));
    schema.insert(
        "then".into(),
        json!({ "properties": { "software": { "const": false } } }),
    );
    schema.insert(
        "else".into(),
        json!({ "required": ["software"], "properties": { "software": { "const": true } } }),
    );
}

/// One rule of the shim's settings (the shim's own `[[rule]]`, `p11shim::config`).
struct ShimRule;

impl JsonSchema for ShimRule {
    fn schema_name() -> Cow<'static, str> {
        "shimRule".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let rv = r"^(CKR_[A-Z0-9_]+|0x[0-9a-fA-F]+|[0-9]+)$";
        json_schema!({
            "description": "One fault: what the shim does to which calls of a function (counted from 1 per process, or from the last change of the settings). unsupported: answer CKR_FUNCTION_NOT_SUPPORTED. return: answer rv (a CKR_* name or a number, not CKR_OK). delay: wait millis, then go on. abort: abort() the process inside the call. pretend: answer CKR_OK without calling the module (C_DestroyObject, C_SetAttributeValue, C_GenerateRandom only: a module that claims what it did not do; C_GenerateRandom leaves the caller's buffer as it was). on_call: only that call; from_call: that call and every later one; neither: every call.",
            "type": "object",
            "required": ["function", "action"],
            "additionalProperties": false,
            "properties": {
                "function": generator.subschema_for::<Pkcs11Function>(),
                "action": { "enum": ["unsupported", "return", "delay", "abort", "pretend"] },
                "rv": { "type": "string", "pattern": rv, "not": { "const": "CKR_OK" }, "examples": ["CKR_DEVICE_ERROR"] },
                "millis": { "type": "integer", "minimum": 0 },
                "on_call": { "type": "integer", "minimum": 1 },
                "from_call": { "type": "integer", "minimum": 1 }
            },
            "allOf": [
                { "if": { "properties": { "action": { "const": "return" } } }, "then": { "required": ["rv"] }, "else": { "not": { "required": ["rv"] } } },
                { "if": { "properties": { "action": { "const": "delay" } } }, "then": { "required": ["millis"] }, "else": { "not": { "required": ["millis"] } } },
                { "if": { "properties": { "action": { "const": "pretend" } } }, "then": { "properties": { "function": { "enum": p11shim::config::PRETEND_FUNCTIONS } } } },
                { "not": { "required": ["on_call", "from_call"] } }
            ]
        })
    }
}

/// The shim's settings live in `backends/` (the shim's configuration); this is their
/// schema as suite and backend files write them.
impl JsonSchema for ShimSpec {
    fn schema_name() -> Cow<'static, str> {
        "shim".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "Settings of the PKCS#11 shim (libp11shim.so, p11shim/README.md) in front of the signers' module; the harness fills in the module and the trace file. `{}`: nothing injected, the calls are only traced.",
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "hide_mechanisms": {
                    "description": "Mechanisms (CKM_* names, or numbers as \"0x1041\") removed from C_GetMechanismList; C_GetMechanismInfo and every function that takes one of them answer CKR_MECHANISM_INVALID.",
                    "type": "array",
                    "items": { "type": "string", "pattern": "^(CKM_[A-Z0-9_]+|0x[0-9a-fA-F]+|[0-9]+)$" },
                    "examples": [["CKM_ECDSA"]]
                },
                "rules": {
                    "description": "Faults to inject, in order (the shim's [[rule]]).",
                    "type": "array",
                    "items": generator.subschema_for::<ShimRule>(),
                    "examples": [[{ "function": "C_GenerateRandom", "action": "unsupported" }]]
                }
            },
            "examples": [{ "rules": [{ "function": "C_GenerateRandom", "action": "unsupported" }] }]
        })
    }
}

/// The proxy's faults live in `backends/proxy.rs`; this is their schema as suites
/// write them.
impl JsonSchema for Fault {
    fn schema_name() -> Cow<'static, str> {
        "proxyFault".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let count = json!({ "type": "integer", "minimum": 0 });
        json_schema!({
            "description": "The harness's TCP proxy in front of the instance's server, and what it does to connections: none (pass through, counting), refuse (accept and close at once), black-hole (accept, never answer), { delay: { millis } } (hold every chunk this long), { drop-after: { bytes, connections } } (cut each connection after this many bytes from the server; with connections: N only the first N).",
            "oneOf": [
                { "enum": ["none", "refuse", "black-hole"] },
                {
                    "type": "object",
                    "required": ["delay"],
                    "additionalProperties": false,
                    "properties": {
                        "delay": {
                            "type": "object",
                            "required": ["millis"],
                            "additionalProperties": false,
                            "properties": { "millis": count }
                        }
                    }
                },
                {
                    "type": "object",
                    "required": ["drop-after"],
                    "additionalProperties": false,
                    "properties": {
                        "drop-after": {
                            "type": "object",
                            "required": ["bytes"],
                            "additionalProperties": false,
                            "properties": { "bytes": count, "connections": count }
                        }
                    }
                }
            ]
        })
    }
}
