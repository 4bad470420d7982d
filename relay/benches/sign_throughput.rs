//! RSA-2048 PKCS#1 v1.5 SHA-256 sign throughput: through the relay (KMIP over TLS 1.3
//! to `kmip2pkcs11`) versus direct PKCS#11 on the same SoftHSMv2 token, with 1 and 4
//! concurrent clients. `cargo bench -p kmip-relay --bench sign_throughput`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use kmip_relay::kmip::{operation as op, tag};
use kmip_relay::ttlv::{self, Item};
use support::*;

const DATA: &[u8] = b"benchmark payload: 32 bytes long";

fn bench(c: &mut Criterion) {
    let hsm = softhsm();
    std::env::set_var("SOFTHSM2_CONF", hsm.conf());
    let pkcs11 = Pkcs11::new(LIB).expect("module");
    pkcs11
        .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .expect("C_Initialize");
    let slot = pkcs11
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| pkcs11.get_token_info(*s).unwrap().label().trim_end() == LABEL)
        .expect("token");
    let session = pkcs11.open_rw_session(slot).unwrap();
    session
        .login(UserType::User, Some(&AuthPin::from(PIN.to_string())))
        .unwrap();
    let id = vec![0xbe, 0x0c, 0x11];
    session
        .generate_key_pair(
            &Mechanism::RsaPkcsKeyPairGen,
            &[
                Attribute::Token(true),
                Attribute::Verify(true),
                Attribute::Id(id.clone()),
                Attribute::ModulusBits(2048u64.into()),
                Attribute::PublicExponent(vec![1, 0, 1]),
            ],
            &[
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Sign(true),
                Attribute::Id(id.clone()),
            ],
        )
        .unwrap();
    let uid = format!("priv-{}", hex::encode(&id));
    let find = |s: &cryptoki::session::Session| {
        s.find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Id(id.clone()),
        ])
        .unwrap()[0]
    };

    let relay = Relay::start(
        &hsm,
        &RelayOptions {
            pkcs11: "pool_size = 4".into(),
            ..Default::default()
        },
    );
    let frame = ttlv::encode(&request_tree(
        &[(
            op::SIGN,
            vec![
                Item::text(tag::UNIQUE_IDENTIFIER, &uid),
                Item::bytes(tag::DATA, DATA.to_vec()),
            ],
        )],
        None,
    ));
    let relay_sign = |client: &mut Client| {
        let answer = answers(&ttlv::decode(&client.round_trip(&frame)).unwrap());
        assert_eq!(answer[0].status, 0, "{:?}", answer[0]);
    };

    let mut g = c.benchmark_group("rsa2048_sign");
    g.throughput(Throughput::Elements(1));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(6));
    g.warm_up_time(Duration::from_secs(1));

    for clients in [1usize, 4] {
        g.bench_function(format!("direct_pkcs11/{clients}_clients"), |b| {
            let mut sessions: Vec<_> = (0..clients)
                .map(|_| pkcs11.open_rw_session(slot).unwrap())
                .collect();
            b.iter_custom(|iters| {
                let per = iters.div_ceil(clients as u64);
                let start = Instant::now();
                std::thread::scope(|s| {
                    for session in sessions.iter_mut() {
                        s.spawn(move || {
                            let session = &*session;
                            let key = find(session);
                            for _ in 0..per {
                                session.sign(&Mechanism::Sha256RsaPkcs, key, DATA).unwrap();
                            }
                        });
                    }
                });
                start
                    .elapsed()
                    .mul_f64(iters as f64 / (per * clients as u64) as f64)
            })
        });
        g.bench_function(format!("relay_kmip_tls13/{clients}_clients"), |b| {
            let mut conns: Vec<_> = (0..clients).map(|_| relay.connect()).collect();
            b.iter_custom(|iters| {
                let per = iters.div_ceil(clients as u64);
                let start = Instant::now();
                std::thread::scope(|s| {
                    for client in conns.iter_mut() {
                        s.spawn(move || {
                            for _ in 0..per {
                                relay_sign(client);
                            }
                        });
                    }
                });
                start
                    .elapsed()
                    .mul_f64(iters as f64 / (per * clients as u64) as f64)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
