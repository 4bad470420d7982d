//! One cell: one case run against one backend, inside the cell's own process.
//!
//! The runner starts `hsm-harness cell ...` for every cell. This module is what runs
//! there: bring the backend up, build the signer router, run the steps, and write the
//! verdict to `<workdir>/result.json`. Everything it says goes to stderr, which the
//! runner keeps as the cell's log; if the process dies, the runner reports the
//! signal and the tail of that log instead.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hsm_signers::config::{OpenSslConfig, SignerConfig, SignerKind};
use hsm_signers::router::RandomSource;
use hsm_signers::{Algorithm, KeyIdentifier, Router, SignerError, SignerSetup};
use serde::{Deserialize, Serialize};

use crate::backends::Instances;
use crate::model::backend::Backend;
use crate::model::suite::{
    Case, Expect, InfoCheck, Inventory, KeymapCheck, KmipQueryCheck, RandomFrom, Restart, SelfTest,
    ServerAction, ServerStep, SignerSpec, SignersSpec, Step, TraceCheck, TrafficCheck, Verdict,
};
use crate::oracle_terms;
use crate::report::outcome::Status;

/// The payload signed when a `sign` step gives no `data`.
pub const DEFAULT_DATA: &str = "hsm-harness test payload";

/// What a cell process leaves for the runner.
#[derive(Debug, Serialize, Deserialize)]
pub struct CellReport {
    #[serde(flatten)]
    pub status: Status,
    pub properties: Vec<(String, String)>,
}

pub const RESULT_FILE: &str = "result.json";

struct KeyEntry {
    id: KeyIdentifier,
    alg: Algorithm,
    spki: Vec<u8>,
}

struct SignatureEntry {
    /// The key name, or `None` for a one-off signature.
    key: Option<String>,
    /// The public key it verifies with.
    spki: Vec<u8>,
    alg: Algorithm,
    data: Vec<u8>,
    bytes: Vec<u8>,
}

/// The state a case builds up as its steps run.
#[derive(Default)]
struct Bindings {
    keys: HashMap<String, KeyEntry>,
    signatures: HashMap<String, SignatureEntry>,
    inventories: HashMap<String, Vec<KeyIdentifier>>,
    /// Trace marks: name -> how many calls the shim's trace held then.
    marks: HashMap<String, usize>,
}

fn log(line: impl AsRef<str>) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{}", line.as_ref());
}

/// Runs `case` against `backend` with `workdir` as the cell's private directory and
/// writes the report file there.
pub fn run_and_report(case: &Case, backend: &Backend, workdir: &Path) -> anyhow::Result<()> {
    let report = run(case, backend, workdir);
    log(format!("cell result: {}", report.status.label()));
    let tmp = workdir.join(format!("{RESULT_FILE}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec_pretty(&report)?)?;
    std::fs::rename(&tmp, workdir.join(RESULT_FILE))?;
    Ok(())
}

fn errored(message: String, properties: Vec<(String, String)>) -> CellReport {
    CellReport {
        status: Status::Errored { message },
        properties,
    }
}

fn run(case: &Case, backend: &Backend, workdir: &Path) -> CellReport {
    log(format!(
        "case '{}' on backend '{}' ({} provider)",
        case.name,
        backend.name,
        backend.provider_name()
    ));
    let mut instances = match Instances::new(backend, workdir, &case.instances) {
        Ok(i) => i,
        Err(e) => {
            return errored(
                format!("backend '{}' did not come up: {e:#}", backend.name),
                vec![],
            )
        }
    };
    // The backend's shim settings first, then the case's.
    let shim = match (backend.shim(), &case.shim) {
        (Some(b), Some(c)) => Some(b.merged(c)),
        (b, c) => b.or(c.as_ref()).cloned(),
    };
    if let Some(spec) = &shim {
        if let Err(e) = instances.use_shim(spec) {
            return errored(
                format!(
                    "backend '{}': cannot put the PKCS#11 shim in front: {e:#}",
                    backend.name
                ),
                vec![],
            );
        }
    }
    let spec = case
        .signers
        .clone()
        .unwrap_or_else(|| SignersSpec::single(&backend.name));
    let mut cell = Cell {
        instances,
        backend_shim: backend.shim().cloned(),
        spec,
        state: workdir.join("state"),
        router: None,
        bindings: Bindings::default(),
    };
    if let Err(e) = cell.start() {
        return errored(
            format!("backend '{}' did not come up: {e:#}", backend.name),
            cell.instances.properties(),
        );
    }
    let mut properties = cell.instances.properties();
    if let Some(router) = &cell.router {
        // A signer that cannot say who it is (a refused TLS handshake, say) is what some
        // cases test: the steps find out; the log says it now.
        match router.default_signer().info() {
            Ok(info) => {
                log(format!("signer '{}' ({})", info.name, info.signer_type));
                for (k, v) in info.details {
                    log(format!("  {k}: {v}"));
                    if !properties.iter().any(|(pk, _)| *pk == k) {
                        properties.push((k, v));
                    }
                }
            }
            Err(e) => log(format!("default signer: no info: {e}")),
        }
    }
    for (i, step) in case.steps.iter().enumerate() {
        let n = i + 1;
        let at = format!(
            "step {n} ({}, line {})",
            step.value.keyword(),
            step.referenced.line()
        );
        log(format!("{at}: start"));
        match cell.step(&step.value) {
            Ok(()) => {}
            Err(StepError::Failed(message)) => {
                log(format!("{at}: FAILED: {message}"));
                return CellReport {
                    status: Status::Failed {
                        message: format!("{at}: {message}"),
                    },
                    properties,
                };
            }
            Err(StepError::Harness(message)) => {
                log(format!("{at}: ERROR: {message}"));
                return errored(format!("{at}: {message}"), properties);
            }
        }
    }
    let mut late = cell.instances.properties();
    // The TLS version and cipher suite are known once a KMIP signer has connected,
    // which may have been after the start.
    if !properties.iter().any(|(k, _)| k == "tls_version") {
        if let Some(Ok(info)) = cell.router.as_ref().map(|r| r.default_signer().info()) {
            late.extend(info.details);
        }
    }
    for (k, v) in late {
        if !properties.iter().any(|(pk, _)| *pk == k) {
            properties.push((k, v));
        }
    }
    CellReport {
        status: Status::Passed,
        properties,
    }
}

/// Why a step did not pass: the behaviour under test was wrong (a failure), or the
/// harness could not do what the step asks (an error).
enum StepError {
    Failed(String),
    Harness(String),
}

fn harness(e: anyhow::Error) -> StepError {
    StepError::Harness(format!("{e:#}"))
}

/// Where a configured signer of the cell runs.
struct Cell {
    instances: Instances,
    /// The backend's own shim settings, which come before a case's or a restart's.
    backend_shim: Option<crate::backends::shim::ShimSpec>,
    spec: SignersSpec,
    state: PathBuf,
    router: Option<Router>,
    bindings: Bindings,
}

impl Cell {
    /// Builds the signer configuration from the spec and starts a router on it.
    fn start(&mut self) -> anyhow::Result<()> {
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
        self.router = Some(Router::new(&setup, &self.state).map_err(|e| anyhow::anyhow!("{e}"))?);
        Ok(())
    }

    fn router(&self) -> Result<&Router, StepError> {
        self.router
            .as_ref()
            .ok_or_else(|| StepError::Harness("no router is running".into()))
    }

    /// The key identifier a name stands for: a key, or a one-off signature's key.
    fn key_id(&self, name: &str) -> Result<KeyIdentifier, StepError> {
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

    fn restart(&mut self, r: &Restart) -> Result<(), StepError> {
        // The old router goes first: it closes its sessions and the key map.
        self.router = None;
        if let Some(new) = &r.shim {
            let spec = match &self.backend_shim {
                Some(b) => b.merged(new),
                None => new.clone(),
            };
            self.instances.update_shim(&spec).map_err(harness)?;
        }
        if let Some(list) = &r.signers {
            self.spec.signers = list.clone();
            self.spec.default_signer = None;
            self.spec.one_off_signer = None;
            log(format!(
                "  signers now: {}",
                list.iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        for inst in &r.wipe {
            self.instances.wipe(inst).map_err(harness)?;
            log(format!("  wiped instance '{inst}'"));
        }
        for inst in &r.change_pin {
            self.instances.change_pin(inst).map_err(harness)?;
            log(format!("  changed the user PIN of instance '{inst}'"));
        }
        for (signer, inst) in &r.repoint {
            let s = self.signer_spec(signer)?;
            s.on = Some(inst.clone());
            s.software = false;
            log(format!("  signer '{signer}' now on instance '{inst}'"));
        }
        if let [a, b] = r.swap.as_slice() {
            let ta = self.signer_spec(a)?.clone();
            let tb = self.signer_spec(b)?.clone();
            let sa = self.signer_spec(a)?;
            (sa.on, sa.software) = (tb.on, tb.software);
            let sb = self.signer_spec(b)?;
            (sb.on, sb.software) = (ta.on, ta.software);
            log(format!("  signers '{a}' and '{b}' swapped backends"));
        }
        for (old, new) in &r.rename {
            self.signer_spec(old)?.name = new.clone();
            for role in [&mut self.spec.default_signer, &mut self.spec.one_off_signer] {
                if role.as_deref() == Some(old.as_str()) {
                    *role = Some(new.clone());
                }
            }
            log(format!("  signer '{old}' renamed '{new}'"));
        }
        if let Some(d) = &r.default_signer {
            self.spec.default_signer = Some(d.clone());
        }
        if let Some(o) = &r.one_off_signer {
            self.spec.one_off_signer = Some(o.clone());
        }
        self.start().map_err(harness)
    }

    fn info(&self, c: &InfoCheck) -> Result<(), StepError> {
        let router = self.router()?;
        let name = c.signer.clone().unwrap_or_else(|| {
            let i = self
                .spec
                .default_signer
                .as_ref()
                .and_then(|d| self.spec.signers.iter().position(|s| &s.name == d))
                .unwrap_or(0);
            self.spec.signers[i].name.clone()
        });
        let signer = router
            .signers()
            .find(|s| s.name() == name)
            .ok_or_else(|| StepError::Harness(format!("no signer named '{name}'")))?;
        let info = signer
            .info()
            .map_err(|e| StepError::Failed(format!("signer '{name}' info: {e}")))?;
        for (k, want) in &c.has {
            match info.details.iter().find(|(dk, _)| dk == k) {
                Some((_, v)) if v == want => log(format!("  {name}: {k} = {v}")),
                Some((_, v)) => {
                    return Err(StepError::Failed(format!(
                        "signer '{name}': {k} is '{v}', expected '{want}'"
                    )))
                }
                None => {
                    let known: Vec<&str> = info.details.iter().map(|(k, _)| k.as_str()).collect();
                    return Err(StepError::Failed(format!(
                        "signer '{name}' says nothing about '{k}' (it says: {})",
                        known.join(", ")
                    )));
                }
            }
        }
        Ok(())
    }

    fn traffic(&self, t: &TrafficCheck) -> Result<(), StepError> {
        let stats = self.instances.traffic(&t.of).map_err(harness)?;
        log(format!("  proxy of '{}': {stats:?}", t.of));
        if let Some(want) = t.client_application_records {
            if stats.client_application_records != want {
                return Err(StepError::Failed(format!(
                    "the client sent {} TLS application-data record(s) to instance '{}', expected {want}",
                    stats.client_application_records, t.of
                )));
            }
        }
        if let Some(want) = t.connections {
            if stats.connections != want {
                return Err(StepError::Failed(format!(
                    "{} connection(s) reached instance '{}', expected {want}",
                    stats.connections, t.of
                )));
            }
        }
        Ok(())
    }

    fn signer_spec(&mut self, name: &str) -> Result<&mut SignerSpec, StepError> {
        self.spec
            .signers
            .iter_mut()
            .find(|s| s.name == name)
            .ok_or_else(|| StepError::Harness(format!("no signer named '{name}'")))
    }

    fn step(&mut self, step: &Step) -> Result<(), StepError> {
        match step {
            Step::Restart(r) => return self.restart(r),
            Step::Inventory(inv) => return self.inventory(inv),
            Step::Keymap(m) => return self.keymap(m),
            Step::ReplaceIdentityKey { signer } => return self.replace_identity_key(signer),
            Step::Info(c) => return self.info(c),
            Step::Traffic(t) => return self.traffic(t),
            Step::Server(ServerStep { of, action }) => {
                return match action {
                    ServerAction::Kill => self.instances.kill_server(of),
                    ServerAction::Start => self.instances.start_server(of),
                }
                .map_err(harness)
            }
            Step::Proxy(p) => {
                return self
                    .instances
                    .set_proxy_fault(&p.of, &p.fault)
                    .map_err(harness)
            }
            Step::Trace(t) => return self.trace(t),
            Step::KmipQuery(q) => return self.kmip_query(q),
            _ => {}
        }
        let router = self
            .router
            .as_ref()
            .ok_or_else(|| StepError::Harness("no router is running".into()))?;
        run_step(router, &mut self.bindings, step).map_err(StepError::Failed)
    }

    fn inventory(&mut self, inv: &Inventory) -> Result<(), StepError> {
        let found = self.instances.inventory(&inv.of).map_err(harness)?;
        log(format!(
            "  inventory of '{}': {} key pairs",
            inv.of,
            found.len()
        ));
        for name in &inv.has {
            let id = self.key_id(name)?;
            if !found.contains(&id) {
                return Err(StepError::Failed(format!(
                    "'{}' has no key pair '{name}' ({id})",
                    inv.of
                )));
            }
        }
        for name in &inv.lacks {
            let id = self.key_id(name)?;
            if found.contains(&id) {
                return Err(StepError::Failed(format!(
                    "'{}' still holds key pair '{name}' ({id})",
                    inv.of
                )));
            }
        }
        if let Some(before) = &inv.same_as {
            let earlier = self
                .bindings
                .inventories
                .get(before)
                .ok_or_else(|| StepError::Harness(format!("unknown inventory '{before}'")))?;
            if *earlier != found {
                let added: Vec<String> = found
                    .iter()
                    .filter(|k| !earlier.contains(k))
                    .map(|k| k.to_string())
                    .collect();
                let removed: Vec<String> = earlier
                    .iter()
                    .filter(|k| !found.contains(k))
                    .map(|k| k.to_string())
                    .collect();
                return Err(StepError::Failed(format!(
                    "inventory of '{}' changed since '{before}': added [{}], removed [{}]",
                    inv.of,
                    added.join(", "),
                    removed.join(", ")
                )));
            }
        }
        if let Some(n) = &inv.name {
            self.bindings.inventories.insert(n.clone(), found);
        }
        Ok(())
    }

    fn keymap(&mut self, m: &KeymapCheck) -> Result<(), StepError> {
        let router = self.router()?;
        for name in &m.has {
            let id = self.key_id(name)?;
            if router
                .keymap()
                .key(&id)
                .map_err(|e| StepError::Failed(format!("reading the key map: {e}")))?
                .is_none()
            {
                return Err(StepError::Failed(format!(
                    "the key map has no key '{name}' ({id})"
                )));
            }
        }
        for name in &m.lacks {
            let id = self.key_id(name)?;
            if router
                .keymap()
                .key(&id)
                .map_err(|e| StepError::Failed(format!("reading the key map: {e}")))?
                .is_some()
            {
                return Err(StepError::Failed(format!(
                    "the key map still has key '{name}' ({id})"
                )));
            }
        }
        for (name, signer) in &m.owner {
            let id = self.key_id(name)?;
            let owner = router
                .owner_name(&id)
                .map_err(|e| StepError::Failed(format!("owner of '{name}': {e}")))?;
            if owner != *signer {
                return Err(StepError::Failed(format!(
                    "key '{name}' is owned by '{owner}', expected '{signer}'"
                )));
            }
            log(format!("  key '{name}' is owned by '{owner}'"));
        }
        Ok(())
    }

    /// Checks the shim's trace (every call, or those after `since`), then marks.
    fn trace(&mut self, t: &TraceCheck) -> Result<(), StepError> {
        let path = self.instances.trace_path().ok_or_else(|| {
            StepError::Harness("this cell's signers do not run through the PKCS#11 shim".into())
        })?;
        let calls = crate::backends::shim::read(&path).map_err(harness)?;
        let from = match &t.since {
            Some(m) => *self
                .bindings
                .marks
                .get(m)
                .ok_or_else(|| StepError::Harness(format!("unknown trace mark '{m}'")))?,
            None => 0,
        };
        let window = &calls[from.min(calls.len())..];
        let counts = crate::backends::shim::counts(window);
        let n = |f: &str| counts.get(f).copied().unwrap_or(0);
        let place = match &t.since {
            Some(m) => format!("since mark '{m}'"),
            None => "since the cell started".to_string(),
        };
        log(format!(
            "  trace {place}: {} calls ({})",
            window.len(),
            counts
                .iter()
                .map(|(f, c)| format!("{f} {c}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        for f in &t.called {
            if n(f) == 0 {
                return Err(StepError::Failed(format!("{f} was not called {place}")));
            }
        }
        for f in &t.not_called {
            if n(f) > 0 {
                return Err(StepError::Failed(format!(
                    "{f} was called {} time(s) {place}",
                    n(f)
                )));
            }
        }
        for (f, want) in &t.count {
            if n(f) != *want {
                return Err(StepError::Failed(format!(
                    "{f} was called {} time(s) {place}, expected {want}",
                    n(f)
                )));
            }
        }
        if let Some(m) = &t.mark {
            log(format!("  trace mark '{m}' after {} calls", calls.len()));
            self.bindings.marks.insert(m.clone(), calls.len());
        }
        Ok(())
    }

    /// Checks the operations in the KMIP server's Query answer, as the default
    /// signer reports them.
    fn kmip_query(&mut self, q: &KmipQueryCheck) -> Result<(), StepError> {
        let router = self.router()?;
        let info = router.default_signer().info().map_err(|e| {
            StepError::Failed(format!("the default signer has no Query answer: {e}"))
        })?;
        if info.signer_type != "KMIP" {
            return Err(StepError::Harness(format!(
                "the default signer is a {} signer, not a KMIP one",
                info.signer_type
            )));
        }
        let listed: Vec<&str> = info
            .details
            .iter()
            .find(|(k, _)| k == "operations")
            .map(|(_, v)| v.split(", ").filter(|o| !o.is_empty()).collect())
            .unwrap_or_default();
        log(format!("  Query lists: {}", listed.join(", ")));
        for op in &q.has {
            if !listed.contains(&op.as_str()) {
                return Err(StepError::Failed(format!(
                    "the server's Query does not list '{op}'"
                )));
            }
        }
        for op in &q.lacks {
            if listed.contains(&op.as_str()) {
                return Err(StepError::Failed(format!(
                    "the server's Query lists '{op}'"
                )));
            }
        }
        Ok(())
    }

    fn replace_identity_key(&mut self, signer: &str) -> Result<(), StepError> {
        let router = self.router()?;
        let map = router.keymap();
        let signer_id = map
            .bound_name(signer)
            .map_err(|e| StepError::Harness(e.to_string()))?
            .ok_or_else(|| {
                StepError::Harness(format!(
                    "signer '{signer}' has never been bound; nothing to replace"
                ))
            })?;
        let record = map
            .signer(&signer_id)
            .map_err(|e| StepError::Harness(e.to_string()))?
            .ok_or_else(|| StepError::Harness(format!("no record of signer id {signer_id}")))?;
        let instance = self
            .spec
            .signers
            .iter()
            .find(|s| s.name == signer)
            .and_then(|s| s.on.clone())
            .unwrap_or_else(|| "software".into());
        self.instances
            .replace_key(&instance, &record.identity_key, record.identity_alg)
            .map_err(harness)?;
        log(format!(
            "  identity key {} of signer '{signer}' replaced by other key material",
            record.identity_key
        ));
        Ok(())
    }
}

/// Applies a step's expectation to what the signer did. `Ok(Some(v))`: success, go on
/// with `v`; `Ok(None)`: failed as expected; `Err`: the expectation did not hold.
fn expect<T>(expect: &Expect, result: Result<T, SignerError>) -> Result<Option<T>, String> {
    match (&expect.error, result) {
        (None, Ok(v)) => Ok(Some(v)),
        (None, Err(e)) => Err(format!("signer error: {e}")),
        (Some(kind), Err(e)) if e.kind == *kind => match &expect.message {
            Some(m) if !e.message.to_lowercase().contains(&m.to_lowercase()) => Err(format!(
                "expected an error of kind '{kind}' saying '{m}', got: {}",
                e.message
            )),
            _ => {
                log(format!("  failed as expected: {e}"));
                Ok(None)
            }
        },
        (Some(kind), Err(e)) => Err(format!(
            "expected an error of kind '{kind}', got '{}': {}",
            e.kind, e.message
        )),
        (Some(kind), Ok(_)) => Err(format!(
            "expected an error of kind '{kind}', but the step succeeded"
        )),
    }
}

fn run_step(router: &Router, b: &mut Bindings, step: &Step) -> Result<(), String> {
    match step {
        Step::CreateKey {
            alg,
            name,
            expect: e,
        } => {
            let Some(created) = expect(e, router.create_key(*alg))? else {
                return Ok(());
            };
            // Recompute the identifier here rather than trusting the signer's.
            let expected = oracle::KeyId::of_spki(&created.public_key)
                .map_err(|err| format!("the signer's public key: {err}"))?;
            if created.id.as_bytes() != expected.as_bytes() {
                return Err(format!(
                    "key identifier {} is not the SHA-1 of the key bits ({expected})",
                    created.id
                ));
            }
            log(format!("  created {alg} key {} as '{name}'", created.id));
            b.keys.insert(
                name.clone(),
                KeyEntry {
                    id: created.id,
                    alg: *alg,
                    spki: created.public_key,
                },
            );
        }
        Step::Sign {
            key,
            alg,
            data,
            name,
            expect: e,
        } => {
            let entry = b.keys.get(&key.value).ok_or("unknown key")?;
            let alg = alg.unwrap_or(entry.alg);
            let data = data.as_deref().unwrap_or(DEFAULT_DATA).as_bytes().to_vec();
            let Some(sig) = expect(e, router.sign(&entry.id, alg, &data))? else {
                return Ok(());
            };
            log(format!(
                "  {alg} signature of {} bytes with key '{}'",
                sig.len(),
                key.value
            ));
            if let Some(name) = name {
                let spki = entry.spki.clone();
                b.signatures.insert(
                    name.clone(),
                    SignatureEntry {
                        key: Some(key.value.clone()),
                        spki,
                        alg,
                        data,
                        bytes: sig,
                    },
                );
            }
        }
        Step::Verify {
            signature,
            key,
            data,
            expect,
        } => {
            let sig = b
                .signatures
                .get(&signature.value)
                .ok_or("unknown signature")?;
            let (key_name, spki) = match key {
                Some(k) => (
                    k.value.clone(),
                    &b.keys.get(&k.value).ok_or("unknown key")?.spki,
                ),
                None => (
                    sig.key.clone().unwrap_or_else(|| "(one-off key)".into()),
                    &sig.spki,
                ),
            };
            let data = data
                .as_ref()
                .map_or(sig.data.clone(), |d| d.as_bytes().to_vec());
            let got =
                oracle::verify::verify(spki, oracle_terms::algorithm(sig.alg), &data, &sig.bytes);
            let verdict = match &got {
                Ok(()) => Verdict::Valid,
                Err(e) if e.kind_name() == "mismatch" => Verdict::Mismatch,
                Err(e) if e.kind_name() == "bad-encoding" => Verdict::BadEncoding,
                Err(e) => return Err(format!("independent verifier refused the key: {e}")),
            };
            if verdict != *expect {
                return Err(match got {
                    Ok(()) => format!(
                        "signature '{}' verified with key '{key_name}', expected {expect:?}",
                        signature.value
                    ),
                    Err(e) => format!(
                        "independent verification of '{}' with key '{key_name}': {e}",
                        signature.value
                    ),
                });
            }
            log(format!(
                "  independent verifier: {verdict:?} (as expected) for '{}' with key '{key_name}'",
                signature.value
            ));
        }
        Step::PublicKey { key, expect: e } => {
            let entry = b.keys.get(&key.value).ok_or("unknown key")?;
            let Some(spki) = expect(e, router.public_key(&entry.id))? else {
                return Ok(());
            };
            if spki != entry.spki {
                return Err(format!(
                    "public key of '{}' read back differs from the one create_key returned",
                    key.value
                ));
            }
            log(format!("  public key of '{}' matches", key.value));
        }
        Step::DestroyKey { key, expect: e } => {
            let entry = b.keys.get(&key.value).ok_or("unknown key")?;
            if expect(e, router.destroy_key(&entry.id))?.is_some() {
                log(format!("  destroyed '{}' ({})", key.value, entry.id));
            }
        }
        Step::Random {
            bytes,
            from,
            expect: e,
        } => {
            let Some((r, source)) = expect(e, router.random_with_source(*bytes))? else {
                return Ok(());
            };
            if r.len() != *bytes {
                return Err(format!("asked for {bytes} random bytes, got {}", r.len()));
            }
            let said = match source {
                RandomSource::DefaultSigner => "the default signer's generator",
                RandomSource::Fallback => "the OpenSSL fallback signer",
            };
            log(format!("  {} random bytes from {said}", r.len()));
            match (from, source) {
                (None, _)
                | (Some(RandomFrom::Backend), RandomSource::DefaultSigner)
                | (Some(RandomFrom::Fallback), RandomSource::Fallback) => {}
                (Some(want), _) => {
                    return Err(format!(
                        "the random bytes came from {said}, expected from: {}",
                        match want {
                            RandomFrom::Backend => "backend",
                            RandomFrom::Fallback => "fallback",
                        }
                    ))
                }
            }
        }
        Step::SignOneOff {
            alg,
            data,
            name,
            expect: e,
        } => {
            let data = data.as_deref().unwrap_or(DEFAULT_DATA).as_bytes().to_vec();
            let Some((sig, spki)) = expect(e, router.sign_one_off(*alg, &data))? else {
                return Ok(());
            };
            let id = oracle::KeyId::of_spki(&spki)
                .map_err(|e| format!("the one-off public key: {e}"))?;
            log(format!(
                "  one-off {alg} signature of {} bytes by '{}' (key {id}, destroyed)",
                sig.len(),
                router.one_off_signer().name()
            ));
            if let Some(name) = name {
                b.signatures.insert(
                    name.clone(),
                    SignatureEntry {
                        key: None,
                        spki,
                        alg: *alg,
                        data,
                        bytes: sig,
                    },
                );
            }
        }
        Step::Restart(_)
        | Step::Inventory(_)
        | Step::Keymap(_)
        | Step::ReplaceIdentityKey { .. }
        | Step::Info(_)
        | Step::Traffic(_)
        | Step::Server(_)
        | Step::Proxy(_)
        | Step::Trace(_)
        | Step::KmipQuery(_) => unreachable!("handled by Cell::step"),
        Step::Sleep { seconds } => {
            std::thread::sleep(Duration::from_secs_f64(seconds.max(0.0)));
        }
        Step::SelfTest(SelfTest::Abort) => {
            log("  self_test: aborting the cell process");
            std::process::abort();
        }
        Step::SelfTest(SelfTest::Hang) => {
            log("  self_test: hanging");
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
    }
    Ok(())
}
