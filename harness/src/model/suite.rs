//! The YAML suite model and its loader.
//!
//! A suite names a behaviour, says what it needs, and lists cases made of steps in the
//! signer's own language. The step vocabulary is documented in `suites/README.md` and
//! described by `suites/schema.json`. Loading refuses, with file, line, column and the
//! allowed values: YAML syntax errors, unknown fields, unknown steps, algorithms and
//! capabilities, duplicate case names, and references to names (`key: k`) that no
//! earlier step defined.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use hsm_signers::{Algorithm, ErrorKind};
use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

use crate::backends::shim::ShimSpec;

/// A suite file, loaded and checked.
#[derive(Clone, Debug)]
pub struct Suite {
    pub path: PathBuf,
    pub name: String,
    pub about: String,
    pub tags: Vec<String>,
    pub requires: Vec<Capability>,
    pub cases: Vec<Case>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSuite {
    suite: String,
    about: String,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    requires: Vec<Capability>,
    #[serde(default)]
    signers: Option<Spanned<SignersSpec>>,
    #[serde(default)]
    instances: Option<Spanned<BTreeMap<String, InstanceSpec>>>,
    #[serde(default)]
    lacks: Vec<Capability>,
    #[serde(default)]
    shim: Option<Spanned<ShimSpec>>,
    cases: Vec<RawCase>,
}

/// The signers of a cell, in the spirit of seed 001's `[[signers]]`: each configured
/// signer runs on an *instance* of the cell's backend (`on: a`; every instance is a
/// fresh token or keys directory of its own) or is the OpenSSL signer (`software: true`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SignersSpec {
    #[serde(default)]
    pub default_signer: Option<String>,
    #[serde(default)]
    pub one_off_signer: Option<String>,
    pub signers: Vec<SignerSpec>,
}

/// One configured signer of a cell.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SignerSpec {
    pub name: String,
    /// The backend instance it talks to (`a`, `b`, ...).
    #[serde(default)]
    pub on: Option<String>,
    /// The OpenSSL signer, whatever the cell's backend (keys in the cell's state).
    #[serde(default)]
    pub software: bool,
    /// KMIP signer settings that differ from the backend's (KMIP backends only).
    #[serde(default)]
    pub kmip: Option<KmipOptions>,
    /// PKCS#11 signer settings that differ from the backend's (backends reached through
    /// the PKCS#11 signer only).
    #[serde(default)]
    pub pkcs11: Option<Pkcs11Options>,
}

/// How a case configures a PKCS#11 signer. A case with these requires the `pkcs11`
/// capability.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11Options {
    /// `force`: go on with a module that lacks C_DestroyObject, C_GetInfo or
    /// C_GetSlotInfo (default false).
    #[serde(default)]
    pub force: Option<bool>,
}

/// How a case configures a KMIP signer, where it departs from what the backend's
/// provider sets (the relay: the KMIP signer's defaults; PyKMIP: TLS 1.2 opted in and
/// `force`). A case with these requires the `kmip` capability.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KmipOptions {
    /// `weaken_security_allow_tls12`: also offer TLS 1.2.
    #[serde(default)]
    pub allow_tls12: Option<bool>,
    /// `insecure`: skip the server certificate check.
    #[serde(default)]
    pub insecure: bool,
    /// Present the instance's client certificate (default true).
    #[serde(default)]
    pub client_cert: Option<bool>,
    /// Which CA the signer trusts for the server certificate.
    #[serde(default)]
    pub server_ca: CaChoice,
    /// `force`: go on when the server's Query lacks required operations.
    #[serde(default)]
    pub force: Option<bool>,
    /// `read_timeout`, in milliseconds: how long a read or write may take.
    #[serde(default)]
    pub read_timeout_ms: Option<u64>,
}

/// The CA a KMIP signer trusts.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum CaChoice {
    /// The instance's own CA, which issued its server certificate.
    #[default]
    Own,
    /// A CA of its own that issued nothing the server has.
    Other,
}

/// Settings of one backend instance of a case: for KMIP backends, how its server's TLS
/// is set up and whether the harness's TCP proxy stands in front of it. A case with
/// these requires the `kmip` capability.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InstanceSpec {
    #[serde(default)]
    pub tls: Option<ServerTls>,
    /// Reach the server through the harness's TCP proxy, with this fault (`none`: pass
    /// through, counting); `traffic` steps check what went through.
    #[serde(default)]
    pub proxy: Option<crate::backends::proxy::Fault>,
    /// KMIP operations (KMIP 1.2 names) the server pretends not to have: left out of
    /// Query and answered Operation Not Supported. Requires `kmip-withhold` (the relay).
    #[serde(default)]
    pub withhold: Vec<String>,
}

/// The TLS setup of an instance's server.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerTls {
    /// The versions the server speaks; default: the server's own (relay: 1.3; PyKMIP:
    /// 1.2; Cosmian KMS: 1.2 and 1.3). Naming 1.3 requires the `tls13` capability, 1.2
    /// without 1.3 the `tls12-only` capability.
    #[serde(default)]
    pub versions: Option<Vec<TlsVersion>>,
    #[serde(default)]
    pub certificate: ServerCert,
    /// Clients must present a certificate from the instance's CA (PyKMIP always does).
    #[serde(default)]
    pub require_client_cert: bool,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    #[serde(rename = "1.2")]
    Tls12,
    #[serde(rename = "1.3")]
    Tls13,
}

/// The server certificate an instance presents.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ServerCert {
    /// Issued by the instance's CA for 127.0.0.1 and localhost, valid now.
    #[default]
    Valid,
    /// Issued by the instance's CA, but its validity ended long ago.
    Expired,
    /// Issued by the instance's CA for another host name only.
    WrongHost,
    /// Self-signed (issued by no CA).
    SelfSigned,
}

/// Instance names become token labels (32 bytes at most) and environment variable
/// names: lowercase letters, digits and '-', 1 to 13 characters, not "software".
fn check_instance(name: &str) -> Result<(), String> {
    let ok = (1..=13).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name != "software";
    if ok {
        Ok(())
    } else {
        Err(format!(
            "instance name '{name}' must be 1 to 13 lowercase letters, digits or '-', and not 'software'"
        ))
    }
}

impl SignersSpec {
    /// One signer named after the backend, on instance `a`.
    pub fn single(backend: &str) -> Self {
        SignersSpec {
            default_signer: None,
            one_off_signer: None,
            signers: vec![SignerSpec {
                name: backend.to_string(),
                on: Some("a".into()),
                software: false,
                kmip: None,
                pkcs11: None,
            }],
        }
    }

    fn check(&self) -> Result<(), String> {
        let mut names = HashSet::new();
        if self.signers.is_empty() {
            return Err("signers: needs at least one signer".into());
        }
        for s in &self.signers {
            if !names.insert(s.name.as_str()) {
                return Err(format!("duplicate signer name '{}'", s.name));
            }
            if let Some(on) = &s.on {
                check_instance(on)?;
            }
            match (&s.on, s.software) {
                (Some(_), false) | (None, true) => {}
                _ => {
                    return Err(format!(
                        "signer '{}' needs exactly one of `on: INSTANCE` or `software: true`",
                        s.name
                    ))
                }
            }
        }
        for (role, name) in [
            ("default_signer", &self.default_signer),
            ("one_off_signer", &self.one_off_signer),
        ] {
            if let Some(n) = name {
                if !names.contains(n.as_str()) {
                    return Err(format!("{role} '{n}' is not one of the signers"));
                }
            }
        }
        if self.signers.len() > 1 && self.default_signer.is_none() {
            return Err("several signers need a default_signer".into());
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    name: Spanned<String>,
    #[serde(default)]
    about: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    requires: Vec<Capability>,
    #[serde(default)]
    signers: Option<Spanned<SignersSpec>>,
    #[serde(default)]
    instances: Option<Spanned<BTreeMap<String, InstanceSpec>>>,
    #[serde(default)]
    lacks: Vec<Capability>,
    #[serde(default)]
    shim: Option<Spanned<ShimSpec>>,
    steps: Vec<Spanned<Step>>,
}

/// One case: a named sequence of steps, run in one cell per backend.
#[derive(Clone, Debug)]
pub struct Case {
    pub name: String,
    pub about: Option<String>,
    pub tags: Vec<String>,
    /// The case's signers (its own, else the suite's); `None`: one signer on instance `a`.
    pub signers: Option<SignersSpec>,
    /// Settings of backend instances (its own, else the suite's); instances not named
    /// here come up with the backend's defaults.
    pub instances: BTreeMap<String, InstanceSpec>,
    /// Capabilities this case needs: the suite's, the case's own, and the algorithm of
    /// every key it creates.
    pub requires: Vec<Capability>,
    /// Capabilities a backend must not have for this case to run (the suite's and the
    /// case's `lacks`): the case is about backends without them.
    pub lacks: Vec<Capability>,
    /// The PKCS#11 shim settings the case runs with (its own `shim:`, else the
    /// suite's); a case without one but with a `trace` step gets the transparent shim.
    /// `None`: no shim (unless the backend's provider puts one in).
    pub shim: Option<ShimSpec>,
    pub steps: Vec<Spanned<Step>>,
}

/// Something a backend can or cannot do, as listed in its capability profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Capability {
    #[serde(rename = "rsa2048")]
    Rsa2048,
    #[serde(rename = "rsa2048-pss")]
    Rsa2048Pss,
    #[serde(rename = "ecdsa-p256")]
    EcdsaP256,
    #[serde(rename = "ecdsa-p384")]
    EcdsaP384,
    Ed25519,
    /// The backend has its own random generator.
    Random,
    /// Keys survive a restart of the signer.
    PersistentKeys,
    /// The backend has login credentials that can be changed (a user PIN).
    Credentials,
    /// The backend is an HSM, reached through a signer type other than OpenSSL (so
    /// the router treats it as one: seed 001's role rules differ).
    Hsm,
    /// The harness can put other key material under an existing key's handle (an
    /// impostor), which needs handles the client chooses (CKA_ID, file names).
    ReplaceKeys,
    /// Reached through the KMIP signer over TLS, with a server whose TLS setup the
    /// harness controls (certificates, versions, client authentication). `kmip_query`
    /// needs it too.
    Kmip,
    /// The backend's server speaks TLS 1.3.
    #[serde(rename = "tls13")]
    Tls13,
    /// The backend's server can be made to speak TLS 1.2 and not 1.3 (an instance with
    /// `tls: { versions: ["1.2"] }` needs it). Cosmian KMS always offers 1.3 as well.
    #[serde(rename = "tls12-only")]
    Tls12Only,
    /// The signers' PKCS#11 module can be put behind the harness's PKCS#11 shim (a
    /// case's `shim:` settings and `trace` steps need it).
    #[serde(rename = "pkcs11-shim")]
    Pkcs11Shim,
    /// Reached through the PKCS#11 signer (a case's `pkcs11:` signer options need it).
    #[serde(rename = "pkcs11")]
    Pkcs11,
    /// The KMIP server can be told to withhold operations (`instances: { a: { withhold:
    /// [...] } }`): the relay.
    #[serde(rename = "kmip-withhold")]
    KmipWithhold,
    /// The KMIP server's Query lists Modify Attribute (the relay, Cosmian KMS; not
    /// PyKMIP). Cases about servers that omit it say `lacks: [kmip-modify-attribute]`.
    #[serde(rename = "kmip-modify-attribute")]
    KmipModifyAttribute,
    /// A server that requires a client certificate refuses a client without one in the
    /// TLS handshake (the relay, PyKMIP). Cosmian KMS completes the handshake and closes
    /// the connection, unanswered, at the first request.
    #[serde(rename = "client-cert-in-handshake")]
    ClientCertInHandshake,
    /// The backend destroys keys (PKCS#11 C_DestroyObject, KMIP Destroy): `destroy_key`
    /// and one-off keys on an HSM need it. The seed-003 relay has no Destroy.
    Destroy,
}

impl Capability {
    pub fn of(alg: Algorithm) -> Capability {
        match alg {
            Algorithm::Rsa2048Pkcs1Sha256 => Capability::Rsa2048,
            Algorithm::Rsa2048PssSha256 => Capability::Rsa2048Pss,
            Algorithm::EcdsaP256Sha256 => Capability::EcdsaP256,
            Algorithm::EcdsaP384Sha384 => Capability::EcdsaP384,
            Algorithm::Ed25519 => Capability::Ed25519,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Capability::Rsa2048 => "rsa2048",
            Capability::Rsa2048Pss => "rsa2048-pss",
            Capability::EcdsaP256 => "ecdsa-p256",
            Capability::EcdsaP384 => "ecdsa-p384",
            Capability::Ed25519 => "ed25519",
            Capability::Random => "random",
            Capability::PersistentKeys => "persistent-keys",
            Capability::Credentials => "credentials",
            Capability::Hsm => "hsm",
            Capability::ReplaceKeys => "replace-keys",
            Capability::Kmip => "kmip",
            Capability::Tls13 => "tls13",
            Capability::Tls12Only => "tls12-only",
            Capability::Pkcs11Shim => "pkcs11-shim",
            Capability::Pkcs11 => "pkcs11",
            Capability::KmipWithhold => "kmip-withhold",
            Capability::KmipModifyAttribute => "kmip-modify-attribute",
            Capability::ClientCertInHandshake => "client-cert-in-handshake",
            Capability::Destroy => "destroy",
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a step expects when it is not plain success.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// The step must fail with an error of this kind.
    pub error: Option<ErrorKind>,
    /// ... and its message must contain this text (compared case-insensitively). Only
    /// with `error`.
    #[serde(default)]
    pub message: Option<String>,
}

impl Step {
    /// The step's expectation, for the steps that take one.
    pub fn expect(&self) -> Option<&Expect> {
        match self {
            Step::CreateKey { expect, .. }
            | Step::Sign { expect, .. }
            | Step::PublicKey { expect, .. }
            | Step::DestroyKey { expect, .. }
            | Step::Random { expect, .. }
            | Step::SignOneOff { expect, .. } => Some(expect),
            _ => None,
        }
    }
}

/// The verdict a `verify` step expects from the independent verifier.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    #[default]
    Valid,
    /// Well-formed, but does not verify (tampered data, wrong key).
    Mismatch,
    /// Not in the expected encoding (e.g. raw r||s where DER is required).
    BadEncoding,
}

/// Where a `random` step expects the bytes to come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RandomFrom {
    /// The default signer's own generator (the backend's RNG).
    Backend,
    /// The router's OpenSSL signer, because the default signer has no generator or
    /// could not be used.
    Fallback,
}

/// One step. Steps speak the signer's language; names (`as: k`) bind results for
/// later steps of the same case.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    /// Create a key pair with the default signer; checks the SPKI parses and the key
    /// identifier is the SHA-1 of its key bits.
    CreateKey {
        alg: Algorithm,
        #[serde(rename = "as")]
        name: String,
        #[serde(default)]
        expect: Expect,
    },
    /// Sign `data` (default: a fixed payload) with a key; `alg` defaults to the key's.
    Sign {
        key: Spanned<String>,
        #[serde(default)]
        alg: Option<Algorithm>,
        #[serde(default)]
        data: Option<String>,
        #[serde(default, rename = "as")]
        name: Option<String>,
        #[serde(default)]
        expect: Expect,
    },
    /// Verify a signature independently (RustCrypto, not the backend). `key` and `data`
    /// default to the ones the signature was made with; give others for negative checks.
    Verify {
        signature: Spanned<String>,
        #[serde(default)]
        key: Option<Spanned<String>>,
        #[serde(default)]
        data: Option<String>,
        #[serde(default)]
        expect: Verdict,
    },
    /// Read the public key back through the signer and compare it with the one
    /// `create_key` returned.
    PublicKey {
        key: Spanned<String>,
        #[serde(default)]
        expect: Expect,
    },
    /// Destroy a key pair.
    DestroyKey {
        key: Spanned<String>,
        #[serde(default)]
        expect: Expect,
    },
    /// Ask the router for random bytes; checks the length and, with `from`, where
    /// they came from.
    Random {
        bytes: usize,
        #[serde(default)]
        from: Option<RandomFrom>,
        #[serde(default)]
        expect: Expect,
    },
    /// Create a one-off key with the one-off signer, sign, destroy the key, in one call.
    /// The signature can be verified like any other (its key is the one-off key).
    SignOneOff {
        alg: Algorithm,
        #[serde(default)]
        data: Option<String>,
        #[serde(default, rename = "as")]
        name: Option<String>,
        #[serde(default)]
        expect: Expect,
    },
    /// Drop the router and start a new one, after changing the configuration and the
    /// backends as given. `restart: {}` restarts with nothing changed.
    Restart(Restart),
    /// Read the key pairs a backend instance holds through a session of the harness's
    /// own (not the signer's), and check it.
    Inventory(Inventory),
    /// Check what the key map holds.
    Keymap(KeymapCheck),
    /// Replace a signer's identity key in its backend by a different key pair under the
    /// same handle (an impostor), through the harness's own session.
    ReplaceIdentityKey { signer: String },
    /// Check what a configured signer says about itself (its `info` details, e.g. the
    /// negotiated TLS version); these details also go to the report's properties.
    Info(InfoCheck),
    /// Check what went through the TCP proxy in front of an instance (`proxy:` in
    /// the instance's settings).
    Traffic(TrafficCheck),
    /// Kill an instance's server process, or start it again (KMIP backends).
    Server(ServerStep),
    /// Change what the proxy in front of an instance does to new connections.
    Proxy(ProxyStep),
    /// Check the PKCS#11 shim's trace of the signers' calls, and/or mark a point in it.
    Trace(TraceCheck),
    /// Check the operations the KMIP server listed in its Query answer to the default
    /// signer.
    KmipQuery(KmipQueryCheck),
    /// Wait, e.g. to let a timeout pass.
    Sleep { seconds: f64 },
    /// Make the cell process misbehave, to check the runner's crash isolation itself:
    /// `abort` raises SIGABRT, `hang` never returns.
    SelfTest(SelfTest),
}

/// What a `restart` changes before the new router starts; applied in this order:
/// signers, wipe, change_pin, repoint, swap, rename, roles.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Restart {
    /// A new list of signers, replacing the configured ones (roles are reset to the
    /// defaults unless given here too).
    #[serde(default)]
    pub signers: Option<Vec<SignerSpec>>,
    /// Old name -> new name.
    #[serde(default)]
    pub rename: BTreeMap<String, String>,
    #[serde(default)]
    pub default_signer: Option<String>,
    #[serde(default)]
    pub one_off_signer: Option<String>,
    /// Signer -> the backend instance it now talks to.
    #[serde(default)]
    pub repoint: BTreeMap<String, String>,
    /// Two signers that exchange their backends.
    #[serde(default)]
    pub swap: Vec<String>,
    /// Backend instances emptied and re-initialised (same label and PIN).
    #[serde(default)]
    pub wipe: Vec<String>,
    /// Backend instances whose user PIN is changed (the configuration follows).
    #[serde(default)]
    pub change_pin: Vec<String>,
    /// New PKCS#11 shim settings, replacing the case's from now on (the backend's
    /// still come first); the running shim reads them on its next call.
    #[serde(default)]
    pub shim: Option<ShimSpec>,
}

/// An inventory check of one backend instance (`of: a`) or of the OpenSSL signer's
/// keys directory (`of: software`). Names are keys (`create_key ... as:`) or one-off
/// signatures (their key).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Inventory {
    pub of: String,
    #[serde(default)]
    pub has: Vec<String>,
    #[serde(default)]
    pub lacks: Vec<String>,
    /// Remember this inventory under a name.
    #[serde(default, rename = "as")]
    pub name: Option<String>,
    /// The inventory must equal one remembered earlier.
    #[serde(default)]
    pub same_as: Option<String>,
}

/// A key map check.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KeymapCheck {
    #[serde(default)]
    pub has: Vec<String>,
    #[serde(default)]
    pub lacks: Vec<String>,
    /// Key -> the configured signer that must own it now.
    #[serde(default)]
    pub owner: BTreeMap<String, String>,
}

/// An `info` check: every listed detail of the signer must have exactly this value.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InfoCheck {
    /// A configured signer; default: the default signer.
    #[serde(default)]
    pub signer: Option<String>,
    pub has: BTreeMap<String, String>,
}

/// A `traffic` check of the proxy in front of instance `of`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrafficCheck {
    pub of: String,
    /// TLS application-data records the client sent: 0 means no KMIP request bytes
    /// reached the server (meaningful when the handshake was refused).
    #[serde(default)]
    pub client_application_records: Option<u64>,
    /// Connections the proxy accepted.
    #[serde(default)]
    pub connections: Option<u64>,
}

/// A `server` step.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerStep {
    pub of: String,
    pub action: ServerAction,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ServerAction {
    /// SIGKILL: the process dies without a word to its clients.
    Kill,
    /// Start it again on the port it had, with its data.
    Start,
}

/// A `proxy` step: the fault for connections from now on.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProxyStep {
    pub of: String,
    pub fault: crate::backends::proxy::Fault,
}

/// A `trace` step: checks on the calls the signers made through the PKCS#11 shim
/// (all of them, or those after a mark), then optionally a new mark. Function names
/// are PKCS#11 2.40 names (`C_Sign`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TraceCheck {
    /// Look only at the calls made after the mark of this name (default: every call
    /// since the cell started).
    #[serde(default)]
    pub since: Option<String>,
    /// Each was called at least once.
    #[serde(default)]
    pub called: Vec<String>,
    /// None was called.
    #[serde(default)]
    pub not_called: Vec<String>,
    /// Each was called exactly this many times.
    #[serde(default)]
    pub count: BTreeMap<String, u64>,
    /// After the checks: remember this point of the trace under a name for `since`.
    #[serde(default)]
    pub mark: Option<String>,
}

/// A `kmip_query` step: operations (as KMIP 1.2 names them, e.g. `RNG Retrieve`) the
/// server's Query answer lists, and ones it does not.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KmipQueryCheck {
    #[serde(default)]
    pub has: Vec<String>,
    #[serde(default)]
    pub lacks: Vec<String>,
}

/// KMIP 1.2's operation names, as `kmip_query` takes them.
pub fn kmip_operation_names() -> Vec<String> {
    (0x01..=0x29)
        .map(hsm_signers::kmip::operation_name)
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SelfTest {
    Abort,
    Hang,
}

impl Step {
    /// The step's name as written in YAML.
    pub fn keyword(&self) -> &'static str {
        match self {
            Step::CreateKey { .. } => "create_key",
            Step::Sign { .. } => "sign",
            Step::Verify { .. } => "verify",
            Step::PublicKey { .. } => "public_key",
            Step::DestroyKey { .. } => "destroy_key",
            Step::Random { .. } => "random",
            Step::SignOneOff { .. } => "sign_one_off",
            Step::Restart(_) => "restart",
            Step::Inventory(_) => "inventory",
            Step::Keymap(_) => "keymap",
            Step::ReplaceIdentityKey { .. } => "replace_identity_key",
            Step::Info(_) => "info",
            Step::Traffic(_) => "traffic",
            Step::Server(_) => "server",
            Step::Proxy(_) => "proxy",
            Step::Trace(_) => "trace",
            Step::KmipQuery(_) => "kmip_query",
            Step::Sleep { .. } => "sleep",
            Step::SelfTest(_) => "self_test",
        }
    }
}

/// A suite that could not be loaded, with where and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SuiteError {
    pub file: String,
    pub line: u64,
    pub column: u64,
    pub message: String,
}

impl fmt::Display for SuiteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file, self.line, self.column, self.message
            )
        }
    }
}

impl std::error::Error for SuiteError {}

impl SuiteError {
    fn at(file: &Path, loc: &Location, message: String) -> Self {
        SuiteError {
            file: file.display().to_string(),
            line: loc.line(),
            column: loc.column(),
            message,
        }
    }
}

/// Turns a YAML deserialisation error into file:line:col plus the bare message.
pub(crate) fn yaml_error(file: &Path, e: &serde_saphyr::Error) -> SuiteError {
    let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
    let text = e.without_snippet().to_string();
    // The library prefixes "error: line L column C: "; we print our own place.
    let message = text
        .strip_prefix("error: ")
        .unwrap_or(&text)
        .split_once(": ")
        .filter(|(head, _)| head.starts_with("line "))
        .map_or(text.clone(), |(_, rest)| rest.to_string());
    // Syntax errors repeat the place at the end ("... at line 5, column 10").
    let message = match message.rfind(" at line ") {
        Some(i) if message[i..].contains(", column ") => message[..i].to_string(),
        _ => message,
    };
    SuiteError {
        file: file.display().to_string(),
        line,
        column,
        message,
    }
}

impl Suite {
    pub fn load(path: &Path) -> Result<Suite, SuiteError> {
        let text = std::fs::read_to_string(path).map_err(|e| SuiteError {
            file: path.display().to_string(),
            line: 0,
            column: 0,
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Suite, SuiteError> {
        let raw: RawSuite = serde_saphyr::from_str(text).map_err(|e| yaml_error(path, &e))?;
        if raw.cases.is_empty() {
            return Err(SuiteError {
                file: path.display().to_string(),
                line: 1,
                column: 1,
                message: format!("suite '{}' has no cases", raw.suite),
            });
        }
        if let Some(spec) = &raw.signers {
            spec.value
                .check()
                .map_err(|m| SuiteError::at(path, &spec.referenced, m))?;
        }
        if let Some(shim) = &raw.shim {
            shim.value
                .check()
                .map_err(|m| SuiteError::at(path, &shim.referenced, format!("shim: {m}")))?;
        }
        let mut seen = HashSet::new();
        let mut cases = Vec::new();
        for case in raw.cases {
            if !seen.insert(case.name.value.clone()) {
                return Err(SuiteError::at(
                    path,
                    &case.name.referenced,
                    format!("duplicate case name '{}'", case.name.value),
                ));
            }
            if case.steps.is_empty() {
                return Err(SuiteError::at(
                    path,
                    &case.name.referenced,
                    format!("case '{}' has no steps", case.name.value),
                ));
            }
            if let Some(spec) = &case.signers {
                spec.value
                    .check()
                    .map_err(|m| SuiteError::at(path, &spec.referenced, m))?;
            }
            if let Some(shim) = &case.shim {
                shim.value
                    .check()
                    .map_err(|m| SuiteError::at(path, &shim.referenced, format!("shim: {m}")))?;
            }
            for step in &case.steps {
                if let Step::Restart(Restart {
                    shim: Some(spec), ..
                }) = &step.value
                {
                    spec.check().map_err(|m| {
                        SuiteError::at(path, &step.referenced, format!("restart: shim: {m}"))
                    })?;
                }
            }
            // A trace, or shim settings changed by a restart, need the shim from the start.
            let traces = case.steps.iter().any(|s| {
                matches!(
                    s.value,
                    Step::Trace(_) | Step::Restart(Restart { shim: Some(_), .. })
                )
            });
            let shim = case
                .shim
                .as_ref()
                .or(raw.shim.as_ref())
                .map(|s| s.value.clone())
                .or_else(|| traces.then(ShimSpec::default));
            let signers = case
                .signers
                .as_ref()
                .or(raw.signers.as_ref())
                .map(|s| s.value.clone());
            let instances_spec = case.instances.as_ref().or(raw.instances.as_ref());
            if let Some(spec) = instances_spec {
                let operations = kmip_operation_names();
                for (name, instance) in &spec.value {
                    check_instance(name).map_err(|m| SuiteError::at(path, &spec.referenced, m))?;
                    if let Some(op) = instance.withhold.iter().find(|o| !operations.contains(o)) {
                        return Err(SuiteError::at(
                            path,
                            &spec.referenced,
                            format!(
                                "instance '{name}' withholds unknown KMIP operation '{op}' \
                                 (KMIP 1.2 names, e.g. Modify Attribute)"
                            ),
                        ));
                    }
                }
            }
            let instances = instances_spec.map(|s| s.value.clone()).unwrap_or_default();
            check_steps(path, &case, signers.as_ref(), &instances)?;
            let mut requires = raw.requires.clone();
            let mut need = |c: Capability| {
                if !requires.contains(&c) {
                    requires.push(c);
                }
            };
            for c in &case.requires {
                need(*c);
            }
            if !instances.is_empty()
                || signers
                    .iter()
                    .flat_map(|s| &s.signers)
                    .any(|s| s.kmip.is_some())
            {
                need(Capability::Kmip);
            }
            if instances.values().any(|i| {
                i.tls
                    .as_ref()
                    .and_then(|t| t.versions.as_ref())
                    .is_some_and(|v| v.contains(&TlsVersion::Tls13))
            }) {
                need(Capability::Tls13);
            }
            if instances.values().any(|i| {
                i.tls
                    .as_ref()
                    .and_then(|t| t.versions.as_ref())
                    .is_some_and(|v| {
                        v.contains(&TlsVersion::Tls12) && !v.contains(&TlsVersion::Tls13)
                    })
            }) {
                need(Capability::Tls12Only);
            }
            if shim.is_some() {
                need(Capability::Pkcs11Shim);
            }
            if instances.values().any(|i| !i.withhold.is_empty()) {
                need(Capability::KmipWithhold);
            }
            if signers
                .iter()
                .flat_map(|s| &s.signers)
                .any(|s| s.pkcs11.is_some())
            {
                need(Capability::Pkcs11);
            }
            // One-off keys are made and destroyed on the backend when one of its
            // signers is the one-off signer (else the router's OpenSSL signer does it).
            let hsm_one_off = |spec: &SignersSpec| {
                spec.one_off_signer
                    .as_ref()
                    .is_some_and(|n| spec.signers.iter().any(|s| &s.name == n && !s.software))
            };
            let one_off_on_backend = signers.as_ref().is_some_and(hsm_one_off)
                || case
                    .steps
                    .iter()
                    .any(|s| matches!(&s.value, Step::Restart(r) if r.one_off_signer.is_some()));
            for step in &case.steps {
                match &step.value {
                    // A step expected to fail does not need the algorithm.
                    Step::CreateKey { alg, expect, .. } if expect.error.is_none() => {
                        need(Capability::of(*alg))
                    }
                    Step::SignOneOff { alg, expect, .. } if expect.error.is_none() => {
                        need(Capability::of(*alg));
                        if one_off_on_backend {
                            need(Capability::Destroy);
                        }
                    }
                    Step::Sign {
                        alg: Some(alg),
                        expect,
                        ..
                    } if expect.error.is_none() => need(Capability::of(*alg)),
                    Step::DestroyKey { expect, .. } if expect.error.is_none() => {
                        need(Capability::Destroy)
                    }
                    Step::Restart(r) if !r.change_pin.is_empty() => need(Capability::Credentials),
                    Step::ReplaceIdentityKey { .. } => need(Capability::ReplaceKeys),
                    Step::Server(_) | Step::Proxy(_) | Step::Traffic(_) => need(Capability::Kmip),
                    Step::Restart(r) if r.signers.iter().flatten().any(|s| s.kmip.is_some()) => {
                        need(Capability::Kmip)
                    }
                    Step::KmipQuery(_) => need(Capability::Kmip),
                    Step::Restart(r) if r.signers.iter().flatten().any(|s| s.pkcs11.is_some()) => {
                        need(Capability::Pkcs11)
                    }
                    _ => {}
                }
            }
            let mut lacks = raw.lacks.clone();
            for c in &case.lacks {
                if !lacks.contains(c) {
                    lacks.push(*c);
                }
            }
            if let Some(both) = lacks.iter().find(|c| requires.contains(c)) {
                return Err(SuiteError::at(
                    path,
                    &case.name.referenced,
                    format!(
                        "case '{}' both requires and lacks capability '{both}'",
                        case.name.value
                    ),
                ));
            }
            cases.push(Case {
                name: case.name.value,
                about: case.about,
                tags: case.tags,
                signers,
                instances,
                requires,
                lacks,
                shim,
                steps: case.steps,
            });
        }
        Ok(Suite {
            path: path.to_path_buf(),
            name: raw.suite,
            about: raw.about,
            tags: raw.tags,
            requires: raw.requires,
            cases,
        })
    }
}

/// Checks what serde cannot: every name a step uses was bound by an earlier step that
/// succeeds, no name is bound twice, signer and instance names exist, values are in
/// range.
fn check_steps(
    path: &Path,
    case: &RawCase,
    signers: Option<&SignersSpec>,
    instances: &BTreeMap<String, InstanceSpec>,
) -> Result<(), SuiteError> {
    let mut keys: HashSet<&str> = HashSet::new();
    let mut signatures: HashSet<&str> = HashSet::new();
    let mut one_off: HashSet<&str> = HashSet::new();
    let mut inventories: HashSet<&str> = HashSet::new();
    let mut marks: HashSet<&str> = HashSet::new();
    // `None`: the default single signer, named after the backend (not known here).
    let mut signer_names: Option<Vec<String>> =
        signers.map(|s| s.signers.iter().map(|s| s.name.clone()).collect());
    for step in &case.steps {
        let err = |m: String| SuiteError::at(path, &step.referenced, m);
        if let Some(Expect {
            error: None,
            message: Some(_),
        }) = step.value.expect()
        {
            return Err(err(
                "expect: message needs error: KIND (the kind of error whose message it is)".into(),
            ));
        }
        let unknown = |what: &str, name: &str, known: &HashSet<&str>| {
            let mut known: Vec<&str> = known.iter().copied().collect();
            known.sort();
            err(format!(
                "no earlier step made a {what} named '{name}' (known: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ))
        };
        let key = |k: &Spanned<String>, keys: &HashSet<&str>| {
            if keys.contains(k.value.as_str()) {
                Ok(())
            } else {
                let mut e = unknown("key", &k.value, keys);
                e.line = k.referenced.line();
                e.column = k.referenced.column();
                Err(e)
            }
        };
        let signer_known = |name: &str, names: &Option<Vec<String>>| -> Result<(), SuiteError> {
            match names {
                Some(names) if !names.iter().any(|n| n == name) => Err(err(format!(
                    "no signer named '{name}' (signers: {})",
                    names.join(", ")
                ))),
                _ => Ok(()),
            }
        };
        match &step.value {
            Step::CreateKey { name, expect, .. } => {
                if expect.error.is_none() && !keys.insert(name) {
                    return Err(err(format!("key name '{name}' is already bound")));
                }
            }
            Step::Sign {
                key: k,
                name,
                expect,
                ..
            } => {
                key(k, &keys)?;
                if let (Some(n), None) = (name, &expect.error) {
                    if !signatures.insert(n) {
                        return Err(err(format!("signature name '{n}' is already bound")));
                    }
                }
            }
            Step::SignOneOff { name, expect, .. } => {
                if let (Some(n), None) = (name, &expect.error) {
                    if !signatures.insert(n) {
                        return Err(err(format!("signature name '{n}' is already bound")));
                    }
                    one_off.insert(n);
                }
            }
            Step::Verify {
                signature, key: k, ..
            } => {
                if !signatures.contains(signature.value.as_str()) {
                    let mut e = unknown("signature", &signature.value, &signatures);
                    e.line = signature.referenced.line();
                    e.column = signature.referenced.column();
                    return Err(e);
                }
                if let Some(k) = k {
                    key(k, &keys)?;
                }
            }
            Step::PublicKey { key: k, .. } | Step::DestroyKey { key: k, .. } => key(k, &keys)?,
            Step::Random { bytes, .. } => {
                if !(1..=65536).contains(bytes) {
                    return Err(err(format!("random bytes must be 1 to 65536, not {bytes}")));
                }
            }
            Step::Info(c) => {
                if let Some(name) = &c.signer {
                    signer_known(name, &signer_names)?;
                }
                if c.has.is_empty() {
                    return Err(err("info: has needs at least one detail".into()));
                }
            }
            Step::Traffic(TrafficCheck { of, .. }) | Step::Proxy(ProxyStep { of, .. }) => {
                if instances.get(of).is_none_or(|i| i.proxy.is_none()) {
                    return Err(err(format!(
                        "{}: instance '{of}' has no proxy (give it `proxy: none` under instances:)",
                        step.value.keyword()
                    )));
                }
            }
            Step::Server(ServerStep { of, .. }) => check_instance(of).map_err(err)?,
            Step::Sleep { seconds } => {
                if !(seconds.is_finite() && (0.0..=3600.0).contains(seconds)) {
                    return Err(err(format!(
                        "sleep seconds must be 0 to 3600, not {seconds}"
                    )));
                }
            }
            Step::Restart(r) => {
                for inst in r.repoint.values().chain(&r.wipe).chain(&r.change_pin) {
                    check_instance(inst).map_err(err)?;
                }
                if let Some(list) = &r.signers {
                    let spec = SignersSpec {
                        default_signer: r.default_signer.clone(),
                        one_off_signer: r.one_off_signer.clone(),
                        signers: list.clone(),
                    };
                    spec.check().map_err(err)?;
                    signer_names = Some(list.iter().map(|s| s.name.clone()).collect());
                }
                for old in r.rename.keys().chain(r.repoint.keys()).chain(r.swap.iter()) {
                    signer_known(old, &signer_names)?;
                }
                if !r.swap.is_empty() && (r.swap.len() != 2 || r.swap[0] == r.swap[1]) {
                    return Err(err("swap names exactly two different signers".into()));
                }
                for (old, new) in &r.rename {
                    if let Some(n) = signer_names.iter_mut().flatten().find(|n| *n == old) {
                        *n = new.clone();
                    }
                }
                for role in [&r.default_signer, &r.one_off_signer].into_iter().flatten() {
                    signer_known(role, &signer_names)?;
                }
            }
            Step::Inventory(inv) => {
                if inv.of != "software" {
                    check_instance(&inv.of).map_err(err)?;
                }
                for n in inv.has.iter().chain(&inv.lacks) {
                    if !keys.contains(n.as_str()) && !one_off.contains(n.as_str()) {
                        let mut known: HashSet<&str> = keys.clone();
                        known.extend(one_off.iter().copied());
                        return Err(unknown("key or one-off signature", n, &known));
                    }
                }
                if let Some(s) = &inv.same_as {
                    if !inventories.contains(s.as_str()) {
                        return Err(unknown("inventory", s, &inventories));
                    }
                }
                if let Some(n) = &inv.name {
                    if !inventories.insert(n) {
                        return Err(err(format!("inventory name '{n}' is already bound")));
                    }
                }
            }
            Step::Keymap(m) => {
                for n in m.has.iter().chain(&m.lacks).chain(m.owner.keys()) {
                    if !keys.contains(n.as_str()) {
                        return Err(unknown("key", n, &keys));
                    }
                }
                for s in m.owner.values() {
                    signer_known(s, &signer_names)?;
                }
            }
            Step::ReplaceIdentityKey { signer } => signer_known(signer, &signer_names)?,
            Step::Trace(t) => {
                if t.called.is_empty()
                    && t.not_called.is_empty()
                    && t.count.is_empty()
                    && t.mark.is_none()
                {
                    return Err(err(
                        "trace checks nothing: give called, not_called, count or mark".into(),
                    ));
                }
                for f in t.called.iter().chain(&t.not_called).chain(t.count.keys()) {
                    if !crate::backends::shim::is_function(f) {
                        return Err(err(format!(
                            "unknown PKCS#11 function '{f}' (PKCS#11 2.40 names, e.g. C_Sign)"
                        )));
                    }
                }
                if let Some(f) = t.called.iter().find(|f| t.not_called.contains(f)) {
                    return Err(err(format!("'{f}' is both called and not_called")));
                }
                if let Some(m) = &t.since {
                    if !marks.contains(m.as_str()) {
                        return Err(unknown("trace mark", m, &marks));
                    }
                }
                if let Some(m) = &t.mark {
                    if !marks.insert(m) {
                        return Err(err(format!("trace mark '{m}' is already bound")));
                    }
                }
            }
            Step::KmipQuery(q) => {
                if q.has.is_empty() && q.lacks.is_empty() {
                    return Err(err("kmip_query checks nothing: give has or lacks".into()));
                }
                let known = kmip_operation_names();
                for op in q.has.iter().chain(&q.lacks) {
                    if !known.contains(op) {
                        return Err(err(format!(
                            "unknown KMIP operation '{op}' (KMIP 1.2 names: {})",
                            known.join(", ")
                        )));
                    }
                }
                if let Some(op) = q.has.iter().find(|o| q.lacks.contains(o)) {
                    return Err(err(format!("'{op}' is both in has and in lacks")));
                }
            }
            Step::SelfTest(_) => {}
        }
    }
    Ok(())
}

/// Every `*.yaml` / `*.yml` file directly in `dir`, sorted by name.
pub fn files_in(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("yaml") | Some("yml")
                )
        })
        .collect();
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn parse(text: &str) -> Result<Suite, SuiteError> {
        Suite::parse(text, Path::new("suites/t.yaml"))
    }

    const GOOD: &str = "\
suite: t
about: a test suite
tags: [baseline]
cases:
  - name: sign and verify
    steps:
      - create_key: { alg: ecdsa-p256, as: k }
      - sign: { key: k, as: s }
      - verify: { signature: s }
      - verify: { signature: s, data: tampered, expect: mismatch }
      - destroy_key: { key: k }
      - sign: { key: k, expect: { error: not-found } }
";

    #[test]
    fn a_good_suite_loads_and_collects_required_algorithms() {
        let s = parse(GOOD).unwrap();
        assert_eq!(s.name, "t");
        assert_eq!(s.cases[0].steps.len(), 6);
        assert_eq!(
            s.cases[0].requires,
            vec![Capability::EcdsaP256, Capability::Destroy]
        );
    }

    #[rstest]
    #[case::unknown_step(
        "      - creat_key: { alg: rsa2048, as: k }\n",
        7,
        9,
        "expected one of"
    )]
    #[case::unknown_alg("      - create_key: { alg: rsa1024, as: k }\n", 7, 28, "rsa2048")]
    #[case::unknown_error_kind(
        "      - create_key: { alg: rsa2048, as: k }\n      - sign: { key: k, expect: { error: lost } }\n",
        8,
        42,
        "not-found"
    )]
    #[case::undefined_key(
        "      - sign: { key: nope }\n",
        7,
        22,
        "no earlier step made a key named 'nope'"
    )]
    #[case::unknown_field(
        "      - random: { bytes: 4, colour: red }\n",
        7,
        29,
        "unknown field `colour`"
    )]
    fn errors_point_at_the_place(
        #[case] step: &str,
        #[case] line: u64,
        #[case] column: u64,
        #[case] needle: &str,
    ) {
        let text = format!("suite: t\nabout: x\ncases:\n  - name: c\n    steps:\n      - random: {{ bytes: 1 }}\n{step}");
        let e = parse(&text).unwrap_err();
        assert_eq!((e.line, e.column), (line, column), "{e}");
        assert!(e.message.contains(needle), "{e}");
        assert!(
            e.to_string()
                .starts_with(&format!("suites/t.yaml:{line}:{column}: ")),
            "{e}"
        );
    }

    #[test]
    fn duplicate_case_names_are_refused() {
        let text =
            "suite: t\nabout: x\ncases:\n  - name: c\n    steps: [ { random: { bytes: 1 } } ]\n  - name: c\n    steps: [ { random: { bytes: 1 } } ]\n";
        let e = parse(text).unwrap_err();
        assert_eq!(e.line, 6);
        assert!(e.message.contains("duplicate case name"));
    }

    #[test]
    fn yaml_syntax_error_has_a_place() {
        let e = parse("suite: t\ncases: [\n").unwrap_err();
        assert!(e.line >= 2, "{e}");
    }
}
