//! A minimal KMIP 1.2 client of the oracle's own, for one question: which key pairs
//! does this server hold?
//!
//! [`inventory`] answers it over one TLS connection: Locate every public key (Object
//! Type = Public Key), Get each without a Key Format Type and compute its key
//! identifier from the key itself, then count the key only if a private key named
//! `<key id>_priv` exists (Locate by Name and Object Type = Private Key), the name the
//! signers give a key's private half. KMIP 1.2's Locate matches names exactly, hence
//! the public keys first.
//!
//! The answer is what the signers' own listing is meant to be, computed without their
//! code: a public key that is gone between Locate and Get (Item or Object Not Found) or
//! whose Get fails for another reason than credentials or an unsupported operation is
//! skipped; a key read twice is counted once. Refused, as a [`KmipError`]: a server
//! that cannot be reached or refuses the TLS handshake, refuses Locate, or answers a
//! Get with a public key this module cannot read (see [`key_block`]).
//!
//! [`query_operations`] asks a server which operations it supports (Query with Query
//! Function Query Operations), over the same kind of connection. [`server`] asks what
//! a server says about itself (TLS, versions, vendor, RNG Retrieve), and [`objects`]
//! what it holds object by object, and destroys objects: the harness's own view of a
//! KMIP server it does not own. A [`Session`] is one such connection, for callers that
//! ask many questions.

mod key_block;
pub mod message;
pub mod objects;
pub mod server;
mod tls;
pub mod ttlv;

use std::fmt;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};

use crate::keyid::KeyId;
pub use message::Credential;
use message::{object_type, operation, reason, tag, Answer, MAX_RESPONSE};
use ttlv::Item;

pub use key_block::public_key_spki;

/// A client certificate and its private key, both PEM files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientIdentity {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Where a KMIP server is and how to reach it.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// A DNS name or IP address; the server certificate must name it.
    pub host: String,
    pub port: u16,
    /// PEM certificate(s) of the CA that issued the server's certificate.
    pub server_ca: PathBuf,
    /// Presented when the server asks for a client certificate.
    pub identity: Option<ClientIdentity>,
    /// Sent in every request header when present.
    pub credential: Option<Credential>,
    /// For the TCP connect and for each read and write.
    pub timeout: Duration,
}

impl Endpoint {
    /// An endpoint with no client certificate, no credential and a 30-second timeout.
    pub fn new(host: impl Into<String>, port: u16, server_ca: impl Into<PathBuf>) -> Endpoint {
        Endpoint {
            host: host.into(),
            port,
            server_ca: server_ca.into(),
            identity: None,
            credential: None,
            timeout: Duration::from_secs(30),
        }
    }

    /// `host:port`.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// Why the inventory could not be taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KmipError {
    /// The endpoint's files or settings are unusable.
    Config(String),
    /// No connection: TCP, TLS or I/O failed.
    Connection(String),
    /// The server's bytes are not a KMIP answer the inventory can read.
    Protocol(String),
    /// The server refused a request the inventory needs.
    Refused(String),
}

impl fmt::Display for KmipError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KmipError::Config(m) => write!(f, "KMIP inventory configuration: {m}"),
            KmipError::Connection(m) => write!(f, "KMIP inventory connection: {m}"),
            KmipError::Protocol(m) => write!(f, "KMIP inventory: unreadable answer: {m}"),
            KmipError::Refused(m) => write!(f, "KMIP inventory: {m}"),
        }
    }
}

impl KmipError {
    /// What went wrong, without the kind: for messages that say the kind themselves.
    pub fn detail(&self) -> &str {
        match self {
            KmipError::Config(m)
            | KmipError::Connection(m)
            | KmipError::Protocol(m)
            | KmipError::Refused(m) => m,
        }
    }
}

impl std::error::Error for KmipError {}

/// The key identifiers, sorted, of the key pairs the server at `endpoint` holds.
pub fn inventory(endpoint: &Endpoint) -> Result<Vec<KeyId>, KmipError> {
    let mut session = Session::open(endpoint)?;
    let publics = session.locate(vec![message::object_type_attribute(
        object_type::PUBLIC_KEY,
    )])?;
    let mut keys: Vec<KeyId> = Vec::new();
    for uid in publics {
        let Some(spki) = session.get_public_key(&uid)? else {
            continue;
        };
        let id = KeyId::of_spki(&spki)
            .map_err(|e| KmipError::Protocol(format!("public key {uid}: {e}")))?;
        if keys.contains(&id) {
            continue;
        }
        let private = session.locate(vec![
            message::name_attribute(&format!("{id}_priv")),
            message::object_type_attribute(object_type::PRIVATE_KEY),
        ])?;
        if !private.is_empty() {
            keys.push(id);
        }
    }
    session.close();
    keys.sort();
    Ok(keys)
}

/// The KMIP 1.2 name of an Operation enumeration value (KMIP 1.2, 9.1.3.2.27), or
/// `None` for a value 1.2 does not define. The oracle's own table: a server's Query is
/// judged by it, not by the product's.
pub fn operation_name(code: u32) -> Option<&'static str> {
    const NAMES: [&str; 0x29] = [
        "Create",
        "Create Key Pair",
        "Register",
        "Re-key",
        "Derive Key",
        "Certify",
        "Re-certify",
        "Locate",
        "Check",
        "Get",
        "Get Attributes",
        "Get Attribute List",
        "Add Attribute",
        "Modify Attribute",
        "Delete Attribute",
        "Obtain Lease",
        "Get Usage Allocation",
        "Activate",
        "Revoke",
        "Destroy",
        "Archive",
        "Recover",
        "Validate",
        "Query",
        "Cancel",
        "Poll",
        "Notify",
        "Put",
        "Re-key Key Pair",
        "Discover Versions",
        "Encrypt",
        "Decrypt",
        "Sign",
        "Signature Verify",
        "MAC",
        "MAC Verify",
        "RNG Retrieve",
        "RNG Seed",
        "Hash",
        "Create Split Key",
        "Join Split Key",
    ];
    let index = usize::try_from(code).ok()?.checked_sub(1)?;
    NAMES.get(index).copied()
}

/// The Operation values (KMIP 1.2 section 9.1.3.2.27: 0x01 Create, 0x08 Locate, 0x0A
/// Get, 0x18 Query, ...) the server at `endpoint` says it supports, in its order, as
/// its answer to Query with Query Function Query Operations.
///
/// Refused, as a [`KmipError`]: no connection or TLS handshake, a refused Query
/// ([`KmipError::Refused`], with the server's status, reason and message), an answer
/// that is not a Query response ([`KmipError::Protocol`]).
pub fn query_operations(endpoint: &Endpoint) -> Result<Vec<u32>, KmipError> {
    let mut session = Session::open(endpoint)?;
    let answer = session.call(
        operation::QUERY,
        vec![message::query_function(
            message::query_function::QUERY_OPERATIONS,
        )],
    )?;
    session.close();
    operations_of(&answer, &endpoint.address())
}

/// The Object Type values (KMIP 1.2 section 9.1.3.2.12: 0x03 Public Key, 0x04 Private
/// Key, ...) the server at `endpoint` says it supports, in its order, as its answer to
/// Query with Query Function Query Objects. An empty list is what the server said: some
/// servers answer Query Objects with no Object Type at all.
///
/// Refused as [`query_operations`] is.
pub fn query_objects(endpoint: &Endpoint) -> Result<Vec<u32>, KmipError> {
    let mut session = Session::open(endpoint)?;
    let answer = session.call(
        operation::QUERY,
        vec![message::query_function(
            message::query_function::QUERY_OBJECTS,
        )],
    )?;
    session.close();
    if answer.status != 0 {
        return Err(KmipError::Refused(format!(
            "Query: {} answered {}",
            endpoint.address(),
            answer.describe()
        )));
    }
    match &answer.payload {
        Some(payload) => message::object_types(payload).map_err(KmipError::Protocol),
        None => Ok(vec![]),
    }
}

/// The name of a KMIP 1.2 Object Type value, if it is one.
pub fn object_type_name(code: u32) -> Option<&'static str> {
    const NAMES: [&str; 8] = [
        "Certificate",
        "Symmetric Key",
        "Public Key",
        "Private Key",
        "Split Key",
        "Template",
        "Secret Data",
        "Opaque Object",
    ];
    let index = usize::try_from(code).ok()?.checked_sub(1)?;
    NAMES.get(index).copied()
}

/// The operations a Query Operations answer lists.
fn operations_of(answer: &Answer, address: &str) -> Result<Vec<u32>, KmipError> {
    if answer.status != 0 {
        return Err(KmipError::Refused(format!(
            "Query: {address} answered {}",
            answer.describe()
        )));
    }
    match &answer.payload {
        Some(payload) => message::operations(payload).map_err(KmipError::Protocol),
        None => Ok(vec![]),
    }
}

/// One TLS connection to the server (TLS 1.3 and 1.2 offered), on which requests go
/// one at a time.
pub struct Session<'a> {
    endpoint: &'a Endpoint,
    stream: StreamOwned<ClientConnection, TcpStream>,
}

impl<'a> Session<'a> {
    /// Connects over TCP; the TLS handshake happens on the first request or
    /// [`Session::handshake`].
    pub fn open(endpoint: &'a Endpoint) -> Result<Session<'a>, KmipError> {
        let config = tls::client_config(&endpoint.server_ca, endpoint.identity.as_ref())?;
        let name = ServerName::try_from(endpoint.host.clone()).map_err(|e| {
            KmipError::Config(format!(
                "host '{}' is not a DNS name or IP address: {e}",
                endpoint.host
            ))
        })?;
        let addresses = (endpoint.host.as_str(), endpoint.port)
            .to_socket_addrs()
            .map_err(|e| KmipError::Connection(format!("resolving {}: {e}", endpoint.address())))?;
        let mut last = format!("{} resolves to no address", endpoint.host);
        let mut tcp = None;
        for a in addresses {
            match TcpStream::connect_timeout(&a, endpoint.timeout) {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = format!("connecting to {a}: {e}"),
            }
        }
        let tcp = tcp.ok_or(KmipError::Connection(last))?;
        let io = |e: std::io::Error| KmipError::Connection(e.to_string());
        tcp.set_read_timeout(Some(endpoint.timeout)).map_err(io)?;
        tcp.set_write_timeout(Some(endpoint.timeout)).map_err(io)?;
        tcp.set_nodelay(true).map_err(io)?;
        let conn = ClientConnection::new(config, name)
            .map_err(|e| KmipError::Config(format!("TLS client: {e}")))?;
        Ok(Session {
            endpoint,
            stream: StreamOwned::new(conn, tcp),
        })
    }

    /// Completes the TLS handshake without sending a request. Refused as
    /// [`KmipError::Connection`], with the TLS error (an alert the server sent, a
    /// certificate that does not verify).
    pub fn handshake(&mut self) -> Result<(), KmipError> {
        while self.stream.conn.is_handshaking() {
            self.stream
                .conn
                .complete_io(&mut self.stream.sock)
                .map_err(|e| {
                    KmipError::Connection(format!(
                        "TLS handshake with {}: {e}",
                        self.endpoint.address()
                    ))
                })?;
        }
        Ok(())
    }

    /// The TLS version and cipher suite negotiated, once the handshake is done.
    pub fn negotiated(&self) -> Option<server::TlsFacts> {
        let conn = &self.stream.conn;
        if conn.is_handshaking() {
            return None;
        }
        Some(server::TlsFacts::of(
            conn.protocol_version()?,
            conn.negotiated_cipher_suite()?.suite(),
        ))
    }

    /// Sends one request and reads its answer, successful or not.
    pub fn call(&mut self, op: u32, payload: Vec<Item>) -> Result<Answer, KmipError> {
        let request = message::request(op, payload, self.endpoint.credential.as_ref()).encode();
        let address = self.endpoint.address();
        let io =
            |what: &str, e: std::io::Error| KmipError::Connection(format!("{what} {address}: {e}"));
        // The TLS handshake happens on the first write; its failures show up here.
        self.stream
            .write_all(&request)
            .and_then(|()| self.stream.flush())
            .map_err(|e| io("sending to", e))?;
        let mut header = [0u8; 8];
        self.stream
            .read_exact(&mut header)
            .map_err(|e| io("reading from", e))?;
        let (found, type_code) = ttlv::header_tag_type(&header);
        if found != tag::RESPONSE_MESSAGE || type_code != 0x01 {
            return Err(KmipError::Protocol(format!(
                "{address} answered item {found:06X} of type {type_code:#04x}, not a Response Message"
            )));
        }
        let len = ttlv::body_len(&header);
        if len > MAX_RESPONSE {
            return Err(KmipError::Protocol(format!(
                "{address} announced a response of {len} bytes, more than the {MAX_RESPONSE} asked for"
            )));
        }
        let mut bytes = header.to_vec();
        bytes.resize(8 + len, 0);
        self.stream
            .read_exact(&mut bytes[8..])
            .map_err(|e| io("reading from", e))?;
        let response = Item::decode(&bytes).map_err(|e| KmipError::Protocol(e.0))?;
        Answer::read(&response).map_err(KmipError::Protocol)
    }

    /// The Unique Identifiers Locate finds for `attributes`; none when the server says
    /// not found. Refused ([`KmipError::Refused`], with the server's words) when the
    /// server refuses the Locate.
    pub fn locate(&mut self, attributes: Vec<Item>) -> Result<Vec<String>, KmipError> {
        let answer = self.call(operation::LOCATE, attributes)?;
        if answer.status != 0 {
            if answer.is_not_found() {
                return Ok(vec![]);
            }
            return Err(KmipError::Refused(format!(
                "Locate: {} answered {}",
                self.endpoint.address(),
                answer.describe()
            )));
        }
        Ok(answer
            .payload
            .iter()
            .flat_map(|p| p.all(tag::UNIQUE_IDENTIFIER))
            .filter_map(Item::as_text)
            .map(str::to_string)
            .collect())
    }

    /// Public key `uid` as a DER SPKI; `None` when the Get fails for a reason that
    /// does not stop the inventory (see the module documentation).
    fn get_public_key(&mut self, uid: &str) -> Result<Option<Vec<u8>>, KmipError> {
        let answer = self.call(operation::GET, vec![message::unique_identifier(uid)])?;
        if answer.status != 0 {
            let stops = matches!(
                answer.reason,
                Some(
                    reason::AUTHENTICATION_NOT_SUCCESSFUL
                        | reason::PERMISSION_DENIED
                        | reason::OPERATION_NOT_SUPPORTED
                )
            );
            if stops {
                return Err(KmipError::Refused(format!(
                    "Get of public key {uid}: {} answered {}",
                    self.endpoint.address(),
                    answer.describe()
                )));
            }
            return Ok(None);
        }
        let payload = answer
            .payload
            .unwrap_or(Item::structure(tag::RESPONSE_PAYLOAD, vec![]));
        key_block::public_key_spki(&payload)
            .map(Some)
            .map_err(|m| KmipError::Protocol(format!("Get of public key {uid}: {m}")))
    }

    /// Says goodbye (TLS close_notify); a server that has gone already does not matter.
    pub fn close(mut self) {
        self.stream.conn.send_close_notify();
        let _ = self.stream.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[rstest::rstest]
    #[case(0x01, Some("Create"))]
    #[case(0x02, Some("Create Key Pair"))]
    #[case(0x0A, Some("Get"))]
    #[case(0x18, Some("Query"))]
    #[case(0x21, Some("Sign"))]
    #[case(0x25, Some("RNG Retrieve"))]
    #[case(0x29, Some("Join Split Key"))]
    #[case(0x00, None)]
    #[case(0x2A, None)]
    #[case(u32::MAX, None)]
    fn operations_have_their_kmip_1_2_names(#[case] code: u32, #[case] name: Option<&str>) {
        assert_eq!(operation_name(code), name);
    }

    /// A Query Operations answer as a KMIP 1.2 server sends it, built by hand.
    const QUERY_RESPONSE: &[&str] = &[
        "42007B01 000000C0",                   // Response Message, 192 bytes
        "42007A01 00000048",                   // Response Header, 72 bytes
        "42006901 00000020",                   // Protocol Version
        "42006A02 00000004 00000001 00000000", // Major 1
        "42006B02 00000004 00000002 00000000", // Minor 2
        "42009209 00000008 0000000065A0B1C2",  // Time Stamp
        "42000D02 00000004 00000001 00000000", // Batch Count 1
        "42000F01 00000068",                   // Batch Item, 104 bytes
        "42005C05 00000004 00000018 00000000", // Operation Query
        "42007F05 00000004 00000000 00000000", // Result Status Success
        "42007C01 00000040",                   // Response Payload, 64 bytes
        "42005C05 00000004 00000001 00000000", // Operation Create
        "42005C05 00000004 00000008 00000000", // Operation Locate
        "42005C05 00000004 0000000A 00000000", // Operation Get
        "42005C05 00000004 00000018 00000000", // Operation Query
    ];

    fn answer(lines: &[&str]) -> Answer {
        let bytes = hex::decode(lines.concat().replace(' ', "")).unwrap();
        Answer::read(&Item::decode(&bytes).unwrap()).unwrap()
    }

    #[test]
    fn a_query_answer_lists_its_operations_in_order() {
        assert_eq!(
            operations_of(&answer(QUERY_RESPONSE), "kms:5696"),
            Ok(vec![0x01, 0x08, 0x0A, 0x18])
        );
    }

    #[test]
    fn a_query_answer_without_a_payload_lists_nothing() {
        let mut lines = QUERY_RESPONSE[..10].to_vec();
        lines[0] = "42007B01 00000078"; // 192 - 72
        lines[7] = "42000F01 00000020"; // Operation and Result Status only
        assert_eq!(
            operations_of(&answer(&lines), "kms:5696"),
            Ok(Vec::<u32>::new())
        );
    }

    #[test]
    fn a_refused_query_is_refused_with_the_servers_words() {
        let lines = [
            "42007B01 00000098",
            QUERY_RESPONSE[1],
            QUERY_RESPONSE[2],
            QUERY_RESPONSE[3],
            QUERY_RESPONSE[4],
            QUERY_RESPONSE[5],
            QUERY_RESPONSE[6],
            "42000F01 00000040",                   // Batch Item, 64 bytes
            "42005C05 00000004 00000018 00000000", // Operation Query
            "42007F05 00000004 00000001 00000000", // Result Status Operation Failed
            "42007E05 00000004 00000005 00000000", // Operation Not Supported
            "42007D07 00000004 6E6F7065 00000000", // Result Message "nope"
        ];
        assert_eq!(
            operations_of(&answer(&lines), "kms:5696"),
            Err(KmipError::Refused(
                "Query: kms:5696 answered status 0x1, reason 0x5 (nope)".into()
            ))
        );
    }

    #[test]
    fn an_operation_that_is_not_an_enumeration_is_a_protocol_error() {
        let mut lines = QUERY_RESPONSE.to_vec();
        lines[12] = "42005C02 00000004 00000008 00000000"; // an Integer
        let err = operations_of(&answer(&lines), "kms:5696").unwrap_err();
        assert!(
            matches!(&err, KmipError::Protocol(m) if m.contains("not an Enumeration")),
            "{err:?}"
        );
    }
}
