//! What the shim costs per call: the same SoftHSMv2 token reached directly and through
//! `libp11shim.so` with nothing injected and the trace on (as the harness runs it), for
//! a cheap call (C_GenerateRandom, 32 bytes) and a real one (C_Sign, ECDSA P-256).
//! `cargo bench -p p11shim --bench overhead`. Needs SoftHSMv2 (ci/install-deps).

use std::path::{Path, PathBuf};

use criterion::{criterion_group, criterion_main, Criterion};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::Attribute;
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use p11shim::config::{Config, CONFIG_VAR};

use testkit::softhsm::{Hsm, Token, MODULE as SOFTHSM};

/// The shim built with this bench, in `target/<profile>/deps/` next to it.
fn shim_library() -> PathBuf {
    let exe = std::env::current_exe().expect("bench binary path");
    let lib = exe.with_file_name("libp11shim.so");
    assert!(lib.exists(), "{} not built", lib.display());
    lib
}

/// A logged-in session through `lib`. Both modules end in the same SoftHSMv2 in this
/// process, so the second C_Initialize and C_Login are "already" answers.
fn session(lib: &Path, token: &Token) -> (Pkcs11, Session) {
    let p = Pkcs11::new(lib).expect("load module");
    match p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => panic!("C_Initialize: {e}"),
    }
    let slot = p
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| p.get_token_info(*s).is_ok_and(|t| t.label() == token.label))
        .expect("the bench token");
    let s = p.open_rw_session(slot).expect("C_OpenSession");
    match s.login(
        UserType::User,
        Some(&AuthPin::new(token.pin.clone().into())),
    ) {
        Ok(()) | Err(Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(e) => panic!("C_Login: {e}"),
    }
    (p, s)
}

fn bench(c: &mut Criterion) {
    let hsm = Hsm::new();
    let dir = hsm.dir();
    let shim_conf = dir.join("shim.toml");
    let config = Config {
        module: SOFTHSM.into(),
        trace: Some(dir.join("trace.jsonl")),
        ..Config::default()
    };
    std::fs::write(&shim_conf, config.to_toml()).unwrap();
    std::env::set_var("SOFTHSM2_CONF", hsm.conf());
    std::env::set_var(CONFIG_VAR, &shim_conf);

    let (_direct_ctx, direct) = session(Path::new(SOFTHSM), hsm.token());
    let (_shim_ctx, shimmed) = session(&shim_library(), hsm.token());
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
