//! The key map across processes: two processes starting on the same fresh state
//! directory at once never lose a key either of them reported.
//!
//! The processes are this test binary again, running the ignored test
//! [`child_creates_one_key`] with the state directory in [`STATE_VAR`]: a router with
//! the implicit OpenSSL signer that creates one ECDSA P-256 key and prints it. A child
//! may fail (redb refuses a key map another process has open); one that reports a key
//! must find it mapped.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use hsm_signers::{Algorithm, Router, SignerSetup};

/// Tells a child which state directory to use.
const STATE_VAR: &str = "HSM_SIGNERS_TEST_KEYMAP_STATE";
/// What a child prints before the key it created.
const KEY_LINE: &str = "created key ";
const ROUNDS: usize = 50;

/// Starts this test binary as a child running [`child_creates_one_key`] on `state`.
fn spawn_child(state: &Path) -> Child {
    Command::new(std::env::current_exe().expect("test binary path"))
        .args([
            "child_creates_one_key",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(STATE_VAR, state)
        .env_remove("RUST_LOG")
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn a child test process")
}

/// Run as a child process only (by the test below).
#[test]
#[ignore = "a child process of two_processes_on_a_fresh_state_never_lose_a_reported_key"]
fn child_creates_one_key() {
    let state = std::env::var_os(STATE_VAR).expect("run by the parent test only");
    let router = Router::new(&SignerSetup::implicit(), Path::new(&state)).expect("router");
    let created = router
        .create_key(Algorithm::EcdsaP256Sha256)
        .expect("create key");
    println!("{KEY_LINE}{}", created.id);
}

/// Fails on the code before issue 11: both processes saw no key map, and the later
/// one renamed its empty map over the one the first had just recorded its key in.
#[test]
fn two_processes_on_a_fresh_state_never_lose_a_reported_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut reported_total = 0;
    for round in 0..ROUNDS {
        let state = dir.path().join(format!("state-{round}"));
        let children = [spawn_child(&state), spawn_child(&state)];
        let mut reported = Vec::new();
        let mut outputs = Vec::new();
        for child in children {
            let out = child.wait_with_output().expect("wait for a child");
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            reported.extend(
                stdout
                    .lines()
                    // libtest may print "test child_creates_one_key ... " first.
                    .filter_map(|l| l.split_once(KEY_LINE))
                    .filter_map(|(_, rest)| rest.split_whitespace().next())
                    .map(str::to_string),
            );
            outputs.push(format!(
                "{}\nstdout:\n{stdout}\nstderr:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        assert!(
            !reported.is_empty(),
            "round {round}: neither process created a key\n{outputs:#?}"
        );
        reported_total += reported.len();
        let router = Router::new(&SignerSetup::implicit(), &state).expect("reopen the state");
        let mapped: Vec<String> = router
            .keymap()
            .keys()
            .expect("read the key map")
            .into_iter()
            .map(|(k, _)| k.to_string())
            .collect();
        for key in &reported {
            assert!(
                mapped.contains(key),
                "round {round}: reported key {key} is not in the key map {mapped:?}\n{outputs:#?}"
            );
        }
    }
    eprintln!("{reported_total} key(s) reported in {ROUNDS} rounds, all mapped");
}
