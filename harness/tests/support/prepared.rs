//! A SoftHSMv2 token prepared outside the harness, as a vendor's token would be: the
//! external PKCS#11 backend of `tests/external.rs` and `tests/certify.rs`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use testkit::softhsm::{Hsm, MODULE};

/// A token prepared outside the harness: `softhsm2-util --init-token` and an RSA key
/// pair made with `pkcs11-tool --keypairgen` (CKA_ID 01, label `pre`), with its PIN in
/// a file, described as an external PKCS#11 backend.
pub struct Prepared {
    pub hsm: Hsm,
    pub dir: tempfile::TempDir,
}

impl Prepared {
    pub fn new() -> Prepared {
        super::require_tools();
        let p = Prepared {
            hsm: Hsm::new(),
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
        let pin = p.dir.path().join("user.pin");
        std::fs::write(&pin, format!("{}\n", p.hsm.token().pin)).unwrap();
        std::fs::set_permissions(&pin, std::fs::Permissions::from_mode(0o600)).unwrap();
        p
    }

    /// A backend file for the token, with `more` provider settings (YAML lines at the
    /// settings' indentation) and the standard profile.
    pub fn backend(&self, more: &str) -> PathBuf {
        self.backend_in(self.dir.path(), more, "")
    }

    /// `external.yaml` in `dir` for the token, with `more` provider settings and the
    /// standard profile plus `more_caps` (", cap, cap").
    pub fn backend_in(&self, dir: &Path, more: &str, more_caps: &str) -> PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join("external.yaml");
        std::fs::write(
            &path,
            format!(
                "backend: external\nabout: a SoftHSMv2 token prepared by hand\nprovider:\n  pkcs11:\n    module: {MODULE}\n    slot: {{ label: {} }}\n    user_pin: file:{}\n    env: {{ SOFTHSM2_CONF: {} }}\n{more}capabilities: [rsa2048, rsa2048-pss, ecdsa-p256, ecdsa-p384, ed25519, random, persistent-keys, hsm, pkcs11, pkcs11-shim, destroy{more_caps}]\n",
                self.hsm.token().label,
                self.dir.path().join("user.pin").display(),
                self.hsm.conf().display()
            ),
        )
        .unwrap();
        path
    }

    /// pkcs11-tool on the token, logged in; its stdout.
    pub fn tool(&self, args: &[&str]) -> String {
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

    /// The objects on the token as pkcs11-tool lists them, and the DER of the
    /// prepared public key.
    pub fn state(&self) -> (String, Vec<u8>) {
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
}

/// The prepared pair and nothing else: no key made by the run is left.
pub fn assert_only_the_prepared_pair(listed: &str) {
    let keys = listed
        .lines()
        .filter(|l| l.starts_with("Public Key Object") || l.starts_with("Private Key Object"))
        .count();
    assert_eq!(keys, 2, "{listed}");
    assert_eq!(listed.matches("label:      pre").count(), 2, "{listed}");
}
