//! The `trace` step: what the signers asked of their PKCS#11 module.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

use super::{log, CellContext, CheckContext, CheckError, StepError, StepKind};
use crate::backends::shim;
use crate::model::schema::{MapOf, Pkcs11Function};

/// Check the PKCS#11 shim's trace: the calls the signers made through the shim
/// (injected or not; the harness's own sessions are not in it), all since the cell
/// started or those after a mark; then optionally mark this point. Gives at least one
/// of called, not_called, count, mark. The case then runs through the shim and
/// requires `pkcs11-shim`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("anyOf" = [
    { "required": ["called"] },
    { "required": ["not_called"] },
    { "required": ["count"] },
    { "required": ["mark"] }
]))]
pub struct Trace {
    /// Look only at the calls after the mark of this name (set by the `mark:` of an
    /// earlier trace step); default: every call since the cell started.
    #[serde(default)]
    pub since: Option<String>,
    /// Functions called at least once.
    #[serde(default)]
    #[schemars(with = "Vec<Pkcs11Function>")]
    pub called: Vec<String>,
    /// Functions not called at all.
    #[serde(default)]
    #[schemars(with = "Vec<Pkcs11Function>")]
    pub not_called: Vec<String>,
    /// Function -> exactly how many calls. Many applications make two calls per
    /// result (a length query, then the real call): one sign is two C_Sign calls.
    #[serde(default)]
    #[schemars(with = "MapOf<Pkcs11Function, u64>")]
    pub count: BTreeMap<String, u64>,
    /// After the checks, remember how many calls the trace holds, under this name
    /// (unique in the case), for a later `since:`.
    #[serde(default)]
    pub mark: Option<String>,
}

impl StepKind for Trace {
    fn keyword(&self) -> &'static str {
        "trace"
    }

    fn check(&self, ctx: &mut CheckContext) -> Result<(), CheckError> {
        ctx.needs_shim = true;
        if self.called.is_empty()
            && self.not_called.is_empty()
            && self.count.is_empty()
            && self.mark.is_none()
        {
            return Err("trace checks nothing: give called, not_called, count or mark".into());
        }
        for f in self
            .called
            .iter()
            .chain(&self.not_called)
            .chain(self.count.keys())
        {
            if !shim::is_function(f) {
                return Err(format!(
                    "unknown PKCS#11 function '{f}' (PKCS#11 2.40 names, e.g. C_Sign)"
                )
                .into());
            }
        }
        if let Some(f) = self.called.iter().find(|f| self.not_called.contains(f)) {
            return Err(format!("'{f}' is both called and not_called").into());
        }
        if let Some(m) = &self.since {
            if !ctx.marks.contains(m) {
                return Err(CheckContext::unknown("trace mark", m, &ctx.marks));
            }
        }
        if let Some(m) = &self.mark {
            if !ctx.marks.insert(m.clone()) {
                return Err(format!("trace mark '{m}' is already bound").into());
            }
        }
        Ok(())
    }

    // `pkcs11-shim` comes from the case running through the shim, which this step
    // makes it do (`CheckContext::needs_shim`).

    fn run(&self, cell: &mut CellContext) -> Result<(), StepError> {
        let path = cell.instances.trace_path().ok_or_else(|| {
            StepError::Harness("this cell's signers do not run through the PKCS#11 shim".into())
        })?;
        let calls = shim::read(&path).map_err(StepError::harness)?;
        let from = match &self.since {
            Some(m) => *cell
                .bindings
                .marks
                .get(m)
                .ok_or_else(|| StepError::Harness(format!("unknown trace mark '{m}'")))?,
            None => 0,
        };
        let window = &calls[from.min(calls.len())..];
        let counts = shim::counts(window);
        let n = |f: &str| counts.get(f).copied().unwrap_or(0);
        let place = match &self.since {
            Some(m) => format!("since mark '{m}'"),
            None => "since the cell started".to_string(),
        };
        log(format!(
            "  trace {place}: {} calls ({})",
            window.len(),
            counts
                .iter()
                .map(|(f, c)| format!("{f} {c}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        for f in &self.called {
            if n(f) == 0 {
                return Err(StepError::Failed(format!("{f} was not called {place}")));
            }
        }
        for f in &self.not_called {
            if n(f) > 0 {
                return Err(StepError::Failed(format!(
                    "{f} was called {} time(s) {place}",
                    n(f)
                )));
            }
        }
        for (f, want) in &self.count {
            if n(f) != *want {
                return Err(StepError::Failed(format!(
                    "{f} was called {} time(s) {place}, expected {want}",
                    n(f)
                )));
            }
        }
        if let Some(m) = &self.mark {
            log(format!("  trace mark '{m}' after {} calls", calls.len()));
            cell.bindings.marks.insert(m.clone(), calls.len());
        }
        Ok(())
    }
}
