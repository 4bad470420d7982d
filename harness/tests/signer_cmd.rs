//! `run --signer-cmd`: cells drive a signer implementation over the signer protocol.
//!
//! Our own router behind `signer serve` runs the suites as the built-in one does; a
//! signer that dies in the middle of `sign`, never answers, or answers with a line
//! that is not JSON makes that cell an `<error>` quoting the evidence while the others
//! pass; a signer without a feature a step needs makes the case skipped with the
//! reason; and the naive Python signer (examples/naive-signer) passes baseline signing
//! on SoftHSMv2 and fails identity binding with readable failures, not errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rstest::rstest;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_hsm-harness");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A scratch directory with one suite and the software backend.
struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    fn new(suite: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["suites", "backends"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        std::fs::write(dir.path().join("suites/s.yaml"), suite).unwrap();
        std::fs::write(
            dir.path().join("backends/software.yaml"),
            "backend: software\nabout: test backend\nprovider: software\ncapabilities: [rsa2048, ecdsa-p256, random, destroy]\n",
        )
        .unwrap();
        Project { dir }
    }

    /// `run` with a JSON twin: (exit code, cells, console output).
    fn run(&self, extra: &[&str]) -> (Option<i32>, Vec<Value>, String) {
        let json = self.dir.path().join("out/results.json");
        let o = Command::new(BIN)
            .arg("run")
            .arg("--suites-dir")
            .arg(self.dir.path().join("suites"))
            .arg("--backends-dir")
            .arg(self.dir.path().join("backends"))
            .arg("--junit")
            .arg(self.dir.path().join("out/junit.xml"))
            .arg("--json")
            .arg(&json)
            .args(extra)
            .output()
            .unwrap();
        let xml = std::fs::read_to_string(self.dir.path().join("out/junit.xml")).unwrap();
        testkit::junit10::assert_valid(&xml);
        let v: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        (
            o.status.code(),
            v["cells"].as_array().unwrap().clone(),
            text(&o),
        )
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn cell<'a>(cells: &'a [Value], case: &str) -> &'a Value {
    cells
        .iter()
        .find(|c| c["case"] == case)
        .unwrap_or_else(|| panic!("no cell '{case}' in {cells:#?}"))
}

fn status(c: &Value) -> &str {
    c["status"]
        .as_str()
        .unwrap_or_else(|| panic!("no status in {c}"))
}

/// The failure or error message, or the skip reason.
fn message(c: &Value) -> String {
    ["message", "reason"]
        .iter()
        .find_map(|k| c[k].as_str())
        .unwrap_or_default()
        .to_string()
}

fn property<'a>(c: &'a Value, name: &str) -> Option<&'a str> {
    c["properties"]
        .as_array()?
        .iter()
        .find(|p| p[0] == name)
        .and_then(|p| p[1].as_str())
}

const CASES: &str = "suite: s
about: x
cases:
  - name: signs
    steps:
      - create_key: { alg: ecdsa-p256, as: k }
      - sign: { key: k, as: s }
      - verify: { signature: s }
      - keymap: { has: [k] }
      - destroy_key: { key: k }
      - keymap: { lacks: [k] }
  - name: draws
    steps:
      - random: { bytes: 8 }
";

fn serve() -> String {
    format!("{BIN} signer serve")
}

#[test]
fn our_router_over_the_protocol_passes_and_is_named_in_the_report() {
    let p = Project::new(CASES);
    let (code, cells, out) = p.run(&["--signer-cmd", &serve()]);
    assert_eq!(code, Some(0), "{out}");
    for case in ["signs", "draws"] {
        let c = cell(&cells, case);
        assert_eq!(status(c), "passed", "{c}");
        assert_eq!(
            property(c, "signer_implementation"),
            Some("hsm-harness router")
        );
        assert!(property(c, "signer_version").is_some(), "{c}");
    }
    assert!(out.contains("signer: hsm-harness router"), "{out}");
}

#[rstest]
#[case::exits_mid_sign("exit", &["`sign` (request", "exited with status 3", "about to die"])]
#[case::never_answers("hang", &["gave no answer to `sign` (request", "within 2 s", "hanging on sign"])]
#[case::writes_garbage("garbage", &["`sign` (request", "not a JSON response", "this is not JSON, it is a signer gone wrong"])]
fn a_broken_signer_is_the_cells_error_with_the_evidence(
    #[case] mode: &str,
    #[case] evidence: &[&str],
) {
    let p = Project::new(CASES);
    let script = root().join("harness/tests/support/faulty_signer.py");
    let cmd = format!("python3 {} {mode} {BIN}", script.display());
    let (code, cells, out) = p.run(&["--signer-cmd", &cmd, "--signer-timeout", "2", "-j", "1"]);
    assert_eq!(code, Some(1), "{out}");
    let bad = cell(&cells, "signs");
    assert_eq!(status(bad), "errored", "{bad}");
    let m = message(bad);
    for e in evidence {
        assert!(m.contains(e), "'{e}' is not in {m}");
    }
    // The run went on: the other cell passed through its own signer process.
    assert_eq!(status(cell(&cells, "draws")), "passed", "{out}");
}

#[test]
fn a_signer_that_cannot_start_or_greet_is_an_error_naming_the_command() {
    let p = Project::new(CASES);
    let (code, cells, out) = p.run(&["--signer-cmd", "/nonexistent/signer --flag"]);
    assert_eq!(code, Some(1), "{out}");
    let c = cell(&cells, "signs");
    assert_eq!(status(c), "errored", "{c}");
    assert!(message(c).contains("/nonexistent/signer"), "{c}");
}

/// A signer that offers no `random` and no `one-off`: the steps that need them are
/// skipped with the reason, not passed.
#[test]
fn steps_needing_what_hello_does_not_offer_are_skipped_with_the_reason() {
    let p = Project::new(CASES);
    let script = p.dir.path().join("plain.py");
    std::fs::write(
        &script,
        r#"import json, subprocess, sys
real = subprocess.Popen(sys.argv[1:2] + ["signer", "serve"] + sys.argv[2:], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
for line in sys.stdin:
    real.stdin.write(line); real.stdin.flush()
    answer = json.loads(real.stdout.readline())
    if answer.get("features"):
        answer["features"] = [f for f in answer["features"] if f not in ("random", "one-off")]
    print(json.dumps(answer), flush=True)
"#,
    )
    .unwrap();
    let cmd = format!("python3 {} {BIN}", script.display());
    let (code, cells, out) = p.run(&["--signer-cmd", &cmd]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(status(cell(&cells, "signs")), "passed");
    let draws = cell(&cells, "draws");
    assert_eq!(status(draws), "skipped", "{draws}");
    assert!(
        message(draws).contains("does not offer feature 'random'"),
        "{draws}"
    );
}

/// The naive signer on SoftHSMv2: baseline signing passes; identity binding fails
/// where a signer without identity keys must, each failure saying what went wrong;
/// nothing is the harness's error.
#[test]
fn the_naive_python_signer_passes_baseline_and_fails_identity_binding_readably() {
    let naive = root().join("examples/naive-signer/naive_signer.py");
    let json = tempfile::tempdir().unwrap();
    let out = json.path().join("r.json");
    let o = Command::new(BIN)
        .current_dir(root())
        .args(["run", "--backend", "softhsm"])
        .args(["--suite", "baseline-signing", "--suite", "identity-binding"])
        .arg("--signer-cmd")
        .arg(format!("/usr/bin/python3 {}", naive.display()))
        .arg("--junit")
        .arg(json.path().join("j.xml"))
        .arg("--json")
        .arg(&out)
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let cells = v["cells"].as_array().unwrap();
    let text = text(&o);
    let in_suite = |s: &'static str| cells.iter().filter(move |c| c["suite"] == s);
    for c in cells {
        assert_ne!(status(c), "errored", "a harness error: {c}\n{text}");
    }
    for c in in_suite("baseline-signing") {
        assert!(["passed", "skipped"].contains(&status(c)), "baseline: {c}");
        assert_eq!(property(c, "signer_implementation"), Some("naive-signer"));
    }
    assert!(in_suite("baseline-signing").any(|c| status(c) == "passed"));
    let failed: Vec<&Value> = in_suite("identity-binding")
        .filter(|c| status(c) == "failed")
        .collect();
    assert!(
        !failed.is_empty(),
        "identity binding caught nothing: {text}"
    );
    for c in failed {
        let m = message(c);
        assert!(m.contains("step "), "the failure names no step: {m}");
    }
}
