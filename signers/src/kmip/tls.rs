//! The TLS side of the KMIP signer: the rustls client configuration and what its
//! errors mean.
//!
//! TLS 1.3 only unless `weaken_security_allow_tls12`; the versions are enforced by the
//! rustls configuration (a TLS 1.3-only ClientHello offers no TLS 1.2 suites, so no
//! server can pick 1.2). One crypto provider, aws-lc-rs, passed explicitly.

use std::io::{self, Read};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::DigitallySignedStruct;
use rustls::{AlertDescription, CertificateError, ClientConfig, ClientConnection};
use rustls::{Error as TlsError, PeerIncompatible, RootCertStore, SignatureScheme};

use crate::config::KmipConfig;
use crate::SignerError;

/// The token every TLS version refusal carries in its message, so people and tests can
/// tell it from other fatal errors.
pub const TLS_VERSION_REFUSED: &str = "tls-version-refused";

/// The protocol versions this configuration offers, for messages.
pub fn offered(config: &KmipConfig) -> &'static str {
    if config.weaken_security_allow_tls12 {
        "TLS 1.3 and TLS 1.2"
    } else {
        "only TLS 1.3"
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Builds the client configuration. Errors are configuration errors (unreadable or
/// malformed PEM files), which are fatal.
pub fn client_config(signer: &str, config: &KmipConfig) -> Result<Arc<ClientConfig>, SignerError> {
    let cfg_err = |m: String| SignerError::config(format!("signer '{signer}': {m}"));
    let provider = provider();
    let versions: &[&'static rustls::SupportedProtocolVersion] =
        if config.weaken_security_allow_tls12 {
            &[&rustls::version::TLS13, &rustls::version::TLS12]
        } else {
            &[&rustls::version::TLS13]
        };
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| cfg_err(format!("TLS configuration: {e}")))?;
    let builder = if config.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert(provider)))
    } else {
        let mut roots = RootCertStore::empty();
        if let Some(path) = &config.server_ca_cert_path {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| {
                    cfg_err(format!(
                        "cannot read server_ca_cert_path {}: {e}",
                        path.display()
                    ))
                })?;
            if certs.is_empty() {
                return Err(cfg_err(format!(
                    "server_ca_cert_path {} holds no PEM certificate",
                    path.display()
                )));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| {
                    cfg_err(format!(
                        "server_ca_cert_path {}: unusable CA certificate: {e}",
                        path.display()
                    ))
                })?;
            }
        }
        builder.with_root_certificates(roots)
    };
    let tls = match (
        &config.client_cert_path,
        &config.client_cert_private_key_path,
    ) {
        (Some(cert_path), Some(key_path)) => {
            let chain = CertificateDer::pem_file_iter(cert_path)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| {
                    cfg_err(format!(
                        "cannot read client_cert_path {}: {e}",
                        cert_path.display()
                    ))
                })?;
            if chain.is_empty() {
                return Err(cfg_err(format!(
                    "client_cert_path {} holds no PEM certificate",
                    cert_path.display()
                )));
            }
            let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| {
                cfg_err(format!(
                    "cannot read client_cert_private_key_path {}: {e}",
                    key_path.display()
                ))
            })?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                cfg_err(format!(
                    "client certificate {} and key {} do not work together: {e}",
                    cert_path.display(),
                    key_path.display()
                ))
            })?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(tls))
}

/// The server name to verify: an IP address or a DNS name.
pub fn server_name(signer: &str, host: &str) -> Result<ServerName<'static>, SignerError> {
    ServerName::try_from(host.to_string()).map_err(|e| {
        SignerError::config(format!(
            "signer '{signer}': host '{host}' is not a valid DNS name or IP address: {e}"
        ))
    })
}

/// `insecure = true`: any server certificate is accepted (handshake signatures are
/// still checked, so the server must hold the key of the certificate it sends).
#[derive(Debug)]
struct AcceptAnyServerCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// How a TLS failure is to be treated.
pub enum TlsFailure {
    /// No common protocol version: fatal, with the versions named.
    VersionRefused(String),
    /// Certificates (server or client), cipher suites, other handshake refusals: fatal.
    Fatal(String),
    /// Anything else (corrupt records, unexpected messages after the handshake): the
    /// connection is dropped and the call may be retried.
    Transient(String),
}

fn alert_name(a: &AlertDescription) -> String {
    // "ProtocolVersion" -> "protocol_version"
    let camel = format!("{a:?}");
    let mut out = String::new();
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// What a rustls error means for this signer; `in_handshake` says whether the TLS
/// session was still being set up.
pub fn classify(config: &KmipConfig, e: &TlsError, in_handshake: bool) -> TlsFailure {
    let ours = offered(config);
    let hint12 = if config.weaken_security_allow_tls12 {
        "the server speaks neither TLS 1.3 nor TLS 1.2".to_string()
    } else {
        "set weaken_security_allow_tls12 = true to also offer TLS 1.2 (this weakens security)"
            .to_string()
    };
    let refused = |theirs: String| {
        TlsFailure::VersionRefused(format!(
            "{TLS_VERSION_REFUSED}: the server refused the TLS handshake ({theirs}); \
             this signer offers {ours}; {hint12}"
        ))
    };
    match e {
        TlsError::AlertReceived(a @ AlertDescription::ProtocolVersion) => {
            refused(format!("alert {} received", alert_name(a)))
        }
        TlsError::AlertReceived(a @ AlertDescription::HandshakeFailure)
            if in_handshake && !config.weaken_security_allow_tls12 =>
        {
            refused(format!(
                "alert {} in answer to a TLS 1.3-only ClientHello: the server offers no \
                 TLS 1.3, it speaks TLS 1.2 or older",
                alert_name(a)
            ))
        }
        TlsError::PeerIncompatible(
            p @ (PeerIncompatible::ServerTlsVersionIsDisabledByOurConfig
            | PeerIncompatible::ServerDoesNotSupportTls12Or13
            | PeerIncompatible::SupportedVersionsExtensionRequired
            | PeerIncompatible::Tls12NotOffered
            | PeerIncompatible::Tls12NotOfferedOrEnabled),
        ) => refused(match p {
            PeerIncompatible::ServerTlsVersionIsDisabledByOurConfig => format!(
                "it answered with a TLS version this signer does not offer: {} ({p:?})",
                if config.weaken_security_allow_tls12 {
                    "TLS 1.1 or older"
                } else {
                    "TLS 1.2 or older"
                }
            ),
            PeerIncompatible::ServerDoesNotSupportTls12Or13 => {
                format!("it speaks neither TLS 1.2 nor TLS 1.3 ({p:?})")
            }
            other => format!("it chose a TLS version this signer does not offer ({other:?})"),
        }),
        TlsError::InvalidCertificate(c) => {
            let what = match c {
                CertificateError::UnknownIssuer => {
                    if config.server_ca_cert_path.is_some() {
                        "it is not issued by the CA in server_ca_cert_path (unknown issuer)"
                            .to_string()
                    } else {
                        "no server_ca_cert_path is configured, so the trust store is empty \
                         (system roots are not used); set server_ca_cert_path (or insecure \
                         = true for tests)"
                            .to_string()
                    }
                }
                CertificateError::BadSignature => "its signature does not verify with the CA \
                     in server_ca_cert_path (another CA under the same name?)"
                    .to_string(),
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    format!("it has expired ({c:?})")
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    format!("it is not valid yet ({c:?})")
                }
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => format!(
                    "it is not valid for host '{}' (hostname mismatch: {c:?})",
                    config.host
                ),
                other => format!("{other:?}"),
            };
            TlsFailure::Fatal(format!(
                "tls-certificate: the server certificate is rejected: {what}"
            ))
        }
        TlsError::AlertReceived(
            a @ (AlertDescription::CertificateRequired
            | AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateExpired
            | AlertDescription::AccessDenied),
        ) => TlsFailure::Fatal(format!(
            "tls-client-certificate: the server refused our client certificate (alert {}); {}",
            alert_name(a),
            if config.client_cert_path.is_some() {
                "check client_cert_path: the server must trust its issuer and it may need the \
                 clientAuth extended key usage"
            } else {
                "no client_cert_path is configured and the server requires one"
            }
        )),
        TlsError::AlertReceived(a @ AlertDescription::HandshakeFailure) => {
            TlsFailure::Fatal(format!(
                "tls-handshake: the server refused the handshake (alert {}); this signer \
                 offers {ours} with AES-GCM and ChaCha20-Poly1305 suites{}",
                alert_name(a),
                if config.client_cert_path.is_none() {
                    "; no client certificate is configured and the server may require one"
                } else {
                    ""
                }
            ))
        }
        TlsError::PeerIncompatible(p) if in_handshake => TlsFailure::Fatal(format!(
            "tls-handshake: the server's TLS parameters are incompatible with ours \
             ({p:?}); this signer offers {ours}"
        )),
        TlsError::AlertReceived(a) if in_handshake => TlsFailure::Fatal(format!(
            "tls-handshake: the server ended the handshake with alert {}",
            alert_name(a)
        )),
        other if in_handshake => TlsFailure::Transient(format!("TLS handshake failed: {other}")),
        other => TlsFailure::Transient(format!("TLS error: {other}")),
    }
}

/// The error a failed handshake really means.
///
/// A server that refuses the handshake sends an alert and closes; if we are still
/// writing our flight then (TLS 1.2: Certificate, Key Exchange, Finished), the write
/// fails with a broken pipe or a reset before the alert is read, and the refusal would
/// pass for a network fault. So after such a write error, what the server still sent is
/// read and processed: an alert among it decides. Timeouts are returned unchanged
/// (draining would wait again).
pub fn alert_behind<S: Read>(tls: &mut ClientConnection, sock: &mut S, e: io::Error) -> io::Error {
    let closed = matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
    );
    if !closed || e.get_ref().is_some_and(|i| i.is::<TlsError>()) {
        return e;
    }
    // A handful of reads: an alert is one small record; a peer that keeps sending
    // is not refusing.
    for _ in 0..8 {
        match tls.read_tls(sock) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                if let Err(t) = tls.process_new_packets() {
                    return io::Error::new(io::ErrorKind::InvalidData, t);
                }
            }
        }
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(f: TlsFailure) -> (&'static str, String) {
        match f {
            TlsFailure::VersionRefused(m) => ("refused", m),
            TlsFailure::Fatal(m) => ("fatal", m),
            TlsFailure::Transient(m) => ("transient", m),
        }
    }

    #[test]
    fn version_refusals_name_both_sides_and_are_told_apart() {
        let strict = KmipConfig::new("127.0.0.1", 5696);
        let mut weak = strict.clone();
        weak.weaken_security_allow_tls12 = true;

        let hs = TlsError::AlertReceived(AlertDescription::HandshakeFailure);
        let (k, m) = text(classify(&strict, &hs, true));
        assert_eq!(k, "refused");
        assert!(m.starts_with(TLS_VERSION_REFUSED), "{m}");
        assert!(
            m.contains("handshake_failure") && m.contains("only TLS 1.3"),
            "{m}"
        );
        assert!(m.contains("weaken_security_allow_tls12"), "{m}");
        // With TLS 1.2 offered too, handshake_failure is about suites or certificates.
        let (k, m) = text(classify(&weak, &hs, true));
        assert_eq!(k, "fatal", "{m}");
        assert!(!m.contains(TLS_VERSION_REFUSED), "{m}");

        let pv = TlsError::AlertReceived(AlertDescription::ProtocolVersion);
        let (k, m) = text(classify(&weak, &pv, true));
        assert_eq!(k, "refused");
        assert!(
            m.contains("TLS 1.3 and TLS 1.2") && m.contains("protocol_version"),
            "{m}"
        );

        let hello12 =
            TlsError::PeerIncompatible(PeerIncompatible::ServerTlsVersionIsDisabledByOurConfig);
        let (k, m) = text(classify(&strict, &hello12, true));
        assert_eq!(k, "refused");
        assert!(m.contains("TLS 1.2 or older"), "{m}");
    }

    #[test]
    fn certificate_problems_are_fatal_with_a_reason() {
        let mut c = KmipConfig::new("kmip.example", 5696);
        for (err, needle) in [
            (CertificateError::UnknownIssuer, "no server_ca_cert_path"),
            (CertificateError::Expired, "expired"),
            (CertificateError::NotValidForName, "hostname mismatch"),
        ] {
            let (k, m) = text(classify(&c, &TlsError::InvalidCertificate(err), true));
            assert_eq!(k, "fatal");
            assert!(m.contains("tls-certificate") && m.contains(needle), "{m}");
        }
        c.server_ca_cert_path = Some("/ca.pem".into());
        let (_, m) = text(classify(
            &c,
            &TlsError::InvalidCertificate(CertificateError::UnknownIssuer),
            true,
        ));
        assert!(m.contains("unknown issuer"), "{m}");
        let (k, m) = text(classify(
            &c,
            &TlsError::AlertReceived(AlertDescription::CertificateRequired),
            false,
        ));
        assert_eq!(k, "fatal");
        assert!(m.contains("no client_cert_path"), "{m}");
        let (k, _) = text(classify(&c, &TlsError::DecryptError, false));
        assert_eq!(k, "transient");
    }

    /// A socket whose peer already closed: writes fail with `write_error`, reads give
    /// what the peer sent before closing.
    struct Closed {
        unread: io::Cursor<Vec<u8>>,
        write_error: io::ErrorKind,
    }

    impl Read for Closed {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.unread.read(buf)
        }
    }

    impl io::Write for Closed {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(self.write_error.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn handshake_over(sent: Vec<u8>, write_error: io::ErrorKind) -> io::Error {
        let config = KmipConfig::new("127.0.0.1", 5696);
        let client = client_config("test", &config).unwrap();
        let mut tls =
            ClientConnection::new(client, server_name("test", "127.0.0.1").unwrap()).unwrap();
        let mut sock = Closed {
            unread: io::Cursor::new(sent),
            write_error,
        };
        let e = tls.complete_io(&mut sock).unwrap_err();
        alert_behind(&mut tls, &mut sock, e)
    }

    #[rstest::rstest]
    #[case::broken_pipe(io::ErrorKind::BrokenPipe)]
    #[case::reset(io::ErrorKind::ConnectionReset)]
    fn an_alert_behind_a_broken_write_decides(#[case] write_error: io::ErrorKind) {
        // A fatal alert record: handshake_failure (40), as a server sends it when it
        // refuses a client without a certificate.
        let alert = vec![0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 40];
        let e = handshake_over(alert, write_error);
        let tls = e.get_ref().and_then(|i| i.downcast_ref::<TlsError>());
        assert_eq!(
            tls,
            Some(&TlsError::AlertReceived(AlertDescription::HandshakeFailure)),
            "{e}"
        );
    }

    #[test]
    fn a_broken_write_without_an_alert_stays_a_network_fault() {
        let e = handshake_over(vec![], io::ErrorKind::BrokenPipe);
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
        assert!(e.get_ref().is_none(), "{e}");
    }
}
