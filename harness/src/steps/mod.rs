//! The steps of a case: what each one looks like in YAML, what the loader checks about
//! it, which capabilities it makes the case require, and how it runs in a cell.
//!
//! Each step is one type, in the file of its family, implementing [`StepKind`]; the
//! [`Step`] enum is what a suite's `steps:` list holds, and its one `match`
//! ([`Step::kind`]) forwards to those types. The doc comments of the step types are
//! the user-facing docs: they become the descriptions in `suites/schema.json`.
//!
//! - [`keys`] has `create_key`, `sign`, `verify`, `public_key`, `destroy_key` and
//!   `sign_one_off`;
//! - [`random`] has `random`;
//! - [`router`] has `restart`, `keymap` and `info`;
//! - [`backend`] has `inventory`, `replace_identity_key`, `traffic`, `server` and
//!   `proxy`;
//! - [`trace`] has `trace`;
//! - [`kmip`] has `kmip_query`;
//! - [`process`] has `sleep` and `self_test`.

pub mod backend;
pub mod keys;
pub mod kmip;
pub mod process;
pub mod random;
pub mod router;
pub mod trace;
pub mod under_test;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::Write;
use std::path::PathBuf;

use hsm_signers::config::{OpenSslConfig, SignerConfig, SignerKind};
use hsm_signers::{Algorithm, ErrorKind, KeyIdentifier, Router, SignerError, SignerSetup};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

use crate::backends::shim::ShimSpec;
use crate::backends::Instances;
use crate::model::suite::{Capability, InstanceSpec, SignerSpec, SignersSpec};
use crate::oracle_terms;
use crate::signer_protocol::child::SignerProcess;
use under_test::SignerUnderTest;

/// One step of a case: a map with exactly one key, the step's keyword. Steps speak the
/// signer's language; `as: NAME` binds a result for later steps of the same case.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    CreateKey(keys::CreateKey),
    Sign(keys::Sign),
    Verify(keys::Verify),
    PublicKey(keys::PublicKey),
    DestroyKey(keys::DestroyKey),
    Random(random::Random),
    SignOneOff(keys::SignOneOff),
    Restart(router::Restart),
    Inventory(backend::Inventory),
    Keymap(router::Keymap),
    ReplaceIdentityKey(backend::ReplaceIdentityKey),
    Info(router::Info),
    Traffic(backend::Traffic),
    Server(backend::Server),
    Proxy(backend::Proxy),
    Trace(trace::Trace),
    KmipQuery(kmip::KmipQuery),
    Sleep(process::Sleep),
    SelfTest(process::SelfTest),
}

/// What one kind of step is: its keyword, its load-time checks, the capabilities it
/// makes a case require, and how it runs.
pub trait StepKind {
    /// The step's keyword as written in YAML (the `Step` variant's serde name).
    fn keyword(&self) -> &'static str;

    /// What serde cannot check: names used were bound by an earlier step, names are
    /// not bound twice, values are in range. Called on the case's steps in order.
    fn check(&self, ctx: &mut CheckContext) -> Result<(), CheckError>;

    /// Adds the capabilities a backend needs for this step to run.
    fn requires(&self, _needs: &mut Needs) {}

    /// Runs the step in the cell: `Err(Failed)` when the behaviour under test was
    /// wrong, `Err(Harness)` when the harness could not do what the step asks.
    fn run(&self, cell: &mut CellContext) -> Result<(), StepError>;
}

impl Step {
    /// The one dispatch: the step's own type.
    fn kind(&self) -> &dyn StepKind {
        match self {
            Step::CreateKey(s) => s,
            Step::Sign(s) => s,
            Step::Verify(s) => s,
            Step::PublicKey(s) => s,
            Step::DestroyKey(s) => s,
            Step::Random(s) => s,
            Step::SignOneOff(s) => s,
            Step::Restart(s) => s,
            Step::Inventory(s) => s,
            Step::Keymap(s) => s,
            Step::ReplaceIdentityKey(s) => s,
            Step::Info(s) => s,
            Step::Traffic(s) => s,
            Step::Server(s) => s,
            Step::Proxy(s) => s,
            Step::Trace(s) => s,
            Step::KmipQuery(s) => s,
            Step::Sleep(s) => s,
            Step::SelfTest(s) => s,
        }
    }

    /// The step's name as written in YAML.
    pub fn keyword(&self) -> &'static str {
        self.kind().keyword()
    }

    /// See [`StepKind::check`].
    pub fn check(&self, ctx: &mut CheckContext) -> Result<(), CheckError> {
        self.kind().check(ctx)
    }

    /// See [`StepKind::requires`].
    pub fn requires(&self, needs: &mut Needs) {
        self.kind().requires(needs)
    }

    /// See [`StepKind::run`].
    pub fn run(&self, cell: &mut CellContext) -> Result<(), StepError> {
        self.kind().run(cell)
    }
}

// --- loading ---------------------------------------------------------------------------

/// Why the loader refuses a step: a message and, when it is about one value of the step
/// (a `key:` that names nothing), that value's place; otherwise the step's place.
#[derive(Debug)]
pub struct CheckError {
    pub message: String,
    pub at: Option<Location>,
}

impl From<String> for CheckError {
    fn from(message: String) -> Self {
        CheckError { message, at: None }
    }
}

impl From<&str> for CheckError {
    fn from(message: &str) -> Self {
        message.to_string().into()
    }
}

/// What the loader knows while it checks a case's steps in order: the names bound so
/// far, the signer names, the instances' settings; and what it learns about the case
/// as a whole.
pub struct CheckContext<'a> {
    pub keys: HashSet<String>,
    pub signatures: HashSet<String>,
    /// Signature names bound by `sign_one_off` (they stand for the one-off key).
    pub one_off: HashSet<String>,
    pub inventories: HashSet<String>,
    pub marks: HashSet<String>,
    /// `None`: the default single signer, named after the backend (not known here).
    pub signer_names: Option<Vec<String>>,
    pub instances: &'a BTreeMap<String, InstanceSpec>,
    /// Some step needs the PKCS#11 shim from the cell's start (a trace, or a restart
    /// that changes the shim's settings).
    pub needs_shim: bool,
    /// Some restart names a one-off signer.
    pub changes_one_off_signer: bool,
    /// The backend instances the case uses (signers' `on`, steps' `of`, restarts).
    pub used_instances: BTreeSet<String>,
}

impl<'a> CheckContext<'a> {
    pub fn new(
        signers: Option<&SignersSpec>,
        instances: &'a BTreeMap<String, InstanceSpec>,
    ) -> Self {
        CheckContext {
            keys: HashSet::new(),
            signatures: HashSet::new(),
            one_off: HashSet::new(),
            inventories: HashSet::new(),
            marks: HashSet::new(),
            signer_names: signers.map(|s| s.signers.iter().map(|s| s.name.clone()).collect()),
            instances,
            needs_shim: false,
            changes_one_off_signer: false,
            used_instances: signers
                .map(|s| s.signers.iter().filter_map(|s| s.on.clone()).collect())
                .unwrap_or_else(|| BTreeSet::from(["a".to_string()]))
                .into_iter()
                .chain(instances.keys().cloned())
                .collect(),
        }
    }

    /// "No earlier step made a WHAT named NAME (known: ...)".
    pub fn unknown(what: &str, name: &str, known: &HashSet<String>) -> CheckError {
        let mut known: Vec<&str> = known.iter().map(String::as_str).collect();
        known.sort();
        format!(
            "no earlier step made a {what} named '{name}' (known: {})",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        )
        .into()
    }

    /// `k` names a key bound earlier; the error points at `k`.
    pub fn key(&self, k: &Spanned<String>) -> Result<(), CheckError> {
        if self.keys.contains(&k.value) {
            Ok(())
        } else {
            let mut e = Self::unknown("key", &k.value, &self.keys);
            e.at = Some(k.referenced);
            Err(e)
        }
    }

    /// `name` is one of the configured signers (not checked without a signers block).
    pub fn signer(&self, name: &str) -> Result<(), CheckError> {
        match &self.signer_names {
            Some(names) if !names.iter().any(|n| n == name) => {
                Err(format!("no signer named '{name}' (signers: {})", names.join(", ")).into())
            }
            _ => Ok(()),
        }
    }

    /// Binds a signature name, refusing one bound already.
    pub fn bind_signature(&mut self, name: &str) -> Result<(), CheckError> {
        if self.signatures.insert(name.to_string()) {
            Ok(())
        } else {
            Err(format!("signature name '{name}' is already bound").into())
        }
    }
}

/// The capabilities a case requires, in the order they were found (skip reasons name
/// them in this order).
pub struct Needs {
    pub caps: Vec<Capability>,
    /// One-off keys are made and destroyed on the backend, because one of its signers
    /// is (or becomes) the one-off signer; else the router's OpenSSL signer makes them.
    pub one_off_on_backend: bool,
    /// What the case does to a backend beyond its own keys (wipes an instance,
    /// changes its PIN, plants an impostor): on an existing backend it needs
    /// `--allow-destructive`.
    pub destructive: Vec<String>,
}

impl Needs {
    pub fn add(&mut self, c: Capability) {
        if !self.caps.contains(&c) {
            self.caps.push(c);
        }
    }

    /// Records something destructive the case does (see [`Needs::destructive`]).
    pub fn destroys(&mut self, what: String) {
        if !self.destructive.contains(&what) {
            self.destructive.push(what);
        }
    }
}

/// What a step expects when it is not plain success: `{ error: KIND }` means the signer
/// must fail with an error of that kind (and, with `message: TEXT`, one whose message
/// contains TEXT); the step then binds nothing (its `as:` name stays unbound) and adds
/// no algorithm to the case's requirements. Without it, the step must succeed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("dependentRequired" = { "message": ["error"] }))]
pub struct Expect {
    /// The step must fail with an error of this kind.
    #[schemars(with = "Option<crate::model::schema::ErrorKindName>")]
    pub error: Option<ErrorKind>,
    /// Text the error's message must contain (compared case-insensitively). Only with
    /// `error`.
    #[serde(default)]
    pub message: Option<String>,
}

impl Expect {
    /// A message without a kind is refused: the message is of an error of some kind.
    pub fn check(&self) -> Result<(), CheckError> {
        match self {
            Expect {
                error: None,
                message: Some(_),
            } => Err(
                "expect: message needs error: KIND (the kind of error whose message it is)".into(),
            ),
            _ => Ok(()),
        }
    }

    /// Applies the expectation to what the signer did. `Ok(Some(v))`: success, go on
    /// with `v`; `Ok(None)`: failed as expected; `Err`: the expectation did not hold
    /// (a failure of the signer).
    pub fn judge<T>(&self, result: Result<T, SignerError>) -> Result<Option<T>, StepError> {
        match (&self.error, result) {
            (None, Ok(v)) => Ok(Some(v)),
            (None, Err(e)) => Err(StepError::Failed(format!("signer error: {e}"))),
            (Some(kind), Err(e)) if e.kind == *kind => match &self.message {
                Some(m) if !e.message.to_lowercase().contains(&m.to_lowercase()) => {
                    Err(StepError::Failed(format!(
                        "expected an error of kind '{kind}' saying '{m}', got: {}",
                        e.message
                    )))
                }
                _ => {
                    log(format!("  failed as expected: {e}"));
                    Ok(None)
                }
            },
            (Some(kind), Err(e)) => Err(StepError::Failed(format!(
                "expected an error of kind '{kind}', got '{}': {}",
                e.kind, e.message
            ))),
            (Some(kind), Ok(_)) => Err(StepError::Failed(format!(
                "expected an error of kind '{kind}', but the step succeeded"
            ))),
        }
    }
}

// --- running ---------------------------------------------------------------------------

/// The payload signed when a `sign` step gives no `data`.
pub const DEFAULT_DATA: &str = "hsm-harness test payload";

/// Why a step did not pass.
#[derive(Debug, PartialEq, Eq)]
pub enum StepError {
    /// The behaviour under test was wrong: a `<failure>` of the signer.
    Failed(String),
    /// The harness could not do what the step asks (a missing binding, an I/O error,
    /// a backend it cannot administer): an `<error>`, never blamed on the signer.
    Harness(String),
    /// The signer under test does not offer what the step needs (a signer
    /// implementation whose `hello` left out a feature or algorithm): the case is
    /// skipped with this reason.
    Skipped(String),
}

impl StepError {
    /// What it says, whatever its kind.
    pub fn message(&self) -> &str {
        match self {
            StepError::Failed(m) | StepError::Harness(m) | StepError::Skipped(m) => m,
        }
    }

    /// A harness-side error with its causes.
    pub fn harness(e: anyhow::Error) -> Self {
        StepError::Harness(format!("{e:#}"))
    }
}

/// One line of the cell's log (its stderr, which the runner keeps).
pub(crate) fn log(line: impl AsRef<str>) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{}", line.as_ref());
}

pub struct KeyEntry {
    pub id: KeyIdentifier,
    pub alg: Algorithm,
    pub spki: Vec<u8>,
}

pub struct SignatureEntry {
    /// The key name, or `None` for a one-off signature.
    pub key: Option<String>,
    /// The public key it verifies with.
    pub spki: Vec<u8>,
    pub alg: Algorithm,
    pub data: Vec<u8>,
    pub bytes: Vec<u8>,
}

/// The state a case builds up as its steps run.
#[derive(Default)]
pub struct Bindings {
    pub keys: HashMap<String, KeyEntry>,
    pub signatures: HashMap<String, SignatureEntry>,
    pub inventories: HashMap<String, Vec<KeyIdentifier>>,
    /// Trace marks: name -> how many calls the shim's trace held then.
    pub marks: HashMap<String, usize>,
    /// Random values drawn so far of at least [`random::COMPARED_LENGTH`] bytes: a
    /// generator that repeats itself is caught by the next draw.
    pub draws: Vec<Vec<u8>>,
}

/// What the steps run against: the cell's backend instances, its signer configuration
/// and router, and the names bound so far.
pub struct CellContext {
    pub instances: Instances,
    /// The backend's own shim settings, which come before a case's or a restart's.
    pub backend_shim: Option<ShimSpec>,
    pub spec: SignersSpec,
    /// The signer's state directory.
    pub state: PathBuf,
    /// The signer under test, once started.
    pub signer: Option<SignerUnderTest>,
    /// Another signer implementation to drive instead of our router (`--signer-cmd`).
    pub signer_cmd: Option<SignerCommand>,
    pub bindings: Bindings,
}

/// A signer implementation run as a child process (`run --signer-cmd`).
#[derive(Clone, Debug)]
pub struct SignerCommand {
    /// The command line, as a shell reads it; `--config F --state D` are appended.
    pub command: String,
    /// How long one request may take before the process counts as hung.
    pub timeout: std::time::Duration,
}

impl CellContext {
    /// Builds the signer configuration from the spec and starts the signer under test on
    /// it: our router, or the `--signer-cmd` process with the configuration written to
    /// `signers.toml` beside the state directory.
    pub fn start(&mut self) -> anyhow::Result<()> {
        let mut signers = Vec::new();
        for s in &self.spec.signers {
            let kind = match &s.on {
                Some(instance) => {
                    self.instances
                        .signer_kind(instance, s.kmip.as_ref(), s.pkcs11.as_ref())?
                }
                None => SignerKind::OpenSsl(OpenSslConfig::default()),
            };
            signers.push(SignerConfig {
                name: s.name.clone(),
                kind,
            });
        }
        let index = |name: &Option<String>| {
            name.as_ref()
                .and_then(|n| self.spec.signers.iter().position(|s| &s.name == n))
        };
        let setup = SignerSetup {
            default_signer: index(&self.spec.default_signer).unwrap_or(0),
            one_off_signer: index(&self.spec.one_off_signer),
            signers,
            retry: Default::default(),
        };
        let names: Vec<String> = setup.signers.iter().map(|s| s.name.clone()).collect();
        log(format!(
            "  router: signers {} (default '{}')",
            names.join(", "),
            names[setup.default_signer]
        ));
        let Some(cmd) = &self.signer_cmd else {
            self.signer = Some(SignerUnderTest::Router(
                Router::new(&setup, &self.state).map_err(|e| anyhow::anyhow!("{e}"))?,
            ));
            return Ok(());
        };
        let text = setup
            .to_toml()
            .map_err(|e| anyhow::anyhow!("the signer configuration cannot be written: {e}"))?;
        let config = self.state.with_file_name("signers.toml");
        std::fs::create_dir_all(&self.state)?;
        std::fs::write(&config, text)?;
        let process = SignerProcess::start(&cmd.command, &config, &self.state, cmd.timeout)
            .map_err(|e| anyhow::anyhow!(e))?;
        log(format!(
            "  signer implementation: {} {} (protocol {}; algorithms {}; features {})",
            process.hello.implementation.name,
            process.hello.implementation.version,
            process.hello.protocol,
            process.hello.algorithms.join(", "),
            process.hello.features.join(", ")
        ));
        self.signer = Some(SignerUnderTest::Process(std::cell::RefCell::new(process)));
        Ok(())
    }

    /// The running signer under test.
    pub fn signer(&self) -> Result<&SignerUnderTest, StepError> {
        self.signer
            .as_ref()
            .ok_or_else(|| StepError::Harness("no signer is running".into()))
    }

    /// The key bound to `name`; the loader made sure one was, so its absence is the
    /// harness's own bug.
    pub fn key(&self, name: &str) -> Result<&KeyEntry, StepError> {
        self.bindings
            .keys
            .get(name)
            .ok_or_else(|| StepError::Harness(format!("no key is bound to '{name}'")))
    }

    /// The key identifier a name stands for: a key, or a one-off signature's key.
    pub fn key_id(&self, name: &str) -> Result<KeyIdentifier, StepError> {
        if let Some(k) = self.bindings.keys.get(name) {
            return Ok(k.id);
        }
        let sig = self
            .bindings
            .signatures
            .get(name)
            .ok_or_else(|| StepError::Harness(format!("unknown name '{name}'")))?;
        oracle::KeyId::of_spki(&sig.spki)
            .map(oracle_terms::key_identifier)
            .map_err(|e| StepError::Failed(e.to_string()))
    }

    /// The configured signer named `name`.
    pub fn signer_spec(&mut self, name: &str) -> Result<&mut SignerSpec, StepError> {
        self.spec
            .signers
            .iter_mut()
            .find(|s| s.name == name)
            .ok_or_else(|| StepError::Harness(format!("no signer named '{name}'")))
    }

    /// Where signer `name` keeps its keys, as `inventory` names it: its instance, or
    /// `software` for a software signer (the cell's state directory).
    pub fn instance_of(&self, name: &str) -> Result<String, StepError> {
        let spec = self
            .spec
            .signers
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| {
                StepError::Harness(format!(
                    "signer '{name}' is not among the case's signers; where it keeps keys is unknown"
                ))
            })?;
        Ok(spec.on.clone().unwrap_or_else(|| "software".to_string()))
    }

    /// The name of the default signer as configured.
    pub fn default_signer_name(&self) -> String {
        let i = self
            .spec
            .default_signer
            .as_ref()
            .and_then(|d| self.spec.signers.iter().position(|s| &s.name == d))
            .unwrap_or(0);
        self.spec.signers[i].name.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    /// `keyword()` is what the cell's log and reports print; it must be the YAML
    /// keyword serde reads.
    #[rstest]
    #[case("create_key", "{ alg: rsa2048, as: k }")]
    #[case("sign", "{ key: k }")]
    #[case("verify", "{ signature: s }")]
    #[case("public_key", "{ key: k }")]
    #[case("destroy_key", "{ key: k }")]
    #[case("random", "{ bytes: 1 }")]
    #[case("sign_one_off", "{ alg: ed25519 }")]
    #[case("restart", "{}")]
    #[case("inventory", "{ of: a }")]
    #[case("keymap", "{}")]
    #[case("replace_identity_key", "{ signer: x }")]
    #[case("info", "{ has: { a: b } }")]
    #[case("traffic", "{ of: a }")]
    #[case("server", "{ of: a, action: kill }")]
    #[case("proxy", "{ of: a, fault: none }")]
    #[case("trace", "{ mark: m }")]
    #[case("kmip_query", "{ has: [Sign] }")]
    #[case("sleep", "{ seconds: 1 }")]
    #[case("self_test", "abort")]
    fn keywords_are_the_yaml_keys(#[case] keyword: &str, #[case] body: &str) {
        let step: Step = serde_saphyr::from_str(&format!("{keyword}: {body}")).unwrap();
        assert_eq!(step.keyword(), keyword);
    }

    #[test]
    fn a_message_needs_an_error_kind() {
        let e = Expect {
            error: None,
            message: Some("x".into()),
        };
        assert!(e.check().is_err());
        assert!(Expect::default().check().is_ok());
    }
}
