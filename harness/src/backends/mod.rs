//! Backends: how each kind of backend comes up for a cell, and how the harness
//! administers it beside the signer under test.
//!
//! A kind of backend is a [`Provider`], one file each (`software`, `softhsm`, `relay`,
//! `pykmip`, `cosmian`, and `pkcs11` and `kmip` for a vendor's existing token or KMIP
//! server), registered by one line in the `providers!` list below. A
//! backend file's `provider:` names one and gives its settings. In a cell, the provider
//! opens a [`CellBackend`] (what the cell's instances share: a token directory, the
//! PKCS#11 shim), which makes each [`Instance`] (`on: a`, `on: b` in a suite) on first
//! use: a fresh backend of the cell's kind, gone with the cell's work directory.
//! Abilities not every kind has (credentials to change, keys to replace, a server to
//! kill, a proxy) are methods with a refusing default, so nothing outside this folder
//! asks which kind it has.
//!
//! The harness reaches instances through sessions of its own, never the signer's:
//! inventories, wipes, PIN changes and impostor keys are done here, as an operator
//! with pkcs11-tool would. For the KMIP servers that own their storage (PyKMIP, Cosmian
//! KMS) that is the oracle's KMIP client. Inventories name keys by identifiers the
//! oracle computes from the public keys, so a signer's encoding mistake cannot agree
//! with itself.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use hsm_signers::config::SignerKind;
use hsm_signers::{Algorithm, KeyIdentifier};
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;

use crate::model::backend::Placement;
use crate::model::suite::{CaChoice, Capability, InstanceSpec, KmipOptions, Pkcs11Options};
use pki::ServerFlaw;
use proxy::{Fault, Stats};
use server::Runtime;
use shim::ShimSpec;

pub mod companion;
pub mod container;
pub mod cosmian;
pub mod kmip;
mod kmip_describe;
mod kmip_server;
mod lock;
pub mod pkcs11;
pub mod pki;
pub mod proxy;
pub mod pykmip;
pub mod pykmip_zygote;
pub mod relay;
pub mod server;
pub mod shim;
pub mod softhsm;
pub mod software;
pub mod token;

/// The providers a backend file can name, each `name => settings type`. The settings
/// come from `provider: { name: {...} }`, or from `provider: name` for the defaults.
macro_rules! providers {
    ($($name:literal => $ty:ty,)+) => {
        /// The names a backend file's `provider:` accepts.
        pub const PROVIDER_NAMES: &[&str] = &[$($name),+];

        fn provider_from_map<'de, A: MapAccess<'de>>(
            name: &str,
            map: &mut A,
        ) -> Result<Arc<dyn Provider>, A::Error> {
            match name {
                $($name => Ok(Arc::new(map.next_value::<$ty>()?)),)+
                other => Err(de::Error::unknown_variant(other, PROVIDER_NAMES)),
            }
        }

        fn provider_with_defaults<E: de::Error>(name: &str) -> Result<Arc<dyn Provider>, E> {
            match name {
                $($name => Ok(Arc::new(<$ty>::default())),)+
                other => Err(E::unknown_variant(other, PROVIDER_NAMES)),
            }
        }

        /// Each provider's name with the schema of its settings.
        fn provider_settings_schemas(
            generator: &mut schemars::SchemaGenerator,
        ) -> Vec<(&'static str, schemars::Schema)> {
            vec![$(($name, generator.subschema_for::<$ty>()),)+]
        }
    };
}

providers! {
    "software" => software::Software,
    "softhsm" => softhsm::Softhsm,
    "relay" => relay::Relay,
    "pykmip" => pykmip::Pykmip,
    "cosmian" => cosmian::Cosmian,
    "pkcs11" => pkcs11::Pkcs11,
    "kmip" => kmip::Kmip,
}

/// The capabilities that hold only if the harness can administer the backend that
/// way (or reach it through that signer type); a backend file may claim them only
/// where its provider says [`Provider::administers`]. The others (algorithms, TLS
/// versions, server quirks) are facts about the backend the harness takes as given.
pub const ADMINISTERED: &[Capability] = &[
    Capability::Credentials,
    Capability::ReplaceKeys,
    Capability::Pkcs11Shim,
    Capability::Pkcs11,
    Capability::Kmip,
    Capability::KmipWithhold,
];

/// The kind of signer a provider's backends are reached through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignerType {
    /// The software signer (OpenSSL type).
    Software,
    /// The PKCS#11 signer.
    Pkcs11,
    /// The KMIP signer.
    Kmip,
}

/// A kind of backend, with the settings its backend file gives.
pub trait Provider: fmt::Debug + Send + Sync {
    /// The name backend files use.
    fn name(&self) -> &'static str;

    /// Checks the settings when the backend file loads.
    fn check(&self) -> Result<(), String> {
        Ok(())
    }

    /// Which of [`ADMINISTERED`] this provider really gives.
    fn administers(&self) -> &'static [Capability];

    /// The kind of signer that reaches its backends.
    fn signer_type(&self) -> SignerType;

    /// Why no backend of this kind can come up on this machine where `placement` puts
    /// it (a missing program or module), with what to install; `None` when it can.
    fn unavailable_reason(&self, placement: Placement) -> Option<String> {
        match placement {
            Placement::Local => None,
            Placement::Container => self.container_unavailable_reason(),
        }
    }

    /// What making one instance costs, relative to the others (a SoftHSMv2 token is
    /// 1): the runner starts the costliest cells first, so that no long cell is left
    /// to run alone at the end of a run.
    fn start_cost(&self) -> u32 {
        1
    }

    /// Whether the kind has a container twin (`--provider container`): its server
    /// processes can run in containers of its image ([`container`]).
    fn container_twin(&self) -> bool {
        false
    }

    /// Capabilities a backend file of this kind may list that its container twin
    /// cannot have, each with why: taken off the profile under `--provider container`.
    fn container_lacks(&self) -> &'static [(Capability, &'static str)] {
        &[]
    }

    /// Why the container twin cannot come up here (what the host side needs); only
    /// asked of kinds with a twin.
    fn container_unavailable_reason(&self) -> Option<String> {
        Some(format!(
            "the {} provider has no container twin",
            self.name()
        ))
    }

    /// Whether the backend exists before the run and the harness does not own it (a
    /// vendor's token or server): cases that would wipe it, change its credentials or
    /// plant impostor keys there are skipped unless `--allow-destructive`.
    fn existing(&self) -> bool {
        false
    }

    /// Why this backend has no instance `name` (an existing backend has the ones its
    /// file names: `pkcs11` a second token only with `second_slot`); `None` when it
    /// can make one. A case using such an instance is skipped with the reason.
    fn lacks_instance(&self, _name: &str) -> Option<String> {
        None
    }

    /// The PKCS#11 shim settings the provider puts in front of every cell's module.
    fn shim(&self) -> Option<&ShimSpec> {
        None
    }

    /// Prepares one cell in the cell's own process, before any PKCS#11 module loads;
    /// its server processes run where `runtime` says (kinds without a container twin
    /// are never asked to open under a container runtime).
    fn open(&self, workdir: &Path, runtime: &Runtime) -> anyhow::Result<Box<dyn CellBackend>>;
}

/// What one cell's instances of a provider share.
pub trait CellBackend {
    /// The run allows destructive cases (`--allow-destructive`); asked before any
    /// instance is made. Only an existing backend ([`Provider::existing`]) cares.
    fn allow_destructive(&mut self) {}

    /// A fresh instance `name`, with the case's settings for it, its files in `dir`.
    fn make(
        &mut self,
        name: &str,
        dir: &Path,
        spec: &InstanceSpec,
    ) -> anyhow::Result<Box<dyn Instance>>;

    /// The PKCS#11 module the signers load, where the shim can go in front; `None`
    /// when the signers load none.
    fn module(&self) -> Option<&token::Module> {
        None
    }

    /// The same, to put the shim in front or change its settings.
    fn module_mut(&mut self) -> Option<&mut token::Module> {
        None
    }

    /// Facts for the report (the module, the server program).
    fn properties(&self) -> Vec<(String, String)> {
        Vec::new()
    }
}

/// How a signer of a case reaches an instance: the case's options for its signer.
pub struct SignerOptions<'a> {
    pub kmip: Option<&'a KmipOptions>,
    pub pkcs11: Option<&'a Pkcs11Options>,
    /// The certificate of a CA that issued nothing the instance presents, when the
    /// case asks for `server_ca: other`.
    pub other_ca: Option<PathBuf>,
}

/// One backend instance of a cell. The administrative abilities a kind lacks refuse
/// with a reason; a case that needs them is skipped earlier by its capability
/// profile, so a refusal here is a harness `<error>`.
pub trait Instance {
    /// The signer configuration that reaches this instance.
    fn signer_kind(&self, options: &SignerOptions<'_>) -> anyhow::Result<SignerKind>;

    /// The key identifiers of the key pairs the instance holds, seen by the harness's
    /// own session or client, sorted.
    fn inventory(&mut self) -> anyhow::Result<Vec<KeyIdentifier>>;

    /// Empties the instance; the signer configuration still reaches it, its content is
    /// new. Servers are restarted.
    fn wipe(&mut self) -> anyhow::Result<()>;

    /// New login credentials (a user PIN); the signer configuration follows.
    fn change_credentials(&mut self) -> anyhow::Result<()>;

    /// Replaces key pair `id` by a new key pair of `alg`'s key type under the same
    /// identifier: same handle, other key material.
    fn replace_key(&mut self, id: &KeyIdentifier, alg: Algorithm) -> anyhow::Result<()>;

    /// The server process serving the instance, if it has one.
    fn server(&self) -> Option<&server::ServerSlot> {
        None
    }

    /// The same, to kill it or change its proxy.
    fn server_mut(&mut self) -> Option<&mut server::ServerSlot> {
        None
    }

    /// Starts a killed server again on its port, with its data.
    fn start_server(&mut self) -> anyhow::Result<()>;

    /// How the oracle's own KMIP client reaches the instance's server: straight to its
    /// port (not through a proxy), with the client certificate and credentials the
    /// signers get. `None`: the instance is not a KMIP server.
    fn kmip_endpoint(&self) -> Option<anyhow::Result<oracle::kmip::Endpoint>> {
        None
    }

    /// Facts for the report, each named `<fact>.<instance>` there.
    fn properties(&self) -> Vec<(String, String)> {
        Vec::new()
    }

    /// A log of the instance's server in which each RNG Retrieve it answered shows as
    /// a line holding [`relay::RNG_RETRIEVE_LOGGED`]; `None`: no such log.
    fn rng_log(&self) -> Option<PathBuf> {
        None
    }

    /// What the backend itself says it can do, for the capabilities this kind can
    /// observe (PKCS#11 mechanisms and C_GenerateRandom, KMIP Query), through the
    /// harness's own session or client. Kinds that observe nothing say nothing.
    fn probe(&mut self) -> anyhow::Result<Vec<Observed>> {
        Ok(Vec::new())
    }

    /// What the backend says about itself, for `probe` and `certify` (library, token
    /// and mechanisms; KMIP server, versions, operations and TLS), read through the
    /// harness's own session or client. Facts only: nothing here decides a verdict.
    fn describe(&mut self) -> anyhow::Result<Description> {
        Ok(Description::default())
    }

    /// The end of the cell, before its result is written: an instance on a backend
    /// the harness does not own puts it back as it was (see [`pkcs11`]) and returns
    /// what it could not put back. Asked once; fresh backends have nothing to do.
    fn finish(&mut self) -> Vec<String> {
        Vec::new()
    }
}

/// What an instance says about itself (see [`Instance::describe`]): titled sections
/// of (field, value) rows, in the order they print. Conventional titles: `library`,
/// `token`, `mechanisms` (a row per mechanism: its CKM_ name, then key sizes and
/// flags), `server`, `protocol versions`, `operations`, `object types`, `tls`,
/// `random`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Description {
    pub sections: Vec<Section>,
}

/// One titled part of a [`Description`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Section {
    pub title: String,
    pub rows: Vec<(String, String)>,
}

impl Description {
    /// Appends a section.
    pub fn section(&mut self, title: &str, rows: Vec<(String, String)>) {
        self.sections.push(Section {
            title: title.to_string(),
            rows,
        });
    }

    /// The rows of the section titled `title`, if there is one.
    pub fn rows(&self, title: &str) -> Option<&[(String, String)]> {
        self.sections
            .iter()
            .find(|s| s.title == title)
            .map(|s| s.rows.as_slice())
    }
}

/// Where a cell can see that a backend's own generator made random bytes (see
/// [`Instances::rng_evidence`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RngEvidence {
    /// The PKCS#11 shim's trace: C_GenerateRandom calls that reached the module (not
    /// answered by the shim) and returned CKR_OK.
    ShimTrace(PathBuf),
    /// A KMIP server's log: the lines saying it answered an RNG Retrieve.
    ServerLog(PathBuf),
}

impl RngEvidence {
    /// What the evidence is, for the cell's log.
    pub fn describe(&self) -> String {
        match self {
            RngEvidence::ShimTrace(_) => "C_GenerateRandom calls in the PKCS#11 shim's trace",
            RngEvidence::ServerLog(_) => "RNG Retrieve answers in the relay's log",
        }
        .to_string()
    }

    /// How many times the generator has been seen making bytes so far. A log that is
    /// not there yet holds none.
    pub fn count(&self) -> anyhow::Result<usize> {
        match self {
            RngEvidence::ShimTrace(path) => Ok(shim::read(path)?
                .iter()
                .filter(|c| {
                    c.function == "C_GenerateRandom"
                        && !c.injected
                        && c.rv.as_deref() == Some("CKR_OK")
                })
                .count()),
            RngEvidence::ServerLog(path) => match std::fs::read_to_string(path) {
                Ok(text) => Ok(text
                    .lines()
                    .filter(|l| l.contains(relay::RNG_RETRIEVE_LOGGED))
                    .count()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
                Err(e) => bail!("reading {}: {e}", path.display()),
            },
        }
    }
}

/// One capability as the backend showed it: there or not, and the evidence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub capability: Capability,
    pub has: bool,
    pub evidence: String,
    /// The evidence decides both ways. `false`: it can only rule the capability out
    /// (`has: false`); `has: true` then means "not ruled out" and is never compared.
    pub exact: bool,
}

impl Observed {
    /// Evidence that decides both ways.
    pub fn exact(capability: Capability, has: bool, evidence: String) -> Observed {
        Observed {
            capability,
            has,
            evidence,
            exact: true,
        }
    }

    /// Whether a profile that does (`listed`) or does not list the capability
    /// disagrees with this evidence.
    pub fn disagrees(&self, listed: bool) -> bool {
        listed != self.has && (self.exact || !self.has)
    }
}

/// The capabilities that are key pair algorithms.
pub(crate) const KEY_PAIR_ALGORITHMS: [Capability; 5] = [
    Capability::Rsa2048,
    Capability::Rsa2048Pss,
    Capability::EcdsaP256,
    Capability::EcdsaP384,
    Capability::Ed25519,
];

/// What a KMIP server's Query says about the capabilities it decides (asked by the
/// oracle's own client): Query Operations for `random` (RNG Retrieve), `destroy`
/// (Destroy) and `kmip-modify-attribute` (Modify Attribute); Query Objects for the key
/// pair algorithms, which it can only rule out: a server that lists object types but
/// not both Public Key and Private Key has no key pairs. (A server that answers Query
/// Objects with no object type at all says nothing, and the log says so.)
pub(crate) fn probe_kmip(endpoint: &oracle::kmip::Endpoint) -> anyhow::Result<Vec<Observed>> {
    let listed = oracle::kmip::query_operations(endpoint).map_err(|e| anyhow!("Query: {e}"))?;
    let mut seen: Vec<Observed> = [
        (Capability::Random, 0x25),
        (Capability::Destroy, 0x14),
        (Capability::KmipModifyAttribute, 0x0E),
    ]
    .into_iter()
    .map(|(capability, op)| {
        let name = oracle::kmip::operation_name(op).unwrap_or("?");
        let has = listed.contains(&op);
        Observed::exact(
            capability,
            has,
            format!(
                "the server's Query {} {name}",
                if has { "lists" } else { "does not list" }
            ),
        )
    })
    .collect();
    let objects =
        oracle::kmip::query_objects(endpoint).map_err(|e| anyhow!("Query (Query Objects): {e}"))?;
    seen.extend(key_pairs_by_query_objects(&objects));
    Ok(seen)
}

/// What a Query Objects answer listing `objects` (Object Type values) says about the
/// key pair algorithms: ruled out when it lists object types but not both Public Key
/// and Private Key; otherwise not ruled out (an empty list says nothing).
fn key_pairs_by_query_objects(objects: &[u32]) -> Vec<Observed> {
    let (public, private) = (3, 4);
    let has = objects.is_empty() || (objects.contains(&public) && objects.contains(&private));
    let evidence = if objects.is_empty() {
        "the server's Query Objects lists no object type at all, so it rules nothing out"
            .to_string()
    } else {
        let names: Vec<String> = objects
            .iter()
            .map(|t| match oracle::kmip::object_type_name(*t) {
                Some(n) => n.to_string(),
                None => format!("{t:#x}"),
            })
            .collect();
        format!(
            "the server's Query Objects lists {} ({}both Public Key and Private Key)",
            names.join(", "),
            if has { "" } else { "not " }
        )
    };
    KEY_PAIR_ALGORITHMS
        .into_iter()
        .map(|capability| Observed {
            capability,
            has,
            evidence: evidence.clone(),
            exact: false,
        })
        .collect()
}

/// A backend file's `provider:`, read as `provider: name` or `provider: { name: {...} }`.
#[derive(Clone)]
pub struct ProviderConfig(Arc<dyn Provider>);

impl std::ops::Deref for ProviderConfig {
    type Target = dyn Provider;
    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

impl fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl<'de> Deserialize<'de> for ProviderConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ProviderVisitor;
        impl<'de> Visitor<'de> for ProviderVisitor {
            type Value = ProviderConfig;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(
                    f,
                    "a provider name ({}) or a map of one provider name to its settings",
                    PROVIDER_NAMES.join(", ")
                )
            }

            fn visit_str<E: de::Error>(self, name: &str) -> Result<Self::Value, E> {
                provider_with_defaults(name).map(ProviderConfig)
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let name: String = map
                    .next_key()?
                    .ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let provider = provider_from_map(&name, &mut map)?;
                if map.next_key::<IgnoredAny>()?.is_some() {
                    return Err(de::Error::custom("provider: name one provider only"));
                }
                Ok(ProviderConfig(provider))
            }
        }
        d.deserialize_any(ProviderVisitor)
    }
}

impl schemars::JsonSchema for ProviderConfig {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "provider".into()
    }

    /// A name alone (the defaults), or a map of one name to the provider's settings.
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let mut options = vec![serde_json::json!({ "enum": PROVIDER_NAMES })];
        for (name, settings) in provider_settings_schemas(generator) {
            options.push(serde_json::json!({
                "type": "object",
                "required": [name],
                "additionalProperties": false,
                "properties": { name: settings },
            }));
        }
        schemars::json_schema!({ "oneOf": options })
    }
}

/// A short random hex string (labels, PINs, names).
pub(crate) fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::Rng::fill(&mut rand::thread_rng(), buf.as_mut_slice());
    hex::encode(buf)
}

/// The cell's log (its stderr, which the runner keeps as the cell's `system-err`).
pub(crate) fn log_line(line: String) {
    eprintln!("{line}");
}

/// The instances of one cell.
pub struct Instances {
    workdir: PathBuf,
    cell: Box<dyn CellBackend>,
    made: BTreeMap<String, Box<dyn Instance>>,
    /// The case's settings per instance name (absent: the backend's defaults).
    specs: BTreeMap<String, InstanceSpec>,
    /// Time spent making instances so far (the cell's backend start-up phase).
    making: Duration,
}

impl Instances {
    /// Prepares the cell's backend; for SoftHSMv2 this points `SOFTHSM2_CONF` at a
    /// token directory of the cell's own, so it must run before any module loads.
    pub fn new(
        backend: &crate::model::backend::Backend,
        workdir: &Path,
        specs: &BTreeMap<String, InstanceSpec>,
    ) -> anyhow::Result<Self> {
        let runtime = match backend.placement {
            Placement::Local => Runtime::Local,
            Placement::Container => {
                Runtime::Container(Arc::new(container::Engine::for_cell(workdir)?))
            }
        };
        let mut cell = backend.provider.open(workdir, &runtime)?;
        if backend.allow_destructive {
            cell.allow_destructive();
        }
        Ok(Instances {
            workdir: workdir.to_path_buf(),
            cell,
            made: BTreeMap::new(),
            specs: specs.clone(),
            making: Duration::ZERO,
        })
    }

    /// Puts the PKCS#11 shim, with `spec`'s settings, in front of the module for the
    /// signers of this cell. The harness's own sessions keep using the real module.
    /// Must come before the first instance is made (the shim reads its configuration
    /// once per process); refused for providers without a PKCS#11 module.
    pub fn use_shim(&mut self, spec: &ShimSpec) -> anyhow::Result<()> {
        let made = !self.made.is_empty();
        let module = self.cell.module_mut().ok_or_else(|| {
            anyhow!("the backend has no PKCS#11 module to put the shim in front of")
        })?;
        if made {
            bail!("the shim must be set up before the first instance is made");
        }
        module.use_shim(spec)
    }

    /// Replaces the running shim's settings (rules, hidden mechanisms).
    pub fn update_shim(&mut self, spec: &ShimSpec) -> anyhow::Result<()> {
        match self.cell.module_mut() {
            Some(m) => m.update_shim(spec),
            None => bail!("this cell's signers do not run through the PKCS#11 shim"),
        }
    }

    /// After a restart of the signers: whatever a new signer process would connect
    /// afresh is connected afresh (see [`token::Module::renew_signer_connection`]).
    pub fn renew_signer_connection(&mut self) -> anyhow::Result<()> {
        match self.cell.module_mut() {
            Some(m) => m.renew_signer_connection(),
            None => Ok(()),
        }
    }

    /// The shim's trace of this cell, when the signers run through the shim.
    pub fn trace_path(&self) -> Option<PathBuf> {
        self.cell.module().and_then(|m| m.trace_path())
    }

    /// Where this cell sees instance `name`'s own generator at work: the shim's trace
    /// when the cell's PKCS#11 module (the signers', or the relay's) runs through the
    /// shim, else the log of a server that writes one ([`Instance::rng_log`]). `None`:
    /// no evidence source (the software signer, a KMIP server without a shim or log).
    pub fn rng_evidence(&mut self, name: &str) -> anyhow::Result<Option<RngEvidence>> {
        if name == "software" {
            return Ok(None);
        }
        if let Some(trace) = self.trace_path() {
            return Ok(Some(RngEvidence::ShimTrace(trace)));
        }
        Ok(self.ensure(name)?.rng_log().map(RngEvidence::ServerLog))
    }

    /// Time spent making this cell's instances so far (probes included): the backend's
    /// share of the cell's time, wherever in the cell it was made.
    pub fn making_time(&self) -> Duration {
        self.making
    }

    /// Facts for the report: the provider's, then each instance's made so far, and
    /// the time spent starting containers.
    pub fn properties(&self) -> Vec<(String, String)> {
        let mut props = self.cell.properties();
        let startup = container::startup_millis();
        if startup > 0 {
            props.push(("container_startup_ms".to_string(), startup.to_string()));
        }
        for (name, inst) in &self.made {
            for (fact, value) in inst.properties() {
                props.push((format!("{fact}.{name}"), value));
            }
        }
        props
    }

    fn ensure(&mut self, name: &str) -> anyhow::Result<&mut Box<dyn Instance>> {
        if !self.made.contains_key(name) {
            let dir = self.workdir.join("instances").join(name);
            let spec = self.specs.get(name).cloned().unwrap_or_default();
            let started = Instant::now();
            let made = self.cell.make(name, &dir, &spec);
            self.making += started.elapsed();
            self.made.insert(name.to_string(), made?);
        }
        self.made
            .get_mut(name)
            .ok_or_else(|| anyhow!("instance '{name}' vanished"))
    }

    /// Kills instance `name`'s server process (SIGKILL: no goodbye to clients); the
    /// proxy in front of it, if any, stays up. `start_server` brings it back.
    pub fn kill_server(&mut self, name: &str) -> anyhow::Result<()> {
        match self.ensure(name)?.server_mut() {
            Some(s) => s.kill(name),
            None => bail!("instance '{name}' has no running server process"),
        }
    }

    /// Starts instance `name`'s server again on the port it had, with the same data;
    /// signers (and the proxy) find it where it was.
    pub fn start_server(&mut self, name: &str) -> anyhow::Result<()> {
        self.ensure(name)?.start_server()
    }

    /// Changes what the proxy in front of instance `name` does to new connections.
    pub fn set_proxy_fault(&mut self, name: &str, fault: &Fault) -> anyhow::Result<()> {
        match self.ensure(name)?.server() {
            Some(s) => s.set_proxy_fault(name, fault),
            None => bail!("instance '{name}' has no proxy"),
        }
    }

    /// What went through the proxy in front of instance `name` so far.
    pub fn traffic(&self, name: &str) -> anyhow::Result<Stats> {
        match self.made.get(name) {
            Some(inst) => match inst.server() {
                Some(s) => s.traffic(name),
                None => bail!("instance '{name}' has no server to proxy"),
            },
            None => bail!("instance '{name}' was never used"),
        }
    }

    /// The signer configuration that reaches instance `name`.
    pub fn signer_kind(
        &mut self,
        name: &str,
        kmip: Option<&KmipOptions>,
        pkcs11: Option<&Pkcs11Options>,
    ) -> anyhow::Result<SignerKind> {
        let other_ca = match kmip.map(|o| o.server_ca) {
            Some(CaChoice::Other) => Some(self.other_ca()?),
            _ => None,
        };
        let options = SignerOptions {
            kmip,
            pkcs11,
            other_ca,
        };
        self.ensure(name)?.signer_kind(&options)
    }

    /// The certificate of a CA that issued nothing any instance presents.
    fn other_ca(&self) -> anyhow::Result<PathBuf> {
        let dir = self.workdir.join("other-pki");
        let ca = dir.join("ca.pem");
        if !ca.exists() {
            pki::generate(&dir, ServerFlaw::None)?;
        }
        Ok(ca)
    }

    /// Empties instance `name` and initialises it again with the same label and PINs
    /// (the signer configuration still reaches it; its content is new). Servers are
    /// restarted, on a new port.
    pub fn wipe(&mut self, name: &str) -> anyhow::Result<()> {
        self.ensure(name)?.wipe()
    }

    /// Gives instance `name` a new user PIN (C_SetPIN); the signer configuration's PIN
    /// source follows (a relay is restarted to read it).
    pub fn change_pin(&mut self, name: &str) -> anyhow::Result<()> {
        self.ensure(name)?.change_credentials()
    }

    /// The key identifiers of the key pairs instance `name` holds, read through a
    /// session of the harness's own (see [`Instance::inventory`]). `software` names the
    /// router's own software signer, whose keys are in the cell's state directory.
    pub fn inventory(&mut self, name: &str) -> anyhow::Result<Vec<KeyIdentifier>> {
        if name == "software" {
            return software::inventory(&self.router_keys());
        }
        self.ensure(name)?.inventory()
    }

    /// Replaces the key pair `id` in instance `name` by a new key pair of the same
    /// type under the same identifier: same handle, other key material.
    pub fn replace_key(
        &mut self,
        name: &str,
        id: &KeyIdentifier,
        alg: Algorithm,
    ) -> anyhow::Result<()> {
        if name == "software" {
            return software::replace_key(&self.workdir, &self.router_keys(), id, alg);
        }
        self.ensure(name)?.replace_key(id, alg)
    }

    /// Probes a fresh instance of the cell's kind, made with the backend's default
    /// settings for this alone and gone afterwards (so the case's instances are
    /// untouched), and returns what it showed (see [`Instance::probe`]).
    pub fn probe(&mut self) -> anyhow::Result<Vec<Observed>> {
        // Suites cannot name an instance with a capital letter: no collision.
        let name = "Probe";
        let dir = self.workdir.join("instances").join(name);
        let started = Instant::now();
        let made = self.cell.make(name, &dir, &InstanceSpec::default());
        self.making += started.elapsed();
        made?.probe()
    }

    /// Describes and probes a fresh instance of the cell's kind, as [`Self::probe`]
    /// makes it (for the `probe` and `certify` commands).
    pub fn describe(&mut self) -> anyhow::Result<(Description, Vec<Observed>)> {
        let name = "Probe";
        let dir = self.workdir.join("instances").join(name);
        let mut instance = self.cell.make(name, &dir, &InstanceSpec::default())?;
        let description = instance.describe()?;
        let observed = instance.probe()?;
        Ok((description, observed))
    }

    /// How the oracle's KMIP client reaches instance `name` (see
    /// [`Instance::kmip_endpoint`]).
    pub fn kmip_endpoint(&mut self, name: &str) -> anyhow::Result<oracle::kmip::Endpoint> {
        match self.ensure(name)?.kmip_endpoint() {
            Some(endpoint) => endpoint,
            None => bail!("instance '{name}' is not a KMIP server"),
        }
    }

    /// The end of the cell (see [`Instance::finish`]): what each instance made so far
    /// could not put back, named by instance, and the facts for the report then.
    pub fn finish(&mut self) -> (Vec<String>, Vec<(String, String)>) {
        let mut problems = Vec::new();
        for (name, inst) in self.made.iter_mut() {
            problems.extend(
                inst.finish()
                    .into_iter()
                    .map(|p| format!("instance '{name}': {p}")),
            );
        }
        (problems, self.properties())
    }

    /// Where the router's own software signer (one-off and random fallback) keeps keys.
    fn router_keys(&self) -> PathBuf {
        self.workdir.join("state").join("keys")
    }
}

impl Drop for Instances {
    /// Instances go before what they share (a relay before the SoftHSMv2 container
    /// serving its token).
    fn drop(&mut self) {
        self.made.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A profile that lists a key pair algorithm disagrees with a Query Objects answer
    /// that lists object types but no key pairs; an answer with key pairs, or with no
    /// object type at all, disagrees with no profile (it cannot say which algorithms).
    #[test]
    fn query_objects_can_only_rule_key_pairs_out() {
        let verdict = |objects: &[u32], listed: bool| {
            key_pairs_by_query_objects(objects)
                .iter()
                .map(|o| o.disagrees(listed))
                .collect::<Vec<_>>()
        };
        // Symmetric Key and Secret Data only.
        assert_eq!(verdict(&[2, 7], true), vec![true; 5]);
        assert_eq!(verdict(&[2, 7], false), vec![false; 5]);
        // Public Key without Private Key.
        assert_eq!(verdict(&[3], true), vec![true; 5]);
        for objects in [&[3, 4][..], &[1, 2, 3, 4, 7], &[]] {
            assert_eq!(verdict(objects, true), vec![false; 5], "{objects:?}");
            assert_eq!(verdict(objects, false), vec![false; 5], "{objects:?}");
        }
        let said = &key_pairs_by_query_objects(&[2, 7])[0].evidence;
        assert!(said.contains("Symmetric Key, Secret Data"), "{said}");
    }

    #[test]
    fn exact_evidence_decides_both_ways() {
        let present = Observed::exact(Capability::Random, true, "x".into());
        let absent = Observed::exact(Capability::Random, false, "x".into());
        assert!(!present.disagrees(true) && present.disagrees(false));
        assert!(absent.disagrees(true) && !absent.disagrees(false));
    }
}
