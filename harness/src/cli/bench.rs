//! `hsm-harness bench`: sign throughput and p50/p99 latency on each path, with each
//! path's ratio to the raw `cryptoki` floor measured in the same run (see
//! [`crate::bench`]). Prints a table as rows finish; `--json FILE` writes the report.
//!
//! Exit 0 when every selected row was measured or skipped with a reason, 1 when a row
//! is an error, 2 for bad input. Missed speed targets are reported, not failed.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::{bad_input, init_logging, EXIT_FAILED, EXIT_OK};
use crate::bench::measure::Budget;
use crate::bench::{self, table, BenchAlg, PathName, Settings};

#[derive(Args)]
pub struct BenchArgs {
    /// Seconds per measurement (each path, algorithm and clients count), after a short
    /// warm-up.
    #[arg(long, value_name = "SECS", conflicts_with = "signs")]
    duration: Option<f64>,
    /// Signatures per measurement, all clients together, instead of a duration.
    #[arg(long, value_name = "N")]
    signs: Option<u64>,
    /// Concurrent clients, comma-separated: each count is a measurement of its own.
    #[arg(
        long,
        value_name = "N,...",
        value_delimiter = ',',
        default_value = "1,4"
    )]
    clients: Vec<usize>,
    /// A path to measure (repeatable); default: all. The raw-cryptoki floor is always
    /// measured.
    #[arg(long = "path", value_enum, value_name = "NAME")]
    paths: Vec<PathName>,
    /// An algorithm to measure (repeatable); default: both.
    #[arg(long = "alg", value_enum, value_name = "ALG")]
    algs: Vec<BenchAlg>,
    /// Also write the report as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

pub fn main(args: BenchArgs) -> i32 {
    init_logging();
    let budget = match (args.duration, args.signs) {
        (_, Some(0)) => return bad_input("--signs must be at least 1"),
        (_, Some(n)) => Budget::Signs(n),
        (Some(s), None) if !(s.is_finite() && s > 0.0 && s <= 3600.0) => {
            return bad_input("--duration must be above 0 and at most 3600 seconds")
        }
        (Some(s), None) => Budget::Time(Duration::from_secs_f64(s)),
        (None, None) => Budget::Time(bench::DEFAULT_DURATION),
    };
    if args.clients.iter().any(|&c| c == 0 || c > 256) {
        return bad_input("--clients: each count must be from 1 to 256");
    }
    let mut clients = args.clients;
    clients.sort_unstable();
    clients.dedup();
    let settings = Settings {
        paths: or_all(args.paths, &PathName::ALL),
        algs: {
            let mut a = or_all(args.algs, &BenchAlg::ALL);
            a.sort();
            a.dedup();
            a
        },
        clients,
        budget,
    };
    println!("{}", table::header());
    let report = match bench::run(&settings, &mut |row| {
        println!("{}", table::line(row));
        let _ = std::io::stdout().flush();
    }) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e:#}");
            return EXIT_FAILED;
        }
    };
    print!("{}", table::footer(&report));
    if let Some(path) = &args.json {
        let text = match serde_json::to_string_pretty(&report) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: cannot write the report as JSON: {e}");
                return EXIT_FAILED;
            }
        };
        if let Err(e) = std::fs::write(path, format!("{text}\n")) {
            eprintln!("error: cannot write {}: {e}", path.display());
            return EXIT_FAILED;
        }
    }
    if report.has_errors() {
        EXIT_FAILED
    } else {
        EXIT_OK
    }
}

/// What was given, or everything when nothing was.
fn or_all<T: Clone>(given: Vec<T>, all: &[T]) -> Vec<T> {
    if given.is_empty() {
        all.to_vec()
    } else {
        given
    }
}
