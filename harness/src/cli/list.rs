//! `hsm-harness list`: the cells a `run` with the same selectors would run, one per
//! line as `suite.backend/case`, with the skip reason of those that would be skipped.

use super::select::{load, SelectArgs};
use super::EXIT_OK;
use crate::run::plan::Before;

pub fn main(select: SelectArgs) -> i32 {
    let plan = match load(&select) {
        Ok(p) => p,
        Err(code) => return code,
    };
    for cell in &plan.cells {
        let suite = &plan.suites[cell.suite];
        let backend = &plan.backends[cell.backend];
        let mut line = format!(
            "{}.{}/{}",
            suite.name, backend.name, suite.cases[cell.case].name
        );
        match plan.before(cell) {
            Before::Run => {}
            Before::Skip(reason) => line.push_str(&format!("  (skip: {reason})")),
            Before::Error(message) => line.push_str(&format!("  (error: {message})")),
        }
        println!("{line}");
    }
    EXIT_OK
}
