//! The runner: the matrix of case x backend, each cell in its own child process.
//!
//! A cell is the harness re-executing itself (`hsm-harness cell ...`) in a new process
//! group with a private work directory. A cell that crashes (a module that aborts) or
//! overruns `--timeout` (a module that hangs) is killed with its whole process group
//! and reported as an error carrying the signal or "timeout" and the tail of its
//! stderr; the run goes on with the next cell. Cells whose backend cannot start here,
//! or lacks a capability the case needs, are skipped with that reason and never
//! started. SIGINT and SIGTERM stop the run in order ([`crate::run::interrupt`]);
//! whatever the run started dies with it, and its work directory goes, even when the
//! harness is killed ([`crate::run::lifeline`]).

use std::fs::File;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::backends::pykmip_zygote::{Zygote, ZYGOTE_ENV};
use crate::model::backend::{Backend, Placement};
use crate::model::suite::Suite;

use crate::report::evidence::{Exchanges, PKCS11_CALLS};
use crate::report::outcome::{CellResult, RunResult, Status};
use crate::run::interrupt;
use crate::run::lifeline::{self, Janitor};
pub use crate::run::plan::{Before, Plan, PlannedCell, Selection};
use crate::run::protocol::CellReport;

/// How many lines of a dead cell's stderr go into its error message.
const STDERR_TAIL_LINES: usize = 20;
/// How long an interrupted cell has between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(3);
/// The most of a cell's log kept for the report.
const LOG_LIMIT: usize = 256 * 1024;

/// Settings for a run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub jobs: usize,
    pub timeout: Duration,
    /// The program to start for each cell (this harness).
    pub program: PathBuf,
    /// Where the backends' servers run.
    pub placement: Placement,
    /// Every cell of a backend reached through the PKCS#11 signer whose provider can
    /// put the PKCS#11 shim in front runs through it, transparent where neither the
    /// backend file nor the case sets rules, so that each cell's report carries every
    /// PKCS#11 call and its answer (`certify`'s function table).
    pub trace_pkcs11: bool,
    /// The signer implementation each cell drives instead of the built-in router.
    pub signer_cmd: Option<crate::steps::SignerCommand>,
}

/// How many cells run at once unless `-j` says: twice the cores for local backends,
/// whose cells mostly wait (on servers, and on the timeouts and back-offs the cases
/// test: at one cell per core, the cores were busy less than half the run); one per
/// core for containers, whose start-up keeps the engine busy.
pub fn default_jobs(placement: Placement) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    match placement {
        Placement::Local => 2 * cores,
        Placement::Container => cores,
    }
}

/// Runs every cell of `plan`, `jobs` at a time, calling `on_done` as each finishes
/// (in completion order). Returns the results in matrix order.
pub fn run(
    plan: &Plan,
    options: &RunOptions,
    mut on_done: impl FnMut(usize, usize, &CellResult),
) -> anyhow::Result<RunResult> {
    let root = lifeline::run_dir().context("creating the run's work directory")?;
    // Removes `root` should this process be killed; without it a killed run would
    // leave its cells' tokens and keys in the temporary directory.
    let containers = options.placement == Placement::Container;
    let janitor = Janitor::start(&options.program, &root, containers).ok();
    let total = plan.cells.len();
    // Each backend's first cell that runs also checks the backend's profile.
    let mut probed: Vec<usize> = Vec::new();
    let mut probes = vec![false; total];
    for (i, cell) in plan.cells.iter().enumerate() {
        if !probed.contains(&cell.backend) && plan.before(cell) == Before::Run {
            probed.push(cell.backend);
            probes[i] = true;
        }
    }
    let probes = &probes;
    let order = &start_order(plan);
    // Local PyKMIP cells fork their servers from one zygote (see pykmip_zygote).
    let zygote = start_zygote(plan, options, &root);
    let zygote = zygote.as_ref().map(Zygote::socket);
    let next = AtomicUsize::new(0);
    let (tx, rx) = mpsc::channel::<(usize, CellResult)>();
    let mut results: Vec<Option<CellResult>> = vec![None; total];
    std::thread::scope(|scope| {
        for _ in 0..options.jobs.max(1).min(total.max(1)) {
            let tx = tx.clone();
            let next = &next;
            let root = root.as_path();
            scope.spawn(move || loop {
                if interrupt::received().is_some() {
                    break;
                }
                let n = next.fetch_add(1, Ordering::SeqCst);
                if n >= total {
                    break;
                }
                let i = order[n];
                let result = run_cell(plan, &plan.cells[i], i, root, options, probes[i], zygote);
                if tx.send((i, result)).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        let mut done = 0;
        for (i, result) in rx {
            done += 1;
            on_done(done, total, &result);
            results[i] = Some(result);
        }
    });
    let _ = std::fs::remove_dir_all(&root);
    if let Some(j) = janitor {
        j.finish();
    }
    // An interrupted run still reports every cell.
    let cells = results
        .into_iter()
        .zip(&plan.cells)
        .map(|(result, cell)| {
            result.unwrap_or_else(|| {
                let mut r = blank(plan, cell);
                let sig = interrupt::received().map_or("a signal", signal_name);
                r.status = Status::Errored {
                    message: format!(
                        "interrupted: the run was stopped by {sig} before this cell ran"
                    ),
                };
                r
            })
        })
        .collect();
    Ok(RunResult {
        cells,
        partition: plan.partition,
    })
}

/// A cell's result before it has one: its names and the backend's properties.
fn blank(plan: &Plan, cell: &PlannedCell) -> CellResult {
    let suite = &plan.suites[cell.suite];
    let case = &suite.cases[cell.case];
    let backend = &plan.backends[cell.backend];
    CellResult {
        suite: suite.name.clone(),
        backend: backend.name.clone(),
        case: case.name.clone(),
        status: Status::Passed,
        duration: Duration::ZERO,
        properties: vec![
            ("backend".into(), backend.name.clone()),
            ("provider".into(), backend.provider_name().into()),
        ],
        log: String::new(),
    }
}

/// The order cells start in: costliest first (by their backend's
/// [`start_cost`](crate::backends::Provider::start_cost) times the instances the case
/// uses), so that the run does not end with one long cell running alone; cells that do
/// not run come last, and ties keep the matrix order. Results are reported in matrix
/// order whatever this is.
fn start_order(plan: &Plan) -> Vec<usize> {
    let cost = |cell: &PlannedCell| -> u32 {
        if plan.before(cell) != Before::Run {
            return 0;
        }
        let case = &plan.suites[cell.suite].cases[cell.case];
        let instances = case.instance_names.len().max(1) as u32;
        1 + plan.backends[cell.backend].provider.start_cost() * instances
    };
    let mut order: Vec<usize> = (0..plan.cells.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(cost(&plan.cells[i])));
    order
}

/// The PyKMIP zygote, when local PyKMIP cells will run; a zygote that cannot start
/// leaves each cell to start `pykmip-server` itself, which says what is wrong.
fn start_zygote(plan: &Plan, options: &RunOptions, root: &Path) -> Option<Zygote> {
    let pykmip = |cell: &PlannedCell| {
        plan.backends[cell.backend].provider.name() == "pykmip" && plan.before(cell) == Before::Run
    };
    if options.placement != Placement::Local || !plan.cells.iter().any(pykmip) {
        return None;
    }
    Zygote::start(root)
        .map_err(|e| eprintln!("note: PyKMIP servers start one by one: {e:#}"))
        .ok()
}

fn run_cell(
    plan: &Plan,
    cell: &PlannedCell,
    index: usize,
    root: &Path,
    options: &RunOptions,
    probe: bool,
    zygote: Option<&Path>,
) -> CellResult {
    let suite = &plan.suites[cell.suite];
    let case = &suite.cases[cell.case];
    let backend = &plan.backends[cell.backend];
    let mut result = blank(plan, cell);
    match plan.before(cell) {
        Before::Run => {}
        Before::Skip(reason) => {
            result.status = Status::Skipped { reason };
            return result;
        }
        Before::Error(message) => {
            result.status = Status::Errored { message };
            return result;
        }
    }
    let started = Instant::now();
    let workdir = root.join(format!("cell-{index}"));
    let outcome = spawn_and_wait(&workdir, suite, &case.name, backend, options, probe, zygote);
    result.duration = started.elapsed();
    match outcome {
        Ok((report, log)) => {
            result.status = report.status;
            for (k, v) in report.properties {
                if !result.properties.iter().any(|(pk, _)| *pk == k) {
                    result.properties.push((k, v));
                }
            }
            result.log = log;
        }
        Err((message, log)) => {
            result.status = Status::Errored { message };
            result.log = log;
        }
    }
    // The shim's trace, read here so that it is in the report even when the cell
    // crashed or timed out.
    match crate::backends::shim::read(&workdir.join(crate::backends::shim::TRACE_FILE)) {
        Ok(calls) if calls.is_empty() => {}
        Ok(calls) => {
            result.log.push_str(&crate::backends::shim::render(&calls));
            let calls = Exchanges::from_shim_trace(&calls, backend.shim());
            result
                .properties
                .push((PKCS11_CALLS.to_string(), calls.to_property()));
        }
        Err(e) => result
            .log
            .push_str(&format!("== PKCS#11 shim trace unreadable: {e:#}\n")),
    }
    // A cell that was killed (timeout, crash, Ctrl-C) could not remove its containers.
    if options.placement == Placement::Container {
        let label = workdir.display().to_string();
        match crate::backends::container::remove_labelled(
            crate::backends::container::CELL_LABEL,
            &label,
        ) {
            Ok(0) => {}
            Ok(n) => result.log.push_str(&format!(
                "== removed {n} container(s) the cell left behind\n"
            )),
            Err(e) => result.log.push_str(&format!(
                "== could not remove the cell's containers: {e:#}\n"
            )),
        }
    }
    // The cell's backend (token directory, key files) goes with its work directory.
    let _ = std::fs::remove_dir_all(&workdir);
    result
}

type CellOutcome = Result<(CellReport, String), (String, String)>;

fn spawn_and_wait(
    workdir: &Path,
    suite: &Suite,
    case: &str,
    backend: &Backend,
    options: &RunOptions,
    probe: bool,
    zygote: Option<&Path>,
) -> CellOutcome {
    let mut command = Command::new(&options.program);
    if let Some(socket) = zygote {
        command.env(ZYGOTE_ENV, socket);
    }
    command
        .arg("cell")
        .arg("--suite")
        .arg(&suite.path)
        .arg("--case")
        .arg(case)
        .arg("--backend")
        .arg(&backend.path)
        .arg("--workdir")
        .arg(workdir)
        .args(probe.then_some("--probe"))
        .args(options.trace_pkcs11.then_some("--trace-pkcs11"))
        .args(backend.allow_destructive.then_some("--allow-destructive"))
        .args(options.signer_cmd.iter().flat_map(|c| {
            [
                "--signer-cmd".into(),
                c.command.clone(),
                "--signer-timeout".into(),
                c.timeout.as_secs_f64().to_string(),
            ]
        }))
        .arg("--provider")
        .arg(options.placement.name());
    let (status, log) = supervise(&mut command, workdir, "cell", options)?;
    let report = CellReport::read(workdir);
    match (report, status.signal()) {
        (Some(report), None) if status.success() => Ok((report, log)),
        (_, Some(sig)) => Err((
            format!(
                "the cell process was killed by signal {sig} ({})\n{}",
                signal_name(sig),
                tail(&log)
            ),
            log,
        )),
        (_, None) => Err((
            format!(
                "the cell process exited with status {} without a result\n{}",
                status.code().unwrap_or(-1),
                tail(&log)
            ),
            log,
        )),
    }
}

/// Runs `command` (this harness in one of its hidden roles: `what` it is, for the
/// messages) as a child of the run: in `workdir`, which it creates, in a process group
/// of its own that dies with the harness, its stdout and stderr into `workdir/WHAT.log`. The child is killed with its
/// whole group after `options.timeout`, or when the run is interrupted, and whatever it
/// left running in its group is killed when it ends.
///
/// `Ok`: its exit status and log; `Err`: why it did not end by itself (with the tail
/// of its log), and its log.
pub(crate) fn supervise(
    command: &mut Command,
    workdir: &Path,
    what: &str,
    options: &RunOptions,
) -> Result<(ExitStatus, String), (String, String)> {
    let fail = |m: String| Err((m, String::new()));
    if let Err(e) = std::fs::create_dir_all(workdir) {
        return fail(format!("cannot create {}: {e}", workdir.display()));
    }
    let log_path = workdir.join(format!("{what}.log"));
    let log_file = match File::create(&log_path) {
        Ok(f) => f,
        Err(e) => return fail(format!("cannot create {}: {e}", log_path.display())),
    };
    let stderr = match log_file.try_clone() {
        Ok(f) => f,
        Err(e) => return fail(format!("cannot share {}: {e}", log_path.display())),
    };
    let spawned = command
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(stderr)
        // Its own process group, so a timeout kills whatever the child started too.
        .process_group(0);
    let spawned = lifeline::die_with_parent(spawned).spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => return fail(format!("cannot start {}: {e}", options.program.display())),
    };
    let deadline = Instant::now() + options.timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if interrupt::received().is_some() => {
                stop_group(&mut child);
                let log = read_log(&log_path);
                let sig = interrupt::received().map_or("a signal", signal_name);
                return Err((
                    format!(
                        "interrupted: the run was stopped by {sig} while this {what} ran\n{}",
                        tail(&log)
                    ),
                    log,
                ));
            }
            Ok(None) if Instant::now() >= deadline => break None,
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                kill_group(child.id());
                let _ = child.wait();
                return Err((format!("lost the {what} process: {e}"), read_log(&log_path)));
            }
        }
    };
    let Some(status) = status else {
        kill_group(child.id());
        let _ = child.wait();
        let log = read_log(&log_path);
        return Err((
            format!(
                "timeout: the {what} ran longer than {:?} and was killed\n{}",
                options.timeout,
                tail(&log)
            ),
            log,
        ));
    };
    // Whatever the child left running in its group goes too.
    kill_group(child.id());
    Ok((status, read_log(&log_path)))
}

/// SIGTERM to the cell's group, so its servers can stop cleanly; SIGKILL to what is
/// left after [`STOP_GRACE`].
fn stop_group(child: &mut std::process::Child) {
    // SAFETY: kill(2) with a negative pid signals a process group; no memory involved.
    unsafe {
        libc::kill(-(child.id() as libc::pid_t), libc::SIGTERM);
    }
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    kill_group(child.id());
    let _ = child.wait();
}

fn kill_group(pid: u32) {
    // SAFETY: kill(2) with a negative pid signals a process group; no memory involved.
    unsafe {
        libc::kill(-(pid as libc::pid_t), libc::SIGKILL);
    }
}

fn read_log(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    let start = bytes.len().saturating_sub(LOG_LIMIT);
    let mut text = String::from_utf8_lossy(&bytes[start..]).into_owned();
    if start > 0 {
        text.insert_str(0, "[... log truncated ...]\n");
    }
    text
}

/// The last lines of a child's log, for an error message.
pub(crate) fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    let from = lines.len().saturating_sub(STDERR_TAIL_LINES);
    let mut out = String::from("stderr tail:\n");
    out.push_str(&lines[from..].join("\n"));
    out
}

/// The conventional name of a signal number.
pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGABRT => "SIGABRT",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGBUS => "SIGBUS",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGTRAP => "SIGTRAP",
        _ => "signal",
    }
}
