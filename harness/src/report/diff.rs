//! What changed between two runs (say, two releases): the cells whose status changed,
//! grouped by what the change means for a release gate.
//!
//! Cells are matched by (suite, backend, case) and compared by status alone (passed,
//! failed, errored, skipped): durations, properties, logs, messages and skip reasons
//! change from run to run without anything having changed. The groups, in the order
//! they are shown:
//!
//! 1. regressions: failed or errored now, passed or skipped before; also a cell only in
//!    the new run that fails or errors;
//! 2. newly skipped: skipped now, not before (it may hide a regression, but is not one);
//! 3. fixed: passed now, failed or errored before;
//! 4. other changes: failed ↔ errored (failing both times), skipped → passed;
//! 5. added: only in the new run, and not failing;
//! 6. removed: only in the old run.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::report::junit::clean;
use crate::report::outcome::{CellResult, RunResult, Status};
use crate::run::plan::cell_name;

/// One cell whose status changed, or that only one run has.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Change {
    /// `suite.backend/case`.
    pub cell: String,
    pub suite: String,
    pub backend: String,
    pub case: String,
    /// The old status (`passed`, `failed`, `errored`, `skipped`); none for an added cell.
    pub old: Option<&'static str>,
    /// The new status; none for a removed cell.
    pub new: Option<&'static str>,
    /// The failure or error message, or the skip reason, of the new status (of the old
    /// one for a removed cell).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The changes between two runs, each group sorted by suite, backend and case.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Diff {
    pub regressions: Vec<Change>,
    pub newly_skipped: Vec<Change>,
    pub fixed: Vec<Change>,
    pub other_changes: Vec<Change>,
    pub added: Vec<Change>,
    pub removed: Vec<Change>,
    /// Cells in both runs with the same status.
    pub unchanged: usize,
}

/// The status's word in the JSON twin.
fn word(status: &Status) -> &'static str {
    match status {
        Status::Passed => "passed",
        Status::Failed { .. } => "failed",
        Status::Errored { .. } => "errored",
        Status::Skipped { .. } => "skipped",
    }
}

fn failing(status: &Status) -> bool {
    matches!(status, Status::Failed { .. } | Status::Errored { .. })
}

fn message(status: &Status) -> Option<String> {
    match status {
        Status::Passed => None,
        Status::Failed { message } | Status::Errored { message } => Some(message.clone()),
        Status::Skipped { reason } => Some(reason.clone()),
    }
}

impl Diff {
    /// Compares `old` with `new`. Each run must list a cell at most once (the JSON
    /// reader makes sure); should one not, its last entry counts.
    pub fn between(old: &RunResult, new: &RunResult) -> Diff {
        let index = |run: &'_ RunResult| -> BTreeMap<(String, String, String), Status> {
            run.cells
                .iter()
                .map(|c: &CellResult| {
                    let (s, b, k) = c.key();
                    ((s.to_owned(), b.to_owned(), k.to_owned()), c.status.clone())
                })
                .collect()
        };
        let (old, mut new) = (index(old), index(new));
        let mut diff = Diff::default();
        let change = |(suite, backend, case): &(String, String, String),
                      before: Option<&Status>,
                      after: Option<&Status>| Change {
            cell: cell_name(suite, backend, case),
            suite: suite.clone(),
            backend: backend.clone(),
            case: case.clone(),
            old: before.map(word),
            new: after.map(word),
            message: after.or(before).and_then(message),
        };
        for (key, before) in &old {
            let Some(after) = new.remove(key) else {
                diff.removed.push(change(key, Some(before), None));
                continue;
            };
            let group = if word(before) == word(&after) {
                diff.unchanged += 1;
                continue;
            } else if failing(&after) && !failing(before) {
                &mut diff.regressions
            } else if matches!(after, Status::Skipped { .. }) {
                &mut diff.newly_skipped
            } else if after == Status::Passed && failing(before) {
                &mut diff.fixed
            } else {
                &mut diff.other_changes
            };
            group.push(change(key, Some(before), Some(&after)));
        }
        for (key, after) in &new {
            let group = if failing(after) {
                &mut diff.regressions
            } else {
                &mut diff.added
            };
            group.push(change(key, None, Some(after)));
        }
        // Both loops ran in key order, but regressions came from both: re-sort them.
        diff.regressions
            .sort_by(|a, b| (&a.suite, &a.backend, &a.case).cmp(&(&b.suite, &b.backend, &b.case)));
        diff
    }

    /// Whether a cell got worse: what fails a release gate.
    pub fn has_regressions(&self) -> bool {
        !self.regressions.is_empty()
    }

    /// The diff for people: each non-empty group with its cells (the new status, the
    /// cell, the old status, and the message or reason indented below), then a count
    /// line. Messages are cleaned of terminal escapes: they come from files.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let groups = [
            (
                "Regressions (failing now; passed, skipped or absent before)",
                &self.regressions,
            ),
            ("Newly skipped", &self.newly_skipped),
            ("Fixed (passing now; failed or errored before)", &self.fixed),
            ("Other status changes", &self.other_changes),
            ("Added (only in the new results)", &self.added),
            ("Removed (only in the old results)", &self.removed),
        ];
        for (title, changes) in groups {
            if changes.is_empty() {
                continue;
            }
            let _ = writeln!(out, "{title}: {}", changes.len());
            for c in changes {
                let now = c.new.map_or("GONE", label);
                let was = c
                    .old
                    .map_or("new cell".to_string(), |o| format!("was {}", label(o)));
                let _ = writeln!(out, "  {now:<5} {}  ({was})", clean(&c.cell));
                if let Some(message) = &c.message {
                    for line in clean(message).lines() {
                        let _ = writeln!(out, "        {line}");
                    }
                }
            }
            out.push('\n');
        }
        let plural =
            |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        let _ = writeln!(
            out,
            "{}, {} newly skipped, {} fixed, {}, {} added, {} removed; {} unchanged",
            plural(self.regressions.len(), "regression", "regressions"),
            self.newly_skipped.len(),
            self.fixed.len(),
            plural(self.other_changes.len(), "other change", "other changes"),
            self.added.len(),
            self.removed.len(),
            plural(self.unchanged, "cell", "cells"),
        );
        out
    }
}

/// The console's word for a status word (`passed` → `PASS`).
fn label(word: &str) -> &'static str {
    match word {
        "passed" => "PASS",
        "failed" => "FAIL",
        "errored" => "ERROR",
        _ => "SKIP",
    }
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;
    use crate::report::json::tests::cell;

    fn passed() -> Status {
        Status::Passed
    }
    fn failed() -> Status {
        Status::Failed {
            message: "step 2: signature does not verify\nsecond line".into(),
        }
    }
    fn errored() -> Status {
        Status::Errored {
            message: "killed by signal 6 (SIGABRT)".into(),
        }
    }
    fn skipped() -> Status {
        Status::Skipped {
            reason: "backend lacks capability ed25519".into(),
        }
    }

    fn run(cells: &[(&str, Status)]) -> RunResult {
        RunResult {
            cells: cells
                .iter()
                .map(|(case, status)| cell("suite", "backend", case, status.clone()))
                .collect(),
            partition: None,
        }
    }

    /// Which group one cell's change lands in: `old`/`new` none = absent.
    fn group_of(old: Option<Status>, new: Option<Status>) -> &'static str {
        let list = |s: Option<Status>| -> RunResult {
            run(&s.map(|s| vec![("c", s)]).unwrap_or_default())
        };
        let d = Diff::between(&list(old), &list(new));
        let groups = [
            ("regression", d.regressions.len()),
            ("newly skipped", d.newly_skipped.len()),
            ("fixed", d.fixed.len()),
            ("other", d.other_changes.len()),
            ("added", d.added.len()),
            ("removed", d.removed.len()),
            ("unchanged", d.unchanged),
        ];
        let hit: Vec<&str> = groups
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(g, _)| *g)
            .collect();
        assert_eq!(hit.len(), 1, "{hit:?}");
        hit[0]
    }

    #[rstest]
    #[case(passed(), failed(), "regression")]
    #[case(passed(), errored(), "regression")]
    #[case(skipped(), failed(), "regression")]
    #[case(skipped(), errored(), "regression")]
    #[case(passed(), skipped(), "newly skipped")]
    #[case(failed(), skipped(), "newly skipped")]
    #[case(errored(), skipped(), "newly skipped")]
    #[case(failed(), passed(), "fixed")]
    #[case(errored(), passed(), "fixed")]
    #[case(failed(), errored(), "other")]
    #[case(errored(), failed(), "other")]
    #[case(skipped(), passed(), "other")]
    #[case(passed(), passed(), "unchanged")]
    #[case(failed(), failed(), "unchanged")]
    #[case(skipped(), skipped(), "unchanged")]
    fn a_status_change_lands_in_its_group(
        #[case] old: Status,
        #[case] new: Status,
        #[case] group: &str,
    ) {
        assert_eq!(group_of(Some(old), Some(new)), group);
    }

    #[rstest]
    #[case(failed(), "regression")]
    #[case(errored(), "regression")]
    #[case(passed(), "added")]
    #[case(skipped(), "added")]
    fn a_new_cell_that_fails_is_a_regression(#[case] new: Status, #[case] group: &str) {
        assert_eq!(group_of(None, Some(new)), group);
    }

    #[test]
    fn a_gone_cell_is_removed() {
        assert_eq!(group_of(Some(failed()), None), "removed");
    }

    #[test]
    fn only_the_status_counts() {
        let old = run(&[("a", failed())]);
        let mut new = run(&[(
            "a",
            Status::Failed {
                message: "another message".into(),
            },
        )]);
        new.cells[0].duration = std::time::Duration::from_secs(99);
        new.cells[0].properties = vec![("port".into(), "41234".into())];
        new.cells[0].log = "a different log".into();
        let d = Diff::between(&old, &new);
        assert_eq!(d.unchanged, 1);
        assert!(!d.has_regressions());
    }

    #[test]
    fn the_text_lists_regressions_first_with_their_message() {
        let old = run(&[
            ("fixed one", failed()),
            ("now skipped", passed()),
            ("broken", passed()),
            ("gone", passed()),
            ("same", passed()),
        ]);
        let new = run(&[
            ("fixed one", passed()),
            ("now skipped", skipped()),
            ("broken", failed()),
            ("brand new", errored()),
            ("same", passed()),
            ("extra", passed()),
        ]);
        let d = Diff::between(&old, &new);
        assert!(d.has_regressions());
        let names = |cs: &[Change]| cs.iter().map(|c| c.case.clone()).collect::<Vec<_>>();
        assert_eq!(names(&d.regressions), ["brand new", "broken"]);
        let text = d.text();
        let at = |needle: &str| {
            text.find(needle)
                .unwrap_or_else(|| panic!("no {needle:?} in\n{text}"))
        };
        assert!(at("Regressions") < at("Newly skipped"));
        assert!(at("Newly skipped") < at("Fixed"));
        assert!(at("Fixed") < at("Added"));
        assert!(at("Added") < at("Removed"));
        assert!(!text.contains("Other status changes"), "{text}");
        assert!(text.contains(
            "  FAIL  suite.backend/broken  (was PASS)\n        step 2: signature does not verify\n        second line\n"
        ), "{text}");
        assert!(
            text.contains("  ERROR suite.backend/brand new  (new cell)\n"),
            "{text}"
        );
        assert!(text.contains("  SKIP  suite.backend/now skipped  (was PASS)\n        backend lacks capability ed25519\n"), "{text}");
        assert!(
            text.contains("  PASS  suite.backend/fixed one  (was FAIL)\n"),
            "{text}"
        );
        assert!(
            text.contains("  GONE  suite.backend/gone  (was PASS)\n"),
            "{text}"
        );
        assert!(text.ends_with(
            "2 regressions, 1 newly skipped, 1 fixed, 0 other changes, 1 added, 1 removed; 1 cell unchanged\n"
        ), "{text}");
    }

    #[test]
    fn the_text_is_cleaned_of_terminal_escapes() {
        let old = run(&[("a\x1b[2J", passed())]);
        let new = run(&[(
            "a\x1b[2J",
            Status::Failed {
                message: "\x1b]0;owned\x07boom".into(),
            },
        )]);
        let text = Diff::between(&old, &new).text();
        assert!(!text.contains('\x1b'), "{text:?}");
        assert!(
            text.contains("suite.backend/a  (was PASS)\n        boom\n"),
            "{text}"
        );
    }

    #[test]
    fn nothing_changed_says_so() {
        let same = run(&[("a", passed()), ("b", skipped())]);
        let d = Diff::between(&same, &same);
        assert!(!d.has_regressions());
        assert_eq!(
            d.text(),
            "0 regressions, 0 newly skipped, 0 fixed, 0 other changes, 0 added, 0 removed; 2 cells unchanged\n"
        );
    }

    #[test]
    fn the_json_names_each_change() {
        let d = Diff::between(&run(&[("a", passed())]), &run(&[("a", failed())]));
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(
            v["regressions"][0],
            serde_json::json!({
                "cell": "suite.backend/a", "suite": "suite", "backend": "backend", "case": "a",
                "old": "passed", "new": "failed",
                "message": "step 2: signature does not verify\nsecond line"
            })
        );
        assert_eq!(v["unchanged"], 0);
        assert_eq!(v["removed"], serde_json::json!([]));
    }
}
