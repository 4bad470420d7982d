//! A backend's description, for `certify`: what a fresh instance says about itself
//! ([`Instances::describe`]) and what the capability probe shows, asked in a child
//! process of its own (`hsm-harness describe`, hidden) as a cell would be: bringing a
//! backend up loads modules, sets environment variables and locks external tokens,
//! none of which may happen in the runner, and a module that hangs or crashes there
//! must not take the run with it.
//!
//! The child writes [`DESCRIPTION_FILE`] in its work directory: the description, or
//! why there is none (the backend did not come up, its server refused the harness's
//! client, ...). A child that dies without writing it is reported from its exit
//! status and log, like a cell.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::backends::{Description, Instances};
use crate::model::backend::{Backend, Placement};
use crate::run::lifeline::{self, Janitor};
use crate::run::runner::{signal_name, supervise, tail, RunOptions};

/// The child's answer, in its work directory.
pub const DESCRIPTION_FILE: &str = "description.json";

/// The title of the section that holds the capability probe's observations.
pub const PROBE_SECTION: &str = "capability probe";

/// What the child hands back.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Answer {
    Described(Description),
    Failed(String),
}

/// In the child: describes a fresh instance of `backend` (its files in `workdir`) and
/// writes the answer there. `Err` only when the answer cannot be written.
pub fn describe_and_report(backend: &Backend, workdir: &Path) -> anyhow::Result<()> {
    let answer = match describe_here(backend, workdir) {
        Ok(d) => Answer::Described(d),
        Err(e) => Answer::Failed(e),
    };
    let tmp = workdir.join(format!("{DESCRIPTION_FILE}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec_pretty(&answer)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, workdir.join(DESCRIPTION_FILE))
        .with_context(|| format!("writing {}", workdir.join(DESCRIPTION_FILE).display()))
}

/// The description, with the probe's observations as its last section (each
/// capability: what the backend showed, and whether the profile lists it).
fn describe_here(backend: &Backend, workdir: &Path) -> Result<Description, String> {
    let mut instances = Instances::new(backend, workdir, &BTreeMap::new())
        .map_err(|e| format!("backend '{}' did not come up: {e:#}", backend.name))?;
    let described = instances.describe();
    // Whatever happened, the backend is put back as it was found.
    let (problems, _) = instances.finish();
    let (mut description, observed) =
        described.map_err(|e| format!("backend '{}': {e:#}", backend.name))?;
    if !problems.is_empty() {
        return Err(format!(
            "backend '{}' was not left as found after describing it: {}",
            backend.name,
            problems.join("; ")
        ));
    }
    if !observed.is_empty() {
        let rows = observed
            .iter()
            .map(|o| {
                let seen = match (o.has, o.exact) {
                    (true, true) => "present",
                    (true, false) => "not ruled out",
                    (false, _) => "absent",
                };
                let listed = if backend.has(o.capability) {
                    "the profile lists it"
                } else {
                    "the profile does not list it"
                };
                let verdict = if o.disagrees(backend.has(o.capability)) {
                    "; DISAGREES with the profile"
                } else {
                    ""
                };
                (
                    o.capability.to_string(),
                    format!("{seen} ({}; {listed}{verdict})", o.evidence),
                )
            })
            .collect();
        description.section(PROBE_SECTION, rows);
    }
    Ok(description)
}

/// In the runner: starts `hsm-harness describe` for `backend` with the run's program,
/// timeout and placement, and returns the description, or why there is none.
pub fn describe(backend: &Backend, options: &RunOptions) -> Result<Description, String> {
    let root = lifeline::run_dir().map_err(|e| format!("creating a work directory: {e}"))?;
    let containers = options.placement == Placement::Container;
    let janitor = Janitor::start(&options.program, &root, containers).ok();
    let workdir = root.join("describe");
    let mut command = Command::new(&options.program);
    command
        .arg("describe")
        .arg("--backend")
        .arg(&backend.path)
        .arg("--workdir")
        .arg(&workdir)
        .arg("--provider")
        .arg(options.placement.name());
    let answer = match supervise(&mut command, &workdir, "description", options) {
        Err((message, _)) => Err(message),
        Ok((status, log)) => match read(&workdir) {
            Some(Answer::Described(d)) if status.success() => Ok(d),
            Some(Answer::Failed(why)) => Err(why),
            _ => Err(match status.signal() {
                Some(sig) => format!(
                    "the process describing the backend was killed by signal {sig} ({})\n{}",
                    signal_name(sig),
                    tail(&log)
                ),
                None => format!(
                    "the process describing the backend exited with status {} without an answer\n{}",
                    status.code().unwrap_or(-1),
                    tail(&log)
                ),
            }),
        },
    };
    if containers {
        let _ = crate::backends::container::remove_labelled(
            crate::backends::container::CELL_LABEL,
            &workdir.display().to_string(),
        );
    }
    let _ = std::fs::remove_dir_all(&root);
    if let Some(j) = janitor {
        j.finish();
    }
    answer
}

fn read(workdir: &Path) -> Option<Answer> {
    let bytes = std::fs::read(workdir.join(DESCRIPTION_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}
