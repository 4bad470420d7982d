//! The `kmip_query` step: what a KMIP server says it can do.

use schemars::JsonSchema;
use serde::Deserialize;

use super::{log, CellContext, CheckContext, CheckError, Needs, StepError, StepKind};
use crate::model::schema::KmipOperation;
use crate::model::suite::{kmip_operation_names, Capability};

/// Check the operations the KMIP server listed in its Query answer to the default
/// signer (which connects if it has not). Operations are KMIP 1.2 names (`RNG
/// Retrieve`). The case then requires `kmip`. Gives has, lacks or both.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("anyOf" = [{ "required": ["has"] }, { "required": ["lacks"] }]))]
pub struct KmipQuery {
    /// Operations the Query answer must list.
    #[serde(default)]
    #[schemars(with = "Vec<KmipOperation>")]
    pub has: Vec<String>,
    /// Operations the Query answer must not list.
    #[serde(default)]
    #[schemars(with = "Vec<KmipOperation>")]
    pub lacks: Vec<String>,
}

impl StepKind for KmipQuery {
    fn keyword(&self) -> &'static str {
        "kmip_query"
    }

    fn check(&self, _ctx: &mut CheckContext) -> Result<(), CheckError> {
        if self.has.is_empty() && self.lacks.is_empty() {
            return Err("kmip_query checks nothing: give has or lacks".into());
        }
        let known = kmip_operation_names();
        for op in self.has.iter().chain(&self.lacks) {
            if !known.contains(op) {
                return Err(format!(
                    "unknown KMIP operation '{op}' (KMIP 1.2 names: {})",
                    known.join(", ")
                )
                .into());
            }
        }
        if let Some(op) = self.has.iter().find(|o| self.lacks.contains(o)) {
            return Err(format!("'{op}' is both in has and in lacks").into());
        }
        Ok(())
    }

    fn requires(&self, needs: &mut Needs) {
        needs.add(Capability::Kmip);
    }

    fn run(&self, cell: &mut CellContext) -> Result<(), StepError> {
        let router = cell.router()?;
        let info = router.default_signer().info().map_err(|e| {
            StepError::Failed(format!("the default signer has no Query answer: {e}"))
        })?;
        if info.signer_type != "KMIP" {
            return Err(StepError::Harness(format!(
                "the default signer is a {} signer, not a KMIP one",
                info.signer_type
            )));
        }
        let listed: Vec<&str> = info
            .details
            .iter()
            .find(|(k, _)| k == "operations")
            .map(|(_, v)| v.split(", ").filter(|o| !o.is_empty()).collect())
            .unwrap_or_default();
        log(format!("  Query lists: {}", listed.join(", ")));
        for op in &self.has {
            if !listed.contains(&op.as_str()) {
                return Err(StepError::Failed(format!(
                    "the server's Query does not list '{op}'"
                )));
            }
        }
        for op in &self.lacks {
            if listed.contains(&op.as_str()) {
                return Err(StepError::Failed(format!(
                    "the server's Query lists '{op}'"
                )));
            }
        }
        Ok(())
    }
}
