//! The TCP proxy over real loopback sockets: small upstream servers in threads, clients
//! in the test. No timing assertions beyond "at least the delay": machines are noisy.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use hsm_harness::backends::proxy::{Fault, Proxy, Stats};
use rstest::rstest;

/// Long enough that a correct proxy never hits it; only a hang does.
const PATIENCE: Duration = Duration::from_secs(10);

/// What the talking upstream sends on every connection.
const RESPONSE_LEN: usize = 10_000;

/// A server on an ephemeral loopback port, each connection handled by `handler` in
/// its own thread. The threads live until the test process ends.
struct Upstream {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl Upstream {
    fn start(handler: fn(TcpStream)) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                count.fetch_add(1, Ordering::SeqCst);
                thread::spawn(move || handler(stream));
            }
        });
        Upstream { addr, accepted }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// Sends back what it reads; passes on end-of-file.
fn echo(stream: TcpStream) {
    let Ok(mut reader) = stream.try_clone() else {
        return;
    };
    let mut writer = stream;
    let _ = std::io::copy(&mut reader, &mut writer);
    let _ = writer.shutdown(Shutdown::Write);
}

/// Sends `RESPONSE_LEN` bytes of `pattern`, then end-of-file, then reads until the
/// client goes away.
fn talker(mut stream: TcpStream) {
    let _ = stream.write_all(&pattern(RESPONSE_LEN));
    let _ = stream.shutdown(Shutdown::Write);
    let _ = std::io::copy(&mut stream, &mut std::io::sink());
}

/// Reads until end-of-file, then closes.
fn sink(mut stream: TcpStream) {
    let _ = std::io::copy(&mut stream, &mut std::io::sink());
}

/// Bytes that are not TLS (the first, 0, is no content type) and show misplacement.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn connect(proxy: &Proxy) -> TcpStream {
    let stream = TcpStream::connect(proxy.addr()).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream
}

/// Everything the peer sends until it closes, by end-of-file or reset. Panics if it
/// does neither within `PATIENCE`.
fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) => panic!("the connection stayed open: {e}"),
            Err(_) => return got,
        }
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// Sends `data` from a second thread (so neither side's buffers can deadlock the
/// test), half-closes, and returns what came back until the proxy closed.
fn round_trip(proxy: &Proxy, data: &[u8]) -> Vec<u8> {
    let mut stream = connect(proxy);
    let mut writer = stream.try_clone().unwrap();
    let data = data.to_vec();
    let sending = thread::spawn(move || {
        writer.write_all(&data).unwrap();
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let got = read_until_closed(&mut stream);
    sending.join().unwrap();
    got
}

/// The proxy's counters once `done` holds (they are updated just after each write,
/// so the client can be a moment ahead of them).
fn stats_when(proxy: &Proxy, done: impl Fn(&Stats) -> bool) -> Stats {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let stats = proxy.stats();
        if done(&stats) || Instant::now() > deadline {
            return stats;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn passes_bytes_through_both_ways() {
    let upstream = Upstream::start(echo);
    let proxy = Proxy::start(upstream.addr, Fault::None).unwrap();
    assert_eq!(proxy.upstream(), upstream.addr);
    let data = pattern(6 * 1024 + 7);

    assert_eq!(round_trip(&proxy, &data), data);
    assert_eq!(round_trip(&proxy, b"second"), b"second");

    let total = (data.len() + 6) as u64;
    let stats = stats_when(&proxy, |s| s.bytes_server_to_client == total);
    assert_eq!(stats.connections, 2);
    assert_eq!(stats.bytes_client_to_server, total);
    assert_eq!(stats.bytes_server_to_client, total);
    // Not TLS: counting gave up, forwarding did not.
    assert!(stats.tls_parse_failed);
    assert_eq!(upstream.accepted(), 2);
}

#[rstest]
#[case::nothing(0)]
#[case::one_byte(1)]
#[case::mid_response(1000)]
#[case::all_but_one(RESPONSE_LEN - 1)]
#[case::exactly_all(RESPONSE_LEN)]
#[case::more_than_sent(RESPONSE_LEN * 2)]
fn drop_after_cuts_exactly(#[case] bytes: usize) {
    let upstream = Upstream::start(talker);
    let fault = Fault::DropAfter {
        bytes: bytes as u64,
        connections: None,
    };
    let proxy = Proxy::start(upstream.addr, fault).unwrap();
    let want = &pattern(RESPONSE_LEN)[..bytes.min(RESPONSE_LEN)];

    // Every connection is cut, not just the first.
    for _ in 0..2 {
        assert_eq!(read_until_closed(&mut connect(&proxy)), want);
    }
}

#[test]
fn drop_after_spares_connections_past_the_limit() {
    let upstream = Upstream::start(talker);
    let cut_first = Fault::DropAfter {
        bytes: 100,
        connections: Some(1),
    };
    let proxy = Proxy::start(upstream.addr, cut_first.clone()).unwrap();
    let full = pattern(RESPONSE_LEN);

    assert_eq!(read_until_closed(&mut connect(&proxy)), full[..100]);
    assert_eq!(read_until_closed(&mut connect(&proxy)), full);
    assert_eq!(read_until_closed(&mut connect(&proxy)), full);

    // Setting the fault again restarts its count.
    proxy.set_fault(cut_first.clone());
    assert_eq!(proxy.fault(), cut_first);
    assert_eq!(read_until_closed(&mut connect(&proxy)), full[..100]);
    assert_eq!(read_until_closed(&mut connect(&proxy)), full);
}

#[test]
fn refuse_closes_at_once_until_healed() {
    let upstream = Upstream::start(echo);
    let proxy = Proxy::start(upstream.addr, Fault::Refuse).unwrap();

    for _ in 0..2 {
        // The kernel may complete the connect before the proxy closes it.
        if let Ok(mut stream) = TcpStream::connect(proxy.addr()) {
            stream.set_read_timeout(Some(PATIENCE)).unwrap();
            assert_eq!(read_until_closed(&mut stream), b"");
        }
    }
    assert_eq!(upstream.accepted(), 0);
    let stats = stats_when(&proxy, |s| s.connections == 2);
    assert_eq!(stats.connections, 2);
    assert_eq!(stats.bytes_client_to_server, 0);

    proxy.set_fault(Fault::None);
    assert_eq!(round_trip(&proxy, b"healed"), b"healed");
    assert_eq!(upstream.accepted(), 1);
}

#[test]
fn black_hole_swallows_and_never_answers() {
    let upstream = Upstream::start(echo);
    let proxy = Proxy::start(upstream.addr, Fault::BlackHole).unwrap();
    let mut stream = connect(&proxy);
    stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    stream.write_all(b"hello?").unwrap();

    let err = stream.read(&mut [0u8; 16]).unwrap_err();
    assert!(is_timeout(&err), "{err}");
    // Not even the client's end-of-file gets an answer.
    stream.shutdown(Shutdown::Write).unwrap();
    let err = stream.read(&mut [0u8; 16]).unwrap_err();
    assert!(is_timeout(&err), "{err}");

    let stats = stats_when(&proxy, |s| s.bytes_discarded == 6);
    assert_eq!(stats.bytes_discarded, 6);
    assert_eq!(stats.bytes_client_to_server, 0);
    assert_eq!(upstream.accepted(), 0);

    // Dropping the proxy finally closes it.
    drop(proxy);
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    assert_eq!(read_until_closed(&mut stream), b"");
}

#[test]
fn dropping_the_proxy_closes_live_connections() {
    let upstream = Upstream::start(echo);
    let proxy = Proxy::start(upstream.addr, Fault::None).unwrap();
    let mut stream = connect(&proxy);
    stream.write_all(b"ping").unwrap();
    let mut got = [0u8; 4];
    stream.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping");

    drop(proxy);
    assert_eq!(read_until_closed(&mut stream), b"");
}

#[test]
fn dropping_the_proxy_cuts_a_delay_short() {
    let upstream = Upstream::start(echo);
    let proxy = Proxy::start(upstream.addr, Fault::Delay { millis: 3_600_000 }).unwrap();
    let mut stream = connect(&proxy);
    stream.write_all(b"anyone?").unwrap();
    let _ = stats_when(&proxy, |s| s.connections == 1);

    drop(proxy); // returns, although a thread is an hour into its delay
    assert_eq!(read_until_closed(&mut stream), b"");
}

#[test]
fn delay_holds_data_but_keeps_it_intact() {
    let upstream = Upstream::start(echo);
    let proxy = Proxy::start(upstream.addr, Fault::Delay { millis: 150 }).unwrap();
    let data = pattern(3000);

    let start = Instant::now();
    assert_eq!(round_trip(&proxy, &data), data);
    assert!(start.elapsed() >= Duration::from_millis(150));
}

#[test]
fn an_unreachable_upstream_closes_the_client() {
    // A port that was just free: nothing listens there.
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let proxy = Proxy::start(addr, Fault::None).unwrap();
    assert_eq!(read_until_closed(&mut connect(&proxy)), b"");
}

fn record(kind: u8, body_len: usize) -> Vec<u8> {
    let len = u16::try_from(body_len).unwrap().to_be_bytes();
    let mut r = vec![kind, 3, 1, len[0], len[1]];
    r.extend(std::iter::repeat_n(0x5A, body_len));
    r
}

/// Writes `data` in pieces cut at `cuts`, pausing between them so that they tend to
/// reach the proxy as separate reads.
fn send_in_pieces(proxy: &Proxy, data: &[u8], cuts: &[usize]) {
    let mut stream = connect(proxy);
    stream.set_nodelay(true).unwrap();
    let mut from = 0;
    for &to in cuts.iter().chain([&data.len()]) {
        stream.write_all(&data[from..to]).unwrap();
        thread::sleep(Duration::from_millis(15));
        from = to;
    }
    stream.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_until_closed(&mut stream), b"");
}

#[test]
fn counts_tls_records_split_at_awkward_offsets() {
    let upstream = Upstream::start(sink);
    let proxy = Proxy::start(upstream.addr, Fault::None).unwrap();

    // A refused handshake: ClientHello, then the client's alert.
    let refused = [record(22, 512), record(21, 2)].concat();
    // Cuts inside the first header, inside the body, one byte before the second
    // header, inside the second header.
    send_in_pieces(&proxy, &refused, &[1, 4, 300, 516, 519]);
    let stats = stats_when(&proxy, |s| s.bytes_client_to_server == refused.len() as u64);
    assert_eq!(stats.client_handshake_records, 1);
    assert_eq!(stats.client_alert_records, 1);
    assert_eq!(stats.client_application_records, 0);
    assert!(!stats.tls_parse_failed);

    // A completed TLS 1.3 handshake and a request, on a second connection.
    let completed = [
        record(22, 200),
        record(20, 1),
        record(23, 53),
        record(23, 90),
    ]
    .concat();
    send_in_pieces(&proxy, &completed, &[205, 207, 212, 213, 270]);
    let total = (refused.len() + completed.len()) as u64;
    let stats = stats_when(&proxy, |s| s.bytes_client_to_server == total);
    assert_eq!(stats.client_handshake_records, 2);
    assert_eq!(stats.client_change_cipher_spec_records, 1);
    assert_eq!(stats.client_alert_records, 1);
    assert_eq!(stats.client_application_records, 2);
    assert!(!stats.tls_parse_failed);
}

/// OpenSSL's command-line server and client through the proxy: real handshakes, one
/// refused (the server speaks only TLS 1.2, the client only 1.3) and one completed.
/// Needs the `openssl` binary (ci/install-deps installs it); without it the test fails.
#[test]
fn counts_real_tls_handshakes() {
    let dir = openssl_certificate()
        .unwrap_or_else(|e| panic!("no usable openssl binary ({e}): run ci/install-deps"));
    for (server_flag, completes) in [("-tls1_2", false), ("-tls1_3", true)] {
        let mut server = Command::new("openssl")
            .args(["s_server", "-accept", "127.0.0.1:0", "-naccept", "1"])
            .args(["-cert", "cert.pem", "-key", "key.pem", server_flag])
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let port = accept_port(server.stdout.take().unwrap());
        let proxy = Proxy::start(SocketAddr::from(([127, 0, 0, 1], port)), Fault::None).unwrap();

        let client = Command::new("openssl")
            .args(["s_client", "-connect", &proxy.addr().to_string(), "-tls1_3"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        let _ = server.kill();
        let _ = server.wait();

        assert_eq!(client.success(), completes, "server {server_flag}");
        let stats = stats_when(&proxy, |s| s.connections == 1);
        assert!(stats.client_handshake_records >= 1, "{stats:?}");
        assert!(!stats.tls_parse_failed, "{stats:?}");
        if completes {
            // At least the client's Finished.
            assert!(stats.client_application_records >= 1, "{stats:?}");
        } else {
            assert_eq!(stats.client_application_records, 0, "{stats:?}");
        }
    }
}

/// A self-signed P-256 certificate and key in a temporary directory.
fn openssl_certificate() -> std::io::Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    let status = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args([
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=localhost",
        ])
        .args(["-keyout", "key.pem", "-out", "cert.pem", "-days", "1"])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    if !status.success() {
        return Err(std::io::Error::other("openssl req failed"));
    }
    Ok(dir)
}

/// The port from `s_server`'s "ACCEPT 127.0.0.1:PORT" line. A thread keeps draining
/// its output afterwards, so that it never writes into a closed pipe.
fn accept_port(stdout: std::process::ChildStdout) -> u16 {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(addr) = line.strip_prefix("ACCEPT ") {
                let _ = tx.send(addr.rsplit(':').next().unwrap_or("").to_owned());
            }
        }
    });
    let port = rx
        .recv_timeout(PATIENCE)
        .expect("s_server printed no ACCEPT line");
    port.parse().unwrap()
}
