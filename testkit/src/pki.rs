//! A throw-away test PKI: a CA, a server certificate and a client certificate, as PEM
//! files in a temporary directory (and as DER, for TLS set up in the test itself).

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// What [`Pki::with`] issues.
#[derive(Clone, Debug)]
pub struct PkiOptions {
    /// The server certificate's subject alternative names (IP addresses or DNS names);
    /// the first is also its common name.
    pub server_names: Vec<String>,
}

impl Default for PkiOptions {
    fn default() -> Self {
        PkiOptions {
            server_names: vec!["127.0.0.1".into(), "localhost".into()],
        }
    }
}

/// A CA and two certificates it issued, all with EC P-256 keys: a server certificate
/// (serverAuth) and a client certificate (clientAuth, common name
/// [`Pki::CLIENT_NAME`]). The files are `ca.pem`, `server.pem`, `server.key`,
/// `client.pem` and `client.key` in [`Pki::dir`], keys PKCS#8 with mode 0600; the
/// directory is removed on drop.
///
/// Every CA has a name of its own: a second `Pki` is "another CA", and a check against
/// the wrong CA then fails on the unknown issuer, not on a signature under a known name.
pub struct Pki {
    dir: tempfile::TempDir,
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    ca_der: CertificateDer<'static>,
    server_der: CertificateDer<'static>,
    server_key_der: Vec<u8>,
    client_der: CertificateDer<'static>,
    client_key_der: Vec<u8>,
}

impl Pki {
    /// The client certificate's common name.
    pub const CLIENT_NAME: &'static str = "hsm-harness test client";

    /// A PKI with a server certificate for 127.0.0.1 and localhost.
    pub fn new() -> Pki {
        Pki::with(&PkiOptions::default())
    }

    /// A PKI as `options` say; panics (test set-up) when generating or writing fails.
    pub fn with(options: &PkiOptions) -> Pki {
        let dir = tempfile::Builder::new()
            .prefix("pki-")
            .tempdir()
            .expect("temporary PKI directory");

        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(
            DnType::CommonName,
            format!("hsm-harness test CA {}", crate::random_hex(4)),
        );
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca =
            CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).expect("test CA");

        let mut server_params = CertificateParams::new(options.server_names.clone())
            .expect("server names are IP addresses or DNS names");
        if let Some(first) = options.server_names.first() {
            server_params
                .distinguished_name
                .push(DnType::CommonName, first.as_str());
        }
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_key = KeyPair::generate().unwrap();
        let server = server_params
            .signed_by(&server_key, &ca)
            .expect("server certificate");

        let mut client_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        client_params
            .distinguished_name
            .push(DnType::CommonName, Pki::CLIENT_NAME);
        client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_key = KeyPair::generate().unwrap();
        let client = client_params
            .signed_by(&client_key, &ca)
            .expect("client certificate");

        let write = |name: &str, text: &str, secret: bool| {
            let path = dir.path().join(name);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(if secret { 0o600 } else { 0o644 })
                .open(&path)
                .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
            std::io::Write::write_all(&mut f, text.as_bytes())
                .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
            path
        };
        Pki {
            ca_cert: write("ca.pem", &ca.pem(), false),
            server_cert: write("server.pem", &server.pem(), false),
            server_key: write("server.key", &server_key.serialize_pem(), true),
            client_cert: write("client.pem", &client.pem(), false),
            client_key: write("client.key", &client_key.serialize_pem(), true),
            ca_der: ca.der().clone(),
            server_der: server.der().clone(),
            server_key_der: server_key.serialize_der(),
            client_der: client.der().clone(),
            client_key_der: client_key.serialize_der(),
            dir,
        }
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The CA's certificate, to trust.
    pub fn ca_der(&self) -> CertificateDer<'static> {
        self.ca_der.clone()
    }

    /// The server's certificate chain (its certificate alone) and private key.
    pub fn server_identity(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        identity(&self.server_der, &self.server_key_der)
    }

    /// The client's certificate chain (its certificate alone) and private key.
    pub fn client_identity(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        identity(&self.client_der, &self.client_key_der)
    }
}

impl Default for Pki {
    fn default() -> Self {
        Pki::new()
    }
}

fn identity(
    cert: &CertificateDer<'static>,
    key: &[u8],
) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    (
        vec![cert.clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.to_vec())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn files_are_written_and_keys_are_private() {
        let pki = Pki::new();
        for (path, mode) in [
            (&pki.ca_cert, 0o644),
            (&pki.server_cert, 0o644),
            (&pki.server_key, 0o600),
            (&pki.client_cert, 0o644),
            (&pki.client_key, 0o600),
        ] {
            assert!(path.starts_with(pki.dir()), "{}", path.display());
            let meta = std::fs::metadata(path).unwrap();
            assert_eq!(
                meta.permissions().mode() & 0o777,
                mode,
                "{}",
                path.display()
            );
        }
        let pem = std::fs::read_to_string(&pki.server_cert).unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
    }
}
