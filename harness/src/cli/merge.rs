//! `hsm-harness merge-junit OUT.xml SHARD.json...`: one JUnit report (and with
//! `--json FILE` one JSON twin) from the results of the shards of a run
//! (`run --partition K/N --json FILE`), equal to the unpartitioned run's report in its
//! counts, testsuites and testcases.
//!
//! The inputs are the shards' JSON twins, not their JUnit files: the twin holds every
//! field unchanged (JUnit folds and strips text) and says which shard it is, so the
//! merge can check that the shards are disjoint and complete ([`crate::report::merge`]).
//!
//! Exit 2 on bad input (a file that is not a JSON twin, a cell in two inputs, shards
//! missing or of different partitionings, an output path that is an input); 1 when a
//! report cannot be written or a merged cell failed or errored (as `run` exits, so the
//! merge job can gate the pipeline); 0 otherwise.

use std::path::{Path, PathBuf};

use clap::Args;

use super::{bad_input, EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK};
use crate::report::merge::{merge, Input};
use crate::report::outcome::Tally;
use crate::report::{console, json, junit};

#[derive(Args)]
pub struct MergeArgs {
    /// Where to write the merged JUnit XML report.
    #[arg(value_name = "OUT.xml")]
    out: PathBuf,
    /// The shards' JSON twins (`run --partition K/N --json FILE`); whole runs of
    /// other cells (another backend, say) may be merged in too.
    #[arg(value_name = "SHARD.json", required = true)]
    inputs: Vec<PathBuf>,
    /// Also write the merged results as a JSON twin here (for `diff`).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Also write each cell's properties as `<properties>` inside its `<testcase>` (as
    /// GitLab and Jenkins' JUnit plugin show them). Off by default: the junit-10 schema
    /// that strict consumers validate with (Jenkins xUnit, pytest's xunit2) refuses them
    /// there, so by default they are in the testcase's `<system-out>`.
    #[arg(long)]
    junit_case_properties: bool,
}

/// Whether `a` and `b` name the same existing file.
fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

pub fn main(args: MergeArgs) -> i32 {
    if args.out.extension().is_some_and(|e| e == "json") {
        return bad_input(format!(
            "{} would be the JUnit report: the output comes first \
             (merge-junit OUT.xml SHARD.json... [--json OUT.json])",
            args.out.display()
        ));
    }
    for out in std::iter::once(&args.out).chain(&args.json) {
        if let Some(input) = args.inputs.iter().find(|i| same_file(out, i)) {
            return bad_input(format!(
                "the output {} is the input {}: it would be overwritten",
                out.display(),
                input.display()
            ));
        }
    }
    let mut inputs = Vec::new();
    let mut unreadable = false;
    for path in &args.inputs {
        match json::read(path) {
            Ok(run) => inputs.push(Input {
                path: path.clone(),
                run,
            }),
            Err(e) => {
                eprintln!("error: {e}");
                unreadable = true;
            }
        }
    }
    if unreadable {
        return EXIT_BAD_INPUT;
    }
    let count = inputs.len();
    let merged = match merge(inputs) {
        Ok(run) => run,
        Err(e) => return bad_input(e),
    };
    println!(
        "hsm-harness: merged {} cells from {count} files",
        merged.cells.len()
    );
    print!("{}", console::summary_table(&merged));
    if let Err(e) = junit::write_junit(
        &merged,
        &args.out,
        junit::JunitStyle {
            case_properties: args.junit_case_properties,
        },
    ) {
        eprintln!("error: {e:#}");
        return EXIT_FAILED;
    }
    println!("JUnit report: {}", args.out.display());
    if let Some(path) = &args.json {
        if let Err(e) = json::write(&merged, path) {
            eprintln!("error: {e:#}");
            return EXIT_FAILED;
        }
        println!("JSON report: {}", path.display());
    }
    if Tally::of(&merged.cells).is_success() {
        EXIT_OK
    } else {
        EXIT_FAILED
    }
}
