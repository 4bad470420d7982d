//! `[testing] mimic = "seed-003"`: the relay behaves like seed 003's relay as released
//! (cascade-hsm-bridge 0.1.0-alpha). A real `kmip2pkcs11` on a fresh SoftHSMv2 token,
//! logged in as that relay's clients do (Username = token label, Password = user PIN),
//! through a real TLS 1.3 client; signatures checked with RustCrypto's verifiers.

mod support;

use kmip_protocol::auth::{CredentialType, UsernameAndPasswordCredential};
use kmip_protocol::types::common::{
    CryptographicAlgorithm, CryptographicParameters, CryptographicUsageMask, Data, KeyMaterial,
    Operation, UniqueIdentifier,
};
use kmip_protocol::types::request::{
    self as req, CommonTemplateAttribute, PrivateKeyTemplateAttribute, PublicKeyTemplateAttribute,
    QueryFunction, RequestPayload,
};
use kmip_protocol::types::response::{ManagedObject, ResponsePayload, ResultStatus};
use kmip_relay::kmip::{self, operation as op, tag, ResultReason};
use kmip_relay::ttlv::{Item, Value};
use rstest::rstest;
use support::*;

fn mimic_relay() -> (Hsm, Relay) {
    let hsm = softhsm();
    let relay = Relay::start(
        &hsm,
        &RelayOptions {
            with_pin: false,
            auth: "credentials = \"token\"".into(),
            testing: "mimic = \"seed-003\"".into(),
            ..Default::default()
        },
    );
    (hsm, relay)
}

/// The answers to one request of several items, logged in.
fn batch(c: &mut Client, items: &[(u32, Vec<Item>)]) -> Vec<Answer> {
    answers(&c.tree(&request_tree(items, Some((LABEL, PIN)))))
}

/// The answer to a one-item request, logged in.
fn ask(c: &mut Client, operation: u32, payload: Vec<Item>) -> Answer {
    let mut a = batch(c, &[(operation, payload)]);
    assert_eq!(a.len(), 1, "{a:?}");
    a.remove(0)
}

fn credential() -> Option<CredentialType> {
    Some(CredentialType::UsernameAndPassword(
        UsernameAndPasswordCredential::new(LABEL.into(), Some(PIN.into())),
    ))
}

/// Create Key Pair with only Cryptographic Algorithm and Length (Common template).
fn create(c: &mut Client, alg: u32, length: i32) -> (String, String) {
    let a = ask(
        c,
        op::CREATE_KEY_PAIR,
        vec![Item::structure(
            tag::COMMON_TEMPLATE_ATTRIBUTE,
            vec![
                attr("Cryptographic Algorithm", Item::enumeration(0, alg)),
                attr("Cryptographic Length", Item::integer(0, length)),
            ],
        )],
    );
    (
        text_of(a.ok(), tag::PRIVATE_KEY_UNIQUE_IDENTIFIER),
        text_of(a.ok(), tag::PUBLIC_KEY_UNIQUE_IDENTIFIER),
    )
}

/// Whether `uid` is `<upper-case hex>_<half>`.
fn seed003_uid(uid: &str, half: &str) -> bool {
    uid.strip_suffix(&format!("_{half}")).is_some_and(|hex| {
        !hex.is_empty()
            && hex.len() % 2 == 0
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
    })
}

/// Key Format Type and Key Material of a Get answer.
fn key_block(a: &Answer) -> (u32, Item) {
    let block = a
        .ok()
        .child(tag::PUBLIC_KEY)
        .and_then(|k| k.child(tag::KEY_BLOCK))
        .expect("Key Block");
    let Some(Value::Enumeration(format)) = block.child(tag::KEY_FORMAT_TYPE).map(|i| &i.value)
    else {
        panic!("no Key Format Type in {block:?}")
    };
    let material = block
        .child(tag::KEY_VALUE)
        .and_then(|v| v.child(tag::KEY_MATERIAL))
        .expect("Key Material");
    (*format, material.clone())
}

fn get(c: &mut Client, uid: &str, format: Option<u32>) -> Answer {
    let mut p = vec![Item::text(tag::UNIQUE_IDENTIFIER, uid)];
    if let Some(f) = format {
        p.push(Item::enumeration(tag::KEY_FORMAT_TYPE, f));
    }
    ask(c, op::GET, p)
}

fn sign(c: &mut Client, uid: &str, params: &[(u32, u32)], data: &[u8]) -> Answer {
    let mut p = vec![Item::text(tag::UNIQUE_IDENTIFIER, uid)];
    if !params.is_empty() {
        p.push(Item::structure(
            tag::CRYPTOGRAPHIC_PARAMETERS,
            params
                .iter()
                .map(|(t, v)| Item::enumeration(*t, *v))
                .collect(),
        ));
    }
    p.push(Item::bytes(tag::DATA, data.to_vec()));
    ask(c, op::SIGN, p)
}

fn big(item: &Item, t: u32) -> Vec<u8> {
    match item.child(t).map(|i| &i.value) {
        Some(Value::BigInteger(v)) => v.iter().copied().skip_while(|b| *b == 0).collect(),
        other => panic!("no Big Integer {t:#x}: {other:?}"),
    }
}

#[test]
fn query_lists_exactly_the_six_advertised_operations() {
    let (_hsm, relay) = mimic_relay();
    let mut c = relay.connect();
    let r = c.request(
        RequestPayload::Query(vec![
            QueryFunction::QueryOperations,
            QueryFunction::QueryServerInformation,
        ]),
        credential(),
    );
    let item = &r.batch_items[0];
    assert_eq!(item.result_status, ResultStatus::Success, "{item:?}");
    let Some(ResponsePayload::Query(q)) = &item.payload else {
        panic!("{item:?}")
    };
    assert_eq!(
        q.operations.clone().unwrap_or_default(),
        vec![
            Operation::DiscoverVersions,
            Operation::Query,
            Operation::CreateKeyPair,
            Operation::Get,
            Operation::Activate,
            Operation::Sign,
        ],
        "Modify Attribute runs but is not advertised"
    );
    assert!(q
        .vendor_identification
        .as_deref()
        .unwrap_or("")
        .contains("seed-003"));
    // The start-up warning says what the relay stands in for.
    assert!(relay.log().contains("mimicking the seed-003 relay"));
}

#[rstest]
#[case::locate(op::LOCATE, vec![name_attr("x")])]
#[case::destroy(op::DESTROY, vec![Item::text(tag::UNIQUE_IDENTIFIER, "00_priv")])]
#[case::revoke(op::REVOKE, vec![Item::text(tag::UNIQUE_IDENTIFIER, "00_priv")])]
#[case::rng_retrieve(op::RNG_RETRIEVE, vec![Item::integer(tag::DATA_LENGTH, 16)])]
#[case::add_attribute(op::ADD_ATTRIBUTE, vec![Item::text(tag::UNIQUE_IDENTIFIER, "00_priv"), name_attr("x")])]
#[case::get_attributes(0x0B, vec![Item::text(tag::UNIQUE_IDENTIFIER, "00_priv")])]
#[case::create(op::CREATE, vec![])]
fn other_operations_are_not_supported(#[case] operation: u32, #[case] payload: Vec<Item>) {
    let (_hsm, relay) = mimic_relay();
    let mut c = relay.connect();
    let a = ask(&mut c, operation, payload);
    assert!(a
        .failed(ResultReason::OperationNotSupported)
        .contains("seed-003"));
    assert_eq!(a.operation, Some(operation));
    ask(&mut c, op::QUERY, vec![]).ok();
}

#[rstest]
#[case::domain_parameters(
    "Cryptographic Domain Parameters",
    create_key_pair_payload(kmip::algorithm::EC, 256, Some(kmip::curve::P_256), "k")
)]
#[case::recommended_curve("Recommended Curve", vec![Item::structure(
    tag::COMMON_TEMPLATE_ATTRIBUTE,
    vec![
        attr("Cryptographic Algorithm", Item::enumeration(0, kmip::algorithm::ECDSA)),
        attr("Recommended Curve", Item::enumeration(0, kmip::curve::P_256)),
    ],
)])]
#[case::in_the_private_template("State", vec![
    Item::structure(
        tag::COMMON_TEMPLATE_ATTRIBUTE,
        vec![attr("Cryptographic Algorithm", Item::enumeration(0, kmip::algorithm::ECDSA))],
    ),
    Item::structure(
        tag::PRIVATE_KEY_TEMPLATE_ATTRIBUTE,
        vec![attr("State", Item::enumeration(0, 1))],
    ),
])]
fn an_unknown_attribute_fails_the_whole_request(
    #[case] attribute: &str,
    #[case] create_payload: Vec<Item>,
) {
    let (hsm, relay) = mimic_relay();
    let mut c = relay.connect();
    // Alone, and after a Query in the same request: nothing of it runs.
    for items in [
        vec![(op::CREATE_KEY_PAIR, create_payload.clone())],
        vec![
            (op::QUERY, vec![]),
            (op::CREATE_KEY_PAIR, create_payload.clone()),
        ],
    ] {
        let a = batch(&mut c, &items);
        assert_eq!(a.len(), 1, "one failed item for the whole request: {a:?}");
        let message = a[0].failed(ResultReason::GeneralFailure);
        assert!(message.contains(attribute), "{message}");
    }
    // No key was made.
    let out = std::process::Command::new("pkcs11-tool")
        .env("SOFTHSM2_CONF", hsm.conf())
        .args(["--module", LIB, "--token-label", LABEL, "--login"])
        .args(["--pin", PIN, "--list-objects"])
        .output()
        .expect("pkcs11-tool (apt-get install opensc)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("Private Key Object"), "{text}");
}

#[rstest]
#[case::rsa_2048(kmip::algorithm::RSA, 2048)]
#[case::ecdsa_p256(kmip::algorithm::ECDSA, 256)]
#[case::ec_384_is_still_p256(kmip::algorithm::EC, 384)]
fn keys_from_algorithm_and_length_only_with_fixed_get_formats(
    #[case] alg: u32,
    #[case] length: i32,
) {
    use p256::pkcs8::DecodePublicKey;
    let (_hsm, relay) = mimic_relay();
    let mut c = relay.connect();
    let (private, public) = create(&mut c, alg, length);
    assert!(seed003_uid(&private, "priv"), "{private}");
    assert!(seed003_uid(&public, "pub"), "{public}");
    assert_eq!(
        private.trim_end_matches("_priv"),
        public.trim_end_matches("_pub")
    );
    let activated = ask(
        &mut c,
        op::ACTIVATE,
        vec![Item::text(tag::UNIQUE_IDENTIFIER, &private)],
    );
    assert_eq!(text_of(activated.ok(), tag::UNIQUE_IDENTIFIER), private);
    // Whatever format is asked for, the same one comes back.
    for asked in [
        None,
        Some(kmip::key_format::X509),
        Some(kmip::key_format::PKCS1),
        Some(kmip::key_format::PKCS8),
        Some(kmip::key_format::TRANSPARENT_ECDSA_PUBLIC),
    ] {
        let a = get(&mut c, &public, asked);
        assert_eq!(text_of(a.ok(), tag::UNIQUE_IDENTIFIER), public);
        let (format, material) = key_block(&a);
        if alg == kmip::algorithm::RSA {
            assert_eq!(
                format,
                kmip::key_format::TRANSPARENT_RSA_PUBLIC,
                "{asked:?}"
            );
            assert_eq!(big(&material, tag::MODULUS).len(), 256);
            assert_eq!(big(&material, tag::PUBLIC_EXPONENT), vec![1, 0, 1]);
        } else {
            assert_eq!(format, kmip::key_format::RAW, "{asked:?}");
            let Value::ByteString(spki) = &material.value else {
                panic!("{material:?}")
            };
            p256::PublicKey::from_public_key_der(spki).expect("a P-256 SPKI");
        }
    }
}

#[rstest]
#[case::no_parameters(&[])]
#[case::no_cryptographic_algorithm(&[(tag::PADDING_METHOD, 8), (tag::HASHING_ALGORITHM, 6)])]
#[case::pss(&[(tag::CRYPTOGRAPHIC_ALGORITHM, 4), (tag::PADDING_METHOD, 0x0A)])]
#[case::sha512(&[(tag::CRYPTOGRAPHIC_ALGORITHM, 4), (tag::HASHING_ALGORITHM, 8)])]
#[case::ecdsa_on_an_rsa_key(&[(tag::CRYPTOGRAPHIC_ALGORITHM, 6)])]
fn sign_refuses_without_a_fitting_cryptographic_algorithm(#[case] params: &[(u32, u32)]) {
    let (_hsm, relay) = mimic_relay();
    let mut c = relay.connect();
    let (private, _) = create(&mut c, kmip::algorithm::RSA, 2048);
    sign(&mut c, &private, params, b"data").failed(ResultReason::GeneralFailure);
}

#[rstest]
#[case::rsa_pkcs1_sha256(kmip::algorithm::RSA, 2048, &[(tag::CRYPTOGRAPHIC_ALGORITHM, 4), (tag::PADDING_METHOD, 8), (tag::HASHING_ALGORITHM, 6)])]
#[case::rsa_algorithm_only(kmip::algorithm::RSA, 2048, &[(tag::CRYPTOGRAPHIC_ALGORITHM, 4)])]
#[case::ecdsa_sha256(kmip::algorithm::ECDSA, 256, &[(tag::CRYPTOGRAPHIC_ALGORITHM, 6), (tag::HASHING_ALGORITHM, 6)])]
fn sha256_signatures_verify_independently(
    #[case] alg: u32,
    #[case] length: i32,
    #[case] params: &[(u32, u32)],
) {
    use rsa::signature::Verifier;
    let (_hsm, relay) = mimic_relay();
    let mut c = relay.connect();
    let (private, public) = create(&mut c, alg, length);
    let data = b"seed-003 signs what it hashes".to_vec();
    let signature = bytes_of(
        sign(&mut c, &private, params, &data).ok(),
        tag::SIGNATURE_DATA,
    );
    let (_, material) = key_block(&get(&mut c, &public, None));
    if alg == kmip::algorithm::RSA {
        let key = rsa::RsaPublicKey::new(
            rsa::BigUint::from_bytes_be(&big(&material, tag::MODULUS)),
            rsa::BigUint::from_bytes_be(&big(&material, tag::PUBLIC_EXPONENT)),
        )
        .expect("RSA key");
        let s = rsa::pkcs1v15::Signature::try_from(signature.as_slice()).unwrap();
        rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(key)
            .verify(&data, &s)
            .expect("PKCS#1 v1.5 SHA-256 verifies");
    } else {
        use p256::pkcs8::DecodePublicKey;
        let Value::ByteString(spki) = &material.value else {
            panic!("{material:?}")
        };
        let key = p256::ecdsa::VerifyingKey::from_public_key_der(spki).unwrap();
        let s = p256::ecdsa::Signature::from_der(&signature).expect("DER signature");
        key.verify(&data, &s).expect("ECDSA P-256 SHA-256 verifies");
    }
}

#[test]
fn modify_attribute_renames_by_seed003_identifier() {
    let (hsm, relay) = mimic_relay();
    let mut c = relay.connect();
    // Names and usage masks are attributes the released parser knows.
    let created = ask(
        &mut c,
        op::CREATE_KEY_PAIR,
        create_key_pair_payload(kmip::algorithm::RSA, 2048, None, "before"),
    );
    let private = text_of(created.ok(), tag::PRIVATE_KEY_UNIQUE_IDENTIFIER);
    let a = ask(
        &mut c,
        op::MODIFY_ATTRIBUTE,
        vec![
            Item::text(tag::UNIQUE_IDENTIFIER, &private),
            name_attr("after-rename"),
        ],
    );
    assert_eq!(text_of(a.ok(), tag::UNIQUE_IDENTIFIER), private);
    let out = std::process::Command::new("pkcs11-tool")
        .env("SOFTHSM2_CONF", hsm.conf())
        .args(["--module", LIB, "--token-label", LABEL, "--login"])
        .args(["--pin", PIN, "--list-objects", "--type", "privkey"])
        .output()
        .expect("pkcs11-tool (apt-get install opensc)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("after-rename"), "{text}");
    // A known attribute other than Name: refused by the operation; an unknown one:
    // the whole request fails.
    ask(
        &mut c,
        op::MODIFY_ATTRIBUTE,
        vec![
            Item::text(tag::UNIQUE_IDENTIFIER, &private),
            attr("Contact Information", Item::text(0, "x")),
        ],
    )
    .failed(ResultReason::InvalidField);
    ask(
        &mut c,
        op::MODIFY_ATTRIBUTE,
        vec![
            Item::text(tag::UNIQUE_IDENTIFIER, &private),
            attr("Object Group", Item::text(0, "x")),
        ],
    )
    .failed(ResultReason::GeneralFailure);
}

#[rstest]
#[case::relay_style("pub-00ab")]
#[case::lower_case("00ab_pub")]
#[case::no_half("00AB")]
fn only_seed003_identifiers_are_accepted(#[case] uid: &str) {
    let (_hsm, relay) = mimic_relay();
    let mut c = relay.connect();
    let (_, public) = create(&mut c, kmip::algorithm::ECDSA, 256);
    get(&mut c, &public, None).ok();
    let relay_style = format!(
        "pub-{}",
        public.trim_end_matches("_pub").to_ascii_lowercase()
    );
    get(&mut c, &relay_style, None).failed(ResultReason::ItemNotFound);
    get(&mut c, uid, None).failed(ResultReason::ItemNotFound);
}

#[test]
fn a_kmip_protocol_client_creates_gets_and_signs() {
    use rsa::signature::Verifier;
    let (_hsm, relay) = mimic_relay();
    let mut c = relay.connect();
    // Without credentials: refused, as the released relay needs a login.
    ask_without_login(&mut c).failed(ResultReason::PermissionDenied);
    let r = c.request(
        RequestPayload::CreateKeyPair(
            Some(CommonTemplateAttribute::unnamed(vec![
                req::Attribute::CryptographicAlgorithm(CryptographicAlgorithm::RSA),
                req::Attribute::CryptographicLength(2048),
            ])),
            Some(PrivateKeyTemplateAttribute::unnamed(vec![
                req::Attribute::Name("kp".into()),
                req::Attribute::CryptographicUsageMask(CryptographicUsageMask::Sign),
            ])),
            Some(PublicKeyTemplateAttribute::unnamed(vec![
                req::Attribute::Name("kp.pub".into()),
                req::Attribute::CryptographicUsageMask(CryptographicUsageMask::Verify),
            ])),
        ),
        credential(),
    );
    let Some(ResponsePayload::CreateKeyPair(p)) = &r.batch_items[0].payload else {
        panic!("{r:?}")
    };
    let (private, public) = (
        p.private_key_unique_identifier.0.clone(),
        p.public_key_unique_identifier.0.clone(),
    );
    let r = c.request(
        RequestPayload::Get(Some(UniqueIdentifier(public)), None, None, None),
        credential(),
    );
    let Some(ResponsePayload::Get(g)) = &r.batch_items[0].payload else {
        panic!("{r:?}")
    };
    let ManagedObject::PublicKey(pk) = &g.cryptographic_object else {
        panic!("{g:?}")
    };
    let KeyMaterial::TransparentRSAPublicKey(t) = &pk.key_block.key_value.key_material else {
        panic!("{pk:?}")
    };
    let key = rsa::RsaPublicKey::new(
        rsa::BigUint::from_bytes_be(&t.modulus),
        rsa::BigUint::from_bytes_be(&t.public_exponent),
    )
    .unwrap();
    let data = b"kmip-protocol".to_vec();
    let r = c.request(
        RequestPayload::Sign(
            Some(UniqueIdentifier(private)),
            Some(
                CryptographicParameters::default()
                    .with_cryptographic_algorithm(CryptographicAlgorithm::RSA),
            ),
            Data(data.clone()),
        ),
        credential(),
    );
    let Some(ResponsePayload::Sign(s)) = &r.batch_items[0].payload else {
        panic!("{r:?}")
    };
    let sig = rsa::pkcs1v15::Signature::try_from(s.signature_data.as_slice()).unwrap();
    rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(key)
        .verify(&data, &sig)
        .expect("verifies");
}

fn ask_without_login(c: &mut Client) -> Answer {
    answers(&c.tree(&request_tree(&[(op::QUERY, vec![])], None))).remove(0)
}
