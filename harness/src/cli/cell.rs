//! `hsm-harness cell` (hidden): one case on one backend, in this process, started by
//! `run` for each cell; its report goes to the work directory for the runner.

use std::path::Path;

use super::{bad_input, init_cell_logging, EXIT_FAILED, EXIT_OK};
use crate::model::backend::{Backend, Placement};
use crate::model::suite::Suite;
use crate::run::cell;

pub fn main(
    suite: &Path,
    case: &str,
    backend: &Path,
    workdir: &Path,
    options: cell::Options,
    placement: Placement,
    allow_destructive: bool,
) -> i32 {
    init_cell_logging();
    let loaded = Suite::load(suite).and_then(|s| Backend::load(backend).map(|b| (s, b)));
    let (suite, backend) = match loaded {
        Ok(x) => x,
        Err(e) => return bad_input(e),
    };
    let mut backend = match backend.placed(placement) {
        Ok(b) => b,
        Err(e) => return bad_input(e),
    };
    backend.allow_destructive = allow_destructive;
    let Some(case) = suite.cases.iter().find(|c| c.name == case) else {
        return bad_input(format!("suite '{}' has no case '{case}'", suite.name));
    };
    match cell::run_and_report(case, &backend, workdir, options) {
        Ok(()) => EXIT_OK,
        Err(e) => {
            eprintln!("error: writing the cell result: {e:#}");
            EXIT_FAILED
        }
    }
}
