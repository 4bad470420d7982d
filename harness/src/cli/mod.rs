//! Command line: `run`, `certify`, `list`, `diff`, `merge-junit`, `check`, `probe`,
//! `signer`, `bench`, `schema`, and the hidden `cell` and `describe`.
//!
//! Exit codes: 0 when nothing failed or errored; 1 when a cell failed or errored (or a
//! signer command failed, or `diff` found a regression); 2 for bad input (a suite,
//! backend file or signer configuration that does not load, a results file that does
//! not read, or bad arguments). Exit codes and logging live here; each subcommand has
//! its own file beside this one (`schema.rs`: the file formats' JSON Schemas), and
//! `select.rs` holds what `run` and `list` share.

mod bench;
mod cell;
mod certify;
mod check;
mod describe;
mod diff;
mod list;
mod merge;
mod probe;
mod run;
pub mod schema;
mod select;
mod signer;
mod signer_serve;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILED: i32 = 1;
pub const EXIT_BAD_INPUT: i32 = 2;

#[derive(Parser)]
#[command(
    name = "hsm-harness",
    version,
    about = "HSM conformance and interop test harness",
    long_about = "Runs YAML suites (suites/*.yaml) against HSM backends \
        (fixtures/backends/*.yaml) through complete signer implementations, \
        each case on each backend in its own process, and writes JUnit XML.\n\n\
        Exit codes: 0 = nothing failed or errored, 1 = failures or errors, 2 = bad input."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the matrix of suite cases x backends and write the reports.
    Run(run::RunArgs),
    /// Run every suite on one backend and write a conformance report.
    ///
    /// report.md and report.html, with the JUnit and JSON reports beside them. Exit 0
    /// when conformant, 1 when not, 2 on bad input.
    Certify(certify::CertifyArgs),
    /// Print the cells a `run` with the same selectors would run, one per line.
    List(select::SelectArgs),
    /// Compare two runs' JSON results: regressions, newly skipped, fixed, other
    /// changes, added and removed cells.
    ///
    /// Exit 1 when a cell regressed (fails or errors now; passed, skipped or absent
    /// before), 0 otherwise, 2 when a file is not a results JSON this harness reads.
    Diff(diff::DiffArgs),
    /// Merge the JSON results of a run's shards (`run --partition K/N --json FILE`)
    /// into one JUnit report, and with --json one JSON report.
    ///
    /// Refuses (exit 2) a cell in two inputs and an incomplete set of shards. Exit 1
    /// when a merged cell failed or errored, as `run` would.
    MergeJunit(merge::MergeArgs),
    /// Check suite and backend files; exit 2 with file:line:col on the first error of each.
    Check {
        /// Suite (or backend) YAML files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Ask a backend what it offers (library, token and mechanisms, or KMIP server,
    /// operations and TLS; its random generator) and, with --write, write the
    /// capability profile that follows.
    Probe(probe::ProbeArgs),
    /// Operate the configured signers from the shell (JSON on stdout).
    Signer(signer::SignerArgs),
    /// Sign throughput and p50/p99 latency on each path (raw cryptoki on SoftHSMv2,
    /// the PKCS#11 signer, the KMIP signer through the relay and to PyKMIP, the
    /// software signer), each as a ratio to the raw floor measured in the same run.
    ///
    /// Exit 1 when a path errors, 2 on bad input; missed speed targets are reported.
    Bench(bench::BenchArgs),
    /// Print the JSON Schema of suite or backend files (for editors; the committed
    /// suites/schema.json is this output).
    Schema(schema::SchemaArgs),
    /// Remove a run's work directory once the run is gone (used by `run`; not for
    /// people).
    #[command(hide = true)]
    Janitor {
        #[arg(long)]
        dir: PathBuf,
        /// Also remove the containers labelled with the run.
        #[arg(long)]
        containers: bool,
    },
    /// Run one cell (used by `run`; not for people).
    #[command(hide = true)]
    Cell {
        #[arg(long)]
        suite: PathBuf,
        #[arg(long)]
        case: String,
        #[arg(long)]
        backend: PathBuf,
        #[arg(long)]
        workdir: PathBuf,
        /// Compare the backend's capability profile with the backend first.
        #[arg(long)]
        probe: bool,
        /// Trace every PKCS#11 call through the shim (for `certify`).
        #[arg(long)]
        trace_pkcs11: bool,
        /// Where the backend's servers run.
        #[arg(long, value_enum, default_value_t = crate::model::backend::Placement::Local)]
        provider: crate::model::backend::Placement,
        /// The run allows destructive cases on an existing backend.
        #[arg(long)]
        allow_destructive: bool,
        /// The signer implementation to drive instead of the built-in router.
        #[arg(long)]
        signer_cmd: Option<String>,
        /// Seconds one signer-protocol request may take.
        #[arg(long, default_value_t = 45.0)]
        signer_timeout: f64,
    },
    /// Describe one backend (used by `certify`; not for people).
    #[command(hide = true)]
    Describe {
        #[arg(long)]
        backend: PathBuf,
        #[arg(long)]
        workdir: PathBuf,
        /// Where the backend's servers run.
        #[arg(long, value_enum, default_value_t = crate::model::backend::Placement::Local)]
        provider: crate::model::backend::Placement,
    },
}

pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                EXIT_BAD_INPUT
            } else {
                EXIT_OK
            };
        }
    };
    match cli.command {
        Command::Run(args) => run::main(args),
        Command::Certify(args) => certify::main(args),
        Command::List(select) => list::main(select),
        Command::Diff(args) => diff::main(args),
        Command::MergeJunit(args) => merge::main(args),
        Command::Check { files } => check::main(&files),
        Command::Probe(args) => probe::main(args),
        Command::Signer(args) => signer::main(args),
        Command::Bench(args) => bench::main(args),
        Command::Janitor { dir, containers } => {
            crate::run::lifeline::janitor_main(&dir, containers)
        }
        Command::Schema(args) => schema::main(args),
        Command::Cell {
            suite,
            case,
            backend,
            workdir,
            probe,
            trace_pkcs11,
            provider,
            allow_destructive,
            signer_cmd,
            signer_timeout,
        } => cell::main(
            &suite,
            &case,
            &backend,
            &workdir,
            crate::run::cell::Options {
                probe,
                trace_pkcs11,
                signer_cmd: signer_cmd.map(|command| crate::steps::SignerCommand {
                    command,
                    timeout: std::time::Duration::try_from_secs_f64(signer_timeout)
                        .unwrap_or(std::time::Duration::from_secs(45)),
                }),
            },
            provider,
            allow_destructive,
        ),
        Command::Describe {
            backend,
            workdir,
            provider,
        } => describe::main(&backend, &workdir, provider),
    }
}

pub(crate) fn bad_input(message: impl std::fmt::Display) -> i32 {
    eprintln!("error: {message}");
    EXIT_BAD_INPUT
}

/// Log to stderr; `RUST_LOG` chooses the level (default: info for our crates).
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(log_filter())
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .without_time()
        .try_init();
}

/// A cell's logging: as [`init_logging`], and the KMIP signer's exchanges counted for
/// the cell's report whatever the level ([`crate::run::kmip_exchanges`]).
pub(crate) fn init_cell_logging() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let printed = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .without_time()
        .with_filter(log_filter());
    let _ = tracing_subscriber::registry()
        .with(printed)
        .with(crate::run::kmip_exchanges::layer())
        .try_init();
}

fn log_filter() -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("hsm_signers=info,hsm_harness=info,cryptoki=off")
    })
}
