//! `hsm-harness signer` end to end through the KMIP signer against Cosmian KMS, brought
//! up by the harness's own `cosmian` provider from `fixtures/backends/cosmian.yaml`
//! (generated PKI, fresh SQLite database, ephemeral loopback ports, the signer's
//! default TLS 1.3-only settings). For RSA-2048 and ECDSA P-256: one process creates
//! the key, a later one signs with it (so the signer binds to its identity key again),
//! and `openssl` verifies the signature with the `public-key` PEM, and refuses it over
//! other data.
//!
//! The server is built by `ci/install-cosmian` (a quarter of an hour), so without it
//! this test says so and passes, unless `HSM_HARNESS_REQUIRE_COSMIAN=1` (as `ci/test`
//! sets): then a missing server is a failure.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use hsm_harness::backends::Instances;
use hsm_harness::model::backend::Backend;
use hsm_signers::config::SignerKind;
use support::Run;

const REQUIRE_VAR: &str = "HSM_HARNESS_REQUIRE_COSMIAN";

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/backends/cosmian.yaml")
}

/// The backend, or `None` (after saying why) when the server is not installed and
/// nothing requires it.
fn cosmian_backend() -> Option<Backend> {
    let backend = Backend::load(&fixture()).unwrap_or_else(|e| panic!("{e}"));
    match backend.unavailable_reason() {
        None => Some(backend),
        Some(reason) if std::env::var(REQUIRE_VAR).is_ok_and(|v| v == "1") => {
            panic!("{REQUIRE_VAR}=1 but the cosmian backend cannot start: {reason}")
        }
        Some(reason) => {
            eprintln!("SKIPPED: the cosmian backend cannot start here: {reason}");
            None
        }
    }
}

/// A TOML basic string of `path` (the test's own temporary paths).
fn toml_path(path: &Path) -> String {
    format!("{:?}", path.to_str().expect("UTF-8 path"))
}

/// The signer configuration the provider gives instance `a`, written as an operator
/// would: one KMIP signer, every optional key at its default.
fn signer_config(instances: &mut Instances, dir: &Path) -> PathBuf {
    let SignerKind::Kmip(c) = instances
        .signer_kind("a", None, None)
        .unwrap_or_else(|e| panic!("starting Cosmian KMS: {e:#}"))
    else {
        panic!("the cosmian provider does not give a KMIP signer");
    };
    assert!(
        !c.weaken_security_allow_tls12 && !c.insecure && !c.force,
        "the provider weakens the signer's defaults"
    );
    let path = dir.join("signers.conf");
    let file = |p: &Option<PathBuf>| toml_path(p.as_deref().expect("a PKI file"));
    std::fs::write(
        &path,
        format!(
            "[[signers]]\ntype = \"KMIP\"\nname = \"cosmian\"\nhost = \"{}\"\nport = {}\n\
             server_ca_cert_path = {}\nclient_cert_path = {}\nclient_cert_private_key_path = {}\n",
            c.host,
            c.port,
            file(&c.server_ca_cert_path),
            file(&c.client_cert_path),
            file(&c.client_cert_private_key_path),
        ),
    )
    .expect("signer config");
    path
}

/// `hsm-harness signer --config CONFIG --state STATE ARGS`, each call a new process.
fn signer(config: &Path, state: &Path, args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_hsm-harness"))
        .arg("signer")
        .arg("--config")
        .arg(config)
        .arg("--state")
        .arg(state)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run hsm-harness");
    Run::from_output(format!("hsm-harness signer {}", args.join(" ")), out)
}

fn openssl_verify(digest: &str, pem: &Path, sig: &Path, data: &Path) -> Run {
    let out = Command::new("openssl")
        .args(["dgst", digest, "-verify"])
        .arg(pem)
        .arg("-signature")
        .arg(sig)
        .arg(data)
        .output()
        .unwrap_or_else(|e| panic!("openssl: {e} (run ci/install-deps)"));
    Run::from_output(format!("openssl dgst {digest} -verify"), out)
}

#[test]
fn keys_made_in_one_process_sign_in_the_next_and_openssl_verifies() {
    let Some(backend) = cosmian_backend() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut instances = Instances::new(&backend, &dir.path().join("cell"), &BTreeMap::new())
        .unwrap_or_else(|e| panic!("{e:#}"));
    let config = signer_config(&mut instances, dir.path());
    let state = dir.path().join("state");

    for alg in ["rsa2048", "ecdsa-p256"] {
        let created = signer(&config, &state, &["create-key", "--alg", alg]).json();
        assert_eq!(created["signer"], "cosmian", "{created}");
        let key = created["key"].as_str().expect("key identifier").to_string();

        let data = dir.path().join(format!("{alg}.data"));
        std::fs::write(&data, format!("signed by Cosmian KMS with {alg}")).unwrap();
        let sig = dir.path().join(format!("{alg}.sig"));
        let signed = signer(
            &config,
            &state,
            &[
                "sign",
                "--key",
                &key,
                "--alg",
                alg,
                "--in",
                data.to_str().unwrap(),
                "--out",
                sig.to_str().unwrap(),
            ],
        )
        .json();
        assert_eq!(signed["key"], key.as_str(), "{signed}");

        let pem = dir.path().join(format!("{alg}.pem"));
        let public = signer(&config, &state, &["public-key", "--key", &key]);
        std::fs::write(&pem, public.success()).unwrap();

        // Independent verification: OpenSSL, neither Cosmian nor our verifier.
        openssl_verify("-sha256", &pem, &sig, &data).success();
        std::fs::write(&data, b"tampered").unwrap();
        let refused = openssl_verify("-sha256", &pem, &sig, &data);
        assert_ne!(
            refused.code,
            Some(0),
            "openssl verified tampered data\n{}",
            refused.describe()
        );
    }

    // The harness's own view of the server (a KMIP connection of its own) sees both
    // keys and the signer's identity key.
    let held = instances
        .inventory("a")
        .unwrap_or_else(|e| panic!("inventory: {e:#}"));
    assert!(held.len() >= 3, "inventory: {held:?}");
}
