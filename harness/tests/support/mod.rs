//! What the command-line tests share: running a command and reading what it did, the
//! PIN-leak check, and a SoftHSMv2 with seed 001's token of a test's own.
// Each test binary uses its own part of this module.
#![allow(dead_code)]

pub mod prepared;

use std::io::ErrorKind;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

/// What one command did.
pub struct Run {
    pub command: String,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from_output(command: String, out: Output) -> Self {
        Run {
            command,
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn describe(&self) -> String {
        format!(
            "`{}` exited with {:?}\n--- stdout\n{}--- stderr\n{}",
            self.command, self.code, self.stdout, self.stderr
        )
    }

    /// Asserts exit code 0 and returns stdout.
    pub fn success(&self) -> &str {
        assert_eq!(self.code, Some(0), "{}", self.describe());
        &self.stdout
    }

    /// Asserts exit code 0 and parses stdout as JSON.
    pub fn json(&self) -> Value {
        let out = self.success();
        serde_json::from_str(out)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e})\n{}", self.describe()))
    }

    /// Asserts the exit code and returns stderr.
    pub fn fails_with(&self, code: i32) -> &str {
        assert_eq!(self.code, Some(code), "{}", self.describe());
        &self.stderr
    }
}

/// True when `needle` occurs in `text` with no ASCII letter, digit or `-` right before
/// or after it: how a leaked PIN would show, and never true for a PIN's digits inside
/// a 40-digit key identifier, random hex, a token serial or a UUID signer id.
pub fn contains_word(text: &str, needle: &str) -> bool {
    let word = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-');
    text.match_indices(needle).any(|(i, _)| {
        !word(text[..i].chars().next_back()) && !word(text[i + needle.len()..].chars().next())
    })
}

/// Where Debian's softhsm2 package puts the module (seed 001's lib_path, Debian-style).
pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
/// Seed 001's token and PINs, as the seed makes them.
pub const TOKEN_LABEL: &str = "My token 1";
pub const SO_PIN: &str = "1234";
pub const USER_PIN: &str = "5678";
pub const SIGNER_NAME: &str = "SoftHSMv2";

/// A fresh SoftHSMv2 (testkit's) with seed 001's token; its `softhsm2.conf` goes to
/// child processes only (tests run in parallel).
pub fn seed_softhsm() -> testkit::softhsm::Hsm {
    testkit::softhsm::Hsm::with(testkit::softhsm::HsmOptions {
        token: testkit::softhsm::Token::new(TOKEN_LABEL, USER_PIN, SO_PIN),
        ..Default::default()
    })
}

/// Seed 001's SoftHSMv2 example as the seed writes it (the PIN is a TOML integer).
pub const SEED_CONFIG: &str = r#"[[signers]]
type = "PKCS#11"
name = "SoftHSMv2"
lib_path = "/usr/lib/softhsm/libsofthsm2.so"
slot = "My token 1"
user_pin = 5678
"#;

pub const INSTALL_HINT: &str =
    "SoftHSMv2, OpenSC and OpenSSL are needed by these tests: run ci/install-deps";

/// Fails the test (never skips it) when a tool or the module is missing.
pub fn require_tools() {
    assert!(
        Path::new(MODULE).exists(),
        "the SoftHSMv2 module {MODULE} is missing. {INSTALL_HINT}"
    );
    for (tool, arg) in [
        ("softhsm2-util", "--version"),
        ("pkcs11-tool", "--help"),
        ("openssl", "version"),
    ] {
        if let Err(e) = Command::new(tool).arg(arg).output() {
            if e.kind() == ErrorKind::NotFound {
                panic!("`{tool}` is not installed. {INSTALL_HINT}");
            }
            panic!("cannot run `{tool} {arg}`: {e}. {INSTALL_HINT}");
        }
    }
}

/// The run directories (`hsm-harness-run-*`) left in `tmp`.
pub fn run_dirs(tmp: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(tmp)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().contains("hsm-harness-run-"))
        .collect()
}

/// Polls `done` until it holds; fails the test, naming `what`, after `timeout`.
pub fn wait_for(what: &str, timeout: std::time::Duration, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
