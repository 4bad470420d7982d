//! The inventory client's TLS: rustls with the one crypto provider (aws-lc-rs) passed
//! explicitly, TLS 1.3 and 1.2 (the inventory must reach every server the harness
//! starts, PyKMIP speaks only 1.2; which versions a server accepts is what the signers
//! are tested on, not the oracle).
//!
//! The server's certificate must chain to the given CA and name the host; nothing is
//! skipped. Refused as configuration errors: unreadable or empty PEM files, a client
//! certificate and key that do not match.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use super::{ClientIdentity, KmipError};

/// The PEM certificates in `path`; at least one.
fn certificates(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, KmipError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| KmipError::Config(format!("cannot read {what} {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(KmipError::Config(format!(
            "{what} {} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(certs)
}

/// The client configuration for a server whose certificate `server_ca` issued,
/// presenting `identity` when there is one.
pub fn client_config(
    server_ca: &Path,
    identity: Option<&ClientIdentity>,
) -> Result<Arc<ClientConfig>, KmipError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(server_ca, "the server CA")? {
        roots.add(cert).map_err(|e| {
            KmipError::Config(format!(
                "the server CA {}: unusable certificate: {e}",
                server_ca.display()
            ))
        })?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| KmipError::Config(format!("TLS configuration: {e}")))?
        .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some(id) => {
            let chain = certificates(&id.cert, "the client certificate")?;
            let key = PrivateKeyDer::from_pem_file(&id.key).map_err(|e| {
                KmipError::Config(format!(
                    "cannot read the client key {}: {e}",
                    id.key.display()
                ))
            })?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                KmipError::Config(format!(
                    "the client certificate {} and key {} do not go together: {e}",
                    id.cert.display(),
                    id.key.display()
                ))
            })?
        }
    };
    Ok(Arc::new(config))
}
