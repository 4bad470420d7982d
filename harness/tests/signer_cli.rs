//! `hsm-harness signer` end to end against a real SoftHSMv2 token, checked with
//! OpenSC's `pkcs11-tool` and `openssl`.
//!
//! The acceptance line: with seed 001's SoftHSMv2 example (lib_path set to the Debian
//! path, a token made with softhsm2-util), `signer create-key` makes a key pair that
//! `pkcs11-tool --list-objects` shows with CKA_ID equal to the printed key identifier,
//! and `openssl` verifies a signature from `signer sign` with the `public-key` PEM.
//!
//! Every test gets its own temporary directory holding a `softhsm2.conf`, the token
//! directory, the signer configuration and the signer state. `SOFTHSM2_CONF` is only
//! ever set on child processes, so tests run in parallel on separate tokens.
//!
//! Missing SoftHSMv2, OpenSC or OpenSSL is a failure ("run ci/install-deps"), never a
//! silent pass.

mod support;
use support::*;

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use rstest::rstest;
use serde_json::Value;
use sha1::{Digest, Sha1};

/// One test's SoftHSMv2 world: token directory, softhsm2.conf, signer config, state.
struct World {
    softhsm: testkit::softhsm::Hsm,
    config: PathBuf,
    state: PathBuf,
}

impl World {
    /// A fresh token labelled "My token 1" (SO PIN 1234, user PIN 5678, as the seed
    /// makes it) and seed 001's configuration for it.
    fn new() -> Self {
        require_tools();
        let softhsm = seed_softhsm();
        let config = softhsm.dir().join("krill.conf");
        std::fs::write(&config, SEED_CONFIG).expect("signer config");
        World {
            state: softhsm.dir().join("state"),
            softhsm,
            config,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.softhsm.dir().join(name)
    }

    /// Writes a file in the test directory and returns its path.
    fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, contents).expect("write test file");
        path
    }

    /// Runs an external tool with this test's SOFTHSM2_CONF.
    fn tool(&self, program: &str, args: &[&str]) -> Run {
        let out = Command::new(program)
            .args(args)
            .env("SOFTHSM2_CONF", self.softhsm.conf())
            .current_dir(self.softhsm.dir())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}. {INSTALL_HINT}"));
        Run::from_output(format!("{program} {}", args.join(" ")), out)
    }

    /// `hsm-harness signer` with the seed configuration.
    fn signer(&self, args: &[&str]) -> Run {
        self.signer_with(&self.config, USER_PIN, &[], args)
    }

    /// `hsm-harness signer --config CONFIG --state STATE ARGS`, with extra environment.
    /// Whatever the outcome, `pin` (the PIN the configuration holds) must not show up
    /// on stdout or stderr.
    fn signer_with(&self, config: &Path, pin: &str, env: &[(&str, &str)], args: &[&str]) -> Run {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hsm-harness"));
        cmd.arg("signer")
            .arg("--config")
            .arg(config)
            .arg("--state")
            .arg(&self.state)
            .args(args)
            .env("SOFTHSM2_CONF", self.softhsm.conf())
            .env_remove("RUST_LOG")
            .current_dir(self.softhsm.dir());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run hsm-harness");
        let run = Run::from_output(format!("hsm-harness signer {}", args.join(" ")), out);
        for (stream, text) in [("stdout", &run.stdout), ("stderr", &run.stderr)] {
            assert!(
                !contains_word(text, pin),
                "the PIN {pin} appears on {stream}\n{}",
                run.describe()
            );
        }
        run
    }

    /// `create-key --alg ALG`; checks the JSON and returns the key identifier.
    fn create_key(&self, alg: &str) -> String {
        let created = self.signer(&["create-key", "--alg", alg]).json();
        assert_eq!(created["alg"], alg, "{created}");
        assert_eq!(created["signer"], SIGNER_NAME, "{created}");
        let key = created["key"]
            .as_str()
            .unwrap_or_else(|| panic!("no key identifier in {created}"))
            .to_string();
        assert!(
            key.len() == 40
                && key
                    .chars()
                    .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)),
            "key identifier {key} is not 40 lowercase hex digits"
        );
        key
    }

    /// `pkcs11-tool --list-objects`, logged in, on this test's token.
    fn list_objects(&self) -> String {
        self.tool(
            "pkcs11-tool",
            &[
                "--module",
                MODULE,
                "--token-label",
                TOKEN_LABEL,
                "--list-objects",
                "--login",
                "--pin",
                USER_PIN,
            ],
        )
        .success()
        .to_string()
    }
}

/// The header lines ("Private Key Object; RSA", ...) of the objects in a
/// `pkcs11-tool --list-objects` listing whose ID line is exactly `key`.
fn objects_with_id(listing: &str, key: &str) -> Vec<String> {
    let id_line = format!("ID:         {key}");
    let mut header = String::new();
    let mut found = Vec::new();
    for line in listing.lines() {
        if !line.is_empty() && !line.starts_with(char::is_whitespace) {
            header = line.trim_end().to_string();
        } else if line.trim() == id_line {
            found.push(header.clone());
        }
    }
    found
}

/// The key identifier of a PEM public key, computed here: SHA-1 over the
/// subjectPublicKey bits (RFC 5280 4.2.1.2 method 1).
fn key_id_of_pem(pem: &str) -> String {
    let lines: Vec<&str> = pem.lines().collect();
    assert!(
        lines.first() == Some(&"-----BEGIN PUBLIC KEY-----")
            && lines.last() == Some(&"-----END PUBLIC KEY-----"),
        "not a PEM public key:\n{pem}"
    );
    let der = base64::engine::general_purpose::STANDARD
        .decode(lines[1..lines.len() - 1].concat())
        .unwrap_or_else(|e| panic!("PEM body is not base64 ({e}):\n{pem}"));
    let spki = spki::SubjectPublicKeyInfoRef::try_from(der.as_slice())
        .unwrap_or_else(|e| panic!("PEM is not a SubjectPublicKeyInfo ({e}):\n{pem}"));
    hex::encode(Sha1::digest(spki.subject_public_key.raw_bytes()))
}

/// `openssl` verifying `sig` over `data` with the public key in `pem`, the way an
/// operator would for each algorithm.
fn openssl_verify(hsm: &World, alg: &str, pem: &Path, sig: &Path, data: &Path) -> Run {
    let (pem, sig, data) = (
        pem.to_str().unwrap(),
        sig.to_str().unwrap(),
        data.to_str().unwrap(),
    );
    let dgst = |digest: &str, opts: &[&str]| {
        let mut args = vec!["dgst", digest, "-verify", pem, "-signature", sig];
        args.extend_from_slice(opts);
        args.push(data);
        hsm.tool("openssl", &args)
    };
    match alg {
        "rsa2048" | "ecdsa-p256" => dgst("-sha256", &[]),
        "rsa2048-pss" => dgst(
            "-sha256",
            &[
                "-sigopt",
                "rsa_padding_mode:pss",
                "-sigopt",
                "rsa_pss_saltlen:32",
            ],
        ),
        "ecdsa-p384" => dgst("-sha384", &[]),
        "ed25519" => hsm.tool(
            "openssl",
            &[
                "pkeyutl", "-verify", "-pubin", "-inkey", pem, "-rawin", "-in", data, "-sigfile",
                sig,
            ],
        ),
        other => panic!("no openssl verification for {other}"),
    }
}

/// The acceptance line, per algorithm: the key pair is on the token under the printed
/// identifier, and openssl verifies `sign` output with the `public-key` PEM.
#[rstest]
#[case::rsa2048("rsa2048", "RSA")]
#[case::rsa2048_pss("rsa2048-pss", "RSA")]
#[case::ecdsa_p256("ecdsa-p256", "EC")]
#[case::ecdsa_p384("ecdsa-p384", "EC")]
#[case::ed25519("ed25519", "EC")]
fn created_key_is_on_the_token_and_openssl_verifies_its_signature(
    #[case] alg: &str,
    #[case] pkcs11_type: &str,
) {
    let hsm = World::new();
    let key = hsm.create_key(alg);

    // pkcs11-tool sees both halves, with CKA_ID = the printed identifier.
    let listing = hsm.list_objects();
    let id_line = format!("ID:         {key}");
    assert_eq!(
        listing.matches(&id_line).count(),
        2,
        "expected a public and a private object with `{id_line}`:\n{listing}"
    );
    let mut headers = objects_with_id(&listing, &key);
    headers.sort();
    assert!(
        headers.len() == 2
            && headers[0].starts_with(&format!("Private Key Object; {pkcs11_type}"))
            && headers[1].starts_with(&format!("Public Key Object; {pkcs11_type}")),
        "objects with ID {key}: {headers:?}\n{listing}"
    );

    // Sign a file.
    let data = hsm.write(
        "data",
        format!("RPKI manifest stand-in, signed with {alg}\n").repeat(100),
    );
    let sig = hsm.path("data.sig");
    let signed = hsm
        .signer(&[
            "sign",
            "--key",
            &key,
            "--alg",
            alg,
            "--in",
            data.to_str().unwrap(),
            "--out",
            sig.to_str().unwrap(),
        ])
        .json();
    assert_eq!(signed["key"], key.as_str(), "{signed}");
    assert_eq!(signed["alg"], alg, "{signed}");
    assert_eq!(signed["signer"], SIGNER_NAME, "{signed}");
    let sig_len = std::fs::metadata(&sig).expect("signature file").len();
    assert_eq!(signed["signature_bytes"], sig_len, "{signed}");

    // The public key as PEM: its identifier is the one the token holds.
    let pem = hsm
        .signer(&["public-key", "--key", &key])
        .success()
        .to_string();
    assert_eq!(
        key_id_of_pem(&pem),
        key,
        "the SHA-1 of the PEM's public key bits is not the key identifier:\n{pem}"
    );
    let pem_path = hsm.write("key.pem", &pem);

    // openssl verifies the signature, and refuses it over other data.
    let verified = openssl_verify(&hsm, alg, &pem_path, &sig, &data);
    let out = verified.success();
    assert!(
        out.contains("Verified OK") || out.contains("Signature Verified Successfully"),
        "{}",
        verified.describe()
    );
    let mut tampered_bytes = std::fs::read(&data).unwrap();
    tampered_bytes[10] ^= 0x01;
    let tampered = hsm.write("tampered", tampered_bytes);
    let refused = openssl_verify(&hsm, alg, &pem_path, &sig, &tampered);
    assert!(
        refused.code.is_some_and(|c| c != 0),
        "openssl accepted the signature over tampered data\n{}",
        refused.describe()
    );
}

/// The signer of a `status` entry, by name.
fn status_of<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["signers"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no signer {name} in {status}"))
}

/// A non-empty string field, or a panic showing the whole value.
fn non_empty_str<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field]
        .as_str()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| panic!("no {field} in {v}"))
}

#[test]
fn list_shows_the_key_with_its_signer() {
    let hsm = World::new();
    let key = hsm.create_key("ecdsa-p256");
    let listed = hsm.signer(&["list"]).json();
    let entry = listed["keys"]
        .as_array()
        .and_then(|keys| keys.iter().find(|k| k["key"] == key.as_str()))
        .unwrap_or_else(|| panic!("key {key} not listed: {listed}"));
    assert_eq!(entry["signer"], SIGNER_NAME, "{listed}");
    assert_eq!(entry["alg"], "ecdsa-p256", "{listed}");
    let owner_id = non_empty_str(entry, "signer_id");

    // The owner is the signer id SoftHSMv2 is bound to.
    let status = hsm.signer(&["status"]).json();
    assert_eq!(
        non_empty_str(status_of(&status, SIGNER_NAME), "signer_id"),
        owner_id,
        "{status}"
    );

    // The key map knows every key on the token (its identity key aside).
    let listed = hsm.signer(&["list", "--orphans"]).json();
    let softhsm_orphans = listed["orphans"]
        .as_array()
        .and_then(|o| o.iter().find(|o| o["signer"] == SIGNER_NAME))
        .unwrap_or_else(|| panic!("no orphans entry for {SIGNER_NAME}: {listed}"));
    assert_eq!(softhsm_orphans["keys"], serde_json::json!([]), "{listed}");
    assert_eq!(
        softhsm_orphans["pending"],
        serde_json::json!([]),
        "{listed}"
    );
}

#[test]
fn destroyed_key_is_gone_and_cannot_sign() {
    let hsm = World::new();
    let key = hsm.create_key("ecdsa-p256");
    let destroyed = hsm.signer(&["destroy", "--key", &key]).json();
    assert_eq!(destroyed["destroyed"], key.as_str(), "{destroyed}");
    assert_eq!(destroyed["signer"], SIGNER_NAME, "{destroyed}");

    let listing = hsm.list_objects();
    assert!(
        !listing.contains(&key),
        "pkcs11-tool still shows {key}:\n{listing}"
    );

    let data = hsm.write("data", "data");
    let sig = hsm.path("data.sig");
    let run = hsm.signer(&[
        "sign",
        "--key",
        &key,
        "--alg",
        "ecdsa-p256",
        "--in",
        data.to_str().unwrap(),
        "--out",
        sig.to_str().unwrap(),
    ]);
    let stderr = run.fails_with(1);
    assert!(stderr.contains(&key), "{}", run.describe());
    assert!(run.stdout.is_empty(), "{}", run.describe());
    assert!(!sig.exists(), "a signature file was written");

    let run = hsm.signer(&["public-key", "--key", &key]);
    assert!(run.fails_with(1).contains(&key), "{}", run.describe());
    let run = hsm.signer(&["destroy", "--key", &key]);
    assert!(run.fails_with(1).contains(&key), "{}", run.describe());

    let listed = hsm.signer(&["list"]).json();
    assert!(
        !listed.to_string().contains(&key),
        "destroyed key still listed: {listed}"
    );
}

#[test]
fn random_gives_the_bytes_asked_for_as_hex() {
    let hsm = World::new();
    let mut seen = Vec::new();
    for _ in 0..2 {
        let random = hsm.signer(&["random", "--bytes", "16"]).json();
        assert_eq!(random["bytes"], 16, "{random}");
        let hex = random["hex"].as_str().expect("hex string").to_string();
        assert!(
            hex.len() == 32 && hex.chars().all(|c| c.is_ascii_hexdigit()),
            "not 32 hex digits: {random}"
        );
        seen.push(hex);
    }
    assert_ne!(seen[0], seen[1], "two random values are equal");
}

#[test]
fn status_shows_softhsm_bound_as_the_default_signer() {
    let hsm = World::new();
    let status = hsm.signer(&["status"]).json();
    let softhsm = status_of(&status, SIGNER_NAME);
    // "bound" is the usable state: connected, logged in, bound to a signer id.
    assert_eq!(softhsm["state"], "bound", "{status}");
    non_empty_str(softhsm, "signer_id");
    assert_eq!(softhsm["type"], "PKCS#11", "{status}");
    let roles = softhsm["roles"].as_array().expect("roles array");
    assert!(roles.iter().any(|r| r == "default"), "{status}");
}

#[test]
fn wrong_pin_fails_without_showing_the_pin() {
    let hsm = World::new();
    let wrong_pin = "1111";
    let seed_pin_line = format!("user_pin = {USER_PIN}\n");
    assert!(SEED_CONFIG.contains(&seed_pin_line));
    let config = hsm.write(
        "wrong-pin.conf",
        SEED_CONFIG.replace(&seed_pin_line, &format!("user_pin = {wrong_pin}\n")),
    );

    let run = hsm.signer_with(&config, wrong_pin, &[], &["create-key", "--alg", "rsa2048"]);
    let stderr = run.fails_with(1);
    assert!(
        stderr.contains("CKR_PIN_INCORRECT") && stderr.contains(SIGNER_NAME),
        "{}",
        run.describe()
    );
    assert!(!stderr.contains(wrong_pin), "{}", run.describe());
    assert!(run.stdout.is_empty(), "{}", run.describe());

    let status = hsm.signer_with(&config, wrong_pin, &[], &["status"]).json();
    let softhsm = status_of(&status, SIGNER_NAME);
    assert_eq!(softhsm["state"], "unusable", "{status}");

    // Nothing was made, and the token still takes the right PIN.
    assert!(!hsm.list_objects().contains("ID:"));
    hsm.create_key("ecdsa-p256");
}

#[test]
fn unknown_config_key_exits_2_naming_file_and_line() {
    let hsm = World::new();
    // Line 7, inside the signer's table.
    let config = hsm.write(
        "unknown-key.conf",
        format!("{SEED_CONFIG}token_label = \"{TOKEN_LABEL}\"\n"),
    );
    let run = hsm.signer_with(&config, USER_PIN, &[], &["list"]);
    let stderr = run.fails_with(2);
    let place = format!("{}:7:", config.display());
    assert!(
        stderr.contains(&place) && stderr.contains("token_label"),
        "expected `{place}` and the key name\n{}",
        run.describe()
    );
    assert!(run.stdout.is_empty(), "{}", run.describe());
}

/// Every command, with every log message on: the PIN shows nowhere (each run is
/// checked by `signer_with`).
#[test]
fn pin_stays_out_of_output_even_with_trace_logging() {
    let hsm = World::new();
    let trace = [("RUST_LOG", "trace")];
    let run = |args: &[&str]| hsm.signer_with(&hsm.config, USER_PIN, &trace, args);
    let created = run(&["create-key", "--alg", "ecdsa-p256"]).json();
    let key = created["key"].as_str().expect("key").to_string();
    let data = hsm.write("data", "data");
    let sig = hsm.path("data.sig");
    run(&[
        "sign",
        "--key",
        &key,
        "--alg",
        "ecdsa-p256",
        "--in",
        data.to_str().unwrap(),
        "--out",
        sig.to_str().unwrap(),
    ])
    .success();
    run(&["public-key", "--key", &key]).success();
    run(&["list"]).success();
    run(&["random", "--bytes", "16"]).success();
    run(&["status"]).success();
    run(&["destroy", "--key", &key]).success();
    run(&[
        "sign",
        "--key",
        &key,
        "--alg",
        "ecdsa-p256",
        "--in",
        "data",
        "--out",
        "x",
    ]);
}

#[test]
fn pin_check_ignores_hex_but_catches_a_leak() {
    assert!(contains_word("error: PIN 5678 refused", "5678"));
    assert!(contains_word("\"user_pin\": \"5678\"", "5678"));
    assert!(contains_word("5678", "5678"));
    assert!(!contains_word("\"key\": \"ab5678cd\"", "5678"));
    assert!(!contains_word("\"hex\": \"5678ab\"", "5678"));
    assert!(!contains_word("0x15678", "5678"));
    assert!(!contains_word(
        "\"signer_id\": \"1a9a0e07-5678-4bb2-b699-91746365b1b9\"",
        "5678"
    ));
}
