//! `hsm-harness signer` end to end through the KMIP signer against our relay
//! (`kmip2pkcs11`) on a fresh SoftHSMv2 token: create-key, sign (verified with
//! `openssl`), public-key, random and destroy, with the default TLS settings (TLS 1.3).
//! Also against the relay standing in for the seed-003 relay (`[testing] mimic`): no
//! Locate, so keys are reached in later processes through the handles the key map
//! recorded; and a server that refuses EC key pairs still gives a working RSA signer.
//!
//! The relay runs as a real TLS server with generated CA, server and client
//! certificates, on an ephemeral loopback port; its token PIN reaches it through the
//! environment. Missing SoftHSMv2, OpenSSL or the relay binary is a failure, never a
//! silent pass.

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::pki::Pki;
use testkit::softhsm::{Hsm, HsmOptions, Token};

const MODULE: &str = testkit::softhsm::MODULE;
const LABEL: &str = "relay-cli";
const SO_PIN: &str = "so-pin-3141";
const USER_PIN: &str = "user-pin-2718";
const INSTALL_HINT: &str = "run ci/install-deps and `cargo build --workspace`";

/// The relay binary, which cargo builds next to hsm-harness for a workspace test run.
fn relay_binary() -> PathBuf {
    let harness = PathBuf::from(env!("CARGO_BIN_EXE_hsm-harness"));
    let bin = harness.with_file_name("kmip2pkcs11");
    assert!(bin.exists(), "{} is missing: {INSTALL_HINT}", bin.display());
    bin
}

/// How the relay behaves.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Our relay as it is.
    Standard,
    /// Standing in for the seed-003 relay; clients log in with the token label and PIN.
    /// `ec: false` switches EC key generation off in the token.
    Seed003 { ec: bool },
}

/// A relay on a fresh token, stopped (SIGTERM) when dropped.
struct Relay {
    softhsm: Hsm,
    child: Child,
    port: u16,
    pki: Pki,
    mode: Mode,
}

impl Drop for Relay {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child; no memory involved.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

impl Relay {
    fn start(mode: Mode) -> Relay {
        // A list of what stays: SoftHSMv2 2.6.1 ignores a "-CKM_..." entry for EC key
        // generation.
        let conf_lines = match mode {
            Mode::Seed003 { ec: false } => {
                "slots.mechanisms = CKM_RSA_PKCS_KEY_PAIR_GEN,CKM_RSA_PKCS,\
                 CKM_SHA256_RSA_PKCS,CKM_RSA_PKCS_PSS,CKM_SHA256_RSA_PKCS_PSS,CKM_SHA256\n"
            }
            _ => "",
        };
        let softhsm = Hsm::with(HsmOptions {
            token: Token::new(LABEL, USER_PIN, SO_PIN),
            conf_lines: conf_lines.into(),
            ..HsmOptions::default()
        });
        let dir = softhsm.dir();
        let pki = Pki::new();
        let ready = dir.join("relay.ready");
        let config = dir.join("relay.toml");
        // The seed-003 relay takes the PIN from each client's credential.
        let rest = match mode {
            Mode::Standard => "user_pin = \"env:RELAY_TEST_PIN\"\n",
            Mode::Seed003 { .. } => {
                "\n[auth]\ncredentials = \"token\"\n\n[testing]\nmimic = \"seed-003\"\n"
            }
        };
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:0\"\nready_file = \"{}\"\nlog_level = \"warn\"\n\n\
                 [tls]\ncert = \"{}\"\nkey = \"{}\"\n\n\
                 [pkcs11]\nlib_path = \"{MODULE}\"\nslot = \"{LABEL}\"\n{rest}",
                ready.display(),
                pki.server_cert.display(),
                pki.server_key.display(),
            ),
        )
        .expect("relay.toml");
        let child = Command::new(relay_binary())
            .arg("--config")
            .arg(&config)
            .env("SOFTHSM2_CONF", softhsm.conf())
            .env("RELAY_TEST_PIN", USER_PIN)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("relay.stderr")).expect("log"))
            .spawn()
            .expect("start the relay");
        let mut relay = Relay {
            softhsm,
            child,
            port: 0,
            pki,
            mode,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        relay.port = loop {
            if let Some(port) = std::fs::read_to_string(&ready).ok().and_then(|t| {
                let addr = t.split_whitespace().next()?.to_string();
                addr.rsplit(':').next()?.parse().ok()
            }) {
                break port;
            }
            if let Ok(Some(status)) = relay.child.try_wait() {
                panic!(
                    "the relay exited ({status}): {}",
                    std::fs::read_to_string(relay.softhsm.dir().join("relay.stderr"))
                        .unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "the relay never became ready");
            std::thread::sleep(Duration::from_millis(50));
        };
        relay
    }

    fn path(&self, name: &str) -> PathBuf {
        self.softhsm.dir().join(name)
    }

    /// A signer configuration with one KMIP signer at the relay, default TLS settings;
    /// for the seed-003 relay, its login and `force` (its Query lacks Destroy, Revoke).
    fn signer_config(&self) -> PathBuf {
        let path = self.path("signers.conf");
        let login = match self.mode {
            Mode::Standard => String::new(),
            Mode::Seed003 { .. } => {
                format!("username = \"{LABEL}\"\npassword = \"env:RELAY_TEST_PIN\"\nforce = true\n")
            }
        };
        std::fs::write(
            &path,
            format!(
                "[[signers]]\ntype = \"KMIP\"\nname = \"relay\"\nhost = \"127.0.0.1\"\nport = {}\n\
                 server_ca_cert_path = \"{}\"\nclient_cert_path = \"{}\"\n\
                 client_cert_private_key_path = \"{}\"\n{login}",
                self.port,
                self.pki.ca_cert.display(),
                self.pki.client_cert.display(),
                self.pki.client_key.display(),
            ),
        )
        .expect("signer config");
        path
    }

    /// `hsm-harness signer --config .. --state .. ARGS`; the PIN must never show.
    fn signer(&self, args: &[&str]) -> Output {
        let out = Command::new(env!("CARGO_BIN_EXE_hsm-harness"))
            .arg("signer")
            .arg("--config")
            .arg(self.signer_config())
            .arg("--state")
            .arg(self.path("state"))
            .args(args)
            .env("RELAY_TEST_PIN", USER_PIN)
            .env_remove("RUST_LOG")
            .output()
            .expect("run hsm-harness");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!text.contains(USER_PIN), "the PIN shows: {text}");
        out
    }

    fn json(&self, args: &[&str]) -> Value {
        let out = self.signer(args);
        assert!(
            out.status.success(),
            "{}",
            describe(&format!("signer {}", args.join(" ")), &out)
        );
        serde_json::from_slice(&out.stdout).expect("JSON on stdout")
    }
}

fn describe(what: &str, out: &Output) -> String {
    format!(
        "`{what}` exited with {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `create-key` in one process; the public key and a signature, verified with OpenSSL,
/// in later ones. Returns the key identifier.
fn create_then_sign_in_later_processes(relay: &Relay, alg: &str) -> String {
    let created = relay.json(&["create-key", "--alg", alg]);
    let key = created["key"].as_str().expect("key identifier").to_string();
    let data = relay.path(&format!("{alg}.txt"));
    std::fs::write(&data, format!("signed with {alg} in a later process")).unwrap();
    let sig = relay.path(&format!("{alg}.sig"));
    relay.json(&[
        "sign",
        "--key",
        &key,
        "--alg",
        alg,
        "--in",
        data.to_str().unwrap(),
        "--out",
        sig.to_str().unwrap(),
    ]);
    let pem_out = relay.signer(&["public-key", "--key", &key]);
    assert!(
        pem_out.status.success(),
        "{}",
        describe("public-key", &pem_out)
    );
    let pem = relay.path(&format!("{alg}.pem"));
    std::fs::write(&pem, &pem_out.stdout).unwrap();
    // Independent verification: OpenSSL, not the relay or our verifier.
    let verify = Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(&pem)
        .arg("-signature")
        .arg(&sig)
        .arg(&data)
        .output()
        .unwrap_or_else(|e| panic!("openssl: {e}: {INSTALL_HINT}"));
    assert!(
        verify.status.success(),
        "{alg}: {}",
        describe("openssl dgst", &verify)
    );
    key
}

#[test]
fn seed003_relay_keys_are_signed_with_in_later_processes_without_locate() {
    let relay = Relay::start(Mode::Seed003 { ec: true });
    let rsa = create_then_sign_in_later_processes(&relay, "rsa2048");
    let ec = create_then_sign_in_later_processes(&relay, "ecdsa-p256");
    // Each process above bound the signer again through its identity key, by handle.
    let listed = relay.json(&["list"]).to_string();
    assert!(listed.contains(&rsa) && listed.contains(&ec), "{listed}");
    // The server has no Locate: listing orphans says so instead of guessing.
    let orphans = relay.json(&["list", "--orphans"]).to_string();
    assert!(orphans.contains("does not offer Locate"), "{orphans}");
    // No Destroy either: destroy is refused, and the key keeps working.
    let destroy = relay.signer(&["destroy", "--key", &rsa]);
    assert!(
        !destroy.status.success(),
        "destroy without Destroy succeeded"
    );
    assert!(
        String::from_utf8_lossy(&destroy.stderr).contains("Operation Not Supported"),
        "{}",
        describe("destroy", &destroy)
    );
}

#[test]
fn a_server_refusing_ec_key_pairs_still_gives_a_working_rsa_signer() {
    let relay = Relay::start(Mode::Seed003 { ec: false });
    // The identity key falls back to RSA; RSA keys work in later processes.
    create_then_sign_in_later_processes(&relay, "rsa2048");
    let refused = relay.signer(&["create-key", "--alg", "ecdsa-p256"]);
    assert!(!refused.status.success(), "an EC key was made without EC");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("unsupported") && stderr.contains("General Failure"),
        "{}",
        describe("create-key ecdsa-p256", &refused)
    );
    // A later process's status still names EC as unavailable, with the server's words.
    let status = relay.json(&["status"]);
    let signer = &status["signers"][0];
    assert_eq!(signer["state"], "bound", "{status}");
    let unavailable = signer["unavailable"].as_array().expect("unavailable list");
    let ec = unavailable
        .iter()
        .find(|u| u["key_type"] == "ec-p256")
        .unwrap_or_else(|| panic!("ec-p256 is not named unavailable: {status}"));
    let reason = ec["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("General Failure") && reason.contains("Cryptographic Domain Parameters"),
        "{status}"
    );
}

#[test]
fn create_sign_verify_random_destroy_through_the_relay() {
    let relay = Relay::start(Mode::Standard);
    let created = relay.json(&["create-key", "--alg", "rsa2048"]);
    assert_eq!(created["signer"], "relay", "{created}");
    let key = created["key"].as_str().expect("key identifier").to_string();
    assert_eq!(key.len(), 40, "{created}");

    let data = relay.path("data.txt");
    std::fs::write(&data, b"signed through the relay").unwrap();
    let sig = relay.path("data.sig");
    let signed = relay.json(&[
        "sign",
        "--key",
        &key,
        "--alg",
        "rsa2048",
        "--in",
        data.to_str().unwrap(),
        "--out",
        sig.to_str().unwrap(),
    ]);
    assert_eq!(signed["key"], key.as_str(), "{signed}");

    let pem_out = relay.signer(&["public-key", "--key", &key]);
    assert!(
        pem_out.status.success(),
        "{}",
        describe("public-key", &pem_out)
    );
    let pem = relay.path("key.pem");
    std::fs::write(&pem, &pem_out.stdout).unwrap();
    // Independent verification: OpenSSL, not the relay or our verifier.
    let openssl_verify = || {
        Command::new("openssl")
            .args(["dgst", "-sha256", "-verify"])
            .arg(&pem)
            .arg("-signature")
            .arg(&sig)
            .arg(&data)
            .output()
            .unwrap_or_else(|e| panic!("openssl: {e}: {INSTALL_HINT}"))
    };
    let verify = openssl_verify();
    assert!(
        verify.status.success(),
        "{}",
        describe("openssl dgst", &verify)
    );
    std::fs::write(&data, b"tampered").unwrap();
    assert!(
        !openssl_verify().status.success(),
        "openssl verified tampered data"
    );

    let random = relay.json(&["random", "--bytes", "32"]);
    assert_eq!(random["bytes"], 32, "{random}");
    assert_eq!(random["hex"].as_str().map(str::len), Some(64), "{random}");

    let status = relay.json(&["status"]);
    let text = status.to_string();
    assert!(
        text.contains("TLS 1.3"),
        "status does not show TLS 1.3: {text}"
    );

    let before = public_keys_on_token(&relay);
    relay.json(&["destroy", "--key", &key]);
    let gone = relay.signer(&["public-key", "--key", &key]);
    assert!(!gone.status.success(), "the destroyed key still answers");
    // The token itself holds one key pair fewer (read beside the relay; what is left is
    // the signer's identity key).
    assert_eq!(public_keys_on_token(&relay), before - 1);
}

/// The public key objects on the relay's token, read with OpenSC's pkcs11-tool.
fn public_keys_on_token(relay: &Relay) -> usize {
    let objects = Command::new("pkcs11-tool")
        .args([
            "--module",
            MODULE,
            "--token-label",
            LABEL,
            "--list-objects",
            "--type",
            "pubkey",
        ])
        .env("SOFTHSM2_CONF", relay.softhsm.conf())
        .output()
        .unwrap_or_else(|e| panic!("pkcs11-tool: {e}: {INSTALL_HINT}"));
    assert!(
        objects.status.success(),
        "{}",
        describe("pkcs11-tool", &objects)
    );
    String::from_utf8_lossy(&objects.stdout)
        .lines()
        .filter(|l| l.starts_with("Public Key Object"))
        .count()
}
