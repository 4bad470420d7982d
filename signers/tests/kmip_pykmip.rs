//! The KMIP signer against a real PyKMIP server (Debian's python3-pykmip, 0.10).
//!
//! Each test starts its own PyKMIP on a free port with certificates made here (a CA,
//! an EC P-256 server certificate for 127.0.0.1/localhost, a client certificate with
//! the clientAuth extended key usage), a fresh database and an empty policy directory,
//! waits for it by completing a TLS handshake, and stops it with SIGINT on drop.
//!
//! Stock PyKMIP speaks TLS 1.2 only; one test starts it through a launcher that lets it
//! speak TLS 1.3 too. A missing `pykmip-server` fails the tests with an install hint.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hsm_signers::config::KmipConfig;
use hsm_signers::kmip::{KmipSigner, TLS_VERSION_REFUSED};
use hsm_signers::{Algorithm, ErrorKind, Signer};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};

const PYKMIP_SERVER: &str = "/usr/bin/pykmip-server";
const PYTHON: &str = "/usr/bin/python3";

/// Certificates and keys, as PEM files in a directory.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        let ca = |cn: &str| {
            let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, cn);
            let cert = params.self_signed(&key).unwrap();
            (params, key, cert)
        };
        let (ca_params, ca_key, ca_cert) = ca("hsm-harness test CA");
        write("ca.pem", &ca_cert.pem());
        let (_, _, other_cert) = ca("some other CA");
        write("other-ca.pem", &other_cert.pem());
        let issuer = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut server =
            CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
        server
            .distinguished_name
            .push(DnType::CommonName, "127.0.0.1");
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        write(
            "server.pem",
            &server.signed_by(&server_key, &issuer).unwrap().pem(),
        );
        write("server.key", &server_key.serialize_pem());

        let client_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut client = CertificateParams::new(Vec::<String>::new()).unwrap();
        client
            .distinguished_name
            .push(DnType::CommonName, "hsm-harness client");
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        write(
            "client.pem",
            &client.signed_by(&client_key, &issuer).unwrap().pem(),
        );
        write("client.key", &client_key.serialize_pem());
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running PyKMIP server, stopped with SIGINT on drop.
struct PyKmip {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

/// The launcher that lets PyKMIP's TLS 1.2 suite negotiate TLS 1.3 as well.
const TLS13_LAUNCHER: &str = r#"
import ssl, sys
from kmip.services import auth
_init = auth.TLS12AuthenticationSuite.__init__
def _init13(self, *args, **kwargs):
    _init(self, *args, **kwargs)
    self._protocol = ssl.PROTOCOL_TLS_SERVER
auth.TLS12AuthenticationSuite.__init__ = _init13
from kmip.services.server import server
sys.argv[0] = "pykmip-server"
sys.exit(server.main())
"#;

impl PyKmip {
    fn start(pki: &Pki, tls13: bool) -> Self {
        assert!(
            Path::new(PYKMIP_SERVER).exists(),
            "{PYKMIP_SERVER} is missing: install PyKMIP with `apt-get install python3-pykmip` \
             (ci/install-deps does this)"
        );
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        std::fs::create_dir(dir.path().join("policies")).unwrap();
        let conf = dir.path().join("server.conf");
        std::fs::write(
            &conf,
            format!(
                "[server]\nhostname=127.0.0.1\nport={port}\ncertificate_path={}\nkey_path={}\n\
                 ca_path={}\nauth_suite=TLS1.2\npolicy_path={}\nenable_tls_client_auth=False\n\
                 tls_cipher_suites=TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256\n\
                 logging_level=ERROR\ndatabase_path={}\n",
                pki.path("server.pem").display(),
                pki.path("server.key").display(),
                pki.path("ca.pem").display(),
                dir.path().join("policies").display(),
                dir.path().join("pykmip.db").display(),
            ),
        )
        .unwrap();
        let mut cmd = if tls13 {
            let launcher = dir.path().join("pykmip_tls13.py");
            std::fs::write(&launcher, TLS13_LAUNCHER).unwrap();
            let mut c = Command::new(PYTHON);
            c.arg(launcher);
            c
        } else {
            Command::new(PYKMIP_SERVER)
        };
        cmd.arg("-f")
            .arg(&conf)
            .arg("-l")
            .arg(dir.path().join("server.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("stderr.txt")).unwrap(),
            ));
        let child = cmd.spawn().expect("cannot start pykmip-server");
        let mut server = PyKmip { child, port, dir };
        server.wait_ready(pki);
        server
    }

    /// Ready when a TLS handshake (1.2 or 1.3, with our client certificate) completes.
    fn wait_ready(&mut self, pki: &Pki) {
        let mut config = KmipConfig::new("127.0.0.1", self.port);
        config.server_ca_cert_path = Some(pki.path("ca.pem"));
        config.client_cert_path = Some(pki.path("client.pem"));
        config.client_cert_private_key_path = Some(pki.path("client.key"));
        config.weaken_security_allow_tls12 = true;
        let tls = client_config(&config);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let err =
                    std::fs::read_to_string(self.dir.path().join("stderr.txt")).unwrap_or_default();
                let log =
                    std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
                panic!("pykmip-server exited ({status}) before it was ready:\n{err}\n{log}");
            }
            if let Ok(mut sock) = TcpStream::connect(("127.0.0.1", self.port)) {
                sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
                let mut conn = rustls::ClientConnection::new(tls.clone(), name).unwrap();
                let mut ok = true;
                while conn.is_handshaking() {
                    if conn.complete_io(&mut sock).is_err() {
                        ok = false;
                        break;
                    }
                }
                if ok {
                    conn.send_close_notify();
                    let _ = conn.complete_io(&mut sock);
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "pykmip-server not ready after 20 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for PyKmip {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain rustls client config (for readiness), TLS 1.2 and 1.3, our client cert.
fn client_config(config: &KmipConfig) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(config.server_ca_cert_path.as_ref().unwrap()).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let chain: Vec<_> = CertificateDer::pem_file_iter(config.client_cert_path.as_ref().unwrap())
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(config.client_cert_private_key_path.as_ref().unwrap())
        .unwrap();
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .unwrap(),
    )
}

/// The signer configuration for `port` with our CA and client certificate.
fn signer_config(pki: &Pki, port: u16) -> KmipConfig {
    let mut c = KmipConfig::new("127.0.0.1", port);
    c.server_ca_cert_path = Some(pki.path("ca.pem"));
    c.client_cert_path = Some(pki.path("client.pem"));
    c.client_cert_private_key_path = Some(pki.path("client.key"));
    c.connect_timeout = Duration::from_secs(3);
    c.read_timeout = Duration::from_secs(10);
    c
}

/// Verifies an RSA PKCS#1 v1.5 SHA-256 signature with RustCrypto (not the signer's code).
fn rsa_verifies(spki: &[u8], data: &[u8], sig: &[u8]) -> bool {
    use rsa::pkcs8::DecodePublicKey;
    use rsa::signature::Verifier;
    let key = rsa::RsaPublicKey::from_public_key_der(spki).unwrap();
    let verifier = rsa::pkcs1v15::VerifyingKey::<rsa::sha2::Sha256>::new(key);
    let Ok(sig) = rsa::pkcs1v15::Signature::try_from(sig) else {
        return false;
    };
    verifier.verify(data, &sig).is_ok()
}

/// A TCP proxy that counts connections and keeps what the client sent.
struct Proxy {
    port: u16,
    connections: Arc<AtomicUsize>,
    from_client: Arc<Mutex<Vec<u8>>>,
}

impl Proxy {
    fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let from_client = Arc::new(Mutex::new(Vec::new()));
        let (count, seen) = (connections.clone(), from_client.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(mut client) = client else { return };
                count.fetch_add(1, Ordering::SeqCst);
                let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    return;
                };
                let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let seen = seen.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = c2.read(&mut buf) {
                        if n == 0 || s2.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        seen.lock().unwrap().extend_from_slice(&buf[..n]);
                    }
                    let _ = s2.shutdown(Shutdown::Write);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut server, &mut client);
                    let _ = client.shutdown(Shutdown::Write);
                });
            }
        });
        Proxy {
            port,
            connections,
            from_client,
        }
    }

    /// The TLS record content types the client sent, in order.
    fn client_record_types(&self) -> Vec<u8> {
        let bytes = self.from_client.lock().unwrap().clone();
        let mut types = Vec::new();
        let mut rest = bytes.as_slice();
        while rest.len() >= 5 {
            let len = u16::from_be_bytes([rest[3], rest[4]]) as usize;
            types.push(rest[0]);
            rest = &rest[(5 + len).min(rest.len())..];
        }
        types
    }
}

#[test]
fn default_signer_is_refused_in_the_handshake_fatally_and_sends_no_kmip_bytes() {
    let pki = Pki::new();
    let server = PyKmip::start(&pki, false);
    let proxy = Proxy::start(server.port);
    let signer = KmipSigner::new("pykmip", &signer_config(&pki, proxy.port));

    let e = signer.info().unwrap_err();
    eprintln!("refused: {e}");
    assert_eq!(e.kind, ErrorKind::TlsRefused, "{e}");
    assert!(!e.is_transient());
    for needle in [
        TLS_VERSION_REFUSED,
        "only TLS 1.3",
        "weaken_security_allow_tls12",
    ] {
        assert!(e.message.contains(needle), "no '{needle}' in: {e}");
    }
    // Fatal: later calls answer the same error without connecting again.
    let again = signer.random(16).unwrap_err();
    assert_eq!(again, e);
    assert_eq!(
        signer
            .create_key(Algorithm::Rsa2048Pkcs1Sha256)
            .unwrap_err(),
        e
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(proxy.connections.load(Ordering::SeqCst), 1);
    // The client sent its ClientHello (handshake records) and perhaps an alert, never an
    // application-data record: no KMIP request left the client.
    let types = proxy.client_record_types();
    assert_eq!(
        types.first(),
        Some(&22),
        "records from the client: {types:?}"
    );
    assert!(
        types.iter().all(|t| *t == 22 || *t == 21),
        "records from the client: {types:?}"
    );
}

#[test]
fn opt_in_tls12_with_force_creates_signs_verifies_and_destroys_rsa_keys() {
    let pki = Pki::new();
    let server = PyKmip::start(&pki, false);
    let mut config = signer_config(&pki, server.port);
    config.weaken_security_allow_tls12 = true;
    config.force = true;
    let signer = KmipSigner::new("pykmip", &config);

    let info = signer.info().unwrap();
    let detail = |k: &str| {
        info.details
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert_eq!(detail("tls_version"), "TLS 1.2", "{info:?}");
    assert!(detail("tls_cipher_suite").contains("GCM"), "{info:?}");
    assert!(detail("vendor").contains("PyKMIP"), "{info:?}");
    assert!(
        detail("missing_operations_forced").contains("Modify Attribute"),
        "{info:?}"
    );
    assert!(signer.supports(Algorithm::Rsa2048Pkcs1Sha256).unwrap());

    let key = signer.create_key(Algorithm::Rsa2048Pkcs1Sha256).unwrap();
    let data = b"signed through PyKMIP";
    let sig = signer
        .sign(&key.id, Algorithm::Rsa2048Pkcs1Sha256, data)
        .unwrap();
    assert!(rsa_verifies(&key.public_key, data, &sig));
    assert!(!rsa_verifies(&key.public_key, b"other data", &sig));
    assert_eq!(signer.public_key(&key.id).unwrap(), key.public_key);
    assert_eq!(
        signer
            .sign(&key.id, Algorithm::EcdsaP256Sha256, data)
            .unwrap_err()
            .kind,
        ErrorKind::InvalidInput
    );
    assert_eq!(signer.list_keys().unwrap(), vec![key.id]);

    // A new signer (a restart) finds the key on the server by its name.
    let restarted = KmipSigner::new("pykmip", &config);
    let sig2 = restarted
        .sign(&key.id, Algorithm::Rsa2048Pkcs1Sha256, data)
        .unwrap();
    assert!(rsa_verifies(&key.public_key, data, &sig2));

    signer.destroy_key(&key.id).unwrap();
    for e in [
        signer
            .sign(&key.id, Algorithm::Rsa2048Pkcs1Sha256, data)
            .unwrap_err(),
        restarted
            .sign(&key.id, Algorithm::Rsa2048Pkcs1Sha256, data)
            .unwrap_err(),
        signer.destroy_key(&key.id).unwrap_err(),
        signer.public_key(&key.id).unwrap_err(),
    ] {
        assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
    }
    assert!(signer.list_keys().unwrap().is_empty());
}

#[test]
fn without_force_the_missing_modify_attribute_is_fatal() {
    let pki = Pki::new();
    let server = PyKmip::start(&pki, false);
    let mut config = signer_config(&pki, server.port);
    config.weaken_security_allow_tls12 = true;
    let signer = KmipSigner::new("pykmip", &config);
    let e = signer
        .create_key(Algorithm::Rsa2048Pkcs1Sha256)
        .unwrap_err();
    eprintln!("no force: {e}");
    assert_eq!(e.kind, ErrorKind::Unusable, "{e}");
    assert!(e.message.contains("Modify Attribute"), "{e}");
    assert!(e.message.contains("force"), "{e}");
    assert_eq!(signer.info().unwrap_err(), e);
}

#[test]
fn random_ec_and_ed25519_are_unsupported_and_the_signer_keeps_working() {
    let pki = Pki::new();
    let server = PyKmip::start(&pki, false);
    let mut config = signer_config(&pki, server.port);
    config.weaken_security_allow_tls12 = true;
    config.force = true;
    let signer = KmipSigner::new("pykmip", &config);

    let e = signer.random(32).unwrap_err();
    eprintln!("random: {e}");
    assert_eq!(e.kind, ErrorKind::Unsupported, "{e}");
    assert!(e.message.contains("Invalid Message"), "{e}");

    let e = signer.create_key(Algorithm::EcdsaP256Sha256).unwrap_err();
    eprintln!("ec: {e}");
    assert!(
        matches!(e.kind, ErrorKind::Unsupported | ErrorKind::Backend),
        "{e}"
    );
    assert!(e.message.contains("ec-p256"), "{e}");
    assert!(!signer.supports(Algorithm::EcdsaP256Sha256).unwrap());
    assert!(!signer.supports(Algorithm::EcdsaP384Sha384).unwrap());
    assert!(!signer.supports(Algorithm::Ed25519).unwrap());
    assert_eq!(
        signer.create_key(Algorithm::Ed25519).unwrap_err().kind,
        ErrorKind::Unsupported
    );
    // Nothing was left behind, and the connection still serves requests.
    assert!(signer.list_keys().unwrap().is_empty());
    let key = signer.create_key(Algorithm::Rsa2048Pkcs1Sha256).unwrap();
    signer.destroy_key(&key.id).unwrap();
}

#[test]
fn a_server_certificate_from_another_ca_is_fatal_and_insecure_accepts_it() {
    let pki = Pki::new();
    let server = PyKmip::start(&pki, false);
    let mut config = signer_config(&pki, server.port);
    config.weaken_security_allow_tls12 = true;
    config.force = true;
    config.server_ca_cert_path = Some(pki.path("other-ca.pem"));
    let signer = KmipSigner::new("pykmip", &config);
    let e = signer.info().unwrap_err();
    eprintln!("wrong CA: {e}");
    assert_eq!(e.kind, ErrorKind::Unusable, "{e}");
    assert!(e.message.contains("tls-certificate"), "{e}");
    assert!(e.message.contains("unknown issuer"), "{e}");
    assert_eq!(signer.random(4).unwrap_err(), e);

    config.server_ca_cert_path = None;
    let e = KmipSigner::new("pykmip", &config).info().unwrap_err();
    assert!(e.message.contains("no server_ca_cert_path"), "{e}");

    config.insecure = true;
    let insecure = KmipSigner::new("pykmip", &config);
    let info = insecure.info().unwrap();
    assert!(info
        .details
        .iter()
        .any(|(k, v)| k == "insecure" && v == "true"));
}

#[test]
fn pykmip_with_tls13_accepts_the_default_signer() {
    let pki = Pki::new();
    let server = PyKmip::start(&pki, true);
    let mut config = signer_config(&pki, server.port);
    config.force = true; // PyKMIP's Query still omits Modify Attribute
    let signer = KmipSigner::new("pykmip-tls13", &config);
    let info = signer.info().unwrap();
    assert!(
        info.details
            .iter()
            .any(|(k, v)| k == "tls_version" && v == "TLS 1.3"),
        "{info:?}"
    );
    let key = signer.create_key(Algorithm::Rsa2048Pkcs1Sha256).unwrap();
    let sig = signer
        .sign(&key.id, Algorithm::Rsa2048Pkcs1Sha256, b"tls 1.3")
        .unwrap();
    assert!(rsa_verifies(&key.public_key, b"tls 1.3", &sig));
    signer.destroy_key(&key.id).unwrap();
}
