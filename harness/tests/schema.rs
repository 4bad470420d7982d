//! `suites/schema.json` and `fixtures/backend.schema.json` agree with the loaders.
//!
//! The Rust model (`harness/src/suite.rs`, `harness/src/backend.rs`) is the authority.
//! These tests check that every suite and backend file in the repository validates, and
//! that the schemas and the loaders accept and refuse the same things: the same step
//! keywords, the same fields (required and optional) in every object, the same enum
//! values. The loader's own lists come from its error messages ("unknown field `x`,
//! expected one of ..."), so they are what serde really accepts, not a copy.
//!
//! Documents are built as JSON and handed to the loader as text: JSON is YAML, so both
//! sides read exactly the same document.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use hsm_harness::backend::Backend;
use hsm_harness::suite::{files_in, Suite, SuiteError};
use hsm_signers::{Algorithm, ErrorKind};
use rstest::rstest;
use serde_json::{json, Value};

/// The step keywords, as written in YAML. Cross-checked below against the schema, the
/// loader's list of variants, and `Step::keyword()` of each parsed step.
const KEYWORDS: [&str; 8] = [
    "create_key",
    "sign",
    "verify",
    "public_key",
    "destroy_key",
    "random",
    "sleep",
    "self_test",
];

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

fn properties(node: &Value) -> BTreeSet<String> {
    node["properties"]
        .as_object()
        .expect("properties")
        .keys()
        .cloned()
        .collect()
}

fn required(node: &Value) -> BTreeSet<String> {
    node.get("required").map(strings).unwrap_or_default()
}

/// A value for a property: its first example, or the first of its enum, following `$ref`.
fn example(schema: &Value, node: &Value) -> Value {
    if let Some(v) = node.get("examples").and_then(|e| e.get(0)) {
        return v.clone();
    }
    if let Some(v) = node.get("enum").and_then(|e| e.get(0)) {
        return v.clone();
    }
    let target = resolve(schema, node);
    assert!(!std::ptr::eq(target, node), "no example for {node}");
    example(schema, target)
}

/// The schema's steps: keyword and the schema of the step's body.
fn schema_steps(schema: &Value) -> Vec<(String, Value)> {
    def(schema, "step")["oneOf"]
        .as_array()
        .expect("step is a oneOf")
        .iter()
        .map(|alt| {
            let alt = resolve(schema, alt);
            let req = strings(&alt["required"]);
            assert_eq!(
                req.len(),
                1,
                "a step alternative requires exactly its keyword: {alt}"
            );
            assert_eq!(alt["additionalProperties"], json!(false), "{alt}");
            let kw = req.into_iter().next().unwrap();
            assert_eq!(properties(alt), set([kw.as_str()]), "{alt}");
            let body = alt["properties"][&kw].clone();
            (kw, body)
        })
        .collect()
}

fn body_schema(schema: &Value, keyword: &str) -> Value {
    schema_steps(schema)
        .into_iter()
        .find(|(k, _)| k == keyword)
        .unwrap_or_else(|| panic!("the schema has no step '{keyword}'"))
        .1
}

/// A suite of one case whose steps first bind key `k` and signature `sig` (the names
/// the schema's examples use), then run `steps`.
fn suite_with(steps: Vec<Value>) -> Value {
    let mut all = vec![
        json!({ "create_key": { "alg": "rsa2048", "as": "k" } }),
        json!({ "sign": { "key": "k", "as": "sig" } }),
    ];
    all.extend(steps);
    json!({ "suite": "t", "about": "x", "cases": [ { "name": "c", "steps": all } ] })
}

fn minimal_suite() -> Value {
    json!({ "suite": "t", "about": "x", "cases": [ { "name": "c", "steps": [] } ] })
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

#[test]
fn every_ref_resolves_and_every_def_is_used() {
    let schema = suite_schema();
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

// --- steps ----------------------------------------------------------------------------------

#[test]
fn step_keywords_are_the_same_in_schema_loader_and_model() {
    let schema = suite_schema();
    let in_schema: BTreeSet<String> = schema_steps(&schema).into_iter().map(|(k, _)| k).collect();
    assert_eq!(in_schema, set(KEYWORDS), "schema vs KEYWORDS");

    let e = refused_by_both(&suite_with(vec![json!({ "no_such_step": {} })]));
    assert_eq!(
        allowed_in(&e.message),
        set(KEYWORDS),
        "loader vs KEYWORDS: {e}"
    );
}

/// For each step: the minimal step (required fields only) and the full step (every
/// field) are accepted by both and parse to that step; dropping any required field or
/// adding an unknown one is refused by both; the loader's field list is the schema's.
#[test]
fn each_step_has_the_same_fields_in_schema_and_loader() {
    for keyword in KEYWORDS {
        check_step_fields(keyword);
    }
}

fn check_step_fields(keyword: &str) {
    let schema = suite_schema();
    let body = body_schema(&schema, keyword);
    let last_keyword = |s: &Suite| s.cases[0].steps.last().unwrap().value.keyword();

    if let Some(values) = body.get("enum") {
        // A step whose body is a bare value (`- self_test: abort`).
        for v in values.as_array().unwrap() {
            let s = accepted_by_both(&suite_with(vec![json!({ keyword: v })]));
            assert_eq!(last_keyword(&s), keyword);
        }
        let e = refused_by_both(&suite_with(vec![json!({ keyword: "no-such-value" })]));
        assert_eq!(allowed_in(&e.message), strings(values), "{e}");
        refused_by_both(&suite_with(vec![json!({ keyword: {} })]));
        return;
    }

    assert_eq!(body["type"], json!("object"), "{keyword}");
    assert_eq!(body["additionalProperties"], json!(false), "{keyword}");
    let props = properties(&body);
    let req = required(&body);
    assert!(
        req.is_subset(&props),
        "{keyword}: required fields not in properties"
    );

    let make = |fields: &BTreeSet<String>| -> Value {
        let map: serde_json::Map<String, Value> = fields
            .iter()
            .map(|f| (f.clone(), example(&schema, &body["properties"][f])))
            .collect();
        json!({ keyword: map })
    };

    let minimal = accepted_by_both(&suite_with(vec![make(&req)]));
    assert_eq!(last_keyword(&minimal), keyword);
    let full = accepted_by_both(&suite_with(vec![make(&props)]));
    assert_eq!(last_keyword(&full), keyword);

    for field in &req {
        let mut fewer = req.clone();
        fewer.remove(field);
        let e = refused_by_both(&suite_with(vec![make(&fewer)]));
        assert!(
            e.message.contains(&format!("missing field `{field}`")),
            "{keyword} without {field}: {e}"
        );
    }

    let mut step = make(&props);
    step[keyword]["colour"] = json!("red");
    let e = refused_by_both(&suite_with(vec![step]));
    assert!(e.message.contains("unknown field `colour`"), "{e}");
    assert_eq!(
        allowed_in(&e.message),
        props,
        "{keyword}: loader vs schema fields"
    );
}

#[test]
fn step_keyword_names_match_the_model() {
    // `Step::keyword()` is what the runner prints; it must be the YAML keyword.
    let schema = suite_schema();
    let steps: Vec<Value> = KEYWORDS
        .iter()
        .map(|kw| {
            let body = body_schema(&schema, kw);
            if let Some(values) = body.get("enum") {
                return json!({ *kw: values[0] });
            }
            let map: serde_json::Map<String, Value> = required(&body)
                .iter()
                .map(|f| (f.clone(), example(&schema, &body["properties"][f])))
                .collect();
            json!({ *kw: map })
        })
        .collect();
    let suite = accepted_by_both(&suite_with(steps));
    let parsed: Vec<&str> = suite.cases[0].steps[2..]
        .iter()
        .map(|s| s.value.keyword())
        .collect();
    assert_eq!(parsed, KEYWORDS);
}

// --- enums and plain objects -------------------------------------------------------------

#[test]
fn algorithms_are_the_same_in_schema_loader_and_signers() {
    let schema = suite_schema();
    let in_schema = strings(&def(&schema, "algorithm")["enum"]);
    let in_signers: BTreeSet<String> = Algorithm::ALL
        .iter()
        .map(|a| a.name().to_string())
        .collect();
    assert_eq!(in_schema, in_signers);
    let e = refused_by_both(&suite_with(vec![
        json!({ "create_key": { "alg": "rsa1024", "as": "x" } }),
    ]));
    assert_eq!(allowed_in(&e.message), in_schema, "{e}");
    let e = refused_by_both(&suite_with(vec![
        json!({ "sign": { "key": "k", "alg": "rsa1024" } }),
    ]));
    assert_eq!(allowed_in(&e.message), in_schema, "{e}");
}

#[test]
fn error_kinds_are_the_same_in_schema_loader_and_signers() {
    let schema = suite_schema();
    let in_schema = strings(&def(&schema, "errorKind")["enum"]);
    let in_signers: BTreeSet<String> = ErrorKind::ALL
        .iter()
        .map(|k| k.name().to_string())
        .collect();
    assert_eq!(in_schema, in_signers);
    let e = refused_by_both(&suite_with(vec![
        json!({ "destroy_key": { "key": "k", "expect": { "error": "lost" } } }),
    ]));
    assert_eq!(allowed_in(&e.message), in_schema, "{e}");
    for kind in &in_schema {
        accepted_by_both(&suite_with(vec![
            json!({ "public_key": { "key": "k", "expect": { "error": kind } } }),
        ]));
    }
}

#[test]
fn capabilities_are_the_same_in_both_schemas_and_the_loader() {
    let schema = suite_schema();
    let in_schema = strings(&def(&schema, "capability")["enum"]);
    let mut doc = minimal_suite();
    doc["requires"] = json!(["quantum"]);
    let e = refused_by_both(&doc);
    assert_eq!(allowed_in(&e.message), in_schema, "{e}");
    let mut doc = minimal_suite();
    doc["cases"][0]["requires"] = json!(["quantum"]);
    refused_by_both(&doc);
    let mut doc = minimal_suite();
    doc["requires"] = Value::Array(in_schema.iter().map(|c| json!(c)).collect());
    accepted_by_both(&doc);

    let backend = backend_schema();
    assert_eq!(
        strings(&backend["properties"]["capabilities"]["items"]["enum"]),
        in_schema
    );
}

#[test]
fn verdicts_are_the_same_in_schema_and_loader() {
    let schema = suite_schema();
    let in_schema = strings(&def(&schema, "verdict")["enum"]);
    assert_eq!(in_schema, set(["valid", "mismatch", "bad-encoding"]));
    let e = refused_by_both(&suite_with(vec![
        json!({ "verify": { "signature": "sig", "expect": "perhaps" } }),
    ]));
    assert_eq!(allowed_in(&e.message), in_schema, "{e}");
    for verdict in &in_schema {
        accepted_by_both(&suite_with(vec![
            json!({ "verify": { "signature": "sig", "expect": verdict } }),
        ]));
    }
}

#[test]
fn suite_case_and_expect_fields_are_the_same_in_schema_and_loader() {
    let schema = suite_schema();

    // The suite's top level.
    let full = json!({
        "suite": "t", "about": "x", "tags": ["a"], "requires": ["random"],
        "cases": [ { "name": "c", "about": "y", "tags": ["b"], "requires": ["ed25519"], "steps": [] } ]
    });
    accepted_by_both(&full);
    let mut doc = full.clone();
    doc["colour"] = json!("red");
    let e = refused_by_both(&doc);
    assert_eq!(allowed_in(&e.message), properties(&schema), "{e}");
    // Only the required fields: both accept, so everything else is optional in both.
    let mut doc = full.clone();
    doc.as_object_mut()
        .unwrap()
        .retain(|k, _| required(&schema).contains(k));
    accepted_by_both(&doc);
    for field in required(&schema) {
        let mut doc = full.clone();
        doc.as_object_mut().unwrap().remove(&field);
        let e = refused_by_both(&doc);
        assert!(
            e.message.contains(&format!("missing field `{field}`")),
            "{e}"
        );
    }

    // A case.
    let case = def(&schema, "case");
    let mut doc = full.clone();
    doc["cases"][0]["colour"] = json!("red");
    let e = refused_by_both(&doc);
    assert_eq!(allowed_in(&e.message), properties(case), "{e}");
    let mut doc = full.clone();
    doc["cases"][0]
        .as_object_mut()
        .unwrap()
        .retain(|k, _| required(case).contains(k));
    accepted_by_both(&doc);
    for field in required(case) {
        let mut doc = full.clone();
        doc["cases"][0].as_object_mut().unwrap().remove(&field);
        let e = refused_by_both(&doc);
        assert!(
            e.message.contains(&format!("missing field `{field}`")),
            "{e}"
        );
    }

    // `expect: { error: KIND }`.
    let e = refused_by_both(&suite_with(vec![
        json!({ "random": { "bytes": 1, "expect": { "error": "io", "colour": "red" } } }),
    ]));
    assert_eq!(
        allowed_in(&e.message),
        properties(def(&schema, "expect")),
        "{e}"
    );
}

// --- invalid suites, as people write them ----------------------------------------------------

#[rstest]
#[case::unknown_top_level_field("signers: {}\n", "")]
#[case::unknown_case_field("", "    timeout: 3\n")]
#[case::unknown_step("", "      - creat_key: { alg: rsa2048, as: x }\n")]
#[case::unknown_step_field("", "      - random: { bytes: 4, colour: red }\n")]
#[case::unknown_algorithm("", "      - create_key: { alg: rsa1024, as: x }\n")]
#[case::algorithm_in_capitals("", "      - create_key: { alg: RSA2048, as: x }\n")]
#[case::unknown_capability("requires: [hsm]\n", "")]
#[case::unknown_error_kind("", "      - sign: { key: k, expect: { error: lost } }\n")]
#[case::error_expected_of_verify("", "      - verify: { signature: sig, expect: { error: io } }\n")]
#[case::verdict_expected_of_sign("", "      - sign: { key: k, expect: mismatch }\n")]
#[case::unknown_self_test("", "      - self_test: crash\n")]
#[case::create_key_without_name("", "      - create_key: { alg: rsa2048 }\n")]
#[case::random_without_bytes("", "      - random: {}\n")]
#[case::negative_random_length("", "      - random: { bytes: -1 }\n")]
#[case::sleep_with_expect("", "      - sleep: { seconds: 1, expect: { error: io } }\n")]
#[case::two_steps_in_one_item("", "      - random: { bytes: 4 }\n        sleep: { seconds: 1 }\n")]
#[case::step_without_body("", "      - random\n")]
#[case::empty_step("", "      - {}\n")]
#[case::tags_not_a_list("tags: baseline\n", "")]
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

/// What only the loader can check (the README says so): names bound by earlier steps
/// and unique case names.
#[rstest]
#[case::undefined_key("      - sign: { key: nope }\n")]
#[case::undefined_signature("      - verify: { signature: nope }\n")]
#[case::undefined_verify_key("      - verify: { signature: sig, key: nope }\n")]
#[case::key_used_before_created(
    "      - public_key: { key: later }\n      - create_key: { alg: ed25519, as: later }\n"
)]
#[case::duplicate_case_name("  - name: c\n    steps: []\n")]
fn only_the_loader_checks_names(#[case] tail: &str) {
    let text = format!(
        "suite: t\nabout: x\ncases:\n  - name: c\n    steps:\n      \
         - create_key: {{ alg: rsa2048, as: k }}\n      - sign: {{ key: k, as: sig }}\n{tail}"
    );
    let errors = schema_errors(&suite_schema(), &yaml_to_json(&text));
    assert!(errors.is_empty(), "{errors:#?}");
    assert!(
        Suite::parse(&text, Path::new("suites/t.yaml")).is_err(),
        "loader accepts:\n{text}"
    );
}

// --- backend files -----------------------------------------------------------------------------

#[rstest]
#[case::software(json!("software"))]
#[case::softhsm_default_module(json!({ "softhsm": {} }))]
#[case::softhsm_with_module(json!({ "softhsm": { "module": "/usr/lib/softhsm/libsofthsm2.so" } }))]
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
#[case::unknown_capability(json!({ "capabilities": ["hsm"] }))]
#[case::unknown_field(json!({ "pin": "1234" }))]
#[case::missing_capabilities(json!({ "capabilities": null }))]
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
