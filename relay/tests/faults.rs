//! A misbehaving PKCS#11 module under the relay: faults injected by the PKCS#11 shim
//! (p11shim) in front of SoftHSMv2, and panics inside an operation. The relay must keep
//! serving and its session pool must grow back.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use kmip_relay::config::{CredentialMode, Pkcs11Config, SlotSelector};
use kmip_relay::kmip::{operation as op, tag, ResultReason};
use kmip_relay::pool::Failure;
use kmip_relay::token::Token;
use kmip_relay::ttlv::Item;
use support::*;

fn rng(c: &mut Client) -> Answer {
    one(
        c,
        op::RNG_RETRIEVE,
        vec![Item::integer(tag::DATA_LENGTH, 16)],
    )
}

#[test]
fn a_lost_session_is_replaced_once_the_module_opens_sessions_again() {
    let hsm = softhsm();
    // The start opens session 1 and probes C_GenerateRandom (call 1). The first RNG
    // Retrieve loses its session, and the replacement cannot be opened.
    let shim = Shim::new(
        hsm.dir(),
        "[[rule]]\nfunction = \"C_GenerateRandom\"\naction = \"return\"\n\
         rv = \"CKR_SESSION_HANDLE_INVALID\"\non_call = 2\n\
         [[rule]]\nfunction = \"C_OpenSession\"\naction = \"return\"\n\
         rv = \"CKR_DEVICE_ERROR\"\non_call = 2\n",
    );
    let relay = Relay::start(
        &hsm,
        &RelayOptions {
            pkcs11: "pool_size = 1".into(),
            limits: "pool_wait_secs = 1".into(),
            lib: Some(Shim::lib()),
            env: shim.env(),
            ..Default::default()
        },
    );
    let mut c = relay.connect();
    rng(&mut c).failed(ResultReason::GeneralFailure);
    // The pool of one is empty now; the next request opens a session again.
    rng(&mut c).ok();
    rng(&mut c).ok();
    assert_eq!(shim.calls("C_OpenSession"), 3, "{}", relay.log());
    assert!(relay.log().contains("opened again"), "{}", relay.log());
}

#[test]
fn a_panic_in_an_operation_is_a_general_failure_and_the_session_comes_back() {
    let hsm = softhsm();
    // In this process only: the module reads it at C_Initialize.
    std::env::set_var("SOFTHSM2_CONF", hsm.conf());
    let config = Pkcs11Config {
        lib_path: LIB.into(),
        slot: SlotSelector::Label(LABEL.into()),
        user_pin: Some(kmip_relay::config::Secret::Literal(PIN.into())),
        pool_size: 1,
    };
    let token = Arc::new(
        Token::open(&config, CredentialMode::None, Duration::from_secs(1)).expect("token"),
    );
    let e = token
        .run(|_| -> Result<(), Failure> { panic!("a bug in an operation") })
        .unwrap_err();
    assert_eq!(e.reason, ResultReason::GeneralFailure);
    // The only session was replaced: the next operation gets one at once.
    let bytes = token
        .run(|s| {
            s.generate_random_vec(8)
                .map_err(|e| kmip_relay::token::classify("rng", &e))
        })
        .expect("a session after the panic");
    assert_eq!(bytes.len(), 8);
}

#[test]
fn a_hung_module_call_fails_at_the_deadline_and_others_go_on() {
    let hsm = softhsm();
    // C_GenerateRandom call 1 is the start's probe; call 2 hangs for 4 s.
    let shim = Shim::new(
        hsm.dir(),
        "[[rule]]\nfunction = \"C_GenerateRandom\"\naction = \"delay\"\nmillis = 4000\n\
         on_call = 2\n",
    );
    let relay = Relay::start(
        &hsm,
        &RelayOptions {
            pkcs11: "pool_size = 1".into(),
            limits: "operation_timeout_secs = 1".into(),
            lib: Some(Shim::lib()),
            env: shim.env(),
            ..Default::default()
        },
    );
    let start = Instant::now();
    let mut hung = relay.connect();
    let a = rng(&mut hung);
    assert!(
        a.failed(ResultReason::GeneralFailure).contains("within 1s"),
        "{a:?}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    // The only session is stuck in the module: another client gets a replacement.
    let mut other = relay.connect();
    rng(&mut other).ok();
    assert!(
        start.elapsed() < Duration::from_millis(3500),
        "{:?}",
        start.elapsed()
    );
    assert!(
        relay.log().contains("abandoned and replaced"),
        "{}",
        relay.log()
    );
    // When the hung call returns, its session is closed, not reused.
    let deadline = Instant::now() + Duration::from_secs(10);
    while shim.calls("C_CloseSession") == 0 {
        assert!(Instant::now() < deadline, "{}", relay.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    rng(&mut hung).ok();
    rng(&mut other).ok();
}
