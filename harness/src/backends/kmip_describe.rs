//! What any KMIP server says about itself, for [`Instance::describe`] on every KMIP
//! backend (the relay, PyKMIP, Cosmian KMS, an external server), asked through the
//! oracle's own client so the signer under test has no say in it.
//!
//! [`Instance::describe`]: super::Instance::describe

use anyhow::anyhow;
use oracle::kmip::server::{self, TlsFacts};
use oracle::kmip::{Endpoint, KmipError};

use super::Description;

/// How many random bytes the `random` section asks RNG Retrieve for.
const RANDOM_BYTES: usize = 16;

/// The sections `server` (address, Vendor Identification and Server Information from
/// Query Server Information), `protocol versions` (Discover Versions, preference
/// first), `operations` (Query Operations, one row per operation, then the operations
/// the KMIP signer requires that Query does not list), `object types`
/// (Query Objects), `tls` (the version and cipher suite the server picks when offered
/// TLS 1.3 and 1.2) and `random` (whether RNG Retrieve gives bytes).
///
/// A question the server does not answer is a row saying so with its words; only a
/// server that cannot be reached at all (no TCP connection, no TLS handshake) is an
/// error.
pub(crate) fn describe_kmip(endpoint: &Endpoint) -> anyhow::Result<Description> {
    let tls = server::tls_facts(endpoint)
        .map_err(|e| anyhow!("the KMIP server at {}: {}", endpoint.address(), e.detail()))?;
    let mut d = Description::default();
    d.section("server", server_rows(endpoint));
    d.section(
        "protocol versions",
        version_rows(server::discover_versions(endpoint)),
    );
    d.section(
        "operations",
        operation_rows(oracle::kmip::query_operations(endpoint)),
    );
    d.section(
        "object types",
        code_rows(
            oracle::kmip::query_objects(endpoint),
            oracle::kmip::object_type_name,
            "Query Objects",
        ),
    );
    d.section("tls", tls_rows(&tls));
    d.section(
        "random",
        random_rows(server::rng_retrieve(endpoint, RANDOM_BYTES)),
    );
    Ok(d)
}

fn row(field: &str, value: impl Into<String>) -> (String, String) {
    (field.to_string(), value.into())
}

fn not_answered(e: &KmipError) -> String {
    format!("not answered: {}", e.detail())
}

fn server_rows(endpoint: &Endpoint) -> Vec<(String, String)> {
    let mut rows = vec![row("address", endpoint.address())];
    match server::server_information(endpoint) {
        Ok(info) => {
            rows.push(row(
                "vendor",
                info.vendor
                    .unwrap_or_else(|| "not in the Query Server Information answer".into()),
            ));
            rows.extend(
                info.information
                    .into_iter()
                    .map(|i| row("server information", i)),
            );
        }
        Err(e) => rows.push(row("vendor", not_answered(&e))),
    }
    rows
}

fn version_rows(answer: Result<Vec<(i32, i32)>, KmipError>) -> Vec<(String, String)> {
    match answer {
        Ok(v) if v.is_empty() => vec![row("Discover Versions", "lists no version")],
        Ok(v) => v
            .into_iter()
            .enumerate()
            .map(|(i, (major, minor))| {
                row(
                    &format!("KMIP {major}.{minor}"),
                    if i == 0 { "preferred" } else { "supported" },
                )
            })
            .collect(),
        Err(e) => vec![row("Discover Versions", not_answered(&e))],
    }
}

/// The operations Query lists (see [`code_rows`]), then a row for each operation the
/// KMIP signer requires that it does not list.
fn operation_rows(answer: Result<Vec<u32>, KmipError>) -> Vec<(String, String)> {
    let listed = answer.as_ref().ok().cloned();
    let mut rows = code_rows(answer, oracle::kmip::operation_name, "Query Operations");
    if let Some(listed) = listed {
        rows.extend(
            hsm_signers::kmip::REQUIRED_OPERATIONS
                .iter()
                .filter(|(code, _)| !listed.contains(code))
                .map(|(_, name)| row(name, "not listed (the KMIP signer requires it)")),
        );
    }
    rows
}

/// One row per code: its KMIP 1.2 name (the hex value for a code 1.2 does not name),
/// then the value.
fn code_rows(
    answer: Result<Vec<u32>, KmipError>,
    name: fn(u32) -> Option<&'static str>,
    question: &str,
) -> Vec<(String, String)> {
    match answer {
        Ok(codes) if codes.is_empty() => vec![row(question, "lists none")],
        Ok(codes) => codes
            .into_iter()
            .map(|c| match name(c) {
                Some(n) => row(n, format!("{c:#04x}")),
                None => row(&format!("{c:#04x}"), "not a KMIP 1.2 value"),
            })
            .collect(),
        Err(e) => vec![row(question, not_answered(&e))],
    }
}

fn tls_rows(tls: &TlsFacts) -> Vec<(String, String)> {
    vec![
        row("version", tls.version.clone()),
        row("cipher suite", tls.cipher_suite.clone()),
        row("offered", "TLS 1.3 and TLS 1.2"),
    ]
}

fn random_rows(answer: Result<Vec<u8>, KmipError>) -> Vec<(String, String)> {
    vec![match answer {
        Ok(bytes) => row("RNG Retrieve", format!("works ({} bytes)", bytes.len())),
        Err(e) => row("RNG Retrieve", format!("refused: {}", e.detail())),
    }]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_are_one_row_each_by_name() {
        let rows = code_rows(
            Ok(vec![0x18, 0x02, 0x99]),
            oracle::kmip::operation_name,
            "Query Operations",
        );
        assert_eq!(
            rows,
            [
                row("Query", "0x18"),
                row("Create Key Pair", "0x02"),
                row("0x99", "not a KMIP 1.2 value"),
            ]
        );
        let refused = code_rows(
            Err(KmipError::Refused("Query: h:1 answered status 0x1".into())),
            oracle::kmip::operation_name,
            "Query Operations",
        );
        assert_eq!(
            refused,
            [row(
                "Query Operations",
                "not answered: Query: h:1 answered status 0x1"
            )]
        );
    }

    #[test]
    fn required_operations_query_omits_are_listed_after() {
        let required: Vec<u32> = hsm_signers::kmip::REQUIRED_OPERATIONS
            .iter()
            .map(|(c, _)| *c)
            .filter(|c| *c != 0x0E)
            .collect();
        let rows = operation_rows(Ok(required.clone()));
        assert_eq!(rows.len(), required.len() + 1);
        assert_eq!(
            rows.last(),
            Some(&row(
                "Modify Attribute",
                "not listed (the KMIP signer requires it)"
            ))
        );
        // A refused Query says only that.
        let refused = operation_rows(Err(KmipError::Refused("no".into())));
        assert_eq!(refused, [row("Query Operations", "not answered: no")]);
    }

    #[test]
    fn versions_say_which_is_preferred() {
        assert_eq!(
            version_rows(Ok(vec![(1, 4), (1, 2)])),
            [row("KMIP 1.4", "preferred"), row("KMIP 1.2", "supported")]
        );
        assert_eq!(
            version_rows(Ok(vec![])),
            [row("Discover Versions", "lists no version")]
        );
    }

    #[test]
    fn random_says_whether_rng_retrieve_works() {
        assert_eq!(
            random_rows(Ok(vec![0; 16])),
            [row("RNG Retrieve", "works (16 bytes)")]
        );
        assert_eq!(
            random_rows(Err(KmipError::Refused(
                "RNG Retrieve: x answered status 0x1, reason 0x4".into()
            ))),
            [row(
                "RNG Retrieve",
                "refused: RNG Retrieve: x answered status 0x1, reason 0x4"
            )]
        );
    }
}
