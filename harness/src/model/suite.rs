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

use hsm_signers::Algorithm;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

use crate::backends::shim::ShimSpec;
use crate::model::schema::{InstanceName, MapOf, SignerName};
use crate::steps::{CheckContext, Needs};
pub use crate::steps::{Expect, Step};

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

/// A suite file for hsm-harness (suites/*.yaml): a named behaviour, what it needs, its
/// signers, and cases made of steps in the signer's language. Generated from the
/// harness's Rust model (`hsm-harness schema suite`); the loader is the authority. It
/// also checks what this schema cannot: unique case names; unique signer names, and
/// default_signer/one_off_signer naming one of the signers; every key:, signature:
/// and same_as: naming something an earlier step of the case bound with as: (a step
/// that expects an error binds nothing); no name bound twice; and, when the case has a
/// signers: block, every signer name in restart, keymap and replace_identity_key
/// naming a configured signer (renames followed). Run `hsm-harness check FILE`.
/// Reference: suites/README.md.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawSuite {
    /// The suite's name; the first half of the JUnit classname SUITE.BACKEND.
    suite: String,
    /// What behaviour the suite checks, in prose.
    about: String,
    /// Tags for `--tag` selection; every case of the suite has them.
    #[serde(default)]
    tags: Vec<String>,
    /// Capabilities every case of the suite needs; a backend whose profile lacks one
    /// skips the case with that reason.
    #[serde(default)]
    requires: Vec<Capability>,
    /// The signers of every case that has no signers: block of its own. Without
    /// either, a case has one signer, named after the backend, on instance `a`.
    #[serde(default)]
    #[schemars(with = "Option<SignersSpec>")]
    signers: Option<Spanned<SignersSpec>>,
    /// Settings of backend instances, by instance name, for every case that has no
    /// instances: block of its own; instances not named come up as usual. A case with
    /// these requires the `kmip` capability.
    #[serde(default)]
    #[schemars(with = "Option<MapOf<InstanceName, InstanceSpec>>")]
    instances: Option<Spanned<BTreeMap<String, InstanceSpec>>>,
    /// Capabilities a backend must not have: every case of the suite is for backends
    /// without them; others skip it with that reason.
    #[serde(default)]
    lacks: Vec<Capability>,
    /// The PKCS#11 shim settings of every case that has no shim: block of its own.
    #[serde(default)]
    #[schemars(with = "Option<ShimSpec>")]
    shim: Option<Spanned<ShimSpec>>,
    /// The cases; each runs once per backend, in its own process, against its own
    /// fresh backend. At least one; names must be unique.
    #[schemars(length(min = 1))]
    cases: Vec<RawCase>,
}

/// The configured signers of a cell, like seed 001's [[signers]]. Each runs on an
/// instance of the cell's backend (`on: a`; every instance is a fresh token or keys
/// directory of its own) or is the OpenSSL signer (`software: true`). Signer names
/// must be unique; with several signers, default_signer is required.
#[derive(Clone, Debug, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "signers", transform = crate::model::schema::default_signer_with_several)]
pub struct SignersSpec {
    /// The signer that creates every new key (create_key) and gives random values.
    /// Required with several signers; with one, that one.
    #[serde(default)]
    #[schemars(with = "Option<SignerName>")]
    pub default_signer: Option<String>,
    /// The signer of sign_one_off. Default: the default signer if it is software, else
    /// the first software signer, else an OpenSSL signer the router adds (keys in the
    /// cell's state, like software: true).
    #[serde(default)]
    #[schemars(with = "Option<SignerName>")]
    pub one_off_signer: Option<String>,
    /// The signers; at least one, names unique.
    #[schemars(length(min = 1))]
    pub signers: Vec<SignerSpec>,
}

/// One configured signer: a name and exactly one of `on: INSTANCE` or `software: true`.
#[derive(Clone, Debug, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "signer", transform = crate::model::schema::on_or_software)]
pub struct SignerSpec {
    /// The signer's name, unique in the block. Keys are owned by the signer id the
    /// signer binds to, not by its name.
    #[schemars(with = "SignerName")]
    pub name: String,
    /// The backend instance it talks to (`a`, `b`, ...).
    #[serde(default)]
    #[schemars(with = "Option<InstanceName>")]
    pub on: Option<String>,
    /// true: the OpenSSL signer, whatever the cell's backend, with its keys in the
    /// cell's state directory (inventory: { of: software }). All software signers of a
    /// cell share that directory.
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
#[derive(Clone, Debug, Default, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "pkcs11Options")]
pub struct Pkcs11Options {
    /// The signer's `force`: go on with a module that lacks C_DestroyObject, C_GetInfo
    /// or C_GetSlotInfo, with a warning (default false).
    #[serde(default)]
    pub force: Option<bool>,
}

/// How a case configures a KMIP signer, where it departs from what the backend's
/// provider sets (the relay: the KMIP signer's defaults; PyKMIP: TLS 1.2 opted in and
/// `force`). A case with these requires the `kmip` capability.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "kmipOptions")]
pub struct KmipOptions {
    /// The signer's `weaken_security_allow_tls12`: also offer TLS 1.2 (default: the
    /// backend's).
    #[serde(default)]
    pub allow_tls12: Option<bool>,
    /// The signer's `insecure`: skip the server certificate check (default false).
    #[serde(default)]
    pub insecure: bool,
    /// Present the instance's client certificate (default true).
    #[serde(default)]
    pub client_cert: Option<bool>,
    /// Which CA the signer trusts for the server certificate (default own).
    #[serde(default)]
    pub server_ca: CaChoice,
    /// The signer's `force`: go on when the server's Query lacks required operations
    /// (default: the backend's).
    #[serde(default)]
    pub force: Option<bool>,
    /// The signer's `read_timeout`, in milliseconds: how long a read or write may take
    /// (default 30000).
    #[serde(default)]
    pub read_timeout_ms: Option<u64>,
}

/// The CA a KMIP signer trusts.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, JsonSchema)]
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
#[derive(Clone, Debug, Default, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "instance")]
pub struct InstanceSpec {
    /// How the instance's server sets up TLS (default: as the backend's provider
    /// does).
    #[serde(default)]
    pub tls: Option<ServerTls>,
    /// Reach the server through the harness's TCP proxy, with this fault (`none`: pass
    /// through, counting); `traffic` steps check what went through, `proxy` steps
    /// change the fault.
    #[serde(default)]
    pub proxy: Option<crate::backends::proxy::Fault>,
    /// KMIP operations the server pretends not to have: left out of its Query answer
    /// and answered Operation Not Supported (the relay's [testing]
    /// withhold_operations). Requires the kmip-withhold capability.
    #[serde(default)]
    #[schemars(with = "Vec<crate::model::schema::KmipOperation>")]
    pub withhold: Vec<String>,
}

/// The TLS setup of an instance's server.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "serverTls")]
pub struct ServerTls {
    /// The versions the server speaks; default: the server's own (relay: 1.3; PyKMIP:
    /// 1.2; Cosmian KMS: 1.2 and 1.3). Naming 1.3 requires the `tls13` capability, 1.2
    /// without 1.3 the `tls12-only` capability.
    #[serde(default)]
    #[schemars(length(min = 1))]
    pub versions: Option<Vec<TlsVersion>>,
    /// The server certificate (default valid).
    #[serde(default)]
    pub certificate: ServerCert,
    /// Clients must present a certificate from the instance's CA (PyKMIP always does).
    #[serde(default)]
    pub require_client_cert: bool,
}

/// A TLS protocol version.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
pub enum TlsVersion {
    #[serde(rename = "1.2")]
    Tls12,
    #[serde(rename = "1.3")]
    Tls13,
}

/// The server certificate an instance presents.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, JsonSchema)]
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
pub(crate) fn check_instance(name: &str) -> Result<(), String> {
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

    /// What serde cannot check: at least one signer, unique names, exactly one of `on`
    /// or `software` each, roles naming signers, a default signer among several.
    pub(crate) fn check(&self) -> Result<(), String> {
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

/// One case: a named sequence of steps. It passes when every step does what it
/// expects.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "case")]
struct RawCase {
    /// The case's name, unique in the suite; the JUnit testcase name.
    #[schemars(with = "String")]
    name: Spanned<String>,
    /// What the case checks, if the name does not say it all.
    #[serde(default)]
    about: Option<String>,
    /// Tags of this case, in addition to the suite's.
    #[serde(default)]
    tags: Vec<String>,
    /// Capabilities this case needs in addition to the suite's. Added automatically:
    /// the algorithm of every create_key and sign_one_off step, and the explicit alg:
    /// of every sign step, unless the step expects an error; and what the steps and
    /// settings below say they need (suites/README.md lists them).
    #[serde(default)]
    requires: Vec<Capability>,
    /// This case's signers; replaces the suite's signers: block (no merging).
    #[serde(default)]
    #[schemars(with = "Option<SignersSpec>")]
    signers: Option<Spanned<SignersSpec>>,
    /// This case's instance settings; replaces the suite's instances: block (no
    /// merging).
    #[serde(default)]
    #[schemars(with = "Option<MapOf<InstanceName, InstanceSpec>>")]
    instances: Option<Spanned<BTreeMap<String, InstanceSpec>>>,
    /// Capabilities a backend must not have, in addition to the suite's: the case is
    /// for backends without them (e.g. lacks: [random] for the fallback of a backend
    /// without a generator); others skip it with that reason. None may also be
    /// required.
    #[serde(default)]
    lacks: Vec<Capability>,
    /// Run the signers' PKCS#11 module through the PKCS#11 shim with these settings;
    /// replaces the suite's shim: block (no merging), and comes after the backend
    /// provider's own shim settings. The case then requires `pkcs11-shim`. A case with
    /// a trace step and no shim settings runs through the shim with nothing injected.
    #[serde(default)]
    #[schemars(with = "Option<ShimSpec>")]
    shim: Option<Spanned<ShimSpec>>,
    /// The steps, run in order; the first that does not do what it expects fails the
    /// case. At least one.
    #[schemars(with = "Vec<Step>", length(min = 1))]
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
    /// What the case does to a backend beyond its own keys (see
    /// [`crate::steps::Needs::destructive`]).
    pub destructive: Vec<String>,
    /// The backend instances it uses (`a`, `b`, ...), sorted.
    pub instance_names: Vec<String>,
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
#[schemars(rename = "capability")]
pub enum Capability {
    /// RSA 2048, PKCS#1 v1.5, SHA-256 (algorithm rsa2048).
    #[serde(rename = "rsa2048")]
    Rsa2048,
    /// RSA 2048, PSS, SHA-256 (algorithm rsa2048-pss).
    #[serde(rename = "rsa2048-pss")]
    Rsa2048Pss,
    /// ECDSA P-256, SHA-256 (algorithm ecdsa-p256).
    #[serde(rename = "ecdsa-p256")]
    EcdsaP256,
    /// ECDSA P-384, SHA-384 (algorithm ecdsa-p384).
    #[serde(rename = "ecdsa-p384")]
    EcdsaP384,
    /// Ed25519 (algorithm ed25519).
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

/// KMIP 1.2's operation names, as `kmip_query` takes them.
pub fn kmip_operation_names() -> Vec<String> {
    (0x01..=0x29)
        .map(hsm_signers::kmip::operation_name)
        .collect()
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
            let mut ctx = CheckContext::new(signers.as_ref(), &instances);
            for step in &case.steps {
                step.value.check(&mut ctx).map_err(|e| {
                    SuiteError::at(path, e.at.as_ref().unwrap_or(&step.referenced), e.message)
                })?;
            }
            // A trace, or shim settings changed by a restart, need the shim from the start.
            let shim = case
                .shim
                .as_ref()
                .or(raw.shim.as_ref())
                .map(|s| s.value.clone())
                .or_else(|| ctx.needs_shim.then(ShimSpec::default));
            // One-off keys are made and destroyed on the backend when one of its
            // signers is the one-off signer (else the router's OpenSSL signer does it).
            let hsm_one_off = |spec: &SignersSpec| {
                spec.one_off_signer
                    .as_ref()
                    .is_some_and(|n| spec.signers.iter().any(|s| &s.name == n && !s.software))
            };
            let mut needs = Needs {
                caps: raw.requires.clone(),
                one_off_on_backend: signers.as_ref().is_some_and(hsm_one_off)
                    || ctx.changes_one_off_signer,
                destructive: Vec::new(),
            };
            for c in &case.requires {
                needs.add(*c);
            }
            if !instances.is_empty()
                || signers
                    .iter()
                    .flat_map(|s| &s.signers)
                    .any(|s| s.kmip.is_some())
            {
                needs.add(Capability::Kmip);
            }
            if instances.values().any(|i| {
                i.tls
                    .as_ref()
                    .and_then(|t| t.versions.as_ref())
                    .is_some_and(|v| v.contains(&TlsVersion::Tls13))
            }) {
                needs.add(Capability::Tls13);
            }
            if instances.values().any(|i| {
                i.tls
                    .as_ref()
                    .and_then(|t| t.versions.as_ref())
                    .is_some_and(|v| {
                        v.contains(&TlsVersion::Tls12) && !v.contains(&TlsVersion::Tls13)
                    })
            }) {
                needs.add(Capability::Tls12Only);
            }
            if shim.is_some() {
                needs.add(Capability::Pkcs11Shim);
            }
            if instances.values().any(|i| !i.withhold.is_empty()) {
                needs.add(Capability::KmipWithhold);
            }
            if signers
                .iter()
                .flat_map(|s| &s.signers)
                .any(|s| s.pkcs11.is_some())
            {
                needs.add(Capability::Pkcs11);
            }
            for step in &case.steps {
                step.value.requires(&mut needs);
            }
            let requires = needs.caps;
            let destructive = needs.destructive;
            let instance_names: Vec<String> = ctx.used_instances.iter().cloned().collect();
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
                destructive,
                instance_names,
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

/// The JSON Schema of suite files (`suites/schema.json`), generated from the model.
pub fn schema() -> serde_json::Value {
    crate::model::schema::generate::<RawSuite>("urn:hsm-harness:schema:suite", "hsm-harness suite")
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
