//! Steps on the cell process itself: `sleep`, `self_test`.

use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use super::{log, CellContext, CheckContext, CheckError, StepError, StepKind};

/// Wait, e.g. to let a timeout pass. Counts towards the cell's `--timeout`.
#[derive(Clone, Debug, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Sleep {
    /// How long, in seconds: 0 to 3600, fractions allowed.
    #[schemars(range(min = 0, max = 3600))]
    pub seconds: f64,
}

impl StepKind for Sleep {
    fn keyword(&self) -> &'static str {
        "sleep"
    }

    fn check(&self, _ctx: &mut CheckContext) -> Result<(), CheckError> {
        let seconds = self.seconds;
        if !(seconds.is_finite() && (0.0..=3600.0).contains(&seconds)) {
            return Err(format!("sleep seconds must be 0 to 3600, not {seconds}").into());
        }
        Ok(())
    }

    fn run(&self, _cell: &mut CellContext) -> Result<(), StepError> {
        std::thread::sleep(Duration::from_secs_f64(self.seconds.max(0.0)));
        Ok(())
    }
}

/// Make the cell process misbehave, to test the runner's crash isolation: `abort`
/// raises SIGABRT, `hang` never returns (the cell is killed at `--timeout`). Either
/// way the cell is reported as an error, not a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SelfTest {
    /// Abort the cell process (SIGABRT).
    Abort,
    /// Never return.
    Hang,
}

impl StepKind for SelfTest {
    fn keyword(&self) -> &'static str {
        "self_test"
    }

    fn check(&self, _ctx: &mut CheckContext) -> Result<(), CheckError> {
        Ok(())
    }

    fn run(&self, _cell: &mut CellContext) -> Result<(), StepError> {
        match self {
            SelfTest::Abort => {
                log("  self_test: aborting the cell process");
                std::process::abort();
            }
            SelfTest::Hang => {
                log("  self_test: hanging");
                loop {
                    std::thread::sleep(Duration::from_secs(3600));
                }
            }
        }
    }
}
