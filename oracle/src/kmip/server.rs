//! What a KMIP server says about itself: the TLS version and cipher suite it picks when
//! offered TLS 1.3 and 1.2 ([`tls_facts`]), the KMIP versions it speaks
//! ([`discover_versions`]), who made it ([`server_information`]) and whether RNG
//! Retrieve gives random bytes ([`rng_retrieve`]).
//!
//! Each question goes over a connection of its own: a server may close a connection
//! after refusing a request (PyKMIP answers RNG Retrieve with Invalid Message), and one
//! refusal must not hide the other answers. A refused request is
//! [`KmipError::Refused`] with the server's status, reason and message.

use rustls::{CipherSuite, ProtocolVersion};

use super::message::{self, operation, query_function, tag};
use super::ttlv::{Item, Value};
use super::{Endpoint, KmipError, Session};

/// What the TLS handshake settled on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFacts {
    /// "TLS 1.3", "TLS 1.2" (as the signers name them).
    pub version: String,
    /// The IANA name, e.g. "TLS13_AES_256_GCM_SHA384".
    pub cipher_suite: String,
    /// Whether the version is TLS 1.3.
    pub tls13: bool,
}

impl TlsFacts {
    pub(crate) fn of(version: ProtocolVersion, suite: CipherSuite) -> TlsFacts {
        let name = match version {
            ProtocolVersion::TLSv1_3 => "TLS 1.3".to_string(),
            ProtocolVersion::TLSv1_2 => "TLS 1.2".to_string(),
            other => format!("{other:?}"),
        };
        TlsFacts {
            version: name,
            cipher_suite: format!("{suite:?}"),
            tls13: version == ProtocolVersion::TLSv1_3,
        }
    }
}

/// The TLS version and cipher suite the server at `endpoint` negotiates with a client
/// that offers TLS 1.3 and 1.2 (and presents the endpoint's client certificate): a
/// server that answers TLS 1.2 here does not speak TLS 1.3. No KMIP request is sent.
pub fn tls_facts(endpoint: &Endpoint) -> Result<TlsFacts, KmipError> {
    let mut session = Session::open(endpoint)?;
    session.handshake()?;
    let facts = session.negotiated().ok_or_else(|| {
        KmipError::Connection(format!(
            "the TLS handshake with {} settled on no version or cipher suite",
            endpoint.address()
        ))
    })?;
    session.close();
    Ok(facts)
}

/// The payload of a successful answer to `op`, asked over a connection of its own;
/// `what` names the request in refusals.
fn ask(endpoint: &Endpoint, op: u32, payload: Vec<Item>, what: &str) -> Result<Item, KmipError> {
    let mut session = Session::open(endpoint)?;
    let answer = session.call(op, payload)?;
    session.close();
    if answer.status != 0 {
        return Err(KmipError::Refused(format!(
            "{what}: {} answered {}",
            endpoint.address(),
            answer.describe()
        )));
    }
    Ok(answer
        .payload
        .unwrap_or(Item::structure(tag::RESPONSE_PAYLOAD, vec![])))
}

/// The KMIP (major, minor) versions the server lists in answer to Discover Versions,
/// its preference first. An empty list is what the server said.
pub fn discover_versions(endpoint: &Endpoint) -> Result<Vec<(i32, i32)>, KmipError> {
    let payload = ask(
        endpoint,
        operation::DISCOVER_VERSIONS,
        vec![],
        "Discover Versions",
    )?;
    Ok(message::protocol_versions(&payload))
}

/// What a server says of itself in answer to Query Server Information.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerInformation {
    /// Vendor Identification, if the answer has it.
    pub vendor: Option<String>,
    /// The text values inside Server Information (a vendor-defined structure), in order.
    pub information: Vec<String>,
}

/// The server's answer to Query with Query Function Query Server Information.
pub fn server_information(endpoint: &Endpoint) -> Result<ServerInformation, KmipError> {
    let payload = ask(
        endpoint,
        operation::QUERY,
        vec![message::query_function(
            query_function::QUERY_SERVER_INFORMATION,
        )],
        "Query (Query Server Information)",
    )?;
    let mut information = Vec::new();
    if let Some(info) = payload.child(tag::SERVER_INFORMATION) {
        texts(info, &mut information);
    }
    Ok(ServerInformation {
        vendor: payload
            .child(tag::VENDOR_IDENTIFICATION)
            .and_then(Item::as_text)
            .map(str::to_string),
        information,
    })
}

/// The text strings in `item`, depth first.
fn texts(item: &Item, out: &mut Vec<String>) {
    match &item.value {
        Value::TextString(s) => out.push(s.clone()),
        Value::Structure(items) => items.iter().for_each(|i| texts(i, out)),
        _ => {}
    }
}

/// `len` random bytes from the server's RNG Retrieve. Refused as a
/// [`KmipError::Protocol`] when the answer holds no Data or Data of another length.
pub fn rng_retrieve(endpoint: &Endpoint, len: usize) -> Result<Vec<u8>, KmipError> {
    let asked = i32::try_from(len)
        .map_err(|_| KmipError::Config(format!("{len} random bytes is too many to ask")))?;
    let payload = ask(
        endpoint,
        operation::RNG_RETRIEVE,
        vec![message::data_length(asked)],
        "RNG Retrieve",
    )?;
    let data = payload
        .child(tag::DATA)
        .and_then(Item::as_bytes)
        .ok_or_else(|| KmipError::Protocol("the RNG Retrieve answer holds no Data".into()))?;
    if data.len() != len {
        return Err(KmipError::Protocol(format!(
            "RNG Retrieve answered {} bytes for {len} asked",
            data.len()
        )));
    }
    Ok(data.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_suites_have_their_names() {
        let f = TlsFacts::of(
            ProtocolVersion::TLSv1_2,
            CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        );
        assert_eq!(f.version, "TLS 1.2");
        assert_eq!(f.cipher_suite, "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256");
        assert!(!f.tls13);
        let f = TlsFacts::of(
            ProtocolVersion::TLSv1_3,
            CipherSuite::TLS13_AES_256_GCM_SHA384,
        );
        assert_eq!((f.version.as_str(), f.tls13), ("TLS 1.3", true));
    }

    #[test]
    fn server_information_texts_are_read_depth_first() {
        let info = Item::structure(
            tag::SERVER_INFORMATION,
            vec![
                Item::new(0x540001, Value::TextString("build 7".into())),
                Item::structure(
                    0x540002,
                    vec![Item::new(0x540003, Value::TextString("fips".into()))],
                ),
                Item::new(0x540004, Value::Integer(3)),
            ],
        );
        let mut out = Vec::new();
        texts(&info, &mut out);
        assert_eq!(out, ["build 7", "fips"]);
    }
}
