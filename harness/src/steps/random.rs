//! The `random` step.

use hsm_signers::router::RandomSource;
use schemars::JsonSchema;
use serde::Deserialize;

use super::{log, CellContext, CheckContext, CheckError, Expect, StepError, StepKind};

/// Ask the signer router for random bytes and check it returns exactly that many (and,
/// with `from`, where they came from).
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Random {
    /// How many bytes: 1 to 65536.
    #[schemars(range(min = 1, max = 65536))]
    pub bytes: usize,
    /// Where the bytes must come from. Not checked when the step expects an error.
    #[serde(default)]
    pub from: Option<RandomFrom>,
    #[serde(default)]
    pub expect: Expect,
}

/// Where a `random` step expects the bytes to come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RandomFrom {
    /// The default signer's own generator (the backend's; on the software backend, the
    /// OpenSSL signer's).
    Backend,
    /// The router's OpenSSL signer, because the default signer has no generator or
    /// could not be used.
    Fallback,
}

impl StepKind for Random {
    fn keyword(&self) -> &'static str {
        "random"
    }

    fn check(&self, _ctx: &mut CheckContext) -> Result<(), CheckError> {
        self.expect.check()?;
        if !(1..=65536).contains(&self.bytes) {
            return Err(format!("random bytes must be 1 to 65536, not {}", self.bytes).into());
        }
        Ok(())
    }

    fn run(&self, cell: &mut CellContext) -> Result<(), StepError> {
        let bytes = self.bytes;
        let router = cell.router()?;
        let Some((r, source)) = self.expect.judge(router.random_with_source(bytes))? else {
            return Ok(());
        };
        if r.len() != bytes {
            return Err(StepError::Failed(format!(
                "asked for {bytes} random bytes, got {}",
                r.len()
            )));
        }
        let said = match source {
            RandomSource::DefaultSigner => "the default signer's generator",
            RandomSource::Fallback => "the OpenSSL fallback signer",
        };
        log(format!("  {} random bytes from {said}", r.len()));
        match (self.from, source) {
            (None, _)
            | (Some(RandomFrom::Backend), RandomSource::DefaultSigner)
            | (Some(RandomFrom::Fallback), RandomSource::Fallback) => Ok(()),
            (Some(want), _) => Err(StepError::Failed(format!(
                "the random bytes came from {said}, expected from: {}",
                match want {
                    RandomFrom::Backend => "backend",
                    RandomFrom::Fallback => "fallback",
                }
            ))),
        }
    }
}
