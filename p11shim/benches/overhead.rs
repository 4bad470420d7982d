//! What the shim costs per call: the same SoftHSMv2 token reached directly and through
//! `libp11shim.so` with nothing injected and the trace on (as the harness runs it), for
//! a cheap call (C_GenerateRandom, 32 bytes) and a real one (C_Sign, ECDSA P-256).
//! `cargo bench -p p11shim --bench overhead`. Needs SoftHSMv2 (ci/install-deps).

use std::path::{Path, PathBuf};
use std::process::Command;

use criterion::{criterion_group, criterion_main, Criterion};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::Attribute;
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use p11shim::config::{Config, CONFIG_VAR};

const SOFTHSM: &str = "/usr/lib/softhsm/libsofthsm2.so";
const LABEL: &str = "shim-bench";
const PIN: &str = "bench-pin-1234";

/// The shim built with this bench, in `target/<profile>/deps/` next to it.
fn shim_library() -> PathBuf {
    let exe = std::env::current_exe().expect("bench binary path");
    let lib = exe.with_file_name("libp11shim.so");
    assert!(lib.exists(), "{} not built", lib.display());
    lib
}

/// A logged-in session through `lib`. Both modules end in the same SoftHSMv2 in this
/// process, so the second C_Initialize and C_Login are "already" answers.
fn session(lib: &Path) -> (Pkcs11, Session) {
    let p = Pkcs11::new(lib).expect("load module");
    match p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => panic!("C_Initialize: {e}"),
    }
    let slot = p
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| p.get_token_info(*s).is_ok_and(|t| t.label() == LABEL))
        .expect("the bench token");
    let s = p.open_rw_session(slot).expect("C_OpenSession");
    match s.login(UserType::User, Some(&AuthPin::new(PIN.into()))) {
        Ok(()) | Err(Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(e) => panic!("C_Login: {e}"),
    }
    (p, s)
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::create_dir(&tokens).unwrap();
    let conf = dir.path().join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .unwrap();
    let init = Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", LABEL, "--pin", PIN])
        .args(["--so-pin", "so-bench-5678"])
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .expect("softhsm2-util (ci/install-deps)");
    assert!(init.status.success(), "{init:?}");
    let shim_conf = dir.path().join("shim.toml");
    let config = Config {
        module: SOFTHSM.into(),
        trace: Some(dir.path().join("trace.jsonl")),
        ..Config::default()
    };
    std::fs::write(&shim_conf, config.to_toml()).unwrap();
    std::env::set_var("SOFTHSM2_CONF", &conf);
    std::env::set_var(CONFIG_VAR, &shim_conf);

    let (_direct_ctx, direct) = session(Path::new(SOFTHSM));
    let (_shim_ctx, shimmed) = session(&shim_library());
    let p256_oid = vec![0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    let (_public, private) = direct
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[Attribute::Token(false), Attribute::EcParams(p256_oid)],
            &[Attribute::Token(false), Attribute::Sign(true)],
        )
        .expect("C_GenerateKeyPair");
    let digest = [7u8; 32];

    let mut g = c.benchmark_group("C_GenerateRandom 32 bytes");
    g.bench_function("direct", |b| {
        b.iter(|| direct.generate_random_vec(32).unwrap())
    });
    g.bench_function("through the shim (traced)", |b| {
        b.iter(|| shimmed.generate_random_vec(32).unwrap())
    });
    g.finish();
    // Session objects belong to the module's state, which both contexts share here.
    let mut g = c.benchmark_group("C_Sign ECDSA P-256");
    g.bench_function("direct", |b| {
        b.iter(|| direct.sign(&Mechanism::Ecdsa, private, &digest).unwrap())
    });
    g.bench_function("through the shim (traced)", |b| {
        b.iter(|| shimmed.sign(&Mechanism::Ecdsa, private, &digest).unwrap())
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = bench
}
criterion_main!(benches);
