//! Command line: `run`, `list`, `check`, `signer`, `schema`, and the hidden `cell`.
//!
//! Exit codes: 0 when nothing failed or errored; 1 when a cell failed or errored (or a
//! signer command failed); 2 for bad input (a suite, backend file or signer
//! configuration that does not load, or bad arguments). Exit codes and logging live
//! here; each subcommand with more than a few lines has its own file beside this one
//! (`signer.rs`: operating the signers from the shell; `schema.rs`: the file formats'
//! JSON Schemas).

pub mod schema;
mod signer;

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::model::backend::Backend;
use crate::model::suite::{files_in, Suite, SuiteError};
use crate::report::outcome::Tally;
use crate::report::{console, junit};
use crate::run::cell;
use crate::run::runner::{Plan, RunOptions, Selection};

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
    Run(RunArgs),
    /// Print the cells a `run` with the same selectors would run, one per line.
    List(SelectArgs),
    /// Check suite and backend files; exit 2 with file:line:col on the first error of each.
    Check {
        /// Suite (or backend) YAML files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Operate the configured signers from the shell (JSON on stdout).
    Signer(signer::SignerArgs),
    /// Print the JSON Schema of suite or backend files (for editors; the committed
    /// suites/schema.json is this output).
    Schema(schema::SchemaArgs),
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
    },
}

#[derive(Args, Clone)]
struct SelectArgs {
    /// A suite to run (repeatable): a file, or a name in --suites-dir (`tls-enforcement`
    /// for suites/tls-enforcement.yaml); default: every *.yaml in --suites-dir.
    #[arg(long = "suite", value_name = "FILE|NAME")]
    suites: Vec<PathBuf>,
    /// A backend to run against, by name (repeatable); default: every backend file.
    #[arg(long = "backend", value_name = "NAME")]
    backends: Vec<String>,
    /// Only cases whose name, or `suite.backend/case`, matches this glob.
    #[arg(long, value_name = "GLOB")]
    filter: Option<String>,
    /// Only cases whose suite or case has this tag (repeatable; any matches).
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,
    /// Where the suites are.
    #[arg(long, value_name = "DIR", default_value = "suites")]
    suites_dir: PathBuf,
    /// Where the backend files are.
    #[arg(long, value_name = "DIR", default_value = "fixtures/backends")]
    backends_dir: PathBuf,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    select: SelectArgs,
    /// Cells run in parallel (default: the number of cores).
    #[arg(short = 'j', long, value_name = "N")]
    jobs: Option<usize>,
    /// Seconds a cell may take before it is killed and reported as an error.
    #[arg(long, value_name = "SECONDS", default_value_t = 60.0)]
    timeout: f64,
    /// Where to write the JUnit XML report.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "target/hsm-harness/junit.xml"
    )]
    junit: PathBuf,
    /// Also write the results as JSON here.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
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
        Command::Run(args) => run(args),
        Command::List(select) => list(select),
        Command::Check { files } => check(&files),
        Command::Signer(args) => signer::main(args),
        Command::Schema(args) => schema::main(args),
        Command::Cell {
            suite,
            case,
            backend,
            workdir,
        } => run_cell(&suite, &case, &backend, &workdir),
    }
}

fn bad_input(message: impl std::fmt::Display) -> i32 {
    eprintln!("error: {message}");
    EXIT_BAD_INPUT
}

/// A `--suite` value: the file if it exists, else `DIR/NAME.yaml` for a bare name.
fn suite_path(given: &Path, dir: &Path) -> PathBuf {
    let bare = given.components().count() == 1 && given.extension().is_none();
    let named = dir.join(given).with_extension("yaml");
    if !given.exists() && bare && named.exists() {
        named
    } else {
        given.to_path_buf()
    }
}

/// Loads the selected suites and every backend file; errors are bad input.
fn load(select: &SelectArgs) -> Result<Plan, i32> {
    let suite_files = if select.suites.is_empty() {
        files_in(&select.suites_dir).map_err(|e| {
            bad_input(format!(
                "cannot list suites in {}: {e} (run from the repository root or give --suites-dir)",
                select.suites_dir.display()
            ))
        })?
    } else {
        select
            .suites
            .iter()
            .map(|s| suite_path(s, &select.suites_dir))
            .collect()
    };
    let backend_files = files_in(&select.backends_dir).map_err(|e| {
        bad_input(format!(
            "cannot list backends in {}: {e} (run from the repository root or give --backends-dir)",
            select.backends_dir.display()
        ))
    })?;
    let mut errors: Vec<SuiteError> = Vec::new();
    let mut suites = Vec::new();
    for f in &suite_files {
        match Suite::load(f) {
            Ok(s) => suites.push(s),
            Err(e) => errors.push(e),
        }
    }
    let mut backends = Vec::new();
    for f in &backend_files {
        match Backend::load(f) {
            Ok(b) => backends.push(b),
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        for e in &errors {
            eprintln!("error: {e}");
        }
        return Err(EXIT_BAD_INPUT);
    }
    let selection = Selection {
        backends: select.backends.clone(),
        filter: select.filter.clone(),
        tags: select.tags.clone(),
    };
    Plan::new(suites, backends, &selection).map_err(|e| bad_input(format!("{e:#}")))
}

fn list(select: SelectArgs) -> i32 {
    let plan = match load(&select) {
        Ok(p) => p,
        Err(code) => return code,
    };
    for cell in &plan.cells {
        let suite = &plan.suites[cell.suite];
        let backend = &plan.backends[cell.backend];
        let mut line = format!(
            "{}.{}/{}",
            suite.name, backend.name, suite.cases[cell.case].name
        );
        if let Some(reason) = plan.skip_reason(cell) {
            line.push_str(&format!("  (skip: {reason})"));
        }
        println!("{line}");
    }
    EXIT_OK
}

fn run(args: RunArgs) -> i32 {
    let plan = match load(&args.select) {
        Ok(p) => p,
        Err(code) => return code,
    };
    if plan.cells.is_empty() {
        return bad_input("the selectors match no cells (see `hsm-harness list`)");
    }
    if !(args.timeout > 0.0 && args.timeout.is_finite()) {
        return bad_input("--timeout must be a positive number of seconds");
    }
    let program = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => return bad_input(format!("cannot find this program's path: {e}")),
    };
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let options = RunOptions {
        jobs,
        timeout: Duration::from_secs_f64(args.timeout),
        program,
    };
    let used = |f: fn(&crate::run::runner::PlannedCell) -> usize| {
        let mut v: Vec<usize> = plan.cells.iter().map(f).collect();
        v.sort_unstable();
        v.dedup();
        v.len()
    };
    println!(
        "hsm-harness: {} cells ({} suites x {} backends), {} at a time",
        plan.cells.len(),
        used(|c| c.suite),
        used(|c| c.backend),
        jobs.max(1)
    );
    let result = match crate::run::runner::run(&plan, &options, |done, total, cell| {
        println!("{}", console::progress_line(done, total, cell));
    }) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e:#}");
            return EXIT_FAILED;
        }
    };
    println!();
    print!("{}", console::summary_table(&result));
    if let Err(e) = junit::write_junit(&result, &args.junit) {
        eprintln!("error: writing {}: {e:#}", args.junit.display());
        return EXIT_FAILED;
    }
    println!("JUnit report: {}", args.junit.display());
    if let Some(json) = &args.json {
        if let Err(e) = junit::write_json(&result, json) {
            eprintln!("error: writing {}: {e:#}", json.display());
            return EXIT_FAILED;
        }
        println!("JSON report: {}", json.display());
    }
    if Tally::of(&result.cells).is_success() {
        EXIT_OK
    } else {
        EXIT_FAILED
    }
}

fn check(files: &[PathBuf]) -> i32 {
    let mut bad = 0;
    for f in files {
        let is_backend = std::fs::read_to_string(f)
            .map(|t| t.lines().any(|l| l.starts_with("backend:")))
            .unwrap_or(false);
        let outcome = if is_backend {
            Backend::load(f).map(|b| format!("backend '{}'", b.name))
        } else {
            Suite::load(f).map(|s| format!("suite '{}', {} cases", s.name, s.cases.len()))
        };
        match outcome {
            Ok(what) => println!("{}: ok ({what})", f.display()),
            Err(e) => {
                eprintln!("error: {e}");
                bad += 1;
            }
        }
    }
    if bad > 0 {
        EXIT_BAD_INPUT
    } else {
        EXIT_OK
    }
}

fn run_cell(suite: &Path, case: &str, backend: &Path, workdir: &Path) -> i32 {
    init_logging();
    let loaded = Suite::load(suite).and_then(|s| Backend::load(backend).map(|b| (s, b)));
    let (suite, backend) = match loaded {
        Ok(x) => x,
        Err(e) => return bad_input(e),
    };
    let Some(case) = suite.cases.iter().find(|c| c.name == case) else {
        return bad_input(format!("suite '{}' has no case '{case}'", suite.name));
    };
    match cell::run_and_report(case, &backend, workdir) {
        Ok(()) => EXIT_OK,
        Err(e) => {
            eprintln!("error: writing the cell result: {e:#}");
            EXIT_FAILED
        }
    }
}

/// Log to stderr; `RUST_LOG` chooses the level (default: info for our crates).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("hsm_signers=info,hsm_harness=info,cryptoki=off")
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .without_time()
        .try_init();
}
