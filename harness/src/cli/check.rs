//! `hsm-harness check`: loads suite and backend files and says what each holds, or
//! its first error with file, line and column (exit 2).

use std::path::PathBuf;

use super::{EXIT_BAD_INPUT, EXIT_OK};
use crate::model::backend::Backend;
use crate::model::suite::Suite;

pub fn main(files: &[PathBuf]) -> i32 {
    let mut bad = 0;
    for f in files {
        let is_backend = std::fs::read_to_string(f)
            .map(|t| t.lines().any(|l| l.starts_with("backend:")))
            .unwrap_or(false);
        let outcome = if is_backend {
            Backend::load(f).map(|b| format!("backend '{}'", b.name))
        } else {
            Suite::load(f).map(|s| format!("suite '{}', {} cases", s.name, s.cases.len()))
        };
        match outcome {
            Ok(what) => println!("{}: ok ({what})", f.display()),
            Err(e) => {
                eprintln!("error: {e}");
                bad += 1;
            }
        }
    }
    if bad > 0 {
        EXIT_BAD_INPUT
    } else {
        EXIT_OK
    }
}
