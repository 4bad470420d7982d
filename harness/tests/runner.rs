//! The runner seen from outside: exit codes, crash and timeout isolation, skips with
//! reasons, selectors, and a JUnit file that parses, all through the real binary.

use std::path::PathBuf;
use std::process::{Command, Output};

use rstest::rstest;

mod support;

use support::{run_dirs, wait_for};

const BIN: &str = env!("CARGO_BIN_EXE_hsm-harness");

/// A scratch project: its own suites/ and backends/ directories.
struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    fn new() -> Self {
        let p = Project {
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::create_dir_all(p.suites()).unwrap();
        std::fs::create_dir_all(p.backends()).unwrap();
        p.backend(
            "software",
            "provider: software\ncapabilities: [rsa2048, ecdsa-p256, random]\n",
        );
        p
    }

    fn suites(&self) -> PathBuf {
        self.dir.path().join("suites")
    }

    fn backends(&self) -> PathBuf {
        self.dir.path().join("backends")
    }

    fn junit(&self) -> PathBuf {
        self.dir.path().join("out/junit.xml")
    }

    fn suite(&self, file: &str, text: &str) -> PathBuf {
        let p = self.suites().join(file);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn backend(&self, name: &str, rest: &str) {
        std::fs::write(
            self.backends().join(format!("{name}.yaml")),
            format!("backend: {name}\nabout: test backend\n{rest}"),
        )
        .unwrap();
    }

    fn command(&self, sub: &str) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.arg(sub)
            .arg("--suites-dir")
            .arg(self.suites())
            .arg("--backends-dir")
            .arg(self.backends());
        cmd
    }

    fn run(&self, extra: &[&str]) -> Output {
        self.command("run")
            .arg("--junit")
            .arg(self.junit())
            .args(extra)
            .output()
            .unwrap()
    }

    /// The run's JUnit report, checked against the junit-10 schema's rules.
    fn junit_doc(&self) -> String {
        let xml = std::fs::read_to_string(self.junit()).expect("the run wrote no JUnit file");
        testkit::junit10::assert_valid(&xml);
        xml
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// (name, verdict element or "passed", message) of each test case.
fn cases(xml: &str) -> Vec<(String, String, String)> {
    let doc = roxmltree::Document::parse(xml).expect("JUnit is not well-formed XML");
    doc.descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .map(|tc| {
            let name = tc.attribute("name").unwrap().to_string();
            let verdict = tc
                .children()
                .find(|c| ["failure", "error", "skipped"].contains(&c.tag_name().name()));
            match verdict {
                Some(v) => (
                    name,
                    v.tag_name().name().to_string(),
                    v.attribute("message").unwrap_or_default().to_string(),
                ),
                None => (name, "passed".into(), String::new()),
            }
        })
        .collect()
}

fn find<'a>(cases: &'a [(String, String, String)], name: &str) -> &'a (String, String, String) {
    cases
        .iter()
        .find(|c| c.0 == name)
        .unwrap_or_else(|| panic!("no case '{name}' in {cases:?}"))
}

const TWO_GOOD_CASES: &str = "  - name: first
    steps:
      - create_key: { alg: ecdsa-p256, as: k }
      - sign: { key: k, as: s }
      - verify: { signature: s }
  - name: last
    steps:
      - random: { bytes: 8 }
";

#[test]
fn a_passing_run_exits_0_and_writes_junit() {
    let p = Project::new();
    p.suite(
        "good.yaml",
        &format!("suite: good\nabout: x\ncases:\n{TWO_GOOD_CASES}"),
    );
    let o = p.run(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let xml = p.junit_doc();
    let cases = cases(&xml);
    assert_eq!(cases.len(), 2);
    assert!(cases.iter().all(|c| c.1 == "passed"), "{cases:?}");
    // Where each cell's time went, in its system-out.
    let doc = roxmltree::Document::parse(&xml).unwrap();
    for out in doc.descendants().filter(|n| n.has_tag_name("system-out")) {
        let text = out.text().unwrap_or_default();
        for phase in ["backend", "signers", "steps", "teardown"] {
            let line = format!("  phase_{phase}_ms: ");
            assert!(text.contains(&line), "no {line:?} in {text}");
        }
    }
}

#[test]
fn a_yaml_error_exits_2_naming_file_line_and_column() {
    let p = Project::new();
    let file = p.suite(
        "broken.yaml",
        "suite: broken\nabout: x\ncases:\n  - name: c\n    steps:\n      - create_key: { alg: rsa1024, as: k }\n",
    );
    let o = p.run(&[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("{}:6:28:", file.display())),
        "no file:line:col in: {err}"
    );
    assert!(err.contains("rsa2048"), "allowed values missing: {err}");
    // `check` says the same.
    let c = Command::new(BIN).arg("check").arg(&file).output().unwrap();
    assert_eq!(c.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&c.stderr).contains(":6:28:"));
}

#[test]
fn a_cell_past_the_timeout_is_an_error_and_the_others_pass() {
    let p = Project::new();
    p.suite(
        "slow.yaml",
        &format!(
            "suite: slow\nabout: x\ncases:\n{TWO_GOOD_CASES}  - name: too slow\n    steps:\n      - random: {{ bytes: 4 }}\n      - sleep: {{ seconds: 60 }}\n"
        ),
    );
    let o = p.run(&["--timeout", "3", "-j", "3"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let cases = cases(&p.junit_doc());
    let slow = find(&cases, "too slow");
    assert_eq!(slow.1, "error");
    assert!(slow.2.contains("timeout"), "{slow:?}");
    assert_eq!(find(&cases, "first").1, "passed");
    assert_eq!(find(&cases, "last").1, "passed");
}

#[rstest]
#[case::abort("abort", "SIGABRT")]
#[case::hang("hang", "timeout")]
fn a_crashing_or_hanging_cell_is_an_error_and_the_run_goes_on(
    #[case] fault: &str,
    #[case] expected: &str,
) {
    let p = Project::new();
    p.suite(
        "crash.yaml",
        &format!(
            "suite: crash\nabout: x\ncases:\n  - name: crashes\n    steps:\n      - random: {{ bytes: 4 }}\n      - self_test: {fault}\n{TWO_GOOD_CASES}"
        ),
    );
    let o = p.run(&["--timeout", "3", "-j", "1"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let xml = p.junit_doc();
    let cases = cases(&xml);
    assert_eq!(cases.len(), 3, "every cell is in the report");
    let bad = find(&cases, "crashes");
    assert_eq!(bad.1, "error");
    assert!(bad.2.contains(expected), "{bad:?}");
    // The tail of the dead cell's stderr is in the report.
    assert!(xml.contains("self_test"), "stderr tail missing");
    assert_eq!(find(&cases, "first").1, "passed");
    assert_eq!(find(&cases, "last").1, "passed");
}

#[test]
fn a_failed_expectation_fails_the_cell_and_the_run() {
    let p = Project::new();
    p.suite(
        "wrong.yaml",
        "suite: wrong\nabout: x\ncases:\n  - name: good signature declared bad\n    steps:\n      - create_key: { alg: rsa2048, as: k }\n      - sign: { key: k, as: s }\n      - verify: { signature: s, expect: mismatch }\n",
    );
    let o = p.run(&[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let cases = cases(&p.junit_doc());
    let c = find(&cases, "good signature declared bad");
    assert_eq!(c.1, "failure");
    assert!(c.2.contains("step 3 (verify, line 8)"), "{c:?}");
}

#[test]
fn missing_capabilities_and_absent_backends_are_skipped_with_reasons() {
    let p = Project::new();
    p.backend(
        "nohsm",
        "provider:\n  softhsm: { module: /nonexistent/libsofthsm2.so }\ncapabilities: [rsa2048]\n",
    );
    p.suite(
        "caps.yaml",
        "suite: caps\nabout: x\ncases:\n  - name: needs ed25519\n    steps:\n      - create_key: { alg: ed25519, as: k }\n",
    );
    let o = p.run(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let xml = p.junit_doc();
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let skipped: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("skipped"))
        .map(|n| n.attribute("message").expect("skipped without message"))
        .collect();
    assert_eq!(skipped.len(), 2, "{xml}");
    assert!(
        skipped
            .iter()
            .any(|m| m.contains("lacks capability 'ed25519'")),
        "{skipped:?}"
    );
    assert!(
        skipped.iter().any(|m| m.contains("cannot start here")),
        "{skipped:?}"
    );
}

/// A backend that cannot start is a skip by default, but never a green run when the
/// run is strict or requires it: its cells are errors naming the backend, exit 1.
#[rstest]
#[case::strict(&["--strict"], true)]
#[case::required(&["--require-backend", "nohsm"], true)]
#[case::another_required(&["--require-backend", "software"], false)]
#[case::neither(&[], false)]
fn a_backend_that_must_start_but_cannot_is_an_error(#[case] flags: &[&str], #[case] error: bool) {
    let p = Project::new();
    p.backend(
        "nohsm",
        "provider:\n  softhsm: { module: /nonexistent/libsofthsm2.so }\ncapabilities: [rsa2048]\n",
    );
    p.suite(
        "sign.yaml",
        "suite: sign\nabout: x\ncases:\n  - name: rsa\n    steps:\n      - create_key: { alg: rsa2048, as: k }\n",
    );
    let o = p.run(flags);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(if error { 1 } else { 0 }), "{out}");
    let xml = p.junit_doc();
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let cell = doc
        .descendants()
        .find(|n| n.has_tag_name("testcase") && n.attribute("classname") == Some("sign.nohsm"))
        .expect("a sign.nohsm cell");
    let verdict = cell
        .children()
        .find(|c| ["error", "skipped"].contains(&c.tag_name().name()))
        .expect("neither error nor skipped");
    let message = verdict.attribute("message").unwrap_or_default();
    if error {
        assert_eq!(verdict.tag_name().name(), "error", "{xml}");
        assert!(
            message.contains("backend 'nohsm' cannot start here"),
            "{message}"
        );
        assert!(out.contains("ERROR"), "{out}");
    } else {
        assert_eq!(verdict.tag_name().name(), "skipped", "{xml}");
        assert!(out.contains("Skipped cells by reason:"), "{out}");
    }
}

#[test]
fn requiring_an_unknown_backend_is_bad_input() {
    let p = Project::new();
    p.suite(
        "sign.yaml",
        "suite: sign\nabout: x\ncases:\n  - name: rsa\n    steps:\n      - create_key: { alg: rsa2048, as: k }\n",
    );
    let o = p.run(&["--require-backend", "hal"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("no backend named 'hal'"), "{}", text(&o));
}

#[test]
fn list_honours_filter_tag_and_backend() {
    let p = Project::new();
    p.backend("other", "provider: software\ncapabilities: [random]\n");
    p.suite(
        "a.yaml",
        &format!("suite: a\nabout: x\ntags: [alpha]\ncases:\n{TWO_GOOD_CASES}"),
    );
    p.suite(
        "b.yaml",
        "suite: b\nabout: x\ncases:\n  - name: tagged\n    tags: [beta]\n    steps:\n      - random: { bytes: 1 }\n",
    );
    let list = |extra: &[&str]| -> Vec<String> {
        let o = p.command("list").args(extra).output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(|l| l.split("  (skip").next().unwrap().to_string())
            .collect()
    };
    assert_eq!(list(&[]).len(), 6);
    assert_eq!(
        list(&["--tag", "beta"]),
        vec!["b.other/tagged", "b.software/tagged"]
    );
    assert_eq!(
        list(&["--backend", "software", "--filter", "fir*"]),
        vec!["a.software/first"]
    );
    assert_eq!(list(&["--filter", "a.other/*"]).len(), 2);
    // An unknown backend is bad input, naming the known ones.
    let o = p
        .command("list")
        .args(["--backend", "nope"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("known: other, software"));
}

#[test]
fn json_twin_holds_the_same_results() {
    let p = Project::new();
    p.suite(
        "good.yaml",
        &format!("suite: good\nabout: x\ncases:\n{TWO_GOOD_CASES}"),
    );
    let json = p.dir.path().join("out/results.json");
    let o = p.run(&["--json", json.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(v["tally"]["passed"], 2);
    assert_eq!(v["cells"].as_array().unwrap().len(), 2);
}

// --- checks in the backend ---------------------------------------------------------------

/// A module that reports a destroy it did not do (the shim answers C_DestroyObject with
/// CKR_OK without calling SoftHSMv2): the router forgets the key, but `destroy_key`
/// checks the token itself and fails the cell.
#[test]
fn a_destroy_that_destroys_nothing_fails_the_cell() {
    let p = Project::new();
    p.backend(
        "softhsm",
        "provider: softhsm\ncapabilities: [rsa2048, rsa2048-pss, ecdsa-p256, ecdsa-p384, ed25519, random, hsm, pkcs11, pkcs11-shim, destroy]\n",
    );
    p.suite(
        "destroy.yaml",
        "suite: destroy\nabout: x\ncases:\n  - name: pretended destroy\n    shim:\n      rules: [ { function: C_DestroyObject, action: pretend } ]\n    steps:\n      - create_key: { alg: ecdsa-p256, as: k }\n      - destroy_key: { key: k }\n  - name: real destroy\n    steps:\n      - create_key: { alg: ecdsa-p256, as: k }\n      - destroy_key: { key: k }\n",
    );
    let o = p.run(&["--backend", "softhsm"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let all = cases(&p.junit_doc());
    let (_, verdict, message) = find(&all, "pretended destroy");
    assert_eq!(verdict, "failure", "{all:?}");
    assert!(message.contains("still holds it"), "{message}");
    assert_eq!(find(&all, "real destroy").1, "passed", "{all:?}");
}

/// A capability profile is compared with the backend on the backend's first cell: a
/// profile that leaves out what the backend has (so cases would be skipped that could
/// run) or lists what it lacks makes that cell an error naming the difference.
#[rstest]
#[case::agrees(
    "[rsa2048, rsa2048-pss, ecdsa-p256, ecdsa-p384, ed25519, random, hsm, pkcs11]",
    None
)]
#[case::leaves_out_random(
    "[rsa2048, rsa2048-pss, ecdsa-p256, ecdsa-p384, ed25519, hsm, pkcs11]",
    Some("does not list 'random', but C_GenerateRandom gave 16 bytes")
)]
fn the_first_cell_of_a_backend_checks_its_capability_profile(
    #[case] capabilities: &str,
    #[case] error: Option<&str>,
) {
    let p = Project::new();
    p.backend(
        "softhsm",
        &format!("provider: softhsm\ncapabilities: {capabilities}\n"),
    );
    p.suite(
        "two.yaml",
        "suite: two\nabout: x\ncases:\n  - name: first\n    steps:\n      - create_key: { alg: rsa2048, as: k }\n  - name: second\n    steps:\n      - create_key: { alg: rsa2048, as: k }\n",
    );
    let o = p.run(&["--backend", "softhsm", "-j", "1"]);
    let all = cases(&p.junit_doc());
    match error {
        None => {
            assert_eq!(o.status.code(), Some(0), "{}", text(&o));
            assert_eq!(find(&all, "first").1, "passed", "{all:?}");
        }
        Some(said) => {
            assert_eq!(o.status.code(), Some(1), "{}", text(&o));
            let (_, verdict, message) = find(&all, "first");
            assert_eq!(verdict, "error", "{all:?}");
            assert!(message.contains(said), "{message}");
        }
    }
    // Only the first cell compares.
    assert_eq!(find(&all, "second").1, "passed", "{all:?}");
}

/// The relay's profile as `fixtures/backends/relay.yaml` has it, as far as the probe
/// compares.
const RELAY_PROFILE: &str = "[rsa2048, rsa2048-pss, ecdsa-p256, ecdsa-p384, random, hsm, kmip, pkcs11-shim, kmip-modify-attribute, destroy]";

/// Runs `suite` on the backends `names` with a JSON twin; returns the exit code and
/// the cells as (suite, backend, case, status, message, log).
fn run_json(p: &Project, extra: &[&str]) -> (Option<i32>, Vec<serde_json::Value>, String) {
    let json = p.dir.path().join("out/results.json");
    let mut args = vec!["--json", json.to_str().unwrap()];
    args.extend_from_slice(extra);
    let o = p.run(&args);
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    (
        o.status.code(),
        v["cells"].as_array().unwrap().clone(),
        text(&o),
    )
}

/// The cell of `case` on `backend`.
fn cell<'a>(cells: &'a [serde_json::Value], backend: &str, case: &str) -> &'a serde_json::Value {
    cells
        .iter()
        .find(|c| c["backend"] == backend && c["case"] == case)
        .unwrap_or_else(|| panic!("no cell '{case}' on '{backend}' in {cells:#?}"))
}

/// `random: { from: backend }` takes the backend's own word where it can have it: a
/// module that answers C_GenerateRandom with CKR_OK and makes nothing (the shim's
/// `pretend`) fails the step, on SoftHSMv2 and behind the relay, though the router
/// says the default signer's generator made the bytes. Without the shim, the relay's
/// log shows its RNG Retrieve; plain SoftHSMv2 has no evidence source, which the log
/// says, and passes.
#[test]
fn random_from_the_backend_needs_the_backends_own_evidence() {
    let p = Project::new();
    p.backend(
        "softhsm",
        "provider: softhsm\ncapabilities: [rsa2048, rsa2048-pss, ecdsa-p256, ecdsa-p384, ed25519, random, hsm, pkcs11, pkcs11-shim, destroy]\n",
    );
    p.backend(
        "relay",
        &format!("provider:\n  relay: {{}}\ncapabilities: {RELAY_PROFILE}\n"),
    );
    p.suite(
        "random.yaml",
        "suite: random\nabout: x\ncases:\n  - name: pretended random\n    shim:\n      rules: [ { function: C_GenerateRandom, action: pretend } ]\n    steps:\n      - random: { bytes: 8, from: backend }\n  - name: real random\n    steps:\n      - random: { bytes: 8, from: backend }\n  - name: real random through the shim\n    shim: {}\n    steps:\n      - random: { bytes: 8, from: backend }\n",
    );
    let (code, cells, out) = run_json(&p, &["--backend", "softhsm", "--backend", "relay"]);
    assert_eq!(code, Some(1), "{out}");
    for backend in ["softhsm", "relay"] {
        let pretended = cell(&cells, backend, "pretended random");
        assert_eq!(pretended["status"], "failed", "{pretended:#}");
        let said = pretended.to_string();
        assert!(
            said.contains("shows no sign of it: no new C_GenerateRandom calls in the PKCS#11 shim"),
            "{pretended:#}"
        );
        let traced = cell(&cells, backend, "real random through the shim");
        assert_eq!(traced["status"], "passed", "{traced:#}");
        assert!(
            traced["log"]
                .as_str()
                .unwrap()
                .contains("1 new C_GenerateRandom calls in the PKCS#11 shim's trace"),
            "{traced:#}"
        );
    }
    let relay = cell(&cells, "relay", "real random");
    assert_eq!(relay["status"], "passed", "{relay:#}");
    assert!(
        relay["log"]
            .as_str()
            .unwrap()
            .contains("1 new RNG Retrieve answers in the relay's log"),
        "{relay:#}"
    );
    let softhsm = cell(&cells, "softhsm", "real random");
    assert_eq!(softhsm["status"], "passed", "{softhsm:#}");
    assert!(
        softhsm["log"]
            .as_str()
            .unwrap()
            .contains("no evidence source for instance"),
        "{softhsm:#}"
    );
}

/// The relay's key pair algorithms are probed: its token's mechanisms, narrowed by
/// the relay's mode. The seed-003 stand-in makes every EC key P-256, so a profile that
/// claims ecdsa-p384 for it is an error on its first cell; Ed25519 is never there
/// (KMIP 1.2). The profile the fixtures have passes.
#[rstest]
#[case::standard("relay: {}", RELAY_PROFILE, None)]
#[case::standard_with_ed25519(
    "relay: {}",
    "[rsa2048, rsa2048-pss, ecdsa-p256, ecdsa-p384, ed25519, random, hsm, kmip, kmip-modify-attribute, destroy]",
    Some("the profile lists 'ed25519', but the relay speaks KMIP 1.2")
)]
#[case::seed003("relay: { mimic: seed-003 }", "[rsa2048, ecdsa-p256, hsm, kmip]", None)]
#[case::seed003_with_p384(
    "relay: { mimic: seed-003 }",
    "[rsa2048, ecdsa-p256, ecdsa-p384, hsm, kmip]",
    Some("the profile lists 'ecdsa-p384', but the seed-003 relay makes every EC key P-256")
)]
fn the_relays_algorithms_are_probed(
    #[case] provider: &str,
    #[case] capabilities: &str,
    #[case] error: Option<&str>,
) {
    let p = Project::new();
    p.backend(
        "relay",
        &format!("provider:\n  {provider}\ncapabilities: {capabilities}\n"),
    );
    p.suite(
        "one.yaml",
        "suite: one\nabout: x\ncases:\n  - name: first\n    steps:\n      - create_key: { alg: rsa2048, as: k }\n",
    );
    let (code, cells, out) = run_json(&p, &["--backend", "relay"]);
    let first = cell(&cells, "relay", "first");
    let log = first["log"].as_str().unwrap();
    // The Query Objects evidence is in the log either way.
    assert!(
        log.contains("Query Objects lists Public Key, Private Key"),
        "{first:#}"
    );
    match error {
        None => {
            assert_eq!(code, Some(0), "{out}");
            assert_eq!(first["status"], "passed", "{first:#}");
        }
        Some(said) => {
            assert_eq!(code, Some(1), "{out}");
            assert_eq!(first["status"], "errored", "{first:#}");
            assert!(first.to_string().contains(said), "{first:#}");
        }
    }
}

// --- interrupted runs -------------------------------------------------------------------

/// Processes whose command line names `dir` (the run's cells and their servers do).
fn processes_under(dir: &std::path::Path) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(&needle) {
            found.push(format!(
                "{}: {cmdline}",
                entry.file_name().to_string_lossy()
            ));
        }
    }
    found
}

/// How many relay and PyKMIP servers run under `dir`: `kmip2pkcs11` and `pykmip-server`
/// processes, and the servers the run's PyKMIP zygote forked (named `pykmip-server`,
/// each leading a process group with PyKMIP's helper processes in it).
fn servers_under(dir: &std::path::Path) -> usize {
    processes_under(dir)
        .iter()
        .filter(|p| {
            let pid = p.split(':').next().unwrap_or_default();
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // pid (comm) state ppid pgrp ...
            let (comm, rest) = match (stat.find('('), stat.rfind(')')) {
                (Some(a), Some(b)) if a < b => (&stat[a + 1..b], &stat[b + 1..]),
                _ => return false,
            };
            let leads_group = rest.split_whitespace().nth(2) == Some(pid);
            p.contains("kmip2pkcs11")
                || p.contains("pykmip-server")
                || (comm == "pykmip-server" && leads_group)
        })
        .count()
}

/// Local PyKMIP cells get servers forked by the run's zygote; a cell that times out
/// takes its server (and PyKMIP's helper processes) with it, and the zygote goes with
/// the run.
#[test]
fn pykmip_servers_are_forked_and_a_timed_out_cell_leaves_none() {
    let p = Project::new();
    p.backend(
        "pykmip",
        "provider: pykmip\ncapabilities: [rsa2048, destroy, hsm, kmip, tls12-only, persistent-keys]\n",
    );
    p.suite(
        "s.yaml",
        "suite: s\nabout: x\ncases:\n  - name: signs\n    steps:\n      - create_key: { alg: rsa2048, as: k }\n      - sign: { key: k, data: hello, as: s }\n      - verify: { signature: s }\n  - name: hangs\n    steps:\n      - create_key: { alg: rsa2048, as: k }\n      - sleep: { seconds: 60 }\n",
    );
    let tmp = p.dir.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let o = p
        .command("run")
        .arg("--junit")
        .arg(p.junit())
        .args(["--backend", "pykmip", "--timeout", "8"])
        .env("TMPDIR", &tmp)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let xml = p.junit_doc();
    let all = cases(&xml);
    let verdict = |name: &str| all.iter().find(|c| c.0 == name).unwrap().1.clone();
    assert_eq!(verdict("signs"), "passed", "{xml}");
    assert_eq!(verdict("hangs"), "error", "{xml}");
    assert!(
        xml.contains("(forked by the run&apos;s PyKMIP zygote)"),
        "{xml}"
    );
    wait_for(
        "every process of the run to end",
        std::time::Duration::from_secs(10),
        || processes_under(&tmp).is_empty(),
    );
}

/// Ctrl-C, SIGTERM or SIGKILL to a run: within 10 s nothing it started is left, no
/// run directory remains, and after SIGINT or SIGTERM the report lists every cell,
/// the unfinished ones as errors, with the exit code 128 + the signal.
#[rstest]
#[case::sigint_on_software(libc::SIGINT, "software", false)]
#[case::sigterm_on_software(libc::SIGTERM, "software", false)]
#[case::sigkill_on_software(libc::SIGKILL, "software", false)]
#[case::sigterm_on_relay(libc::SIGTERM, "relay", true)]
#[case::sigkill_on_relay(libc::SIGKILL, "relay", true)]
#[case::sigint_on_pykmip(libc::SIGINT, "pykmip", true)]
#[case::sigkill_on_pykmip(libc::SIGKILL, "pykmip", true)]
fn an_interrupted_run_reports_every_cell_and_leaves_nothing(
    #[case] signal: i32,
    #[case] backend: &str,
    #[case] server: bool,
) {
    let p = Project::new();
    p.backend(
        "relay",
        "provider: relay\ncapabilities: [rsa2048, rsa2048-pss, ecdsa-p256, ecdsa-p384, random, destroy, kmip-modify-attribute, hsm, kmip, tls13, persistent-keys]\n",
    );
    p.backend(
        "pykmip",
        "provider: pykmip\ncapabilities: [rsa2048, destroy, hsm, kmip, tls12-only, persistent-keys]\n",
    );
    let mut slow = String::new();
    for i in 0..4 {
        slow.push_str(&format!(
            "  - name: slow {i}\n    steps:\n      - create_key: {{ alg: rsa2048, as: k }}\n      - sleep: {{ seconds: 60 }}\n"
        ));
    }
    p.suite(
        "slow.yaml",
        &format!("suite: slow\nabout: x\ncases:\n{slow}"),
    );
    let tmp = p.dir.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let mut child = p
        .command("run")
        .arg("--junit")
        .arg(p.junit())
        .args(["--backend", backend, "-j", "2", "--timeout", "120"])
        .env("TMPDIR", &tmp)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Both cells are in their sleep step (and, on the relay, its servers are up).
    wait_for(
        "two cells to run",
        std::time::Duration::from_secs(60),
        || {
            let cells = processes_under(&tmp)
                .iter()
                .filter(|p| p.contains(" cell "))
                .count();
            let servers = servers_under(&tmp);
            cells == 2 && (!server || servers == 2)
        },
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, signal) };
    let started = std::time::Instant::now();
    let mut status = None;
    wait_for("the run to end", std::time::Duration::from_secs(10), || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    wait_for(
        "every process of the run to end",
        std::time::Duration::from_secs(10).saturating_sub(started.elapsed()),
        || processes_under(&tmp).is_empty(),
    );
    wait_for(
        "the run directory to go",
        std::time::Duration::from_secs(10).saturating_sub(started.elapsed()),
        || run_dirs(&tmp).is_empty(),
    );
    let status = status.unwrap();
    if signal == libc::SIGKILL {
        return;
    }
    assert_eq!(status.code(), Some(128 + signal));
    let xml = p.junit_doc();
    let all = cases(&xml);
    assert_eq!(all.len(), 4, "{xml}");
    for (name, verdict, message) in &all {
        assert_eq!(verdict, "error", "{name}: {xml}");
        assert!(message.starts_with("interrupted"), "{name}: {message}");
    }
}

#[test]
fn the_container_provider_names_backends_by_placement_and_refuses_kinds_without_a_twin() {
    let p = Project::new();
    p.backend(
        "hsm",
        "provider: softhsm\ncapabilities: [rsa2048, ed25519, pkcs11]\n",
    );
    p.suite(
        "sign.yaml",
        "suite: sign\nabout: x\ncases:\n  - name: rsa\n    steps:\n      - create_key: { alg: rsa2048, as: k }\n  - name: ed\n    steps:\n      - create_key: { alg: ed25519, as: k }\n",
    );
    let o = p
        .command("list")
        .args(["--provider", "container"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = out.lines().collect();
    // Only the kind with a twin runs, under its placed name; the software backend is
    // named as left out.
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].starts_with("sign.hsm@container/rsa"), "{out}");
    // The twin's profile loses what p11-kit cannot carry, and the skip says so.
    assert!(
        lines[1].starts_with("sign.hsm@container/ed") && lines[1].contains("p11-kit"),
        "{out}"
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no container twin): software"),
        "{}",
        text(&o)
    );
    // Asking for a backend without a twin is bad input.
    let o = p
        .command("list")
        .args(["--provider", "container", "--backend", "software"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("has no container twin"), "{}", text(&o));
}

#[test]
fn no_container_engine_is_a_clear_error_naming_docker_host() {
    let p = Project::new();
    p.backend(
        "hsm",
        "provider: softhsm\ncapabilities: [rsa2048, pkcs11]\n",
    );
    p.suite(
        "sign.yaml",
        "suite: sign\nabout: x\ncases:\n  - name: rsa\n    steps:\n      - create_key: { alg: rsa2048, as: k }\n",
    );
    let nowhere = p.dir.path().join("no-engine.sock");
    let o = p
        .command("run")
        .arg("--junit")
        .arg(p.junit())
        .args(["--provider", "container"])
        .env("DOCKER_HOST", format!("unix://{}", nowhere.display()))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let said = text(&o);
    assert!(
        said.contains("DOCKER_HOST=unix://") && said.contains("no-engine.sock"),
        "{said}"
    );
}
