//! What the harness prints while and after it runs: plain text, no colours.

use std::fmt::Write as _;

use crate::report::outcome::{CellResult, RunResult, Status, Tally};

/// The longest message excerpt a progress line shows, in characters.
const EXCERPT_CHARS: usize = 120;

/// One line for a finished cell, e.g.
/// `[ 3/12] FAIL  baseline-signing.softhsm  rsa2048 sign and verify  (0.41s) — step 2: ...`.
///
/// For a cell that did not pass, the first line of its message (or skip reason) follows
/// ` — `, cut to about 120 characters.
pub fn progress_line(done: usize, total: usize, cell: &CellResult) -> String {
    let width = total.to_string().len();
    let mut line = format!(
        "[{done:>width$}/{total}] {:<5} {}.{}  {}  ({:.2}s)",
        cell.status.label(),
        cell.suite,
        cell.backend,
        cell.case,
        cell.duration.as_secs_f64(),
    );
    if let Some(message) = status_message(&cell.status) {
        let excerpt = excerpt(message, EXCERPT_CHARS);
        if !excerpt.is_empty() {
            line.push_str(" — ");
            line.push_str(&excerpt);
        }
    }
    line
}

/// The summary's line naming the signer implementation a `--signer-cmd` run drove, as
/// its cells' `hello` named it (several if they differed, none if no cell got that far).
pub fn signer_line(run: &RunResult, command: &str) -> String {
    let mut seen: Vec<String> = Vec::new();
    for cell in &run.cells {
        let get = |k: &str| {
            cell.properties
                .iter()
                .find(|(pk, _)| pk == k)
                .map(|(_, v)| v.clone())
        };
        if let Some(name) = get(crate::run::cell::SIGNER_IMPLEMENTATION) {
            let version = get(crate::run::cell::SIGNER_VERSION).unwrap_or_default();
            // The signer's own words: control characters would reach the terminal.
            let both: String = format!("{name} {version}")
                .chars()
                .map(|c| if c.is_control() { '?' } else { c })
                .take(120)
                .collect();
            if !seen.contains(&both) {
                seen.push(both);
            }
        }
    }
    if seen.is_empty() {
        format!("signer: '{command}' (no cell got as far as its hello)")
    } else {
        format!("signer: {} ('{command}')", seen.join(", "))
    }
}

/// The end-of-run summary: a table of counts per `suite.backend` with a totals row,
/// then each failed or errored cell with its message.
pub fn summary_table(run: &RunResult) -> String {
    // Rows in first-seen order.
    let mut rows: Vec<(String, Tally)> = Vec::new();
    for cell in &run.cells {
        let name = format!("{}.{}", cell.suite, cell.backend);
        let i = match rows.iter().position(|(n, _)| *n == name) {
            Some(i) => i,
            None => {
                rows.push((name, Tally::default()));
                rows.len() - 1
            }
        };
        let tally = &mut rows[i].1;
        match cell.status {
            Status::Passed => tally.passed += 1,
            Status::Failed { .. } => tally.failed += 1,
            Status::Errored { .. } => tally.errored += 1,
            Status::Skipped { .. } => tally.skipped += 1,
        }
    }
    let totals = Tally::of(&run.cells);

    const HEADERS: [&str; 5] = ["pass", "fail", "error", "skip", "total"];
    let name_width = rows
        .iter()
        .map(|(n, _)| n.chars().count())
        .chain(["suite.backend".len(), "total".len()])
        .max()
        .unwrap_or(0);
    let num_width = HEADERS
        .iter()
        .map(|h| h.len())
        .chain([totals.total().to_string().len()])
        .max()
        .unwrap_or(0);

    let mut out = String::new();
    let row = |out: &mut String, name: &str, cols: [String; 5]| {
        let _ = write!(out, "{name:<name_width$}");
        for col in cols {
            let _ = write!(out, "  {col:>num_width$}");
        }
        out.push('\n');
    };
    let counts =
        |t: &Tally| [t.passed, t.failed, t.errored, t.skipped, t.total()].map(|n| n.to_string());
    row(&mut out, "suite.backend", HEADERS.map(String::from));
    let rule_width = name_width + HEADERS.len() * (num_width + 2);
    let rule = "-".repeat(rule_width);
    out.push_str(&rule);
    out.push('\n');
    if !rows.is_empty() {
        for (name, tally) in &rows {
            row(&mut out, name, counts(tally));
        }
        out.push_str(&rule);
        out.push('\n');
    }
    row(&mut out, "total", counts(&totals));

    // Skips grouped by reason, most frequent first: a backend that could not start
    // shows as one line with all its cells, not as a quiet column of numbers.
    let mut skips: Vec<(&str, usize)> = Vec::new();
    for cell in &run.cells {
        if let Status::Skipped { reason } = &cell.status {
            match skips.iter_mut().find(|(r, _)| *r == reason.as_str()) {
                Some((_, n)) => *n += 1,
                None => skips.push((reason, 1)),
            }
        }
    }
    if !skips.is_empty() {
        skips.sort_by_key(|s| std::cmp::Reverse(s.1));
        out.push_str("\nSkipped cells by reason:\n");
        for (reason, n) in skips {
            let _ = writeln!(out, "  {n:>5}  {}", excerpt(reason, 160));
        }
    }

    let problems: Vec<_> = run
        .cells
        .iter()
        .filter(|c| matches!(c.status, Status::Failed { .. } | Status::Errored { .. }))
        .collect();
    if !problems.is_empty() {
        out.push_str("\nFailed and errored cells:\n");
        for cell in problems {
            let _ = writeln!(
                out,
                "  {:<5} {}.{}  {}",
                cell.status.label(),
                cell.suite,
                cell.backend,
                cell.case
            );
            let message = status_message(&cell.status).unwrap_or_default();
            for line in message.lines().filter(|l| !l.trim().is_empty()) {
                let _ = writeln!(out, "        {}", printable(line.trim_end()));
            }
        }
    }
    out
}

/// The message or reason of a status that is not a pass.
fn status_message(status: &Status) -> Option<&str> {
    match status {
        Status::Passed => None,
        Status::Failed { message } | Status::Errored { message } => Some(message),
        Status::Skipped { reason } => Some(reason),
    }
}

/// The first non-blank line of `message`, cut to `max` characters (with "…" when cut).
fn excerpt(message: &str, max: usize) -> String {
    let line = message
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    let line = printable(line);
    if line.chars().count() <= max {
        line
    } else {
        let mut cut: String = line.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

/// `text` without terminal escapes and control characters (tabs become spaces), so one
/// line stays one line.
fn printable(text: &str) -> String {
    crate::report::junit::clean(text)
        .chars()
        .filter_map(|c| match c {
            '\t' => Some(' '),
            c if c.is_control() => None,
            c => Some(c),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn cell(suite: &str, backend: &str, case: &str, status: Status) -> CellResult {
        CellResult {
            suite: suite.into(),
            backend: backend.into(),
            case: case.into(),
            status,
            duration: Duration::from_millis(410),
            properties: vec![],
            log: String::new(),
        }
    }

    #[test]
    fn progress_line_for_a_pass() {
        let c = cell(
            "baseline-signing",
            "softhsm",
            "rsa2048 sign and verify",
            Status::Passed,
        );
        assert_eq!(
            progress_line(3, 12, &c),
            "[ 3/12] PASS  baseline-signing.softhsm  rsa2048 sign and verify  (0.41s)"
        );
        assert_eq!(
            progress_line(3, 7, &c),
            "[3/7] PASS  baseline-signing.softhsm  rsa2048 sign and verify  (0.41s)"
        );
    }

    #[test]
    fn progress_line_shows_the_first_line_of_the_message() {
        let c = cell(
            "s",
            "b",
            "c",
            Status::Failed {
                message: "\nstep 2: \x1b[31mmismatch\x1b[0m\t!\nmore detail".into(),
            },
        );
        assert_eq!(
            progress_line(10, 100, &c),
            "[ 10/100] FAIL  s.b  c  (0.41s) — step 2: mismatch !"
        );
        let c = cell(
            "s",
            "b",
            "c",
            Status::Errored {
                message: "timeout".into(),
            },
        );
        assert_eq!(
            progress_line(1, 1, &c),
            "[1/1] ERROR s.b  c  (0.41s) — timeout"
        );
        let c = cell(
            "s",
            "b",
            "c",
            Status::Skipped {
                reason: "no ed25519".into(),
            },
        );
        assert_eq!(
            progress_line(1, 1, &c),
            "[1/1] SKIP  s.b  c  (0.41s) — no ed25519"
        );
        let c = cell(
            "s",
            "b",
            "c",
            Status::Failed {
                message: String::new(),
            },
        );
        assert_eq!(progress_line(1, 1, &c), "[1/1] FAIL  s.b  c  (0.41s)");
    }

    #[test]
    fn progress_line_truncates_long_messages() {
        let long = "é".repeat(500);
        let c = cell("s", "b", "c", Status::Failed { message: long });
        let line = progress_line(1, 1, &c);
        let (_, excerpt) = line.split_once(" — ").unwrap();
        assert_eq!(excerpt.chars().count(), EXCERPT_CHARS);
        assert!(excerpt.ends_with('…'));
        let exact = "x".repeat(EXCERPT_CHARS);
        let c = cell(
            "s",
            "b",
            "c",
            Status::Failed {
                message: exact.clone(),
            },
        );
        assert!(progress_line(1, 1, &c).ends_with(&format!(" — {exact}")));
    }

    #[test]
    fn summary_table_counts_per_suite_backend() {
        let run = RunResult {
            cells: vec![
                cell("baseline", "softhsm", "a", Status::Passed),
                cell(
                    "baseline",
                    "softhsm",
                    "b",
                    Status::Failed {
                        message: "step 1: bad\n  detail".into(),
                    },
                ),
                cell(
                    "baseline",
                    "kmip",
                    "a",
                    Status::Skipped {
                        reason: "no".into(),
                    },
                ),
                cell(
                    "baseline",
                    "kmip",
                    "b",
                    Status::Errored {
                        message: "timeout".into(),
                    },
                ),
                cell("baseline", "softhsm", "c", Status::Passed),
                cell("tls-policy-long-name", "kmip", "a", Status::Passed),
            ],
            ..RunResult::default()
        };
        let expected = "\
suite.backend               pass   fail  error   skip  total
------------------------------------------------------------
baseline.softhsm               2      1      0      0      3
baseline.kmip                  0      0      1      1      2
tls-policy-long-name.kmip      1      0      0      0      1
------------------------------------------------------------
total                          3      1      1      1      6

Skipped cells by reason:
      1  no

Failed and errored cells:
  FAIL  baseline.softhsm  b
        step 1: bad
          detail
  ERROR baseline.kmip  b
        timeout
";
        assert_eq!(summary_table(&run), expected);
    }

    #[test]
    fn skips_are_grouped_by_reason_most_frequent_first() {
        let skip = |b: &str, reason: &str| {
            cell(
                "s",
                b,
                "c",
                Status::Skipped {
                    reason: reason.into(),
                },
            )
        };
        let run = RunResult {
            cells: vec![
                skip("relay", "lacks tls12-only"),
                skip(
                    "pykmip",
                    "backend 'pykmip' cannot start here: pykmip-server not found",
                ),
                skip(
                    "pykmip",
                    "backend 'pykmip' cannot start here: pykmip-server not found",
                ),
            ],
            ..RunResult::default()
        };
        let table = summary_table(&run);
        let grouped = table.split("Skipped cells by reason:\n").nth(1).unwrap();
        assert_eq!(
            grouped,
            "      2  backend 'pykmip' cannot start here: pykmip-server not found\n      1  lacks tls12-only\n"
        );
    }

    #[test]
    fn summary_table_of_an_all_green_run_has_no_problem_list() {
        let run = RunResult {
            cells: vec![cell("s", "b", "a", Status::Passed)],
            ..RunResult::default()
        };
        let table = summary_table(&run);
        assert!(!table.contains("Failed"), "{table}");
        assert!(
            table.lines().last().unwrap().starts_with("total"),
            "{table}"
        );
    }

    #[test]
    fn summary_table_of_an_empty_run() {
        let expected = "\
suite.backend   pass   fail  error   skip  total
------------------------------------------------
total              0      0      0      0      0
";
        assert_eq!(summary_table(&RunResult::default()), expected);
    }
}
