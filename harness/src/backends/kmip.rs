//! Provider `kmip`: a vendor's KMIP server that already runs, used as it is, reached
//! through the KMIP signer: `provider: { kmip: { host, port, server_ca, client_cert,
//! client_key, username, password, tls: { allow_tls12 }, second } }`.
//!
//! The harness does not own such a server, so it never wipes it, never changes its
//! credentials and never replaces a key on it: those abilities refuse (in one place,
//! `External::destructive`). It does not set up the server's TLS either, so it gives
//! no administered capability: cases about TLS enforcement, withheld operations or
//! `kmip_query` (capability `kmip`) are skipped with that reason.
//!
//! TLS: the signer offers TLS 1.3 only, as the KMIP signer does by default. When an
//! instance is made the harness connects offering TLS 1.3 and 1.2; a server that picks
//! TLS 1.2 speaks no TLS 1.3, and is refused (the cell is an `<error>` naming
//! `tls: { allow_tls12: true }`) unless the backend file opts in, which then also sets
//! the signer's `weaken_security_allow_tls12`. The signer's `force` is set when the
//! server's Query does not list every operation the signer requires (or is refused),
//! as read from the server at that moment.
//!
//! What the harness does to keep the server as it was:
//!
//! - cells on one server never run at the same time: each holds an exclusive lock on a
//!   file named after `host:port` (see `backends::lock`) for the whole cell, so every
//!   object that appears during a cell is that cell's;
//! - when an instance is made, the oracle's KMIP client records every object Locate
//!   (without attributes) finds, with what identifies it: object type, names, state,
//!   algorithm and length, and the key identifier of a public key. A server that
//!   refuses Locate is refused: the harness could not tell the cell's objects from
//!   others, nor remove them;
//! - when the cell ends ([`Instance::finish`], or the instance's drop), every object
//!   Locate finds that was not there at the start is destroyed (revoked first when the
//!   server refuses to destroy it as it is), and every recorded object must be there
//!   still with the same facts. What could not be destroyed, what is missing or
//!   changed, is the cell's `<error>` and is in its log and report properties.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail};
use hsm_signers::config::{KmipConfig, SignerKind};
use hsm_signers::{Algorithm, KeyIdentifier, Secret};
use oracle::kmip::objects::ObjectFacts;
use oracle::kmip::server::TlsFacts;
use oracle::kmip::{ClientIdentity, Credential, Endpoint, KmipError, Session};
use secrecy::ExposeSecret;
use serde::de::{self, Deserializer};
use serde::Deserialize;

use super::kmip_describe::describe_kmip;
use super::lock;
use super::server::{with_options, Runtime};
use super::SignerOptions;
use super::{log_line, probe_kmip, CellBackend, Description, Instance, Observed, Provider};
use crate::model::suite::{Capability, InstanceSpec};
use crate::oracle_terms;

/// KMIP's registered port.
const KMIP_PORT: u16 = 5696;

fn kmip_port() -> u16 {
    KMIP_PORT
}

/// A vendor's KMIP server that already runs (and optionally a second one for
/// two-instance cases), used as it is through the KMIP signer: never wiped, its
/// credentials never changed; objects that were there before a cell are left
/// unchanged, objects a cell makes are destroyed when it ends.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Kmip {
    /// The server of instance `a`: a DNS name or IP address its TLS certificate names
    /// (the signer and the harness check the certificate against it).
    pub host: String,
    /// The server's KMIP port (default 5696, KMIP's registered port).
    #[serde(default = "kmip_port")]
    pub port: u16,
    /// PEM certificate(s) of the CA that issued the server's certificate; the only
    /// trusted roots.
    pub server_ca: PathBuf,
    /// The client certificate (PEM) presented to the server; with `client_key`.
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM); with `client_cert`.
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// The username of the Username and Password credential sent in every request.
    #[serde(default)]
    pub username: Option<String>,
    /// The password of that credential: `env:NAME` or `file:PATH` only (a password
    /// written in the backend file is refused); needs `username`.
    #[serde(default)]
    pub password: Option<PasswordSource>,
    /// How the signer and the harness speak TLS to the server.
    #[serde(default)]
    pub tls: TlsSettings,
    /// The server of instance `b`, for cases with two instances (same CA, client
    /// certificate and credential); without it such cases cannot run here.
    #[serde(default)]
    pub second: Option<SecondServer>,
}

/// `provider: kmip` alone names no server; [`Provider::check`] refuses it.
impl Default for Kmip {
    fn default() -> Self {
        Kmip {
            host: String::new(),
            port: KMIP_PORT,
            server_ca: PathBuf::new(),
            client_cert: None,
            client_key: None,
            username: None,
            password: None,
            tls: TlsSettings::default(),
            second: None,
        }
    }
}

/// TLS settings of an external KMIP server.
#[derive(Clone, Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// Run against a server that speaks TLS 1.2 and not 1.3 (weakens security; sets
    /// the KMIP signer's `weaken_security_allow_tls12`). Default false: such a server
    /// is refused, every cell an error naming this setting.
    #[serde(default)]
    pub allow_tls12: bool,
}

/// Where instance `b`'s server is.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecondServer {
    /// A DNS name or IP address its TLS certificate names.
    pub host: String,
    /// Its KMIP port (default 5696).
    #[serde(default = "kmip_port")]
    pub port: u16,
}

/// A password named by where it is read from (`env:NAME`, `file:PATH`), never a
/// literal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PasswordSource(pub Secret);

impl<'de> Deserialize<'de> for PasswordSource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Secret::deserialize(d)? {
            Secret::Literal(_) => Err(de::Error::custom(
                "a password written in the backend file is refused: give \"env:NAME\" or \"file:PATH\"",
            )),
            s => Ok(PasswordSource(s)),
        }
    }
}

impl schemars::JsonSchema for PasswordSource {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "passwordSource".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "Where the password is read from: \"env:NAME\" or \"file:PATH\".",
            "type": "string",
            "pattern": "^(env|file):.+$"
        })
    }
}

/// A server's address.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Address {
    host: String,
    port: u16,
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl Kmip {
    /// The servers, by instance name.
    fn servers(&self) -> Vec<(&'static str, Address)> {
        let mut out = vec![(
            "a",
            Address {
                host: self.host.clone(),
                port: self.port,
            },
        )];
        if let Some(s) = &self.second {
            out.push((
                "b",
                Address {
                    host: s.host.clone(),
                    port: s.port,
                },
            ));
        }
        out
    }

    /// How the oracle's client reaches `address`: the CA, client certificate and
    /// credential the signer gets. The password is read now.
    fn endpoint(&self, address: &Address) -> anyhow::Result<Endpoint> {
        let mut e = Endpoint::new(address.host.clone(), address.port, &self.server_ca);
        if let (Some(cert), Some(key)) = (&self.client_cert, &self.client_key) {
            e.identity = Some(ClientIdentity {
                cert: cert.clone(),
                key: key.clone(),
            });
        }
        if let Some(username) = &self.username {
            let password = match &self.password {
                Some(p) => Some(
                    p.0.resolve()
                        .map_err(|e| anyhow!("the KMIP password ({}): {e}", p.0))?
                        .expose_secret()
                        .to_string(),
                ),
                None => None,
            };
            e.credential = Some(Credential {
                username: username.clone(),
                password,
            });
        }
        Ok(e)
    }
}

impl Provider for Kmip {
    fn name(&self) -> &'static str {
        "kmip"
    }

    fn check(&self) -> Result<(), String> {
        if self.host.is_empty() || self.server_ca.as_os_str().is_empty() {
            return Err("the kmip provider needs settings: host and server_ca at least".into());
        }
        if self.client_cert.is_some() != self.client_key.is_some() {
            return Err("provider kmip: client_cert and client_key go together".into());
        }
        if self.password.is_some() && self.username.is_none() {
            return Err("provider kmip: a password needs a username".into());
        }
        if let Some(s) = &self.second {
            if s.host.is_empty() {
                return Err("provider kmip: second needs a host".into());
            }
            if s.host.eq_ignore_ascii_case(&self.host) && s.port == self.port {
                return Err(format!(
                    "provider kmip: second names the same server as host and port ({}:{})",
                    self.host, self.port
                ));
            }
        }
        Ok(())
    }

    fn signer_type(&self) -> super::SignerType {
        super::SignerType::Kmip
    }

    /// Nothing: the harness sets up neither the server's TLS nor its operations, and
    /// changes neither its credentials nor its keys.
    fn administers(&self) -> &'static [Capability] {
        &[]
    }

    fn existing(&self) -> bool {
        true
    }

    fn lacks_instance(&self, name: &str) -> Option<String> {
        match name {
            "a" => None,
            "b" if self.second.is_some() => None,
            "b" => Some(
                "the case uses instance 'b', a second server: give `second` in the kmip \
                 provider's settings"
                    .into(),
            ),
            other => Some(format!(
                "the case uses instance '{other}'; the kmip provider has 'a' and 'b' \
                 (second) only"
            )),
        }
    }

    fn open(&self, _workdir: &Path, _runtime: &Runtime) -> anyhow::Result<Box<dyn CellBackend>> {
        // Locks in one order (by file name), so two cells never wait for each other.
        let mut files: Vec<PathBuf> = self
            .servers()
            .iter()
            .map(|(_, a)| lock::path("kmip", &a.to_string().to_ascii_lowercase()))
            .collect();
        files.sort();
        let mut locks = Vec::new();
        for path in &files {
            locks.push(lock::acquire(path, "KMIP server")?);
        }
        Ok(Box::new(KmipCell {
            settings: self.clone(),
            used: BTreeSet::new(),
            allow_destructive: false,
            _locks: locks,
        }))
    }
}

struct KmipCell {
    settings: Kmip,
    /// The instances made so far.
    used: BTreeSet<&'static str>,
    /// `--allow-destructive`: a wipe destroys every object the client sees.
    allow_destructive: bool,
    _locks: Vec<File>,
}

/// Why the harness refuses a server that negotiated only TLS 1.2.
fn tls12_refused(address: &Address, tls: &TlsFacts) -> String {
    format!(
        "the KMIP server at {address} negotiated only TLS 1.2 ({}) when offered TLS 1.3 \
         and 1.2; the harness refuses it by default because the KMIP signer speaks TLS 1.3 \
         only unless told to weaken security (seed 002); set `tls: {{ allow_tls12: true }}` \
         in the backend file's kmip provider settings to run anyway (weakens security)",
        tls.cipher_suite
    )
}

/// Why the signer needs `force` on this server, from its Query Operations answer:
/// the required operations it does not list, or its refusal. `None`: it lists them all.
fn force_reason(answer: Result<Vec<u32>, KmipError>) -> Option<String> {
    match answer {
        Ok(listed) => {
            let missing: Vec<&str> = hsm_signers::kmip::REQUIRED_OPERATIONS
                .iter()
                .filter(|(code, _)| !listed.contains(code))
                .map(|(_, name)| *name)
                .collect();
            (!missing.is_empty()).then(|| {
                format!(
                    "its Query does not list {} (operations the signer requires)",
                    missing.join(", ")
                )
            })
        }
        Err(e) => Some(format!(
            "its Query Operations is not answered ({})",
            e.detail()
        )),
    }
}

impl CellBackend for KmipCell {
    fn allow_destructive(&mut self) {
        self.allow_destructive = true;
    }

    fn make(
        &mut self,
        name: &str,
        _dir: &Path,
        spec: &InstanceSpec,
    ) -> anyhow::Result<Box<dyn Instance>> {
        // The capability probe ([`super::Instances::probe`]) looks at instance a's
        // server and makes nothing there: no snapshot, nothing to put back.
        let probing = name == "Probe";
        let key = if probing { "a" } else { name };
        let Some((key, address)) = self.settings.servers().into_iter().find(|(n, _)| *n == key)
        else {
            if name == "b" {
                bail!("instance 'b' needs `second` in the kmip provider's settings");
            }
            bail!("the kmip provider has instances 'a' (host) and 'b' (second) only, not '{name}'");
        };
        if *spec != InstanceSpec::default() {
            bail!(
                "instance '{name}': the harness does not set up an external KMIP server's TLS, \
                 proxy or operations (the case's `instances:` settings need capability kmip)"
            );
        }
        if !probing && !self.used.insert(key) {
            bail!("instance '{name}' is made twice in one cell");
        }
        let endpoint = self.settings.endpoint(&address)?;
        let tls = oracle::kmip::server::tls_facts(&endpoint)
            .map_err(|e| anyhow!("the KMIP server at {address}: {}", e.detail()))?;
        let allow_tls12 = self.settings.tls.allow_tls12;
        if !tls.tls13 {
            if !allow_tls12 {
                bail!("{}", tls12_refused(&address, &tls));
            }
            log_line(format!(
                "  the KMIP server at {address} negotiated {} ({}): allowed by `tls: {{ allow_tls12: true }}` in the backend file (weakens security)",
                tls.version, tls.cipher_suite
            ));
        }
        let force = force_reason(oracle::kmip::query_operations(&endpoint));
        if let Some(why) = &force {
            log_line(format!(
                "  the KMIP server at {address}: {why}; the signer is configured with force = true"
            ));
        }
        let snapshot = if probing {
            None
        } else {
            let snapshot = snapshot(&endpoint, &address)?;
            log_line(format!(
                "  instance '{name}': KMIP server at {address} ({}), {} objects there before the cell",
                tls.version,
                snapshot.len()
            ));
            Some(snapshot)
        };
        Ok(Box::new(External {
            name: name.to_string(),
            address,
            settings: self.settings.clone(),
            endpoint,
            allow_tls12,
            tls,
            force,
            snapshot,
            finished: None,
            allow_destructive: self.allow_destructive,
            wiped: Vec::new(),
        }))
    }
}

/// Every object the server lets this client see, with its facts. Refused: a server
/// that refuses Locate (nothing could be put back), or one that cannot be reached.
fn snapshot(endpoint: &Endpoint, address: &Address) -> anyhow::Result<Vec<(String, ObjectFacts)>> {
    let mut session = Session::open(endpoint).map_err(|e| anyhow!("{address}: {}", e.detail()))?;
    let uids = match session.locate_all() {
        Ok(u) => u,
        Err(KmipError::Refused(why)) => bail!(
            "the KMIP server at {address} refuses Locate ({why}): the harness cannot record \
             the objects there before a cell, so it could neither tell the cell's objects \
             from others nor destroy them; it runs no case on such a server"
        ),
        Err(e) => bail!("the KMIP server at {address}: {}", e.detail()),
    };
    let mut out = Vec::new();
    for uid in uids {
        // One gone between Locate and Get Attributes was not there to keep.
        if let Some(facts) = session
            .object_facts(&uid)
            .map_err(|e| anyhow!("the KMIP server at {address}: object {uid}: {}", e.detail()))?
        {
            out.push((uid, facts));
        }
    }
    session.close();
    Ok(out)
}

/// The oracle's session with a server, opened again once when the connection breaks
/// (a server may close it after refusing a request).
struct Admin<'a> {
    endpoint: &'a Endpoint,
    session: Option<Session<'a>>,
}

impl<'a> Admin<'a> {
    fn new(endpoint: &'a Endpoint) -> Self {
        Admin {
            endpoint,
            session: None,
        }
    }

    fn with<T>(
        &mut self,
        mut ask: impl FnMut(&mut Session<'a>) -> Result<T, KmipError>,
    ) -> Result<T, KmipError> {
        for attempt in 0..2 {
            let session = match self.session.as_mut() {
                Some(s) => s,
                None => self.session.insert(Session::open(self.endpoint)?),
            };
            match ask(session) {
                Err(KmipError::Connection(_)) if attempt == 0 => self.session = None,
                other => return other,
            }
        }
        unreachable!("the second attempt returns")
    }

    fn close(self) {
        if let Some(s) = self.session {
            s.close();
        }
    }
}

/// What became of an object the cell made.
enum Removed {
    Destroyed(ObjectFacts),
    /// Destroy was refused as the object was; Revoke, then Destroy, went through.
    RevokedAndDestroyed(ObjectFacts),
    /// The server keeps listing it with its key material destroyed.
    AlreadyDestroyed(ObjectFacts),
    /// Gone between Locate and the first look at it.
    Gone,
}

/// Destroys object `uid`, made by the cell: Destroy; when refused, Revoke (Cessation of
/// Operation) and Destroy again. The problem, with the server's answers, when it stays.
fn remove(admin: &mut Admin<'_>, uid: &str) -> Result<Removed, String> {
    let said = |e: KmipError| format!("object {uid}: {}", e.detail());
    let Some(facts) = admin.with(|s| s.object_facts(uid)).map_err(said)? else {
        return Ok(Removed::Gone);
    };
    if facts.is_destroyed() {
        return Ok(Removed::AlreadyDestroyed(facts));
    }
    let done = |a: &oracle::kmip::message::Answer| a.status == 0 || a.is_not_found();
    let first = admin.with(|s| s.destroy(uid)).map_err(said)?;
    if done(&first) {
        return Ok(Removed::Destroyed(facts));
    }
    let revoke = admin.with(|s| s.revoke(uid)).map_err(said)?;
    let again = admin.with(|s| s.destroy(uid)).map_err(said)?;
    if done(&again) {
        return Ok(Removed::RevokedAndDestroyed(facts));
    }
    Err(format!(
        "could not destroy {facts} ({uid}), made by this cell: Destroy answered {}; Revoke \
         answered {}; Destroy again answered {}",
        first.describe(),
        revoke.describe(),
        again.describe()
    ))
}

/// An instance: an external KMIP server, with what was there when the instance was
/// made (none for the capability probe, which makes nothing).
struct External {
    name: String,
    address: Address,
    settings: Kmip,
    /// The oracle's way to the server; holds the password once read.
    endpoint: Endpoint,
    allow_tls12: bool,
    tls: TlsFacts,
    /// Why the signer is configured with `force`, if it is.
    force: Option<String>,
    snapshot: Option<Vec<(String, ObjectFacts)>>,
    /// What the end of the cell found (once it ran).
    finished: Option<Vec<String>>,
    /// `--allow-destructive`: a wipe destroys every object the client sees.
    allow_destructive: bool,
    /// Objects there before the cell that a wipe destroyed (allowed).
    wiped: Vec<String>,
}

impl External {
    /// The one place that refuses what would change a server the harness does not own
    /// (wipes, credential changes, impostor keys); `--allow-destructive` is to be
    /// decided here.
    fn destructive(&self, what: &str) -> anyhow::Error {
        anyhow!(
            "instance '{}' is an external KMIP server ({}, kmip provider): the harness {what} it \
             only with --allow-destructive, if at all",
            self.name,
            self.address
        )
    }

    /// Whether object `uid` was there when the instance was made.
    fn was_there(&self, uid: &str) -> bool {
        self.snapshot.iter().flatten().any(|(u, _)| u == uid)
    }

    /// Destroys what the cell made and checks what was there before; the problems.
    fn clean_up(&self) -> Vec<String> {
        let Some(snapshot) = &self.snapshot else {
            return Vec::new();
        };
        let server = format!("KMIP server {}", self.address);
        let mut problems = Vec::new();
        let mut admin = Admin::new(&self.endpoint);
        let now = match admin.with(|s| s.locate_all()) {
            Ok(u) => u,
            Err(e) => {
                problems.push(format!(
                    "{server}: cannot list its objects at the cell's end: {}",
                    e.detail()
                ));
                return problems;
            }
        };
        let mut destroyed = 0;
        for uid in now.iter().filter(|u| !self.was_there(u)) {
            match remove(&mut admin, uid) {
                Ok(Removed::Destroyed(f)) => {
                    destroyed += 1;
                    log_line(format!("  {server}: destroyed {f} ({uid}), made by this cell"));
                }
                Ok(Removed::RevokedAndDestroyed(f)) => {
                    destroyed += 1;
                    log_line(format!(
                        "  {server}: revoked and destroyed {f} ({uid}), made by this cell"
                    ));
                }
                Ok(Removed::AlreadyDestroyed(f)) => log_line(format!(
                    "  {server}: {f} ({uid}), made by this cell, is destroyed already (the server still lists it)"
                )),
                Ok(Removed::Gone) => {}
                Err(p) => problems.push(format!("{server}: {p}")),
            }
        }
        for (uid, before) in snapshot {
            if !now.contains(uid) {
                problems.push(format!(
                    "{server}: {before} ({uid}), there before the cell, is gone"
                ));
                continue;
            }
            match admin.with(|s| s.object_facts(uid)) {
                Ok(Some(after)) if after == *before => {}
                Ok(Some(after)) => problems.push(format!(
                    "{server}: {before} ({uid}), there before the cell, changed: now {after}"
                )),
                Ok(None) => problems.push(format!(
                    "{server}: {before} ({uid}), there before the cell, is gone"
                )),
                Err(e) => problems.push(format!(
                    "{server}: {before} ({uid}), there before the cell, cannot be read: {}",
                    e.detail()
                )),
            }
        }
        admin.close();
        log_line(format!(
            "  {server}: cell end: {destroyed} objects made by the cell destroyed, {} there before it checked, {} problems",
            snapshot.len(),
            problems.len()
        ));
        for p in &problems {
            log_line(format!("  {p}"));
        }
        problems
    }
}

impl Instance for External {
    fn signer_kind(&self, options: &SignerOptions<'_>) -> anyhow::Result<SignerKind> {
        let s = &self.settings;
        let mut c = KmipConfig::new(&self.address.host, self.address.port);
        c.server_ca_cert_path = Some(s.server_ca.clone());
        c.client_cert_path = s.client_cert.clone();
        c.client_cert_private_key_path = s.client_key.clone();
        c.username = s.username.clone();
        c.password = s.password.as_ref().map(|p| p.0.clone());
        c.weaken_security_allow_tls12 = self.allow_tls12;
        c.force = self.force.is_some();
        Ok(SignerKind::Kmip(with_options(c, options)))
    }

    /// The key pairs made since the instance was (those there before are not the
    /// cell's: a case sees the server as if it had been empty), found and named by the
    /// oracle's KMIP client.
    fn inventory(&mut self) -> anyhow::Result<Vec<KeyIdentifier>> {
        let before: Vec<oracle::KeyId> = self
            .snapshot
            .iter()
            .flatten()
            .filter_map(|(_, f)| f.key.clone().and_then(Result::ok))
            .collect();
        let ids = oracle::kmip::inventory(&self.endpoint).map_err(|e| anyhow!("{e}"))?;
        Ok(ids
            .into_iter()
            .filter(|id| !before.contains(id))
            .map(oracle_terms::key_identifier)
            .collect())
    }

    /// Allowed: destroys every object the client sees (revoking first where the server
    /// wants it), those there before the cell too.
    fn wipe(&mut self) -> anyhow::Result<()> {
        if !self.allow_destructive {
            return Err(self.destructive("wipes"));
        }
        let mut admin = Admin::new(&self.endpoint);
        let all = admin
            .with(|s| s.locate_all())
            .map_err(|e| anyhow!("Locate: {}", e.detail()))?;
        for uid in &all {
            let removed = remove(&mut admin, uid).map_err(|p| anyhow!("wipe: {p}"))?;
            if let Some(snapshot) = &mut self.snapshot {
                if let Some(at) = snapshot.iter().position(|(u, _)| u == uid) {
                    let (u, f) = snapshot.remove(at);
                    self.wiped.push(format!("{f} ({u})"));
                    continue;
                }
            }
            if let Removed::Destroyed(f) | Removed::RevokedAndDestroyed(f) = removed {
                log_line(format!("  wipe: destroyed {f} ({uid}), made by this cell"));
            }
        }
        admin.close();
        for w in &self.wiped {
            log_line(format!(
                "  KMIP server {}: {w}, there before the cell, destroyed by a wipe (--allow-destructive)",
                self.address
            ));
        }
        Ok(())
    }

    fn change_credentials(&mut self) -> anyhow::Result<()> {
        Err(self.destructive("changes the credentials of"))
    }

    fn replace_key(&mut self, _id: &KeyIdentifier, _alg: Algorithm) -> anyhow::Result<()> {
        Err(self.destructive("replaces keys on"))
    }

    fn start_server(&mut self) -> anyhow::Result<()> {
        bail!(
            "instance '{}' ({}) has no server process the harness runs",
            self.name,
            self.address
        )
    }

    fn kmip_endpoint(&self) -> Option<anyhow::Result<Endpoint>> {
        Some(Ok(self.endpoint.clone()))
    }

    fn properties(&self) -> Vec<(String, String)> {
        let mut props = vec![
            ("server".to_string(), self.address.to_string()),
            (
                "server_tls".to_string(),
                format!("{} {}", self.tls.version, self.tls.cipher_suite),
            ),
        ];
        if let Some(why) = &self.force {
            props.push(("signer_force".to_string(), why.clone()));
        }
        if let Some(s) = &self.snapshot {
            props.push(("objects_before".to_string(), s.len().to_string()));
        }
        if let Some(problems) = &self.finished {
            props.push((
                "cleanup".to_string(),
                if problems.is_empty() {
                    "server left as found".to_string()
                } else {
                    problems.join("; ")
                },
            ));
        }
        props
    }

    fn probe(&mut self) -> anyhow::Result<Vec<Observed>> {
        probe_kmip(&self.endpoint)
    }

    fn describe(&mut self) -> anyhow::Result<Description> {
        describe_kmip(&self.endpoint)
    }

    fn finish(&mut self) -> Vec<String> {
        if self.finished.is_none() {
            self.finished = Some(self.clean_up());
        }
        self.finished.clone().unwrap_or_default()
    }
}

impl Drop for External {
    /// A cell that ends without [`Instance::finish`] (an early error) cleans up too.
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::backend::Backend;

    fn load_text(text: &str) -> Result<Backend, crate::model::suite::SuiteError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b.yaml");
        std::fs::write(&p, text).unwrap();
        Backend::load(&p)
    }

    /// A backend file whose kmip settings are `settings` (indented four spaces).
    fn load(settings: &str) -> Result<Backend, crate::model::suite::SuiteError> {
        load_text(&format!(
            "backend: x\nabout: x\nprovider:\n  kmip:\n{settings}capabilities: [rsa2048]\n"
        ))
    }

    #[test]
    fn settings_load() {
        let b = load(
            "    host: kms.example\n    port: 5697\n    server_ca: /ca.pem\n    client_cert: /c.pem\n    client_key: /c.key\n    username: signer\n    password: env:KMS_PASSWORD\n    tls: { allow_tls12: true }\n    second: { host: kms2.example }\n",
        )
        .unwrap();
        assert_eq!(b.provider_name(), "kmip");
        let text = format!("{:?}", b.provider);
        assert!(
            text.contains("allow_tls12: true") && text.contains("port: 5696"),
            "{text}"
        );
        assert!(text.contains("env:KMS_PASSWORD"), "{text}");
    }

    #[test]
    fn port_and_tls_have_defaults() {
        let b = load("    host: 10.0.0.7\n    server_ca: /ca.pem\n").unwrap();
        let text = format!("{:?}", b.provider);
        assert!(
            text.contains("port: 5696") && text.contains("allow_tls12: false"),
            "{text}"
        );
    }

    /// A password written in the file is refused where it stands, with its line, and
    /// the message does not repeat it.
    #[rstest::rstest]
    #[case::string("\"s3cret-pw\"")]
    #[case::integer("123456")]
    #[case::bare("s3cret-pw")]
    fn literal_password_is_refused_with_its_place(#[case] password: &str) {
        let e = load(&format!(
            "    host: h\n    server_ca: /ca.pem\n    username: u\n    password: {password}\n"
        ))
        .unwrap_err();
        assert_eq!(e.line, 8, "{e}");
        assert!(e.column > 0, "{e}");
        assert!(e.message.contains("env:NAME"), "{e}");
        assert!(!e.to_string().contains(password.trim_matches('"')), "{e}");
    }

    #[rstest::rstest]
    #[case::top_level(
        "    host: h\n    server_ca: /ca.pem\n    insecure: true\n",
        7,
        "insecure"
    )]
    #[case::in_tls(
        "    host: h\n    server_ca: /ca.pem\n    tls: { versions: [\"1.2\"] }\n",
        7,
        "versions"
    )]
    #[case::in_second(
        "    host: h\n    server_ca: /ca.pem\n    second: { host: g, ca: /x }\n",
        7,
        "ca"
    )]
    fn unknown_keys_are_refused_with_their_place(
        #[case] settings: &str,
        #[case] line: u64,
        #[case] key: &str,
    ) {
        let e = load(settings).unwrap_err();
        assert_eq!(e.line, line, "{e}");
        assert!(e.column > 0, "{e}");
        assert!(e.message.contains(key), "{e}");
    }

    #[rstest::rstest]
    #[case::no_settings("provider: kmip\ncapabilities: []\n", "needs settings")]
    #[case::no_ca("provider: { kmip: { host: h } }\ncapabilities: []\n", "server_ca")]
    #[case::cert_without_key(
        "provider: { kmip: { host: h, server_ca: /ca, client_cert: /c } }\ncapabilities: []\n",
        "go together"
    )]
    #[case::password_without_username(
        "provider: { kmip: { host: h, server_ca: /ca, password: env:P } }\ncapabilities: []\n",
        "needs a username"
    )]
    #[case::same_second(
        "provider: { kmip: { host: H, server_ca: /ca, second: { host: h } } }\ncapabilities: []\n",
        "same server"
    )]
    #[case::kmip_capability(
        "provider: { kmip: { host: h, server_ca: /ca } }\ncapabilities: [kmip]\n",
        "'kmip' is not something the kmip provider can give"
    )]
    #[case::credentials(
        "provider: { kmip: { host: h, server_ca: /ca } }\ncapabilities: [credentials]\n",
        "'credentials' is not something the kmip provider can give"
    )]
    fn refused(#[case] rest: &str, #[case] said: &str) {
        let e = load_text(&format!("backend: x\nabout: x\n{rest}")).unwrap_err();
        assert!(e.message.contains(said), "{e}");
    }

    #[test]
    fn the_tls12_refusal_names_the_setting_and_the_server() {
        let why = tls12_refused(
            &Address {
                host: "kms".into(),
                port: 5696,
            },
            &TlsFacts {
                version: "TLS 1.2".into(),
                cipher_suite: "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256".into(),
                tls13: false,
            },
        );
        assert!(why.contains("kms:5696"), "{why}");
        assert!(why.contains("only TLS 1.2"), "{why}");
        assert!(why.contains("tls: { allow_tls12: true }"), "{why}");
        assert!(why.contains("weakens security"), "{why}");
    }

    #[test]
    fn force_follows_the_query_answer() {
        let all: Vec<u32> = hsm_signers::kmip::REQUIRED_OPERATIONS
            .iter()
            .map(|(c, _)| *c)
            .collect();
        assert_eq!(force_reason(Ok(all.clone())), None);
        let without_modify: Vec<u32> = all.iter().copied().filter(|c| *c != 0x0E).collect();
        let why = force_reason(Ok(without_modify)).unwrap();
        assert!(why.contains("Modify Attribute"), "{why}");
        let why = force_reason(Err(KmipError::Refused("Query: nope".into()))).unwrap();
        assert!(why.contains("Query: nope"), "{why}");
    }

    #[test]
    fn the_password_is_read_from_its_source_only_when_reaching_the_server() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "pw-from-file\n").unwrap();
        let k = Kmip {
            host: "h".into(),
            server_ca: "/ca".into(),
            username: Some("u".into()),
            password: Some(PasswordSource(Secret::File(file))),
            ..Kmip::default()
        };
        let a = &k.servers()[0].1;
        let e = k.endpoint(a).unwrap();
        let c = e.credential.unwrap();
        assert_eq!(c.username, "u");
        assert_eq!(c.password.as_deref(), Some("pw-from-file"));
        let missing = Kmip {
            password: Some(PasswordSource(Secret::Env(
                "HSM_HARNESS_NO_SUCH_VAR".into(),
            ))),
            ..k
        };
        let e = missing.endpoint(a).unwrap_err().to_string();
        assert!(e.contains("env:HSM_HARNESS_NO_SUCH_VAR"), "{e}");
    }
}
