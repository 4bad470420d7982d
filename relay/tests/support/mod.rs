//! Real parts for the relay's tests and benches: a fresh SoftHSMv2 token in a temp dir
//! (testkit's), the `kmip2pkcs11` binary started on it (its own process, so
//! C_Initialize happens once per relay), and a TLS 1.3 KMIP client (kmip-protocol's
//! request and response types, and the relay's TTLV tree where kmip-protocol has no
//! types, over tokio-rustls) that pins the relay's certificate fingerprint.
#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kmip_relay::ttlv::{self, Item};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::client::TlsStream;

pub use testkit::softhsm::Hsm;

pub const LIB: &str = testkit::softhsm::MODULE;
/// Fixed rather than random: the tests name the token and PIN in requests and configs.
pub const LABEL: &str = "relay-test";
pub const PIN: &str = "relay-pin-7f3a9c";
pub const SO_PIN: &str = "12345678";

/// A fresh SoftHSMv2 token of its own, labelled [`LABEL`] with [`PIN`].
pub fn softhsm() -> Hsm {
    Hsm::with(testkit::softhsm::HsmOptions {
        token: testkit::softhsm::Token::new(LABEL, PIN, SO_PIN),
        ..Default::default()
    })
}

/// Settings of a relay under test, written into its TOML file.
#[derive(Clone)]
pub struct RelayOptions {
    /// Extra TOML appended at the top level (before any table).
    pub top: String,
    /// Lines for [tls], [pkcs11] (beyond lib_path/slot/pin), [auth], [limits].
    pub tls: String,
    pub pkcs11: String,
    pub auth: String,
    pub limits: String,
    /// Lines for [testing].
    pub testing: String,
    /// Whether the config names the user PIN (mode `none`).
    pub with_pin: bool,
    /// The PKCS#11 module instead of SoftHSMv2 itself (e.g. [`Shim::lib`]).
    pub lib: Option<PathBuf>,
    /// Extra environment of the relay process (e.g. [`Shim::env`]).
    pub env: Vec<(String, PathBuf)>,
}

impl Default for RelayOptions {
    fn default() -> Self {
        RelayOptions {
            top: String::new(),
            tls: String::new(),
            pkcs11: String::new(),
            auth: String::new(),
            limits: String::new(),
            testing: String::new(),
            with_pin: true,
            lib: None,
            env: Vec::new(),
        }
    }
}

/// The PKCS#11 shim (crate p11shim, built as a dev-dependency) in front of SoftHSMv2,
/// with a trace and fault rules (see p11shim/README.md).
pub struct Shim {
    pub config: PathBuf,
    pub trace: PathBuf,
}

impl Shim {
    /// Writes a shim configuration with `rules` (TOML `[[rule]]` tables) in `dir`.
    pub fn new(dir: &Path, rules: &str) -> Shim {
        let config = dir.join("shim.toml");
        let trace = dir.join("shim-trace.jsonl");
        std::fs::write(
            &config,
            format!(
                "module = \"{LIB}\"\ntrace = \"{}\"\n{rules}\n",
                trace.display()
            ),
        )
        .expect("write shim config");
        Shim { config, trace }
    }

    /// `libp11shim.so` beside this test binary (target/<profile>/deps).
    pub fn lib() -> PathBuf {
        let exe = std::env::current_exe().expect("test binary path");
        let lib = exe.parent().expect("deps dir").join("libp11shim.so");
        assert!(lib.exists(), "{} is not built", lib.display());
        lib
    }

    pub fn env(&self) -> Vec<(String, PathBuf)> {
        vec![("HSM_HARNESS_SHIM_CONFIG".into(), self.config.clone())]
    }

    /// How many calls of `function` the trace holds.
    pub fn calls(&self, function: &str) -> usize {
        let needle = format!("\"function\":\"{function}\"");
        std::fs::read_to_string(&self.trace)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(&needle))
            .count()
    }
}

/// A running `kmip2pkcs11` on a [`softhsm`] token; killed when dropped.
pub struct Relay {
    pub child: Child,
    pub addr: String,
    pub fingerprint: String,
    pub config: PathBuf,
    pub stderr_log: PathBuf,
}

impl Relay {
    pub fn start(hsm: &Hsm, opts: &RelayOptions) -> Relay {
        Self::try_start(hsm, opts).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn try_start(hsm: &Hsm, opts: &RelayOptions) -> Result<Relay, String> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let tag = format!(
            "{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let dir = hsm.dir();
        let ready = dir.join(format!("ready-{tag}"));
        let _ = std::fs::remove_file(&ready);
        let pin_line = if opts.with_pin {
            "user_pin = \"env:RELAY_TEST_PIN\"\n"
        } else {
            ""
        };
        let lib = opts.lib.clone().unwrap_or_else(|| PathBuf::from(LIB));
        let text = format!(
            "listen = \"127.0.0.1:0\"\nready_file = \"{}\"\nlog_level = \"info\"\n{}\n\
             [tls]\n{}\n[pkcs11]\nlib_path = \"{}\"\nslot = \"{LABEL}\"\n{pin_line}{}\n\
             [auth]\n{}\n[limits]\n{}\n[testing]\n{}\n",
            ready.display(),
            opts.top,
            opts.tls,
            lib.display(),
            opts.pkcs11,
            opts.auth,
            opts.limits,
            opts.testing
        );
        let config = dir.join(format!("relay-{tag}.toml"));
        std::fs::write(&config, text).map_err(|e| e.to_string())?;
        let stderr_log = dir.join(format!("relay-{tag}.log"));
        let log = std::fs::File::create(&stderr_log).map_err(|e| e.to_string())?;
        let mut child = Command::new(env!("CARGO_BIN_EXE_kmip2pkcs11"))
            .arg("--config")
            .arg(&config)
            .env("SOFTHSM2_CONF", hsm.conf())
            .env("RELAY_TEST_PIN", PIN)
            .envs(opts.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start kmip2pkcs11: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(text) = std::fs::read_to_string(&ready) {
                let mut parts = text.split_whitespace();
                if let (Some(addr), Some(fp)) = (parts.next(), parts.next()) {
                    return Ok(Relay {
                        child,
                        addr: addr.to_string(),
                        fingerprint: fp.to_string(),
                        config,
                        stderr_log,
                    });
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                let mut log = String::new();
                let _ =
                    std::fs::File::open(&stderr_log).and_then(|mut f| f.read_to_string(&mut log));
                return Err(format!("kmip2pkcs11 exited with {status}: {log}"));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err("kmip2pkcs11 not ready within 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    pub fn connect(&self) -> Client {
        Client::connect(&self.addr, &self.fingerprint, &ClientOptions::default())
            .unwrap_or_else(|e| panic!("connect to relay: {e}\n{}", self.log()))
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Accepts exactly the server certificate with the given SHA-256 fingerprint.
#[derive(Debug)]
struct Pinned {
    fingerprint: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if kmip_relay::tls::fingerprint(end_entity) == self.fingerprint {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "certificate fingerprint mismatch".into(),
            ))
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[derive(Default)]
pub struct ClientOptions {
    /// Speak TLS 1.2 only.
    pub tls12_only: bool,
    /// Client certificate chain and key (PEM).
    pub client_cert: Option<(
        Vec<CertificateDer<'static>>,
        rustls::pki_types::PrivateKeyDer<'static>,
    )>,
}

/// A KMIP client over TLS, with its own small runtime.
pub struct Client {
    rt: tokio::runtime::Runtime,
    stream: TlsStream<tokio::net::TcpStream>,
}

pub fn client_config(fingerprint: &str, opts: &ClientOptions) -> Arc<rustls::ClientConfig> {
    let provider = kmip_relay::tls::provider();
    let versions: &[&'static rustls::SupportedProtocolVersion] = if opts.tls12_only {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13]
    };
    let b = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned {
            fingerprint: fingerprint.to_string(),
            provider,
        }));
    let config = match &opts.client_cert {
        None => b.with_no_client_auth(),
        Some((chain, key)) => b
            .with_client_auth_cert(chain.clone(), key.clone_key())
            .expect("client cert"),
    };
    Arc::new(config)
}

impl Client {
    pub fn connect(addr: &str, fingerprint: &str, opts: &ClientOptions) -> Result<Client, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let config = client_config(fingerprint, opts);
        let stream = rt.block_on(async {
            let tcp = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| e.to_string())?;
            tcp.set_nodelay(true).map_err(|e| e.to_string())?;
            let connector = tokio_rustls::TlsConnector::from(config);
            let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
            let mut s = connector
                .connect(name, tcp)
                .await
                .map_err(|e| e.to_string())?;
            // With TLS 1.3 a refused client certificate shows only on the first read or
            // write after the handshake: flush to surface it early.
            s.flush().await.map_err(|e| e.to_string())?;
            Ok::<_, String>(s)
        })?;
        Ok(Client { rt, stream })
    }

    /// The negotiated TLS version.
    pub fn tls_version(&self) -> Option<rustls::ProtocolVersion> {
        self.stream.get_ref().1.protocol_version()
    }

    /// Sends raw bytes.
    pub fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        let stream = &mut self.stream;
        self.rt.block_on(async {
            stream.write_all(bytes).await.map_err(|e| e.to_string())?;
            stream.flush().await.map_err(|e| e.to_string())
        })
    }

    /// Ends the sending side (TLS close_notify, then TCP FIN); reading still works.
    pub fn shutdown_write(&mut self) {
        let stream = &mut self.stream;
        self.rt.block_on(async {
            let _ = stream.shutdown().await;
        });
    }

    /// Reads one TTLV frame (header + value), within 20 s.
    pub fn receive(&mut self) -> Result<Vec<u8>, String> {
        let stream = &mut self.stream;
        self.rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(20), async {
                let mut head = [0u8; 8];
                stream
                    .read_exact(&mut head)
                    .await
                    .map_err(|e| e.to_string())?;
                let len = u32::from_be_bytes([head[4], head[5], head[6], head[7]]) as usize;
                let mut frame = head.to_vec();
                frame.resize(8 + len, 0);
                stream
                    .read_exact(&mut frame[8..])
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(frame)
            })
            .await
            .map_err(|_| "no response within 20 s".to_string())?
        })
    }

    /// Whether the server closed the connection (EOF or reset) within 10 s.
    pub fn closed(&mut self) -> bool {
        let stream = &mut self.stream;
        self.rt.block_on(async {
            let mut buf = [0u8; 64];
            matches!(
                tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await,
                Ok(Ok(0)) | Ok(Err(_))
            )
        })
    }

    pub fn round_trip(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.send(bytes).expect("send");
        self.receive().expect("receive")
    }

    /// A kmip-protocol request (one batch item), answered as kmip-protocol's response.
    pub fn request(
        &mut self,
        payload: kmip_protocol::types::request::RequestPayload,
        credential: Option<kmip_protocol::auth::CredentialType>,
    ) -> kmip_protocol::types::response::ResponseMessage {
        let bytes = kmip_protocol::request::to_vec(payload, credential).expect("encode request");
        let answer = self.round_trip(&bytes);
        kmip_protocol::response::from_slice(&answer).unwrap_or_else(|e| {
            panic!(
                "kmip-protocol cannot read the response: {e:?}\n{}",
                kmip_ttlv::PrettyPrinter::new().to_string(&answer)
            )
        })
    }

    /// A request as a TTLV tree, answered as a tree.
    pub fn tree(&mut self, request: &Item) -> Item {
        let answer = self.round_trip(&ttlv::encode(request));
        ttlv::decode(&answer).expect("the response is valid TTLV")
    }
}

pub fn read_pem_certs(path: &Path) -> Vec<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_file_iter(path)
        .expect("pem")
        .collect::<Result<_, _>>()
        .expect("certs")
}

use kmip_relay::kmip::tag;

/// A Request Message tree: version 1.2, the given batch items (operation, payload).
pub fn request_tree(items: &[(u32, Vec<Item>)], credential: Option<(&str, &str)>) -> Item {
    let mut header = vec![Item::structure(
        tag::PROTOCOL_VERSION,
        vec![
            Item::integer(tag::PROTOCOL_VERSION_MAJOR, 1),
            Item::integer(tag::PROTOCOL_VERSION_MINOR, 2),
        ],
    )];
    if let Some((user, password)) = credential {
        header.push(Item::structure(
            tag::AUTHENTICATION,
            vec![Item::structure(
                tag::CREDENTIAL,
                vec![
                    Item::enumeration(tag::CREDENTIAL_TYPE, 1),
                    Item::structure(
                        tag::CREDENTIAL_VALUE,
                        vec![
                            Item::text(tag::USERNAME, user),
                            Item::text(tag::PASSWORD, password),
                        ],
                    ),
                ],
            )],
        ));
    }
    header.push(Item::integer(tag::BATCH_COUNT, items.len() as i32));
    let mut fields = vec![Item::structure(tag::REQUEST_HEADER, header)];
    for (i, (op, payload)) in items.iter().enumerate() {
        fields.push(Item::structure(
            tag::BATCH_ITEM,
            vec![
                Item::enumeration(tag::OPERATION, *op),
                Item::bytes(tag::UNIQUE_BATCH_ITEM_ID, vec![(i % 255) as u8 + 1]),
                Item::structure(tag::REQUEST_PAYLOAD, payload.clone()),
            ],
        ));
    }
    Item::structure(tag::REQUEST_MESSAGE, fields)
}

/// One batch item of a response tree, picked apart.
#[derive(Debug)]
pub struct Answer {
    pub operation: Option<u32>,
    pub batch_id: Option<Vec<u8>>,
    pub status: u32,
    pub reason: Option<u32>,
    pub message: Option<String>,
    pub payload: Option<Item>,
}

impl Answer {
    pub fn ok(&self) -> &Item {
        assert_eq!(self.status, 0, "operation failed: {self:?}");
        self.payload.as_ref().expect("payload")
    }
    pub fn failed(&self, reason: kmip_relay::kmip::ResultReason) -> &str {
        assert_eq!(self.status, 1, "expected a failure: {self:?}");
        assert_eq!(self.reason, Some(reason as u32), "{self:?}");
        self.message.as_deref().unwrap_or("")
    }
}

/// The batch items of a response tree.
pub fn answers(response: &Item) -> Vec<Answer> {
    use kmip_relay::ttlv::Value;
    assert_eq!(response.tag, tag::RESPONSE_MESSAGE);
    response
        .all(tag::BATCH_ITEM)
        .map(|bi| {
            let e = |t| match bi.child(t).map(|i| &i.value) {
                Some(Value::Enumeration(v)) => Some(*v),
                _ => None,
            };
            Answer {
                operation: e(tag::OPERATION),
                batch_id: match bi.child(tag::UNIQUE_BATCH_ITEM_ID).map(|i| &i.value) {
                    Some(Value::ByteString(v)) => Some(v.clone()),
                    _ => None,
                },
                status: e(tag::RESULT_STATUS).expect("Result Status"),
                reason: e(tag::RESULT_REASON),
                message: match bi.child(tag::RESULT_MESSAGE).map(|i| &i.value) {
                    Some(Value::TextString(v)) => Some(v.clone()),
                    _ => None,
                },
                payload: bi.child(tag::RESPONSE_PAYLOAD).cloned(),
            }
        })
        .collect()
}

/// The one answer to a one-item request.
pub fn one(client: &mut Client, op: u32, payload: Vec<Item>) -> Answer {
    let mut a = answers(&client.tree(&request_tree(&[(op, payload)], None)));
    assert_eq!(a.len(), 1);
    a.remove(0)
}

pub fn text_of(item: &Item, t: u32) -> String {
    match item.child(t).map(|i| &i.value) {
        Some(kmip_relay::ttlv::Value::TextString(s)) => s.clone(),
        other => panic!("no text {t:#x} in {item:?}: {other:?}"),
    }
}

pub fn bytes_of(item: &Item, t: u32) -> Vec<u8> {
    match item.child(t).map(|i| &i.value) {
        Some(kmip_relay::ttlv::Value::ByteString(s)) => s.clone(),
        other => panic!("no bytes {t:#x} in {item:?}: {other:?}"),
    }
}

/// An Attribute structure.
pub fn attr(name: &str, value: Item) -> Item {
    let mut value = value;
    value.tag = tag::ATTRIBUTE_VALUE;
    Item::structure(
        tag::ATTRIBUTE,
        vec![Item::text(tag::ATTRIBUTE_NAME, name), value],
    )
}

/// A Name attribute.
pub fn name_attr(name: &str) -> Item {
    attr(
        "Name",
        Item::structure(
            0,
            vec![
                Item::text(tag::NAME_VALUE, name),
                Item::enumeration(tag::NAME_TYPE, 1),
            ],
        ),
    )
}

/// Create Key Pair payload for (algorithm, length or curve) with names.
pub fn create_key_pair_payload(alg: u32, length: i32, curve: Option<u32>, name: &str) -> Vec<Item> {
    let mut common = vec![
        attr("Cryptographic Algorithm", Item::enumeration(0, alg)),
        attr("Cryptographic Length", Item::integer(0, length)),
    ];
    if let Some(c) = curve {
        common.push(attr(
            "Cryptographic Domain Parameters",
            Item::structure(0, vec![Item::enumeration(tag::RECOMMENDED_CURVE, c)]),
        ));
    }
    vec![
        Item::structure(tag::COMMON_TEMPLATE_ATTRIBUTE, common),
        Item::structure(
            tag::PRIVATE_KEY_TEMPLATE_ATTRIBUTE,
            vec![
                name_attr(name),
                attr("Cryptographic Usage Mask", Item::integer(0, 1)),
            ],
        ),
        Item::structure(
            tag::PUBLIC_KEY_TEMPLATE_ATTRIBUTE,
            vec![
                name_attr(&format!("{name}.pub")),
                attr("Cryptographic Usage Mask", Item::integer(0, 2)),
            ],
        ),
    ]
}
