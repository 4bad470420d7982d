//! Every KMIP operation of the relay, against a real SoftHSMv2 token, through the
//! `kmip2pkcs11` binary and a real TLS 1.3 client. kmip-protocol's types where it has
//! them (RSA, PKCS#1 v1.5 SHA-256, Query, Discover Versions, Get, Activate, Revoke,
//! Destroy, RNG Retrieve); the relay's TTLV tree for what it lacks (EC, PSS, Locate,
//! Name edits, batches).

mod support;

use kmip_protocol::types::common::{
    CryptographicAlgorithm, CryptographicLength, CryptographicParameters, CryptographicUsageMask,
    Data, DataLength, KeyFormatType, KeyMaterial, ObjectType, Operation, RevocationReasonCode,
    UniqueIdentifier,
};
use kmip_protocol::types::request::{
    self as req, CommonTemplateAttribute, PrivateKeyTemplateAttribute, PublicKeyTemplateAttribute,
    QueryFunction, RequestPayload, RevocationReason,
};
use kmip_protocol::types::response::{ManagedObject, ResponsePayload, ResultStatus};
use kmip_relay::kmip::{self, operation as op, tag, ResultReason};
use kmip_relay::ttlv::Item;
use rstest::rstest;
use support::*;

fn started() -> (Hsm, Relay) {
    let hsm = softhsm();
    let relay = Relay::start(&hsm, &RelayOptions::default());
    (hsm, relay)
}

fn payload_of(
    m: &kmip_protocol::types::response::ResponseMessage,
) -> &kmip_protocol::types::response::ResponsePayload {
    let item = &m.batch_items[0];
    assert_eq!(
        item.result_status,
        ResultStatus::Success,
        "{:?}: {:?}",
        item.result_reason,
        item.result_message
    );
    item.payload.as_ref().expect("payload")
}

fn create_rsa(client: &mut Client, bits: i32, name: &str) -> (String, String) {
    let r = client.request(
        RequestPayload::CreateKeyPair(
            Some(CommonTemplateAttribute::unnamed(vec![
                req::Attribute::CryptographicAlgorithm(CryptographicAlgorithm::RSA),
                req::Attribute::CryptographicLength(bits),
            ])),
            Some(PrivateKeyTemplateAttribute::unnamed(vec![
                req::Attribute::Name(name.to_string()),
                req::Attribute::CryptographicUsageMask(CryptographicUsageMask::Sign),
            ])),
            Some(PublicKeyTemplateAttribute::unnamed(vec![
                req::Attribute::Name(format!("{name}.pub")),
                req::Attribute::CryptographicUsageMask(CryptographicUsageMask::Verify),
            ])),
        ),
        None,
    );
    match payload_of(&r) {
        ResponsePayload::CreateKeyPair(p) => (
            p.private_key_unique_identifier.0.clone(),
            p.public_key_unique_identifier.0.clone(),
        ),
        other => panic!("{other:?}"),
    }
}

fn rsa_public(client: &mut Client, public_id: &str) -> rsa::RsaPublicKey {
    use rsa::pkcs1::DecodeRsaPublicKey;
    let r = client.request(
        RequestPayload::Get(
            Some(UniqueIdentifier(public_id.into())),
            Some(KeyFormatType::PKCS1),
            None,
            None,
        ),
        None,
    );
    let ResponsePayload::Get(g) = payload_of(&r) else {
        panic!()
    };
    let ManagedObject::PublicKey(pk) = &g.cryptographic_object else {
        panic!("{g:?}")
    };
    let KeyMaterial::Bytes(der) = &pk.key_block.key_value.key_material else {
        panic!()
    };
    assert_eq!(
        pk.key_block.cryptographic_algorithm,
        Some(CryptographicAlgorithm::RSA)
    );
    rsa::RsaPublicKey::from_pkcs1_der(der).expect("PKCS#1 RSAPublicKey")
}

#[test]
fn discover_versions_negotiates() {
    use kmip_protocol::types::request::ProtocolVersion as Pv;
    let (_hsm, relay) = started();
    let mut c = relay.connect();
    assert_eq!(c.tls_version(), Some(rustls::ProtocolVersion::TLSv1_3));
    let r = c.request(RequestPayload::DiscoverVersions(vec![]), None);
    let ResponsePayload::DiscoverVersions(p) = payload_of(&r) else {
        panic!()
    };
    let got: Vec<_> = p
        .supported_versions
        .iter()
        .flatten()
        .map(|v| (v.major, v.minor))
        .collect();
    assert_eq!(got, vec![(1, 2), (1, 1), (1, 0)]);
    let offered = vec![
        Pv(req::ProtocolVersionMajor(1), req::ProtocolVersionMinor(4)),
        Pv(req::ProtocolVersionMajor(1), req::ProtocolVersionMinor(1)),
    ];
    let r = c.request(RequestPayload::DiscoverVersions(offered), None);
    let ResponsePayload::DiscoverVersions(p) = payload_of(&r) else {
        panic!()
    };
    let got: Vec<_> = p
        .supported_versions
        .iter()
        .flatten()
        .map(|v| (v.major, v.minor))
        .collect();
    assert_eq!(got, vec![(1, 1)]);
}

#[test]
fn unsupported_protocol_version_is_invalid_message_but_can_negotiate() {
    let (_hsm, relay) = started();
    let mut c = relay.connect();
    let mut request = request_tree(
        &[(op::QUERY, vec![]), (op::DISCOVER_VERSIONS, vec![])],
        None,
    );
    // Protocol Version 2.0.
    if let kmip_relay::ttlv::Value::Structure(fields) = &mut request.value {
        if let kmip_relay::ttlv::Value::Structure(h) = &mut fields[0].value {
            h[0] = Item::structure(
                tag::PROTOCOL_VERSION,
                vec![
                    Item::integer(tag::PROTOCOL_VERSION_MAJOR, 2),
                    Item::integer(tag::PROTOCOL_VERSION_MINOR, 0),
                ],
            );
        }
    }
    let a = answers(&c.tree(&request));
    assert!(a[0].failed(ResultReason::InvalidMessage).contains("2.0"));
    // Stop is the default: the item after a failure is not run.
    assert_eq!(a[1].status, 1);
    let a = answers(&c.tree(&{
        let mut r = request.clone();
        if let kmip_relay::ttlv::Value::Structure(fields) = &mut r.value {
            fields.remove(1); // drop the Query item
            if let kmip_relay::ttlv::Value::Structure(h) = &mut fields[0].value {
                let n = h.len();
                h[n - 1] = Item::integer(tag::BATCH_COUNT, 1);
            }
        }
        r
    }));
    a[0].ok();
}

#[test]
fn query_is_truthful() {
    let (_hsm, relay) = started();
    let mut c = relay.connect();
    let r = c.request(
        RequestPayload::Query(vec![
            QueryFunction::QueryOperations,
            QueryFunction::QueryObjects,
            QueryFunction::QueryServerInformation,
        ]),
        None,
    );
    let ResponsePayload::Query(q) = payload_of(&r) else {
        panic!()
    };
    let ops = q.operations.clone().unwrap_or_default();
    let want = [
        Operation::DiscoverVersions,
        Operation::Query,
        Operation::CreateKeyPair,
        Operation::Locate,
        Operation::Get,
        Operation::GetAttributes,
        Operation::AddAttribute,
        Operation::ModifyAttribute,
        Operation::Activate,
        Operation::Revoke,
        Operation::Destroy,
        Operation::Sign,
        Operation::RNGRetrieve,
    ];
    assert_eq!(ops, want.to_vec(), "SoftHSM has every mechanism and an RNG");
    assert_eq!(
        q.object_types.clone().unwrap_or_default(),
        vec![ObjectType::PublicKey, ObjectType::PrivateKey]
    );
    assert!(q
        .vendor_identification
        .as_deref()
        .unwrap_or("")
        .contains("kmip2pkcs11"));
    // Unauthenticated clients (loopback, no client_ca, no credentials) learn the token
    // label, but neither the module nor the token's model and serial.
    let a = one(
        &mut c,
        op::QUERY,
        vec![Item::enumeration(tag::QUERY_FUNCTION, 3)],
    );
    let info = a
        .ok()
        .child(tag::SERVER_INFORMATION)
        .expect("Server Information");
    assert!(info.child(tag::X_PKCS11_LIBRARY).is_none(), "{info:?}");
    assert_eq!(text_of(info, tag::X_TOKEN), LABEL);
}

#[test]
fn rsa_key_lifecycle_with_kmip_protocol_types() {
    use rsa::signature::Verifier;
    let (_hsm, relay) = started();
    let mut c = relay.connect();
    let (private, public) = create_rsa(&mut c, 2048, "lifecycle");
    assert!(private.starts_with("priv-") && public.starts_with("pub-"));
    let r = c.request(
        RequestPayload::Activate(Some(UniqueIdentifier(private.clone()))),
        None,
    );
    assert!(matches!(payload_of(&r), ResponsePayload::Activate(_)));
    let key = rsa_public(&mut c, &public);
    assert_eq!(rsa::traits::PublicKeyParts::size(&key), 256);

    let data = b"lifecycle payload";
    let r = c.request(
        RequestPayload::Sign(
            Some(UniqueIdentifier(private.clone())),
            Some(
                CryptographicParameters::default()
                    .with_padding_method(kmip_protocol::types::common::PaddingMethod::PKCS1_v1_5)
                    .with_hashing_algorithm(kmip_protocol::types::common::HashingAlgorithm::SHA256),
            ),
            Data(data.to_vec()),
        ),
        None,
    );
    let ResponsePayload::Sign(s) = payload_of(&r) else {
        panic!()
    };
    let verifier = rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(key);
    let sig = rsa::pkcs1v15::Signature::try_from(s.signature_data.as_slice()).unwrap();
    verifier
        .verify(data, &sig)
        .expect("signature verifies independently");

    // Other public key formats: X.509 SPKI (through the tree: kmip-protocol 0.4.3
    // cannot read Key Format Type 5 key material) and Transparent RSA Public Key.
    let a = one(
        &mut c,
        op::GET,
        vec![
            Item::text(tag::UNIQUE_IDENTIFIER, &public),
            Item::enumeration(tag::KEY_FORMAT_TYPE, kmip::key_format::X509),
        ],
    );
    let block = a
        .ok()
        .child(tag::PUBLIC_KEY)
        .unwrap()
        .child(tag::KEY_BLOCK)
        .unwrap();
    let spki = bytes_of(block.child(tag::KEY_VALUE).unwrap(), tag::KEY_MATERIAL);
    use rsa::pkcs8::DecodePublicKey;
    rsa::RsaPublicKey::from_public_key_der(&spki).expect("SPKI");
    let r = c.request(
        RequestPayload::Get(
            Some(UniqueIdentifier(public.clone())),
            Some(KeyFormatType::TransparentRSAPublicKey),
            None,
            None,
        ),
        None,
    );
    let ResponsePayload::Get(g) = payload_of(&r) else {
        panic!()
    };
    let ManagedObject::PublicKey(pk) = &g.cryptographic_object else {
        panic!()
    };
    let KeyMaterial::TransparentRSAPublicKey(t) = &pk.key_block.key_value.key_material else {
        panic!("{pk:?}")
    };
    assert_eq!(
        t.public_exponent
            .iter()
            .skip_while(|b| **b == 0)
            .copied()
            .collect::<Vec<_>>(),
        vec![1, 0, 1]
    );
    assert_eq!(t.modulus.iter().skip_while(|b| **b == 0).count(), 256);

    // Revoke: the key cannot sign any more.
    let r = c.request(
        RequestPayload::Revoke(
            Some(UniqueIdentifier(private.clone())),
            RevocationReason(RevocationReasonCode::Superseded, None),
            None,
        ),
        None,
    );
    assert!(matches!(payload_of(&r), ResponsePayload::Revoke(_)));
    let a = one(
        &mut c,
        op::SIGN,
        vec![
            Item::text(tag::UNIQUE_IDENTIFIER, &private),
            Item::bytes(tag::DATA, b"x".to_vec()),
        ],
    );
    // The relay remembered the key when it signed; after the Revoke the refusal is
    // still the relay's own (CKA_SIGN read), not the module's.
    assert!(
        a.failed(ResultReason::PermissionDenied)
            .contains("may not sign"),
        "{a:?}"
    );

    // Destroy both halves; then they are gone.
    for id in [&private, &public] {
        let r = c.request(
            RequestPayload::Destroy(Some(UniqueIdentifier(id.clone()))),
            None,
        );
        assert!(matches!(payload_of(&r), ResponsePayload::Destroy(_)));
        let a = one(
            &mut c,
            op::GET,
            vec![Item::text(tag::UNIQUE_IDENTIFIER, id)],
        );
        a.failed(ResultReason::ItemNotFound);
    }
    let a = one(
        &mut c,
        op::SIGN,
        vec![
            Item::text(tag::UNIQUE_IDENTIFIER, &private),
            Item::bytes(tag::DATA, b"x".to_vec()),
        ],
    );
    a.failed(ResultReason::ItemNotFound);
}

#[test]
fn private_keys_are_never_exported_and_made_non_extractable() {
    let (hsm, relay) = started();
    let mut c = relay.connect();
    let (private, _) = create_rsa(&mut c, 2048, "secret");
    for format in [None, Some(kmip::key_format::PKCS1), Some(0x04)] {
        let mut p = vec![Item::text(tag::UNIQUE_IDENTIFIER, &private)];
        if let Some(f) = format {
            p.push(Item::enumeration(tag::KEY_FORMAT_TYPE, f));
        }
        one(&mut c, op::GET, p).failed(ResultReason::PermissionDenied);
    }
    // The token agrees: sensitive, never extractable.
    let out = std::process::Command::new("pkcs11-tool")
        .env("SOFTHSM2_CONF", hsm.conf())
        .args([
            "--module",
            LIB,
            "--token-label",
            LABEL,
            "--login",
            "--pin",
            PIN,
        ])
        .args(["--list-objects", "--type", "privkey"])
        .output()
        .expect("pkcs11-tool (apt-get install opensc)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("never extractable"), "{text}");
    assert!(text.contains("sensitive"), "{text}");
}

/// (key algorithm, length, curve, Cryptographic Parameters fields, verifier)
#[rstest]
#[case::rsa_pkcs1_sha256(kmip::algorithm::RSA, 2048, None, vec![(tag::PADDING_METHOD, 8), (tag::HASHING_ALGORITHM, 6)], "pkcs1-256")]
#[case::rsa_pkcs1_sha384(kmip::algorithm::RSA, 2048, None, vec![(tag::DIGITAL_SIGNATURE_ALGORITHM, 6)], "pkcs1-384")]
#[case::rsa_pkcs1_sha512(kmip::algorithm::RSA, 3072, None, vec![(tag::PADDING_METHOD, 8), (tag::HASHING_ALGORITHM, 8)], "pkcs1-512")]
#[case::rsa_default_params(kmip::algorithm::RSA, 2048, None, vec![], "pkcs1-256")]
#[case::rsa_pss_sha256(kmip::algorithm::RSA, 2048, None, vec![(tag::PADDING_METHOD, 0x0A), (tag::HASHING_ALGORITHM, 6)], "pss-256")]
#[case::rsa_pss_sha384(kmip::algorithm::RSA, 2048, None, vec![(tag::DIGITAL_SIGNATURE_ALGORITHM, 8), (tag::HASHING_ALGORITHM, 7)], "pss-384")]
#[case::ecdsa_p256(kmip::algorithm::EC, 256, Some(kmip::curve::P_256), vec![(tag::DIGITAL_SIGNATURE_ALGORITHM, 0x0E)], "p256")]
#[case::ecdsa_p256_by_length(kmip::algorithm::ECDSA, 256, None, vec![], "p256")]
#[case::ecdsa_p384(kmip::algorithm::ECDSA, 384, Some(kmip::curve::P_384), vec![(tag::CRYPTOGRAPHIC_ALGORITHM, 6), (tag::HASHING_ALGORITHM, 7)], "p384")]
fn sign_schemes_verify_independently(
    #[case] alg: u32,
    #[case] length: i32,
    #[case] curve: Option<u32>,
    #[case] params: Vec<(u32, u32)>,
    #[case] check: &str,
) {
    use rsa::pkcs8::DecodePublicKey;
    use rsa::signature::Verifier;
    let (_hsm, relay) = started();
    let mut c = relay.connect();
    let created = one(
        &mut c,
        op::CREATE_KEY_PAIR,
        create_key_pair_payload(alg, length, curve, "k"),
    );
    let private = text_of(created.ok(), tag::PRIVATE_KEY_UNIQUE_IDENTIFIER);
    let public = text_of(created.ok(), tag::PUBLIC_KEY_UNIQUE_IDENTIFIER);
    let got = one(
        &mut c,
        op::GET,
        vec![
            Item::text(tag::UNIQUE_IDENTIFIER, &public),
            Item::enumeration(tag::KEY_FORMAT_TYPE, kmip::key_format::X509),
        ],
    );
    let block = got
        .ok()
        .child(tag::PUBLIC_KEY)
        .and_then(|k| k.child(tag::KEY_BLOCK))
        .expect("Key Block");
    let spki = bytes_of(
        block.child(tag::KEY_VALUE).expect("Key Value"),
        tag::KEY_MATERIAL,
    );
    let data = b"the quick brown fox".to_vec();
    let mut p = vec![Item::text(tag::UNIQUE_IDENTIFIER, &private)];
    if !params.is_empty() {
        p.push(Item::structure(
            tag::CRYPTOGRAPHIC_PARAMETERS,
            params
                .iter()
                .map(|(t, v)| Item::enumeration(*t, *v))
                .collect(),
        ));
    }
    p.push(Item::bytes(tag::DATA, data.clone()));
    let signed = one(&mut c, op::SIGN, p);
    let sig = bytes_of(signed.ok(), tag::SIGNATURE_DATA);
    match check {
        "pkcs1-256" | "pkcs1-384" | "pkcs1-512" => {
            let key = rsa::RsaPublicKey::from_public_key_der(&spki).unwrap();
            let s = rsa::pkcs1v15::Signature::try_from(sig.as_slice()).unwrap();
            match check {
                "pkcs1-256" => {
                    rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(key).verify(&data, &s)
                }
                "pkcs1-384" => {
                    rsa::pkcs1v15::VerifyingKey::<sha2::Sha384>::new(key).verify(&data, &s)
                }
                _ => rsa::pkcs1v15::VerifyingKey::<sha2::Sha512>::new(key).verify(&data, &s),
            }
            .expect("verifies")
        }
        "pss-256" | "pss-384" => {
            let key = rsa::RsaPublicKey::from_public_key_der(&spki).unwrap();
            let s = rsa::pss::Signature::try_from(sig.as_slice()).unwrap();
            if check == "pss-256" {
                rsa::pss::VerifyingKey::<sha2::Sha256>::new(key).verify(&data, &s)
            } else {
                rsa::pss::VerifyingKey::<sha2::Sha384>::new(key).verify(&data, &s)
            }
            .expect("verifies")
        }
        "p256" => {
            use p256::pkcs8::DecodePublicKey;
            let key = p256::ecdsa::VerifyingKey::from_public_key_der(&spki).unwrap();
            let s = p256::ecdsa::Signature::from_der(&sig).expect("DER signature");
            key.verify(&data, &s).expect("verifies");
        }
        "p384" => {
            use p384::pkcs8::DecodePublicKey;
            let key = p384::ecdsa::VerifyingKey::from_public_key_der(&spki).unwrap();
            let s = p384::ecdsa::Signature::from_der(&sig).expect("DER signature");
            key.verify(&data, &s).expect("verifies");
        }
        other => unreachable!("{other}"),
    }
}

/// The Key Format Type and Key Material of a Get answer.
fn key_block(a: &Answer) -> (u32, Item) {
    let block = a
        .ok()
        .child(tag::PUBLIC_KEY)
        .and_then(|k| k.child(tag::KEY_BLOCK))
        .expect("Key Block");
    let format = match block.child(tag::KEY_FORMAT_TYPE).map(|i| &i.value) {
        Some(kmip_relay::ttlv::Value::Enumeration(f)) => *f,
        other => panic!("Key Format Type: {other:?}"),
    };
    let material = block
        .child(tag::KEY_VALUE)
        .and_then(|v| v.child(tag::KEY_MATERIAL))
        .expect("Key Material")
        .clone();
    (format, material)
}

fn key_bytes(material: &Item) -> Vec<u8> {
    match &material.value {
        kmip_relay::ttlv::Value::ByteString(b) => b.clone(),
        other => panic!("key material is not bytes: {other:?}"),
    }
}

#[test]
fn ec_public_key_formats() {
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    use p256::pkcs8::DecodePublicKey;
    let (_hsm, relay) = started();
    let mut c = relay.connect();
    let created = one(
        &mut c,
        op::CREATE_KEY_PAIR,
        create_key_pair_payload(kmip::algorithm::EC, 256, Some(kmip::curve::P_256), "ec"),
    );
    let public = text_of(created.ok(), tag::PUBLIC_KEY_UNIQUE_IDENTIFIER);
    let get = |c: &mut Client, f: Option<u32>| {
        let mut p = vec![Item::text(tag::UNIQUE_IDENTIFIER, &public)];
        if let Some(f) = f {
            p.push(Item::enumeration(tag::KEY_FORMAT_TYPE, f));
        }
        one(c, op::GET, p)
    };
    // No format named (Cascade's client): Raw holding a DER SubjectPublicKeyInfo.
    let (format, material) = key_block(&get(&mut c, None));
    assert_eq!(format, kmip::key_format::RAW);
    let spki = key_bytes(&material);
    let key = p256::PublicKey::from_public_key_der(&spki).expect("P-256 SPKI");
    // Raw named: the same.
    let (format, material) = key_block(&get(&mut c, Some(kmip::key_format::RAW)));
    assert_eq!(
        (format, key_bytes(&material)),
        (kmip::key_format::RAW, spki.clone())
    );
    // X.509 named: X.509, the same SPKI.
    let (format, material) = key_block(&get(&mut c, Some(kmip::key_format::X509)));
    assert_eq!(
        (format, key_bytes(&material)),
        (kmip::key_format::X509, spki.clone())
    );
    // Transparent ECDSA (KMIP 1.x) and Transparent EC (KMIP 2.x): the curve and point.
    for transparent in [
        kmip::key_format::TRANSPARENT_ECDSA_PUBLIC,
        kmip::key_format::TRANSPARENT_EC_PUBLIC,
    ] {
        let (format, km) = key_block(&get(&mut c, Some(transparent)));
        assert_eq!(format, transparent);
        assert_eq!(
            km.child(tag::RECOMMENDED_CURVE).map(|i| i.value.clone()),
            Some(kmip_relay::ttlv::Value::Enumeration(kmip::curve::P_256))
        );
        assert_eq!(
            bytes_of(&km, tag::Q_STRING),
            key.to_encoded_point(false).as_bytes()
        );
    }
    // Anything else is refused, naming what is offered.
    for not_offered in [
        kmip::key_format::PKCS8,
        kmip::key_format::OPAQUE,
        kmip::key_format::PKCS1,
    ] {
        let message = get(&mut c, Some(not_offered))
            .failed(ResultReason::KeyFormatTypeNotSupported)
            .to_string();
        assert!(
            message.contains("offered: Raw (0x01), X.509 (0x05)"),
            "{message}"
        );
    }
}

#[test]
fn rsa_public_key_formats() {
    let (_hsm, relay) = started();
    let mut c = relay.connect();
    let (_, public) = create_rsa(&mut c, 2048, "rsa-formats");
    let get = |c: &mut Client, f: Option<u32>| {
        let mut p = vec![Item::text(tag::UNIQUE_IDENTIFIER, &public)];
        if let Some(f) = f {
            p.push(Item::enumeration(tag::KEY_FORMAT_TYPE, f));
        }
        one(c, op::GET, p)
    };
    // No format named: PKCS#1, as before.
    let (format, material) = key_block(&get(&mut c, None));
    assert_eq!(format, kmip::key_format::PKCS1);
    use rsa::pkcs1::DecodeRsaPublicKey;
    rsa::RsaPublicKey::from_pkcs1_der(&key_bytes(&material)).expect("PKCS#1");
    // Raw has no defined content for RSA: refused rather than guessed.
    for not_offered in [
        kmip::key_format::RAW,
        kmip::key_format::PKCS8,
        kmip::key_format::TRANSPARENT_EC_PUBLIC,
    ] {
        let message = get(&mut c, Some(not_offered))
            .failed(ResultReason::KeyFormatTypeNotSupported)
            .to_string();
        assert!(
            message.contains(
                "offered: PKCS#1 (0x03), X.509 (0x05), Transparent RSA Public Key (0x0B)"
            ),
            "{message}"
        );
    }
}

#[test]
fn names_locate_modify_and_add() {
    let (_hsm, relay) = started();
    let mut c = relay.connect();
    let (private, public) = create_rsa(&mut c, 2048, "alpha");
    let locate = |c: &mut Client, name: &str, object_type: Option<u32>| -> Vec<String> {
        let mut p = vec![name_attr(name)];
        if let Some(t) = object_type {
            p.push(attr("Object Type", Item::enumeration(0, t)));
        }
        let a = one(c, op::LOCATE, p);
        a.ok()
            .all(tag::UNIQUE_IDENTIFIER)
            .map(|i| match &i.value {
                kmip_relay::ttlv::Value::TextString(s) => s.clone(),
                _ => panic!(),
            })
            .collect()
    };
    assert_eq!(
        locate(&mut c, "alpha", Some(kmip::object_type::PRIVATE_KEY)),
        vec![private.clone()]
    );
    assert_eq!(locate(&mut c, "alpha.pub", None), vec![public.clone()]);
    assert_eq!(
        locate(&mut c, "alpha", Some(kmip::object_type::PUBLIC_KEY)),
        Vec::<String>::new()
    );
    assert!(locate(&mut c, "nobody", None).is_empty());

    // Modify Attribute renames; the old name is gone.
    let a = one(
        &mut c,
        op::MODIFY_ATTRIBUTE,
        vec![
            Item::text(tag::UNIQUE_IDENTIFIER, &private),
            name_attr("beta"),
        ],
    );
    assert_eq!(text_of(a.ok(), tag::UNIQUE_IDENTIFIER), private);
    assert_eq!(locate(&mut c, "beta", None), vec![private.clone()]);
    assert!(locate(&mut c, "alpha", None).is_empty());

    // Get Attributes shows the Name (CKA_LABEL), asked for or with nothing asked for;
    // an attribute the relay does not keep is left out.
    let names = |c: &mut Client, uid: &str, asked: &[&str]| -> Vec<String> {
        let mut p = vec![Item::text(tag::UNIQUE_IDENTIFIER, uid)];
        p.extend(asked.iter().map(|a| Item::text(tag::ATTRIBUTE_NAME, *a)));
        let a = one(c, op::GET_ATTRIBUTES, p);
        assert_eq!(text_of(a.ok(), tag::UNIQUE_IDENTIFIER), uid);
        a.ok()
            .all(tag::ATTRIBUTE)
            .map(|attribute| {
                assert_eq!(text_of(attribute, tag::ATTRIBUTE_NAME), "Name");
                let value = attribute
                    .child(tag::ATTRIBUTE_VALUE)
                    .expect("Attribute Value");
                text_of(value, tag::NAME_VALUE)
            })
            .collect()
    };
    assert_eq!(names(&mut c, &private, &["Name"]), vec!["beta".to_string()]);
    assert_eq!(names(&mut c, &public, &[]), vec!["alpha.pub".to_string()]);
    assert!(names(&mut c, &private, &["Contact Information"]).is_empty());

    // Add Attribute: refused on a named object, accepted on an unnamed one.
    one(
        &mut c,
        op::ADD_ATTRIBUTE,
        vec![
            Item::text(tag::UNIQUE_IDENTIFIER, &private),
            name_attr("gamma"),
        ],
    )
    .failed(ResultReason::IllegalOperation);
    let mut unnamed = create_key_pair_payload(kmip::algorithm::EC, 256, None, "x");
    unnamed.truncate(1); // common template only: no names
    let created = one(&mut c, op::CREATE_KEY_PAIR, unnamed);
    let ec_private = text_of(created.ok(), tag::PRIVATE_KEY_UNIQUE_IDENTIFIER);
    one(
        &mut c,
        op::MODIFY_ATTRIBUTE,
        vec![
            Item::text(tag::UNIQUE_IDENTIFIER, &ec_private),
            name_attr("delta"),
        ],
    )
    .failed(ResultReason::ItemNotFound);
    one(
        &mut c,
        op::ADD_ATTRIBUTE,
        vec![
            Item::text(tag::UNIQUE_IDENTIFIER, &ec_private),
            name_attr("delta"),
        ],
    )
    .ok();
    assert_eq!(locate(&mut c, "delta", None), vec![ec_private.clone()]);
    // Only Name is editable.
    one(
        &mut c,
        op::MODIFY_ATTRIBUTE,
        vec![
            Item::text(tag::UNIQUE_IDENTIFIER, &ec_private),
            attr("Contact Information", Item::text(0, "x")),
        ],
    )
    .failed(ResultReason::InvalidField);
    // Locate with no filter finds all four objects.
    let a = one(&mut c, op::LOCATE, vec![]);
    assert_eq!(a.ok().all(tag::UNIQUE_IDENTIFIER).count(), 4);
}

#[test]
fn rng_retrieve() {
    let (_hsm, relay) = started();
    let mut c = relay.connect();
    let r = c.request(RequestPayload::RNGRetrieve(DataLength(32)), None);
    let ResponsePayload::RNGRetrieve(p) = payload_of(&r) else {
        panic!()
    };
    assert_eq!(p.data.len(), 32);
    for bad in [0, -1, 1_000_000] {
        one(
            &mut c,
            op::RNG_RETRIEVE,
            vec![Item::integer(tag::DATA_LENGTH, bad)],
        )
        .failed(ResultReason::InvalidField);
    }
    one(&mut c, op::RNG_RETRIEVE, vec![]).failed(ResultReason::MissingData);
}

#[test]
fn batches_echo_items_and_use_the_id_placeholder() {
    let (_hsm, relay) = started();
    let mut c = relay.connect();
    let request = request_tree(
        &[
            (
                op::CREATE_KEY_PAIR,
                create_key_pair_payload(kmip::algorithm::EC, 256, None, "batch"),
            ),
            (op::ACTIVATE, vec![]),
            (op::SIGN, vec![Item::bytes(tag::DATA, b"batched".to_vec())]),
            (op::QUERY, vec![Item::enumeration(tag::QUERY_FUNCTION, 2)]),
        ],
        None,
    );
    let a = answers(&c.tree(&request));
    assert_eq!(a.len(), 4);
    for (i, (want_op, ans)) in [op::CREATE_KEY_PAIR, op::ACTIVATE, op::SIGN, op::QUERY]
        .iter()
        .zip(&a)
        .enumerate()
    {
        assert_eq!(ans.operation, Some(*want_op));
        assert_eq!(ans.batch_id, Some(vec![i as u8 + 1]));
        ans.ok();
    }
    let private = text_of(a[0].ok(), tag::PRIVATE_KEY_UNIQUE_IDENTIFIER);
    assert_eq!(text_of(a[2].ok(), tag::UNIQUE_IDENTIFIER), private);

    // Stop (default): after a failure the rest is not run. Continue: it is.
    let failing = [
        (op::GET, vec![Item::text(tag::UNIQUE_IDENTIFIER, "priv-00")]),
        (op::QUERY, vec![]),
    ];
    let a = answers(&c.tree(&request_tree(&failing, None)));
    a[0].failed(ResultReason::ItemNotFound);
    assert!(a[1]
        .failed(ResultReason::GeneralFailure)
        .contains("not run"));
    let mut cont = request_tree(&failing, None);
    if let kmip_relay::ttlv::Value::Structure(fields) = &mut cont.value {
        if let kmip_relay::ttlv::Value::Structure(h) = &mut fields[0].value {
            h.insert(
                1,
                Item::enumeration(tag::BATCH_ERROR_CONTINUATION_OPTION, 1),
            );
        }
    }
    let a = answers(&c.tree(&cont));
    a[0].failed(ResultReason::ItemNotFound);
    a[1].ok();
}

#[rstest]
#[case::empty("", ResultReason::ItemNotFound)]
#[case::garbage("nonsense", ResultReason::ItemNotFound)]
#[case::not_hex("priv-zz", ResultReason::ItemNotFound)]
#[case::upper_case("priv-AB", ResultReason::ItemNotFound)]
#[case::unknown("priv-0011223344", ResultReason::ItemNotFound)]
#[case::overlong("priv-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", ResultReason::ItemNotFound)]
#[case::public_for_sign("pub-0011", ResultReason::InvalidField)]
fn bad_identifiers_are_kmip_errors(#[case] id: &str, #[case] reason: ResultReason) {
    let (_hsm, relay) = started();
    let mut c = relay.connect();
    let sign = one(
        &mut c,
        op::SIGN,
        vec![
            Item::text(tag::UNIQUE_IDENTIFIER, id),
            Item::bytes(tag::DATA, vec![1]),
        ],
    );
    sign.failed(reason);
    if reason == ResultReason::ItemNotFound {
        for operation in [op::GET, op::ACTIVATE, op::DESTROY, op::REVOKE] {
            one(
                &mut c,
                operation,
                vec![Item::text(tag::UNIQUE_IDENTIFIER, id)],
            )
            .failed(reason);
        }
    }
    // An identifier of the wrong TTLV type.
    one(
        &mut c,
        op::GET,
        vec![Item::integer(tag::UNIQUE_IDENTIFIER, 7)],
    )
    .failed(ResultReason::InvalidField);
    // None at all, and no placeholder.
    one(&mut c, op::DESTROY, vec![]).failed(ResultReason::MissingData);
    // Still serving.
    one(&mut c, op::QUERY, vec![]).ok();
}

#[rstest]
#[case::create(0x01)]
#[case::register(0x03)]
#[case::encrypt(0x1F)]
#[case::vendor(0x8000_0001)]
fn unknown_operations_are_not_supported(#[case] operation: u32) {
    let (_hsm, relay) = started();
    let mut c = relay.connect();
    let a = one(&mut c, operation, vec![]);
    a.failed(ResultReason::OperationNotSupported);
    assert_eq!(a.operation, Some(operation));
}

#[rstest]
#[case::rsa_too_small(
    create_key_pair_payload(kmip::algorithm::RSA, 1024, None, "x"),
    ResultReason::InvalidField
)]
#[case::rsa_too_big(
    create_key_pair_payload(kmip::algorithm::RSA, 8192, None, "x"),
    ResultReason::InvalidField
)]
#[case::p521(
    create_key_pair_payload(kmip::algorithm::EC, 521, Some(0x0D), "x"),
    ResultReason::InvalidField
)]
#[case::aes(create_key_pair_payload(3, 256, None, "x"), ResultReason::InvalidField)]
#[case::no_algorithm(vec![], ResultReason::MissingData)]
fn create_key_pair_refuses(#[case] payload: Vec<Item>, #[case] reason: ResultReason) {
    let (_hsm, relay) = started();
    let mut c = relay.connect();
    one(&mut c, op::CREATE_KEY_PAIR, payload).failed(reason);
}

#[test]
fn identifiers_survive_a_restart() {
    let hsm = softhsm();
    let relay = Relay::start(&hsm, &RelayOptions::default());
    let mut c = relay.connect();
    let (private, public) = create_rsa(&mut c, 2048, "durable");
    let before = rsa_public(&mut c, &public);
    drop(c);
    drop(relay);
    let relay = Relay::start(&hsm, &RelayOptions::default());
    let mut c = relay.connect();
    assert_eq!(rsa_public(&mut c, &public), before);
    one(
        &mut c,
        op::SIGN,
        vec![
            Item::text(tag::UNIQUE_IDENTIFIER, &private),
            Item::bytes(tag::DATA, vec![1]),
        ],
    )
    .ok();
}

#[test]
fn concurrent_clients_share_the_pool() {
    let (_hsm, relay) = started();
    let mut c = relay.connect();
    let (private, _) = create_rsa(&mut c, 2048, "shared");
    std::thread::scope(|s| {
        for t in 0..6 {
            let relay = &relay;
            let private = private.clone();
            s.spawn(move || {
                let mut c = relay.connect();
                for i in 0..10u8 {
                    one(
                        &mut c,
                        op::SIGN,
                        vec![
                            Item::text(tag::UNIQUE_IDENTIFIER, &private),
                            Item::bytes(tag::DATA, vec![t, i]),
                        ],
                    )
                    .ok();
                }
            });
        }
    });
}

#[test]
fn token_credentials_map_to_label_and_pin() {
    use kmip_protocol::auth::{CredentialType, UsernameAndPasswordCredential};
    let hsm = softhsm();
    let relay = Relay::start(
        &hsm,
        &RelayOptions {
            with_pin: false,
            // A short login delay: a wrong password delays the next C_Login.
            auth: "credentials = \"token\"\nlogin_delay_ms = 1".into(),
            ..Default::default()
        },
    );
    fn cred<'a>(user: &'a str, pw: &'a str) -> Option<(&'a str, &'a str)> {
        Some((user, pw))
    }
    let query = |c: &mut Client, cr: Option<(&str, &str)>| {
        answers(&c.tree(&request_tree(&[(op::QUERY, vec![])], cr))).remove(0)
    };
    let mut c = relay.connect();
    // Discover Versions needs no credential.
    answers(&c.tree(&request_tree(&[(op::DISCOVER_VERSIONS, vec![])], None)))[0].ok();
    query(&mut c, None).failed(ResultReason::PermissionDenied);
    query(&mut c, cred(LABEL, "wrong-password-9q")).failed(ResultReason::PermissionDenied);
    query(&mut c, cred("other-token", PIN)).failed(ResultReason::PermissionDenied);
    // A failed login does not lock the right one out (after the login delay).
    std::thread::sleep(std::time::Duration::from_millis(20));
    query(&mut c, cred(LABEL, PIN)).ok();
    // kmip-protocol's credential form, and a key operation that needs the login.
    let kp = CredentialType::UsernameAndPassword(UsernameAndPasswordCredential::new(
        LABEL.into(),
        Some(PIN.into()),
    ));
    let r = c.request(RequestPayload::RNGRetrieve(DataLength(8)), Some(kp));
    payload_of(&r);
    let created = answers(&c.tree(&request_tree(
        &[(
            op::CREATE_KEY_PAIR,
            create_key_pair_payload(kmip::algorithm::EC, 256, None, "cred"),
        )],
        cred(LABEL, PIN),
    )))
    .remove(0);
    created.ok();
    // Another connection is not trusted because this one logged in.
    let mut other = relay.connect();
    query(&mut other, None).failed(ResultReason::PermissionDenied);
    query(&mut other, cred(LABEL, "wrong-password-9q")).failed(ResultReason::PermissionDenied);
    query(&mut other, cred(LABEL, PIN)).ok();
    // Authenticated clients learn the module and the token's serial from Query.
    let a = answers(&c.tree(&request_tree(
        &[(op::QUERY, vec![Item::enumeration(tag::QUERY_FUNCTION, 3)])],
        cred(LABEL, PIN),
    )))
    .remove(0);
    let info = a
        .ok()
        .child(tag::SERVER_INFORMATION)
        .expect("Server Information");
    assert!(text_of(info, tag::X_PKCS11_LIBRARY).contains("SoftHSM"));
    assert!(text_of(info, tag::X_TOKEN).contains("serial"));
    // Passwords never reach the log.
    let log = relay.log();
    assert!(
        !log.contains(PIN) && !log.contains("wrong-password-9q"),
        "{log}"
    );
}

/// 200 wrong passwords from 4 connections at once cost the token at most
/// `max_logins_per_minute` (8) C_Logins, counted in the PKCS#11 shim's trace, and the
/// right password still works after the delay.
#[test]
fn wrong_passwords_are_throttled_before_they_reach_the_token() {
    let hsm = softhsm();
    let shim = Shim::new(hsm.dir(), "");
    let relay = Relay::start(
        &hsm,
        &RelayOptions {
            with_pin: false,
            auth: "credentials = \"token\"\nlogin_delay_ms = 300\nlogin_delay_max_ms = 1000\n\
                   max_logins_per_minute = 8"
                .into(),
            lib: Some(Shim::lib()),
            env: shim.env(),
            ..Default::default()
        },
    );
    let query = |c: &mut Client, pw: &str| {
        answers(&c.tree(&request_tree(&[(op::QUERY, vec![])], Some((LABEL, pw))))).remove(0)
    };
    std::thread::scope(|s| {
        for t in 0..4 {
            let relay = &relay;
            s.spawn(move || {
                let mut c = relay.connect();
                for i in 0..50 {
                    query(&mut c, &format!("guess-{t}-{i}")).failed(ResultReason::PermissionDenied);
                }
            });
        }
    });
    let guessed = shim.calls("C_Login");
    assert!(
        (1..=8).contains(&guessed),
        "{guessed} C_Logins for 200 wrong passwords\n{}",
        relay.log()
    );
    assert_eq!(
        relay.log().matches("refused by the token").count(),
        guessed,
        "each failed C_Login is logged"
    );
    // The right password: refused while a delay runs (without a C_Login), then good.
    let mut c = relay.connect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let a = query(&mut c, PIN);
        if a.status == 0 {
            break;
        }
        assert!(
            a.failed(ResultReason::PermissionDenied)
                .contains("retry in"),
            "{a:?}"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the right PIN never got through"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(shim.calls("C_Login"), guessed + 1);
    // Logged in: wrong passwords are compared in memory and never reach the token.
    for i in 0..20 {
        query(&mut c, &format!("late-guess-{i}")).failed(ResultReason::PermissionDenied);
    }
    query(&mut c, PIN).ok();
    assert_eq!(shim.calls("C_Login"), guessed + 1, "{}", relay.log());
}

#[test]
fn kmip_protocol_reads_every_response_shape() {
    // Create (not supported) and an unknown-id Get come back in shapes kmip-protocol's
    // positional decoder accepts: Operation, Batch Item ID, Status, Reason, Message.
    let (_hsm, relay) = started();
    let mut c = relay.connect();
    let r = c.request(
        RequestPayload::Get(Some(UniqueIdentifier("pub-ff".into())), None, None, None),
        None,
    );
    let item = &r.batch_items[0];
    assert_eq!(item.result_status, ResultStatus::OperationFailed);
    assert_eq!(item.operation, Some(Operation::Get));
    assert!(item
        .result_message
        .as_deref()
        .unwrap_or("")
        .contains("pub-ff"));
    let _ = CryptographicLength(0);
}
