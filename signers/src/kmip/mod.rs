//! The KMIP signer: key pairs on a KMIP 1.2 server, reached over TLS.
//!
//! Contract, beyond [`Signer`]'s:
//!
//! - Lazy: [`KmipSigner::new`] touches nothing. The first call that needs the server
//!   connects (TCP, TLS), sends Discover Versions and Query (operations, objects,
//!   server information) and records what the server said for [`Signer::info`].
//! - Blocking I/O over `std::net::TcpStream` and rustls, one request at a time per
//!   connection; up to `pool_size` idle connections are kept. A pooled connection the
//!   server closed while idle (EOF or reset before any byte of the answer) is replaced
//!   once, transparently.
//! - Every request is a KMIP 1.2 Request Message of one batch item, with a Credential
//!   when `username` is set and a Maximum Response Size of [`wire::MAX_RESPONSE`].
//!   Answers are read by their 8-byte TTLV header first: anything but a Response
//!   Message structure, or longer than 1 MiB, is refused before it is read.
//! - Each socket read or write waits at most `read_timeout`, and one request in all
//!   (connecting, TLS handshake and first-contact questions included) at most
//!   `request_timeout`: a server that trickles bytes fails the call with
//!   [`ErrorKind::Unavailable`] naming `request_timeout`, and the connection is dropped.
//! - Text the server chose (Result Message, Vendor Identification) is cut to
//!   [`wire::SERVER_TEXT_MAX`] characters with control characters escaped
//!   ([`wire::server_text`]) before it goes into an error, a log or [`Signer::info`].
//! - Keys are reached by both Unique Identifiers, which [`CreatedKey::handle`] carries
//!   into the key map and [`Signer::recall`] brings back in later processes, so no
//!   Locate is needed (the seed-003 relay has none). Keys are also named on the server,
//!   the private half `<key identifier>_priv`, the public half `<key identifier>_pub`
//!   (40 lowercase hex digits), with Modify Attribute once the public key is known, so a
//!   key without a recorded handle is found by Locate where the server's Query offers
//!   it; elsewhere it is not found, and listing keys is [`ErrorKind::Unsupported`].
//! - A pair is created under temporary names ([`PENDING_PREFIX`]) and renamed after
//!   Activate and Get; a pair a kill left under them is listed by
//!   [`Signer::list_keys`] (so `list --orphans` shows it, and a warning calls it
//!   pending) and removed by [`Signer::destroy_key`] (found through Get Attributes of
//!   the public keys' Names where no handle is recorded).
//! - Create Key Pair (RSA-2048, EC P-256, EC P-384; EC with Cryptographic Domain
//!   Parameters, else with algorithm and length only), Get of the public key, whose type
//!   must be the one asked for, Activate of the private key. Public keys are asked for
//!   as X.509 and read in every format servers send (X.509, PKCS#1, Raw as DER SPKI or
//!   EC point, Transparent RSA / ECDSA / EC Public Key); a refused X.509 request is
//!   asked again without a format. Sign carries Cryptographic Algorithm, padding (RSA)
//!   and hash; ECDSA signatures come back DER whether the server sent DER or `r || s`.
//!   Destroy is Revoke (cessation of operation) then Destroy, for both halves.
//! - A refused Create Key Pair (any Result Reason but failed credentials, or a key of
//!   another type than asked) makes that key type, and only it, unavailable on this
//!   signer with the server's words ([`Signer::unavailable`]).
//!
//! TLS: only TLS 1.3 is offered unless `weaken_security_allow_tls12 = true`, which
//! also offers TLS 1.2 and logs a warning on every connect. `insecure = true` accepts
//! any server certificate and logs a warning on every connect. Without
//! `server_ca_cert_path` the trust store is empty (system roots are not used), so only
//! `insecure` connects.
//!
//! Refused, and why:
//!
//! - A server that does not accept our TLS versions (protocol_version alert,
//!   handshake_failure to a TLS 1.3-only hello, a server hello for a version we do not
//!   offer): [`ErrorKind::Unusable`], fatal, message starting with
//!   [`TLS_VERSION_REFUSED`] and naming what each side offered. Nothing is retried and
//!   no KMIP byte is sent: the refusal happens before the session exists.
//! - A server certificate that does not verify (unknown issuer, expired, wrong host), a
//!   client certificate the server refuses, other handshake refusals, unreadable PEM
//!   files: fatal ([`ErrorKind::Unusable`] or [`ErrorKind::Config`]). Once fatal, every
//!   later call answers the same error without connecting.
//! - A server whose Query does not list seed 001's required operations (Activate,
//!   Create Key Pair, Destroy, Get, Modify Attribute, Query, Revoke, Sign):
//!   [`ErrorKind::Unusable`] naming the missing ones, unless `force` (then a warning).
//!   Authentication Not Successful or Permission Denied while connecting: fatal.
//! - Connection refused, timeouts, resets, DNS failures: [`ErrorKind::Unavailable`]
//!   (the router retries with backoff).
//! - Result Reasons: Item Not Found (and KMIP 2.x's Object Not Found, which Cosmian KMS
//!   answers to 1.2 requests) is [`ErrorKind::NotFound`]; Permission Denied and
//!   Authentication Not Successful [`ErrorKind::Unusable`]; Operation Not Supported
//!   [`ErrorKind::Unsupported`]; RNG Retrieve answered Operation Not Supported or
//!   Invalid Message (PyKMIP) is [`ErrorKind::Unsupported`] so that callers fall back;
//!   a key pair the server will not create is [`ErrorKind::Unsupported`]; anything
//!   else [`ErrorKind::Backend`] with the reason and the server's message.
//! - Ed25519: [`ErrorKind::Unsupported`] (KMIP 1.2 has no EdDSA). Signing with an
//!   algorithm whose key type is not the key's: [`ErrorKind::InvalidInput`], before the
//!   server sees it.
//! - Malformed answers (bad TTLV, wrong batch count, missing fields, keys we cannot
//!   read): [`ErrorKind::Protocol`] (the server was reached: not `unavailable`, and not
//!   retried); the connection is dropped. No server bytes panic.
//!
//! KMIP 1.2 has no PSS salt length parameter: servers choose it (PyKMIP uses the
//! maximum), so `rsa2048-pss` signatures verify under a salt of 32 only where the
//! server uses the hash length (our relay does).

mod deadline;
mod tls;
mod ttlv;
mod wire;

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use kmip_protocol::types::common::{
    AttributeName, AttributeValue, CryptographicAlgorithm, CryptographicUsageMask, Data,
    DataLength, DigitalSignatureAlgorithm, HashingAlgorithm, KeyFormatType, ObjectType, Operation,
    PaddingMethod, RevocationReasonCode, UniqueIdentifier,
};
use kmip_protocol::types::request::{
    Attribute, CommonTemplateAttribute, PrivateKeyTemplateAttribute, PublicKeyTemplateAttribute,
    QueryFunction, RequestPayload, RevocationReason,
};
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use serde::{Deserialize, Serialize};

use crate::config::KmipConfig;
use crate::encoding::{ec_spki_der, ecdsa_raw_to_der, rsa_public_key_parts, rsa_spki_der};
use crate::{
    Algorithm, CreatedKey, ErrorKind, KeyIdentifier, KeyType, Signer, SignerError, SignerInfo,
};

pub use tls::TLS_VERSION_REFUSED;
pub use wire::{operation_name, MAX_RESPONSE, REQUIRED_OPERATIONS};

/// The `tracing` target of the event each request-and-answer exchange emits (at debug
/// level), with the fields `operation` (its name, e.g. `Create Key Pair`) and `result`
/// (`Success`, `Operation Failed (Item Not Found)`, or `no answer (unavailable)` when
/// none came). Harnesses count these to see which operations a server answered how,
/// whatever the signer made of the answer.
pub const EXCHANGE_TARGET: &str = "hsm_signers::kmip::exchange";

use deadline::DeadlineSocket;
use ttlv::Item;
use wire::{reason, tag, Answer, Credential};

/// Largest RNG Retrieve asked for in one request.
const RANDOM_CHUNK: usize = 4096;

/// The start of the temporary Names a key pair carries from Create Key Pair until
/// Modify Attribute gives it its key identifier's names (`<prefix><uuid>_priv`,
/// `<prefix><uuid>_pub`). A pair still named so was left by a `create-key` that was
/// killed (or failed to clean up) in between: [`Signer::list_keys`] lists it, as an
/// orphan nobody reported, and [`Signer::destroy_key`] removes it.
pub const PENDING_PREFIX: &str = "hsm-harness-pending-";

/// The start of the temporary Names of the pair made to learn whether the server
/// creates EC key pairs of a curve (destroyed at once, or kept as the next key of that
/// type). A pair still named so was left by a process killed in between, and is
/// pending as a [`PENDING_PREFIX`] pair is.
pub const PROBE_PREFIX: &str = "hsm-harness-probe-";

/// The server-side Name of a key's private half.
pub fn private_key_name(key: &KeyIdentifier) -> String {
    format!("{key}_priv")
}

/// The server-side Name of a key's public half.
pub fn public_key_name(key: &KeyIdentifier) -> String {
    format!("{key}_pub")
}

/// What the server said about itself on the first connect.
#[derive(Clone, Debug, Default)]
struct ServerFacts {
    versions: Vec<(i32, i32)>,
    operations: Vec<u32>,
    vendor: Option<String>,
    missing: Vec<&'static str>,
}

impl ServerFacts {
    /// Whether the server offers `operation`. A server whose Query could not be read
    /// (accepted under `force`) is assumed to.
    fn offers(&self, operation: u32) -> bool {
        self.operations.is_empty() || self.operations.contains(&operation)
    }
}

/// One open TLS connection.
struct Conn {
    stream: StreamOwned<ClientConnection, DeadlineSocket>,
}

impl Conn {
    fn tls_version(&self) -> String {
        match self.stream.conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLS 1.3".into(),
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLS 1.2".into(),
            Some(v) => format!("{v:?}"),
            None => "none".into(),
        }
    }

    fn cipher_suite(&self) -> String {
        self.stream
            .conn
            .negotiated_cipher_suite()
            .map(|s| format!("{:?}", s.suite()))
            .unwrap_or_else(|| "none".into())
    }
}

/// How one request/response exchange failed.
enum Exchange {
    /// The connection broke before any byte of the answer arrived (EOF, reset): a
    /// pooled connection the server closed while idle. Safe to retry once elsewhere.
    Stale(io::Error),
    /// Any other failure, already classified.
    Failed(SignerError),
}

/// The handles of a key: both Unique Identifiers and the key type. Its text form is the
/// key map's handle ([`CreatedKey::handle`]), so a later process reaches the key without
/// Locate, as Krill records both identifiers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Handles {
    private: String,
    public: String,
    key_type: KeyType,
}

impl Handles {
    fn to_text(&self) -> String {
        // Serialising three strings cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    fn from_text(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }
}

/// A key pair just made, not yet activated or named.
#[derive(Clone, Debug)]
struct Pair {
    private: String,
    public: String,
    /// The public key, read back and checked to be of the type asked for.
    spki: Vec<u8>,
}

/// How a Create Key Pair for an EC key names its curve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EcTemplate {
    /// Cryptographic Algorithm, Length and Cryptographic Domain Parameters (Recommended
    /// Curve): what KMIP 1.2 says.
    DomainParameters,
    /// Cryptographic Algorithm and Length only: for servers whose parser fails on the
    /// domain parameters (the seed-003 relay answers General Failure).
    AlgorithmAndLength,
}

impl EcTemplate {
    /// A prefix for refusal messages; RSA has one template, so nothing to say.
    fn describe(self, kt: KeyType) -> &'static str {
        match (kt, self) {
            (KeyType::Rsa2048, _) => "",
            (_, EcTemplate::DomainParameters) => "with Cryptographic Domain Parameters: ",
            (_, EcTemplate::AlgorithmAndLength) => "with Cryptographic Algorithm and Length only: ",
        }
    }
}

/// Bits and KMIP Recommended Curve of an EC key type.
fn ec_size(kt: KeyType) -> (i32, u32) {
    if kt == KeyType::EcP384 {
        (384, wire::CURVE_P384)
    } else {
        (256, wire::CURVE_P256)
    }
}

#[derive(Default)]
struct State {
    /// Set once a fatal error happened: every later call answers it.
    fatal: Option<SignerError>,
    /// Set once the first connect's Discover Versions and Query went through.
    facts: Option<ServerFacts>,
    tls_config: Option<Arc<ClientConfig>>,
    /// TLS version and cipher suite of the last connection opened.
    last_tls: Option<(String, String)>,
}

/// A signer whose keys live on a KMIP server. See the module documentation.
pub struct KmipSigner {
    name: String,
    config: KmipConfig,
    state: Mutex<State>,
    pool: Mutex<Vec<Conn>>,
    keys: Mutex<HashMap<KeyIdentifier, Handles>>,
    /// What we learned by creating keys: key type -> created, or the server's refusal.
    algorithms: Mutex<HashMap<KeyType, Result<(), String>>>,
    /// The EC template this server accepted.
    ec_template: Mutex<Option<EcTemplate>>,
    /// Probe pairs the server would not destroy, used for the next key of their type.
    spare: Mutex<HashMap<KeyType, Pair>>,
    /// The server refused a Get for X.509: ask without a format.
    x509_refused: AtomicBool,
    /// Pending pairs the last listing found (see [`Signer::is_pending`]).
    pending: Mutex<Vec<KeyIdentifier>>,
}

impl fmt::Debug for KmipSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KmipSigner")
            .field("name", &self.name)
            .field("host", &self.config.host)
            .field("port", &self.config.port)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether `e` is the kind of I/O error a closed idle connection gives.
fn is_closed(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    ) && e
        .get_ref()
        .and_then(|i| i.downcast_ref::<rustls::Error>())
        .is_none()
}

impl KmipSigner {
    /// A signer for `config`. Connects to nothing: that happens on the first call that
    /// needs the server.
    pub fn new(name: &str, config: &KmipConfig) -> Self {
        Self {
            name: name.to_string(),
            config: config.clone(),
            state: Mutex::new(State::default()),
            pool: Mutex::new(Vec::new()),
            keys: Mutex::new(HashMap::new()),
            pending: Mutex::new(Vec::new()),
            algorithms: Mutex::new(HashMap::new()),
            ec_template: Mutex::new(None),
            spare: Mutex::new(HashMap::new()),
            x509_refused: AtomicBool::new(false),
        }
    }

    fn err(&self, kind: ErrorKind, message: impl fmt::Display) -> SignerError {
        SignerError::new(kind, format!("signer '{}': {message}", self.name))
    }

    fn server(&self) -> String {
        format!("KMIP server {}:{}", self.config.host, self.config.port)
    }

    // ---- Connections ------------------------------------------------------------------

    /// A connection: an idle one from the pool, or a new one (which runs the first
    /// connect's checks when they have not run yet), all before `deadline`. `true`
    /// when it came from the pool.
    fn checkout(&self, deadline: Instant) -> Result<(Conn, bool), SignerError> {
        {
            let state = lock(&self.state);
            if let Some(fatal) = &state.fatal {
                return Err(fatal.clone());
            }
            if state.facts.is_some() {
                drop(state);
                if let Some(conn) = lock(&self.pool).pop() {
                    return Ok((conn, true));
                }
            }
        }
        // Held while the first connect runs its checks, so they run once.
        let mut state = lock(&self.state);
        if let Some(fatal) = &state.fatal {
            return Err(fatal.clone());
        }
        let result = self.open(&mut state, deadline);
        match result {
            Ok(conn) => Ok((conn, false)),
            Err(e) => {
                if !e.is_transient() && e.kind != ErrorKind::NotFound {
                    tracing::error!(signer = %self.name, "signer is unusable: {e}");
                    state.fatal = Some(e.clone());
                }
                Err(e)
            }
        }
    }

    fn checkin(&self, conn: Conn) {
        let mut pool = lock(&self.pool);
        if pool.len() < self.config.pool_size {
            pool.push(conn);
        }
    }

    /// Opens a connection; on the first one, Discover Versions and Query.
    fn open(&self, state: &mut State, deadline: Instant) -> Result<Conn, SignerError> {
        let tls_config = match &state.tls_config {
            Some(c) => c.clone(),
            None => {
                let c = tls::client_config(&self.name, &self.config)?;
                state.tls_config = Some(c.clone());
                c
            }
        };
        let mut conn = self.connect(tls_config, deadline)?;
        state.last_tls = Some((conn.tls_version(), conn.cipher_suite()));
        if state.facts.is_none() {
            state.facts = Some(self.first_contact(&mut conn)?);
        }
        Ok(conn)
    }

    /// TCP connect and TLS handshake, before `deadline`.
    fn connect(
        &self,
        tls_config: Arc<ClientConfig>,
        deadline: Instant,
    ) -> Result<Conn, SignerError> {
        let cfg = &self.config;
        let server = self.server();
        let addrs: Vec<_> = (cfg.host.as_str(), cfg.port)
            .to_socket_addrs()
            .map_err(|e| {
                self.err(
                    ErrorKind::Unavailable,
                    format!("cannot resolve {}: {e}", cfg.host),
                )
            })?
            .collect();
        let mut last = None;
        let mut sock = None;
        for addr in &addrs {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                last = Some(format!("{addr}: {}", deadline::DeadlinePassed));
                break;
            }
            match TcpStream::connect_timeout(addr, cfg.connect_timeout.min(left)) {
                Ok(s) => {
                    sock = Some(s);
                    break;
                }
                Err(e) => last = Some(format!("{addr}: {e}")),
            }
        }
        let Some(sock) = sock else {
            return Err(self.err(
                ErrorKind::Unavailable,
                format!(
                    "cannot connect to {server} within {:?}: {}",
                    cfg.connect_timeout,
                    last.unwrap_or_else(|| "no address".into())
                ),
            ));
        };
        let _ = sock.set_nodelay(true);
        let mut sock = DeadlineSocket::new(sock, cfg.read_timeout, Some(deadline));
        let name = tls::server_name(&self.name, &cfg.host)?;
        let mut tls = ClientConnection::new(tls_config, name)
            .map_err(|e| self.err(ErrorKind::Config, format!("TLS client: {e}")))?;
        while tls.is_handshaking() {
            if let Err(e) = tls.complete_io(&mut sock) {
                let e = tls::alert_behind(&mut tls, &mut sock, e);
                return Err(self.io_error(&e, true));
            }
        }
        let conn = Conn {
            stream: StreamOwned::new(tls, sock),
        };
        if cfg.weaken_security_allow_tls12 {
            tracing::warn!(
                signer = %self.name,
                tls = %conn.tls_version(),
                "security is weakened: weaken_security_allow_tls12 lets this signer use TLS 1.2 \
                 with {server} (negotiated {})",
                conn.tls_version()
            );
        }
        if cfg.insecure {
            tracing::warn!(
                signer = %self.name,
                "insecure = true: the certificate of {server} was NOT verified"
            );
        }
        tracing::debug!(
            signer = %self.name,
            tls = %conn.tls_version(),
            suite = %conn.cipher_suite(),
            "connected to {server}"
        );
        Ok(conn)
    }

    /// Classifies an I/O error from the socket or TLS.
    fn io_error(&self, e: &io::Error, in_handshake: bool) -> SignerError {
        let server = self.server();
        if let Some(t) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            return match tls::classify(&self.config, t, in_handshake) {
                tls::TlsFailure::VersionRefused(m) => {
                    self.err(ErrorKind::TlsRefused, format!("{server}: {m}"))
                }
                tls::TlsFailure::Fatal(m) => {
                    self.err(ErrorKind::Unusable, format!("{server}: {m}"))
                }
                tls::TlsFailure::Transient(m) => {
                    self.err(ErrorKind::Unavailable, format!("{server}: {m}"))
                }
            };
        }
        let phase = if in_handshake {
            format!(
                "during the TLS handshake (this signer offers {})",
                tls::offered(&self.config)
            )
        } else {
            "waiting for the KMIP answer".to_string()
        };
        let what = match e.kind() {
            _ if deadline::is_deadline(e) => format!(
                "no complete answer within request_timeout ({:?}) {phase}",
                self.config.request_timeout
            ),
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
                format!("timed out after {:?} {phase}", self.config.read_timeout)
            }
            io::ErrorKind::UnexpectedEof => format!("the server closed the connection {phase}"),
            io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => {
                format!("the server reset the connection {phase}")
            }
            _ => format!("{e} {phase}"),
        };
        self.err(ErrorKind::Unavailable, format!("{server}: {what}"))
    }

    /// Sends `request` and reads one response frame; the exchange is logged at
    /// [`EXCHANGE_TARGET`] unless the pooled connection was found closed (the request
    /// is sent again on another, and logged then).
    fn exchange_on(&self, conn: &mut Conn, request: &[u8]) -> Result<Answer, Exchange> {
        let result = self.exchange_unlogged(conn, request);
        let outcome = match &result {
            Ok(answer) => Some(answer.outcome()),
            Err(Exchange::Failed(e)) => Some(format!("no answer ({})", e.kind)),
            Err(Exchange::Stale(_)) => None,
        };
        if let Some(outcome) = outcome {
            let operation = wire::request_operation(request)
                .map_or_else(|| "unknown operation".to_string(), operation_name);
            tracing::debug!(
                target: EXCHANGE_TARGET,
                signer = %self.name,
                operation = %operation,
                result = %outcome,
                "KMIP {operation}: {outcome}"
            );
        }
        result
    }

    fn exchange_unlogged(&self, conn: &mut Conn, request: &[u8]) -> Result<Answer, Exchange> {
        if let Err(e) = conn
            .stream
            .write_all(request)
            .and_then(|_| conn.stream.flush())
        {
            return Err(if is_closed(&e) {
                Exchange::Stale(e)
            } else {
                Exchange::Failed(self.io_error(&e, false))
            });
        }
        let mut head = [0u8; 8];
        let mut got = 0;
        while got < head.len() {
            match conn.stream.read(&mut head[got..]) {
                Ok(0) => {
                    let e = io::Error::new(io::ErrorKind::UnexpectedEof, "end of stream");
                    return Err(if got == 0 {
                        Exchange::Stale(e)
                    } else {
                        Exchange::Failed(self.io_error(&e, false))
                    });
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if got == 0 && is_closed(&e) => return Err(Exchange::Stale(e)),
                Err(e) => return Err(Exchange::Failed(self.io_error(&e, false))),
            }
        }
        let (t, ty, len) = ttlv::header(&head);
        let bad = |m: String| {
            Exchange::Failed(self.err(
                ErrorKind::Protocol,
                format!("{}: malformed answer: {m}", self.server()),
            ))
        };
        if t != tag::RESPONSE_MESSAGE || ty != ttlv::kind::STRUCTURE {
            return Err(bad(format!(
                "expected a Response Message structure (0x42007B, type 0x01), got tag \
                 {t:#08x} type {ty:#04x}"
            )));
        }
        let len = len as usize;
        if len > MAX_RESPONSE - 8 {
            return Err(bad(format!(
                "the answer claims {len} bytes, above the {MAX_RESPONSE}-byte limit"
            )));
        }
        if len % 8 != 0 {
            return Err(bad(format!(
                "a structure length of {len} is not a multiple of 8"
            )));
        }
        let mut frame = vec![0u8; 8 + len];
        frame[..8].copy_from_slice(&head);
        if let Err(e) = conn.stream.read_exact(&mut frame[8..]) {
            return Err(Exchange::Failed(self.io_error(&e, false)));
        }
        wire::decode_response(&frame).map_err(bad)
    }

    /// One request on some connection; a stale pooled connection is replaced once.
    /// The whole call, reconnecting included, ends by `request_timeout`.
    fn call(&self, request: &[u8]) -> Result<Answer, SignerError> {
        let deadline = self.deadline();
        for _ in 0..2 {
            let (mut conn, pooled) = self.checkout(deadline)?;
            conn.stream.sock.set_deadline(Some(deadline));
            match self.exchange_on(&mut conn, request) {
                Ok(answer) => {
                    self.checkin(conn);
                    return Ok(answer);
                }
                Err(Exchange::Stale(e)) if pooled => {
                    tracing::debug!(signer = %self.name, "pooled connection was closed ({e}); reconnecting");
                }
                Err(Exchange::Stale(e)) => return Err(self.io_error(&e, false)),
                Err(Exchange::Failed(e)) => return Err(self.latch(e)),
            }
        }
        Err(self.err(
            ErrorKind::Unavailable,
            format!("{} closed two connections in a row", self.server()),
        ))
    }

    /// The deadline of a request starting now.
    fn deadline(&self) -> Instant {
        Instant::now() + self.config.request_timeout
    }

    /// Records a fatal error met outside connect (a client certificate refused after a
    /// TLS 1.3 handshake shows up on the first read).
    fn latch(&self, e: SignerError) -> SignerError {
        if e.kind == ErrorKind::TlsRefused
            || (e.kind == ErrorKind::Unusable && e.message.contains("tls-"))
        {
            lock(&self.state).fatal.get_or_insert_with(|| e.clone());
        }
        e
    }

    fn credential(&self) -> Result<Option<Credential>, SignerError> {
        let Some(username) = &self.config.username else {
            return Ok(None);
        };
        let password = match &self.config.password {
            Some(p) => Some(p.resolve()?),
            None => None,
        };
        Ok(Some(Credential {
            username: username.clone(),
            password,
        }))
    }

    fn encode(&self, payload: RequestPayload) -> Result<Vec<u8>, SignerError> {
        wire::encode_std(payload, self.credential()?.as_ref())
            .map_err(|e| self.err(ErrorKind::Backend, e))
    }

    /// Sends a request kmip-protocol can express and returns the answer, successful or not.
    fn request(&self, payload: RequestPayload) -> Result<Answer, SignerError> {
        let bytes = self.encode(payload)?;
        self.call(&bytes)
    }

    /// The payload of a successful answer, or the error its Result Reason means.
    fn ok(&self, what: &str, answer: Answer) -> Result<Item, SignerError> {
        if answer.status == 0 {
            return Ok(answer.payload.unwrap_or(Item {
                tag: tag::RESPONSE_PAYLOAD,
                value: ttlv::Value::Structure(vec![]),
            }));
        }
        Err(self.kmip_error(what, &answer))
    }

    /// The generic mapping of a failed answer.
    fn kmip_error(&self, what: &str, answer: &Answer) -> SignerError {
        let kind = match answer.reason {
            Some(reason::ITEM_NOT_FOUND | reason::OBJECT_NOT_FOUND) => ErrorKind::NotFound,
            Some(reason::AUTHENTICATION_NOT_SUCCESSFUL | reason::PERMISSION_DENIED) => {
                ErrorKind::Unusable
            }
            Some(reason::OPERATION_NOT_SUPPORTED) => ErrorKind::Unsupported,
            _ => ErrorKind::Backend,
        };
        let hint = match answer.reason {
            Some(reason::AUTHENTICATION_NOT_SUCCESSFUL) => match &self.config.username {
                Some(u) => format!(" (check username '{u}' and password)"),
                None => " (no username is configured)".to_string(),
            },
            _ => String::new(),
        };
        self.err(
            kind,
            format!(
                "{what}: {} answered {}{hint}",
                self.server(),
                answer.describe()
            ),
        )
    }

    // ---- First contact ----------------------------------------------------------------

    fn first_contact(&self, conn: &mut Conn) -> Result<ServerFacts, SignerError> {
        let mut once = |payload: RequestPayload| -> Result<Answer, SignerError> {
            let bytes = self.encode(payload)?;
            self.exchange_on(conn, &bytes).map_err(|e| match e {
                Exchange::Stale(e) => self.io_error(&e, false),
                Exchange::Failed(e) => e,
            })
        };
        let mut facts = ServerFacts::default();
        let auth_fatal = |what: &str, a: &Answer| {
            let e = self.kmip_error(what, a);
            if e.kind == ErrorKind::Unusable {
                Some(e)
            } else {
                None
            }
        };

        let answer = once(RequestPayload::DiscoverVersions(vec![]))?;
        if answer.status == 0 {
            if let Some(p) = &answer.payload {
                facts.versions = p
                    .all(tag::PROTOCOL_VERSION)
                    .filter_map(|v| {
                        Some((
                            v.int_of(tag::PROTOCOL_VERSION_MAJOR)?,
                            v.int_of(tag::PROTOCOL_VERSION_MINOR)?,
                        ))
                    })
                    .collect();
            }
            let speaks_12 = facts.versions.contains(&(1, 2));
            if !facts.versions.is_empty() && !speaks_12 {
                let listed = self.versions_text(&facts.versions);
                let m = format!(
                    "{} does not speak KMIP 1.2 (Discover Versions lists {listed}); Sign \
                     needs KMIP 1.2",
                    self.server()
                );
                if !self.config.force {
                    return Err(self.err(
                        ErrorKind::Unusable,
                        format!("{m}; set force = true to try anyway"),
                    ));
                }
                tracing::warn!(signer = %self.name, "{m}; continuing because force = true");
            }
        } else if let Some(e) = auth_fatal("Discover Versions", &answer) {
            return Err(e);
        } else {
            tracing::warn!(
                signer = %self.name,
                "Discover Versions failed ({}); assuming KMIP 1.2",
                answer.describe()
            );
        }

        let answer = once(RequestPayload::Query(vec![
            QueryFunction::QueryOperations,
            QueryFunction::QueryObjects,
            QueryFunction::QueryServerInformation,
        ]))?;
        if answer.status != 0 {
            if let Some(e) = auth_fatal("Query", &answer) {
                return Err(e);
            }
            let m = format!("Query failed: {}", answer.describe());
            if !self.config.force {
                return Err(self.err(
                    ErrorKind::Unusable,
                    format!("{m}; the required operations cannot be checked (set force = true to skip the check)"),
                ));
            }
            tracing::warn!(signer = %self.name, "{m}; continuing because force = true");
            return Ok(facts);
        }
        if let Some(p) = &answer.payload {
            facts.operations = p.all(tag::OPERATION).filter_map(Item::as_enum).collect();
            facts.vendor = p.text_of(tag::VENDOR_IDENTIFICATION).map(wire::server_text);
        }
        facts.missing = REQUIRED_OPERATIONS
            .iter()
            .filter(|(code, _)| !facts.operations.contains(code))
            .map(|(_, name)| *name)
            .collect();
        if !facts.missing.is_empty() {
            let listed: Vec<String> = facts
                .operations
                .iter()
                .map(|o| wire::operation_name(*o))
                .collect();
            let m = format!(
                "{} does not offer required KMIP operations: {} (its Query lists: {})",
                self.server(),
                facts.missing.join(", "),
                if listed.is_empty() {
                    "nothing".into()
                } else {
                    listed.join(", ")
                }
            );
            if !self.config.force {
                return Err(self.err(
                    ErrorKind::Unusable,
                    format!("{m}; set force = true if the server supports them anyway"),
                ));
            }
            tracing::warn!(signer = %self.name, "{m}; continuing because force = true");
        }
        Ok(facts)
    }

    fn versions_text(&self, versions: &[(i32, i32)]) -> String {
        let v: Vec<String> = versions.iter().map(|(a, b)| format!("{a}.{b}")).collect();
        v.join(", ")
    }

    // ---- Keys -------------------------------------------------------------------------

    /// Unique identifiers of the objects named `name` of `object_type`.
    fn locate(&self, name: &str, object_type: ObjectType) -> Result<Vec<String>, SignerError> {
        let answer = self.request(RequestPayload::Locate(vec![
            Attribute::Name(name.to_string()),
            Attribute::ObjectType(object_type),
        ]))?;
        let what = format!("Locate of '{name}'");
        match self.ok(&what, answer) {
            Ok(p) => Ok(p
                .all(tag::UNIQUE_IDENTIFIER)
                .filter_map(Item::as_text)
                .map(str::to_string)
                .collect()),
            Err(e) if e.kind == ErrorKind::NotFound => Ok(vec![]),
            Err(e) => Err(e),
        }
    }

    fn locate_one(&self, name: &str, t: ObjectType) -> Result<Option<String>, SignerError> {
        let mut found = self.locate(name, t)?;
        if found.len() > 1 {
            tracing::warn!(
                signer = %self.name,
                "{} objects are named '{name}'; using the first ({})",
                found.len(),
                found[0]
            );
        }
        Ok(if found.is_empty() {
            None
        } else {
            Some(found.swap_remove(0))
        })
    }

    /// The Names of object `uid` (Get Attributes); none where the server will not say.
    fn names_of(&self, uid: &str) -> Result<Vec<String>, SignerError> {
        let answer = self.request(RequestPayload::GetAttributes(
            Some(UniqueIdentifier(uid.to_string())),
            Some(vec![AttributeName("Name".into())]),
        ))?;
        let payload = match self.ok(&format!("Get Attributes (Name) of {uid}"), answer) {
            Ok(p) => p,
            Err(e) if e.kind != ErrorKind::Unavailable && e.kind != ErrorKind::Unusable => {
                tracing::debug!(signer = %self.name, "{e}");
                return Ok(vec![]);
            }
            Err(e) => return Err(e),
        };
        Ok(payload
            .all(tag::ATTRIBUTE)
            .filter(|a| a.text_of(tag::ATTRIBUTE_NAME) == Some("Name"))
            .filter_map(|a| a.child(tag::ATTRIBUTE_VALUE))
            .filter_map(|v| v.text_of(tag::NAME_VALUE))
            .map(str::to_string)
            .collect())
    }

    /// The private half of the pending pair whose public half is `public_uid`: when
    /// that public key still carries a temporary name ([`PENDING_PREFIX`], or
    /// [`PROBE_PREFIX`] for a probe pair) and a
    /// private key carries the matching one.
    fn pending_private(&self, public_uid: &str) -> Result<Option<String>, SignerError> {
        for name in self.names_of(public_uid)? {
            let Some((prefix, tmp)) = [PENDING_PREFIX, PROBE_PREFIX].into_iter().find_map(|p| {
                name.strip_prefix(p)
                    .and_then(|rest| rest.strip_suffix("_pub"))
                    .map(|tmp| (p, tmp))
            }) else {
                continue;
            };
            let private = format!("{prefix}{tmp}_priv");
            if let Some(uid) = self.locate_one(&private, ObjectType::PrivateKey)? {
                return Ok(Some(uid));
            }
        }
        Ok(None)
    }

    /// The server's facts, connecting first if that has not happened yet.
    fn facts(&self) -> Result<ServerFacts, SignerError> {
        let (conn, _) = self.checkout(self.deadline())?;
        self.checkin(conn);
        Ok(lock(&self.state).facts.clone().unwrap_or_default())
    }

    /// The handles of `key`: recorded ([`Signer::recall`]) or cached, else by Locate
    /// where the server offers it (and Get for its type).
    fn handles(&self, key: &KeyIdentifier) -> Result<Handles, SignerError> {
        if let Some(h) = lock(&self.keys).get(key) {
            return Ok(h.clone());
        }
        if !self.facts()?.offers(wire::op::LOCATE) {
            return Err(SignerError::new(
                ErrorKind::NotFound,
                format!(
                    "signer '{}' has no key {key}: no handle is recorded for it and {} does \
                     not offer Locate to search for it",
                    self.name,
                    self.server()
                ),
            ));
        }
        let not_found = || SignerError::key_not_found(&self.name, key);
        let Some(private) = self.locate_one(&private_key_name(key), ObjectType::PrivateKey)? else {
            // Perhaps a pending pair (still under its temporary names): listing the keys
            // finds those and records their handles.
            self.list_keys()?;
            return lock(&self.keys).get(key).cloned().ok_or_else(not_found);
        };
        let public = self
            .locate_one(&public_key_name(key), ObjectType::PublicKey)?
            .ok_or_else(|| {
                self.err(
                    ErrorKind::Backend,
                    format!(
                        "key {key} has a private half ({private}) but no public key named '{}'",
                        public_key_name(key)
                    ),
                )
            })?;
        let spki = self.get_public(&public, None)?;
        let key_type = spki_key_type(&spki)
            .map_err(|m| self.err(ErrorKind::Unsupported, format!("key {key}: {m}")))?;
        let h = Handles {
            private,
            public,
            key_type,
        };
        lock(&self.keys).insert(*key, h.clone());
        Ok(h)
    }

    /// The public key `uid` as a DER SubjectPublicKeyInfo. `curve` helps read bare EC
    /// points.
    ///
    /// X.509 (a SubjectPublicKeyInfo) is asked for first; a server that refuses that
    /// request, for whatever reason but a missing object or credentials, is asked again
    /// without a format and answers in its own (PyKMIP keeps PKCS#1, Cosmian refuses
    /// X.509 with Operation Not Supported), and is not asked for X.509 again.
    fn get_public(&self, uid: &str, curve: Option<KeyType>) -> Result<Vec<u8>, SignerError> {
        let what = format!("Get of public key {uid}");
        let get = |format: Option<KeyFormatType>| {
            self.request(RequestPayload::Get(
                Some(UniqueIdentifier(uid.to_string())),
                format,
                None,
                None,
            ))
        };
        let answer = if self.x509_refused.load(Ordering::Relaxed) {
            get(None)?
        } else {
            let answer = get(Some(KeyFormatType::X509))?;
            let keep = answer.status == 0
                || matches!(
                    answer.reason,
                    Some(
                        reason::ITEM_NOT_FOUND
                            | reason::OBJECT_NOT_FOUND
                            | reason::AUTHENTICATION_NOT_SUCCESSFUL
                            | reason::PERMISSION_DENIED
                    )
                );
            if keep {
                answer
            } else {
                tracing::debug!(
                    signer = %self.name,
                    "{what} as X.509: {}; asking without a format from now on",
                    answer.describe()
                );
                self.x509_refused.store(true, Ordering::Relaxed);
                get(None)?
            }
        };
        let payload = self.ok(&what, answer)?;
        read_public_key(&payload, curve)
            .map_err(|m| self.err(ErrorKind::Protocol, format!("{what}: {m}")))
    }

    /// Revoke (best effort) then Destroy of one object. `Ok(false)`: not found.
    fn revoke_and_destroy(&self, uid: &str, revoke: bool) -> Result<bool, SignerError> {
        if revoke {
            let answer = self.request(RequestPayload::Revoke(
                Some(UniqueIdentifier(uid.to_string())),
                RevocationReason(RevocationReasonCode::CessationOfOperation, None),
                None,
            ))?;
            if answer.status != 0 {
                // Not active (never activated, or revoked by an earlier attempt), or no
                // Revoke at all: Destroy decides.
                tracing::debug!(signer = %self.name, "Revoke of {uid}: {}", answer.describe());
            }
        }
        let answer = self.request(RequestPayload::Destroy(Some(UniqueIdentifier(
            uid.to_string(),
        ))))?;
        match self.ok(&format!("Destroy of {uid}"), answer) {
            Ok(_) => Ok(true),
            Err(e) if e.kind == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Removes a half-made key pair (failures are logged only); `false` when the
    /// private half is still there (a server without Destroy). A private key that was
    /// never activated is destroyed without a Revoke, so that one a server will not
    /// destroy is left as it was made, still able to sign once activated.
    fn cleanup(&self, private: &str, public: &str, activated: bool) -> bool {
        let mut private_removed = true;
        for (uid, revoke) in [(private, activated), (public, false)] {
            if let Err(e) = self.revoke_and_destroy(uid, revoke) {
                tracing::warn!(signer = %self.name, "cannot remove half-made key object {uid}: {e}");
                private_removed &= uid != private;
            }
        }
        private_removed
    }

    fn create_request(
        &self,
        kt: KeyType,
        tmp: &str,
        template: EcTemplate,
    ) -> Result<Vec<u8>, SignerError> {
        let private = PrivateKeyTemplateAttribute::unnamed(vec![
            Attribute::Name(format!("{tmp}_priv")),
            Attribute::CryptographicUsageMask(CryptographicUsageMask::Sign),
        ]);
        let public = PublicKeyTemplateAttribute::unnamed(vec![
            Attribute::Name(format!("{tmp}_pub")),
            Attribute::CryptographicUsageMask(CryptographicUsageMask::Verify),
        ]);
        let credential = self.credential()?;
        let ec_common = |bits: i32| {
            vec![
                Attribute(
                    AttributeName("Cryptographic Algorithm".into()),
                    None,
                    AttributeValue::Enumeration(wire::ALG_ECDSA),
                ),
                Attribute::CryptographicLength(bits),
            ]
        };
        let encoded = match (kt, template) {
            (KeyType::Rsa2048, _) => wire::encode_std(
                RequestPayload::CreateKeyPair(
                    Some(CommonTemplateAttribute::unnamed(vec![
                        Attribute::CryptographicAlgorithm(CryptographicAlgorithm::RSA),
                        Attribute::CryptographicLength(2048),
                    ])),
                    Some(private),
                    Some(public),
                ),
                credential.as_ref(),
            ),
            (KeyType::EcP256 | KeyType::EcP384, EcTemplate::DomainParameters) => {
                let (bits, curve) = ec_size(kt);
                wire::encode(
                    Operation::CreateKeyPair,
                    wire::EcCreateKeyPair(
                        wire::EcCommonTemplate(
                            ec_common(bits),
                            wire::DomainParametersAttribute::curve(curve),
                        ),
                        private,
                        public,
                    ),
                    credential.as_ref(),
                )
            }
            (KeyType::EcP256 | KeyType::EcP384, EcTemplate::AlgorithmAndLength) => {
                let (bits, _) = ec_size(kt);
                wire::encode_std(
                    RequestPayload::CreateKeyPair(
                        Some(CommonTemplateAttribute::unnamed(ec_common(bits))),
                        Some(private),
                        Some(public),
                    ),
                    credential.as_ref(),
                )
            }
            (KeyType::Ed25519, _) => {
                return Err(self.err(
                    ErrorKind::Unsupported,
                    "KMIP 1.2 has no Ed25519 (EdDSA) keys",
                ))
            }
        };
        encoded.map_err(|e| self.err(ErrorKind::Backend, e))
    }

    /// Records that the server will not create `kt` key pairs, and why; the error to
    /// answer with.
    fn refuse(&self, kt: KeyType, why: String) -> SignerError {
        tracing::warn!(signer = %self.name, "{kt} is unavailable: {why}");
        lock(&self.algorithms).insert(kt, Err(why.clone()));
        self.err(ErrorKind::Unsupported, why)
    }

    /// Create Key Pair with temporary names, then Get of the public half, whose type
    /// must be `kt`. Returns the new pair.
    ///
    /// EC templates differ between servers: with `Cryptographic Domain Parameters`
    /// (what KMIP 1.2 says names a curve) first, then with only algorithm and length
    /// (servers whose parser fails on the domain parameters); the one that worked is
    /// used from then on. Whatever a server answers to the request (any Result Reason
    /// but failed credentials), or a key of another type than asked, makes `kt`
    /// unavailable on this signer with the server's words, and only `kt`: other key
    /// types are not affected.
    fn create_pair(&self, kt: KeyType, tmp: &str) -> Result<Pair, SignerError> {
        let templates: Vec<EcTemplate> = match (kt, *lock(&self.ec_template)) {
            (KeyType::Rsa2048, _) => vec![EcTemplate::DomainParameters],
            (_, Some(known)) => vec![known],
            (_, None) => vec![EcTemplate::DomainParameters, EcTemplate::AlgorithmAndLength],
        };
        let mut refusals = Vec::new();
        for template in templates {
            let bytes = self.create_request(kt, tmp, template)?;
            let answer = self.call(&bytes)?;
            if answer.status != 0 {
                if matches!(
                    answer.reason,
                    Some(reason::AUTHENTICATION_NOT_SUCCESSFUL | reason::PERMISSION_DENIED)
                ) {
                    return Err(self.kmip_error(&format!("Create Key Pair ({kt})"), &answer));
                }
                refusals.push(format!("{}{}", template.describe(kt), answer.describe()));
                continue;
            }
            let payload = answer.payload.unwrap_or(Item {
                tag: tag::RESPONSE_PAYLOAD,
                value: ttlv::Value::Structure(vec![]),
            });
            let uid = |t: u32, which: &str| {
                payload.text_of(t).map(str::to_string).ok_or_else(|| {
                    self.err(
                        ErrorKind::Protocol,
                        format!(
                            "Create Key Pair ({kt}): the answer has no {which} Unique Identifier"
                        ),
                    )
                })
            };
            let private = uid(tag::PRIVATE_KEY_UNIQUE_IDENTIFIER, "private key")?;
            let public = uid(tag::PUBLIC_KEY_UNIQUE_IDENTIFIER, "public key")?;
            let spki =
                match self.get_public(&public, Some(kt)).and_then(|spki| {
                    match spki_key_type(&spki) {
                        Ok(got) => Ok((spki, got)),
                        Err(m) => {
                            Err(self.err(ErrorKind::Protocol, format!("public key {public}: {m}")))
                        }
                    }
                }) {
                    Ok((spki, got)) if got == kt => spki,
                    Ok((_, got)) => {
                        self.cleanup(&private, &public, false);
                        refusals.push(format!(
                            "{}the server made a {got} key pair",
                            template.describe(kt)
                        ));
                        continue;
                    }
                    Err(e) => {
                        self.cleanup(&private, &public, false);
                        return Err(e);
                    }
                };
            if kt != KeyType::Rsa2048 {
                *lock(&self.ec_template) = Some(template);
            }
            lock(&self.algorithms).insert(kt, Ok(()));
            return Ok(Pair {
                private,
                public,
                spki,
            });
        }
        Err(self.refuse(
            kt,
            format!(
                "{} will not create {kt} key pairs: {}",
                self.server(),
                refusals.join("; ")
            ),
        ))
    }

    /// Activate, then name both halves after the key identifier.
    fn finish_pair(&self, kt: KeyType, pair: &Pair) -> Result<CreatedKey, SignerError> {
        let Pair {
            private,
            public,
            spki,
        } = pair;
        let answer = self.request(RequestPayload::Activate(Some(UniqueIdentifier(
            private.to_string(),
        ))))?;
        self.ok(&format!("Activate of private key {private}"), answer)?;
        let id = KeyIdentifier::from_spki_der(spki)
            .map_err(|m| self.err(ErrorKind::Protocol, format!("public key {public}: {m}")))?;
        for (uid, name) in [
            (private, private_key_name(&id)),
            (public, public_key_name(&id)),
        ] {
            let answer = self.request(RequestPayload::ModifyAttribute(
                Some(UniqueIdentifier(uid.to_string())),
                Attribute::Name(name.clone()),
            ))?;
            self.ok(
                &format!("Modify Attribute (Name = '{name}') of {uid}"),
                answer,
            )?;
        }
        let handles = Handles {
            private: private.to_string(),
            public: public.to_string(),
            key_type: kt,
        };
        let handle = handles.to_text();
        lock(&self.keys).insert(id, handles);
        Ok(CreatedKey {
            id,
            public_key: spki.clone(),
            handle,
        })
    }

    /// Whether the server creates key pairs of type `kt`: learned by making (and
    /// destroying) one the first time it is asked. A probe pair the server will not
    /// destroy is kept and becomes the next key of that type.
    fn ec_supported(&self, kt: KeyType) -> Result<bool, SignerError> {
        if let Some(known) = lock(&self.algorithms).get(&kt) {
            return Ok(known.is_ok());
        }
        let tmp = format!("{PROBE_PREFIX}{}", uuid::Uuid::new_v4().simple());
        match self.create_pair(kt, &tmp) {
            Ok(pair) => {
                if !self.cleanup(&pair.private, &pair.public, false) {
                    lock(&self.spare).insert(kt, pair);
                }
                Ok(true)
            }
            Err(e) if e.kind == ErrorKind::Unsupported => Ok(false),
            Err(e) => Err(e),
        }
    }
}

impl Signer for KmipSigner {
    fn name(&self) -> &str {
        &self.name
    }

    fn info(&self) -> Result<SignerInfo, SignerError> {
        // Connect (and check) if that has not happened yet.
        let (conn, _) = self.checkout(self.deadline())?;
        self.checkin(conn);
        let state = lock(&self.state);
        let facts = state.facts.clone().unwrap_or_default();
        let mut details = vec![
            ("host".to_string(), self.config.host.clone()),
            ("port".to_string(), self.config.port.to_string()),
            (
                "tls_versions_offered".to_string(),
                tls::offered(&self.config)
                    .trim_start_matches("only ")
                    .to_string(),
            ),
        ];
        if let Some((version, suite)) = &state.last_tls {
            details.push(("tls_version".into(), version.clone()));
            details.push(("tls_cipher_suite".into(), suite.clone()));
        }
        if let Some(v) = &facts.vendor {
            details.push(("vendor".into(), v.clone()));
        }
        details.push(("kmip_versions".into(), self.versions_text(&facts.versions)));
        let ops: Vec<String> = facts
            .operations
            .iter()
            .map(|o| wire::operation_name(*o))
            .collect();
        details.push(("operations".into(), ops.join(", ")));
        if !facts.missing.is_empty() {
            details.push(("missing_operations_forced".into(), facts.missing.join(", ")));
        }
        if self.config.insecure {
            details.push(("insecure".into(), "true".into()));
        }
        Ok(SignerInfo {
            name: self.name.clone(),
            signer_type: "KMIP".into(),
            details,
        })
    }

    fn supports(&self, alg: Algorithm) -> Result<bool, SignerError> {
        match alg.key_type() {
            KeyType::Rsa2048 => {
                self.facts()?;
                Ok(!matches!(
                    lock(&self.algorithms).get(&KeyType::Rsa2048),
                    Some(Err(_))
                ))
            }
            KeyType::Ed25519 => Ok(false),
            kt => self.ec_supported(kt),
        }
    }

    fn create_key(&self, alg: Algorithm) -> Result<CreatedKey, SignerError> {
        let kt = alg.key_type();
        if kt == KeyType::Ed25519 {
            return Err(self.err(
                ErrorKind::Unsupported,
                format!("{alg}: KMIP 1.2 has no Ed25519 (EdDSA) keys"),
            ));
        }
        let spare = lock(&self.spare).remove(&kt);
        let pair = match spare {
            Some(pair) => pair,
            None => {
                let tmp = format!("{PENDING_PREFIX}{}", uuid::Uuid::new_v4().simple());
                self.create_pair(kt, &tmp)?
            }
        };
        match self.finish_pair(kt, &pair) {
            Ok(created) => Ok(created),
            Err(e) => {
                self.cleanup(&pair.private, &pair.public, true);
                Err(e)
            }
        }
    }

    fn public_key(&self, key: &KeyIdentifier) -> Result<Vec<u8>, SignerError> {
        let h = self.handles(key)?;
        match self.get_public(&h.public, Some(h.key_type)) {
            Err(e) if e.kind == ErrorKind::NotFound => {
                lock(&self.keys).remove(key);
                Err(SignerError::key_not_found(&self.name, key))
            }
            other => other,
        }
    }

    fn sign(
        &self,
        key: &KeyIdentifier,
        alg: Algorithm,
        data: &[u8],
    ) -> Result<Vec<u8>, SignerError> {
        let h = self.handles(key)?;
        if h.key_type != alg.key_type() {
            return Err(SignerError::invalid_input(format!(
                "signer '{}': key {key} is a {} key, {alg} needs a {} key",
                self.name,
                h.key_type,
                alg.key_type()
            )));
        }
        // Every Sign names the algorithm, the padding (RSA) and the hash: some servers
        // need the Cryptographic Algorithm, others the Digital Signature Algorithm.
        let params = match alg {
            Algorithm::Rsa2048Pkcs1Sha256 => wire::SignParameters {
                padding_method: Some(PaddingMethod::PKCS1_v1_5),
                hashing_algorithm: HashingAlgorithm::SHA256,
                digital_signature_algorithm: Some(
                    DigitalSignatureAlgorithm::SHA256WithRSAEncryption_PKCS1_v1_5,
                ),
                cryptographic_algorithm: wire::AlgorithmCode(wire::ALG_RSA),
            },
            Algorithm::Rsa2048PssSha256 => wire::SignParameters {
                padding_method: Some(PaddingMethod::PSS),
                hashing_algorithm: HashingAlgorithm::SHA256,
                digital_signature_algorithm: None,
                cryptographic_algorithm: wire::AlgorithmCode(wire::ALG_RSA),
            },
            Algorithm::EcdsaP256Sha256 => wire::SignParameters {
                padding_method: None,
                hashing_algorithm: HashingAlgorithm::SHA256,
                digital_signature_algorithm: Some(DigitalSignatureAlgorithm::ECDSAWithSHA256),
                cryptographic_algorithm: wire::AlgorithmCode(wire::ALG_ECDSA),
            },
            Algorithm::EcdsaP384Sha384 => wire::SignParameters {
                padding_method: None,
                hashing_algorithm: HashingAlgorithm::SHA384,
                digital_signature_algorithm: Some(DigitalSignatureAlgorithm::ECDSAWithSHA384),
                cryptographic_algorithm: wire::AlgorithmCode(wire::ALG_ECDSA),
            },
            Algorithm::Ed25519 => {
                return Err(self.err(ErrorKind::Unsupported, "KMIP 1.2 has no Ed25519"))
            }
        };
        let bytes = wire::encode(
            Operation::Sign,
            wire::SignPayload(
                UniqueIdentifier(h.private.clone()),
                params,
                Data(data.to_vec()),
            ),
            self.credential()?.as_ref(),
        )
        .map_err(|e| self.err(ErrorKind::Backend, e))?;
        let answer = self.call(&bytes)?;
        let payload = match self.ok(&format!("Sign ({alg}) with key {key}"), answer) {
            Ok(p) => p,
            Err(e) if e.kind == ErrorKind::NotFound => {
                lock(&self.keys).remove(key);
                return Err(SignerError::key_not_found(&self.name, key));
            }
            Err(e) => return Err(e),
        };
        let sig = payload.bytes_of(tag::SIGNATURE_DATA).ok_or_else(|| {
            self.err(
                ErrorKind::Protocol,
                "Sign: the answer has no Signature Data",
            )
        })?;
        match alg {
            Algorithm::EcdsaP256Sha256 | Algorithm::EcdsaP384Sha384 => ecdsa_raw_to_der(sig)
                .map_err(|e| self.err(ErrorKind::Protocol, format!("Sign: {}", e.message))),
            _ if sig.is_empty() => Err(self.err(ErrorKind::Protocol, "Sign: empty signature")),
            _ => Ok(sig.to_vec()),
        }
    }

    fn destroy_key(&self, key: &KeyIdentifier) -> Result<(), SignerError> {
        let h = self.handles(key)?;
        lock(&self.keys).remove(key);
        let mut destroyed = self.revoke_and_destroy(&h.private, true)?;
        // Public halves are never activated; a server that wants them revoked first gets
        // a Revoke on the second try.
        destroyed |= match self.revoke_and_destroy(&h.public, false) {
            Ok(d) => d,
            Err(e) if e.kind != ErrorKind::Unavailable => {
                self.revoke_and_destroy(&h.public, true)?
            }
            Err(e) => return Err(e),
        };
        if destroyed {
            Ok(())
        } else {
            Err(SignerError::key_not_found(&self.name, key))
        }
    }

    fn random(&self, len: usize) -> Result<Vec<u8>, SignerError> {
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            let want = (len - out.len()).min(RANDOM_CHUNK);
            let answer = self.request(RequestPayload::RNGRetrieve(DataLength(want as i32)))?;
            if answer.status != 0 {
                if matches!(
                    answer.reason,
                    Some(reason::OPERATION_NOT_SUPPORTED | reason::INVALID_MESSAGE)
                ) {
                    return Err(self.err(
                        ErrorKind::Unsupported,
                        format!(
                            "{} has no RNG Retrieve: it answered {}",
                            self.server(),
                            answer.describe()
                        ),
                    ));
                }
                return Err(self.kmip_error("RNG Retrieve", &answer));
            }
            let data = answer
                .payload
                .as_ref()
                .and_then(|p| p.bytes_of(tag::DATA))
                .unwrap_or_default();
            if data.is_empty() || data.len() > want {
                return Err(self.err(
                    ErrorKind::Backend,
                    format!("RNG Retrieve of {want} bytes answered {} bytes", data.len()),
                ));
            }
            out.extend_from_slice(data);
        }
        Ok(out)
    }

    fn is_pending(&self, key: &KeyIdentifier) -> bool {
        lock(&self.pending).contains(key)
    }

    fn list_keys(&self) -> Result<Vec<KeyIdentifier>, SignerError> {
        if !self.facts()?.offers(wire::op::LOCATE) {
            return Err(self.err(
                ErrorKind::Unsupported,
                format!(
                    "listing the keys is unavailable: {} does not offer Locate",
                    self.server()
                ),
            ));
        }
        // Every private key whose Name is "<40 hex>_priv" is one of ours. KMIP 1.2 Locate
        // matches names exactly, so list the public keys and look for their private halves.
        let answer = self.request(RequestPayload::Locate(vec![Attribute::ObjectType(
            ObjectType::PublicKey,
        )]))?;
        let publics: Vec<String> = match self.ok("Locate of public keys", answer) {
            Ok(p) => p
                .all(tag::UNIQUE_IDENTIFIER)
                .filter_map(Item::as_text)
                .map(str::to_string)
                .collect(),
            Err(e) if e.kind == ErrorKind::NotFound => vec![],
            Err(e) => return Err(e),
        };
        let mut keys = Vec::new();
        let mut pending = Vec::new();
        for uid in publics {
            let spki = match self.get_public(&uid, None) {
                Ok(s) => s,
                Err(e) if matches!(e.kind, ErrorKind::NotFound | ErrorKind::Backend) => continue,
                Err(e) => return Err(e),
            };
            let Ok(id) = KeyIdentifier::from_spki_der(&spki) else {
                continue;
            };
            if keys.contains(&id) {
                continue;
            }
            if !self
                .locate(&private_key_name(&id), ObjectType::PrivateKey)?
                .is_empty()
            {
                keys.push(id);
            } else if let Some(private) = self.pending_private(&uid)? {
                tracing::warn!(
                    signer = %self.name,
                    "key pair {id} is pending (private key {private}, public key {uid}): a \
                     create-key was interrupted before naming it; destroy removes it"
                );
                if let Ok(key_type) = spki_key_type(&spki) {
                    lock(&self.keys).insert(
                        id,
                        Handles {
                            private,
                            public: uid,
                            key_type,
                        },
                    );
                }
                keys.push(id);
                pending.push(id);
            }
        }
        *lock(&self.pending) = pending;
        keys.sort();
        Ok(keys)
    }

    fn recall(&self, key: &KeyIdentifier, handle: &str) {
        // Key maps written before handles were recorded hold the identifier: Locate.
        if let Some(h) = Handles::from_text(handle) {
            lock(&self.keys).insert(*key, h);
        }
    }

    fn unavailable(&self) -> Vec<(KeyType, String)> {
        let mut out: Vec<(KeyType, String)> = lock(&self.algorithms)
            .iter()
            .filter_map(|(kt, r)| r.as_ref().err().map(|why| (*kt, why.clone())))
            .collect();
        out.sort_by_key(|(kt, _)| kt.to_string());
        out
    }
}

// ---- Public keys ----------------------------------------------------------------------

/// Reads a public key from a Get payload into a DER SubjectPublicKeyInfo.
///
/// Accepted, as servers send them: X.509 (an SPKI); PKCS#1 (RSAPublicKey); Raw holding
/// either a DER SPKI (the seed-003 relay, our relay by default) or a bare EC point;
/// Transparent RSA Public Key; Transparent ECDSA Public Key (0x0F, KMIP 1.x) and
/// Transparent EC Public Key (0x15, Cosmian), which carry the same fields. A bare
/// point's curve comes from a Recommended Curve, else `curve`, else its length.
fn read_public_key(payload: &Item, curve: Option<KeyType>) -> Result<Vec<u8>, String> {
    let object = payload
        .child(tag::PUBLIC_KEY)
        .ok_or("the answer holds no Public Key object")?;
    let block = object
        .child(tag::KEY_BLOCK)
        .ok_or("the Public Key has no Key Block")?;
    let format = block
        .enum_of(tag::KEY_FORMAT_TYPE)
        .ok_or("the Key Block has no Key Format Type")?;
    let value = block
        .child(tag::KEY_VALUE)
        .ok_or("the Key Block has no Key Value")?;
    // Key Value is a structure holding Key Material (or, wrapped, a byte string).
    let material = match value.child(tag::KEY_MATERIAL) {
        Some(m) => m,
        None => value,
    };
    const RAW: u32 = 0x01;
    const PKCS1: u32 = 0x03;
    const X509: u32 = 0x05;
    const TRANSPARENT_RSA_PUBLIC: u32 = 0x0B;
    const TRANSPARENT_ECDSA_PUBLIC: u32 = 0x0F;
    const TRANSPARENT_EC_PUBLIC: u32 = 0x15;
    let raw_spki = (format == RAW)
        .then(|| material.as_bytes())
        .flatten()
        .filter(|b| spki::SubjectPublicKeyInfoRef::try_from(*b).is_ok());
    let spki = match format {
        RAW if raw_spki.is_some() => raw_spki.unwrap_or_default().to_vec(),
        X509 => material
            .as_bytes()
            .ok_or("X.509 key material is not a byte string")?
            .to_vec(),
        PKCS1 => {
            let der = material
                .as_bytes()
                .ok_or("PKCS#1 key material is not a byte string")?;
            let (n, e) =
                rsa_public_key_parts(der).ok_or("PKCS#1 key material is not an RSAPublicKey")?;
            rsa_spki_der(n, e)
        }
        TRANSPARENT_RSA_PUBLIC => {
            let n = material
                .bytes_of(tag::MODULUS)
                .ok_or("transparent RSA key without Modulus")?;
            let e = material
                .bytes_of(tag::PUBLIC_EXPONENT)
                .ok_or("transparent RSA key without Public Exponent")?;
            rsa_spki_der(n, e)
        }
        TRANSPARENT_ECDSA_PUBLIC | TRANSPARENT_EC_PUBLIC | RAW => {
            let point = if format == RAW {
                material
                    .as_bytes()
                    .ok_or("raw key material is not a byte string")?
            } else {
                material
                    .bytes_of(tag::Q_STRING)
                    .ok_or("transparent EC key without Q String")?
            };
            let named = match material.enum_of(tag::RECOMMENDED_CURVE) {
                Some(wire::CURVE_P256) => Some(KeyType::EcP256),
                Some(wire::CURVE_P384) => Some(KeyType::EcP384),
                Some(other) => return Err(format!("recommended curve {other:#x} is not handled")),
                None => None,
            };
            let kt = named
                .or(curve)
                .or(match point.len() {
                    65 => Some(KeyType::EcP256),
                    97 => Some(KeyType::EcP384),
                    _ => None,
                })
                .ok_or("an EC point without a curve")?;
            ec_spki_der(kt, point).map_err(|e| e.message)?
        }
        other => return Err(format!("key format type {other:#x} is not handled")),
    };
    KeyIdentifier::from_spki_der(&spki)?;
    Ok(spki)
}

/// The key type of a SubjectPublicKeyInfo.
fn spki_key_type(spki: &[u8]) -> Result<KeyType, String> {
    use spki::der::asn1::ObjectIdentifier as Oid;
    use spki::SubjectPublicKeyInfoRef;
    const RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.1");
    const EC: Oid = Oid::new_unwrap("1.2.840.10045.2.1");
    const P256: Oid = Oid::new_unwrap("1.2.840.10045.3.1.7");
    const P384: Oid = Oid::new_unwrap("1.3.132.0.34");
    let info = SubjectPublicKeyInfoRef::try_from(spki)
        .map_err(|e| format!("not a DER SubjectPublicKeyInfo: {e}"))?;
    if info.algorithm.oid == RSA {
        let bits = info
            .subject_public_key
            .as_bytes()
            .and_then(rsa_public_key_parts)
            .map(|(n, _)| {
                let n = &n[n.iter().position(|b| *b != 0).unwrap_or(n.len())..];
                n.len() * 8
            })
            .unwrap_or(0);
        return if bits == 2048 {
            Ok(KeyType::Rsa2048)
        } else {
            Err(format!(
                "an RSA key of {bits} bits (only RSA-2048 is handled)"
            ))
        };
    }
    if info.algorithm.oid == EC {
        return match info.algorithm.parameters_oid() {
            Ok(c) if c == P256 => Ok(KeyType::EcP256),
            Ok(c) if c == P384 => Ok(KeyType::EcP384),
            Ok(c) => Err(format!(
                "an EC key on curve {c} (only P-256 and P-384 are handled)"
            )),
            Err(e) => Err(format!("an EC key without a named curve: {e}")),
        };
    }
    Err(format!(
        "a key of algorithm {} (not handled)",
        info.algorithm.oid
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ttlv::Value;

    fn leaf(tag: u32, value: Value) -> Item {
        Item { tag, value }
    }

    fn get_payload(format: u32, material: Item) -> Item {
        leaf(
            tag::RESPONSE_PAYLOAD,
            Value::Structure(vec![leaf(
                tag::PUBLIC_KEY,
                Value::Structure(vec![leaf(
                    tag::KEY_BLOCK,
                    Value::Structure(vec![
                        leaf(tag::KEY_FORMAT_TYPE, Value::Enumeration(format)),
                        leaf(tag::KEY_VALUE, Value::Structure(vec![material])),
                    ]),
                )]),
            )]),
        )
    }

    fn rsa_spki() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let mut n = vec![0xC5u8; 256];
        n[255] = 0x01;
        let e = vec![0x01, 0x00, 0x01];
        (rsa_spki_der(&n, &e), n, e)
    }

    #[test]
    fn public_keys_are_read_in_every_format_servers_send() {
        let (spki, n, e) = rsa_spki();
        let x509 = get_payload(0x05, leaf(tag::KEY_MATERIAL, Value::Bytes(spki.clone())));
        assert_eq!(read_public_key(&x509, None).unwrap(), spki);
        // PKCS#1 is the BIT STRING contents of the SPKI.
        let info = spki::SubjectPublicKeyInfoRef::try_from(spki.as_slice()).unwrap();
        let pkcs1 = info.subject_public_key.as_bytes().unwrap().to_vec();
        let p1 = get_payload(0x03, leaf(tag::KEY_MATERIAL, Value::Bytes(pkcs1)));
        assert_eq!(read_public_key(&p1, None).unwrap(), spki);
        let transparent = get_payload(
            0x0B,
            leaf(
                tag::KEY_MATERIAL,
                Value::Structure(vec![
                    leaf(tag::MODULUS, Value::BigInteger([vec![0u8; 8], n].concat())),
                    leaf(
                        tag::PUBLIC_EXPONENT,
                        Value::BigInteger([vec![0u8; 5], e].concat()),
                    ),
                ]),
            ),
        );
        assert_eq!(read_public_key(&transparent, None).unwrap(), spki);
        assert_eq!(spki_key_type(&spki).unwrap(), KeyType::Rsa2048);
        // Garbage is an error, never a panic.
        let bad = get_payload(
            0x03,
            leaf(tag::KEY_MATERIAL, Value::Bytes(vec![0x30, 0x84, 0xff])),
        );
        assert!(read_public_key(&bad, None).is_err());
        let unknown = get_payload(0x02, leaf(tag::KEY_MATERIAL, Value::Bytes(vec![1])));
        assert!(read_public_key(&unknown, None).unwrap_err().contains("0x2"));
    }

    #[test]
    fn ec_points_become_spki_with_their_curve() {
        let p = aws_lc_rs::signature::EcdsaKeyPair::generate(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        )
        .unwrap();
        use aws_lc_rs::signature::KeyPair;
        let point = p.public_key().as_ref().to_vec();
        let t = get_payload(
            0x0F,
            leaf(
                tag::KEY_MATERIAL,
                Value::Structure(vec![
                    leaf(tag::RECOMMENDED_CURVE, Value::Enumeration(wire::CURVE_P256)),
                    leaf(tag::Q_STRING, Value::Bytes(point.clone())),
                ]),
            ),
        );
        let spki = read_public_key(&t, None).unwrap();
        assert_eq!(spki_key_type(&spki).unwrap(), KeyType::EcP256);
        let raw = get_payload(0x01, leaf(tag::KEY_MATERIAL, Value::Bytes(point)));
        assert_eq!(read_public_key(&raw, Some(KeyType::EcP256)).unwrap(), spki);
    }

    #[rstest::rstest]
    #[case::raw_spki(0x01, true)]
    #[case::raw_point(0x01, false)]
    #[case::transparent_ecdsa(0x0F, false)]
    #[case::transparent_ec(0x15, false)]
    #[case::x509(0x05, true)]
    fn ec_public_keys_are_read_as_every_server_sends_them(
        #[case] format: u32,
        #[case] as_spki: bool,
    ) {
        use aws_lc_rs::signature::KeyPair;
        let p = aws_lc_rs::signature::EcdsaKeyPair::generate(
            &aws_lc_rs::signature::ECDSA_P384_SHA384_ASN1_SIGNING,
        )
        .unwrap();
        let point = p.public_key().as_ref().to_vec();
        let spki = ec_spki_der(KeyType::EcP384, &point).unwrap();
        let material = if as_spki {
            leaf(tag::KEY_MATERIAL, Value::Bytes(spki.clone()))
        } else if format == 0x01 {
            leaf(tag::KEY_MATERIAL, Value::Bytes(point))
        } else {
            leaf(
                tag::KEY_MATERIAL,
                Value::Structure(vec![
                    leaf(tag::RECOMMENDED_CURVE, Value::Enumeration(wire::CURVE_P384)),
                    leaf(tag::Q_STRING, Value::Bytes(point)),
                ]),
            )
        };
        // No curve hint: a bare point is read by its length, the rest carry theirs.
        let got = read_public_key(&get_payload(format, material), None).unwrap();
        assert_eq!(got, spki);
        assert_eq!(spki_key_type(&got).unwrap(), KeyType::EcP384);
    }

    #[test]
    fn handles_survive_the_key_map_and_old_handles_are_ignored() {
        let h = Handles {
            private: "9f1c-priv \"odd\" id".into(),
            public: "AB12_pub".into(),
            key_type: KeyType::EcP256,
        };
        assert_eq!(Handles::from_text(&h.to_text()), Some(h));
        let id: KeyIdentifier = "00112233445566778899aabbccddeeff00112233".parse().unwrap();
        let s = KmipSigner::new("k", &KmipConfig::new("127.0.0.1", 1));
        s.recall(&id, &id.to_string());
        assert!(
            lock(&s.keys).is_empty(),
            "a hex identifier is not a KMIP handle"
        );
    }

    /// Against PyKMIP: a pair under its temporary names, as a `create-key` killed
    /// between Create Key Pair and Modify Attribute leaves it, is an orphan in another
    /// process's `list --orphans`, and `destroy` removes both halves. Fails on the code
    /// before issue 11: the pair was not listed, and destroy answered not-found.
    #[test]
    fn a_pending_pair_is_an_orphan_and_destroy_removes_it() {
        use testkit::pykmip::{PyKmip, Tls};
        let pki = testkit::pki::Pki::new();
        let server = PyKmip::start(&pki, Tls::V12);
        let state = tempfile::tempdir().unwrap();
        let text = format!(
            "[[signers]]\ntype = \"KMIP\"\nname = \"pykmip\"\nhost = \"127.0.0.1\"\n\
             port = {}\nserver_ca_cert_path = \"{}\"\nclient_cert_path = \"{}\"\n\
             client_cert_private_key_path = \"{}\"\nweaken_security_allow_tls12 = true\n\
             force = true\n",
            server.port(),
            pki.ca_cert.display(),
            pki.client_cert.display(),
            pki.client_key.display()
        );
        let setup = crate::SignerSetup::parse(&text, "test").unwrap();
        let crate::config::SignerKind::Kmip(config) = &setup.signers[0].kind else {
            panic!("not KMIP")
        };
        // The killed process: Create Key Pair under temporary names, nothing after.
        let killed = KmipSigner::new("pykmip", config);
        let tmp = format!("{PENDING_PREFIX}{}", uuid::Uuid::new_v4().simple());
        let pair = killed.create_pair(KeyType::Rsa2048, &tmp).unwrap();
        let id = KeyIdentifier::from_spki_der(&pair.spki).unwrap();
        drop(killed);

        let router = crate::Router::new(&setup, state.path()).unwrap();
        let orphans_of = |router: &crate::Router| -> Vec<KeyIdentifier> {
            router
                .orphans()
                .into_iter()
                .find(|(name, _)| name == "pykmip")
                .expect("an orphans entry for the KMIP signer")
                .1
                .expect("listed")
        };
        assert_eq!(orphans_of(&router), vec![id]);
        let with_state: Vec<(KeyIdentifier, bool)> = router
            .orphans_with_state()
            .into_iter()
            .find(|(name, _)| name == "pykmip")
            .expect("an orphans entry for the KMIP signer")
            .1
            .expect("listed");
        assert_eq!(
            with_state,
            vec![(id, true)],
            "the pair is said to be pending"
        );
        drop(router);
        // `destroy` in yet another process, which has no handle recorded.
        let router = crate::Router::new(&setup, state.path()).unwrap();
        router.destroy_key(&id).unwrap();
        assert!(orphans_of(&router).is_empty());
        let check = KmipSigner::new("pykmip", config);
        for (name, t) in [
            (format!("{tmp}_priv"), ObjectType::PrivateKey),
            (format!("{tmp}_pub"), ObjectType::PublicKey),
        ] {
            assert_eq!(
                check.locate(&name, t).unwrap(),
                Vec::<String>::new(),
                "{name}"
            );
        }
        let e = router.destroy_key(&id).unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
    }

    #[test]
    fn names_carry_the_key_identifier() {
        let id: KeyIdentifier = "00112233445566778899aabbccddeeff00112233".parse().unwrap();
        assert_eq!(
            private_key_name(&id),
            "00112233445566778899aabbccddeeff00112233_priv"
        );
        assert_eq!(
            public_key_name(&id),
            "00112233445566778899aabbccddeeff00112233_pub"
        );
    }

    #[test]
    fn new_touches_nothing_and_unreachable_is_transient() {
        let mut c = KmipConfig::new("127.0.0.1", 1);
        c.connect_timeout = std::time::Duration::from_secs(1);
        let s = KmipSigner::new("k", &c);
        let e = s.random(8).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unavailable, "{e}");
        assert!(e.is_transient());
        // Not latched: the next call tries again.
        assert_eq!(s.random(8).unwrap_err().kind, ErrorKind::Unavailable);
    }
}
