//! The oracle's KMIP inventory against a small KMIP server written here: TLS with a
//! client certificate, canned objects, and answers chosen per case.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::thread::JoinHandle;

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::signature::{self as sig, KeyPair as _};
use oracle::kmip::message::{tag, Credential};
use oracle::kmip::ttlv::{Item, Value};
use oracle::kmip::{
    inventory, object_type_name, query_objects, query_operations, ClientIdentity, Endpoint,
    KmipError,
};
use rstest::rstest;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection, StreamOwned};
use sha1::{Digest, Sha1};
use testkit::pki::Pki;

const PUBLIC_KEY: u32 = 3;
const PRIVATE_KEY: u32 = 4;

/// A KMIP object the fake server holds.
struct Object {
    uid: &'static str,
    object_type: u32,
    name: String,
    /// Key Format Type and Key Material, for public keys.
    key: Option<(u32, Item)>,
}

/// How the fake server answers.
#[derive(Clone, Copy, Default)]
struct Behaviour {
    /// Every Locate fails with this reason.
    locate_fails: Option<u32>,
    /// Get of this uid fails with this reason.
    get_fails: Option<(&'static str, u32)>,
    /// Speaks TLS 1.2 only, as PyKMIP does.
    tls12_only: bool,
}

fn response(operation: u32, status: u32, reason: Option<u32>, payload: Vec<Item>) -> Item {
    let mut batch = vec![
        Item::new(0x42005C, Value::Enumeration(operation)),
        Item::new(tag::RESULT_STATUS, Value::Enumeration(status)),
    ];
    if let Some(r) = reason {
        batch.push(Item::new(tag::RESULT_REASON, Value::Enumeration(r)));
        batch.push(Item::new(
            tag::RESULT_MESSAGE,
            Value::TextString("refused".into()),
        ));
    }
    if status == 0 {
        batch.push(Item::structure(tag::RESPONSE_PAYLOAD, payload));
    }
    Item::structure(
        tag::RESPONSE_MESSAGE,
        vec![
            Item::structure(
                0x42007A,
                vec![
                    Item::new(0x420092, Value::DateTime(1_700_000_000)),
                    Item::new(0x42000D, Value::Integer(1)),
                ],
            ),
            Item::structure(tag::BATCH_ITEM, batch),
        ],
    )
}

/// The answer to `request` from a server holding `objects`.
fn answer(objects: &[Object], behaviour: Behaviour, request: &Item) -> Item {
    let batch = request.child(tag::BATCH_ITEM).unwrap();
    let op = batch.child(0x42005C).and_then(Item::as_enum).unwrap();
    let payload = batch.child(0x420079).unwrap();
    match op {
        0x08 => {
            if let Some(r) = behaviour.locate_fails {
                return response(op, 1, Some(r), vec![]);
            }
            let mut want_type = None;
            let mut want_name = None;
            for a in payload.all(tag::ATTRIBUTE) {
                let value = a.child(tag::ATTRIBUTE_VALUE).unwrap();
                match a.child(tag::ATTRIBUTE_NAME).and_then(Item::as_text) {
                    Some("Object Type") => want_type = value.as_enum(),
                    Some("Name") => {
                        want_name = value
                            .child(tag::NAME_VALUE)
                            .and_then(Item::as_text)
                            .map(str::to_string)
                    }
                    other => panic!("unexpected attribute {other:?}"),
                }
            }
            let uids: Vec<Item> = objects
                .iter()
                .filter(|o| want_type.is_none_or(|t| t == o.object_type))
                .filter(|o| want_name.as_ref().is_none_or(|n| *n == o.name))
                .map(|o| Item::new(tag::UNIQUE_IDENTIFIER, Value::TextString(o.uid.into())))
                .collect();
            if uids.is_empty() {
                response(op, 1, Some(0x01), vec![])
            } else {
                response(op, 0, None, uids)
            }
        }
        0x0A => {
            assert!(
                payload.child(tag::KEY_FORMAT_TYPE).is_none(),
                "the inventory asks for no format"
            );
            let uid = payload
                .child(tag::UNIQUE_IDENTIFIER)
                .and_then(Item::as_text)
                .unwrap();
            if let Some((failing, r)) = behaviour.get_fails {
                if failing == uid {
                    return response(op, 1, Some(r), vec![]);
                }
            }
            let o = objects.iter().find(|o| o.uid == uid).unwrap();
            let (format, material) = o.key.clone().unwrap();
            response(
                op,
                0,
                None,
                vec![
                    Item::new(0x420057, Value::Enumeration(o.object_type)),
                    Item::new(tag::UNIQUE_IDENTIFIER, Value::TextString(uid.into())),
                    Item::structure(
                        tag::PUBLIC_KEY,
                        vec![Item::structure(
                            tag::KEY_BLOCK,
                            vec![
                                Item::new(tag::KEY_FORMAT_TYPE, Value::Enumeration(format)),
                                Item::structure(tag::KEY_VALUE, vec![material]),
                            ],
                        )],
                    ),
                ],
            )
        }
        0x18 => match payload.child(0x420074).and_then(Item::as_enum) {
            // Query Operations.
            Some(1) => {
                let ops = [0x08, 0x0A, 0x18]
                    .map(|o| Item::new(0x42005C, Value::Enumeration(o)))
                    .to_vec();
                response(op, 0, None, ops)
            }
            // Query Objects: the key pair halves.
            Some(2) => {
                let types = [PUBLIC_KEY, PRIVATE_KEY]
                    .map(|t| Item::new(0x420057, Value::Enumeration(t)))
                    .to_vec();
                response(op, 0, None, types)
            }
            other => panic!("unexpected Query Function {other:?}"),
        },
        other => panic!("unexpected operation {other:#x}"),
    }
}

/// Serves one connection; returns the requests it got.
fn serve(pki: &Pki, objects: Vec<Object>, behaviour: Behaviour) -> (u16, JoinHandle<Vec<Item>>) {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = RootCertStore::empty();
    roots.add(pki.ca_der()).unwrap();
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .unwrap();
    let versions: &[&rustls::SupportedProtocolVersion] = if behaviour.tls12_only {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13]
    };
    let (chain, key) = pki.server_identity();
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        let conn = ServerConnection::new(Arc::new(config)).unwrap();
        let mut stream = StreamOwned::new(conn, tcp);
        let mut seen = Vec::new();
        loop {
            let mut header = [0u8; 8];
            if stream.read_exact(&mut header).is_err() {
                return seen; // the client has gone (or failed the handshake)
            }
            let mut bytes = header.to_vec();
            bytes.resize(8 + oracle::kmip::ttlv::body_len(&header), 0);
            stream.read_exact(&mut bytes[8..]).unwrap();
            let request = Item::decode(&bytes).unwrap();
            let reply = answer(&objects, behaviour, &request).encode();
            seen.push(request);
            stream.write_all(&reply).unwrap();
            stream.flush().unwrap();
        }
    });
    (port, handle)
}

fn endpoint(pki: &Pki, port: u16) -> Endpoint {
    let mut e = Endpoint::new("127.0.0.1", port, &pki.ca_cert);
    e.identity = Some(ClientIdentity {
        cert: pki.client_cert.clone(),
        key: pki.client_key.clone(),
    });
    e
}

/// A key pair's objects and its identifier, computed here from the key bits.
struct TestKey {
    id: String,
    public: (u32, Item),
}

fn key_bits(spki: &[u8]) -> Vec<u8> {
    spki::SubjectPublicKeyInfoRef::try_from(spki)
        .unwrap()
        .subject_public_key
        .raw_bytes()
        .to_vec()
}

fn bytes(b: Vec<u8>) -> Item {
    Item::new(tag::KEY_MATERIAL, Value::ByteString(b))
}

/// An RSA key held as PKCS#1 (as PyKMIP keeps it).
fn rsa_key() -> TestKey {
    let k = sig::RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let bits = key_bits(k.public_key().as_der().unwrap().as_ref());
    TestKey {
        id: hex::encode(Sha1::digest(&bits)),
        public: (0x03, bytes(bits)),
    }
}

/// A P-256 key held as Transparent EC Public Key (as Cosmian KMS answers).
fn ec_key() -> TestKey {
    let k = sig::EcdsaKeyPair::generate(&sig::ECDSA_P256_SHA256_ASN1_SIGNING).unwrap();
    let point = key_bits(k.public_key().as_der().unwrap().as_ref());
    TestKey {
        id: hex::encode(Sha1::digest(&point)),
        public: (
            0x15,
            Item::structure(
                tag::KEY_MATERIAL,
                vec![
                    Item::new(tag::RECOMMENDED_CURVE, Value::Enumeration(0x07)),
                    Item::new(tag::Q_STRING, Value::ByteString(point)),
                ],
            ),
        ),
    }
}

/// An Ed25519 key held as X.509.
fn ed25519_key() -> TestKey {
    let k = sig::Ed25519KeyPair::generate().unwrap();
    let spki = k.public_key().as_der().unwrap().as_ref().to_vec();
    TestKey {
        id: hex::encode(Sha1::digest(key_bits(&spki))),
        public: (0x05, bytes(spki)),
    }
}

fn pair(uid_pub: &'static str, uid_priv: &'static str, k: &TestKey) -> [Object; 2] {
    [
        Object {
            uid: uid_pub,
            object_type: PUBLIC_KEY,
            name: format!("{}_pub", k.id),
            key: Some(k.public.clone()),
        },
        Object {
            uid: uid_priv,
            object_type: PRIVATE_KEY,
            name: format!("{}_priv", k.id),
            key: None,
        },
    ]
}

fn ids(found: Result<Vec<oracle::KeyId>, KmipError>) -> Vec<String> {
    found.unwrap().iter().map(|k| k.to_string()).collect()
}

#[test]
fn key_pairs_are_listed_by_the_identifiers_of_their_keys() {
    let pki = Pki::new();
    let (rsa, ec, ed) = (rsa_key(), ec_key(), ed25519_key());
    let lonely = rsa_key();
    let mut objects: Vec<Object> = [
        pair("1", "2", &rsa),
        pair("3", "4", &ec),
        pair("5", "6", &ed),
    ]
    .into_iter()
    .flatten()
    .collect();
    // A public key whose private half is gone, and the RSA public key a second time.
    objects.push(Object {
        uid: "7",
        object_type: PUBLIC_KEY,
        name: format!("{}_pub", lonely.id),
        key: Some(lonely.public.clone()),
    });
    objects.push(Object {
        uid: "8",
        object_type: PUBLIC_KEY,
        name: "copy".into(),
        key: Some(rsa.public.clone()),
    });
    let (port, server) = serve(&pki, objects, Behaviour::default());
    let found = ids(inventory(&endpoint(&pki, port)));
    let mut expected = vec![rsa.id, ec.id, ed.id];
    expected.sort();
    assert_eq!(found, expected);
    // Locate, then per public key a Get and (unless a duplicate) a Locate by name.
    assert_eq!(server.join().unwrap().len(), 1 + 5 * 2 - 1);
}

#[rstest]
#[case::item_not_found(0x01)]
#[case::object_not_found(0x37)]
fn a_server_with_no_keys_has_an_empty_inventory(#[case] reason: u32) {
    let pki = Pki::new();
    let behaviour = Behaviour {
        locate_fails: Some(reason),
        ..Behaviour::default()
    };
    let (port, _) = serve(&pki, vec![], behaviour);
    assert_eq!(ids(inventory(&endpoint(&pki, port))), Vec::<String>::new());
}

#[test]
fn query_operations_lists_what_the_server_answers() {
    let pki = Pki::new();
    let (port, requests) = serve(&pki, vec![], Behaviour::default());
    assert_eq!(
        query_operations(&endpoint(&pki, port)),
        Ok(vec![0x08, 0x0A, 0x18])
    );
    assert_eq!(requests.join().unwrap().len(), 1);
}

#[test]
fn query_objects_lists_the_object_types_the_server_answers() {
    let pki = Pki::new();
    let (port, requests) = serve(&pki, vec![], Behaviour::default());
    let types = query_objects(&endpoint(&pki, port)).expect("Query Objects");
    assert_eq!(types, vec![PUBLIC_KEY, PRIVATE_KEY]);
    assert_eq!(
        types
            .iter()
            .map(|t| object_type_name(*t))
            .collect::<Vec<_>>(),
        vec![Some("Public Key"), Some("Private Key")]
    );
    assert_eq!(requests.join().unwrap().len(), 1);
}

#[test]
fn a_refused_locate_fails_the_inventory() {
    let pki = Pki::new();
    let behaviour = Behaviour {
        locate_fails: Some(0x05),
        ..Behaviour::default()
    };
    let (port, _) = serve(&pki, vec![], behaviour);
    let err = inventory(&endpoint(&pki, port)).unwrap_err();
    assert!(
        matches!(&err, KmipError::Refused(m) if m.contains("Locate") && m.contains("reason 0x5")),
        "{err}"
    );
}

#[rstest]
#[case::gone(0x01, Ok(()))]
#[case::gone_kmip2(0x37, Ok(()))]
#[case::other_failure(0x100, Ok(()))]
#[case::permission_denied(0x0C, Err("Get of public key 1"))]
#[case::authentication(0x03, Err("Get of public key 1"))]
#[case::unsupported(0x05, Err("Get of public key 1"))]
fn a_failed_get_skips_the_key_unless_it_is_about_access(
    #[case] reason: u32,
    #[case] expected: Result<(), &str>,
) {
    let pki = Pki::new();
    let (a, b) = (rsa_key(), ec_key());
    let objects = [pair("1", "2", &a), pair("3", "4", &b)]
        .into_iter()
        .flatten()
        .collect();
    let behaviour = Behaviour {
        get_fails: Some(("1", reason)),
        ..Behaviour::default()
    };
    let (port, _) = serve(&pki, objects, behaviour);
    let got = inventory(&endpoint(&pki, port));
    match expected {
        Ok(()) => assert_eq!(ids(got), vec![b.id]),
        Err(says) => {
            let err = got.unwrap_err();
            assert!(err.to_string().contains(says), "{err}");
        }
    }
}

#[test]
fn an_unreadable_public_key_fails_the_inventory() {
    let pki = Pki::new();
    let objects = vec![Object {
        uid: "1",
        object_type: PUBLIC_KEY,
        name: "odd".into(),
        key: Some((0x02, bytes(vec![1, 2, 3]))),
    }];
    let (port, _) = serve(&pki, objects, Behaviour::default());
    let err = inventory(&endpoint(&pki, port)).unwrap_err();
    assert!(
        matches!(&err, KmipError::Protocol(m) if m.contains("format type 0x2")),
        "{err}"
    );
}

#[test]
fn a_tls_1_2_server_is_reached_too() {
    let pki = Pki::new();
    let k = rsa_key();
    let behaviour = Behaviour {
        tls12_only: true,
        ..Behaviour::default()
    };
    let (port, _) = serve(&pki, pair("1", "2", &k).into(), behaviour);
    assert_eq!(ids(inventory(&endpoint(&pki, port))), vec![k.id]);
}

#[test]
fn the_credential_goes_in_every_request_header() {
    let pki = Pki::new();
    let k = ec_key();
    let (port, server) = serve(&pki, pair("1", "2", &k).into(), Behaviour::default());
    let mut e = endpoint(&pki, port);
    e.credential = Some(Credential {
        username: "token-label".into(),
        password: Some("1234".into()),
    });
    inventory(&e).unwrap();
    let requests = server.join().unwrap();
    assert_eq!(requests.len(), 3);
    for r in requests {
        let value = r
            .child(0x420077)
            .and_then(|h| h.child(0x42000C))
            .and_then(|a| a.child(0x420023))
            .and_then(|c| c.child(0x420025))
            .unwrap();
        assert_eq!(
            value.child(0x420099).and_then(Item::as_text),
            Some("token-label")
        );
        assert_eq!(value.child(0x4200A1).and_then(Item::as_text), Some("1234"));
    }
}

#[test]
fn a_server_the_ca_did_not_certify_is_refused() {
    let (server_pki, other) = (Pki::new(), Pki::new());
    let (port, _) = serve(&server_pki, vec![], Behaviour::default());
    let mut e = endpoint(&other, port);
    // The client certificate the server knows, the CA it does not.
    e.identity = endpoint(&server_pki, port).identity;
    let err = inventory(&e).unwrap_err();
    assert!(
        matches!(&err, KmipError::Connection(m) if m.contains("certificate")),
        "{err}"
    );
}

#[rstest]
#[case::no_ca_file("missing.pem")]
#[case::not_pem("garbage.pem")]
fn unusable_ca_files_are_configuration_errors(#[case] file: &str) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("garbage.pem"), "not a certificate").unwrap();
    let e = Endpoint::new("127.0.0.1", 1, dir.path().join(file));
    let err = inventory(&e).unwrap_err();
    assert!(matches!(err, KmipError::Config(_)), "{err}");
}

#[test]
fn nobody_listening_is_a_connection_error() {
    let pki = Pki::new();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = inventory(&endpoint(&pki, port)).unwrap_err();
    assert!(matches!(err, KmipError::Connection(_)), "{err}");
}
