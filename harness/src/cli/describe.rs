//! `hsm-harness describe` (hidden): what one backend says about itself, in this
//! process, started by `certify`; the answer goes to the work directory (see
//! [`crate::run::describe`]).

use std::path::Path;

use super::{bad_input, init_logging, EXIT_FAILED, EXIT_OK};
use crate::model::backend::{Backend, Placement};
use crate::run::describe;

pub fn main(backend: &Path, workdir: &Path, placement: Placement) -> i32 {
    init_logging();
    let backend = match Backend::load(backend) {
        Ok(b) => b,
        Err(e) => return bad_input(e),
    };
    let backend = match backend.placed(placement) {
        Ok(b) => b,
        Err(e) => return bad_input(e),
    };
    match describe::describe_and_report(&backend, workdir) {
        Ok(()) => EXIT_OK,
        Err(e) => {
            eprintln!("error: writing the description: {e:#}");
            EXIT_FAILED
        }
    }
}
