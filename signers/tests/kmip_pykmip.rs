//! The KMIP signer against a real PyKMIP server (Debian's python3-pykmip, 0.10).
//!
//! Each test starts its own PyKMIP ([`testkit::pykmip`]) on a free port with a test PKI
//! of its own ([`testkit::pki`]: a CA, an EC P-256 server certificate for
//! 127.0.0.1/localhost, a client certificate with the clientAuth extended key usage), a
//! fresh database and an empty policy directory; it is ready once a TLS handshake
//! completes, and stops with SIGINT on drop.
//!
//! Stock PyKMIP speaks TLS 1.2 only; one test starts it through a launcher that lets it
//! speak TLS 1.3 too. A missing `pykmip-server` fails the tests with an install hint.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hsm_signers::config::KmipConfig;
use hsm_signers::kmip::{KmipSigner, TLS_VERSION_REFUSED};
use hsm_signers::{Algorithm, ErrorKind, Signer};
use testkit::pki::Pki;
use testkit::pykmip::{PyKmip, Tls};

/// The signer configuration for `port` with our CA and client certificate.
fn signer_config(pki: &Pki, port: u16) -> KmipConfig {
    let mut c = KmipConfig::new("127.0.0.1", port);
    c.server_ca_cert_path = Some(pki.ca_cert.clone());
    c.client_cert_path = Some(pki.client_cert.clone());
    c.client_cert_private_key_path = Some(pki.client_key.clone());
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
    let server = PyKmip::start(&pki, Tls::V12);
    let proxy = Proxy::start(server.port());
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
    let server = PyKmip::start(&pki, Tls::V12);
    let mut config = signer_config(&pki, server.port());
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
    let server = PyKmip::start(&pki, Tls::V12);
    let mut config = signer_config(&pki, server.port());
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
    let server = PyKmip::start(&pki, Tls::V12);
    let mut config = signer_config(&pki, server.port());
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
    let server = PyKmip::start(&pki, Tls::V12);
    let mut config = signer_config(&pki, server.port());
    config.weaken_security_allow_tls12 = true;
    config.force = true;
    // Another PKI's CA: some other CA, with a name of its own.
    let other = Pki::new();
    config.server_ca_cert_path = Some(other.ca_cert.clone());
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
    let server = PyKmip::start(&pki, Tls::V12AndV13);
    let mut config = signer_config(&pki, server.port());
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
