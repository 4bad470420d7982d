//! `suites/schema.json` and `fixtures/backend.schema.json` agree with the loaders.
//!
//! The Rust model (`harness/src/model/suite.rs`, `harness/src/steps/`) is the
//! authority, and `suites/schema.json` is generated from it (`hsm-harness schema
//! suite`): the first test fails when the committed file is not what the model
//! generates. The others check that every suite and backend file in the repository and
//! every example suite in suites/README.md validates and loads, and that the schema and
//! the loader accept and refuse the same documents, as people write them: unknown
//! fields and values, ranges, names. What only the loader checks (names bound by
//! earlier steps, signer roles) and where the schema is stricter (suites/README.md
//! lists both) is pinned down too.
//!
//! Documents are built as JSON and handed to the loader as text: JSON is YAML, so both
//! sides read exactly the same document.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use hsm_harness::model::backend::Backend;
use hsm_harness::model::suite::{files_in, Suite, SuiteError};
use rstest::rstest;
use serde_json::{json, Value};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read_json(rel: &str) -> Value {
    let path = root().join(rel);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn suite_schema() -> Value {
    read_json("suites/schema.json")
}

fn backend_schema() -> Value {
    read_json("fixtures/backend.schema.json")
}

/// The schema's own errors for `instance`, empty when it validates.
fn schema_errors(schema: &Value, instance: &Value) -> Vec<String> {
    let validator = jsonschema::draft202012::new(schema).expect("the schema compiles");
    validator
        .iter_errors(instance)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

fn yaml_to_json(text: &str) -> Value {
    serde_saphyr::from_str::<Value>(text).expect("YAML converts to JSON")
}

fn load_suite(doc: &Value) -> Result<Suite, SuiteError> {
    Suite::parse(
        &serde_json::to_string_pretty(doc).unwrap(),
        Path::new("suites/generated.yaml"),
    )
}

fn load_backend(doc: &Value) -> Result<Backend, SuiteError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("generated.yaml");
    std::fs::write(&path, serde_json::to_string_pretty(doc).unwrap()).unwrap();
    Backend::load(&path)
}

/// The values a loader error lists as allowed ("expected one of a, b, c").
fn allowed_in(message: &str) -> BTreeSet<String> {
    let text = message.split(" at line ").next().unwrap_or(message);
    let list = if let Some((_, rest)) = text.split_once("expected one of ") {
        rest.split(", ").map(str::to_string).collect::<Vec<_>>()
    } else if let Some((_, rest)) = text.split_once("expected ") {
        // serde's own wording for one or two: "expected `a`" / "expected `a` or `b`".
        rest.split(" or ").map(str::to_string).collect()
    } else {
        panic!("no list of allowed values in: {message}")
    };
    list.into_iter()
        .map(|s| s.trim().trim_matches('`').to_string())
        .collect()
}

fn set<'a>(items: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
    items.into_iter().map(str::to_string).collect()
}

fn strings(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().expect("a string").to_string())
        .collect()
}

/// Follows a local `$ref` ("#/$defs/name") to the definition.
fn resolve<'a>(schema: &'a Value, node: &'a Value) -> &'a Value {
    match node.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let ptr = r.strip_prefix('#').expect("a local $ref");
            resolve(
                schema,
                schema
                    .pointer(ptr)
                    .unwrap_or_else(|| panic!("dangling $ref {r}")),
            )
        }
        None => node,
    }
}

fn def<'a>(schema: &'a Value, name: &str) -> &'a Value {
    &schema["$defs"][name]
}

/// The values a schema node allows: its `enum`, or the `const` of each `oneOf`.
fn enum_values(node: &Value) -> BTreeSet<String> {
    if let Some(values) = node.get("enum") {
        return strings(values);
    }
    node["oneOf"]
        .as_array()
        .unwrap_or_else(|| panic!("neither enum nor oneOf: {node}"))
        .iter()
        .map(|v| v["const"].as_str().expect("a const").to_string())
        .collect()
}

/// The steps `suite_with` runs first. They bind the names the schema's examples use:
/// key `k`, signature `sig`, one-off signature `one`, inventory `before`, trace mark
/// `m0`.
fn prefix() -> Vec<Value> {
    vec![
        json!({ "create_key": { "alg": "rsa2048", "as": "k" } }),
        json!({ "sign": { "key": "k", "as": "sig" } }),
        json!({ "sign_one_off": { "alg": "ecdsa-p256", "as": "one" } }),
        json!({ "inventory": { "of": "a", "has": ["k"], "as": "before" } }),
        json!({ "trace": { "mark": "m0" } }),
    ]
}

/// A signers block whose names (`hsm`, `backup`, `openssl`) the tests' steps use.
fn example_signers() -> Value {
    json!({
        "default_signer": "hsm",
        "signers": [
            { "name": "hsm", "on": "a" },
            { "name": "backup", "on": "b" },
            { "name": "openssl", "software": true }
        ]
    })
}

/// An instances block with instance `a` behind a proxy, as `traffic` and `proxy` need.
fn example_instances() -> Value {
    json!({ "a": { "proxy": "none" } })
}

/// A suite of one case, with the schema's example signers (and instances, for `traffic`
/// and `proxy`), whose steps are `prefix()`
/// and then `steps`.
fn suite_with(steps: Vec<Value>) -> Value {
    let mut all = prefix();
    all.extend(steps);
    let mut doc = json!({
        "suite": "t", "about": "x", "signers": example_signers(),
        "cases": [ { "name": "c", "steps": all } ]
    });
    // Only `traffic` needs them, and they make a case require `kmip`.
    if all_steps(&doc).any(|s| s.get("traffic").is_some() || s.get("proxy").is_some()) {
        doc["instances"] = example_instances();
    }
    doc
}

fn all_steps(doc: &Value) -> impl Iterator<Item = &Value> {
    doc["cases"][0]["steps"].as_array().into_iter().flatten()
}

fn minimal_suite() -> Value {
    json!({
        "suite": "t", "about": "x",
        "cases": [ { "name": "c", "steps": [ { "random": { "bytes": 1 } } ] } ]
    })
}

/// Both the schema and the loader accept `doc`; returns the loaded suite.
#[track_caller]
fn accepted_by_both(doc: &Value) -> Suite {
    let errors = schema_errors(&suite_schema(), doc);
    assert!(errors.is_empty(), "schema refuses {doc}: {errors:#?}");
    load_suite(doc).unwrap_or_else(|e| panic!("loader refuses {doc}: {e}"))
}

/// Both refuse `doc`; returns the loader's error.
#[track_caller]
fn refused_by_both(doc: &Value) -> SuiteError {
    assert!(
        !schema_errors(&suite_schema(), doc).is_empty(),
        "schema accepts {doc}"
    );
    match load_suite(doc) {
        Ok(_) => panic!("loader accepts {doc}"),
        Err(e) => e,
    }
}

// --- the schema itself ------------------------------------------------------------------

/// The committed signer protocol schemas are what the message types generate.
#[rstest]
#[case::request(
    "docs/signer-protocol/request.schema.json",
    hsm_harness::signer_protocol::request_schema(),
    "signer-request"
)]
#[case::response(
    "docs/signer-protocol/response.schema.json",
    hsm_harness::signer_protocol::response_schema(),
    "signer-response"
)]
fn the_committed_signer_protocol_schemas_are_the_generated_ones(
    #[case] file: &str,
    #[case] schema: Value,
    #[case] format: &str,
) {
    let generated = hsm_harness::cli::schema::pretty(&schema);
    let committed = std::fs::read_to_string(root().join(file)).unwrap_or_default();
    assert!(
        committed == generated,
        "{file} is stale: run `cargo run -p hsm-harness -- schema {format} > {file}` and commit it"
    );
    if let Err(e) = jsonschema::meta::validate(&schema) {
        panic!("{file} is not a valid JSON Schema: {e}");
    }
    jsonschema::draft202012::new(&schema).unwrap_or_else(|e| panic!("{file}: {e}"));
}

/// The committed suites/schema.json is what the model generates.
#[test]
fn the_committed_suite_schema_is_the_generated_one() {
    let generated = hsm_harness::cli::schema::pretty(&hsm_harness::model::suite::schema());
    let committed = std::fs::read_to_string(root().join("suites/schema.json")).unwrap();
    assert!(
        committed == generated,
        "suites/schema.json is not the schema the suite model generates; run \
         `cargo run -p hsm-harness -- schema suite > suites/schema.json` and commit it"
    );
}

/// The committed fixtures/backend.schema.json is what the backend model and the
/// providers' settings types generate.
#[test]
fn the_committed_backend_schema_is_the_generated_one() {
    let generated = hsm_harness::cli::schema::pretty(&hsm_harness::model::backend::schema());
    let committed = std::fs::read_to_string(root().join("fixtures/backend.schema.json")).unwrap();
    assert!(
        committed == generated,
        "fixtures/backend.schema.json is not the schema the backend model generates; run \
         `cargo run -p hsm-harness -- schema backend > fixtures/backend.schema.json` and commit it"
    );
}

/// The names the schema and the loader allow are the signers' and the shim's own.
#[test]
fn enumerations_are_the_model_s() {
    let schema = suite_schema();
    let algorithms: BTreeSet<String> = hsm_signers::Algorithm::ALL
        .iter()
        .map(|a| a.name().to_string())
        .collect();
    assert_eq!(enum_values(def(&schema, "algorithm")), algorithms);
    let kinds: BTreeSet<String> = hsm_signers::ErrorKind::ALL
        .iter()
        .map(|k| k.name().to_string())
        .collect();
    assert_eq!(enum_values(def(&schema, "errorKind")), kinds);
    assert_eq!(
        enum_values(def(&schema, "pkcs11Function")),
        p11shim::FUNCTIONS.iter().map(|f| f.to_string()).collect()
    );
}

/// Both schemas list the capabilities the loader knows.
#[test]
fn capabilities_are_the_same_in_both_schemas_and_the_loader() {
    let schema = suite_schema();
    let in_schema = enum_values(def(&schema, "capability"));
    let mut doc = minimal_suite();
    doc["requires"] = json!(["quantum"]);
    let e = refused_by_both(&doc);
    assert_eq!(allowed_in(&e.message), in_schema, "{e}");
    let mut doc = minimal_suite();
    doc["requires"] = Value::Array(in_schema.iter().map(|c| json!(c)).collect());
    accepted_by_both(&doc);
    let backend = backend_schema();
    assert_eq!(enum_values(def(&backend, "capability")), in_schema);
}

#[test]
fn schemas_are_valid_draft_2020_12_with_editor_metadata() {
    for (file, schema) in [
        ("suites/schema.json", suite_schema()),
        ("fixtures/backend.schema.json", backend_schema()),
    ] {
        assert_eq!(
            schema["$schema"],
            json!("https://json-schema.org/draft/2020-12/schema"),
            "{file}"
        );
        for key in ["$id", "title", "description"] {
            assert!(schema[key].is_string(), "{file} has no {key}");
        }
        if let Err(e) = jsonschema::meta::validate(&schema) {
            panic!("{file} is not a valid JSON Schema: {e}");
        }
        jsonschema::draft202012::new(&schema).unwrap_or_else(|e| panic!("{file}: {e}"));
    }
}

#[rstest]
#[case::suite(suite_schema())]
#[case::backend(backend_schema())]
fn every_ref_resolves_and_every_def_is_used(#[case] schema: Value) {
    let text = schema.to_string();
    for name in schema["$defs"].as_object().unwrap().keys() {
        let r = format!("\"#/$defs/{name}\"");
        assert!(text.contains(&r), "$defs/{name} is never used");
    }
    fn walk(schema: &Value, node: &Value) {
        match node {
            Value::Object(map) => {
                if map.contains_key("$ref") {
                    resolve(schema, node);
                }
                map.values().for_each(|v| walk(schema, v));
            }
            Value::Array(items) => items.iter().for_each(|v| walk(schema, v)),
            _ => {}
        }
    }
    walk(&schema, &schema);
}

// --- the files in the repository ---------------------------------------------------------

#[test]
fn every_suite_file_validates_and_loads() {
    let files = files_in(&root().join("suites")).unwrap();
    assert!(!files.is_empty(), "no suites found");
    let schema = suite_schema();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let errors = schema_errors(&schema, &yaml_to_json(&text));
        assert!(errors.is_empty(), "{}: {errors:#?}", file.display());
        Suite::load(&file).unwrap_or_else(|e| panic!("{e}"));
    }
}

const SCHEMA_LINE: &str = "# yaml-language-server: $schema=./schema.json\n";

/// The complete suites in suites/README.md (the YAML blocks that start with the schema
/// line) validate and load too.
#[test]
fn the_readme_examples_validate_and_load() {
    let readme = std::fs::read_to_string(root().join("suites/README.md")).unwrap();
    let examples: Vec<&str> = readme
        .split("```yaml\n")
        .skip(1)
        .filter_map(|block| block.split("```").next())
        .filter(|block| block.starts_with(SCHEMA_LINE) && block.contains("\nsuite:"))
        .collect();
    assert!(examples.len() >= 2, "no example suites in suites/README.md");
    let schema = suite_schema();
    for text in examples {
        let errors = schema_errors(&schema, &yaml_to_json(text));
        assert!(errors.is_empty(), "{text}\n{errors:#?}");
        Suite::parse(text, Path::new("suites/README.md")).unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn every_backend_file_validates_and_loads() {
    let files = files_in(&root().join("fixtures/backends")).unwrap();
    assert!(!files.is_empty(), "no backend files found");
    let schema = backend_schema();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let errors = schema_errors(&schema, &yaml_to_json(&text));
        assert!(errors.is_empty(), "{}: {errors:#?}", file.display());
        Backend::load(&file).unwrap_or_else(|e| panic!("{e}"));
    }
}

// --- signers blocks ---------------------------------------------------------------------

#[rstest]
#[case::no_signers(json!({ "signers": [] }))]
#[case::on_and_software(json!({ "signers": [ { "name": "x", "on": "a", "software": true } ] }))]
#[case::neither_on_nor_software(json!({ "signers": [ { "name": "x" } ] }))]
#[case::software_false_alone(json!({ "signers": [ { "name": "x", "software": false } ] }))]
#[case::several_without_default(json!({
    "signers": [ { "name": "x", "on": "a" }, { "name": "y", "on": "b" } ]
}))]
#[case::software_not_a_bool(json!({ "signers": [ { "name": "x", "software": "maybe" } ] }))]
#[case::signers_not_a_list(json!({ "signers": { "name": "x", "on": "a" } }))]
fn invalid_signers_blocks_are_refused_by_both(#[case] block: Value) {
    let mut doc = minimal_suite();
    doc["signers"] = block.clone();
    refused_by_both(&doc);
    let mut doc = minimal_suite();
    doc["cases"][0]["signers"] = block;
    refused_by_both(&doc);
}

#[rstest]
#[case::on_and_software_false(
    json!({ "signers": [ { "name": "x", "on": "a", "software": false } ] })
)]
#[case::one_software_signer(json!({ "signers": [ { "name": "x", "software": true } ] }))]
#[case::roles(json!({
    "default_signer": "x", "one_off_signer": "y",
    "signers": [ { "name": "x", "on": "a" }, { "name": "y", "software": true } ]
}))]
fn valid_signers_blocks_are_accepted_by_both(#[case] block: Value) {
    let mut doc = minimal_suite();
    doc["signers"] = block;
    accepted_by_both(&doc);
}

#[test]
fn a_case_block_replaces_the_suite_block() {
    let mut doc = suite_with(vec![]);
    doc["cases"][0]["signers"] = json!({ "signers": [ { "name": "solo", "on": "a" } ] });
    let suite = accepted_by_both(&doc);
    let names: Vec<&str> = suite.cases[0].signers.as_ref().unwrap().signers[..]
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(names, ["solo"]);
    // `hsm` is the suite's signer, not the case's.
    doc["cases"][0]["steps"] = json!([ { "replace_identity_key": { "signer": "hsm" } } ]);
    assert!(schema_errors(&suite_schema(), &doc).is_empty());
    assert!(load_suite(&doc).is_err(), "loader accepts {doc}");
}

// --- ranges and lists -------------------------------------------------------------------

#[rstest]
#[case::random_min(json!({ "random": { "bytes": 1 } }), true)]
#[case::random_max(json!({ "random": { "bytes": 65536 } }), true)]
#[case::random_zero(json!({ "random": { "bytes": 0 } }), false)]
#[case::random_too_many(json!({ "random": { "bytes": 65537 } }), false)]
#[case::random_negative(json!({ "random": { "bytes": -1 } }), false)]
#[case::random_fraction(json!({ "random": { "bytes": 1.5 } }), false)]
#[case::sleep_zero(json!({ "sleep": { "seconds": 0 } }), true)]
#[case::sleep_fraction(json!({ "sleep": { "seconds": 0.25 } }), true)]
#[case::sleep_max(json!({ "sleep": { "seconds": 3600 } }), true)]
#[case::sleep_negative(json!({ "sleep": { "seconds": -1 } }), false)]
#[case::sleep_too_long(json!({ "sleep": { "seconds": 3600.5 } }), false)]
#[case::swap_two(json!({ "restart": { "swap": ["hsm", "backup"] } }), true)]
#[case::swap_one(json!({ "restart": { "swap": ["hsm"] } }), false)]
#[case::swap_three(json!({ "restart": { "swap": ["hsm", "backup", "openssl"] } }), false)]
#[case::new_signers_one(json!({ "restart": { "signers": [ { "name": "x", "on": "c" } ] } }), true)]
#[case::new_signers_none(json!({ "restart": { "signers": [] } }), false)]
#[case::new_signers_several_without_default(
    json!({ "restart": { "signers": [ { "name": "x", "on": "a" }, { "name": "y", "on": "b" } ] } }),
    false
)]
#[case::new_signers_several_with_default(
    json!({ "restart": {
        "signers": [ { "name": "x", "on": "a" }, { "name": "y", "software": true } ],
        "default_signer": "x", "one_off_signer": "y"
    } }),
    true
)]
#[case::new_signer_on_and_software(
    json!({ "restart": { "signers": [ { "name": "x", "on": "a", "software": true } ] } }),
    false
)]
fn ranges_and_lists_are_the_same_in_schema_and_loader(#[case] step: Value, #[case] ok: bool) {
    let doc = suite_with(vec![step]);
    if ok {
        accepted_by_both(&doc);
    } else {
        refused_by_both(&doc);
    }
}

#[test]
fn the_steps_of_a_case_are_not_empty_in_either() {
    let mut doc = minimal_suite();
    doc["cases"][0]["steps"] = json!([]);
    let e = refused_by_both(&doc);
    assert!(e.message.contains("has no steps"), "{e}");
}

// --- capabilities a case needs ----------------------------------------------------------

/// What suites/README.md says a case requires: the algorithms of `create_key`,
/// `sign_one_off` and `sign ... alg:` unless the step expects an error, and
/// `credentials` for `restart: { change_pin }`.
#[rstest]
#[case::create_key(json!({ "create_key": { "alg": "ed25519", "as": "e" } }), Some("ed25519"))]
#[case::create_key_expecting_an_error(
    json!({ "create_key": { "alg": "ed25519", "as": "e", "expect": { "error": "unsupported" } } }),
    None
)]
#[case::sign_one_off(json!({ "sign_one_off": { "alg": "ecdsa-p384" } }), Some("ecdsa-p384"))]
#[case::sign_one_off_expecting_an_error(
    json!({ "sign_one_off": { "alg": "ecdsa-p384", "expect": { "error": "unsupported" } } }),
    None
)]
#[case::sign_with_alg(json!({ "sign": { "key": "k", "alg": "rsa2048-pss" } }), Some("rsa2048-pss"))]
#[case::sign_with_alg_expecting_an_error(
    json!({ "sign": { "key": "k", "alg": "ed25519", "expect": { "error": "invalid-input" } } }),
    None
)]
#[case::sign_without_alg(json!({ "sign": { "key": "k" } }), None)]
#[case::change_pin(json!({ "restart": { "change_pin": ["a"] } }), Some("credentials"))]
#[case::other_restart(json!({ "restart": { "wipe": ["a"], "repoint": { "hsm": "b" } } }), None)]
#[case::kmip_query(json!({ "kmip_query": { "lacks": ["RNG Retrieve"] } }), Some("kmip"))]
#[case::random_from(json!({ "random": { "bytes": 8, "from": "fallback" } }), None)]
fn a_case_requires_what_the_readme_says(#[case] step: Value, #[case] needs: Option<&str>) {
    let suite = accepted_by_both(&suite_with(vec![step]));
    // The prefix's create_key rsa2048, sign_one_off ecdsa-p256 and trace.
    let mut expected = set(["rsa2048", "ecdsa-p256", "pkcs11-shim"]);
    expected.extend(needs.map(str::to_string));
    let got: BTreeSet<String> = suite.cases[0]
        .requires
        .iter()
        .map(|c| c.name().to_string())
        .collect();
    assert_eq!(got, expected);
}

// --- invalid suites, as people write them ----------------------------------------------------

#[rstest]
#[case::unknown_top_level_field("timeout: 3\n", "")]
#[case::signers_block_without_signers("signers: {}\n", "")]
#[case::unknown_case_field("", "    timeout: 3\n")]
#[case::unknown_step("", "      - creat_key: { alg: rsa2048, as: x }\n")]
#[case::unknown_step_field("", "      - random: { bytes: 4, colour: red }\n")]
#[case::unknown_algorithm("", "      - create_key: { alg: rsa1024, as: x }\n")]
#[case::algorithm_in_capitals("", "      - create_key: { alg: RSA2048, as: x }\n")]
#[case::unknown_capability("requires: [quantum]\n", "")]
#[case::unknown_error_kind("", "      - sign: { key: k, expect: { error: lost } }\n")]
#[case::error_expected_of_verify("", "      - verify: { signature: sig, expect: { error: io } }\n")]
#[case::verdict_expected_of_sign("", "      - sign: { key: k, expect: mismatch }\n")]
#[case::unknown_self_test("", "      - self_test: crash\n")]
#[case::create_key_without_name("", "      - create_key: { alg: rsa2048 }\n")]
#[case::random_without_bytes("", "      - random: {}\n")]
#[case::negative_random_length("", "      - random: { bytes: -1 }\n")]
#[case::no_random_bytes("", "      - random: { bytes: 0 }\n")]
#[case::sleep_with_expect("", "      - sleep: { seconds: 1, expect: { error: io } }\n")]
#[case::sleep_for_two_hours("", "      - sleep: { seconds: 7200 }\n")]
#[case::two_steps_in_one_item("", "      - random: { bytes: 4 }\n        sleep: { seconds: 1 }\n")]
#[case::step_without_body("", "      - random\n")]
#[case::empty_step("", "      - {}\n")]
#[case::tags_not_a_list("tags: baseline\n", "")]
#[case::sign_one_off_without_alg("", "      - sign_one_off: { as: s }\n")]
#[case::sign_one_off_with_key("", "      - sign_one_off: { alg: ed25519, key: k }\n")]
#[case::restart_without_body("", "      - restart\n")]
#[case::restart_with_expect("", "      - restart: { expect: { error: unusable } }\n")]
#[case::restart_rename_as_list("", "      - restart: { rename: [a, b] }\n")]
#[case::restart_swap_of_one("", "      - restart: { swap: [x] }\n")]
#[case::restart_wipe_not_a_list("", "      - restart: { wipe: a }\n")]
#[case::inventory_without_of("", "      - inventory: { has: [k] }\n")]
#[case::inventory_has_not_a_list("", "      - inventory: { of: a, has: k }\n")]
#[case::keymap_owner_as_list("", "      - keymap: { owner: [k] }\n")]
#[case::keymap_with_of("", "      - keymap: { of: a, has: [k] }\n")]
#[case::replace_identity_key_without_signer("", "      - replace_identity_key: {}\n")]
#[case::replace_identity_key_bare_name("", "      - replace_identity_key: x\n")]
#[case::signer_with_on_and_software(
    "signers:\n  signers:\n    - { name: x, on: a, software: true }\n",
    ""
)]
#[case::signer_without_backend("signers:\n  signers:\n    - { name: x }\n", "")]
#[case::several_signers_without_default(
    "signers:\n  signers:\n    - { name: x, on: a }\n    - { name: y, on: b }\n",
    ""
)]
#[case::signers_as_a_list("signers:\n  - { name: x, on: a }\n", "")]
#[case::signer_unknown_field("signers:\n  signers:\n    - { name: x, on: a, pin: '1234' }\n", "")]
fn invalid_suites_are_refused_by_schema_and_loader(#[case] top: &str, #[case] tail: &str) {
    let text = format!(
        "suite: t\nabout: x\n{top}cases:\n  - name: c\n    steps:\n      \
         - create_key: {{ alg: rsa2048, as: k }}\n      - sign: {{ key: k, as: sig }}\n{tail}"
    );
    let json = yaml_to_json(&text);
    assert!(
        !schema_errors(&suite_schema(), &json).is_empty(),
        "schema accepts:\n{text}"
    );
    let e = Suite::parse(&text, Path::new("suites/t.yaml"))
        .err()
        .unwrap_or_else(|| panic!("loader accepts:\n{text}"));
    assert!(e.line > 0, "no place in: {e}");
}

#[test]
fn a_suite_without_cases_is_refused_by_both() {
    let mut doc = minimal_suite();
    doc["cases"] = json!([]);
    refused_by_both(&doc);
}

/// The signers block the loader-only cases below use (as YAML, at suite level).
const SIGNERS_YAML: &str = "signers:\n  default_signer: hsm\n  signers:\n    \
     - { name: hsm, on: a }\n    - { name: backup, on: b }\n";

/// What only the loader can check (the README says so): names bound by earlier steps,
/// names bound twice, signer names and roles, unique case and signer names. The schema
/// accepts all of these; the loader refuses them, with a message containing `needle`.
#[rstest]
#[case::undefined_key(
    "",
    "      - sign: { key: nope }\n",
    "no earlier step made a key named 'nope'"
)]
#[case::undefined_signature("", "      - verify: { signature: nope }\n", "signature named 'nope'")]
#[case::undefined_verify_key(
    "",
    "      - verify: { signature: sig, key: nope }\n",
    "key named 'nope'"
)]
#[case::key_used_before_created(
    "",
    "      - public_key: { key: later }\n      - create_key: { alg: ed25519, as: later }\n",
    "key named 'later'"
)]
#[case::duplicate_case_name(
    "",
    "  - name: c\n    steps: [ { random: { bytes: 1 } } ]\n",
    "duplicate case name 'c'"
)]
#[case::key_bound_twice(
    "",
    "      - create_key: { alg: ed25519, as: k }\n",
    "key name 'k' is already bound"
)]
#[case::signature_bound_twice(
    "",
    "      - sign: { key: k, as: sig }\n",
    "signature name 'sig' is already bound"
)]
#[case::one_off_signature_bound_twice(
    "",
    "      - sign_one_off: { alg: ed25519, as: sig }\n",
    "signature name 'sig' is already bound"
)]
#[case::inventory_bound_twice(
    "",
    "      - inventory: { of: a, as: i }\n      - inventory: { of: b, as: i }\n",
    "inventory name 'i' is already bound"
)]
#[case::key_of_a_failed_create_key(
    "",
    "      - create_key: { alg: ed25519, as: e, expect: { error: unsupported } }\n      \
     - sign: { key: e }\n",
    "key named 'e'"
)]
#[case::signature_of_a_failed_sign(
    "",
    "      - sign: { key: k, as: s, expect: { error: not-found } }\n      \
     - verify: { signature: s }\n",
    "signature named 's'"
)]
#[case::signature_of_a_failed_sign_one_off(
    "",
    "      - sign_one_off: { alg: ed25519, as: s, expect: { error: unsupported } }\n      \
     - verify: { signature: s }\n",
    "signature named 's'"
)]
#[case::inventory_of_a_plain_signature(
    "",
    "      - inventory: { of: a, has: [sig] }\n",
    "no earlier step made a key or one-off signature named 'sig'"
)]
#[case::keymap_of_a_one_off_signature(
    "",
    "      - sign_one_off: { alg: ed25519, as: one }\n      - keymap: { has: [one] }\n",
    "key named 'one'"
)]
#[case::keymap_owner_of_an_unknown_key(
    "",
    "      - keymap: { owner: { nope: x } }\n",
    "key named 'nope'"
)]
#[case::same_as_unknown(
    "",
    "      - inventory: { of: a, same_as: nope }\n",
    "inventory named 'nope'"
)]
#[case::same_as_itself(
    "",
    "      - inventory: { of: a, as: i, same_as: i }\n",
    "inventory named 'i'"
)]
#[case::duplicate_signer_name(
    "signers:\n  default_signer: x\n  signers:\n    \
     - { name: x, on: a }\n    - { name: x, on: b }\n",
    "",
    "duplicate signer name 'x'"
)]
#[case::default_signer_not_a_signer(
    "signers:\n  default_signer: other\n  signers:\n    - { name: x, on: a }\n",
    "",
    "default_signer 'other' is not one of the signers"
)]
#[case::one_off_signer_not_a_signer(
    "signers:\n  one_off_signer: other\n  signers:\n    - { name: x, on: a }\n",
    "",
    "one_off_signer 'other' is not one of the signers"
)]
#[case::restart_rename_unknown(
    SIGNERS_YAML,
    "      - restart: { rename: { nope: x } }\n",
    "no signer named 'nope'"
)]
#[case::restart_repoint_unknown(
    SIGNERS_YAML,
    "      - restart: { repoint: { nope: b } }\n",
    "no signer named 'nope'"
)]
#[case::restart_swap_unknown(
    SIGNERS_YAML,
    "      - restart: { swap: [hsm, nope] }\n",
    "no signer named 'nope'"
)]
#[case::restart_default_signer_unknown(
    SIGNERS_YAML,
    "      - restart: { default_signer: nope }\n",
    "no signer named 'nope'"
)]
#[case::restart_default_signer_by_old_name(
    SIGNERS_YAML,
    "      - restart: { rename: { hsm: primary }, default_signer: hsm }\n",
    "no signer named 'hsm'"
)]
#[case::old_name_after_rename(
    SIGNERS_YAML,
    "      - restart: { rename: { hsm: primary }, default_signer: primary }\n      \
     - replace_identity_key: { signer: hsm }\n",
    "no signer named 'hsm'"
)]
#[case::keymap_owner_unknown(
    SIGNERS_YAML,
    "      - keymap: { owner: { k: nope } }\n",
    "no signer named 'nope'"
)]
#[case::restart_signers_duplicate_name(
    "",
    "      - restart: { signers: [ { name: x, on: a }, { name: x, on: b } ], default_signer: x }\n",
    "duplicate signer name 'x'"
)]
#[case::restart_signers_default_not_in_list(
    "",
    "      - restart: { signers: [ { name: x, on: a } ], default_signer: other }\n",
    "default_signer 'other' is not one of the signers"
)]
#[case::old_signer_after_new_list(
    SIGNERS_YAML,
    "      - restart: { signers: [ { name: fresh, on: c } ] }\n      \
     - keymap: { owner: { k: hsm } }\n",
    "no signer named 'hsm'"
)]
#[case::new_list_without_a_block(
    "",
    "      - restart: { signers: [ { name: fresh, on: c } ] }\n      \
     - replace_identity_key: { signer: softhsm }\n",
    "no signer named 'softhsm'"
)]
#[case::replace_identity_key_unknown(
    SIGNERS_YAML,
    "      - replace_identity_key: { signer: nope }\n",
    "no signer named 'nope'"
)]
fn only_the_loader_checks_names(#[case] top: &str, #[case] tail: &str, #[case] needle: &str) {
    let text = format!(
        "suite: t\nabout: x\n{top}cases:\n  - name: c\n    steps:\n      \
         - create_key: {{ alg: rsa2048, as: k }}\n      - sign: {{ key: k, as: sig }}\n{tail}"
    );
    let errors = schema_errors(&suite_schema(), &yaml_to_json(&text));
    assert!(errors.is_empty(), "{errors:#?}");
    let e = Suite::parse(&text, Path::new("suites/t.yaml"))
        .err()
        .unwrap_or_else(|| panic!("loader accepts:\n{text}"));
    assert!(e.message.contains(needle), "{e}");
    assert!(e.line > 0, "no place in: {e}");
}

/// Names that both accept: a name of a step that failed as expected may be bound
/// later; renames are followed; without a signers block signer names are not checked.
#[rstest]
#[case::rebind_after_an_expected_error(
    "",
    "      - create_key: { alg: ed25519, as: e, expect: { error: unsupported } }\n      \
     - create_key: { alg: ed25519, as: e }\n"
)]
#[case::same_name_for_key_and_signature("", "      - sign: { key: k, as: k }\n")]
#[case::destroyed_key_stays_bound(
    "",
    "      - destroy_key: { key: k }\n      - inventory: { of: a, lacks: [k] }\n      \
     - keymap: { lacks: [k] }\n"
)]
#[case::one_off_signature_in_inventory(
    "",
    "      - sign_one_off: { alg: ed25519, as: one }\n      - verify: { signature: one }\n      \
     - inventory: { of: software, lacks: [one] }\n"
)]
#[case::same_as_an_earlier_inventory(
    "",
    "      - inventory: { of: a, as: i }\n      - restart: {}\n      \
     - inventory: { of: a, same_as: i }\n"
)]
#[case::new_name_after_rename(
    SIGNERS_YAML,
    "      - restart: { rename: { hsm: primary }, default_signer: primary }\n      \
     - keymap: { owner: { k: primary } }\n      - replace_identity_key: { signer: primary }\n"
)]
#[case::rename_back(
    SIGNERS_YAML,
    "      - restart: { rename: { hsm: primary }, default_signer: primary }\n      \
     - restart: { rename: { primary: hsm }, default_signer: hsm }\n"
)]
#[case::any_name_without_a_block(
    "",
    "      - restart: { rename: { a: b }, repoint: { c: d }, swap: [e, f], \
     default_signer: g }\n      \
     - keymap: { owner: { k: h } }\n      - replace_identity_key: { signer: i }\n"
)]
#[case::restart_with_nothing("", "      - restart: {}\n")]
#[case::names_of_a_new_signer_list(
    SIGNERS_YAML,
    "      - restart: { signers: [ { name: fresh, on: c }, { name: soft, software: true } ], \
     default_signer: fresh }\n      - keymap: { owner: { k: fresh } }\n      \
     - restart: { swap: [fresh, soft], rename: { soft: openssl }, one_off_signer: openssl }\n"
)]
fn names_both_accept(#[case] top: &str, #[case] tail: &str) {
    let text = format!(
        "suite: t\nabout: x\n{top}cases:\n  - name: c\n    steps:\n      \
         - create_key: {{ alg: rsa2048, as: k }}\n      - sign: {{ key: k, as: sig }}\n{tail}"
    );
    let errors = schema_errors(&suite_schema(), &yaml_to_json(&text));
    assert!(errors.is_empty(), "schema refuses:\n{text}\n{errors:#?}");
    Suite::parse(&text, Path::new("suites/t.yaml")).unwrap_or_else(|e| panic!("{e}"));
}

/// Where the schema is stricter than the loader, as suites/README.md lists: text
/// quoted, booleans `true`/`false`, instance names, `swap` of two different signers,
/// non-empty signer names.
#[rstest]
#[case::unquoted_number_as_data(json!({ "sign": { "key": "k", "data": 42 } }))]
#[case::swap_nothing(json!({ "restart": { "swap": [] } }))]
fn the_schema_is_stricter_than_the_loader_here(#[case] step: Value) {
    let doc = suite_with(vec![step]);
    assert!(
        !schema_errors(&suite_schema(), &doc).is_empty(),
        "schema accepts {doc}"
    );
    load_suite(&doc).unwrap_or_else(|e| panic!("loader refuses {doc}: {e}"));
}

/// Instance names become token labels and variable names: both refuse bad ones.
#[rstest]
#[case::instance_in_capitals(json!({ "inventory": { "of": "A" } }))]
#[case::instance_with_underscore(json!({ "restart": { "wipe": ["a_b"] } }))]
#[case::instance_with_slash(json!({ "restart": { "repoint": { "hsm": "../x" } } }))]
#[case::instance_too_long(json!({ "restart": { "change_pin": ["fourteen-chars"] } }))]
#[case::instance_named_software(json!({ "restart": { "wipe": ["software"] } }))]
#[case::swap_with_itself(json!({ "restart": { "swap": ["hsm", "hsm"] } }))]
fn bad_instance_names_and_swaps_are_refused_by_both(#[case] step: Value) {
    let doc = suite_with(vec![step]);
    assert!(
        !schema_errors(&suite_schema(), &doc).is_empty(),
        "schema accepts {doc}"
    );
    assert!(load_suite(&doc).is_err(), "loader accepts {doc}");
}

#[test]
fn a_signer_on_instance_software_is_refused_by_both() {
    let mut doc = minimal_suite();
    doc["signers"] = json!({ "signers": [ { "name": "x", "on": "software" } ] });
    assert!(!schema_errors(&suite_schema(), &doc).is_empty());
    assert!(load_suite(&doc).is_err());
}

#[rstest]
#[case::empty_signer_name(json!({ "signers": [ { "name": "", "on": "a" } ] }))]
#[case::software_yes(json!({ "signers": [ { "name": "x", "software": "yes" } ] }))]
fn the_schema_is_stricter_than_the_loader_in_signers_blocks(#[case] block: Value) {
    let mut doc = minimal_suite();
    doc["signers"] = block;
    assert!(
        !schema_errors(&suite_schema(), &doc).is_empty(),
        "schema accepts {doc}"
    );
    load_suite(&doc).unwrap_or_else(|e| panic!("loader refuses {doc}: {e}"));
}

#[test]
fn thirteen_characters_is_the_longest_instance_name() {
    // The SoftHSMv2 token label "hsm-harness-NAME-XXXXXX" has at most 32 bytes.
    assert_eq!("hsm-harness-".len() + 13 + "-".len() + 6, 32);
    let doc = suite_with(vec![json!({ "inventory": { "of": "thirteen-char" } })]);
    accepted_by_both(&doc);
    let doc = suite_with(vec![json!({ "inventory": { "of": "software" } })]);
    accepted_by_both(&doc);
}

// --- backend files -----------------------------------------------------------------------------

#[rstest]
#[case::software(json!("software"))]
#[case::pykmip(json!("pykmip"))]
#[case::cosmian(json!("cosmian"))]
#[case::softhsm_default_module(json!({ "softhsm": {} }))]
#[case::softhsm_with_module(json!({ "softhsm": { "module": "/usr/lib/softhsm/libsofthsm2.so" } }))]
#[case::softhsm_through_the_shim(json!({ "softhsm": { "shim": {} } }))]
#[case::relay_through_the_shim(
    json!({ "relay": { "shim": { "rules": [ { "function": "C_Sign", "action": "delay", "millis": 5 } ] } } })
)]
fn backend_providers_are_accepted_by_both(#[case] provider: Value) {
    let doc =
        json!({ "backend": "b", "about": "x", "provider": provider, "capabilities": ["rsa2048"] });
    let errors = schema_errors(&backend_schema(), &doc);
    assert!(errors.is_empty(), "{errors:#?}");
    load_backend(&doc).unwrap_or_else(|e| panic!("{e}"));
}

#[rstest]
#[case::unknown_provider(json!({ "provider": "cloud" }))]
#[case::unknown_provider_field(json!({ "provider": { "softhsm": { "modul": "/x.so" } } }))]
#[case::unknown_capability(json!({ "capabilities": ["quantum"] }))]
#[case::unknown_field(json!({ "pin": "1234" }))]
#[case::missing_provider(json!({ "provider": null }))]
fn invalid_backends_are_refused_by_both(#[case] change: Value) {
    let mut doc =
        json!({ "backend": "b", "about": "x", "provider": "software", "capabilities": [] });
    for (k, v) in change.as_object().unwrap() {
        if v.is_null() {
            doc.as_object_mut().unwrap().remove(k);
        } else {
            doc[k] = v.clone();
        }
    }
    assert!(
        !schema_errors(&backend_schema(), &doc).is_empty(),
        "schema accepts {doc}"
    );
    assert!(load_backend(&doc).is_err(), "loader accepts {doc}");
}

// --- the PKCS#11 shim, traces, KMIP Query, lacks ------------------------------------------

#[test]
fn both_schemas_describe_the_shim_alike() {
    let (suite, backend) = (suite_schema(), backend_schema());
    for name in ["shim", "shimRule", "pkcs11Function"] {
        assert_eq!(def(&suite, name), def(&backend, name), "$defs/{name}");
    }
}

/// A `shim:` block, at suite and at case level: both accept or both refuse. The
/// shim's own checks (p11shim::config) run in the loader.
#[rstest]
#[case::nothing(json!({}), true)]
#[case::the_example(json!({ "rules": [ { "function": "C_GenerateRandom", "action": "unsupported" } ] }), true)]
#[case::every_action(json!({ "hide_mechanisms": ["CKM_ECDSA", "0x1041"], "rules": [
    { "function": "C_Sign", "action": "return", "rv": "CKR_DEVICE_ERROR", "on_call": 2 },
    { "function": "C_Sign", "action": "return", "rv": "0x30", "from_call": 5 },
    { "function": "C_Login", "action": "delay", "millis": 10 },
    { "function": "C_Logout", "action": "abort" }
] }), true)]
#[case::pretend_a_destroy(json!({ "rules": [ { "function": "C_DestroyObject", "action": "pretend" } ] }), true)]
#[case::pretend_a_sign(json!({ "rules": [ { "function": "C_Sign", "action": "pretend" } ] }), false)]
#[case::unknown_function(json!({ "rules": [ { "function": "C_Nope", "action": "abort" } ] }), false)]
#[case::unknown_action(json!({ "rules": [ { "function": "C_Sign", "action": "explode" } ] }), false)]
#[case::return_without_rv(json!({ "rules": [ { "function": "C_Sign", "action": "return" } ] }), false)]
#[case::return_ok(json!({ "rules": [ { "function": "C_Sign", "action": "return", "rv": "CKR_OK" } ] }), false)]
#[case::rv_on_unsupported(json!({ "rules": [ { "function": "C_Sign", "action": "unsupported", "rv": "CKR_DEVICE_ERROR" } ] }), false)]
#[case::delay_without_millis(json!({ "rules": [ { "function": "C_Sign", "action": "delay" } ] }), false)]
#[case::millis_on_abort(json!({ "rules": [ { "function": "C_Sign", "action": "abort", "millis": 1 } ] }), false)]
#[case::on_and_from_call(json!({ "rules": [ { "function": "C_Sign", "action": "abort", "on_call": 1, "from_call": 2 } ] }), false)]
#[case::call_zero(json!({ "rules": [ { "function": "C_Sign", "action": "abort", "on_call": 0 } ] }), false)]
#[case::unknown_rule_field(json!({ "rules": [ { "function": "C_Sign", "action": "abort", "colour": "red" } ] }), false)]
#[case::unknown_field(json!({ "module": "/x.so" }), false)]
#[case::mechanism_not_a_name(json!({ "hide_mechanisms": ["ECDSA"] }), false)]
fn shim_blocks_are_judged_alike(#[case] block: Value, #[case] ok: bool) {
    for at_case in [false, true] {
        let mut doc = minimal_suite();
        if at_case {
            doc["cases"][0]["shim"] = block.clone();
        } else {
            doc["shim"] = block.clone();
        }
        if ok {
            let suite = accepted_by_both(&doc);
            let case = &suite.cases[0];
            assert!(case.shim.is_some());
            assert!(case.requires.iter().any(|c| c.name() == "pkcs11-shim"));
        } else {
            refused_by_both(&doc);
        }
        let backend = json!({ "backend": "b", "about": "x", "provider": { "softhsm": { "shim": block } }, "capabilities": [] });
        assert_eq!(
            schema_errors(&backend_schema(), &backend).is_empty(),
            ok,
            "{backend}"
        );
        assert_eq!(load_backend(&backend).is_ok(), ok, "{backend}");
    }
}

#[test]
fn the_loader_knows_mechanism_names_the_schema_only_shapes() {
    let mut doc = minimal_suite();
    doc["shim"] = json!({ "hide_mechanisms": ["CKM_NO_SUCH_THING"] });
    assert!(schema_errors(&suite_schema(), &doc).is_empty());
    let e = load_suite(&doc).unwrap_err();
    assert!(e.message.contains("CKM_NO_SUCH_THING"), "{e}");
}

#[test]
fn a_case_with_only_trace_steps_runs_through_a_transparent_shim() {
    let suite = accepted_by_both(&suite_with(vec![]));
    let shim = suite.cases[0].shim.as_ref().expect("a shim");
    assert!(shim.is_transparent());
    let suite = accepted_by_both(&minimal_suite());
    assert!(suite.cases[0].shim.is_none());
}

#[rstest]
#[case::trace_of_nothing(json!({ "trace": {} }))]
#[case::trace_since_only(json!({ "trace": { "since": "m0" } }))]
#[case::trace_unknown_function(json!({ "trace": { "called": ["C_Nope"] } }))]
#[case::trace_negative_count(json!({ "trace": { "count": { "C_Sign": -1 } } }))]
#[case::trace_count_of_unknown(json!({ "trace": { "count": { "Sign": 1 } } }))]
#[case::kmip_query_of_nothing(json!({ "kmip_query": {} }))]
#[case::kmip_query_unknown_operation(json!({ "kmip_query": { "has": ["Teleport"] } }))]
#[case::random_from_elsewhere(json!({ "random": { "bytes": 1, "from": "hsm" } }))]
fn bad_trace_query_and_random_steps_are_refused_by_both(#[case] step: Value) {
    refused_by_both(&suite_with(vec![step]));
}

#[rstest]
#[case::since_an_unknown_mark(json!({ "trace": { "since": "nope", "called": ["C_Sign"] } }), "trace mark named 'nope'")]
#[case::mark_bound_twice(json!({ "trace": { "mark": "m0" } }), "trace mark 'm0' is already bound")]
#[case::called_and_not_called(
    json!({ "trace": { "called": ["C_Sign"], "not_called": ["C_Sign"] } }),
    "both called and not_called"
)]
#[case::has_and_lacks(json!({ "kmip_query": { "has": ["Sign"], "lacks": ["Sign"] } }), "both in has and in lacks")]
fn only_the_loader_checks_marks_and_contradictions(#[case] step: Value, #[case] needle: &str) {
    let doc = suite_with(vec![step]);
    assert!(schema_errors(&suite_schema(), &doc).is_empty());
    let e = load_suite(&doc).unwrap_err();
    assert!(e.message.contains(needle), "{e}");
}

#[test]
fn lacks_is_kept_and_may_not_contradict_requires() {
    let mut doc = minimal_suite();
    doc["lacks"] = json!(["random"]);
    doc["cases"][0]["lacks"] = json!(["ed25519"]);
    let suite = accepted_by_both(&doc);
    let lacks: BTreeSet<String> = suite.cases[0]
        .lacks
        .iter()
        .map(|c| c.name().to_string())
        .collect();
    assert_eq!(lacks, set(["random", "ed25519"]));
    doc["cases"][0]["requires"] = json!(["random"]);
    assert!(schema_errors(&suite_schema(), &doc).is_empty());
    let e = load_suite(&doc).unwrap_err();
    assert!(e.message.contains("both requires and lacks"), "{e}");
}

// --- pkcs11: signer options and withheld KMIP operations ---------------------------------

fn requires_of(suite: &hsm_harness::model::suite::Suite) -> BTreeSet<String> {
    suite.cases[0]
        .requires
        .iter()
        .map(|c| c.name().to_string())
        .collect()
}

#[test]
fn pkcs11_signer_options_are_the_same_in_schema_and_loader_and_require_pkcs11() {
    let mut doc = minimal_suite();
    doc["signers"] =
        json!({ "signers": [ { "name": "hsm", "on": "a", "pkcs11": { "force": true } } ] });
    let suite = accepted_by_both(&doc);
    assert!(requires_of(&suite).contains("pkcs11"));
    assert!(!requires_of(&suite).contains("kmip"));
    doc["signers"]["signers"][0]["pkcs11"] = json!({ "force": true, "pin": "1" });
    refused_by_both(&doc);
    doc["signers"]["signers"][0]["pkcs11"] = json!({ "force": 3 });
    refused_by_both(&doc);
    // In a restart's new list too.
    let mut doc = minimal_suite();
    doc["cases"][0]["steps"] = json!([
        { "restart": { "signers": [ { "name": "hsm", "on": "a", "pkcs11": { "force": false } } ] } }
    ]);
    assert!(requires_of(&accepted_by_both(&doc)).contains("pkcs11"));
}

#[test]
fn withheld_operations_are_kmip_names_in_schema_and_loader_and_require_kmip_withhold() {
    let mut doc = minimal_suite();
    doc["instances"] = json!({ "a": { "withhold": ["Modify Attribute", "Revoke"] } });
    let suite = accepted_by_both(&doc);
    let requires = requires_of(&suite);
    assert!(
        requires.contains("kmip-withhold") && requires.contains("kmip"),
        "{requires:?}"
    );
    assert_eq!(
        suite.cases[0].instances["a"].withhold,
        ["Modify Attribute", "Revoke"]
    );
    doc["instances"] = json!({ "a": { "withhold": ["Teleport"] } });
    let e = refused_by_both(&doc);
    assert!(
        e.message.contains("unknown KMIP operation 'Teleport'"),
        "{e}"
    );
    doc["instances"] = json!({ "a": { "withhold": ["revoke"] } });
    refused_by_both(&doc);
}
