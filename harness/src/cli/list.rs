//! `hsm-harness list`: the cells a `run` with the same selectors would run, one per
//! line as `suite.backend/case`, with the skip reason of those that would be skipped.
//! With `--partition K/N`, the cells of that shard; stderr says how many of the
//! selected cells that is.

use super::select::{load, sources, SelectArgs};
use super::EXIT_OK;
use crate::model::builtin::Origin;
use crate::run::plan::Before;

pub fn main(select: SelectArgs) -> i32 {
    let plan = match load(&select) {
        Ok(p) => p,
        Err(code) => return code,
    };
    // Where each suite and the backends came from, on stderr: stdout is the cells.
    if let Ok((suites, backends)) = sources(&select) {
        for suite in &plan.suites {
            let from = match &suites {
                Origin::BuiltIn(_) if suite.path.starts_with(suites.dir()) => suites.to_string(),
                _ => suite.path.display().to_string(),
            };
            eprintln!("suite {}: {from}", suite.name);
        }
        eprintln!("backends: {backends}");
    }
    if let Some(p) = plan.partition {
        eprintln!(
            "shard {p}: {} of the {} selected cells",
            plan.cells.len(),
            plan.selected
        );
    }
    for cell in &plan.cells {
        let mut line = plan.name(cell);
        match plan.before(cell) {
            Before::Run => {}
            Before::Skip(reason) => line.push_str(&format!("  (skip: {reason})")),
            Before::Error(message) => line.push_str(&format!("  (error: {message})")),
        }
        println!("{line}");
    }
    EXIT_OK
}
