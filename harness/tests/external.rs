//! An external PKCS#11 backend (`provider: pkcs11`): a SoftHSMv2 token prepared
//! outside the harness, with a key pair of its own, runs the baseline suite; the key
//! pair is there unchanged afterwards and nothing the run made is left.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use testkit::softhsm::{Hsm, MODULE};

const BIN: &str = env!("CARGO_BIN_EXE_hsm-harness");

/// The repository's own suites.
fn suites() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../suites")
}

/// A token prepared by hand: `softhsm2-util --init-token` and an RSA key pair made with
/// `pkcs11-tool --keypairgen`, CKA_ID 01, label `pre`.
struct Prepared {
    hsm: Hsm,
    dir: tempfile::TempDir,
}

impl Prepared {
    fn new() -> Prepared {
        let hsm = Hsm::new();
        let p = Prepared {
            hsm,
            dir: tempfile::tempdir().unwrap(),
        };
        let out = p.tool(&[
            "--keypairgen",
            "--key-type",
            "rsa:2048",
            "--id",
            "01",
            "--label",
            "pre",
        ]);
        assert!(out.contains("Key pair generated"), "{out}");
        std::fs::create_dir_all(p.backends()).unwrap();
        let pin = p.dir.path().join("user.pin");
        std::fs::write(&pin, format!("{}\n", p.hsm.token().pin)).unwrap();
        std::fs::set_permissions(&pin, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(
            p.backends().join("external.yaml"),
            format!(
                "backend: external\nabout: a SoftHSMv2 token prepared by hand\nprovider:\n  pkcs11:\n    module: {MODULE}\n    slot: {{ label: {} }}\n    user_pin: file:{}\n    env: {{ SOFTHSM2_CONF: {} }}\ncapabilities: [rsa2048, rsa2048-pss, ecdsa-p256, ecdsa-p384, ed25519, random, persistent-keys, hsm, pkcs11, destroy]\n",
                p.hsm.token().label,
                pin.display(),
                p.hsm.conf().display()
            ),
        )
        .unwrap();
        p
    }

    fn backends(&self) -> PathBuf {
        self.dir.path().join("backends")
    }

    /// pkcs11-tool on the token, logged in; its stdout.
    fn tool(&self, args: &[&str]) -> String {
        let out = self
            .hsm
            .command("pkcs11-tool")
            .args(["--module", MODULE, "--token-label", &self.hsm.token().label])
            .args(["--login", "--pin", &self.hsm.token().pin])
            .args(args)
            .output()
            .expect("pkcs11-tool (apt-get install opensc; ci/install-deps does this)");
        assert!(
            out.status.success(),
            "pkcs11-tool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The objects on the token, as pkcs11-tool lists them, and the DER of the public
    /// key with CKA_ID 01.
    fn state(&self) -> (String, Vec<u8>) {
        let listed = self.tool(&["--list-objects"]);
        let der = self.dir.path().join("pre.der");
        self.tool(&[
            "--read-object",
            "--type",
            "pubkey",
            "--id",
            "01",
            "--output-file",
            der.to_str().unwrap(),
        ]);
        (listed, std::fs::read(&der).unwrap())
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
            // The cells must get the module's configuration from the backend file.
            .env_remove("SOFTHSM2_CONF")
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

/// The pre-existing key pair, as listed.
fn assert_only_the_prepared_pair(listed: &str) {
    let keys = listed
        .lines()
        .filter(|l| l.starts_with("Public Key Object") || l.starts_with("Private Key Object"))
        .count();
    assert_eq!(keys, 2, "{listed}");
    assert_eq!(listed.matches("label:      pre").count(), 2, "{listed}");
    assert_eq!(listed.matches("ID:         01").count(), 2, "{listed}");
}

#[test]
fn baseline_runs_on_a_prepared_token_and_leaves_it_as_it_was() {
    let p = Prepared::new();
    let before = p.state();
    assert_only_the_prepared_pair(&before.0);

    let (code, cells, out) = p.run(&suites(), "baseline-signing");
    assert_eq!(code, Some(0), "{out}");
    let passed = cells.iter().filter(|c| c["status"] == "passed").count();
    assert!(passed >= 8, "{out}");
    for c in &cells {
        assert!(c["status"] == "passed" || c["status"] == "skipped", "{c:#}");
    }
    // Each cell that ran says it put the token back (its keys destroyed, the
    // prepared pair checked).
    let ran = cells
        .iter()
        .find(|c| c["case"] == "rsa2048 signs and verifies independently");
    let said = ran.map(|c| c.to_string()).unwrap_or_default();
    assert!(said.contains("token left as found"), "{said}");
    assert!(said.contains("made by this cell"), "{said}");

    let after = p.state();
    assert_eq!(before.0, after.0, "the objects on the token changed");
    assert_eq!(before.1, after.1, "the prepared public key changed");
}

/// A case that fails half-way still has its key destroyed; a case that needs a PIN
/// change is skipped (a backend file cannot claim `credentials` for an external token).
#[test]
fn a_failing_case_leaves_no_key_and_administration_is_skipped() {
    let p = Prepared::new();
    let before = p.state();
    let suites = p.dir.path().join("suites");
    std::fs::create_dir_all(&suites).unwrap();
    std::fs::write(
        suites.join("ext.yaml"),
        "suite: ext\nabout: x\ncases:\n  - name: fails after creating a key\n    steps:\n      - create_key: { alg: ecdsa-p256, as: k }\n      - sign: { key: k, data: abc, as: sig }\n      - verify: { signature: sig, expect: mismatch }\n  - name: changes the PIN\n    steps:\n      - create_key: { alg: rsa2048, as: k }\n      - restart: { change_pin: [a] }\n",
    )
    .unwrap();
    let (code, cells, out) = p.run(&suites, "ext");
    assert_eq!(code, Some(1), "{out}");
    let failed = cells
        .iter()
        .find(|c| c["case"] == "fails after creating a key")
        .unwrap();
    assert_eq!(failed["status"], "failed", "{failed:#}");
    assert!(
        failed.to_string().contains("made by this cell"),
        "{failed:#}"
    );
    let pin = cells
        .iter()
        .find(|c| c["case"] == "changes the PIN")
        .unwrap();
    assert_eq!(pin["status"], "skipped", "{pin:#}");
    assert!(pin.to_string().contains("credentials"), "{pin:#}");
    assert_eq!(p.state(), before);
}
