//! The console form of a bench run: one line per row, then the targets.

use super::{Outcome, Report, Row};

/// The header line, with the columns [`line`] fills.
pub fn header() -> String {
    format!(
        "{:<13} {:<11} {:>7} {:>10} {:>8} {:>8} {:>7}",
        "path", "algorithm", "clients", "signs/s", "p50 ms", "p99 ms", "x raw"
    )
}

/// One row: numbers when measured, else why not.
pub fn line(row: &Row) -> String {
    let head = format!(
        "{:<13} {:<11} {:>7}",
        row.path.name(),
        row.algorithm.name(),
        row.clients
    );
    match &row.outcome {
        Outcome::Measured {
            signs_per_sec,
            p50_ms,
            p99_ms,
            ratio_to_raw,
            ..
        } => format!(
            "{head} {signs_per_sec:>10.1} {p50_ms:>8.3} {p99_ms:>8.3} {:>7}",
            ratio_to_raw.map_or_else(|| "-".to_string(), |r| format!("{r:.2}x"))
        ),
        Outcome::Skipped { reason } => format!("{head}   skipped: {reason}"),
        Outcome::Error { message } => format!("{head}   ERROR: {message}"),
    }
}

/// What follows the rows: the machine and the targets, each with whether it holds.
pub fn footer(report: &Report) -> String {
    let mut out = format!(
        "\n{} cores, {} {}; x raw = signs/s / raw-cryptoki's signs/s (same algorithm and clients)\n",
        report.machine.cores, report.machine.os, report.machine.arch
    );
    if !report.targets.is_empty() {
        out.push_str("targets:\n");
        for t in &report.targets {
            out.push_str(&format!(
                "  {} {} {:.2}: {:.2}  {}\n",
                t.what,
                t.rule,
                t.bound,
                t.measured,
                if t.holds { "holds" } else { "MISSED" }
            ));
        }
    }
    out
}
