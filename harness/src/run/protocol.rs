//! What a cell process hands back to the runner: one JSON file, [`RESULT_FILE`], in the
//! cell's work directory, written atomically when the cell ends. A cell that dies
//! before writing it is reported by the runner from its exit status and log instead.
//! Kept apart from the cell so that the runner does not link the step interpreter.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::report::outcome::Status;

/// The report file's name in the cell's work directory.
pub const RESULT_FILE: &str = "result.json";

/// What a cell process leaves for the runner.
#[derive(Debug, Serialize, Deserialize)]
pub struct CellReport {
    #[serde(flatten)]
    pub status: Status,
    pub properties: Vec<(String, String)>,
}

impl CellReport {
    /// Writes the report to `workdir` (a temporary file renamed into place, so the
    /// runner never reads half of it).
    pub fn write(&self, workdir: &Path) -> anyhow::Result<()> {
        let tmp = workdir.join(format!("{RESULT_FILE}.tmp"));
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(&tmp, workdir.join(RESULT_FILE))?;
        Ok(())
    }

    /// The report in `workdir`, if a readable one is there.
    pub fn read(workdir: &Path) -> Option<CellReport> {
        let bytes = std::fs::read(workdir.join(RESULT_FILE)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}
