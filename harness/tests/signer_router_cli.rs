//! Issue 3's acceptance lines for the signer router, end to end: the real
//! `hsm-harness signer` binary against SoftHSMv2 tokens, checked with OpenSC's
//! `pkcs11-tool` (and its `pkcs11-spy` tracing module), `softhsm2-util` and `openssl`.
//!
//! - Identity binding from the shell: a renamed signer keeps its keys; a freshly
//!   initialised token is a new signer and the old keys fail naming the missing signer
//!   (`signer-not-bound`, its id and last name); a different key pair put under the
//!   identity key's CKA_ID does not bind.
//! - A wrong PIN makes the signer unusable after exactly one `C_Login` (counted in the
//!   pkcs11-spy log), without the PIN showing.
//! - `kill -9` during `create-key` never leaves a reported key unmapped (OpenSSL,
//!   SoftHSMv2 and KMIP through our relay as default signers); on the relay, every pair
//!   a kill left behind (pending ones too) is an orphan that `destroy` removes.
//! - `list --orphans`: none on a fresh state, and keys the key map does not know are
//!   shown.
//! - `sign-one-off` with seed 001's SoftHSMv2 configuration uses the OpenSSL one-off
//!   signer and leaves the token untouched.
//!
//! As in `signer_cli.rs`: every test has its own temporary directory with its own
//! `softhsm2.conf` (passed as `SOFTHSM2_CONF` to child processes only), token directory,
//! signer configuration and state. Missing tools are a failure ("run ci/install-deps"),
//! never a silent pass. No run may print the configured PIN on stdout or stderr.

mod support;
use support::*;

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use rand::{Rng, SeedableRng};
use rstest::rstest;
use serde_json::Value;
use sha1::{Digest, Sha1};

/// Where Debian's opensc-pkcs11 package puts OpenSC's PKCS#11 tracing module.
const SPY_MODULES: [&str; 2] = [
    "/usr/lib/x86_64-linux-gnu/pkcs11-spy.so",
    "/usr/lib/x86_64-linux-gnu/pkcs11/pkcs11-spy.so",
];
const TOKEN_2_LABEL: &str = "My token 2";
const RENAMED: &str = "SoftHSMv2 renamed";
/// The signer the router adds for one-off keys when the default is not OpenSSL.
const ONE_OFF_NAME: &str = "OpenSSL one-off signer";
/// The one signer used without `--config`.
const IMPLICIT_NAME: &str = "Default OpenSSL signer";

/// The pkcs11-spy module, or a failure saying where it was looked for.
fn spy_module() -> &'static str {
    SPY_MODULES
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or_else(|| {
            panic!(
                "OpenSC's pkcs11-spy module is missing (looked for {}). {INSTALL_HINT}",
                SPY_MODULES.join(" and ")
            )
        })
}

/// Seed 001's configuration with one line replaced (asserting the line is there).
fn seed_config_with(line: &str, replacement: &str) -> String {
    assert!(
        SEED_CONFIG.lines().any(|l| l == line),
        "seed config has no line `{line}`"
    );
    SEED_CONFIG.replace(&format!("{line}\n"), &format!("{replacement}\n"))
}

/// Fails when `pin` shows on stdout or stderr of `run`.
fn assert_no_pin(run: &Run, pin: &str) {
    for (stream, text) in [("stdout", &run.stdout), ("stderr", &run.stderr)] {
        assert!(
            !contains_word(text, pin),
            "the PIN {pin} appears on {stream}\n{}",
            run.describe()
        );
    }
}

/// One test's SoftHSMv2 world: token directory, softhsm2.conf, seed configuration,
/// signer state.
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

    /// Initialises a new token in the next free slot (SO PIN 1234, user PIN 5678).
    fn init_token(&self, label: &str) {
        self.softhsm
            .init_token(&testkit::softhsm::Token::new(label, USER_PIN, SO_PIN));
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

    /// `pkcs11-tool --module MODULE --token-label LABEL --login --pin 5678 ARGS`.
    fn pkcs11_tool(&self, token: &str, args: &[&str]) -> Run {
        let mut all = vec![
            "--module",
            MODULE,
            "--token-label",
            token,
            "--login",
            "--pin",
            USER_PIN,
        ];
        all.extend_from_slice(args);
        self.tool("pkcs11-tool", &all)
    }

    /// `pkcs11-tool --list-objects`, logged in, on a token of this test.
    fn list_objects(&self, token: &str) -> String {
        self.pkcs11_tool(token, &["--list-objects"])
            .success()
            .to_string()
    }

    /// The hsm-harness command line, without running it: `signer [--config C]
    /// --state S ARGS`, this test's SOFTHSM2_CONF, no RUST_LOG.
    fn signer_command(&self, config: Option<&Path>, state: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hsm-harness"));
        cmd.arg("signer");
        if let Some(config) = config {
            cmd.arg("--config").arg(config);
        }
        cmd.arg("--state")
            .arg(state)
            .args(args)
            .env("SOFTHSM2_CONF", self.softhsm.conf())
            .env_remove("RUST_LOG")
            .env_remove("PKCS11SPY")
            .env_remove("PKCS11SPY_OUTPUT")
            .current_dir(self.softhsm.dir());
        cmd
    }

    /// `hsm-harness signer` with the seed configuration and this test's state.
    fn signer(&self, args: &[&str]) -> Run {
        self.signer_at(Some(&self.config), &self.state, USER_PIN, &[], args)
    }

    /// `hsm-harness signer` with another configuration (holding `pin`).
    fn signer_with(&self, config: &Path, pin: &str, args: &[&str]) -> Run {
        self.signer_at(Some(config), &self.state, pin, &[], args)
    }

    /// Runs `hsm-harness signer`; whatever the outcome, `pin` (the PIN the
    /// configuration holds) must not show up on stdout or stderr.
    fn signer_at(
        &self,
        config: Option<&Path>,
        state: &Path,
        pin: &str,
        env: &[(&str, &Path)],
        args: &[&str],
    ) -> Run {
        let mut cmd = self.signer_command(config, state, args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run hsm-harness");
        let run = Run::from_output(format!("hsm-harness signer {}", args.join(" ")), out);
        assert_no_pin(&run, pin);
        run
    }

    /// `signer sign --key KEY --alg ecdsa-p256` over `data` into `sig` with `config`.
    fn sign_with(&self, config: &Path, key: &str, data: &Path, sig: &Path) -> Run {
        self.signer_with(
            config,
            USER_PIN,
            &[
                "sign",
                "--key",
                key,
                "--alg",
                "ecdsa-p256",
                "--in",
                data.to_str().unwrap(),
                "--out",
                sig.to_str().unwrap(),
            ],
        )
    }

    /// `create-key --alg ecdsa-p256` with the seed configuration; returns the key.
    fn create_key(&self) -> String {
        let created = self.signer(&["create-key", "--alg", "ecdsa-p256"]).json();
        assert_eq!(created["signer"], SIGNER_NAME, "{created}");
        key_of(&created)
    }
}

/// The `key` of a `create-key` answer, checked to be 40 lowercase hex digits.
fn key_of(created: &Value) -> String {
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

/// The distinct CKA_IDs in a `pkcs11-tool --list-objects` listing.
fn ids_in(listing: &str) -> BTreeSet<String> {
    listing
        .lines()
        .filter_map(|l| l.trim().strip_prefix("ID:"))
        .map(|id| id.trim().to_string())
        .collect()
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

/// `openssl dgst -sha256 -verify PEM -signature SIG DATA` (ECDSA P-256, DER signature).
fn openssl_verify(hsm: &World, pem: &Path, sig: &Path, data: &Path) -> Run {
    hsm.tool(
        "openssl",
        &[
            "dgst",
            "-sha256",
            "-verify",
            pem.to_str().unwrap(),
            "-signature",
            sig.to_str().unwrap(),
            data.to_str().unwrap(),
        ],
    )
}

/// Asserts that openssl verifies `sig` over `data` with `pem` and refuses it over
/// other data.
fn assert_openssl_verifies(hsm: &World, pem: &Path, sig: &Path, data: &Path) {
    let verified = openssl_verify(hsm, pem, sig, data);
    assert!(
        verified.success().contains("Verified OK"),
        "{}",
        verified.describe()
    );
    let mut tampered = std::fs::read(data).expect("data");
    tampered[0] ^= 0x01;
    let tampered = hsm.write("tampered", tampered);
    let refused = openssl_verify(hsm, pem, sig, &tampered);
    assert!(
        refused.code.is_some_and(|c| c != 0),
        "openssl accepted the signature over tampered data\n{}",
        refused.describe()
    );
}

/// The signer of a `status` answer, by name.
fn status_of<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["signers"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no signer {name} in {status}"))
}

/// The signer id a `status` answer shows `name` bound to.
fn bound_id(status: &Value, name: &str) -> String {
    let signer = status_of(status, name);
    assert_eq!(signer["state"], "bound", "{status}");
    signer["signer_id"]
        .as_str()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| panic!("no signer_id for {name} in {status}"))
        .to_string()
}

/// The keys of a `list` answer.
fn listed_keys(listed: &Value) -> BTreeSet<String> {
    listed["keys"]
        .as_array()
        .unwrap_or_else(|| panic!("no keys array in {listed}"))
        .iter()
        .map(|k| {
            k["key"]
                .as_str()
                .unwrap_or_else(|| panic!("key entry without key in {listed}"))
                .to_string()
        })
        .collect()
}

/// The orphans a `list --orphans` answer shows for signer `name`; a signer whose
/// backend could not be listed fails the test with its error.
fn orphans_of(listed: &Value, name: &str) -> BTreeSet<String> {
    let entry = listed["orphans"]
        .as_array()
        .and_then(|o| o.iter().find(|o| o["signer"] == name))
        .unwrap_or_else(|| panic!("no orphans entry for {name}: {listed}"));
    entry["keys"]
        .as_array()
        .unwrap_or_else(|| panic!("orphans of {name} could not be listed: {entry}"))
        .iter()
        .map(|k| k.as_str().expect("orphan key id").to_string())
        .collect()
}

/// The identity key of the SoftHSMv2 signer on `token`: from `status` if it shows
/// one (an `identity_key` field), else the one CKA_ID on the token that is not among
/// `own_keys`.
fn identity_key(hsm: &World, status: &Value, token: &str, own_keys: &[&str]) -> String {
    if let Some(id) = status_of(status, SIGNER_NAME)["identity_key"].as_str() {
        return id.to_string();
    }
    let listing = hsm.list_objects(token);
    let others: Vec<String> = ids_in(&listing)
        .into_iter()
        .filter(|id| !own_keys.contains(&id.as_str()))
        .collect();
    assert_eq!(
        others.len(),
        1,
        "expected exactly one identity key besides {own_keys:?}:\n{listing}"
    );
    others.into_iter().next().unwrap()
}

/// Shell check, part 1: renaming the signer keeps its key; a freshly initialised token
/// is another signer and the key fails naming the missing one; the old token binds
/// again when configured again.
#[test]
fn renamed_signer_keeps_its_keys_and_a_fresh_token_names_the_missing_signer() {
    let hsm = World::new();
    let key = hsm.create_key();
    let original_id = bound_id(&hsm.signer(&["status"]).json(), SIGNER_NAME);
    let data = hsm.write("data", "RPKI manifest stand-in\n".repeat(50));
    let pem = hsm.write(
        "key.pem",
        hsm.signer(&["public-key", "--key", &key]).success(),
    );

    // Renamed: same signer id, and `sign` works through the new name.
    let renamed = hsm.write(
        "renamed.conf",
        seed_config_with(
            &format!("name = \"{SIGNER_NAME}\""),
            &format!("name = \"{RENAMED}\""),
        ),
    );
    let sig = hsm.path("renamed.sig");
    let signed = hsm.sign_with(&renamed, &key, &data, &sig).json();
    assert_eq!(signed["signer"], RENAMED, "{signed}");
    assert_openssl_verifies(&hsm, &pem, &sig, &data);
    let status = hsm.signer_with(&renamed, USER_PIN, &["status"]).json();
    assert_eq!(bound_id(&status, RENAMED), original_id, "{status}");

    // The renamed signer pointed at a freshly initialised token: a new signer; the key
    // fails with an error naming the missing signer by id and last name.
    hsm.init_token(TOKEN_2_LABEL);
    let token_2 = hsm.write(
        "token-2.conf",
        seed_config_with(
            &format!("name = \"{SIGNER_NAME}\""),
            &format!("name = \"{RENAMED}\""),
        )
        .replace(
            &format!("slot = \"{TOKEN_LABEL}\""),
            &format!("slot = \"{TOKEN_2_LABEL}\""),
        ),
    );
    let sig = hsm.path("token-2.sig");
    let run = hsm.sign_with(&token_2, &key, &data, &sig);
    let stderr = run.fails_with(1);
    for needle in [
        "signer-not-bound",
        original_id.as_str(),
        &format!("'{RENAMED}'"),
        key.as_str(),
    ] {
        assert!(
            stderr.contains(needle),
            "stderr does not name `{needle}`\n{}",
            run.describe()
        );
    }
    assert!(run.stdout.is_empty(), "{}", run.describe());
    assert!(!sig.exists(), "a signature file was written");
    let status = hsm.signer_with(&token_2, USER_PIN, &["status"]).json();
    let new_id = bound_id(&status, RENAMED);
    assert_ne!(
        new_id, original_id,
        "the fresh token bound the old id: {status}"
    );
    assert!(
        !hsm.list_objects(TOKEN_2_LABEL).contains(&key),
        "the key is on the fresh token"
    );

    // Back on the original token: it proves the original id again and signs.
    let sig = hsm.path("back.sig");
    let signed = hsm.sign_with(&renamed, &key, &data, &sig).json();
    assert_eq!(signed["signer"], RENAMED, "{signed}");
    assert_openssl_verifies(&hsm, &pem, &sig, &data);
    let status = hsm.signer_with(&renamed, USER_PIN, &["status"]).json();
    assert_eq!(bound_id(&status, RENAMED), original_id, "{status}");
}

/// Shell check, part 2: another key pair under the identity key's CKA_ID (put there
/// with pkcs11-tool) does not bind, with a warning about the identity key.
#[test]
fn an_impostor_key_under_the_identity_key_id_does_not_bind() {
    let hsm = World::new();
    let key = hsm.create_key();
    let data = hsm.write("data", "RPKI manifest stand-in\n".repeat(50));
    let sig = hsm.path("data.sig");
    hsm.sign_with(&hsm.config, &key, &data, &sig).success();
    let status = hsm.signer(&["status"]).json();
    let original_id = bound_id(&status, SIGNER_NAME);
    let identity = identity_key(&hsm, &status, TOKEN_LABEL, &[&key]);

    // Both halves of the identity key replaced by a fresh P-256 pair with the same ID.
    for half in ["privkey", "pubkey"] {
        hsm.pkcs11_tool(
            TOKEN_LABEL,
            &["--delete-object", "--type", half, "--id", &identity],
        )
        .success();
    }
    hsm.pkcs11_tool(
        TOKEN_LABEL,
        &[
            "--keypairgen",
            "--key-type",
            "EC:prime256v1",
            "--id",
            &identity,
            "--label",
            "impostor",
        ],
    )
    .success();
    let listing = hsm.list_objects(TOKEN_LABEL);
    assert!(
        listing.contains("label:      impostor") && ids_in(&listing).contains(&identity),
        "the impostor is not on the token under {identity}:\n{listing}"
    );

    let sig = hsm.path("impostor.sig");
    let run = hsm.sign_with(&hsm.config, &key, &data, &sig);
    let stderr = run.fails_with(1);
    assert!(
        stderr.contains("signer-not-bound") && stderr.contains(&original_id),
        "{}",
        run.describe()
    );
    assert!(!sig.exists(), "a signature file was written");
    let warning = stderr
        .lines()
        .find(|l| l.contains("WARN") && l.contains(&identity))
        .unwrap_or_else(|| {
            panic!(
                "no warning about identity key {identity}\n{}",
                run.describe()
            )
        });
    assert!(
        warning.contains("identity key") && warning.contains(&original_id),
        "the warning does not say it is the identity key of {original_id}: {warning}"
    );

    // The token is registered as a new signer instead.
    let status = hsm.signer(&["status"]).json();
    assert_ne!(bound_id(&status, SIGNER_NAME), original_id, "{status}");
}

/// Number of function calls named `function` in a pkcs11-spy log, whose call lines
/// read `N: C_Name` (a counter, the function name, nothing else).
fn spy_calls(log: &str, function: &str) -> usize {
    log.lines()
        .filter(|l| {
            l.split_once(": ").is_some_and(|(n, f)| {
                !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()) && f.trim_end() == function
            })
        })
        .count()
}

/// `signer status` (and `list --orphans`, which asks the signer twice) with a wrong
/// PIN: unusable after exactly one C_Login, counted by pkcs11-spy, PIN never shown.
#[test]
fn wrong_pin_makes_the_signer_unusable_after_exactly_one_login() {
    let spy = spy_module();
    let hsm = World::new();
    let wrong_pin = "4321";
    let config = hsm.write(
        "spy-wrong-pin.conf",
        seed_config_with(
            &format!("lib_path = \"{MODULE}\""),
            &format!("lib_path = \"{spy}\""),
        )
        .replace(
            &format!("user_pin = {USER_PIN}\n"),
            &format!("user_pin = {wrong_pin}\n"),
        ),
    );

    for (args, log_name) in [
        (&["status"][..], "spy-status.log"),
        (&["list", "--orphans"][..], "spy-orphans.log"),
    ] {
        let log_path = hsm.path(log_name);
        let run = hsm.signer_at(
            Some(&config),
            &hsm.state,
            wrong_pin,
            &[
                ("PKCS11SPY", Path::new(MODULE)),
                ("PKCS11SPY_OUTPUT", &log_path),
            ],
            args,
        );
        let answer = run.json();
        let log = std::fs::read_to_string(&log_path).unwrap_or_else(|e| {
            panic!(
                "no pkcs11-spy log at {} ({e})\n{}",
                log_path.display(),
                run.describe()
            )
        });
        assert!(
            spy_calls(&log, "C_Initialize") == 1 && log.contains("CKR_PIN_INCORRECT"),
            "the spy log does not show SoftHSMv2 refusing a login\n{log}"
        );
        let logins = spy_calls(&log, "C_Login") + spy_calls(&log, "C_LoginUser");
        assert_eq!(
            logins, 1,
            "`{}` made {logins} login attempts\n{log}",
            run.command
        );
        if args[0] == "status" {
            let signer = status_of(&answer, SIGNER_NAME);
            assert_eq!(signer["state"], "unusable", "{answer}");
            let error = signer["error"].as_str().unwrap_or_default();
            assert!(
                error.contains("CKR_PIN_INCORRECT"),
                "the reason is not the wrong PIN: {answer}"
            );
        } else {
            let entry = answer["orphans"]
                .as_array()
                .and_then(|o| o.iter().find(|o| o["signer"] == SIGNER_NAME))
                .unwrap_or_else(|| panic!("no orphans entry for {SIGNER_NAME}: {answer}"));
            assert!(
                entry["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("unusable")),
                "{answer}"
            );
        }
    }
}

/// Which default signer the crash test runs with.
#[derive(Clone, Copy, Debug)]
enum Backend {
    /// No `--config`: the one implicit OpenSSL signer.
    Software,
    /// Seed 001's SoftHSMv2 configuration.
    SoftHsm,
    /// A KMIP signer at our relay (`kmip2pkcs11`) on the test's SoftHSMv2 token.
    Relay,
}

/// The KMIP signer's name in the relay case.
const RELAY_SIGNER: &str = "relay";

/// What the PKCS#11 signer logs (at debug level) once it has logged in to the token.
const PKCS11_CONNECTED: &str = "connected";

/// What the KMIP signer logs (at debug level) once its TLS connection is up.
const KMIP_CONNECTED: &str = "connected to";

/// Whether a log line is the PKCS#11 signer saying it has logged in, or the KMIP
/// signer saying it has connected.
fn is_connected(line: &str) -> bool {
    (line.contains("hsm_signers::pkcs11") && line.contains(PKCS11_CONNECTED))
        || (line.contains("hsm_signers::kmip") && line.contains(KMIP_CONNECTED))
}

/// The relay binary, which cargo builds next to hsm-harness for a workspace test run.
fn relay_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hsm-harness")).with_file_name("kmip2pkcs11")
}

/// How many private keys the token labelled `label` holds (pkcs11-tool, logged in).
fn private_keys_on(hsm: &World, label: &str) -> usize {
    hsm.pkcs11_tool(label, &["--list-objects", "--type", "privkey"])
        .success()
        .lines()
        .filter(|l| l.starts_with("Private Key Object"))
        .count()
}

/// Runs `create-key --alg ecdsa-p256` and sends it SIGKILL after `delay` (harmless when
/// it has exited already: it is not reaped yet). With `after_login`, `delay` counts
/// from the PKCS#11 signer's log line saying it has logged in, or the KMIP signer's
/// saying it has connected (see
/// [`kill_9_during_create_key_never_loses_a_reported_key`] for why). Returns the run
/// and whether the kill ended it.
fn create_key_killed_after(
    hsm: &World,
    config: Option<&Path>,
    state: &Path,
    delay: Duration,
    after_login: bool,
    label: &str,
) -> (Run, bool) {
    let mut command = hsm.signer_command(config, state, &["create-key", "--alg", "ecdsa-p256"]);
    if after_login {
        command.env("RUST_LOG", "hsm_signers=debug,cryptoki=off");
    }
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn hsm-harness");
    // stderr is read as it comes, both to see the login line and so that the child
    // never blocks on a full pipe.
    let stderr = child.stderr.take().expect("piped stderr");
    let (logged_in, login_seen) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut text = String::new();
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if is_connected(&line) {
                let _ = logged_in.send(());
            }
            text.push_str(&line);
            text.push('\n');
        }
        text
    });
    if after_login {
        // A run that never logs in (it failed, or exited) ends the wait early.
        let _ = login_seen.recv_timeout(Duration::from_secs(30));
    }
    std::thread::sleep(delay);
    child.kill().expect("kill -9 the child");
    let out = child.wait_with_output().expect("wait for the child");
    let signal = out.status.signal();
    let mut run = Run::from_output(format!("{label}: hsm-harness signer create-key"), out);
    run.stderr = reader.join().expect("stderr reader");
    assert_no_pin(&run, USER_PIN);
    assert!(
        matches!(signal, None | Some(libc::SIGKILL)),
        "killed by signal {signal:?}, not by the test\n{}",
        run.describe()
    );
    (run, signal.is_some())
}

/// The key a `create-key` run reported, if its JSON was printed. A run that finished
/// must have succeeded and printed it; a killed one may have printed nothing.
fn reported_key(run: &Run, killed: bool, signer_name: &str, context: &str) -> Option<String> {
    if !killed {
        assert_eq!(run.code, Some(0), "{context}\n{}", run.describe());
    }
    match serde_json::from_str::<Value>(&run.stdout) {
        Ok(created) => {
            assert_eq!(created["signer"], signer_name, "{created}");
            Some(key_of(&created))
        }
        Err(_) => {
            assert!(killed, "{context}\n{}", run.describe());
            None
        }
    }
}

/// Whether SoftHSMv2 still shows a token labelled `label` (softhsm2-util --show-slots).
fn softhsm_token_present(hsm: &World, label: &str) -> bool {
    hsm.tool("softhsm2-util", &["--show-slots"])
        .success()
        .lines()
        .any(|l| l.trim().strip_prefix("Label:").map(str::trim) == Some(label))
}

/// The sizes of the `token.object` files in this test's token directory.
fn token_object_sizes(hsm: &World) -> Vec<u64> {
    let mut sizes = Vec::new();
    for token in std::fs::read_dir(hsm.path("tokens")).into_iter().flatten() {
        let file = token.expect("token dir entry").path().join("token.object");
        if let Ok(m) = std::fs::metadata(file) {
            sizes.push(m.len());
        }
    }
    sizes
}

/// `kill -9` at random moments of `create-key`: every key whose JSON was printed is in
/// the key map afterwards; orphans are allowed. The delays come from a fixed seed
/// (override with HSM_HARNESS_CRASH_SEED) so a failing sequence can be replayed.
///
/// SoftHSMv2 case: the token must survive every kill, or the test fails. Finding
/// (issue 11): SoftHSM 2.6's file object store rewrites `token.object` in place, with
/// no temporary file and rename (`ObjectFile::writeAttributes`: ftruncate, then the
/// attributes through a buffered stream flushed at close), and `Token::loginUser`
/// stores the token flags (clearing CKF_USER_PIN_COUNT_LOW) on every successful
/// C_Login. A SIGKILL between the truncate and the flush leaves `token.object` empty:
/// SoftHSM then shows no token, keys and all. `pkcs11-tool --login` killed there does
/// the same (reproduced by killing it the moment `token.object` shrinks), so it is
/// SoftHSM's defect, not the router's, and no PKCS#11 application can prevent it: each
/// process must log in. Those kills during C_Login were what this test used to print a
/// WARNING for. An strace of a whole `create-key` shows `token.object` opened for
/// writing exactly once, in C_Login, before the signer logs "connected"; after it
/// SoftHSM rewrites only the new key's object files (a kill there loses at most that
/// unreported key). So each kill here lands a random delay after the PKCS#11 signer's
/// "connected" debug line, and a lost token fails the test.
/// HSM_HARNESS_KILL_BEFORE_LOGIN=1 times the kills from the start instead (they then
/// rarely, not never, hit the C_Login window).
///
/// Relay case: a KMIP signer at our relay, which serves the test's token (and is the
/// one process logged in to it, so kills of the signer cannot hit SoftHSM's C_Login
/// window). The kills land a random delay after the KMIP signer's "connected to" debug
/// line, spread over the time its EC probe pair, Create Key Pair, Activate, Get and
/// Modify Attribute take, so that several land between Create Key Pair and the
/// renaming: pairs left under their temporary `hsm-harness-pending-` (or
/// `hsm-harness-probe-`) names. Every pair a kill left behind must then be an orphan
/// (pending or not) of `list --orphans`, and `destroy` must remove it: afterwards the
/// token holds exactly the mapped keys and the signer's identity key.
#[rstest]
#[case::software(Backend::Software)]
#[case::softhsm(Backend::SoftHsm)]
#[case::relay(Backend::Relay)]
fn kill_9_during_create_key_never_loses_a_reported_key(#[case] backend: Backend) {
    const RUNS: usize = 15;
    let hsm = World::new();
    // The relay, its PKI and the signer configuration for it, kept for the whole test.
    let relay = matches!(backend, Backend::Relay).then(|| {
        let pki = testkit::pki::Pki::new();
        let relay = testkit::relay::Relay::start(
            &relay_binary(),
            &hsm.softhsm,
            hsm.softhsm.token(),
            &pki,
            "warn",
        );
        let config = hsm.write("relay-signer.conf", relay.signer_config(RELAY_SIGNER, &pki));
        (pki, relay, config)
    });
    let (config, signer_name) = match (backend, &relay) {
        (Backend::Software, _) => (None, IMPLICIT_NAME),
        (Backend::SoftHsm, _) => (Some(hsm.config.as_path()), SIGNER_NAME),
        (Backend::Relay, Some((_, _, config))) => (Some(config.as_path()), RELAY_SIGNER),
        (Backend::Relay, None) => unreachable!("the relay case starts a relay"),
    };
    // The longest delay: the relay case's window is short (see above).
    let max_delay_ms = match backend {
        Backend::Relay => RELAY_MAX_DELAY_MS,
        _ => 250,
    };
    let after_login = matches!(backend, Backend::SoftHsm | Backend::Relay)
        && std::env::var_os("HSM_HARNESS_KILL_BEFORE_LOGIN").is_none();
    let seed = std::env::var("HSM_HARNESS_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_0001_u64);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut reported = Vec::new();
    let mut journal = Vec::new();
    for i in 0..RUNS {
        let delay = Duration::from_millis(rng.gen_range(0..=max_delay_ms));
        let started = Instant::now();
        let (run, killed) = create_key_killed_after(
            &hsm,
            config,
            &hsm.state,
            delay,
            after_login,
            &format!("run {i}"),
        );
        journal.push(format!(
            "run {i}: delay {delay:?}{}, {} after {:?}",
            if after_login { " after login" } else { "" },
            if killed { "killed" } else { "exited" },
            started.elapsed()
        ));
        let context = format!("seed {seed:#x}, {journal:#?}");
        reported.extend(reported_key(&run, killed, signer_name, &context));
        if matches!(backend, Backend::SoftHsm | Backend::Relay) {
            assert!(
                softhsm_token_present(&hsm, TOKEN_LABEL),
                "SoftHSMv2 lost token '{TOKEN_LABEL}' after run {i} was {} (token.object \
                 sizes now {:?})\n{context}\n{}",
                if killed { "killed" } else { "run" },
                token_object_sizes(&hsm),
                run.describe()
            );
        }
    }
    let context = format!("seed {seed:#x}, {journal:#?}, reported {reported:#?}");

    // One uninterrupted run: the backend and the key map still work after the kills.
    let created = hsm
        .signer_at(
            config,
            &hsm.state,
            USER_PIN,
            &[],
            &["create-key", "--alg", "ecdsa-p256"],
        )
        .json();
    reported.push(key_of(&created));

    // `list` reads the key map only: it must work, and hold every reported key.
    let listed = hsm
        .signer_at(config, &hsm.state, USER_PIN, &[], &["list"])
        .json();
    let mapped = listed_keys(&listed);
    for key in &reported {
        assert!(
            mapped.contains(key),
            "reported key {key} is not in the key map: {listed}\n{context}"
        );
    }

    // Leftover keys are allowed; listing them must work.
    let with_orphans = hsm
        .signer_at(config, &hsm.state, USER_PIN, &[], &["list", "--orphans"])
        .json();
    let orphans = orphans_of(&with_orphans, signer_name);
    let pending = pending_of(&with_orphans, signer_name);
    eprintln!(
        "{backend:?}: {} key(s) reported, {} orphan(s), {} of them pending\n{context}",
        reported.len(),
        orphans.len(),
        pending.len()
    );
    assert!(
        pending.is_subset(&orphans),
        "pending pairs that are not orphans: {with_orphans}"
    );
    if matches!(backend, Backend::Relay) {
        // Every leftover pair, pending or not, is removable; then the token holds the
        // mapped keys and the signer's identity key, nothing else.
        for orphan in &orphans {
            hsm.signer_at(
                config,
                &hsm.state,
                USER_PIN,
                &[],
                &["destroy", "--key", orphan],
            )
            .success();
        }
        let after = hsm
            .signer_at(config, &hsm.state, USER_PIN, &[], &["list", "--orphans"])
            .json();
        assert!(
            orphans_of(&after, signer_name).is_empty(),
            "orphans left after destroying them all: {after}\n{context}"
        );
        // The signer's identity key is on the token too, neither mapped nor an orphan.
        let status = hsm
            .signer_at(config, &hsm.state, USER_PIN, &[], &["status"])
            .json();
        let identity = status_of(&status, signer_name)["identity_key"]
            .as_str()
            .unwrap_or_else(|| panic!("no identity key for {signer_name}: {status}"))
            .to_string();
        assert!(!mapped.contains(&identity), "{listed}");
        assert_eq!(
            private_keys_on(&hsm, TOKEN_LABEL),
            mapped.len() + 1,
            "the token holds private keys besides the {} mapped ones and the identity key \
             {identity} after every orphan was destroyed: a pair a kill left behind is \
             invisible to list --orphans ({with_orphans}; after destroying: {after})\n\
             {context}\n{}",
            mapped.len(),
            hsm.list_objects(TOKEN_LABEL)
        );
    }
}

/// The longest delay after the KMIP signer's "connected to" line in the relay case:
/// its create-key (with a debug build, on a loaded machine) takes one to a few hundred
/// milliseconds from there, so most kills land in it and some runs finish.
const RELAY_MAX_DELAY_MS: u64 = 400;

/// The pending pairs a `list --orphans` answer shows for signer `name` (an empty set
/// when the entry has no `pending` list).
fn pending_of(listed: &Value, name: &str) -> BTreeSet<String> {
    listed["orphans"]
        .as_array()
        .and_then(|o| o.iter().find(|o| o["signer"] == name))
        .and_then(|e| e["pending"].as_array())
        .map(|p| {
            p.iter()
                .map(|k| k.as_str().expect("pending key id").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// `kill -9` while the first command of a fresh state creates the key map: the state
/// stays usable, and a key the killed run reported is mapped. The random delays above
/// rarely hit that window (under a millisecond, a few milliseconds into the first
/// run), so here each run gets a fresh state and is killed once `keymap.redb` shows up,
/// plus a few extra microseconds.
#[test]
fn kill_9_while_the_key_map_is_created_leaves_a_usable_state() {
    let hsm = World::new();
    for (i, extra_us) in [
        0, 0, 0, 50, 100, 150, 200, 300, 400, 600, 800, 1200, 2000, 5000,
    ]
    .into_iter()
    .enumerate()
    {
        let state = hsm.path(&format!("state-{i}"));
        let keymap = state.join("keymap.redb");
        let mut child = hsm
            .signer_command(None, &state, &["create-key", "--alg", "ecdsa-p256"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn hsm-harness");
        let started = Instant::now();
        while !keymap.exists() && started.elapsed() < Duration::from_secs(10) {
            std::hint::spin_loop();
        }
        let appeared = started.elapsed();
        std::thread::sleep(Duration::from_micros(extra_us));
        child.kill().expect("kill -9 the child");
        let out = child.wait_with_output().expect("wait for the child");
        let killed = out.status.signal().is_some();
        let label = format!(
            "fresh state {i}: keymap.redb appeared after {appeared:?}, killed {extra_us} µs later"
        );
        let run = Run::from_output(format!("{label}: hsm-harness signer create-key"), out);
        let reported = reported_key(&run, killed, IMPLICIT_NAME, &label);
        let listed = hsm.signer_at(None, &state, USER_PIN, &[], &["list"]);
        assert_eq!(
            listed.code,
            Some(0),
            "the state is unusable after a create-key on it was killed ({label}, \
             keymap.redb is {:?} bytes)\n{}",
            std::fs::metadata(&keymap).map(|m| m.len()).ok(),
            listed.describe()
        );
        if let Some(key) = reported {
            let listed = listed.json();
            assert!(listed_keys(&listed).contains(&key), "{key} not in {listed}");
        }
    }
}

/// `list --orphans`: nothing on a fresh state and token (identity keys are not
/// orphans); keys made with another state on the same token are.
#[test]
fn orphans_are_keys_the_key_map_does_not_know() {
    let hsm = World::new();
    let listed = hsm.signer(&["list", "--orphans"]).json();
    assert_eq!(listed["keys"], serde_json::json!([]), "{listed}");
    assert!(orphans_of(&listed, SIGNER_NAME).is_empty(), "{listed}");
    assert!(orphans_of(&listed, ONE_OFF_NAME).is_empty(), "{listed}");
    // The identity key is on the token even so.
    let first_identity = identity_key(&hsm, &hsm.signer(&["status"]).json(), TOKEN_LABEL, &[]);

    let keys = [hsm.create_key(), hsm.create_key()];
    let listed = hsm.signer(&["list", "--orphans"]).json();
    assert_eq!(
        listed_keys(&listed),
        keys.iter().cloned().collect(),
        "{listed}"
    );
    assert!(orphans_of(&listed, SIGNER_NAME).is_empty(), "{listed}");

    // Another state on the same token: the first state's keys, and its identity key
    // (an identity this key map does not know), are orphans there.
    let other_state = hsm.path("other-state");
    let listed = hsm
        .signer_at(
            Some(&hsm.config),
            &other_state,
            USER_PIN,
            &[],
            &["list", "--orphans"],
        )
        .json();
    assert_eq!(listed["keys"], serde_json::json!([]), "{listed}");
    let mut expected: BTreeSet<String> = keys.iter().cloned().collect();
    expected.insert(first_identity.clone());
    assert_eq!(orphans_of(&listed, SIGNER_NAME), expected, "{listed}");
    assert!(orphans_of(&listed, ONE_OFF_NAME).is_empty(), "{listed}");

    // And the other state's identity key is an orphan for the first state, whose own
    // keys are not.
    let all_ids = ids_in(&hsm.list_objects(TOKEN_LABEL));
    let second_identity: BTreeSet<String> = all_ids.difference(&expected).cloned().collect();
    assert_eq!(second_identity.len(), 1, "token IDs: {all_ids:?}");
    let listed = hsm.signer(&["list", "--orphans"]).json();
    assert_eq!(
        orphans_of(&listed, SIGNER_NAME),
        second_identity,
        "{listed}"
    );
}

/// `sign-one-off` with seed 001's SoftHSMv2 configuration: the OpenSSL one-off signer
/// signs, openssl verifies with the printed public key, the one-off key is gone, and
/// the token has no new object.
#[test]
fn sign_one_off_uses_the_openssl_signer_and_leaves_the_token_alone() {
    let hsm = World::new();
    // A token with something on it, so "unchanged" is not "empty".
    let key = hsm.create_key();
    let before = hsm.list_objects(TOKEN_LABEL);
    assert!(before.contains(&key), "{before}");

    let data = hsm.write("data", "one-off signed object stand-in\n".repeat(50));
    let sig = hsm.path("data.sig");
    let signed = hsm
        .signer(&[
            "sign-one-off",
            "--alg",
            "ecdsa-p256",
            "--in",
            data.to_str().unwrap(),
            "--out",
            sig.to_str().unwrap(),
        ])
        .json();
    assert_eq!(signed["signer"], ONE_OFF_NAME, "{signed}");
    assert_eq!(signed["alg"], "ecdsa-p256", "{signed}");
    let sig_len = std::fs::metadata(&sig).expect("signature file").len();
    assert_eq!(signed["signature_bytes"], sig_len, "{signed}");
    let pem_text = signed["public_key_pem"]
        .as_str()
        .unwrap_or_else(|| panic!("no public_key_pem in {signed}"));
    let pem = hsm.write("one-off.pem", pem_text);
    assert_openssl_verifies(&hsm, &pem, &sig, &data);

    let after = hsm.list_objects(TOKEN_LABEL);
    assert_eq!(before, after, "the token's objects changed");

    // The one-off key is neither mapped nor left behind anywhere.
    let one_off_key = key_id_of_pem(pem_text);
    let listed = hsm.signer(&["list", "--orphans"]).json();
    assert!(
        !listed.to_string().contains(&one_off_key),
        "one-off key {one_off_key} is still known: {listed}"
    );
    assert!(orphans_of(&listed, ONE_OFF_NAME).is_empty(), "{listed}");
    assert!(orphans_of(&listed, SIGNER_NAME).is_empty(), "{listed}");
}

#[test]
fn spy_call_lines_are_counted_exactly() {
    let log = "0: C_GetInterface\n7: C_Login\n[in] hSession = 0x1\n\
               8: C_LoginUser\n9: C_Logout\nReturned:  0 CKR_OK C_Login\n10: C_Login \n";
    assert_eq!(spy_calls(log, "C_Login"), 2);
    assert_eq!(spy_calls(log, "C_LoginUser"), 1);
    assert_eq!(spy_calls(log, "C_Logout"), 1);
}
