//! The PKCS#11 shim through the real binary: faults a suite injects reach the signer,
//! `trace` steps pass and fail on what the trace says, the trace lands in the cell's
//! JUnit `system-out` (also when the cell crashed), and a cell that needs the shim is
//! skipped with the reason when the library is not there. Needs SoftHSMv2.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_hsm-harness");

const SOFTHSM: &str =
    "provider:\n  softhsm: {}\ncapabilities: [rsa2048, rsa2048-pss, ecdsa-p256, ecdsa-p384, ed25519, random, hsm, pkcs11-shim]\n";

/// A scratch project with one SoftHSMv2 backend (the shim only when a case asks).
struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    fn new(suite: &str) -> Self {
        Self::in_dir(tempfile::tempdir().unwrap(), suite)
    }

    fn in_dir(dir: tempfile::TempDir, suite: &str) -> Self {
        let p = Project { dir };
        std::fs::create_dir_all(p.path("suites")).unwrap();
        std::fs::create_dir_all(p.path("backends")).unwrap();
        p.backend("softhsm", SOFTHSM);
        std::fs::write(
            p.path("suites/s.yaml"),
            format!("suite: s\nabout: x\ncases:\n{suite}"),
        )
        .unwrap();
        p
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn backend(&self, name: &str, rest: &str) {
        std::fs::write(
            self.path(&format!("backends/{name}.yaml")),
            format!("backend: {name}\nabout: test backend\n{rest}"),
        )
        .unwrap();
    }

    fn run_with(&self, bin: &Path) -> (Output, String) {
        let o = Command::new(bin)
            .arg("run")
            .arg("--suites-dir")
            .arg(self.path("suites"))
            .arg("--backends-dir")
            .arg(self.path("backends"))
            .arg("--junit")
            .arg(self.path("junit.xml"))
            .output()
            .unwrap();
        let xml = std::fs::read_to_string(self.path("junit.xml")).unwrap_or_else(|_| {
            panic!(
                "no JUnit file: {}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )
        });
        testkit::junit10::assert_valid(&xml);
        (o, xml)
    }

    fn run(&self) -> (Output, String) {
        self.run_with(Path::new(BIN))
    }
}

struct Cell {
    backend: String,
    name: String,
    verdict: String,
    message: String,
    out: String,
}

fn cells(xml: &str) -> Vec<Cell> {
    let doc = roxmltree::Document::parse(xml).expect("JUnit is well-formed XML");
    doc.descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .map(|tc| {
            let verdict = tc
                .children()
                .find(|c| ["failure", "error", "skipped"].contains(&c.tag_name().name()));
            Cell {
                backend: tc
                    .attribute("classname")
                    .unwrap()
                    .rsplit('.')
                    .next()
                    .unwrap()
                    .to_string(),
                name: tc.attribute("name").unwrap().to_string(),
                verdict: verdict.map_or("passed".into(), |v| v.tag_name().name().to_string()),
                message: verdict
                    .and_then(|v| v.attribute("message"))
                    .unwrap_or_default()
                    .to_string(),
                out: tc
                    .children()
                    .find(|c| c.has_tag_name("system-out"))
                    .and_then(|c| c.text())
                    .unwrap_or_default()
                    .to_string(),
            }
        })
        .collect()
}

fn cell<'a>(cells: &'a [Cell], name: &str) -> &'a Cell {
    cells
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no cell '{name}'"))
}

#[test]
fn injected_faults_reach_the_signer_and_the_trace_is_in_the_report() {
    let p = Project::new(
        "  - name: sign refused by the module
    shim:
      rules:
        - { function: C_Sign, action: return, rv: CKR_DEVICE_ERROR, from_call: 3 }
    steps:
      - create_key: { alg: ecdsa-p256, as: k }
      - trace: { mark: made }
      - sign: { key: k, expect: { error: backend } }
      - trace: { since: made, count: { C_Sign: 1, C_SignInit: 1 }, not_called: [C_GenerateRandom] }
  - name: a trace count that does not hold fails the cell
    steps:
      - random: { bytes: 8, from: backend }
      - trace: { count: { C_GenerateRandom: 2 } }
",
    );
    let (o, xml) = p.run();
    assert_eq!(o.status.code(), Some(1), "{xml}");
    let cells = cells(&xml);

    // The first C_Sign calls made the identity key's proof at first connect; the
    // third is the step's length query, refused by the shim.
    let c = cell(&cells, "sign refused by the module");
    assert_eq!(
        c.verdict, "passed",
        "{}: {}\n{}",
        c.verdict, c.message, c.out
    );
    assert!(c.out.contains("== PKCS#11 shim trace:"), "{}", c.out);
    assert!(
        c.out.contains("C_Sign#3") && c.out.contains("CKR_DEVICE_ERROR (injected: return)"),
        "{}",
        c.out
    );

    let c = cell(&cells, "a trace count that does not hold fails the cell");
    assert_eq!(c.verdict, "failure", "{}", c.out);
    assert!(
        c.message
            .contains("C_GenerateRandom was called 1 time(s) since the cell started, expected 2"),
        "{}",
        c.message
    );
}

#[test]
fn a_module_that_aborts_is_an_error_with_the_trace_up_to_the_crash() {
    let p = Project::new(
        "  - name: login aborts
    shim:
      rules:
        - { function: C_Login, action: abort }
    steps:
      - random: { bytes: 8 }
",
    );
    let (o, xml) = p.run();
    assert_eq!(o.status.code(), Some(1), "{xml}");
    let cells = cells(&xml);
    let c = cell(&cells, "login aborts");
    assert_eq!(c.verdict, "error", "{}", c.out);
    assert!(c.message.contains("SIGABRT"), "{}", c.message);
    assert!(
        c.out.contains("C_Login#1") && c.out.contains("(aborted) (injected: abort)"),
        "{}",
        c.out
    );
}

/// The acceptance line of the shim issue: a module that aborts inside C_Sign makes that
/// cell an `<error>` with the signal; every other cell of the run is reported as it
/// ran, and the JUnit file is complete (counts agree with the testcases).
#[test]
fn an_abort_inside_c_sign_is_one_error_and_every_other_cell_is_reported() {
    let p = Project::new(
        "  - name: before
    steps:
      - create_key: { alg: ecdsa-p256, as: k }
      - sign: { key: k, as: sig }
      - verify: { signature: sig }
  - name: sign aborts
    shim:
      rules:
        - { function: C_Sign, action: abort }
    steps:
      - create_key: { alg: ecdsa-p256, as: k }
      - sign: { key: k }
  - name: after
    steps:
      - random: { bytes: 8 }
      - create_key: { alg: rsa2048, as: k }
      - sign: { key: k, as: sig }
      - verify: { signature: sig }
",
    );
    p.backend(
        "software",
        "provider: software\ncapabilities: [rsa2048, ecdsa-p256, random]\n",
    );
    let (o, xml) = p.run();
    assert_eq!(o.status.code(), Some(1), "{xml}");
    let all = cells(&xml);
    let verdicts: Vec<(String, String, String)> = all
        .iter()
        .map(|c| (c.backend.clone(), c.name.clone(), c.verdict.clone()))
        .collect();
    let expect = |backend: &str, name: &str, verdict: &str| {
        assert!(
            verdicts.contains(&(backend.into(), name.into(), verdict.into())),
            "no {backend}/{name} {verdict} in {verdicts:?}"
        );
    };
    expect("softhsm", "before", "passed");
    expect("softhsm", "sign aborts", "error");
    expect("softhsm", "after", "passed");
    expect("software", "before", "passed");
    expect("software", "after", "passed");
    // The shim case needs pkcs11-shim, which the software backend lacks.
    expect("software", "sign aborts", "skipped");
    assert_eq!(all.len(), 6, "{verdicts:?}");
    let crashed = all
        .iter()
        .find(|c| c.name == "sign aborts" && c.backend == "softhsm")
        .unwrap();
    assert!(crashed.message.contains("SIGABRT"), "{}", crashed.message);
    assert!(crashed.out.contains("C_Sign#1"), "{}", crashed.out);

    let doc = roxmltree::Document::parse(&xml).unwrap();
    let root = doc.root_element();
    assert_eq!(root.attribute("tests"), Some("6"), "{xml}");
    assert_eq!(root.attribute("errors"), Some("1"), "{xml}");
    // The junit-10 schema has no `skipped` on <testsuites>; the testsuites count them.
    assert_eq!(root.attribute("skipped"), None, "{xml}");
    let skipped: u32 = root
        .children()
        .filter(|n| n.has_tag_name("testsuite"))
        .map(|s| s.attribute("skipped").unwrap().parse::<u32>().unwrap())
        .sum();
    assert_eq!(skipped, 1, "{xml}");
    assert_eq!(root.attribute("failures"), Some("0"), "{xml}");
}

#[test]
fn a_transparent_shim_backend_passes_what_the_plain_backend_passes() {
    let p = Project::new(
        "  - name: sign and random
    steps:
      - create_key: { alg: rsa2048, as: k }
      - sign: { key: k, as: s }
      - verify: { signature: s }
      - random: { bytes: 16, from: backend }
",
    );
    p.backend(
        "through-shim",
        "provider:\n  softhsm: { shim: {} }\ncapabilities: [rsa2048, rsa2048-pss, ecdsa-p256, ecdsa-p384, ed25519, random, hsm, pkcs11-shim]\n",
    );
    let (o, xml) = p.run();
    assert_eq!(o.status.code(), Some(0), "{xml}");
    let cells = cells(&xml);
    assert_eq!(cells.len(), 2);
    for c in &cells {
        assert_eq!(c.verdict, "passed", "{}: {}", c.backend, c.message);
    }
    let shimmed = cells.iter().find(|c| c.backend == "through-shim").unwrap();
    assert!(
        shimmed.out.contains("C_GenerateRandom#1") && shimmed.out.contains("(nothing injected)"),
        "{}",
        shimmed.out
    );
    let plain = cells.iter().find(|c| c.backend == "softhsm").unwrap();
    assert!(!plain.out.contains("shim trace"), "{}", plain.out);
}

/// The harness, hard-linked where no `libp11shim.so` is beside it.
fn harness_without_the_shim(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let bin = dir.join("hsm-harness");
    if std::fs::hard_link(BIN, &bin).is_err() {
        std::fs::copy(BIN, &bin).unwrap();
    }
    bin
}

#[test]
fn without_the_library_cells_that_need_it_are_skipped_with_the_reason() {
    // Beside target/ (same file system, so the link works; not target/<profile>/).
    let target = Path::new(BIN).parent().unwrap().parent().unwrap();
    let scratch = tempfile::tempdir_in(target).unwrap();
    let p = Project::in_dir(
        scratch,
        "  - name: needs the shim
    steps:
      - trace: { mark: m }
  - name: does not
    steps:
      - random: { bytes: 8 }
",
    );
    p.backend(
        "always-shim",
        "provider:\n  softhsm: { shim: {} }\ncapabilities: [rsa2048, rsa2048-pss, ecdsa-p256, ecdsa-p384, ed25519, random, hsm, pkcs11-shim]\n",
    );
    let bin = harness_without_the_shim(&p.path("bin"));
    assert!(!bin.parent().unwrap().join("libp11shim.so").exists());
    let (o, xml) = p.run_with(&bin);
    assert_eq!(o.status.code(), Some(0), "{xml}");
    let cells = cells(&xml);
    let reason = |backend: &str, name: &str| {
        let c = cells
            .iter()
            .find(|c| c.backend == backend && c.name == name)
            .unwrap();
        (c.verdict.clone(), c.message.clone())
    };
    let (v, m) = reason("softhsm", "needs the shim");
    assert_eq!(v, "skipped");
    assert!(
        m.contains("needs the PKCS#11 shim")
            && m.contains("libp11shim.so not found")
            && m.contains("HSM_HARNESS_P11SHIM"),
        "{m}"
    );
    assert_eq!(reason("softhsm", "does not").0, "passed");
    for name in ["needs the shim", "does not"] {
        let (v, m) = reason("always-shim", name);
        assert_eq!(v, "skipped");
        assert!(
            m.contains("cannot start here") && m.contains("libp11shim.so"),
            "{m}"
        );
    }
}
