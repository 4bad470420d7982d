//! `hsm-harness run`: the matrix of suite cases x backends, each cell in its own
//! process, with a live progress line, a summary table and the JUnit and JSON reports.
//! Exit 1 when a cell failed or errored, or a report could not be written. A shard
//! (`--partition K/N`) that holds none of the selected cells is a success with a note
//! and empty reports: small runs spread over many jobs have such shards.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::select::{load, SelectArgs};
use super::{bad_input, EXIT_FAILED, EXIT_OK};
use crate::model::backend::Placement;
use crate::report::outcome::{RunResult, Tally};
use crate::report::{console, json, junit};
use crate::run::interrupt;
use crate::run::runner::RunOptions;
use crate::steps::SignerCommand;

#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    select: SelectArgs,
    /// Cells run in parallel (default: twice the number of cores for local backends,
    /// whose cells mostly wait; the number of cores under `--provider container`).
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
    /// Also write each cell's properties as `<properties>` inside its `<testcase>` (as
    /// GitLab and Jenkins' JUnit plugin show them). Off by default: the junit-10 schema
    /// that strict consumers validate with (Jenkins xUnit, pytest's xunit2) refuses them
    /// there, so by default they are in the testcase's `<system-out>`.
    #[arg(long)]
    junit_case_properties: bool,
    /// Drive this signer implementation instead of the built-in router: a command line
    /// (as a shell reads it) that speaks the signer protocol (docs/signer-protocol.md)
    /// on its standard input and output. Each cell starts it with `--config FILE
    /// --state DIR` appended, e.g. `--signer-cmd 'target/release/hsm-harness signer
    /// serve'`.
    #[arg(long, value_name = "COMMAND")]
    signer_cmd: Option<String>,
    /// Seconds one signer-protocol request may take before the signer process counts as
    /// hung (an error of the cell, quoting the request); below `--timeout`.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 45.0,
        requires = "signer_cmd"
    )]
    signer_timeout: f64,
}

pub fn main(args: RunArgs) -> i32 {
    let plan = match load(&args.select) {
        Ok(p) => p,
        Err(code) => return code,
    };
    if plan.selected == 0 {
        return bad_input("the selectors match no cells (see `hsm-harness list`)");
    }
    if !(args.timeout > 0.0 && args.timeout.is_finite()) {
        return bad_input("--timeout must be a positive number of seconds");
    }
    let Ok(timeout) = Duration::try_from_secs_f64(args.timeout) else {
        return bad_input("--timeout is too long");
    };
    let signer_timeout = match Duration::try_from_secs_f64(args.signer_timeout) {
        Ok(t) if args.signer_timeout > 0.0 && args.signer_timeout < args.timeout => t,
        _ if args.signer_cmd.is_none() => timeout,
        _ => {
            return bad_input(format!(
                "--signer-timeout must be a positive number of seconds below --timeout ({} s): \
                 a hung signer must be caught before its cell is killed, or the evidence is lost",
                args.timeout
            ))
        }
    };
    if args
        .signer_cmd
        .as_deref()
        .is_some_and(|c| c.trim().is_empty())
    {
        return bad_input("--signer-cmd needs a command");
    }
    let program = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => return bad_input(format!("cannot find this program's path: {e}")),
    };
    let jobs = args
        .jobs
        .unwrap_or_else(|| crate::run::runner::default_jobs(args.select.provider));
    if args.select.provider == Placement::Container {
        if let Err(e) = crate::backends::container::check_engine() {
            eprintln!("error: --provider container: {e:#}");
            return EXIT_FAILED;
        }
    }
    let options = RunOptions {
        jobs,
        timeout,
        program,
        placement: args.select.provider,
        trace_pkcs11: false,
        signer_cmd: args.signer_cmd.clone().map(|command| SignerCommand {
            command,
            timeout: signer_timeout,
        }),
    };
    let used = |f: fn(&crate::run::runner::PlannedCell) -> usize| {
        let mut v: Vec<usize> = plan.cells.iter().map(f).collect();
        v.sort_unstable();
        v.dedup();
        v.len()
    };
    let shard = plan
        .partition
        .map(|p| format!(", shard {p} of {} selected", plan.selected))
        .unwrap_or_default();
    println!(
        "hsm-harness: {} cells ({} suites x {} backends{shard}), {} at a time",
        plan.cells.len(),
        used(|c| c.suite),
        used(|c| c.backend),
        jobs.max(1)
    );
    let result = if plan.cells.is_empty() {
        // Only a shard can be empty here: the selectors chose cells, none hashed to it.
        println!("note: this shard holds none of the selected cells; nothing to run");
        RunResult {
            cells: Vec::new(),
            partition: plan.partition,
        }
    } else {
        interrupt::install();
        match crate::run::runner::run(&plan, &options, {
            let mut progress = crate::report::progress::Progress::stdout();
            move |done, total, cell| progress.cell_done(done, total, cell)
        }) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {e:#}");
                return EXIT_FAILED;
            }
        }
    };
    println!();
    print!("{}", console::summary_table(&result));
    if let Some(cmd) = &args.signer_cmd {
        println!("{}", console::signer_line(&result, cmd));
    }
    if let Err(e) = junit::write_junit(
        &result,
        &args.junit,
        junit::JunitStyle {
            case_properties: args.junit_case_properties,
        },
    ) {
        eprintln!("error: writing {}: {e:#}", args.junit.display());
        return EXIT_FAILED;
    }
    println!("JUnit report: {}", args.junit.display());
    if let Some(json) = &args.json {
        if let Err(e) = json::write(&result, json) {
            eprintln!("error: writing {}: {e:#}", json.display());
            return EXIT_FAILED;
        }
        println!("JSON report: {}", json.display());
    }
    if let Some(sig) = interrupt::received() {
        eprintln!(
            "hsm-harness: interrupted by {}; unfinished cells are errors in the report",
            crate::run::runner::signal_name(sig)
        );
        return interrupt::exit_code(sig);
    }
    if Tally::of(&result.cells).is_success() {
        EXIT_OK
    } else {
        EXIT_FAILED
    }
}
