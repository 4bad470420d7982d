//! The `random` step.

use hsm_signers::router::RandomSource;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::backends::RngEvidence;

use super::{log, CellContext, CheckContext, CheckError, Expect, StepError, StepKind};

/// Ask the signer router for random bytes and check it returns exactly that many (and,
/// with `from`, where they came from). A value of 16 bytes or more must not be one
/// byte repeated, nor start like an earlier value of the cell (a generator that
/// repeats itself); compared over the first 16 bytes. With `from: backend`, the
/// backend must also show its generator at work during the step: a C_GenerateRandom
/// that reached the module in the PKCS#11 shim's trace (when the cell runs through the
/// shim), or an RNG Retrieve in the relay's log; a backend with neither is noted in
/// the cell's log.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Random {
    /// How many bytes: 1 to 65536.
    #[schemars(range(min = 1, max = 65536))]
    pub bytes: usize,
    /// Where the bytes must come from; `backend` also needs the backend's own evidence
    /// where the cell has a source of it. Not checked when the step expects an error.
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

/// Values at least this long are compared (shorter ones may repeat by chance).
pub const COMPARED_LENGTH: usize = 16;

/// Why `value` (at least [`COMPARED_LENGTH`] bytes) cannot be a fresh random value:
/// its first bytes are one byte repeated, or the start of an earlier value.
fn repeats(value: &[u8], earlier: &[Vec<u8>]) -> Option<String> {
    let head = &value[..COMPARED_LENGTH];
    if head.iter().all(|b| *b == head[0]) {
        return Some(format!(
            "the random value is the byte {:#04x} repeated",
            head[0]
        ));
    }
    earlier
        .iter()
        .any(|d| d[..COMPARED_LENGTH] == *head)
        .then(|| "the random value starts with the same 16 bytes as an earlier one".into())
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
        // `from: backend`: the backend's own evidence, counted before and after.
        let evidence = match self.from {
            Some(RandomFrom::Backend) => {
                let instance = cell.instance_of(&cell.default_signer_name())?;
                let source = cell
                    .instances
                    .rng_evidence(&instance)
                    .map_err(StepError::harness)?;
                let before = source
                    .as_ref()
                    .map(RngEvidence::count)
                    .transpose()
                    .map_err(StepError::harness)?;
                Some((instance, source, before))
            }
            _ => None,
        };
        let signer = cell.signer()?;
        let Some((r, source)) = self.expect.judge(signer.random_with_source(bytes)?)? else {
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
        if r.len() >= COMPARED_LENGTH {
            if let Some(why) = repeats(&r, &cell.bindings.draws) {
                return Err(StepError::Failed(why));
            }
            cell.bindings.draws.push(r.clone());
        }
        match (self.from, source) {
            (None, _)
            | (Some(RandomFrom::Backend), RandomSource::DefaultSigner)
            | (Some(RandomFrom::Fallback), RandomSource::Fallback) => {}
            (Some(want), _) => {
                return Err(StepError::Failed(format!(
                    "the random bytes came from {said}, expected from: {}",
                    match want {
                        RandomFrom::Backend => "backend",
                        RandomFrom::Fallback => "fallback",
                    }
                )))
            }
        }
        match evidence {
            Some((instance, Some(source), Some(before))) => {
                // Asked anew each time: a container's log is copied out when asked, and
                // reaches the engine a moment after the container wrote it.
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
                let after = loop {
                    let now = match cell
                        .instances
                        .rng_evidence(&instance)
                        .map_err(StepError::harness)?
                    {
                        Some(s) => s.count().map_err(StepError::harness)?,
                        None => before,
                    };
                    if now > before || std::time::Instant::now() >= deadline {
                        break now;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(100));
                };
                backend_made_them(&instance, &source, before, after)
            }
            Some((instance, _, _)) => {
                log(format!(
                    "  no evidence source for instance '{instance}': nothing shows its \
                     generator at work (no PKCS#11 shim, no server log), so only the \
                     router's word says the bytes came from it"
                ));
                Ok(())
            }
            None => Ok(()),
        }
    }
}

/// The verdict on `from: backend` given the backend's evidence counted `before` and
/// `after` the step: more after, or a failure.
fn backend_made_them(
    instance: &str,
    source: &RngEvidence,
    before: usize,
    after: usize,
) -> Result<(), StepError> {
    if after > before {
        log(format!(
            "  instance '{instance}' made them: {} new {}",
            after - before,
            source.describe()
        ));
        Ok(())
    } else {
        Err(StepError::Failed(format!(
            "the router says the default signer's generator made the random bytes, but \
             instance '{instance}' shows no sign of it: no new {} during the step",
            source.describe()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::fresh(&[7, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 99], false)]
    #[case::zeros(&[0; 32], true)]
    #[case::one_byte_repeated(&[0xAB; 16], true)]
    #[case::an_earlier_value(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 0], true)]
    fn a_repeating_generator_is_caught(#[case] value: &[u8], #[case] caught: bool) {
        let earlier = vec![(1..=32).collect::<Vec<u8>>()];
        assert_eq!(repeats(value, &earlier).is_some(), caught);
    }
}
