//! A misbehaving PKCS#11 module under the relay: faults injected by the PKCS#11 shim
//! (p11shim) in front of SoftHSMv2, and panics inside an operation. The relay must keep
//! serving and its session pool must grow back.

mod support;

use std::sync::Arc;
use std::time::Duration;

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
