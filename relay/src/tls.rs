//! The TLS side: rustls on the aws-lc-rs provider only (`builder_with_provider`, so a
//! second provider in the build can never be picked by accident).
//!
//! Contract:
//!
//! - TLS 1.3 only unless the configuration says `min_version = "1.2"` (and TLS 1.2
//!   only with `max_version = "1.2"` too, to stand in for an old server); a TLS 1.2
//!   ClientHello to a default relay fails the handshake (protocol_version alert).
//! - The server certificate and key come from PEM files, or, when none are configured,
//!   from a self-signed ECDSA P-256 certificate made at start for `self_signed_names`.
//!   Either way the SHA-256 fingerprint of the certificate is logged and reported.
//! - With `client_ca`, a client must present a certificate that chains to it; a client
//!   without one is refused during the handshake.
//! - Refused at start, naming the file: unreadable or empty PEM files, a key rustls
//!   cannot use, a CA file without certificates.

use std::path::Path;
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};

use crate::config::{TlsConfig, TlsVersion};

/// The crypto provider of every TLS object the relay makes.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Hex SHA-256 of a DER certificate, as `openssl x509 -fingerprint -sha256` shows it
/// (upper case, colon separated).
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    Sha256::digest(cert.as_ref())
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read certificates from {}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("bad PEM in {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no certificate", path.display()));
    }
    Ok(certs)
}

/// The server's certificate chain and key: from files or self-signed.
pub fn identity(
    c: &TlsConfig,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    match (&c.cert, &c.key) {
        (Some(cert), Some(key)) => {
            let chain = load_certs(cert)?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("cannot read a private key from {}: {e}", key.display()))?;
            Ok((chain, key))
        }
        _ => {
            let ck = rcgen::generate_simple_self_signed(c.self_signed_names.clone())
                .map_err(|e| format!("cannot make a self-signed certificate: {e}"))?;
            let key =
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
            Ok((vec![ck.cert.der().clone()], key))
        }
    }
}

/// The rustls server configuration and the certificate's fingerprint.
pub fn server_config(c: &TlsConfig) -> Result<(Arc<ServerConfig>, String), String> {
    let (chain, key) = identity(c)?;
    let fp = fingerprint(&chain[0]);
    let versions: &[&'static rustls::SupportedProtocolVersion] =
        match (c.min_version, c.max_version) {
            (TlsVersion::Tls13, _) => &[&rustls::version::TLS13],
            (TlsVersion::Tls12, TlsVersion::Tls13) => {
                &[&rustls::version::TLS13, &rustls::version::TLS12]
            }
            (TlsVersion::Tls12, TlsVersion::Tls12) => &[&rustls::version::TLS12],
        };
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .map_err(|e| format!("TLS setup: {e}"))?;
    let builder = match &c.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in load_certs(ca)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("bad CA certificate in {}: {e}", ca.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| format!("client CA {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(chain, key)
        .map_err(|e| format!("the server certificate and key do not work together: {e}"))?;
    Ok((Arc::new(config), fp))
}
