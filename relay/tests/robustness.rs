//! Robustness and security of the running relay: framing limits, timeouts, hostile
//! frames, TLS versions (rustls and `openssl s_client`), client certificates, the
//! configuration check. Each test starts its own `kmip2pkcs11` on its own token.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use kmip_relay::kmip::{operation as op, tag, ResultReason};
use kmip_relay::ttlv::{self, Item};
use rand::{Rng, SeedableRng};
use support::*;
use testkit::pki::{Pki, PkiOptions};

fn relay_with(limits: &str) -> (Hsm, Relay) {
    let hsm = softhsm();
    let relay = Relay::start(
        &hsm,
        &RelayOptions {
            limits: limits.into(),
            ..Default::default()
        },
    );
    (hsm, relay)
}

fn query_frame() -> Vec<u8> {
    ttlv::encode(&request_tree(
        &[(op::QUERY, vec![Item::enumeration(tag::QUERY_FUNCTION, 1)])],
        None,
    ))
}

fn assert_query_works(relay: &Relay) {
    let mut c = relay.connect();
    let a = answers(&ttlv::decode(&c.round_trip(&query_frame())).unwrap());
    a[0].ok();
}

#[test]
fn malformed_ttlv_with_a_readable_header_is_invalid_message() {
    let (_hsm, relay) = relay_with("");
    let mut c = relay.connect();
    // A Request Message header, then 16 bytes that are not TTLV items.
    let mut frame = vec![0x42, 0x00, 0x78, 0x01, 0, 0, 0, 16];
    frame.extend([0xff; 16]);
    let a = answers(&ttlv::decode(&c.round_trip(&frame)).unwrap());
    assert!(a[0]
        .failed(ResultReason::InvalidMessage)
        .contains("malformed TTLV"));
    assert_eq!(a[0].operation, None);
    // A well-formed message without a header.
    let no_header = ttlv::encode(&Item::structure(tag::REQUEST_MESSAGE, vec![]));
    let a = answers(&ttlv::decode(&c.round_trip(&no_header)).unwrap());
    assert!(a[0]
        .failed(ResultReason::InvalidMessage)
        .contains("Request Header"));
    // The connection is still good.
    let a = answers(&ttlv::decode(&c.round_trip(&query_frame())).unwrap());
    a[0].ok();
}

#[test]
fn an_unreadable_header_closes_the_connection_with_a_logged_reason() {
    let (_hsm, relay) = relay_with("");
    let mut c = relay.connect();
    c.send(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    assert!(c.closed(), "the relay closes the connection");
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        relay.log().contains("not a KMIP request"),
        "{}",
        relay.log()
    );
    assert_query_works(&relay);
}

#[test]
fn oversized_frames_get_an_error_then_close() {
    let (_hsm, relay) = relay_with("max_message_size = 4096");
    let mut c = relay.connect();
    let mut frame = vec![0x42, 0x00, 0x78, 0x01];
    frame.extend(100_000u32.to_be_bytes());
    c.send(&frame).unwrap();
    let a = answers(&ttlv::decode(&c.receive().unwrap()).unwrap());
    assert!(a[0]
        .failed(ResultReason::InvalidMessage)
        .contains("at most 4096"));
    assert!(c.closed());
    assert_query_works(&relay);
}

#[test]
fn a_truncated_frame_gets_an_error_on_close_and_a_timeout_when_stalled() {
    let (_hsm, relay) = relay_with("read_timeout_secs = 1");
    // Stalled: half a message, then nothing. Closed after the read timeout.
    let mut c = relay.connect();
    let frame = query_frame();
    c.send(&frame[..frame.len() / 2]).unwrap();
    assert!(c.closed());
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        relay.log().contains("not complete within 1s"),
        "{}",
        relay.log()
    );
    // Half a message and then the end of the stream: an Invalid Message response.
    let mut c = relay.connect();
    c.send(&frame[..frame.len() / 2]).unwrap();
    c.shutdown_write();
    let a = answers(&ttlv::decode(&c.receive().unwrap()).unwrap());
    assert!(a[0]
        .failed(ResultReason::InvalidMessage)
        .contains("truncated"));
    assert_query_works(&relay);
}

#[test]
fn a_trickled_header_is_closed_after_the_read_timeout() {
    // Slowloris: the header started, then nothing; the idle timeout would be 300 s.
    let (_hsm, relay) = relay_with("read_timeout_secs = 1\nidle_timeout_secs = 300");
    let mut c = relay.connect();
    c.send(&query_frame()[..4]).unwrap();
    assert!(c.closed(), "still open after 10 s");
    std::thread::sleep(Duration::from_millis(200));
    let log = relay.log();
    assert!(log.contains("header not complete within 1s"), "{log}");
    assert_query_works(&relay);
}

#[test]
fn one_address_gets_at_most_max_connections_per_client() {
    let (_hsm, relay) = relay_with("max_connections_per_client = 2");
    let mut first = relay.connect();
    let mut second = relay.connect();
    let third = Client::connect(&relay.addr, &relay.fingerprint, &ClientOptions::default())
        .and_then(|mut c| c.send(&query_frame()).and_then(|()| c.receive()));
    assert!(
        third.is_err(),
        "a third connection from 127.0.0.1 was served"
    );
    for c in [&mut first, &mut second] {
        answers(&ttlv::decode(&c.round_trip(&query_frame())).unwrap())[0].ok();
    }
    assert!(
        relay.log().contains("connections from 127.0.0.1 already"),
        "{}",
        relay.log()
    );
    // A slot given back is usable again.
    drop(first);
    std::thread::sleep(Duration::from_millis(300));
    assert_query_works(&relay);
}

fn queries(n: usize) -> Vec<u8> {
    let items: Vec<(u32, Vec<Item>)> = (0..n)
        .map(|_| (op::QUERY, vec![Item::enumeration(tag::QUERY_FUNCTION, 1)]))
        .collect();
    ttlv::encode(&request_tree(&items, None))
}

#[test]
fn batches_beyond_max_batch_items_are_invalid_messages() {
    let (_hsm, relay) = relay_with("max_batch_items = 4");
    let mut c = relay.connect();
    let a = answers(&ttlv::decode(&c.round_trip(&queries(5))).unwrap());
    assert_eq!(a.len(), 1);
    assert!(a[0]
        .failed(ResultReason::InvalidMessage)
        .contains("at most 4"));
    let a = answers(&ttlv::decode(&c.round_trip(&queries(4))).unwrap());
    assert_eq!(a.len(), 4);
    a.iter().for_each(|a| {
        a.ok();
    });
}

#[test]
fn error_responses_respect_max_message_size() {
    let (_hsm, relay) = relay_with("max_message_size = 1024");
    let mut c = relay.connect();
    // 18 unknown operations: a small request whose failures alone would be ~3 KB.
    let items: Vec<(u32, Vec<Item>)> = (0..18).map(|_| (0xFF, vec![])).collect();
    let frame = ttlv::encode(&request_tree(&items, None));
    assert!(frame.len() <= 1024);
    let response = c.round_trip(&frame);
    assert!(response.len() <= 1024, "a {}-byte response", response.len());
    let a = answers(&ttlv::decode(&response).unwrap());
    a[0].failed(ResultReason::ResponseTooLarge);
    assert_query_works(&relay);
}

#[test]
fn a_client_that_never_reads_loses_its_connection_and_slot() {
    let (_hsm, relay) = relay_with(
        "write_timeout_secs = 1\nmax_message_size = 16777216\nmax_batch_items = 1000\n\
         max_connections = 1",
    );
    let mut c = relay.connect();
    // Each request asks for 1000 x 4 KiB of random: 4 MiB answers nobody reads.
    let items: Vec<(u32, Vec<Item>)> = (0..1000)
        .map(|_| {
            (
                op::RNG_RETRIEVE,
                vec![Item::integer(tag::DATA_LENGTH, 4096)],
            )
        })
        .collect();
    let frame = ttlv::encode(&request_tree(&items, None));
    for _ in 0..6 {
        if c.send(&frame).is_err() {
            break;
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !relay.log().contains("did not take") {
        assert!(std::time::Instant::now() < deadline, "{}", relay.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    // max_connections = 1: the slot came back.
    assert_query_works(&relay);
}

#[test]
fn idle_connections_are_closed() {
    let (_hsm, relay) = relay_with("idle_timeout_secs = 1");
    let mut c = relay.connect();
    let a = answers(&ttlv::decode(&c.round_trip(&query_frame())).unwrap());
    a[0].ok();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(c.closed());
}

#[test]
fn tls_1_2_is_refused_by_default_and_accepted_on_opt_in() {
    let hsm = softhsm();
    let relay = Relay::start(&hsm, &RelayOptions::default());
    let opts = ClientOptions {
        tls12_only: true,
        ..Default::default()
    };
    let e = Client::connect(&relay.addr, &relay.fingerprint, &opts)
        .err()
        .expect("a TLS 1.2-only client is refused");
    assert!(
        e.to_lowercase().contains("protocol") || e.contains("alert"),
        "{e}"
    );
    drop(relay);
    let relay = Relay::start(
        &hsm,
        &RelayOptions {
            tls: "min_version = \"1.2\"".into(),
            ..Default::default()
        },
    );
    let mut c = Client::connect(&relay.addr, &relay.fingerprint, &opts).expect("TLS 1.2 opt-in");
    assert_eq!(c.tls_version(), Some(rustls::ProtocolVersion::TLSv1_2));
    answers(&ttlv::decode(&c.round_trip(&query_frame())).unwrap())[0].ok();
}

/// `openssl s_client` with one protocol version: whether the handshake completed.
fn s_client(addr: &str, version_flag: &str) -> (bool, String) {
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect", addr, version_flag, "-brief"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl is installed (ci/install-deps)");
    // Closing stdin ends the session once the handshake is done.
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("openssl runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let done =
        text.contains("Protocol version: TLSv1.3") || text.contains("Protocol version: TLSv1.2");
    (done, text)
}

#[test]
fn openssl_s_client_tls1_2_is_refused_and_tls1_3_completes() {
    let (_hsm, relay) = relay_with("");
    let (ok12, text12) = s_client(&relay.addr, "-tls1_2");
    assert!(!ok12, "TLS 1.2 handshake must fail:\n{text12}");
    assert!(
        text12.contains("alert") || text12.contains("error"),
        "{text12}"
    );
    let (ok13, text13) = s_client(&relay.addr, "-tls1_3");
    assert!(ok13, "TLS 1.3 handshake must complete:\n{text13}");
    // The fingerprint openssl sees is the one the relay reported.
    assert_query_works(&relay);
}

#[test]
fn client_certificates_are_required_when_a_ca_is_configured() {
    let hsm = softhsm();
    let pki = Pki::new();
    let ca_file = &pki.ca_cert;
    let relay = Relay::start(
        &hsm,
        &RelayOptions {
            tls: format!("client_ca = \"{}\"", ca_file.display()),
            ..Default::default()
        },
    );
    // Without a certificate: refused (TLS 1.3 reports it on the first exchange).
    let refused = match Client::connect(&relay.addr, &relay.fingerprint, &ClientOptions::default())
    {
        Err(_) => true,
        Ok(mut c) => c.send(&query_frame()).is_err() || c.receive().is_err(),
    };
    assert!(refused, "a client without a certificate must be refused");
    // A certificate from another CA: refused.
    let other = Pki::new();
    let stranger = ClientOptions {
        client_cert: Some(other.client_identity()),
        ..Default::default()
    };
    let refused = match Client::connect(&relay.addr, &relay.fingerprint, &stranger) {
        Err(_) => true,
        Ok(mut c) => c.send(&query_frame()).is_err() || c.receive().is_err(),
    };
    assert!(refused, "a certificate from another CA must be refused");
    // From the configured CA: served.
    let good = ClientOptions {
        client_cert: Some(pki.client_identity()),
        ..Default::default()
    };
    let mut c = Client::connect(&relay.addr, &relay.fingerprint, &good).expect("connects");
    answers(&ttlv::decode(&c.round_trip(&query_frame())).unwrap())[0].ok();
}

/// Random and mutated frames over TLS; the relay keeps running and answers a valid
/// Query afterwards. `RELAY_FUZZ_FRAMES` sets the count (CI: the default 2000; the
/// acceptance run: 100000).
#[test]
fn random_and_mutated_frames_leave_the_relay_serving() {
    let frames: usize = std::env::var("RELAY_FUZZ_FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let (_hsm, mut relay) = relay_with("read_timeout_secs = 2");
    let seeds: Vec<Vec<u8>> = vec![
        query_frame(),
        ttlv::encode(&request_tree(&[(op::DISCOVER_VERSIONS, vec![])], None)),
        ttlv::encode(&request_tree(
            &[(
                op::GET,
                vec![Item::text(tag::UNIQUE_IDENTIFIER, "pub-00ff")],
            )],
            Some(("user", "password")),
        )),
        ttlv::encode(&request_tree(
            &[(
                op::SIGN,
                vec![
                    Item::text(tag::UNIQUE_IDENTIFIER, "priv-0102"),
                    Item::structure(
                        tag::CRYPTOGRAPHIC_PARAMETERS,
                        vec![Item::enumeration(tag::PADDING_METHOD, 8)],
                    ),
                    Item::bytes(tag::DATA, vec![7; 40]),
                ],
            )],
            None,
        )),
        ttlv::encode(&request_tree(
            &[
                (op::LOCATE, vec![name_attr("x")]),
                (op::RNG_RETRIEVE, vec![Item::integer(tag::DATA_LENGTH, 16)]),
            ],
            None,
        )),
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x6b6d6970);
    let mut client = relay.connect();
    let (mut answered, mut closed) = (0usize, 0usize);
    for i in 0..frames {
        let mut frame = seeds[i % seeds.len()].clone();
        match rng.gen_range(0..10) {
            // Pure noise behind a Request Message header.
            0 => {
                let n = rng.gen_range(0..300);
                frame.truncate(8);
                frame.extend((0..n).map(|_| rng.gen::<u8>()));
            }
            // Noise from the first byte (usually not a request header).
            1 => {
                let n = rng.gen_range(8..200);
                frame = (0..n).map(|_| rng.gen::<u8>()).collect();
            }
            // Bit flips and byte changes past the header.
            2..=6 => {
                for _ in 0..rng.gen_range(1..6) {
                    let at = rng.gen_range(8..frame.len());
                    if rng.gen_bool(0.5) {
                        frame[at] ^= 1 << rng.gen_range(0..8);
                    } else {
                        frame[at] = rng.gen();
                    }
                }
            }
            // Cut or splice somewhere.
            7 => {
                let at = rng.gen_range(8..frame.len());
                frame.truncate(at);
            }
            8 => {
                let at = rng.gen_range(8..frame.len());
                let extra: Vec<u8> = (0..rng.gen_range(1..64)).map(|_| rng.gen()).collect();
                frame.splice(at..at, extra);
            }
            // Inner lengths set to huge values.
            _ => {
                let at = 8 * rng.gen_range(1..frame.len() / 8);
                if at + 8 <= frame.len() {
                    frame[at + 4..at + 8].copy_from_slice(&rng.gen::<u32>().to_be_bytes());
                }
            }
        }
        // Keep the outer length honest, or (1 in 20) short, so the relay answers
        // rather than waits for bytes that never come (stalls have their own test).
        if frame.len() >= 8 {
            let mut len = (frame.len() - 8) as u32;
            if rng.gen_range(0..20) == 0 {
                len = rng.gen_range(0..=len);
            }
            frame[4..8].copy_from_slice(&len.to_be_bytes());
        }
        let sent = client.send(&frame).is_ok();
        let got = sent.then(|| client.receive()).and_then(Result::ok);
        match got {
            Some(bytes) => {
                let tree =
                    ttlv::decode(&bytes).unwrap_or_else(|e| panic!("frame {i}: bad response: {e}"));
                assert!(!answers(&tree).is_empty());
                answered += 1;
            }
            None => {
                closed += 1;
                assert!(
                    relay.alive(),
                    "the relay died at frame {i}:\n{}",
                    relay.log()
                );
                client = relay.connect();
            }
        }
    }
    assert!(relay.alive(), "{}", relay.log());
    assert_query_works(&relay);
    eprintln!("{frames} frames: {answered} answered, {closed} closed the connection");
    assert!(
        answered > frames / 2,
        "most frames get an answer ({answered}/{frames})"
    );
}

#[test]
fn check_validates_configs_without_starting() {
    let hsm = softhsm();
    let dir = hsm.dir();
    let good = dir.join("good.toml");
    std::fs::write(
        &good,
        format!(
            "listen = \"127.0.0.1:0\"\n[pkcs11]\nlib_path = \"{LIB}\"\nslot = \"{LABEL}\"\nuser_pin = \"env:RELAY_CHECK_PIN\"\n"
        ),
    )
    .unwrap();
    let run = |file: &std::path::Path, pin: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kmip2pkcs11"));
        cmd.arg("--config").arg(file).arg("--check");
        cmd.env_remove("RELAY_CHECK_PIN");
        if let Some(p) = pin {
            cmd.env("RELAY_CHECK_PIN", p);
        }
        cmd.output().unwrap()
    };
    let out = run(&good, Some("x"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&good, None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("RELAY_CHECK_PIN"));
    let bad = dir.join("bad.toml");
    let mut f = std::fs::File::create(&bad).unwrap();
    writeln!(
        f,
        "listen = \"127.0.0.1:0\"\nport = 5696\n[pkcs11]\nlib_path = \"{LIB}\"\nslot = 1"
    )
    .unwrap();
    let out = run(&bad, None);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("port"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn no_client_authentication_beyond_loopback_refuses_to_start() {
    let hsm = softhsm();
    let file = hsm.dir().join("open.toml");
    std::fs::write(
        &file,
        format!(
            "listen = \"0.0.0.0:0\"\n[pkcs11]\nlib_path = \"{LIB}\"\nslot = \"{LABEL}\"\n\
             user_pin = \"{PIN}\"\n"
        ),
    )
    .unwrap();
    for check in [true, false] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kmip2pkcs11"));
        cmd.arg("--config")
            .arg(&file)
            .env("SOFTHSM2_CONF", hsm.conf());
        if check {
            cmd.arg("--check");
        }
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("allow_unauthenticated"), "{stderr}");
    }
    // The explicit opt-in starts, with a warning.
    let relay = Relay::start(
        &hsm,
        &RelayOptions {
            auth: "allow_unauthenticated = true".into(),
            ..Default::default()
        },
    );
    assert_query_works(&relay);
    assert!(
        relay.log().contains("allow_unauthenticated = true"),
        "{}",
        relay.log()
    );
}

#[test]
fn logs_are_plain_exact_and_quiet() {
    let hsm = softhsm();
    let relay = Relay::start(
        &hsm,
        &RelayOptions {
            tls: "min_version = \"1.2\"".into(),
            ..Default::default()
        },
    );
    let mut c = relay.connect();
    // Get Attribute List (0x0C): named as KMIP names it.
    let a = answers(&c.tree(&request_tree(&[(0x0C, vec![])], None)));
    let m = a[0].failed(ResultReason::OperationNotSupported);
    assert!(m.contains("Get Attribute List is not supported"), "{m}");
    let log = relay.log();
    assert!(log.contains("TLS 1.2 clients are accepted"), "{log}");
    assert!(
        log.contains("TLS 1.2 to 1.3"),
        "versions as configured: {log}"
    );
    assert!(!log.contains("Mechanism type"), "{log}");
    assert!(!log.contains("ERROR"), "{log}");
    assert!(!log.contains('\x1b'), "colour codes in a log file: {log:?}");
}

#[test]
fn a_wrong_pin_stops_the_start_without_showing_the_pin() {
    let hsm = softhsm();
    let e = Relay::try_start(
        &hsm,
        &RelayOptions {
            with_pin: false,
            pkcs11: "user_pin = \"not-the-pin-51x\"".into(),
            ..Default::default()
        },
    )
    .err()
    .expect("a wrong PIN fails the start");
    assert!(e.contains("CKR_PIN_INCORRECT"), "{e}");
    assert!(!e.contains("not-the-pin-51x"), "{e}");
}

#[test]
fn the_pin_never_appears_in_logs() {
    let hsm = softhsm();
    let relay = Relay::start(&hsm, &RelayOptions::default());
    let mut c = relay.connect();
    answers(&ttlv::decode(&c.round_trip(&query_frame())).unwrap())[0].ok();
    drop(c);
    std::thread::sleep(Duration::from_millis(200));
    assert!(!relay.log().contains(PIN));
}

#[test]
fn server_certificate_from_files() {
    let hsm = softhsm();
    let pki = Pki::with(&PkiOptions {
        server_names: vec!["localhost".into()],
    });
    let (cert, key) = (&pki.server_cert, &pki.server_key);
    let relay = Relay::start(
        &hsm,
        &RelayOptions {
            tls: format!("cert = \"{}\"\nkey = \"{}\"", cert.display(), key.display()),
            ..Default::default()
        },
    );
    assert_eq!(
        relay.fingerprint,
        kmip_relay::tls::fingerprint(&pki.server_identity().0[0])
    );
    assert_query_works(&relay);
    // A key file that is not a key stops the start, naming the file.
    std::fs::write(key, "not a key").unwrap();
    let e = Relay::try_start(
        &hsm,
        &RelayOptions {
            tls: format!("cert = \"{}\"\nkey = \"{}\"", cert.display(), key.display()),
            ..Default::default()
        },
    )
    .err()
    .expect("a bad key file fails the start");
    assert!(e.contains("server.key"), "{e}");
}
