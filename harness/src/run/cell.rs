//! One cell: one case run against one backend, inside the cell's own process.
//!
//! The runner starts `hsm-harness cell ...` for every cell. This module is what runs
//! there: bring the backend up, build the signer router, run the steps, and write the
//! verdict to `<workdir>/result.json`. Everything it says goes to stderr, which the
//! runner keeps as the cell's log; if the process dies, the runner reports the
//! signal and the tail of that log instead.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::backends::shim::ShimSpec;
use crate::backends::Instances;
use crate::model::backend::Backend;
use crate::model::suite::{Capability, Case, SignersSpec};
use crate::report::evidence::KMIP_EXCHANGES;
use crate::report::outcome::Status;
use crate::run::kmip_exchanges;
use crate::run::protocol::CellReport;
use crate::steps::{log, Bindings, CellContext, StepError};

/// The report property naming the signer implementation the cell drove.
pub const SIGNER_IMPLEMENTATION: &str = "signer_implementation";
/// The report property giving its version.
pub const SIGNER_VERSION: &str = "signer_version";

/// What the runner asks of a cell beyond its case.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Compare the backend's capability profile with what a fresh instance reports
    /// first (the runner asks it of each backend's first cell); a disagreement is this
    /// cell's `<error>`, and the case does not run.
    pub probe: bool,
    /// Run the signers' PKCS#11 module through the shim even where neither the backend
    /// file nor the case asks for it (nothing injected: a trace of every call), when
    /// the backend is reached through the PKCS#11 signer and its provider can put the
    /// shim in front (see [`crate::run::runner::RunOptions::trace_pkcs11`]).
    pub trace_pkcs11: bool,
    /// Drive this signer implementation (a child process speaking the signer
    /// protocol) instead of our router.
    pub signer_cmd: Option<crate::steps::SignerCommand>,
}

/// Runs `case` against `backend` with `workdir` as the cell's private directory and
/// writes the report file there. The KMIP exchanges the cell's signers made (counted
/// by [`kmip_exchanges`] when the cell's logging has its layer) go into the report as
/// [`KMIP_EXCHANGES`] and into the log.
pub fn run_and_report(
    case: &Case,
    backend: &Backend,
    workdir: &Path,
    options: Options,
) -> anyhow::Result<()> {
    let mut report = run(case, backend, workdir, options);
    let withheld: Vec<String> = case
        .instances
        .values()
        .flat_map(|i| i.withhold.iter().cloned())
        .collect();
    let exchanges = kmip_exchanges::taken(&withheld);
    if !exchanges.is_empty() {
        log(format!(
            "== KMIP exchanges per operation: {}",
            exchanges.to_property()
        ));
        report
            .properties
            .push((KMIP_EXCHANGES.to_string(), exchanges.to_property()));
    }
    log(format!("cell result: {}", report.status.label()));
    report.write(workdir)
}

fn errored(message: String, properties: Vec<(String, String)>) -> CellReport {
    CellReport {
        status: Status::Errored { message },
        properties,
    }
}

/// Where a cell's time went, for the report's `phase_*_ms` properties: making the
/// backend's instances (wherever in the cell that happened), starting the signers, the
/// steps (less instance making), and the end (signers gone, instances put back and
/// stopped).
#[derive(Default)]
struct Phases {
    opening: Duration,
    making: Duration,
    signers: Duration,
    steps: Duration,
    teardown: Duration,
}

impl Phases {
    /// Runs `phase` and adds its time, less what it spent making instances, to `slot`.
    fn time<T>(
        cell: &mut CellContext,
        slot: impl Fn(&mut Phases) -> &mut Duration,
        phases: &mut Phases,
        phase: impl FnOnce(&mut CellContext) -> T,
    ) -> T {
        let (started, making) = (Instant::now(), cell.instances.making_time());
        let out = phase(cell);
        let made = cell.instances.making_time().saturating_sub(making);
        *slot(phases) += started.elapsed().saturating_sub(made);
        out
    }

    fn properties(&self) -> Vec<(String, String)> {
        [
            ("phase_backend_ms", self.opening + self.making),
            ("phase_signers_ms", self.signers),
            ("phase_steps_ms", self.steps),
            ("phase_teardown_ms", self.teardown),
        ]
        .into_iter()
        .map(|(name, time)| (name.to_string(), time.as_millis().to_string()))
        .collect()
    }
}

fn run(case: &Case, backend: &Backend, workdir: &Path, options: Options) -> CellReport {
    let opening = Instant::now();
    log(format!(
        "case '{}' on backend '{}' ({} provider)",
        case.name,
        backend.name,
        backend.provider_name()
    ));
    let instances = match Instances::new(backend, workdir, &case.instances) {
        Ok(i) => i,
        Err(e) => {
            return errored(
                format!("backend '{}' did not come up: {e:#}", backend.name),
                vec![],
            )
        }
    };
    let spec = case
        .signers
        .clone()
        .unwrap_or_else(|| SignersSpec::single(&backend.name));
    let mut cell = CellContext {
        instances,
        backend_shim: backend.shim().cloned(),
        spec,
        state: workdir.join("state"),
        signer: None,
        signer_cmd: options.signer_cmd.clone(),
        bindings: Bindings::default(),
    };
    let mut phases = Phases {
        opening: opening.elapsed(),
        ..Phases::default()
    };
    let report = run_in(case, backend, options, &mut cell, &mut phases);
    phases.making = cell.instances.making_time();
    let ending = Instant::now();
    let mut report = end(report, &mut cell);
    drop(cell);
    phases.teardown = ending.elapsed();
    report.properties.extend(phases.properties());
    report
}

/// The end of a cell, however it went: the signers go, then each instance puts back
/// what it must (an external token: its keys destroyed, its old objects checked).
/// What could not be put back makes the cell an error, whatever the case's verdict.
fn end(mut report: CellReport, cell: &mut CellContext) -> CellReport {
    cell.signer = None;
    let (problems, late) = cell.instances.finish();
    for (k, v) in late {
        if !report.properties.iter().any(|(pk, _)| *pk == k) {
            report.properties.push((k, v));
        }
    }
    if problems.is_empty() {
        return report;
    }
    for p in &problems {
        log(format!("cell end: {p}"));
    }
    let verdict = match &report.status {
        Status::Passed => "the case passed".to_string(),
        Status::Failed { message } => format!("the case failed: {message}"),
        Status::Errored { message } => format!("the case errored: {message}"),
        Status::Skipped { reason } => format!("the case was skipped: {reason}"),
    };
    report.status = Status::Errored {
        message: format!(
            "the backend was not left as found: {} ({verdict})",
            problems.join("; ")
        ),
    };
    report
}

/// The cell's case, once its instances are there.
fn run_in(
    case: &Case,
    backend: &Backend,
    options: Options,
    cell: &mut CellContext,
    phases: &mut Phases,
) -> CellReport {
    // The backend's shim settings first, then the case's.
    let shim = match (backend.shim(), &case.shim) {
        (Some(b), Some(c)) => Some(b.merged(c)),
        (b, c) => b.or(c.as_ref()).cloned(),
    };
    let shim = shim.or_else(|| traced(backend, &options).then(ShimSpec::default));
    if let Some(spec) = &shim {
        if let Err(e) = cell.instances.use_shim(spec) {
            return errored(
                format!(
                    "backend '{}': cannot put the PKCS#11 shim in front: {e:#}",
                    backend.name
                ),
                vec![],
            );
        }
    }
    if options.probe {
        if let Some(report) = check_profile(backend, &mut cell.instances) {
            return report;
        }
    }
    if let Err(e) = Phases::time(cell, |p| &mut p.signers, phases, CellContext::start) {
        return errored(
            format!("backend '{}' did not come up: {e:#}", backend.name),
            cell.instances.properties(),
        );
    }
    let mut properties = cell.instances.properties();
    if let Some(signer) = &cell.signer {
        if let Some((name, version)) = signer.implementation() {
            properties.push((SIGNER_IMPLEMENTATION.to_string(), name));
            properties.push((SIGNER_VERSION.to_string(), version));
        }
        // A signer that cannot say who it is (a refused TLS handshake, say) is what some
        // cases test: the steps find out; the log says it now.
        match signer.default_info() {
            Err(e) => {
                return errored(
                    format!("the signer's info before the steps: {}", e.message()),
                    properties,
                )
            }
            Ok(Some(Ok(info))) => {
                log(format!("signer '{}' ({})", info.name, info.signer_type));
                for (k, v) in info.details {
                    log(format!("  {k}: {v}"));
                    if !properties.iter().any(|(pk, _)| *pk == k) {
                        properties.push((k, v));
                    }
                }
            }
            Ok(Some(Err(e))) => log(format!("default signer: no info: {e}")),
            Ok(None) => log("default signer: the implementation offers no info"),
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
        match Phases::time(cell, |p| &mut p.steps, phases, |cell| step.value.run(cell)) {
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
            Err(StepError::Skipped(reason)) => {
                log(format!("{at}: SKIPPED: {reason}"));
                return CellReport {
                    status: Status::Skipped {
                        reason: format!("{at}: {reason}"),
                    },
                    properties,
                };
            }
        }
    }
    let mut late = cell.instances.properties();
    // The TLS version and cipher suite are known once a KMIP signer has connected,
    // which may have been after the start.
    if !properties.iter().any(|(k, _)| k == "tls_version") {
        match cell.signer.as_ref().map(|s| s.default_info()) {
            Some(Ok(Some(Ok(info)))) => late.extend(info.details),
            Some(Err(e)) => {
                return errored(
                    format!("the signer's info after the steps: {}", e.message()),
                    properties,
                )
            }
            _ => {}
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

/// Whether `options` put the transparent shim in front of this backend's module: it
/// is reached through the PKCS#11 signer, and its provider can put the shim there.
fn traced(backend: &Backend, options: &Options) -> bool {
    options.trace_pkcs11
        && backend.has(Capability::Pkcs11)
        && backend
            .provider
            .administers()
            .contains(&Capability::Pkcs11Shim)
}

/// Compares the backend's capability profile with what a fresh instance reports; an
/// errored report when they disagree or the probe fails.
fn check_profile(backend: &Backend, instances: &mut Instances) -> Option<CellReport> {
    let observed = match instances.probe() {
        Ok(o) => o,
        Err(e) => {
            return Some(errored(
                format!(
                    "backend '{}': probing its capabilities failed: {e:#}",
                    backend.name
                ),
                instances.properties(),
            ))
        }
    };
    let mut disagreements = Vec::new();
    for o in &observed {
        let listed = backend.has(o.capability);
        log(format!(
            "  probe: {} {} ({}; the profile {} it)",
            o.capability,
            match (o.has, o.exact) {
                (true, true) => "present",
                (true, false) => "not ruled out",
                (false, _) => "absent",
            },
            o.evidence,
            if listed { "lists" } else { "does not list" }
        ));
        if o.disagrees(listed) {
            disagreements.push(format!(
                "the profile {} '{}', but {}",
                if listed { "lists" } else { "does not list" },
                o.capability,
                o.evidence
            ));
        }
    }
    if disagreements.is_empty() {
        return None;
    }
    Some(errored(
        format!(
            "the capability profile in {} disagrees with the backend: {}",
            backend.path.display(),
            disagreements.join("; ")
        ),
        instances.properties(),
    ))
}
