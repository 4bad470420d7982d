//! The KMIP signer's request deadline against hostile local servers that trickle one
//! byte every 100 ms: each read succeeds well within `read_timeout`, so only
//! `request_timeout` ends the call. Before issue 11 such a call stalled for up to
//! 1 MiB x the read interval; these tests give up waiting after [`GIVE_UP`].
//!
//! - During the TLS handshake: a plain TCP server announces a 16 KiB handshake record
//!   and sends it byte by byte.
//! - After it: a TLS 1.3 server (test PKI from [`testkit::pki`]) completes the
//!   handshake, then answers the first KMIP request with a valid Response Message
//!   header and trickles its body.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hsm_signers::config::KmipConfig;
use hsm_signers::kmip::KmipSigner;
use hsm_signers::{ErrorKind, Signer, SignerError};
use rstest::rstest;
use testkit::pki::Pki;

const TRICKLE: Duration = Duration::from_millis(100);
const READ_TIMEOUT: Duration = Duration::from_secs(1);
const REQUEST_TIMEOUT: Duration = Duration::from_millis(1500);
/// Slack for the last socket call and thread scheduling on a busy machine.
const SLACK: Duration = Duration::from_millis(1500);
const GIVE_UP: Duration = Duration::from_secs(20);

/// Where the hostile server trickles.
#[derive(Clone, Copy, Debug)]
enum Stage {
    Handshake,
    Answer,
}

/// Writes `bytes` one at a time every [`TRICKLE`], until the client goes away.
fn trickle(out: &mut impl Write, bytes: impl IntoIterator<Item = u8>) {
    for b in bytes {
        if out.write_all(&[b]).and_then(|_| out.flush()).is_err() {
            return;
        }
        std::thread::sleep(TRICKLE);
    }
}

/// Serves one connection, trickling at `stage`.
fn serve(stage: Stage, mut sock: TcpStream, pki: &Pki) {
    match stage {
        Stage::Handshake => {
            // A TLS handshake record header claiming 16 KiB, then its body slowly.
            trickle(
                &mut sock,
                [0x16, 0x03, 0x03, 0x40, 0x00]
                    .into_iter()
                    .chain(std::iter::repeat(0)),
            );
        }
        Stage::Answer => {
            let (chain, key) = pki.server_identity();
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let config = rustls::ServerConfig::builder_with_provider(provider)
                .with_protocol_versions(&[&rustls::version::TLS13])
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .unwrap();
            let conn = rustls::ServerConnection::new(Arc::new(config)).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, sock);
            let mut request = [0u8; 8];
            if tls.read_exact(&mut request).is_err() {
                return;
            }
            // A Response Message structure header announcing 4 KiB, then the body.
            trickle(
                &mut tls,
                [0x42, 0x00, 0x7B, 0x01, 0x00, 0x00, 0x10, 0x00]
                    .into_iter()
                    .chain(std::iter::repeat(0)),
            );
        }
    }
}

/// Fails on the code before issue 11 (the call is still running after [`GIVE_UP`]).
#[rstest]
#[case::during_the_tls_handshake(Stage::Handshake)]
#[case::while_the_answer_arrives(Stage::Answer)]
fn a_trickling_server_fails_the_call_within_the_request_deadline(#[case] stage: Stage) {
    let pki = Arc::new(Pki::new());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server_pki = pki.clone();
    std::thread::spawn(move || {
        for sock in listener.incoming() {
            let Ok(sock) = sock else { return };
            let pki = server_pki.clone();
            std::thread::spawn(move || serve(stage, sock, &pki));
        }
    });

    let mut config = KmipConfig::new("127.0.0.1", port);
    config.server_ca_cert_path = Some(pki.ca_cert.clone());
    config.read_timeout = READ_TIMEOUT;
    config.request_timeout = REQUEST_TIMEOUT;
    let signer = KmipSigner::new("hostile", &config);
    let (done, result) = std::sync::mpsc::channel::<(Duration, Result<_, SignerError>)>();
    std::thread::spawn(move || {
        let started = Instant::now();
        let r = signer.random(16);
        let _ = done.send((started.elapsed(), r));
    });
    let (took, result) = result
        .recv_timeout(GIVE_UP)
        .unwrap_or_else(|_| panic!("{stage:?}: the call was still running after {GIVE_UP:?}"));
    let err = result.expect_err("a trickling server cannot answer");
    assert_eq!(err.kind, ErrorKind::Unavailable, "{stage:?}: {err}");
    assert!(
        err.message.contains("request_timeout"),
        "{stage:?}: the error does not name the deadline: {err}"
    );
    assert!(
        took <= REQUEST_TIMEOUT + SLACK,
        "{stage:?}: the call took {took:?}, deadline {REQUEST_TIMEOUT:?}: {err}"
    );
}
