//! Throw-away certificates for TLS backends: a CA, a server certificate (EC P-256,
//! SAN 127.0.0.1 and localhost, serverAuth) and a client certificate (clientAuth),
//! plus the broken variants the TLS suite needs (expired, wrong host, self-signed; a
//! second PKI stands for another CA).
//! Private keys are written with mode 0600.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// What is wrong with the server certificate, on purpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ServerFlaw {
    #[default]
    None,
    /// Validity ended in 2001.
    Expired,
    /// Issued for another host name only.
    WrongHost,
    /// Signed by its own key, not by the CA.
    SelfSigned,
}

/// The files of one test PKI.
#[derive(Clone, Debug)]
pub struct Pki {
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// What the harness's own clients (the oracle's inventory and Query) trust for the
    /// server: the CA, or the server certificate itself when it is self-signed (as an
    /// operator would pin it), so a case about a signer's `insecure` can still be
    /// checked in the backend.
    pub harness_trust: PathBuf,
}

fn write(path: &Path, text: &str, secret: bool) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// The client certificate's common name when the caller does not choose one.
pub const DEFAULT_CLIENT_NAME: &str = "hsm-harness test client";

/// Generates a CA, a server and a client certificate into `dir`.
pub fn generate(dir: &Path, flaw: ServerFlaw) -> anyhow::Result<Pki> {
    generate_for_client(dir, flaw, DEFAULT_CLIENT_NAME)
}

/// As [`generate`], with `client_name` as the client certificate's common name: servers
/// that take the user name from the client certificate (Cosmian KMS) see that user.
pub fn generate_for_client(dir: &Path, flaw: ServerFlaw, client_name: &str) -> anyhow::Result<Pki> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        // A name of its own per PKI: two CAs with one name make a wrong-CA check fail
        // on the signature instead of on the unknown issuer.
        .push(
            DnType::CommonName,
            format!("hsm-harness test CA {}", super::random_hex(4)),
        );
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

    let hosts = match flaw {
        ServerFlaw::WrongHost => vec!["not-this-host.invalid".to_string()],
        _ => vec!["127.0.0.1".to_string(), "localhost".to_string()],
    };
    let mut server_params = CertificateParams::new(hosts)?;
    server_params
        .distinguished_name
        .push(DnType::CommonName, "hsm-harness test server");
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    if flaw == ServerFlaw::Expired {
        server_params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        server_params.not_after = rcgen::date_time_ymd(2001, 1, 1);
    }
    let server_key = KeyPair::generate()?;
    let server = if flaw == ServerFlaw::SelfSigned {
        server_params.self_signed(&server_key)?
    } else {
        server_params.signed_by(&server_key, &ca)?
    };

    let mut client_params = CertificateParams::new(Vec::<String>::new())?;
    client_params
        .distinguished_name
        .push(DnType::CommonName, client_name);
    client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_key = KeyPair::generate()?;
    let client = client_params.signed_by(&client_key, &ca)?;

    let pki = Pki {
        ca_cert: dir.join("ca.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server.key"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client.key"),
        harness_trust: match flaw {
            ServerFlaw::SelfSigned => dir.join("server.pem"),
            _ => dir.join("ca.pem"),
        },
    };
    write(&pki.ca_cert, &ca.pem(), false)?;
    write(&pki.server_cert, &server.pem(), false)?;
    write(&pki.server_key, &server_key.serialize_pem(), true)?;
    write(&pki.client_cert, &client.pem(), false)?;
    write(&pki.client_key, &client_key.serialize_pem(), true)?;
    Ok(pki)
}

/// The server certificate flaw an instance's settings ask for.
pub fn flaw_of(spec: &crate::model::suite::InstanceSpec) -> ServerFlaw {
    use crate::model::suite::ServerCert;
    match spec.tls.as_ref().map(|t| t.certificate) {
        None | Some(ServerCert::Valid) => ServerFlaw::None,
        Some(ServerCert::Expired) => ServerFlaw::Expired,
        Some(ServerCert::WrongHost) => ServerFlaw::WrongHost,
        Some(ServerCert::SelfSigned) => ServerFlaw::SelfSigned,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn files_are_written_and_keys_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let pki = generate(dir.path(), ServerFlaw::None).unwrap();
        for p in [&pki.ca_cert, &pki.server_cert, &pki.client_cert] {
            assert!(std::fs::read_to_string(p)
                .unwrap()
                .contains("BEGIN CERTIFICATE"));
        }
        for p in [&pki.server_key, &pki.client_key] {
            let mode = std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
    }

    #[test]
    fn the_client_certificate_carries_the_chosen_name() {
        let dir = tempfile::tempdir().unwrap();
        let pki = generate_for_client(dir.path(), ServerFlaw::None, "user-x").unwrap();
        let pem = std::fs::read_to_string(&pki.client_cert).unwrap();
        let der = pem_der(&pem);
        // The CN is stored as a UTF8String or PrintableString; its bytes are there.
        assert!(der.windows(6).any(|w| w == b"user-x"));
    }

    fn pem_der(pem: &str) -> Vec<u8> {
        use base64::Engine;
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap()
    }
}
