//! Property tests: random and mutated frames through the decoder (`fuzz::fuzz_one`)
//! and through the dispatcher on a real SoftHSMv2 token, in process. The dispatcher
//! must answer every frame with a well-formed response and never panic.
//!
//! `RELAY_FRAME_CASES` sets the number of cases per property (default 2000; the
//! acceptance run uses 100000). The token is set up once for this test binary (one
//! C_Initialize per process).

mod support;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use kmip_relay::config::{CredentialMode, Pkcs11Config, SlotSelector};
use kmip_relay::kmip::{operation as op, tag};
use kmip_relay::operations::Dispatcher;
use kmip_relay::token::Token;
use kmip_relay::ttlv::{self, Item};
use proptest::prelude::*;
use support::*;

fn cases() -> u32 {
    std::env::var("RELAY_FRAME_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

fn dispatcher() -> &'static Dispatcher {
    static D: OnceLock<(Hsm, Dispatcher)> = OnceLock::new();
    &D.get_or_init(|| {
        let hsm = softhsm();
        // Before the module is loaded: the module reads it at C_Initialize.
        std::env::set_var("SOFTHSM2_CONF", hsm.conf());
        let config = Pkcs11Config {
            lib_path: LIB.into(),
            slot: SlotSelector::Label(LABEL.into()),
            user_pin: Some(kmip_relay::config::Secret::Literal(PIN.into())),
            pool_size: 2,
        };
        let token =
            Token::open(&config, CredentialMode::None, Duration::from_secs(10)).expect("token");
        let d = Dispatcher::new(Arc::new(token), 64 * 1024);
        (hsm, d)
    })
    .1
}

fn seeds() -> Vec<Vec<u8>> {
    vec![
        ttlv::encode(&request_tree(
            &[(op::QUERY, vec![Item::enumeration(tag::QUERY_FUNCTION, 1)])],
            None,
        )),
        ttlv::encode(&request_tree(&[(op::DISCOVER_VERSIONS, vec![])], None)),
        ttlv::encode(&request_tree(
            &[(
                op::SIGN,
                vec![
                    Item::text(tag::UNIQUE_IDENTIFIER, "priv-01"),
                    Item::bytes(tag::DATA, vec![1; 20]),
                ],
            )],
            Some(("u", "p")),
        )),
        ttlv::encode(&request_tree(
            &[
                (op::LOCATE, vec![name_attr("n")]),
                (op::GET, vec![]),
                (op::RNG_RETRIEVE, vec![Item::integer(tag::DATA_LENGTH, 4)]),
            ],
            None,
        )),
        ttlv::encode(&request_tree(
            &[(
                op::MODIFY_ATTRIBUTE,
                vec![Item::text(tag::UNIQUE_IDENTIFIER, "pub-02"), name_attr("m")],
            )],
            None,
        )),
    ]
}

/// A seed frame with edits: (position, new byte) pairs, then an optional cut.
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    let seeds = seeds();
    (
        0..seeds.len(),
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        proptest::option::of(any::<prop::sample::Index>()),
    )
        .prop_map(move |(s, edits, cut)| {
            let mut f = seeds[s].clone();
            for (at, b) in edits {
                let i = at.index(f.len());
                f[i] = b;
            }
            if let Some(c) = cut {
                f.truncate(c.index(f.len() + 1));
            }
            f
        })
}

fn check_response(frame: &[u8]) {
    let out = dispatcher().handle(frame);
    let tree = ttlv::decode(&out).expect("the response is valid TTLV");
    assert_eq!(tree.tag, tag::RESPONSE_MESSAGE);
    assert!(!answers(&tree).is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn decoder_never_panics_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        kmip_relay::fuzz::fuzz_one(&bytes);
    }

    #[test]
    fn decoder_never_panics_on_mutated_frames(frame in mutated()) {
        kmip_relay::fuzz::fuzz_one(&frame);
    }

    #[test]
    fn dispatcher_answers_random_frames(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        check_response(&bytes);
    }

    #[test]
    fn dispatcher_answers_mutated_frames(frame in mutated()) {
        check_response(&frame);
    }
}

#[test]
fn the_dispatcher_still_answers_a_valid_query() {
    let frame = &seeds()[0];
    let a = answers(&ttlv::decode(&dispatcher().handle(frame)).unwrap());
    a[0].ok();
}
