//! The `kmip_query` step: what a KMIP server says it can do.

use schemars::JsonSchema;
use serde::Deserialize;

use super::{log, CellContext, CheckContext, CheckError, Needs, StepError, StepKind};
use crate::model::schema::KmipOperation;
use crate::model::suite::{kmip_operation_names, Capability};

/// Check the operations the KMIP server of the default signer lists in its Query
/// answer, asked by the harness's own KMIP client (not the signer). Operations are KMIP 1.2 names (`RNG
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
        // Asked by the oracle's own KMIP client, straight to the default signer's
        // server: the signer's view of Query is what some cases test, so it cannot be
        // the evidence.
        let default = cell.default_signer_name();
        let instance = cell
            .spec
            .signers
            .iter()
            .find(|s| s.name == default)
            .and_then(|s| s.on.clone())
            .ok_or_else(|| {
                StepError::Harness(format!(
                    "the default signer '{default}' is on no backend instance"
                ))
            })?;
        let endpoint = cell
            .instances
            .kmip_endpoint(&instance)
            .map_err(|e| StepError::Harness(format!("{e:#}")))?;
        let codes = oracle::kmip::query_operations(&endpoint).map_err(|e| {
            StepError::Failed(format!(
                "the server of instance '{instance}' did not answer Query: {e}"
            ))
        })?;
        let listed: Vec<String> = codes
            .iter()
            .map(|&c| match oracle::kmip::operation_name(c) {
                Some(name) => name.to_string(),
                None => format!("operation {c:#x}"),
            })
            .collect();
        log(format!(
            "  Query (asked by the oracle) lists: {}",
            listed.join(", ")
        ));
        for op in &self.has {
            if !listed.contains(op) {
                return Err(StepError::Failed(format!(
                    "the server's Query does not list '{op}'"
                )));
            }
        }
        for op in &self.lacks {
            if listed.contains(op) {
                return Err(StepError::Failed(format!(
                    "the server's Query lists '{op}'"
                )));
            }
        }
        Ok(())
    }
}
