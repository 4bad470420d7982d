//! A TCP proxy the harness puts in front of a KMIP backend, to make the backend
//! misbehave on purpose and to see what a signer sent it. No root, no packet filter: the
//! signer is simply pointed at [`Proxy::port`] instead of the server's port.
//!
//! [`Proxy::start`] listens on an ephemeral port of 127.0.0.1 and forwards each
//! connection to one upstream address, shaped by a [`Fault`]. It runs on plain std
//! threads (the harness is synchronous): one accepting, two per forwarded connection
//! (one per direction). [`Proxy::set_fault`] changes the fault at run time, for
//! example to heal a backend in the middle of a case.
//!
//! [`Proxy::stats`] counts connections and bytes, and follows the TLS record layer of
//! what the proxy forwarded from client to server, so that a case can check that no
//! KMIP request left a signer whose handshake was refused ([`Stats`] says when that
//! check means something).
//!
//! What it does not do: it terminates no TLS and sees no plaintext; it listens on
//! loopback only and resolves no names; it never reorders, duplicates or corrupts
//! bytes. Errors on a socket end that connection only; nothing here panics on what
//! peers send. Dropping the [`Proxy`] stops accepting, closes every live connection and
//! waits for its threads, which all end promptly: every blocking call they make is
//! cut short by the shutdown.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// How often the accept thread looks for new connections and for the shutdown flag.
/// Polling a nonblocking listener keeps the shutdown free of tricks (no self-connect
/// to wake a blocked `accept`), at the cost of up to this much latency per connect.
const ACCEPT_POLL: Duration = Duration::from_millis(5);

/// The longest a sleeping thread (a delay, a black hole) goes without looking at the
/// shutdown flag.
const SLEEP_SLICE: Duration = Duration::from_millis(20);

/// The upstream is local: a connect that takes longer than this will not succeed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Bytes read from one side before they are written to the other.
const CHUNK: usize = 16 * 1024;

/// What the proxy does to the connections it accepts. Each connection is shaped by
/// the fault in force when it was accepted, for its whole life: [`Proxy::set_fault`]
/// changes what later connections get.
///
/// In YAML: `none`, `refuse`, `black-hole`, `{ delay: { millis: 500 } }`,
/// `{ drop-after: { bytes: 100 } }`, `{ drop-after: { bytes: 100, connections: 1 } }`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum Fault {
    /// Pass everything through.
    #[default]
    None,
    /// Hold every chunk, in both directions, this long before forwarding it: a slow
    /// backend (or network). The delays add up over a conversation.
    Delay { millis: u64 },
    /// Forward until `bytes` bytes have gone from server to client in a connection,
    /// then close both sides at once: a connection dropped in the middle of a
    /// response. The client reads exactly `bytes` bytes and then end-of-file (or a
    /// reset, if it was still sending); `0` closes a connection as soon as it is set
    /// up. With `connections: N`, only the
    /// first N connections after the fault was set are cut and later ones pass, so
    /// that a retry can succeed.
    DropAfter {
        bytes: u64,
        #[serde(default)]
        connections: Option<u32>,
    },
    /// Accept every connection and close it at once, without contacting the server.
    /// The client's connect succeeds (the kernel completes it before the proxy
    /// accepts) and its first read sees end-of-file, or a reset if it had already
    /// sent something. The listener stays up: closing and re-binding it to give
    /// "connection refused" could lose the port to another process.
    Refuse,
    /// Accept every connection, read and discard what the client sends, never answer
    /// and never close (until the proxy is dropped): a hung backend. The server is
    /// not contacted.
    BlackHole,
}

/// What went through a proxy since it started. Each field is read on its own, so a
/// snapshot taken while traffic flows may be off by a chunk between fields.
///
/// The `client_*_records` fields count the TLS records, by content type, in what the
/// proxy forwarded from client to server. `client_application_records == 0` shows that
/// no KMIP request reached the server, and means something when handshakes were
/// refused: a client whose handshake fails sends no application data at all. It is
/// not 0 after a completed TLS 1.3 handshake, whose client Finished message already
/// travels as application data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// TCP connections the proxy accepted, whatever the fault did with them.
    pub connections: u64,
    /// Bytes forwarded from clients to the server.
    pub bytes_client_to_server: u64,
    /// Bytes forwarded from the server to clients.
    pub bytes_server_to_client: u64,
    /// Bytes clients sent into a [`Fault::BlackHole`]; they reached no server.
    pub bytes_discarded: u64,
    /// TLS records of type handshake (22) forwarded from clients.
    pub client_handshake_records: u64,
    /// TLS records of type alert (21) forwarded from clients.
    pub client_alert_records: u64,
    /// TLS records of type change_cipher_spec (20) forwarded from clients.
    pub client_change_cipher_spec_records: u64,
    /// TLS records of type application_data (23) forwarded from clients.
    pub client_application_records: u64,
    /// Some connection's client stream did not look like TLS records; counting stopped
    /// there (forwarding did not), so the record counts are lower bounds.
    pub tls_parse_failed: bool,
}

/// A running proxy; see the [module documentation](self).
pub struct Proxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Listens on an ephemeral port of 127.0.0.1 and forwards what it accepts to
    /// `upstream`, shaped by `fault`. Fails only if it cannot listen or start its
    /// accept thread; an unreachable upstream shows as closed client connections.
    pub fn start(upstream: SocketAddr, fault: Fault) -> io::Result<Proxy> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(upstream, fault));
        let accept = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name(format!("proxy-{}-accept", addr.port()))
                .spawn(move || accept_loop(&listener, &shared))?
        };
        Ok(Proxy {
            addr,
            upstream,
            shared,
            accept: Some(accept),
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port clients connect to (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The address the proxy forwards to.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// The fault new connections get.
    pub fn fault(&self) -> Fault {
        self.shared.fault_state().fault.clone()
    }

    /// Replaces the fault for connections accepted from now on; live connections keep
    /// theirs. Restarts the `connections` count of [`Fault::DropAfter`].
    pub fn set_fault(&self, fault: Fault) {
        *self.shared.fault_state() = FaultState { fault, applied: 0 };
    }

    /// What went through the proxy so far.
    pub fn stats(&self) -> Stats {
        self.shared.counters.snapshot()
    }
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("addr", &self.addr)
            .field("upstream", &self.upstream)
            .field("fault", &self.fault())
            .finish_non_exhaustive()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Order matters: the flag first, so that no connection registers after the
        // sweep; the sweep unblocks every connection thread; the accept thread joins
        // them all before it ends.
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.shared.close_all();
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

/// State shared by the proxy handle and its threads.
struct Shared {
    upstream: SocketAddr,
    fault: Mutex<FaultState>,
    counters: Counters,
    stopping: AtomicBool,
    /// Clones of every live connection's sockets, so that drop can shut them down and
    /// so unblock the threads reading them.
    live: Mutex<HashMap<u64, Vec<TcpStream>>>,
}

struct FaultState {
    fault: Fault,
    /// Connections [`Fault::DropAfter`] has cut since it was set.
    applied: u32,
}

impl Shared {
    fn new(upstream: SocketAddr, fault: Fault) -> Self {
        Shared {
            upstream,
            fault: Mutex::new(FaultState { fault, applied: 0 }),
            counters: Counters::default(),
            stopping: AtomicBool::new(false),
            live: Mutex::new(HashMap::new()),
        }
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Nothing here panics while holding a lock; should that change, the state is
    /// still coherent (plain values), so a poisoned lock is used as it is.
    fn fault_state(&self) -> MutexGuard<'_, FaultState> {
        self.fault.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn live(&self) -> MutexGuard<'_, HashMap<u64, Vec<TcpStream>>> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Decides, and records, what happens to the connection just accepted.
    fn plan_next(&self) -> Plan {
        let mut state = self.fault_state();
        match state.fault {
            Fault::None => Plan::Forward(Shape::default()),
            Fault::Delay { millis } => Plan::Forward(Shape {
                delay: Some(Duration::from_millis(millis)),
                drop_after: None,
            }),
            Fault::DropAfter { bytes, connections } => {
                if connections.is_some_and(|n| state.applied >= n) {
                    return Plan::Forward(Shape::default());
                }
                state.applied = state.applied.saturating_add(1);
                Plan::Forward(Shape {
                    delay: None,
                    drop_after: Some(bytes),
                })
            }
            Fault::Refuse => Plan::Refuse,
            Fault::BlackHole => Plan::BlackHole,
        }
    }

    /// Keeps a clone of `stream` under connection `id` for [`Shared::close_all`].
    /// False when the proxy is shutting down: the caller must drop the connection.
    fn register(&self, id: u64, stream: &TcpStream) -> bool {
        let Ok(clone) = stream.try_clone() else {
            return false;
        };
        let mut live = self.live();
        // Checked under the lock that close_all takes after setting the flag: either
        // this registration is swept, or it sees the flag.
        if self.stopping() {
            return false;
        }
        live.entry(id).or_default().push(clone);
        true
    }

    fn unregister(&self, id: u64) {
        self.live().remove(&id);
    }

    fn close_all(&self) {
        for stream in self.live().values().flatten() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// Sleeps `length`, waking early (false) when the proxy shuts down.
    fn pause(&self, length: Duration) -> bool {
        // No deadline (absurdly long delay): sleep until shutdown.
        let deadline = Instant::now().checked_add(length);
        loop {
            if self.stopping() {
                return false;
            }
            let left =
                deadline.map_or(SLEEP_SLICE, |d| d.saturating_duration_since(Instant::now()));
            if left.is_zero() {
                return true;
            }
            thread::sleep(left.min(SLEEP_SLICE));
        }
    }
}

/// What happens to one accepted connection.
enum Plan {
    Forward(Shape),
    Refuse,
    BlackHole,
}

/// How a forwarded connection is disturbed.
#[derive(Clone, Copy, Default)]
struct Shape {
    delay: Option<Duration>,
    /// Close the connection once this many bytes went from server to client.
    drop_after: Option<u64>,
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    client_to_server: AtomicU64,
    server_to_client: AtomicU64,
    discarded: AtomicU64,
    handshake: AtomicU64,
    alert: AtomicU64,
    change_cipher_spec: AtomicU64,
    application: AtomicU64,
    tls_parse_failed: AtomicBool,
}

impl Counters {
    fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    fn add_records(&self, seen: RecordCounts) {
        self.handshake.fetch_add(seen.handshake, Ordering::Relaxed);
        self.alert.fetch_add(seen.alert, Ordering::Relaxed);
        self.change_cipher_spec
            .fetch_add(seen.change_cipher_spec, Ordering::Relaxed);
        self.application
            .fetch_add(seen.application_data, Ordering::Relaxed);
    }

    fn snapshot(&self) -> Stats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            connections: get(&self.connections),
            bytes_client_to_server: get(&self.client_to_server),
            bytes_server_to_client: get(&self.server_to_client),
            bytes_discarded: get(&self.discarded),
            client_handshake_records: get(&self.handshake),
            client_alert_records: get(&self.alert),
            client_change_cipher_spec_records: get(&self.change_cipher_spec),
            client_application_records: get(&self.application),
            tls_parse_failed: self.tls_parse_failed.load(Ordering::Relaxed),
        }
    }
}

/// Accepts until shutdown, then waits for every connection thread it started.
fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    let mut next_id = 0u64;
    while !shared.stopping() {
        match listener.accept() {
            Ok((stream, _)) => {
                next_id += 1;
                if let Some(thread) = admit(shared, next_id, stream) {
                    threads.push(thread);
                }
                threads.retain(|t| !t.is_finished());
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            // WouldBlock: nothing pending. Anything else (out of file descriptors, a
            // connection reset while queued) is transient or not ours to fix: wait
            // rather than spin.
            Err(_) => thread::sleep(ACCEPT_POLL),
        }
    }
    for thread in threads {
        let _ = thread.join();
    }
}

/// Counts a new connection and hands it to its own thread, unless the fault refuses
/// it or the proxy is shutting down.
fn admit(shared: &Arc<Shared>, id: u64, client: TcpStream) -> Option<JoinHandle<()>> {
    shared.counters.connections.fetch_add(1, Ordering::Relaxed);
    let plan = shared.plan_next();
    if matches!(plan, Plan::Refuse) {
        return None; // dropping the stream closes it
    }
    // Accepted sockets inherit O_NONBLOCK from the listener on some systems.
    client.set_nonblocking(false).ok()?;
    let _ = client.set_nodelay(true);
    if !shared.register(id, &client) {
        return None;
    }
    let thread = {
        let shared = Arc::clone(shared);
        thread::Builder::new()
            .name(format!("proxy-conn-{id}"))
            .spawn(move || {
                match plan {
                    Plan::Forward(shape) => forward(&shared, id, client, shape),
                    Plan::BlackHole => black_hole(&shared, client),
                    Plan::Refuse => {}
                }
                shared.unregister(id);
            })
    };
    match thread {
        Ok(thread) => Some(thread),
        Err(_) => {
            shared.unregister(id);
            None
        }
    }
}

/// Connects to the upstream and pumps both ways: server to client on a second
/// thread, client to server on this one.
fn forward(shared: &Arc<Shared>, id: u64, client: TcpStream, shape: Shape) {
    let Ok(server) = TcpStream::connect_timeout(&shared.upstream, CONNECT_TIMEOUT) else {
        return; // the client sees its connection closed, like a dead backend
    };
    let _ = server.set_nodelay(true);
    if !shared.register(id, &server) {
        return;
    }
    let (Ok(client_out), Ok(server_in)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let downstream = {
        let shared = Arc::clone(shared);
        thread::Builder::new()
            .name(format!("proxy-conn-{id}-down"))
            .spawn(move || pump(&shared, server_in, client_out, shape, Direction::Down))
    };
    let Ok(downstream) = downstream else {
        return;
    };
    pump(shared, client, server, shape, Direction::Up);
    let _ = downstream.join();
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// Client to server.
    Up,
    /// Server to client.
    Down,
}

/// Copies `from` to `to` until end-of-file, an error, the proxy's shutdown or the
/// connection's byte limit. End-of-file is passed on as a half-close, so a client that
/// shuts down its writing side still gets the whole response; anything else closes
/// the connection both ways.
fn pump(shared: &Shared, mut from: TcpStream, mut to: TcpStream, shape: Shape, dir: Direction) {
    let mut scanner = RecordScanner::default();
    let mut budget = match dir {
        Direction::Down => shape.drop_after,
        Direction::Up => None,
    };
    let mut buf = vec![0u8; CHUNK];
    loop {
        if budget == Some(0) {
            return abort(&from, &to);
        }
        let n = match from.read(&mut buf) {
            Ok(0) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return abort(&from, &to),
        };
        if let Some(delay) = shape.delay {
            if !shared.pause(delay) {
                return abort(&from, &to);
            }
        }
        let n = budget.map_or(n, |b| n.min(usize::try_from(b).unwrap_or(usize::MAX)));
        let chunk = &buf[..n];
        if to.write_all(chunk).is_err() {
            return abort(&from, &to);
        }
        if let Some(b) = budget.as_mut() {
            *b -= n as u64;
        }
        count(shared, &mut scanner, chunk, dir);
    }
}

/// Accounts for a chunk that was forwarded.
fn count(shared: &Shared, scanner: &mut RecordScanner, chunk: &[u8], dir: Direction) {
    let counters = &shared.counters;
    match dir {
        Direction::Down => Counters::add(&counters.server_to_client, chunk.len()),
        Direction::Up => {
            Counters::add(&counters.client_to_server, chunk.len());
            if !scanner.failed() {
                counters.add_records(scanner.feed(chunk));
                if scanner.failed() {
                    counters.tls_parse_failed.store(true, Ordering::Relaxed);
                }
            }
        }
    }
}

/// Closes a connection both ways at once; the other pump's blocked read returns.
fn abort(a: &TcpStream, b: &TcpStream) {
    let _ = a.shutdown(Shutdown::Both);
    let _ = b.shutdown(Shutdown::Both);
}

/// Reads and discards until the client goes away, then holds the socket open until
/// the proxy shuts down: a hung server closes nothing.
fn black_hole(shared: &Shared, mut client: TcpStream) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        match client.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => Counters::add(&shared.counters.discarded, n),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
    while shared.pause(SLEEP_SLICE) {}
}

/// TLS record content types (RFC 8446 section 5.1).
const CHANGE_CIPHER_SPEC: u8 = 20;
const ALERT: u8 = 21;
const HANDSHAKE: u8 = 22;
const APPLICATION_DATA: u8 = 23;

/// The largest record length any TLS version allows (TLS 1.2 ciphertext: 2^14 + 2048).
const MAX_RECORD: usize = (1 << 14) + 2048;

/// Records seen, by content type.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct RecordCounts {
    handshake: u64,
    alert: u64,
    change_cipher_spec: u64,
    application_data: u64,
}

/// Follows the TLS record layer through one byte stream that arrives in arbitrary
/// pieces: collects each 5-byte header (type, version, length), counts the record,
/// skips its body. Stops for good at the first header that is not TLS.
#[derive(Debug, Default)]
struct RecordScanner {
    header: [u8; 5],
    /// Header bytes collected so far.
    have: usize,
    /// Body bytes of the current record still to skip.
    skip: usize,
    failed: bool,
}

impl RecordScanner {
    fn failed(&self) -> bool {
        self.failed
    }

    /// Consumes the next piece of the stream; returns the records whose headers it
    /// completed.
    fn feed(&mut self, mut data: &[u8]) -> RecordCounts {
        let mut seen = RecordCounts::default();
        while !data.is_empty() && !self.failed {
            if self.skip > 0 {
                let n = self.skip.min(data.len());
                self.skip -= n;
                data = &data[n..];
                continue;
            }
            let n = (self.header.len() - self.have).min(data.len());
            self.header[self.have..self.have + n].copy_from_slice(&data[..n]);
            self.have += n;
            data = &data[n..];
            if self.have == self.header.len() {
                self.have = 0;
                self.record(&mut seen);
            }
        }
        seen
    }

    /// Counts the record whose header was just completed, or gives up.
    fn record(&mut self, seen: &mut RecordCounts) {
        let [kind, major, _minor, len_hi, len_lo] = self.header;
        let len = usize::from(u16::from_be_bytes([len_hi, len_lo]));
        // Every TLS (and SSL 3) record version has major 3; the length bound catches
        // a text protocol whose first bytes happen to look like a header.
        if major != 3 || len > MAX_RECORD {
            self.failed = true;
            return;
        }
        let counter = match kind {
            CHANGE_CIPHER_SPEC => &mut seen.change_cipher_spec,
            ALERT => &mut seen.alert,
            HANDSHAKE => &mut seen.handshake,
            APPLICATION_DATA => &mut seen.application_data,
            _ => {
                self.failed = true;
                return;
            }
        };
        *counter += 1;
        self.skip = len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn record(kind: u8, body_len: usize) -> Vec<u8> {
        let len = u16::try_from(body_len).unwrap().to_be_bytes();
        let mut r = vec![kind, 3, 3, len[0], len[1]];
        r.extend(std::iter::repeat_n(0xAB, body_len));
        r
    }

    /// ClientHello, ChangeCipherSpec, Finished (as application data), a request,
    /// close_notify: the shape of a TLS 1.3 client's stream, and an empty record.
    fn stream() -> Vec<u8> {
        [
            record(HANDSHAKE, 300),
            record(CHANGE_CIPHER_SPEC, 1),
            record(APPLICATION_DATA, 53),
            record(APPLICATION_DATA, 0),
            record(APPLICATION_DATA, MAX_RECORD),
            record(ALERT, 2),
        ]
        .concat()
    }

    const EXPECTED: RecordCounts = RecordCounts {
        handshake: 1,
        alert: 1,
        change_cipher_spec: 1,
        application_data: 3,
    };

    fn feed_in_pieces(pieces: &[&[u8]]) -> (RecordCounts, bool) {
        let mut scanner = RecordScanner::default();
        let mut total = RecordCounts::default();
        for piece in pieces {
            let seen = scanner.feed(piece);
            total.handshake += seen.handshake;
            total.alert += seen.alert;
            total.change_cipher_spec += seen.change_cipher_spec;
            total.application_data += seen.application_data;
        }
        (total, scanner.failed())
    }

    #[test]
    fn counts_records_fed_whole() {
        assert_eq!(feed_in_pieces(&[&stream()]), (EXPECTED, false));
    }

    #[test]
    fn counts_records_split_at_every_offset() {
        let s = stream();
        for cut in 0..=s.len() {
            let (a, b) = s.split_at(cut);
            assert_eq!(feed_in_pieces(&[a, b]), (EXPECTED, false), "cut at {cut}");
        }
    }

    #[test]
    fn counts_records_fed_byte_by_byte() {
        let s = stream();
        let pieces: Vec<&[u8]> = s.chunks(1).collect();
        assert_eq!(feed_in_pieces(&pieces), (EXPECTED, false));
    }

    #[rstest]
    #[case::http(b"GET / HTTP/1.1\r\n\r\n")]
    #[case::unknown_type(&[24, 3, 3, 0, 1, 0])]
    #[case::bad_version(&[22, 2, 0, 0, 1, 0])]
    #[case::too_long(&[23, 3, 3, 0xFF, 0xFF])]
    #[case::sslv2_hello(&[0x80, 0x2E, 0x01, 0x03, 0x01])]
    fn gives_up_on_what_is_not_tls(#[case] data: &[u8]) {
        let (seen, failed) = feed_in_pieces(&[data]);
        assert!(failed);
        assert_eq!(seen, RecordCounts::default());
    }

    #[test]
    fn stops_counting_after_garbage() {
        let s = [record(HANDSHAKE, 4), b"garbage!".to_vec(), record(ALERT, 2)].concat();
        let (seen, failed) = feed_in_pieces(&[&s]);
        assert!(failed);
        assert_eq!(seen.handshake, 1);
        assert_eq!(seen.alert, 0);
    }

    #[test]
    fn an_incomplete_header_counts_nothing_yet() {
        let (seen, failed) = feed_in_pieces(&[&[HANDSHAKE, 3, 1, 0]]);
        assert_eq!((seen, failed), (RecordCounts::default(), false));
    }

    #[rstest]
    #[case::none("none", Fault::None)]
    #[case::refuse("refuse", Fault::Refuse)]
    #[case::black_hole("black-hole", Fault::BlackHole)]
    #[case::delay("{ delay: { millis: 500 } }", Fault::Delay { millis: 500 })]
    #[case::drop_after(
        "{ drop-after: { bytes: 100 } }",
        Fault::DropAfter { bytes: 100, connections: None }
    )]
    #[case::drop_after_first(
        "drop-after:\n  bytes: 0\n  connections: 1\n",
        Fault::DropAfter { bytes: 0, connections: Some(1) }
    )]
    fn fault_reads_from_yaml(#[case] yaml: &str, #[case] want: Fault) {
        assert_eq!(serde_saphyr::from_str::<Fault>(yaml).unwrap(), want);
    }

    #[rstest]
    #[case::unknown_variant("slow")]
    #[case::snake_case("black_hole")]
    #[case::unknown_field("{ delay: { millis: 5, jitter: 1 } }")]
    #[case::missing_field("{ drop-after: { connections: 1 } }")]
    #[case::negative("{ delay: { millis: -5 } }")]
    #[case::unit_with_fields("{ refuse: { connections: 1 } }")]
    fn fault_rejects(#[case] yaml: &str) {
        assert!(serde_saphyr::from_str::<Fault>(yaml).is_err(), "{yaml}");
    }

    #[test]
    fn stats_serialize_flat() {
        let json = serde_json::to_value(Stats::default()).unwrap();
        assert_eq!(json["client_application_records"], 0);
        assert_eq!(json["tls_parse_failed"], false);
    }
}
