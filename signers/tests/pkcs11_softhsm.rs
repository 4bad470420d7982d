//! The PKCS#11 signer against a real SoftHSMv2 token.
//!
//! One process, one C_Initialize: SoftHSM reads SOFTHSM2_CONF when the module is
//! initialised, and the tests of this file run as threads of one process. So a single
//! fixture makes a throwaway token directory, points SOFTHSM2_CONF at it, initialises
//! two tokens with `softhsm2-util` (one the tests use, one nobody ever logs in to, for
//! the wrong-PIN test: PKCS#11 logins are per token and process), and only then lets a
//! signer load the module. The tests share one signer and run in parallel.
//!
//! Signatures are checked with aws-lc-rs, not with the token; key identifiers on the
//! token are checked with `pkcs11-tool` in a separate process.
//!
//! Without SoftHSMv2 or pkcs11-tool these tests fail (they never pass silently):
//! `apt-get install softhsm2 opensc`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use aws_lc_rs::signature::{self, ParsedPublicKey, UnparsedPublicKey, VerificationAlgorithm};
use hsm_signers::config::{Pkcs11Config, SlotSelector};
use hsm_signers::{Algorithm, ErrorKind, KeyIdentifier, Pkcs11Signer, Secret, Signer, SignerError};
use rstest::rstest;
use spki::SubjectPublicKeyInfoRef;
use testkit::softhsm::{HsmOptions, Token};

const MODULE: &str = testkit::softhsm::MODULE;
const PIN_VAR: &str = "HSM_HARNESS_TEST_SOFTHSM_USER_PIN";

/// What the tests of this process share: the token directory, the tokens, the signer.
struct Shared {
    softhsm: testkit::softhsm::Hsm,
    /// A token no one logs in to, for the wrong-PIN test.
    other: Token,
    signer: Pkcs11Signer,
}

impl Shared {
    /// The token the tests use.
    fn token(&self) -> &Token {
        self.softhsm.token()
    }
}

static HSM: OnceLock<Shared> = OnceLock::new();

fn hsm() -> &'static Shared {
    HSM.get_or_init(|| {
        // Held in a static, never dropped: so under the build's directory, where the
        // next run removes what this one leaves.
        let softhsm = testkit::softhsm::Hsm::with(HsmOptions {
            token: Token::random("harness"),
            parent: Some(env!("CARGO_TARGET_TMPDIR").into()),
            ..HsmOptions::default()
        });
        // Before the module is loaded (by anyone in this process).
        std::env::set_var("SOFTHSM2_CONF", softhsm.conf());
        let other = Token::random("other");
        softhsm.init_token(&other);

        std::env::set_var(PIN_VAR, &softhsm.token().pin);
        let signer = Pkcs11Signer::new(
            "SoftHSMv2",
            &config(
                SlotSelector::Label(softhsm.token().label.clone()),
                Secret::Env(PIN_VAR.into()),
            ),
        );
        Shared {
            softhsm,
            other,
            signer,
        }
    })
}

fn config(slot: SlotSelector, pin: Secret) -> Pkcs11Config {
    Pkcs11Config {
        lib_path: PathBuf::from(MODULE),
        slot,
        user_pin: Some(pin),
        login: true,
        force: false,
    }
}

/// One object as `pkcs11-tool --list-objects` prints it: the header line and its
/// `name: value` lines.
#[derive(Debug)]
struct ToolObject {
    header: String,
    fields: Vec<(String, String)>,
}

impl ToolObject {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            // A file removed since the listing (a key another test destroyed) is fine.
            let _ = std::fs::copy(e.path(), target);
        }
    }
}

/// The key objects on the test token, seen by pkcs11-tool in its own process.
///
/// pkcs11-tool reads a snapshot of the token directory, not the live one: two
/// processes on one SoftHSM file store contend for its file locks, and this process
/// then sees CKR_FUNCTION_FAILED from C_GenerateKeyPair now and then. The snapshot
/// may catch another test's object half written, so a failing listing is retried.
fn tool_objects(h: &Shared) -> Vec<ToolObject> {
    if Command::new("pkcs11-tool")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!("pkcs11-tool is missing: apt-get install opensc");
    }
    let mut attempt = 0;
    let text = loop {
        attempt += 1;
        let snapshot = tempfile::Builder::new()
            .prefix("softhsm-snapshot-")
            .tempdir_in(h.softhsm.dir())
            .unwrap();
        copy_dir(
            &h.softhsm.dir().join("tokens"),
            &snapshot.path().join("tokens"),
        );
        let conf = testkit::softhsm::conf_in(snapshot.path());
        let out = Command::new("pkcs11-tool")
            .env("SOFTHSM2_CONF", &conf)
            .args(["--module", MODULE, "--token-label", &h.token().label])
            .args(["--login", "--pin", &h.token().pin, "--list-objects"])
            .output()
            .expect("running pkcs11-tool");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() {
            break text;
        }
        assert!(
            attempt < 5,
            "pkcs11-tool --list-objects failed {attempt} times: {text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut objects: Vec<ToolObject> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if !line.starts_with(char::is_whitespace) {
            objects.push(ToolObject {
                header: line.to_string(),
                fields: Vec::new(),
            });
        } else if let (Some(obj), Some((k, v))) = (objects.last_mut(), line.split_once(':')) {
            obj.fields
                .push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    objects
}

/// The objects pkcs11-tool shows with CKA_ID = `id`.
fn tool_objects_with_id(h: &Shared, id: &KeyIdentifier) -> Vec<ToolObject> {
    let hex_id = id.to_string();
    tool_objects(h)
        .into_iter()
        .filter(|o| o.field("ID") == Some(hex_id.as_str()))
        .collect()
}

fn verification(alg: Algorithm) -> &'static dyn VerificationAlgorithm {
    match alg {
        Algorithm::Rsa2048Pkcs1Sha256 => &signature::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::Rsa2048PssSha256 => &signature::RSA_PSS_2048_8192_SHA256,
        Algorithm::EcdsaP256Sha256 => &signature::ECDSA_P256_SHA256_ASN1,
        Algorithm::EcdsaP384Sha384 => &signature::ECDSA_P384_SHA384_ASN1,
        Algorithm::Ed25519 => &signature::ED25519,
    }
}

fn spki_algorithm_oid(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::Rsa2048Pkcs1Sha256 | Algorithm::Rsa2048PssSha256 => "1.2.840.113549.1.1.1",
        Algorithm::EcdsaP256Sha256 | Algorithm::EcdsaP384Sha384 => "1.2.840.10045.2.1",
        Algorithm::Ed25519 => "1.3.101.112",
    }
}

/// Destroys a key when the test ends, pass or fail, so parallel tests and reruns
/// see a tidy token.
struct Cleanup<'a>(&'a Pkcs11Signer, KeyIdentifier);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let _ = self.0.destroy_key(&self.1);
    }
}

fn expect_kind<T: std::fmt::Debug>(r: Result<T, SignerError>, kind: ErrorKind) -> SignerError {
    match r {
        Err(e) if e.kind == kind => e,
        other => panic!("expected a {kind} error, got {other:?}"),
    }
}

#[rstest]
#[case::rsa2048(Algorithm::Rsa2048Pkcs1Sha256)]
#[case::rsa2048_pss(Algorithm::Rsa2048PssSha256)]
#[case::ecdsa_p256(Algorithm::EcdsaP256Sha256)]
#[case::ecdsa_p384(Algorithm::EcdsaP384Sha384)]
#[case::ed25519(Algorithm::Ed25519)]
fn create_key_puts_the_key_identifier_on_both_halves(#[case] alg: Algorithm) {
    let h = hsm();
    let s = &h.signer;
    let key = s.create_key(alg).expect("create_key");
    let _cleanup = Cleanup(s, key.id);

    let spki = SubjectPublicKeyInfoRef::try_from(key.public_key.as_slice()).expect("DER SPKI");
    assert_eq!(spki.algorithm.oid.to_string(), spki_algorithm_oid(alg));
    assert_eq!(
        KeyIdentifier::from_spki_der(&key.public_key).unwrap(),
        key.id
    );
    assert_eq!(s.public_key(&key.id).unwrap(), key.public_key);
    assert!(s.list_keys().unwrap().contains(&key.id));

    // What a separate process sees on the token.
    let objects = tool_objects_with_id(h, &key.id);
    let headers: Vec<&str> = objects.iter().map(|o| o.header.as_str()).collect();
    assert_eq!(objects.len(), 2, "{headers:?}");
    let private = objects
        .iter()
        .find(|o| o.header.starts_with("Private Key Object"))
        .unwrap_or_else(|| panic!("no private key with the id: {headers:?}"));
    assert!(
        objects
            .iter()
            .any(|o| o.header.starts_with("Public Key Object")),
        "no public key with the id: {headers:?}"
    );
    for o in &objects {
        assert_eq!(o.field("label"), Some("hsm-harness"), "{o:?}");
    }
    let access = private.field("Access").unwrap_or_default();
    assert!(
        access.contains("sensitive") && access.contains("never extractable"),
        "private key access flags: {access}"
    );
    // CKA_EC_PARAMS as the signer set it: the curve OID (SoftHSM 2.6.1 takes the
    // Ed25519 OID form, so the "edwards25519" fallback is not used there).
    let ec_params = objects.iter().find_map(|o| o.field("EC_PARAMS"));
    let expected_params = match alg {
        Algorithm::EcdsaP256Sha256 => Some("06082a8648ce3d030107"),
        Algorithm::EcdsaP384Sha384 => Some("06052b81040022"),
        Algorithm::Ed25519 => Some("06032b6570"),
        _ => None,
    };
    assert_eq!(
        ec_params.map(|p| p.split_whitespace().next().unwrap_or_default()),
        expected_params
    );
    let usage = private.field("Usage").unwrap_or_default();
    assert!(usage.contains("sign"), "private key usage: {usage}");
}

#[rstest]
#[case::rsa2048(Algorithm::Rsa2048Pkcs1Sha256)]
#[case::rsa2048_pss(Algorithm::Rsa2048PssSha256)]
#[case::ecdsa_p256(Algorithm::EcdsaP256Sha256)]
#[case::ecdsa_p384(Algorithm::EcdsaP384Sha384)]
#[case::ed25519(Algorithm::Ed25519)]
fn private_keys_are_sensitive_and_not_extractable(#[case] alg: Algorithm) {
    let s = &hsm().signer;
    let key = s.create_key(alg).unwrap();
    let _cleanup = Cleanup(s, key.id);
    let a = s.private_key_attributes(&key.id).unwrap();
    assert_eq!(a.sensitive, Some(true), "{a:?}");
    assert_eq!(a.extractable, Some(false), "{a:?}");
    assert_eq!(a.always_sensitive, Some(true), "{a:?}");
    assert_eq!(a.never_extractable, Some(true), "{a:?}");
    assert_eq!(a.private, Some(true), "{a:?}");
    assert_eq!(a.token, Some(true), "{a:?}");
    assert_eq!(a.sign, Some(true), "{a:?}");
    assert_eq!(a.id.as_deref(), Some(key.id.as_bytes().as_slice()));
    assert_eq!(a.label.as_deref(), Some(b"hsm-harness".as_slice()));
}

#[rstest]
#[case::rsa2048(Algorithm::Rsa2048Pkcs1Sha256)]
#[case::rsa2048_pss(Algorithm::Rsa2048PssSha256)]
#[case::ecdsa_p256(Algorithm::EcdsaP256Sha256)]
#[case::ecdsa_p384(Algorithm::EcdsaP384Sha384)]
#[case::ed25519(Algorithm::Ed25519)]
fn signatures_verify_with_an_independent_implementation(#[case] alg: Algorithm) {
    let s = &hsm().signer;
    let key = s.create_key(alg).unwrap();
    let _cleanup = Cleanup(s, key.id);
    let msg = b"a manifest to be signed by the token";
    let sig = s.sign(&key.id, alg, msg).expect("sign");

    // From the SPKI as the signer gave it...
    let parsed = ParsedPublicKey::new(verification(alg), &key.public_key)
        .unwrap_or_else(|e| panic!("aws-lc-rs refuses the SPKI: {e}"));
    parsed
        .verify_sig(msg, &sig)
        .expect("signature verifies against the SPKI");
    assert!(parsed.verify_sig(b"another message", &sig).is_err());
    // ...and from the bare key inside it (RSAPublicKey, EC point, Ed25519 key).
    let spki = SubjectPublicKeyInfoRef::try_from(key.public_key.as_slice()).unwrap();
    let bare = spki.subject_public_key.as_bytes().unwrap();
    UnparsedPublicKey::new(verification(alg), bare)
        .verify(msg, &sig)
        .expect("signature verifies against the bare public key");

    match alg {
        Algorithm::EcdsaP256Sha256 | Algorithm::EcdsaP384Sha384 => {
            // DER ECDSA-Sig-Value, not the token's r||s.
            assert_eq!(
                sig[0],
                0x30,
                "ECDSA signature is not DER: {}",
                hex::encode(&sig)
            );
            let fixed: &'static dyn VerificationAlgorithm = if alg == Algorithm::EcdsaP256Sha256 {
                &signature::ECDSA_P256_SHA256_FIXED
            } else {
                &signature::ECDSA_P384_SHA384_FIXED
            };
            assert!(UnparsedPublicKey::new(fixed, bare)
                .verify(msg, &sig)
                .is_err());
        }
        Algorithm::Ed25519 => assert_eq!(sig.len(), 64),
        _ => assert_eq!(sig.len(), 256),
    }
}

#[test]
fn both_rsa_schemes_work_with_one_rsa_key() {
    let s = &hsm().signer;
    let key = s.create_key(Algorithm::Rsa2048Pkcs1Sha256).unwrap();
    let _cleanup = Cleanup(s, key.id);
    let msg = b"either scheme";
    for alg in [Algorithm::Rsa2048Pkcs1Sha256, Algorithm::Rsa2048PssSha256] {
        let sig = s.sign(&key.id, alg, msg).unwrap();
        ParsedPublicKey::new(verification(alg), &key.public_key)
            .unwrap()
            .verify_sig(msg, &sig)
            .unwrap_or_else(|_| panic!("{alg} signature does not verify"));
    }
}

#[rstest]
#[case::ecdsa_with_rsa(Algorithm::Rsa2048Pkcs1Sha256, Algorithm::EcdsaP256Sha256)]
#[case::ed25519_with_rsa(Algorithm::Rsa2048Pkcs1Sha256, Algorithm::Ed25519)]
#[case::rsa_with_p256(Algorithm::EcdsaP256Sha256, Algorithm::Rsa2048Pkcs1Sha256)]
#[case::p384_with_p256(Algorithm::EcdsaP256Sha256, Algorithm::EcdsaP384Sha384)]
#[case::p256_with_p384(Algorithm::EcdsaP384Sha384, Algorithm::EcdsaP256Sha256)]
#[case::ecdsa_with_ed25519(Algorithm::Ed25519, Algorithm::EcdsaP256Sha256)]
#[case::pss_with_ed25519(Algorithm::Ed25519, Algorithm::Rsa2048PssSha256)]
fn signing_with_another_key_type_is_invalid_input(
    #[case] key_alg: Algorithm,
    #[case] sign_alg: Algorithm,
) {
    let s = &hsm().signer;
    let key = s.create_key(key_alg).unwrap();
    let _cleanup = Cleanup(s, key.id);
    let e = expect_kind(s.sign(&key.id, sign_alg, b"data"), ErrorKind::InvalidInput);
    assert!(e.message.contains(&key.id.to_string()), "{e}");
    // The refusal does not break the session.
    s.sign(&key.id, key_alg, b"data").unwrap();
}

#[rstest]
#[case::rsa2048(Algorithm::Rsa2048Pkcs1Sha256)]
#[case::ecdsa_p256(Algorithm::EcdsaP256Sha256)]
#[case::ed25519(Algorithm::Ed25519)]
fn destroyed_keys_are_not_found(#[case] alg: Algorithm) {
    let h = hsm();
    let s = &h.signer;
    let key = s.create_key(alg).unwrap();
    s.destroy_key(&key.id).unwrap();
    expect_kind(s.sign(&key.id, alg, b"data"), ErrorKind::NotFound);
    expect_kind(s.public_key(&key.id), ErrorKind::NotFound);
    expect_kind(s.destroy_key(&key.id), ErrorKind::NotFound);
    assert!(!s.list_keys().unwrap().contains(&key.id));
    let left = tool_objects_with_id(h, &key.id);
    assert!(left.is_empty(), "objects left on the token: {left:?}");
}

#[test]
fn unknown_keys_are_not_found() {
    let s = &hsm().signer;
    let key = KeyIdentifier::from_bytes([0x5a; 20]);
    let e = expect_kind(
        s.sign(&key, Algorithm::EcdsaP256Sha256, b"x"),
        ErrorKind::NotFound,
    );
    assert!(e.message.contains(&key.to_string()), "{e}");
    expect_kind(s.public_key(&key), ErrorKind::NotFound);
    expect_kind(s.destroy_key(&key), ErrorKind::NotFound);
}

#[test]
fn random_comes_from_the_token() {
    let s = &hsm().signer;
    let a = s.random(32).unwrap();
    let b = s.random(32).unwrap();
    assert_eq!((a.len(), b.len()), (32, 32));
    assert_ne!(a, b);
    assert!(s.random(0).unwrap().is_empty());
    assert_eq!(s.random(4096).unwrap().len(), 4096);
}

#[rstest]
#[case::rsa2048(Algorithm::Rsa2048Pkcs1Sha256)]
#[case::rsa2048_pss(Algorithm::Rsa2048PssSha256)]
#[case::ecdsa_p256(Algorithm::EcdsaP256Sha256)]
#[case::ecdsa_p384(Algorithm::EcdsaP384Sha384)]
#[case::ed25519(Algorithm::Ed25519)]
fn softhsm_supports_every_algorithm(#[case] alg: Algorithm) {
    assert!(hsm().signer.supports(alg).unwrap());
}

#[test]
fn info_names_the_library_and_the_token() {
    let h = hsm();
    let info = h.signer.info().unwrap();
    assert_eq!(info.name, "SoftHSMv2");
    assert_eq!(info.signer_type, "PKCS#11");
    let get = |k: &str| {
        info.details
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {k} in {:?}", info.details))
    };
    assert_eq!(get("token_label"), h.token().label);
    assert_eq!(get("lib_path"), MODULE);
    assert!(
        get("library_manufacturer").contains("SoftHSM"),
        "{:?}",
        info.details
    );
    assert!(!get("library").is_empty());
    assert!(get("token_model").contains("SoftHSM"), "{:?}", info.details);
    assert!(get("slot").starts_with("0x"));
    for k in ["library_version", "firmware_version", "hardware_version"] {
        assert!(get(k).contains('.'), "{k}: {:?}", info.details);
    }
}

#[test]
fn a_second_signer_shares_the_module_and_the_login() {
    let h = hsm();
    let key = h.signer.create_key(Algorithm::EcdsaP256Sha256).unwrap();
    let _cleanup = Cleanup(&h.signer, key.id);
    // Found by slot id this time; the login is already there (CKR_USER_ALREADY_LOGGED_IN).
    let slot = h
        .signer
        .info()
        .unwrap()
        .details
        .into_iter()
        .find(|(k, _)| k == "slot")
        .map(|(_, v)| v)
        .unwrap();
    let id = u64::from_str_radix(slot.trim_start_matches("0x"), 16).unwrap();
    let second = Pkcs11Signer::new(
        "second",
        &config(
            SlotSelector::Id(id),
            Secret::Literal(h.token().pin.clone().into()),
        ),
    );
    assert!(second.list_keys().unwrap().contains(&key.id));
    let sig = second
        .sign(&key.id, Algorithm::EcdsaP256Sha256, b"shared")
        .unwrap();
    ParsedPublicKey::new(&signature::ECDSA_P256_SHA256_ASN1, &key.public_key)
        .unwrap()
        .verify_sig(b"shared", &sig)
        .unwrap();
}

#[test]
fn an_unknown_label_is_unavailable_and_lists_the_labels_seen() {
    let h = hsm();
    let s = Pkcs11Signer::new(
        "nowhere",
        &config(
            SlotSelector::Label("no such token".into()),
            Secret::Literal(h.token().pin.clone().into()),
        ),
    );
    let e = expect_kind(s.list_keys(), ErrorKind::Unavailable);
    for needle in [
        "no such token",
        h.token().label.as_str(),
        h.other.label.as_str(),
    ] {
        assert!(e.message.contains(needle), "'{needle}' missing from: {e}");
    }
    assert!(
        !e.message.contains(&h.token().pin),
        "PIN in the message: {e}"
    );
}

#[test]
fn an_unknown_slot_id_is_unavailable() {
    let h = hsm();
    let s = Pkcs11Signer::new(
        "nowhere",
        &config(
            SlotSelector::Id(0xdead_beef_0000),
            Secret::Literal(h.token().pin.clone().into()),
        ),
    );
    let e = expect_kind(s.random(1), ErrorKind::Unavailable);
    assert!(e.message.contains(&h.token().label), "{e}");
}

#[test]
fn a_wrong_pin_is_unusable_and_never_shown() {
    let h = hsm();
    let wrong = format!("{}0", h.other.pin);
    // The other token: nobody logs in to it, so the PIN is really checked.
    let s = Pkcs11Signer::new(
        "wrong pin",
        &config(
            SlotSelector::Label(h.other.label.clone()),
            Secret::Literal(wrong.clone().into()),
        ),
    );
    for _ in 0..2 {
        let e = expect_kind(s.random(8), ErrorKind::Unusable);
        assert!(e.message.contains("wrong PIN"), "{e}");
        assert!(e.message.contains(&h.other.label), "{e}");
        assert!(!e.message.contains(&wrong), "PIN in the message: {e}");
        assert!(!e.message.contains(&h.other.pin), "PIN in the message: {e}");
    }
}

#[test]
fn a_missing_pin_variable_is_a_config_error_naming_the_variable() {
    let h = hsm();
    let s = Pkcs11Signer::new(
        "no pin",
        &config(
            SlotSelector::Label(h.other.label.clone()),
            Secret::Env("HSM_HARNESS_TEST_SURELY_UNSET_PIN".into()),
        ),
    );
    let e = expect_kind(s.random(8), ErrorKind::Config);
    assert!(
        e.message.contains("HSM_HARNESS_TEST_SURELY_UNSET_PIN"),
        "{e}"
    );
}

#[test]
fn the_token_directory_is_the_fixtures_own() {
    let h = hsm();
    assert!(h.softhsm.dir().join("tokens").is_dir());
    assert_eq!(
        std::env::var_os("SOFTHSM2_CONF").as_deref(),
        Some(h.softhsm.conf().as_os_str())
    );
}
