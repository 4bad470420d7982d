//! `hsm-harness diff OLD.json NEW.json`: the cells whose status changed between two
//! runs' JSON twins (say, the last release's and this one's), regressions first.
//!
//! Exit 1 when a cell regressed (failing now; passed, skipped or absent before), 0
//! otherwise, 2 when a file is not results this harness can read (not a JSON twin, or
//! a schema version it does not know). `--json` prints the groups as JSON instead.

use std::path::PathBuf;

use clap::Args;

use super::{bad_input, EXIT_FAILED, EXIT_OK};
use crate::report::diff::Diff;
use crate::report::json;

#[derive(Args)]
pub struct DiffArgs {
    /// The earlier results: a JSON twin (`hsm-harness run --json FILE`).
    #[arg(value_name = "OLD.json")]
    old: PathBuf,
    /// The later results, compared with OLD.
    #[arg(value_name = "NEW.json")]
    new: PathBuf,
    /// Print the changes as JSON (groups `regressions`, `newly_skipped`, `fixed`,
    /// `other_changes`, `added`, `removed`, and the count `unchanged`).
    #[arg(long)]
    json: bool,
}

pub fn main(args: DiffArgs) -> i32 {
    let mut runs = Vec::new();
    for path in [&args.old, &args.new] {
        match json::read(path) {
            Ok(run) => {
                if let Some(p) = run.partition {
                    // Said on stderr so that --json output stays one document.
                    eprintln!(
                        "note: {} is shard {p} only: the cells of the other shards show as \
                         added or removed (merge the shards first with merge-junit --json)",
                        path.display()
                    );
                }
                runs.push(run);
            }
            Err(e) => return bad_input(e),
        }
    }
    let diff = Diff::between(&runs[0], &runs[1]);
    if args.json {
        match serde_json::to_string_pretty(&diff) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("error: cannot serialise the diff: {e}");
                return EXIT_FAILED;
            }
        }
    } else {
        print!("{}", diff.text());
    }
    if diff.has_regressions() {
        EXIT_FAILED
    } else {
        EXIT_OK
    }
}
