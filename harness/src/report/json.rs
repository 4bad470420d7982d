//! The JSON twin of the JUnit report: the run's results for scripts, `diff` and
//! `merge-junit`, in a format that stays put between releases.
//!
//! ```json
//! { "schema_version": 1,
//!   "partition": "2/3",
//!   "tally": { "passed": 1, "failed": 0, "errored": 0, "skipped": 0 },
//!   "cells": [ { "suite": "...", "backend": "...", "case": "...", "status": "passed",
//!                "duration": 1.5, "properties": [["name", "value"]], "log": "..." } ] }
//! ```
//!
//! `partition` is there only in a shard's report (`run --partition`). Cells are sorted
//! by suite, backend and case, so two runs' files line up. A cell's identity is
//! (suite, backend, case) and its verdict `status` with `message` (failed, errored) or
//! `reason` (skipped); `duration`, `properties` (ports, paths, versions) and `log`
//! change from run to run and are for people, not for comparing runs.
//!
//! Version 1 is the first with `schema_version`. A file without the field, written by
//! an earlier harness, has the same `tally` and `cells` and is read as version 1 (its
//! cells may be in matrix order, which no reader relies on). A file with any other
//! version is refused: its cells may not mean what this harness thinks they mean.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Serialize;
use serde_json::Value;

use crate::report::outcome::{CellResult, RunResult, Tally};
use crate::run::partition::Partition;

/// The version of the format this harness writes and the only one it reads.
pub const SCHEMA_VERSION: u64 = 1;

/// Writes `run` as the JSON twin to `path` (atomically; parent directories are
/// created). Strings are kept as they are: JSON escapes control characters, so nothing
/// is lost.
pub fn write(run: &RunResult, path: &Path) -> anyhow::Result<()> {
    #[derive(Serialize)]
    struct Document<'a> {
        schema_version: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        partition: Option<Partition>,
        tally: Tally,
        cells: Vec<&'a CellResult>,
    }
    let document = Document {
        schema_version: SCHEMA_VERSION,
        partition: run.partition,
        tally: Tally::of(&run.cells),
        cells: run.in_report_order(),
    };
    let mut json = serde_json::to_string_pretty(&document).context("cannot serialise the run")?;
    json.push('\n');
    super::write_atomically(path, json.as_bytes())
        .with_context(|| format!("cannot write the JSON report {}", path.display()))
}

/// Why a file is not results this harness can compare or merge. Every one is bad
/// input.
#[derive(Debug)]
pub enum ReadError {
    /// The file cannot be read.
    Unreadable {
        path: PathBuf,
        error: std::io::Error,
    },
    /// It is not a JSON twin (not JSON, no `cells`, a cell of the wrong shape).
    NotResults { path: PathBuf, why: String },
    /// A JSON twin of a format version this harness does not know.
    UnknownVersion { path: PathBuf, version: u64 },
    /// The same cell twice: no run writes that, and comparing by cell cannot use it.
    DuplicateCell { path: PathBuf, cell: String },
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Unreadable { path, error } => {
                write!(f, "cannot read {}: {error}", path.display())
            }
            ReadError::NotResults { path, why } => write!(
                f,
                "{} is not a results file of `hsm-harness run --json`: {why}",
                path.display()
            ),
            ReadError::UnknownVersion { path, version } => write!(
                f,
                "{} has schema_version {version}; this hsm-harness reads version {SCHEMA_VERSION} \
                 (and files from before versions, which have none)",
                path.display()
            ),
            ReadError::DuplicateCell { path, cell } => {
                write!(f, "{} lists the cell {cell} more than once", path.display())
            }
        }
    }
}

impl std::error::Error for ReadError {}

/// Reads a JSON twin written by `run --json` (or `merge-junit --json`), checking its
/// version and that every cell has its fields and appears once.
pub fn read(path: &Path) -> Result<RunResult, ReadError> {
    let bytes = std::fs::read(path).map_err(|error| ReadError::Unreadable {
        path: path.to_path_buf(),
        error,
    })?;
    parse(&bytes).map_err(|e| e.at(path))
}

/// A [`ReadError`] before it knows its file.
enum Problem {
    NotResults(String),
    UnknownVersion(u64),
    DuplicateCell(String),
}

impl Problem {
    fn at(self, path: &Path) -> ReadError {
        let path = path.to_path_buf();
        match self {
            Problem::NotResults(why) => ReadError::NotResults { path, why },
            Problem::UnknownVersion(version) => ReadError::UnknownVersion { path, version },
            Problem::DuplicateCell(cell) => ReadError::DuplicateCell { path, cell },
        }
    }
}

fn parse(bytes: &[u8]) -> Result<RunResult, Problem> {
    let not = |why: String| Problem::NotResults(why);
    if bytes.trim_ascii_start().starts_with(b"<") {
        return Err(not(
            "it is XML (a JUnit report?); give the JSON twin `run --json FILE` writes".into(),
        ));
    }
    let value: Value = serde_json::from_slice(bytes).map_err(|e| not(format!("not JSON ({e})")))?;
    let Value::Object(mut document) = value else {
        return Err(not("not a JSON object".into()));
    };
    match document.get("schema_version") {
        None if document.get("tally").is_some_and(Value::is_object) => {}
        None => return Err(not("no schema_version and no tally".into())),
        Some(v) => match v.as_u64() {
            Some(SCHEMA_VERSION) => {}
            Some(version) => return Err(Problem::UnknownVersion(version)),
            None => return Err(not(format!("schema_version {v} is not a number"))),
        },
    }
    let partition = match document.get("partition") {
        None => None,
        Some(Value::String(p)) => Some(
            p.parse::<Partition>()
                .map_err(|e| not(format!("partition: {e}")))?,
        ),
        Some(other) => return Err(not(format!("partition {other} is not k/n text"))),
    };
    let Some(Value::Array(listed)) = document.remove("cells") else {
        return Err(not("no list of cells".into()));
    };
    let mut cells = Vec::with_capacity(listed.len());
    let mut seen = BTreeSet::new();
    for (i, cell) in listed.into_iter().enumerate() {
        let cell: CellResult =
            serde_json::from_value(cell).map_err(|e| not(format!("cell {}: {e}", i + 1)))?;
        if !seen.insert((cell.suite.clone(), cell.backend.clone(), cell.case.clone())) {
            return Err(Problem::DuplicateCell(cell.name()));
        }
        cells.push(cell);
    }
    Ok(RunResult { cells, partition })
}

#[cfg(test)]
pub(crate) mod tests {
    use std::fs;
    use std::time::Duration;

    use rstest::rstest;

    use super::*;
    use crate::report::outcome::Status;

    pub(crate) fn cell(suite: &str, backend: &str, case: &str, status: Status) -> CellResult {
        CellResult {
            suite: suite.into(),
            backend: backend.into(),
            case: case.into(),
            status,
            duration: Duration::from_millis(1500),
            properties: vec![],
            log: String::new(),
        }
    }

    fn sample_run() -> RunResult {
        let mut first = cell("b-suite", "softhsm", "sign", Status::Passed);
        first.log = "NUL:\0: escape \x1b[31m ünï".into();
        first.properties = vec![("port".into(), "40123".into())];
        RunResult {
            cells: vec![
                first,
                cell(
                    "a-suite",
                    "softhsm",
                    "z last",
                    Status::Failed {
                        message: "step 2: mismatch".into(),
                    },
                ),
                cell(
                    "a-suite",
                    "kmip",
                    "sign",
                    Status::Errored {
                        message: "killed by signal 9 (SIGKILL)".into(),
                    },
                ),
                cell(
                    "a-suite",
                    "softhsm",
                    "a first",
                    Status::Skipped {
                        reason: "backend lacks capability ed25519".into(),
                    },
                ),
            ],
            partition: None,
        }
    }

    fn written(run: &RunResult) -> (tempfile::TempDir, PathBuf, Value) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out/results.json");
        write(run, &path).unwrap();
        let value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        (dir, path, value)
    }

    #[test]
    fn has_version_tally_and_sorted_cells() {
        let run = sample_run();
        let (_dir, _path, value) = written(&run);
        assert_eq!(value["schema_version"], 1);
        assert!(value.get("partition").is_none());
        assert_eq!(
            value["tally"],
            serde_json::json!({"passed": 1, "failed": 1, "errored": 1, "skipped": 1})
        );
        let cells = value["cells"].as_array().unwrap();
        let order: Vec<String> = cells
            .iter()
            .map(|c| format!("{}.{}/{}", c["suite"], c["backend"], c["case"]).replace('"', ""))
            .collect();
        assert_eq!(
            order,
            [
                "a-suite.kmip/sign",
                "a-suite.softhsm/a first",
                "a-suite.softhsm/z last",
                "b-suite.softhsm/sign"
            ]
        );
        assert_eq!(cells[2]["status"], "failed");
        assert_eq!(cells[2]["message"], "step 2: mismatch");
        assert_eq!(cells[1]["reason"], "backend lacks capability ed25519");
        assert_eq!(cells[0]["duration"], 1.5);
    }

    #[test]
    fn reads_back_what_it_wrote() {
        let mut run = sample_run();
        run.partition = Some("2/3".parse().unwrap());
        let (_dir, path, value) = written(&run);
        assert_eq!(value["partition"], "2/3");
        let back = read(&path).unwrap();
        assert_eq!(back.partition, run.partition);
        assert_eq!(back.cells.len(), 4);
        // Lossless: the log keeps its control characters and escapes.
        let first = back.cells.iter().find(|c| c.suite == "b-suite").unwrap();
        assert_eq!(first.log, run.cells[0].log);
        assert_eq!(first.properties, run.cells[0].properties);
    }

    #[test]
    fn a_file_from_before_versions_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.json");
        fs::write(
            &path,
            r#"{"tally": {"passed": 1, "failed": 0, "errored": 0, "skipped": 0},
                "cells": [{"suite": "s", "backend": "b", "case": "c", "status": "passed",
                           "duration": 0.25, "properties": [], "log": ""}]}"#,
        )
        .unwrap();
        let run = read(&path).unwrap();
        assert_eq!(run.cells[0].status, Status::Passed);
        assert_eq!(run.partition, None);
    }

    #[rstest]
    #[case::empty("", "not JSON")]
    #[case::junit("\n<?xml version=\"1.0\"?><testsuites/>", "it is XML")]
    #[case::array("[]", "not a JSON object")]
    #[case::other_json(r#"{"cells": []}"#, "no schema_version and no tally")]
    #[case::no_cells(r#"{"schema_version": 1, "tally": {}}"#, "no list of cells")]
    #[case::cells_not_list(r#"{"schema_version": 1, "cells": {}}"#, "no list of cells")]
    #[case::version_text(r#"{"schema_version": "1", "cells": []}"#, "is not a number")]
    #[case::version_negative(r#"{"schema_version": -1, "cells": []}"#, "is not a number")]
    #[case::bad_partition(
        r#"{"schema_version": 1, "partition": "4/3", "cells": []}"#,
        "partition"
    )]
    #[case::partition_number(r#"{"schema_version": 1, "partition": 3, "cells": []}"#, "partition")]
    #[case::cell_without_case(
        r#"{"schema_version": 1, "cells": [{"suite": "s", "backend": "b", "status": "passed", "duration": 1, "properties": [], "log": ""}]}"#,
        "cell 1: missing field `case`"
    )]
    #[case::unknown_status(
        r#"{"schema_version": 1, "cells": [{"suite": "s", "backend": "b", "case": "c", "status": "flaky", "duration": 1, "properties": [], "log": ""}]}"#,
        "cell 1"
    )]
    #[case::negative_duration(
        r#"{"schema_version": 1, "cells": [{"suite": "s", "backend": "b", "case": "c", "status": "passed", "duration": -1, "properties": [], "log": ""}]}"#,
        "cell 1"
    )]
    #[case::deep_nesting(&format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)), "not JSON")]
    fn refuses_what_is_no_results_file(#[case] text: &str, #[case] says: &str) {
        let err = parse(text.as_bytes()).map(|_| ()).unwrap_err();
        match err {
            Problem::NotResults(why) => assert!(why.contains(says), "{why}"),
            _ => panic!("not refused as NotResults: {text:.80}"),
        }
    }

    #[test]
    fn refuses_an_unknown_version_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("future.json");
        fs::write(&path, r#"{"schema_version": 2, "cells": []}"#).unwrap();
        let err = read(&path).unwrap_err();
        assert!(matches!(err, ReadError::UnknownVersion { version: 2, .. }));
        let text = err.to_string();
        assert!(
            text.contains("future.json") && text.contains("schema_version 2"),
            "{text}"
        );
    }

    #[test]
    fn refuses_a_cell_listed_twice() {
        let run = RunResult {
            cells: vec![
                cell("s", "b", "c", Status::Passed),
                cell("s", "b", "c", Status::Passed),
            ],
            partition: None,
        };
        let (_dir, path, _) = written(&run);
        let err = read(&path).unwrap_err();
        assert!(err.to_string().contains("s.b/c more than once"), "{err}");
    }

    #[test]
    fn a_missing_file_is_unreadable() {
        let err = read(Path::new("/nonexistent/results.json")).unwrap_err();
        assert!(matches!(err, ReadError::Unreadable { .. }), "{err}");
    }
}
