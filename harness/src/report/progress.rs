//! The live progress of a run: one line per finished cell, as always, and on a
//! terminal a status bar under them (cells done of all, failures so far, elapsed time
//! and an estimate of what is left) that is redrawn in place. When standard output is
//! not a terminal (CI logs, pipes) only the plain lines are written, so logs stay
//! greppable and free of control characters.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use crate::report::console;
use crate::report::outcome::{CellResult, Status};

/// What a run has printed so far.
pub struct Progress {
    started: Instant,
    terminal: bool,
    failures: usize,
}

impl Progress {
    /// A progress display on standard output; the bar only if it is a terminal.
    pub fn stdout() -> Progress {
        Progress {
            started: Instant::now(),
            terminal: std::io::stdout().is_terminal(),
            failures: 0,
        }
    }

    /// Cell number `done` of `total` finished.
    pub fn cell_done(&mut self, done: usize, total: usize, cell: &CellResult) {
        if matches!(cell.status, Status::Failed { .. } | Status::Errored { .. }) {
            self.failures += 1;
        }
        let line = console::progress_line(done, total, cell);
        let mut out = std::io::stdout().lock();
        if self.terminal {
            // Clears the bar, writes the line where it was, draws the bar again below.
            let bar = bar(done, total, self.failures, self.started.elapsed());
            let _ = write!(out, "\r\x1b[2K{line}\n{bar}");
            if done == total {
                let _ = write!(out, "\r\x1b[2K");
            }
        } else {
            let _ = writeln!(out, "{line}");
        }
        let _ = out.flush();
    }
}

/// The status bar: `[=====>    ] 12/40 cells, 1 failed, 0:35 elapsed, about 1:20 left`.
/// The estimate assumes the cells left take as long as the ones done, on average.
pub fn bar(done: usize, total: usize, failures: usize, elapsed: Duration) -> String {
    const WIDTH: usize = 24;
    let total = total.max(1);
    let done = done.min(total);
    let filled = WIDTH * done / total;
    let mut gauge = "=".repeat(filled);
    if filled < WIDTH {
        gauge.push('>');
        gauge.push_str(&" ".repeat(WIDTH - filled - 1));
    }
    let left = if done == 0 {
        "estimating".to_string()
    } else {
        let per_cell = elapsed.as_secs_f64() / done as f64;
        let secs = (per_cell * (total - done) as f64).round() as u64;
        format!("about {} left", clock(Duration::from_secs(secs)))
    };
    format!(
        "[{gauge}] {done}/{total} cells, {failures} failed, {} elapsed, {left}",
        clock(elapsed)
    )
}

/// `m:ss` (or `h:mm:ss`).
fn clock(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s % 3600 / 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case(
        0,
        4,
        0,
        0,
        "[>                       ] 0/4 cells, 0 failed, 0:00 elapsed, estimating"
    )]
    #[case(
        1,
        4,
        1,
        10,
        "[======>                 ] 1/4 cells, 1 failed, 0:10 elapsed, about 0:30 left"
    )]
    #[case(
        4,
        4,
        0,
        125,
        "[========================] 4/4 cells, 0 failed, 2:05 elapsed, about 0:00 left"
    )]
    #[case(
        2,
        3,
        0,
        7200,
        "[================>       ] 2/3 cells, 0 failed, 2:00:00 elapsed, about 1:00:00 left"
    )]
    fn the_bar_says_how_far_and_how_long(
        #[case] done: usize,
        #[case] total: usize,
        #[case] failures: usize,
        #[case] secs: u64,
        #[case] want: &str,
    ) {
        assert_eq!(bar(done, total, failures, Duration::from_secs(secs)), want);
    }

    #[test]
    fn a_run_of_nothing_does_not_divide_by_zero() {
        assert!(bar(0, 0, 0, Duration::ZERO).contains("0/1 cells"));
    }
}
