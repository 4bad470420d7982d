//! An external KMIP backend (`provider: kmip`): a PyKMIP server started by the test,
//! as a vendor's server would be running already, holding a key pair made beforehand
//! with PyKMIP's own Python client. Stock PyKMIP speaks TLS 1.2 only: without the
//! backend file's opt-in every cell that runs is an error naming `allow_tls12`; with
//! it the baseline suite runs, and afterwards the server's database holds exactly what
//! it held before.

use std::path::{Path, PathBuf};
use std::process::Command;

use testkit::pki::Pki;
use testkit::pykmip::{PyKmip, Tls};

const BIN: &str = env!("CARGO_BIN_EXE_hsm-harness");

/// Debian's Python, which python3-pykmip installs the `kmip` package for.
const PYTHON: &str = "/usr/bin/python3";

/// The repository's own suites.
fn suites() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../suites")
}

/// Makes an RSA 2048 key pair named `vendor-pub`/`vendor-priv` with PyKMIP's client
/// and activates the private key. Arguments: port, CA, client certificate, client key.
const MAKE_VENDOR_PAIR: &str = r#"
import sys
from kmip import enums
from kmip.pie.client import ProxyKmipClient
port, ca, cert, key = sys.argv[1:5]
client = ProxyKmipClient(hostname="127.0.0.1", port=int(port), cert=cert, key=key,
                         ca=ca, config_file="/dev/null")
with client:
    public, private = client.create_key_pair(
        enums.CryptographicAlgorithm.RSA, 2048,
        public_name="vendor-pub", private_name="vendor-priv",
        public_usage_mask=[enums.CryptographicUsageMask.VERIFY],
        private_usage_mask=[enums.CryptographicUsageMask.SIGN])
    client.activate(private)
"#;

/// Every object in PyKMIP's database, one line each: identifier, class, owner, the
/// SHA-256 of its key material, its state and names. Argument: the database.
const DUMP_OBJECTS: &str = r#"
import hashlib, sqlite3, sys
db = sqlite3.connect(sys.argv[1])
for uid, cls, owner, value in db.execute(
        "select uid, class_type, owner, value from managed_objects order by uid"):
    state = db.execute("select state from crypto_objects where uid = ?", (uid,)).fetchone()
    names = [n for (n,) in db.execute(
        "select name from managed_object_names where mo_uid = ? order by name_index", (uid,))]
    print(uid, cls, owner, hashlib.sha256(value).hexdigest(), state, names)
"#;

/// A PyKMIP server with a vendor's key pair, and a directory for backend files and
/// reports.
struct Prepared {
    pki: Pki,
    server: PyKmip,
    dir: tempfile::TempDir,
}

impl Prepared {
    fn new() -> Prepared {
        let pki = Pki::new();
        let server = PyKmip::start(&pki, Tls::V12);
        let p = Prepared {
            pki,
            server,
            dir: tempfile::tempdir().unwrap(),
        };
        p.python(&[
            MAKE_VENDOR_PAIR,
            &p.server.port().to_string(),
            p.pki.ca_cert.to_str().unwrap(),
            p.pki.client_cert.to_str().unwrap(),
            p.pki.client_key.to_str().unwrap(),
        ]);
        std::fs::create_dir_all(p.backends()).unwrap();
        p
    }

    /// `python3 -c SCRIPT ARGS...`; its stdout.
    fn python(&self, script_and_args: &[&str]) -> String {
        let out = Command::new(PYTHON)
            .arg("-c")
            .args(script_and_args)
            .output()
            .expect("python3 (apt-get install python3-pykmip; ci/install-deps does this)");
        assert!(
            out.status.success(),
            "python3: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The server's objects, read from its database (not through KMIP).
    fn state(&self) -> String {
        let db = self.server.dir().join("pykmip.db");
        self.python(&[DUMP_OBJECTS, db.to_str().unwrap()])
    }

    fn backends(&self) -> PathBuf {
        self.dir.path().join("backends")
    }

    /// Writes `backends/external.yaml` for the server, with the TLS 1.2 opt-in or not.
    fn backend_file(&self, allow_tls12: bool) -> PathBuf {
        let path = self.backends().join("external.yaml");
        std::fs::write(
            &path,
            format!(
                "backend: external\nabout: a PyKMIP server started by hand\nprovider:\n  kmip:\n    host: 127.0.0.1\n    port: {}\n    server_ca: {}\n    client_cert: {}\n    client_key: {}\n    tls: {{ allow_tls12: {allow_tls12} }}\ncapabilities: [rsa2048, persistent-keys, hsm, destroy, tls12-only, client-cert-in-handshake]\n",
                self.server.port(),
                self.pki.ca_cert.display(),
                self.pki.client_cert.display(),
                self.pki.client_key.display(),
            ),
        )
        .unwrap();
        path
    }

    /// `hsm-harness run` on the external backend; exit code, the cells, the output.
    fn run(&self, suites_dir: &Path, suite: &str) -> (Option<i32>, Vec<serde_json::Value>, String) {
        let json = self.dir.path().join("out/results.json");
        let out = Command::new(BIN)
            .arg("run")
            .arg("--suites-dir")
            .arg(suites_dir)
            .arg("--backends-dir")
            .arg(self.backends())
            .args(["--backend", "external", "--suite", suite, "-j", "2"])
            .arg("--junit")
            .arg(self.dir.path().join("out/junit.xml"))
            .arg("--json")
            .arg(&json)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(
            &std::fs::read(&json).unwrap_or_else(|e| panic!("no JSON results ({e}): {text}")),
        )
        .unwrap();
        (
            out.status.code(),
            v["cells"].as_array().unwrap().clone(),
            text,
        )
    }
}

/// The vendor's pair is there, active, and nothing else.
fn assert_only_the_vendor_pair(state: &str) {
    let lines: Vec<&str> = state.lines().collect();
    assert_eq!(lines.len(), 2, "{state}");
    assert!(
        lines[0].contains("PublicKey") && lines[0].contains("vendor-pub"),
        "{state}"
    );
    assert!(
        lines[1].contains("PrivateKey")
            && lines[1].contains("vendor-priv")
            && lines[1].contains("(2,)"),
        "the private key is active: {state}"
    );
}

#[test]
fn a_tls12_only_server_is_refused_without_the_opt_in() {
    let p = Prepared::new();
    p.backend_file(false);
    let before = p.state();
    assert_only_the_vendor_pair(&before);

    let (code, cells, out) = p.run(&suites(), "baseline-signing");
    assert_eq!(code, Some(1), "{out}");
    let errored: Vec<&serde_json::Value> =
        cells.iter().filter(|c| c["status"] == "errored").collect();
    assert!(errored.len() >= 4, "every rsa2048 case errors: {out}");
    for c in &cells {
        assert!(
            c["status"] == "errored" || c["status"] == "skipped",
            "{c:#}"
        );
    }
    for c in errored {
        let said = c["message"].as_str().unwrap_or_default();
        assert!(
            said.contains("negotiated only TLS 1.2")
                && said.contains("tls: { allow_tls12: true }")
                && said.contains(&format!("127.0.0.1:{}", p.server.port())),
            "{c:#}"
        );
    }
    assert_eq!(p.state(), before, "a refused server is not touched");
}

#[test]
fn with_the_opt_in_baseline_runs_and_leaves_the_server_as_it_was() {
    let p = Prepared::new();
    let file = p.backend_file(true);
    let before = p.state();
    assert_only_the_vendor_pair(&before);

    let (code, cells, out) = p.run(&suites(), "baseline-signing");
    assert_eq!(code, Some(0), "{out}");
    let passed = cells.iter().filter(|c| c["status"] == "passed").count();
    assert!(passed >= 4, "{out}");
    for c in &cells {
        assert!(c["status"] == "passed" || c["status"] == "skipped", "{c:#}");
    }
    let ran = cells
        .iter()
        .find(|c| c["case"] == "rsa2048 signs and verifies independently")
        .map(|c| c.to_string())
        .unwrap_or_default();
    for said in [
        "server left as found",
        "made by this cell",
        // The operation PyKMIP lacks, and why the signer runs with force.
        "its Query does not list Modify Attribute",
        "TLS 1.2",
    ] {
        assert!(ran.contains(said), "{said}: {ran}");
    }
    assert_eq!(p.state(), before, "the server's objects changed");

    // probe says what the server is and lacks.
    let probe = Command::new(BIN)
        .arg("probe")
        .arg("--backend")
        .arg(&file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&probe.stdout);
    assert!(
        probe.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&probe.stderr)
    );
    for said in [
        "PyKMIP",
        "Create Key Pair",
        "Modify Attribute    not listed (the KMIP signer requires it)",
        "TLS 1.2",
        "RNG Retrieve  refused",
    ] {
        assert!(text.contains(said), "{said}: {text}");
    }
    assert_eq!(p.state(), before, "probing changed the server's objects");
}

/// A case that fails half-way still has its keys destroyed; cases that need to change
/// the server (credentials, an impostor key, a TLS set-up) are skipped with the reason.
#[test]
fn a_failing_case_leaves_no_key_and_administration_is_skipped() {
    let p = Prepared::new();
    p.backend_file(true);
    let before = p.state();
    let suites = p.dir.path().join("suites");
    std::fs::create_dir_all(&suites).unwrap();
    std::fs::write(
        suites.join("ext.yaml"),
        "suite: ext\nabout: x\ncases:\n  - name: fails after creating a key\n    steps:\n      - create_key: { alg: rsa2048, as: k }\n      - sign: { key: k, data: abc, as: sig }\n      - verify: { signature: sig, expect: mismatch }\n  - name: changes the password\n    steps:\n      - create_key: { alg: rsa2048, as: k }\n      - restart: { change_pin: [a] }\n  - name: a TLS 1.2-only server\n    instances: { a: { tls: { versions: [\"1.2\"] } } }\n    steps:\n      - create_key: { alg: rsa2048, as: k }\n",
    )
    .unwrap();
    let (code, cells, out) = p.run(&suites, "ext");
    assert_eq!(code, Some(1), "{out}");
    let case = |name: &str| {
        cells
            .iter()
            .find(|c| c["case"] == name)
            .unwrap_or_else(|| panic!("no cell '{name}': {out}"))
    };
    let failed = case("fails after creating a key");
    assert_eq!(failed["status"], "failed", "{failed:#}");
    assert!(
        failed.to_string().contains("made by this cell"),
        "{failed:#}"
    );
    let password = case("changes the password");
    assert_eq!(password["status"], "skipped", "{password:#}");
    assert!(
        password.to_string().contains("--allow-destructive"),
        "{password:#}"
    );
    let tls = case("a TLS 1.2-only server");
    assert_eq!(tls["status"], "skipped", "{tls:#}");
    assert!(tls.to_string().contains("'kmip'"), "{tls:#}");
    assert_eq!(p.state(), before);
}

/// `hsm-harness certify` on the server: its report.md and exit code.
fn certify(p: &Prepared, file: &Path, out: &Path) -> (Option<i32>, String, String) {
    let output = Command::new(BIN)
        .arg("certify")
        .arg("--backend")
        .arg(file)
        .arg("--suites-dir")
        .arg(suites())
        .arg("--out")
        .arg(out)
        .args(["-j", "2"])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let md = std::fs::read_to_string(out.join("report.md"))
        .unwrap_or_else(|e| panic!("no report.md ({e}) for {}: {text}", p.server.port()));
    (output.status.code(), md, text)
}

/// The acceptance line: a PyKMIP server started by hand is refused by `certify` for TLS
/// 1.2 with the reason; with the opt-in it is certified, and the report names the
/// operations PyKMIP lacks (Modify Attribute, which the signer requires; RNG Retrieve).
#[test]
fn certify_refuses_a_tls12_server_by_default_and_reports_what_pykmip_lacks_with_the_opt_in() {
    let p = Prepared::new();
    let before = p.state();

    let file = p.backend_file(false);
    let (code, md, text) = certify(&p, &file, &p.dir.path().join("refused"));
    assert_eq!(code, Some(1), "{text}");
    assert!(md.contains("**Verdict: NOT CONFORMANT**"), "{md}");
    // Markdown escapes underscores.
    let plain = md.replace("\\_", "_");
    assert!(
        plain.contains("negotiated only TLS 1.2") && plain.contains("allow_tls12"),
        "{md}"
    );

    let file = p.backend_file(true);
    let (_, md, text) = certify(&p, &file, &p.dir.path().join("allowed"));
    let table = &md[md
        .find("(seed 001's required ones first)")
        .unwrap_or_else(|| panic!("no operations table: {md}\n{text}"))..];
    let row = |op: &str| {
        table
            .lines()
            .find(|l| l.starts_with(&format!("| {op} |")))
            .unwrap_or_else(|| panic!("no row {op}: {table}"))
            .to_string()
    };
    // What PyKMIP lacks: Modify Attribute missing from its Query (it works all the
    // same), and RNG Retrieve, which it refuses.
    let modify = row("Modify Attribute");
    assert!(
        modify.contains("the server's Query does not list it"),
        "{modify}"
    );
    let rng = row("RNG Retrieve");
    assert!(rng.contains("| no ("), "{rng}");
    assert!(row("Create Key Pair").contains("| passed |"), "{table}");
    assert!(row("Sign").contains("| passed |"), "{table}");
    assert!(md.contains("PyKMIP"), "the server's identity: {md}");
    assert_eq!(p.state(), before, "certify changed the server's objects");
}
