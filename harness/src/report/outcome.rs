//! What a run produced: small data types shared by the runner and the reporters.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::run::partition::Partition;

/// How one cell (one case on one backend) ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum Status {
    Passed,
    /// An expectation did not hold. `message` says which step and why.
    Failed {
        message: String,
    },
    /// The case could not run: a crash, a timeout, a backend that would not start.
    /// `message` is "timeout", "killed by signal N (SIGX)", or the error.
    Errored {
        message: String,
    },
    /// Not run, with the reason (e.g. the backend lacks a capability).
    Skipped {
        reason: String,
    },
}

impl Status {
    pub fn label(&self) -> &'static str {
        match self {
            Status::Passed => "PASS",
            Status::Failed { .. } => "FAIL",
            Status::Errored { .. } => "ERROR",
            Status::Skipped { .. } => "SKIP",
        }
    }
}

/// The result of one cell.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CellResult {
    /// The suite's name (its `suite:` field).
    pub suite: String,
    /// The backend's name (its `backend:` field).
    pub backend: String,
    /// The case's name, unique within the suite.
    pub case: String,
    #[serde(flatten)]
    pub status: Status,
    #[serde(with = "duration_secs")]
    pub duration: Duration,
    /// Facts about the backend and the run (module path, library version, token label, ...).
    pub properties: Vec<(String, String)>,
    /// The cell's log: steps as they ran, then (on a crash) the tail of stderr.
    pub log: String,
}

impl CellResult {
    /// What identifies the cell across runs and releases: (suite, backend, case). The
    /// reports list cells in this order.
    pub fn key(&self) -> (&str, &str, &str) {
        (&self.suite, &self.backend, &self.case)
    }

    /// The cell's full name, `suite.backend/case`.
    pub fn name(&self) -> String {
        crate::run::plan::cell_name(&self.suite, &self.backend, &self.case)
    }
}

/// The results of one whole run (or of one shard of it), in matrix order.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RunResult {
    pub cells: Vec<CellResult>,
    /// The shard these cells are, when the run was partitioned (`--partition`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<Partition>,
}

impl RunResult {
    /// The cells in the reports' order: by suite, backend and case (see
    /// [`CellResult::key`]), so that the reports of a run, of its shards merged, and of
    /// another release list the same cells in the same order.
    pub fn in_report_order(&self) -> Vec<&CellResult> {
        let mut cells: Vec<&CellResult> = self.cells.iter().collect();
        cells.sort_by(|a, b| a.key().cmp(&b.key()));
        cells
    }
}

/// Counts by status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    pub passed: usize,
    pub failed: usize,
    pub errored: usize,
    pub skipped: usize,
}

impl Tally {
    pub fn of<'a>(cells: impl IntoIterator<Item = &'a CellResult>) -> Tally {
        let mut t = Tally::default();
        for c in cells {
            match c.status {
                Status::Passed => t.passed += 1,
                Status::Failed { .. } => t.failed += 1,
                Status::Errored { .. } => t.errored += 1,
                Status::Skipped { .. } => t.skipped += 1,
            }
        }
        t
    }

    pub fn total(&self) -> usize {
        self.passed + self.failed + self.errored + self.skipped
    }

    /// A run is good when nothing failed or errored.
    pub fn is_success(&self) -> bool {
        self.failed == 0 && self.errored == 0
    }
}

mod duration_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}
