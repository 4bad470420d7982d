//! `hsm-harness signer serve`: the router behind the signer protocol
//! (docs/signer-protocol.md), driven over a pipe as `run --signer-cmd` will drive it,
//! each signature checked with the oracle.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use base64::Engine;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_hsm-harness");

struct Served {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    next: u64,
    _state: tempfile::TempDir,
}

impl Served {
    /// `signer serve` with the implicit configuration: one OpenSSL signer.
    fn start() -> Self {
        let state = tempfile::tempdir().unwrap();
        let mut child = Command::new(BIN)
            .args(["signer", "serve", "--state"])
            .arg(state.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Served {
            child,
            stdin,
            stdout,
            next: 0,
            _state: state,
        }
    }

    /// Sends a line; the answer, which must be a response the schema allows.
    fn line(&mut self, line: &str) -> Value {
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
        let mut answer = String::new();
        self.stdout.read_line(&mut answer).unwrap();
        let v: Value = serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{e}: {answer:?}"));
        let schema = hsm_harness::signer_protocol::response_schema();
        let validator = jsonschema::draft202012::new(&schema).unwrap();
        let errors: Vec<String> = validator.iter_errors(&v).map(|e| e.to_string()).collect();
        assert!(
            errors.is_empty(),
            "{answer} breaks the response schema: {errors:?}"
        );
        v
    }

    /// Sends `request` with the next id (a request the schema allows); checks the
    /// answer carries it.
    fn ask(&mut self, mut request: Value) -> Value {
        self.next += 1;
        request["id"] = self.next.into();
        let schema = hsm_harness::signer_protocol::request_schema();
        if request["op"] != "teleport" {
            assert!(
                jsonschema::draft202012::new(&schema)
                    .unwrap()
                    .is_valid(&request),
                "{request} breaks the request schema"
            );
        }
        let answer = self.line(&request.to_string());
        assert_eq!(answer["id"], self.next, "{answer}");
        answer
    }
}

fn b64(text: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(text.as_str().unwrap())
        .unwrap()
}

#[test]
fn hello_then_keys_signatures_and_shutdown() {
    let mut s = Served::start();
    let hello = s.ask(json!({ "op": "hello", "protocol": 1 }));
    assert_eq!(hello["ok"], true, "{hello}");
    assert_eq!(hello["protocol"], 1);
    assert_eq!(hello["implementation"]["name"], "hsm-harness router");
    assert!(hello["features"]
        .as_array()
        .unwrap()
        .contains(&json!("one-off")));

    for alg in ["ecdsa-p256", "rsa2048", "ed25519"] {
        let made = s.ask(json!({ "op": "create_key", "alg": alg }));
        assert_eq!(made["ok"], true, "{made}");
        let public_key = b64(&made["public_key"]);
        // The identifier is the one the oracle computes from the public key.
        let id = oracle::KeyId::of_spki(&public_key).unwrap();
        assert_eq!(made["key"], id.to_string(), "{made}");

        let data = b"signed over the protocol";
        let signed = s.ask(json!({
            "op": "sign", "key": made["key"], "alg": alg,
            "data": base64::engine::general_purpose::STANDARD.encode(data),
        }));
        assert_eq!(signed["ok"], true, "{signed}");
        let alg: oracle::Algorithm = serde_json::from_value(json!(alg)).unwrap();
        oracle::verify::verify(&public_key, alg, data, &b64(&signed["signature"])).unwrap();
    }
    let listed = s.ask(json!({ "op": "list", "orphans": true }));
    assert_eq!(listed["keys"].as_array().unwrap().len(), 3, "{listed}");
    let info = s.ask(json!({ "op": "info" }));
    assert_eq!(info["type"], "OpenSSL", "{info}");
    let status = s.ask(json!({ "op": "status" }));
    assert_eq!(status["signers"][0]["roles"][0], "default", "{status}");
    let identity = s.ask(json!({ "op": "identity", "signer": "Default OpenSSL signer" }));
    assert_eq!(identity["ok"], true, "{identity}");
    let one_off = s.ask(json!({ "op": "sign_one_off", "alg": "ecdsa-p256", "data": "aGk=" }));
    let alg: oracle::Algorithm = serde_json::from_value(json!("ecdsa-p256")).unwrap();
    oracle::verify::verify(
        &b64(&one_off["public_key"]),
        alg,
        b"hi",
        &b64(&one_off["signature"]),
    )
    .unwrap();
    let random = s.ask(json!({ "op": "random", "bytes": 32 }));
    assert_eq!(b64(&random["random"]).len(), 32, "{random}");
    let bye = s.ask(json!({ "op": "shutdown" }));
    assert_eq!(bye["ok"], true);
    assert!(s.child.wait().unwrap().success());
}

#[test]
fn errors_carry_the_suites_kind_names_and_bad_lines_are_answered() {
    let mut s = Served::start();
    let early = s.ask(json!({ "op": "list" }));
    assert_eq!(early["error"]["kind"], "invalid-input", "{early}");
    assert!(early["error"]["message"]
        .as_str()
        .unwrap()
        .contains("hello"));
    s.ask(json!({ "op": "hello", "protocol": 1 }));

    let missing = s.ask(json!({
        "op": "sign", "key": "00".repeat(20), "alg": "ecdsa-p256", "data": "aGk=",
    }));
    assert_eq!(missing["ok"], false);
    assert_eq!(missing["error"]["kind"], "not-found", "{missing}");

    let not_json = s.line("this is not JSON");
    assert_eq!(not_json["error"]["kind"], "invalid-input", "{not_json}");
    assert_eq!(not_json["id"], Value::Null);
    let unknown = s.ask(json!({ "op": "teleport" }));
    assert!(unknown["error"]["message"]
        .as_str()
        .unwrap()
        .contains("teleport"));

    // The end of stdin ends it too.
    drop(s.stdin);
    assert!(s.child.wait().unwrap().success());
}
