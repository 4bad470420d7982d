//! The shim in front of a real SoftHSMv2 token, driven through cryptoki.
//!
//! The shim reads its configuration once per process and PKCS#11 allows one
//! C_Initialize per process, while the tests of this file are threads of one process.
//! So each test is a parent that makes a fresh token in a temp dir (softhsm2-util), writes
//! a shim configuration and re-runs this test binary as a child (the ignored test
//! `child`, chosen by [`SCENARIO_VAR`]). The child loads `libp11shim.so` with cryptoki
//! and asserts what the application sees; the parent asserts the child's exit and the
//! trace.
//!
//! Without SoftHSMv2 these tests fail, never pass silently: `apt-get install softhsm2`.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Function, Pkcs11};
use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use p11shim::config::{Action, Config, Rule, CONFIG_VAR};
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use serde_json::Value;
use sha2::{Digest, Sha256};
use testkit::softhsm::{Hsm, HsmOptions, Token};

const SOFTHSM: &str = testkit::softhsm::MODULE;
const SCENARIO_VAR: &str = "P11SHIM_TEST_SCENARIO";
const LIB_VAR: &str = "P11SHIM_TEST_LIB";
const LABEL: &str = "shim-test";
/// Distinctive, so that the trace can be searched for them.
const PIN: &str = "user-PIN-7431";
const SO_PIN: &str = "so-PIN-9876";
const WRONG_PIN: &str = "wrong-PIN-5520";

/// The shim this test was built with: `libp11shim.so` in `target/<profile>/deps/`, next
/// to this test binary. (Not the copy in `target/<profile>/`: `cargo test --test NAME`
/// rebuilds the library in `deps/` without refreshing that copy, which may be stale.)
fn shim_library() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let deps = exe.parent().expect("test binary in target/<profile>/deps");
    let lib = deps.join("libp11shim.so");
    if lib.exists() {
        return lib;
    }
    let uplifted = deps.parent().map(|d| d.join("libp11shim.so"));
    uplifted
        .filter(|l| l.exists())
        .unwrap_or_else(|| panic!("libp11shim.so not built next to {}", exe.display()))
}

/// A fresh token and a shim configuration, in one temp dir.
struct Setup {
    hsm: Hsm,
}

impl Setup {
    fn new() -> Setup {
        // Fixed label and PINs: the child process, which has no fixture, uses them too.
        Setup {
            hsm: Hsm::with(HsmOptions {
                token: Token::new(LABEL, PIN, SO_PIN),
                ..HsmOptions::default()
            }),
        }
    }

    fn softhsm_conf(&self) -> &Path {
        self.hsm.conf()
    }

    fn trace_path(&self) -> PathBuf {
        self.hsm.dir().join("trace.jsonl")
    }

    /// A configuration for SoftHSM with a trace in this dir.
    fn config(&self) -> Config {
        Config {
            module: SOFTHSM.into(),
            trace: Some(self.trace_path()),
            ..Config::default()
        }
    }

    /// Runs `scenario` in a child process with `lib` as its PKCS#11 module and
    /// `config` (if any) as the shim's configuration.
    fn run(&self, scenario: &str, lib: &Path, config: Option<&Config>) -> Output {
        let shim_conf = self.hsm.dir().join("shim.toml");
        if let Some(c) = config {
            std::fs::write(&shim_conf, c.to_toml()).unwrap();
        }
        Command::new(std::env::current_exe().unwrap())
            .args([
                "child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(SCENARIO_VAR, scenario)
            .env(LIB_VAR, lib)
            .env("SOFTHSM2_CONF", self.softhsm_conf())
            .env(CONFIG_VAR, &shim_conf)
            .output()
            .unwrap()
    }

    /// Runs `scenario` through the shim and expects the child to succeed.
    fn run_ok(&self, scenario: &str, config: &Config) -> Output {
        let out = self.run(scenario, &shim_library(), Some(config));
        assert!(
            out.status.success(),
            "child `{scenario}` failed:\n{}",
            show(&out)
        );
        out
    }

    fn trace_text(&self) -> String {
        std::fs::read_to_string(self.trace_path()).unwrap_or_default()
    }

    fn trace(&self) -> Vec<Value> {
        self.trace_text()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad trace line {l}: {e}")))
            .collect()
    }
}

fn show(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The trace lines of one function.
fn calls<'a>(trace: &'a [Value], function: &str) -> Vec<&'a Value> {
    trace.iter().filter(|l| l["function"] == function).collect()
}

fn rule(function: &str, action: Action) -> Rule {
    Rule::new(function, action)
}

// ---------------------------------------------------------------- parents

#[test]
fn transparent_when_nothing_is_injected() {
    // The same script, straight to SoftHSM and through the shim, on twin tokens.
    let direct = Setup::new();
    let out_direct = direct.run("transparent", Path::new(SOFTHSM), None);
    assert!(
        out_direct.status.success(),
        "direct run failed:\n{}",
        show(&out_direct)
    );
    let shimmed = Setup::new();
    let out_shim = shimmed.run_ok("transparent", &shimmed.config());
    let outcomes = |o: &Output| -> Vec<String> {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| l.starts_with("OUTCOME "))
            .map(String::from)
            .collect()
    };
    assert!(outcomes(&out_direct).len() >= 8, "{}", show(&out_direct));
    assert_eq!(outcomes(&out_direct), outcomes(&out_shim));

    let text = shimmed.trace_text();
    assert!(
        !text.contains(PIN) && !text.contains(SO_PIN),
        "a PIN in the trace:\n{text}"
    );
    let trace = shimmed.trace();
    for (i, line) in trace.iter().enumerate() {
        assert_eq!(line["seq"], i as u64 + 1, "{line}");
        assert_eq!(line["injected"], false, "{line}");
        assert!(line["micros"].is_u64() && line["rv"].is_string(), "{line}");
    }
    assert_eq!(trace[0]["function"], "C_GetFunctionList");
    assert_eq!(calls(&trace, "C_Initialize")[0]["rv"], "CKR_OK");
    let sign_init = calls(&trace, "C_SignInit");
    assert_eq!(sign_init[0]["args"]["mechanism"], "CKM_ECDSA");
    assert_eq!(sign_init[0]["rv"], "CKR_OK");
    let sign = calls(&trace, "C_Sign");
    assert_eq!(sign[1]["args"]["data_len"], 32);
    assert_eq!(sign[1]["args"]["signature_len"], 64);
    assert_eq!(sign[1]["rv"], "CKR_OK");
    let random = calls(&trace, "C_GenerateRandom");
    assert_eq!(random[0]["args"]["random_len"], 32);
    assert_eq!(random[0]["rv"], "CKR_OK");
    let login = calls(&trace, "C_Login");
    assert_eq!(login[0]["args"]["user_type"], "CKU_USER");
    assert_eq!(login[0]["rv"], "CKR_OK");
    assert_eq!(login[1]["rv"], "CKR_USER_ALREADY_LOGGED_IN");
    let keygen = calls(&trace, "C_GenerateKeyPair");
    assert_eq!(keygen[0]["args"]["mechanism"], "CKM_EC_KEY_PAIR_GEN");
    assert!(keygen[0]["args"]["private_key"].is_u64());
}

#[test]
fn unsupported_function_is_answered_by_the_shim() {
    let s = Setup::new();
    let mut config = s.config();
    config
        .rules
        .push(rule("C_GenerateRandom", Action::Unsupported));
    s.run_ok("random_unsupported", &config);
    let trace = s.trace();
    let random = calls(&trace, "C_GenerateRandom");
    assert_eq!(random.len(), 3);
    for (i, line) in random.iter().enumerate() {
        assert_eq!(line["call"], i as u64 + 1);
        assert_eq!(line["rv"], "CKR_FUNCTION_NOT_SUPPORTED");
        assert_eq!(line["injected"], true);
        assert_eq!(line["action"], "unsupported");
    }
    // Everything else passed through.
    assert!(trace
        .iter()
        .filter(|l| l["function"] != "C_GenerateRandom")
        .all(|l| l["injected"] == false));
}

/// A changed configuration file takes effect on the next call of the running process,
/// counting calls from the change; a change of module is refused and the rules in
/// force stay.
#[test]
fn rules_change_when_the_file_changes() {
    let s = Setup::new();
    let out = s.run_ok("rules_reload", &s.config());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("module and trace cannot change"),
        "{stderr}"
    );
    let trace = s.trace();
    let random: Vec<&str> = calls(&trace, "C_GenerateRandom")
        .iter()
        .map(|l| l["rv"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        random,
        [
            "CKR_OK",
            "CKR_OK",
            "CKR_FUNCTION_NOT_SUPPORTED",
            "CKR_OK",
            "CKR_OK"
        ]
    );
}

#[test]
fn sign_fails_on_the_chosen_calls_and_the_session_recovers() {
    let s = Setup::new();
    let mut config = s.config();
    // cryptoki's sign is two C_Sign calls (length, then signature): call 2 is the first
    // signature proper, call 5 the length query of the third sign.
    let mut once = rule("C_Sign", Action::Return);
    once.rv = Some("CKR_DEVICE_ERROR".into());
    once.on_call = Some(2);
    let mut from = rule("C_Sign", Action::Return);
    from.rv = Some("CKR_DEVICE_REMOVED".into());
    from.from_call = Some(5);
    config.rules.extend([once, from]);
    s.run_ok("sign_faults", &config);
    let trace = s.trace();
    let sign: Vec<(u64, &str, bool)> = calls(&trace, "C_Sign")
        .iter()
        .map(|l| {
            (
                l["call"].as_u64().unwrap(),
                l["rv"].as_str().unwrap(),
                l["injected"] == true,
            )
        })
        .collect();
    assert_eq!(
        sign,
        [
            (1, "CKR_OK", false),
            (2, "CKR_DEVICE_ERROR", true),
            (3, "CKR_OK", false),
            (4, "CKR_OK", false),
            (5, "CKR_DEVICE_REMOVED", true),
            (6, "CKR_DEVICE_REMOVED", true),
        ]
    );
    // The shim ended the module's operation each time: no CKR_OPERATION_ACTIVE.
    assert!(calls(&trace, "C_SignInit")
        .iter()
        .all(|l| l["rv"] == "CKR_OK"));
}

#[test]
fn an_injected_failure_ends_the_modules_operation() {
    // A failed C_SignUpdate ends the signing operation (PKCS#11 2.40, 5.12). SoftHSM
    // would carry on with an operation the application has been told is over, so the
    // shim ends it: the next C_SignUpdate without C_SignInit is refused by the module.
    let s = Setup::new();
    let mut config = s.config();
    let mut fail = rule("C_SignUpdate", Action::Return);
    fail.rv = Some("CKR_DEVICE_ERROR".into());
    fail.on_call = Some(1);
    config.rules.push(fail);
    s.run_ok("operation_ended", &config);
    let trace = s.trace();
    let update: Vec<&str> = calls(&trace, "C_SignUpdate")
        .iter()
        .map(|l| l["rv"].as_str().unwrap())
        .collect();
    assert_eq!(
        update,
        [
            "CKR_DEVICE_ERROR",
            "CKR_OPERATION_NOT_INITIALIZED",
            "CKR_OK"
        ]
    );
}

#[test]
fn delay_is_applied_before_the_answer() {
    let s = Setup::new();
    let mut config = s.config();
    let mut delay = rule("C_GenerateRandom", Action::Delay);
    delay.millis = Some(60);
    let mut fail = rule("C_GenerateRandom", Action::Return);
    fail.rv = Some("CKR_DEVICE_ERROR".into());
    fail.on_call = Some(2);
    config.rules.extend([delay, fail]);
    s.run_ok("random_delayed", &config);
    let trace = s.trace();
    let random = calls(&trace, "C_GenerateRandom");
    assert_eq!(random.len(), 2);
    for line in &random {
        assert_eq!(line["delay_ms"], 60, "{line}");
        assert!(line["micros"].as_u64().unwrap() >= 60_000, "{line}");
    }
    assert_eq!(random[0]["rv"], "CKR_OK");
    assert_eq!(random[0]["injected"], false);
    assert_eq!(random[1]["rv"], "CKR_DEVICE_ERROR");
    assert_eq!(random[1]["injected"], true);
    assert!(calls(&trace, "C_GetInfo")
        .iter()
        .all(|l| l.get("delay_ms").is_none()));
}

#[test]
fn abort_kills_the_process_inside_the_call() {
    let s = Setup::new();
    let mut config = s.config();
    config.rules.push(rule("C_Sign", Action::Abort));
    let out = s.run("abort_in_sign", &shim_library(), Some(&config));
    assert_eq!(
        out.status.signal(),
        Some(6),
        "expected SIGABRT:\n{}",
        show(&out)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("about to sign"));
    let trace = s.trace();
    let last = trace.last().unwrap();
    assert_eq!(last["function"], "C_Sign");
    assert_eq!(last["action"], "abort");
    assert!(last["rv"].is_null());
}

#[test]
fn hidden_mechanism_is_gone_from_list_and_info() {
    let s = Setup::new();
    let mut config = s.config();
    config.hide_mechanisms = vec!["CKM_ECDSA".into()];
    s.run_ok("ecdsa_hidden", &config);
    let trace = s.trace();
    let lists = calls(&trace, "C_GetMechanismList");
    assert!(lists.iter().all(|l| l["args"]["hidden"] == 1), "{lists:?}");
    let info = calls(&trace, "C_GetMechanismInfo");
    assert_eq!(info[0]["rv"], "CKR_MECHANISM_INVALID");
    assert_eq!(info[0]["action"], "hide_mechanisms");
    let init = calls(&trace, "C_SignInit");
    assert_eq!(init[0]["rv"], "CKR_MECHANISM_INVALID");
}

#[test]
fn wrong_pin_passes_through_once_and_is_not_traced() {
    let s = Setup::new();
    s.run_ok("wrong_pin", &s.config());
    let text = s.trace_text();
    assert!(!text.contains(WRONG_PIN) && !text.contains(PIN), "{text}");
    let trace = s.trace();
    let login = calls(&trace, "C_Login");
    assert_eq!(login.len(), 1);
    assert_eq!(login[0]["rv"], "CKR_PIN_INCORRECT");
    assert_eq!(login[0]["injected"], false);
    assert_eq!(
        login[0]["args"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["session", "user_type"]
    );
}

#[test]
fn bad_configuration_refuses_to_load_and_says_why() {
    let s = Setup::new();
    let dir = s.hsm.dir();
    std::fs::write(
        dir.join("bad.toml"),
        format!("module = \"{SOFTHSM}\"\ncolour = \"red\"\n"),
    )
    .unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(SCENARIO_VAR, "load_fails")
        .env(LIB_VAR, shim_library())
        .env("SOFTHSM2_CONF", s.softhsm_conf())
        .env(CONFIG_VAR, dir.join("bad.toml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("p11shim:") && stderr.contains("colour"),
        "{stderr}"
    );
}

// ---------------------------------------------------------------- the child

/// The child process's entry point; does nothing unless a parent above started it.
#[test]
#[ignore = "child-process entry point of the other tests in this file"]
fn child() {
    let Ok(scenario) = std::env::var(SCENARIO_VAR) else {
        return;
    };
    let lib = PathBuf::from(std::env::var_os(LIB_VAR).expect("P11SHIM_TEST_LIB"));
    match scenario.as_str() {
        "load_fails" => {
            let Err(err) = Pkcs11::new(&lib) else {
                panic!("the shim must refuse a bad config");
            };
            assert!(
                matches!(
                    err,
                    Error::Pkcs11(RvError::GeneralError, Function::GetFunctionList)
                ),
                "{err:?}"
            );
        }
        "transparent" => transparent(&lib),
        "rules_reload" => {
            let (_p, session) = open(&lib, false);
            session.generate_random_vec(8).unwrap();
            session.generate_random_vec(8).unwrap();
            let path = PathBuf::from(std::env::var_os(CONFIG_VAR).unwrap());
            let mut config = Config::from_toml(&std::fs::read_to_string(&path).unwrap()).unwrap();
            // The 1st call after the change (the 3rd of the process) fails.
            let mut once = Rule::new("C_GenerateRandom", Action::Unsupported);
            once.on_call = Some(1);
            config.rules = vec![once];
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, config.to_toml()).unwrap();
            std::fs::rename(&tmp, &path).unwrap();
            assert_rv(
                session.generate_random_vec(8),
                RvError::FunctionNotSupported,
            );
            session.generate_random_vec(8).unwrap();
            // Another module: refused, the rules in force stay (call 2 since the change).
            config.module = "/no/such/module.so".into();
            std::fs::write(&tmp, config.to_toml()).unwrap();
            std::fs::rename(&tmp, &path).unwrap();
            session.generate_random_vec(8).unwrap();
        }
        "random_unsupported" => {
            let (_p, session) = open(&lib, true);
            for _ in 0..3 {
                let err = session.generate_random_vec(16).unwrap_err();
                assert!(
                    matches!(
                        err,
                        Error::Pkcs11(RvError::FunctionNotSupported, Function::GenerateRandom)
                    ),
                    "{err:?}"
                );
            }
        }
        "sign_faults" => {
            let (_p, session) = open(&lib, true);
            let (public, private) = ec_key(&session);
            let digest = Sha256::digest(b"shim");
            let sign = || session.sign(&Mechanism::Ecdsa, private, &digest);
            assert_rv(sign(), RvError::DeviceError);
            let sig = sign().expect("the session works again after an injected failure");
            verify_p256(&session, public, &digest, &sig);
            assert_rv(sign(), RvError::DeviceRemoved);
            assert_rv(sign(), RvError::DeviceRemoved);
        }
        "operation_ended" => {
            let (_p, session) = open(&lib, true);
            let key = session
                .generate_key(
                    &Mechanism::GenericSecretKeyGen,
                    &[
                        Attribute::Token(false),
                        Attribute::Sign(true),
                        Attribute::ValueLen(32.into()),
                    ],
                )
                .expect("C_GenerateKey");
            session.sign_init(&Mechanism::Sha256Hmac, key).unwrap();
            assert_rv(session.sign_update(b"part"), RvError::DeviceError);
            assert_rv(
                session.sign_update(b"part"),
                RvError::OperationNotInitialized,
            );
            session.sign_init(&Mechanism::Sha256Hmac, key).unwrap();
            session.sign_update(b"part").unwrap();
            assert_eq!(session.sign_final().unwrap().len(), 32);
        }
        "random_delayed" => {
            let (_p, session) = open(&lib, false);
            assert_eq!(session.generate_random_vec(8).unwrap().len(), 8);
            assert_rv(session.generate_random_vec(8), RvError::DeviceError);
        }
        "abort_in_sign" => {
            let (_p, session) = open(&lib, true);
            let (_public, private) = ec_key(&session);
            println!("about to sign");
            let _ = session.sign(&Mechanism::Ecdsa, private, &[0u8; 32]);
            panic!("the shim should have aborted inside C_Sign");
        }
        "ecdsa_hidden" => {
            let (p, session) = open(&lib, true);
            let slot = session.get_session_info().unwrap().slot_id();
            let list = p.get_mechanism_list(slot).unwrap();
            assert!(!list.contains(&MechanismType::ECDSA), "{list:?}");
            assert!(list.contains(&MechanismType::ECC_KEY_PAIR_GEN), "{list:?}");
            assert_rv(
                p.get_mechanism_info(slot, MechanismType::ECDSA),
                RvError::MechanismInvalid,
            );
            let (_public, private) = ec_key(&session);
            assert_rv(
                session.sign(&Mechanism::Ecdsa, private, &[0u8; 32]),
                RvError::MechanismInvalid,
            );
        }
        "wrong_pin" => {
            let (_p, session) = open(&lib, false);
            let pin = AuthPin::new(WRONG_PIN.into());
            assert_rv(
                session.login(UserType::User, Some(&pin)),
                RvError::PinIncorrect,
            );
        }
        other => panic!("unknown scenario {other}"),
    }
}

fn assert_rv<T: std::fmt::Debug>(r: Result<T, Error>, want: RvError) {
    match r {
        Err(Error::Pkcs11(rv, _)) if rv == want => {}
        other => panic!("expected {want:?}, got {other:?}"),
    }
}

/// Loads `lib`, initialises it, opens a R/W session on the test token, logs in if asked.
fn open(lib: &Path, login: bool) -> (Pkcs11, Session) {
    let p = Pkcs11::new(lib).expect("load module");
    p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .expect("C_Initialize");
    let slot = token_slot(&p);
    let session = p.open_rw_session(slot).expect("C_OpenSession");
    if login {
        session
            .login(UserType::User, Some(&AuthPin::new(PIN.into())))
            .expect("C_Login");
    }
    (p, session)
}

fn token_slot(p: &Pkcs11) -> Slot {
    p.get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| p.get_token_info(*s).is_ok_and(|t| t.label() == LABEL))
        .expect("the test token")
}

/// A session P-256 key pair.
fn ec_key(session: &Session) -> (ObjectHandle, ObjectHandle) {
    let p256_oid = vec![0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    let public = [
        Attribute::Token(false),
        Attribute::Verify(true),
        Attribute::EcParams(p256_oid),
        Attribute::Label(b"shim".to_vec()),
    ];
    let private = [
        Attribute::Token(false),
        Attribute::Sign(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Label(b"shim".to_vec()),
    ];
    session
        .generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private)
        .expect("C_GenerateKeyPair")
}

/// Checks a raw r||s signature with RustCrypto, not with the token.
fn verify_p256(session: &Session, public: ObjectHandle, digest: &[u8], sig: &[u8]) {
    let attrs = session
        .get_attributes(public, &[AttributeType::EcPoint])
        .unwrap();
    let Some(Attribute::EcPoint(der)) = attrs.first() else {
        panic!("no CKA_EC_POINT: {attrs:?}");
    };
    // DER OCTET STRING (04 41) around the 65-byte uncompressed point.
    let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(&der[der.len() - 65..]).unwrap();
    let sig = p256::ecdsa::Signature::from_slice(sig).unwrap();
    key.verify_prehash(digest, &sig)
        .expect("signature verifies");
}

/// A script of calls, successes and failures; prints one `OUTCOME` line per step, so
/// that the parent can compare a run through the shim with a run without it.
fn transparent(lib: &Path) {
    let (p, session) = open(lib, true);
    let outcome = |step: &str, what: String| println!("OUTCOME {step}: {what}");
    let slot = session.get_session_info().unwrap().slot_id();
    let info = p.get_library_info().unwrap();
    outcome(
        "library",
        format!("{} {:?}", info.manufacturer_id(), info.library_version()),
    );
    let list = p.get_mechanism_list(slot).unwrap();
    outcome("mechanisms", format!("{}", list.len()));
    outcome(
        "ecdsa info",
        format!(
            "{:?}",
            p.get_mechanism_info(slot, MechanismType::ECDSA).map(|i| (
                i.min_key_size(),
                i.max_key_size(),
                i.sign()
            ))
        ),
    );
    outcome(
        "login again",
        format!(
            "{:?}",
            session.login(UserType::User, Some(&AuthPin::new(PIN.into())))
        ),
    );
    let (public, private) = ec_key(&session);
    let digest = Sha256::digest(b"transparent");
    let sig = session.sign(&Mechanism::Ecdsa, private, &digest).unwrap();
    verify_p256(&session, public, &digest, &sig);
    outcome("sign", format!("{} bytes, verifies", sig.len()));
    let mut bad = sig.clone();
    bad[10] ^= 1;
    outcome(
        "token verify of a bad signature",
        format!(
            "{:?}",
            session.verify(&Mechanism::Ecdsa, public, &digest, &bad)
        ),
    );
    outcome(
        "sign with a public key",
        format!("{:?}", session.sign(&Mechanism::Ecdsa, public, &digest)),
    );
    let random = session.generate_random_vec(32).unwrap();
    assert!(random.iter().any(|b| *b != 0));
    outcome("random", format!("{} bytes", random.len()));
    let found = session
        .find_objects(&[Attribute::Label(b"shim".to_vec())])
        .unwrap();
    outcome("find by label", format!("{}", found.len()));
    outcome("destroy", format!("{:?}", session.destroy_object(private)));
    outcome(
        "sign with the destroyed key",
        format!("{:?}", session.sign(&Mechanism::Ecdsa, private, &digest)),
    );
    outcome("logout", format!("{:?}", session.logout()));
}
