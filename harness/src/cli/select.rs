//! What `run` and `list` select: suites, backends, a name filter and tags, a shard of
//! the result (`--partition`), and the plan of cells loaded from them. A suite or backend file that does not load is bad
//! input (exit 2), every error printed with its file, line and column.

use std::path::{Path, PathBuf};

use clap::Args;

use super::{bad_input, EXIT_BAD_INPUT};
use crate::model::backend::{Backend, Placement};
use crate::model::builtin::{self, Kind, Origin};
use crate::model::suite::{files_in, Suite, SuiteError};
use crate::run::partition::Partition;
use crate::run::runner::{Plan, Selection};

#[derive(Args, Clone)]
pub struct SelectArgs {
    /// A suite to run (repeatable): a file, or the name of one of the suites
    /// (`tls-enforcement` for tls-enforcement.yaml); default: every suite.
    #[arg(long = "suite", value_name = "FILE|NAME")]
    pub suites: Vec<PathBuf>,
    /// A backend to run against, by name (repeatable); default: every backend file.
    #[arg(long = "backend", value_name = "NAME")]
    pub backends: Vec<String>,
    /// Only cases whose name, or `suite.backend/case`, matches this glob.
    #[arg(long, value_name = "GLOB")]
    pub filter: Option<String>,
    /// Only cases whose suite or case has this tag (repeatable; any matches).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Only shard K of N of the cells the other selectors choose (1 ≤ K ≤ N), for
    /// spreading a run over N CI jobs: the N shards are disjoint and together hold
    /// every cell. A cell's shard follows from its name `suite.backend/case` alone
    /// (SHA-256), so adding a case moves no other cell.
    #[arg(long, value_name = "K/N")]
    pub partition: Option<Partition>,
    /// A backend that must start here (repeatable): its cells are errors, not skips,
    /// when it cannot (a missing module, server program or binary).
    #[arg(long = "require-backend", value_name = "NAME")]
    pub required: Vec<String>,
    /// Every selected backend must start here: a cell whose backend cannot is an
    /// error, so a run that skipped a whole backend is never green. CI uses it.
    #[arg(long)]
    pub strict: bool,
    /// Let cases wipe, re-PIN or plant impostor keys on an existing backend (a
    /// vendor's token or server, providers `pkcs11` and `kmip`). Without it those cases
    /// are skipped with the reason. Objects there before the run can then be lost.
    #[arg(long)]
    pub allow_destructive: bool,
    /// Where the backends' servers run: `local` (processes of this host) or
    /// `container` (each backend's container twin, through the Docker API engine that
    /// DOCKER_HOST names; podman works). Under `container` only backends with a twin
    /// run (softhsm, relay and pykmip kinds), and reports name them `NAME@container`.
    #[arg(long, value_enum, value_name = "WHERE", default_value_t = Placement::Local)]
    pub provider: Placement,
    /// Where the suites are [default: `suites` in the working directory if there is
    /// one, else the suites built into this binary]
    #[arg(long, value_name = "DIR")]
    pub suites_dir: Option<PathBuf>,
    /// Where the backend files are [default: `fixtures/backends` in the working
    /// directory if there is one, else the backend files built into this binary]
    #[arg(long, value_name = "DIR")]
    pub backends_dir: Option<PathBuf>,
}

/// Where the suites and the backend files come from (see [`builtin::resolve`]).
pub fn sources(select: &SelectArgs) -> Result<(Origin, Origin), i32> {
    let resolve = |given: &Option<PathBuf>, kind| {
        builtin::resolve(given.as_deref(), kind).map_err(|e| {
            bad_input(format!(
                "no {} directory here and the built-in ones cannot be written out: {e} \
                 (give --{}-dir)",
                kind.default_dir(),
                if kind == Kind::Suites {
                    "suites"
                } else {
                    "backends"
                }
            ))
        })
    };
    Ok((
        resolve(&select.suites_dir, Kind::Suites)?,
        resolve(&select.backends_dir, Kind::Backends)?,
    ))
}

/// A `--suite` value: the file if it exists, else `DIR/NAME.yaml` for a bare name.
fn suite_path(given: &Path, dir: &Path) -> PathBuf {
    let bare = given.components().count() == 1 && given.extension().is_none();
    let named = dir.join(given).with_extension("yaml");
    if !given.exists() && bare && named.exists() {
        named
    } else {
        given.to_path_buf()
    }
}

/// Loads the selected suites and every backend file; errors are bad input.
pub fn load(select: &SelectArgs) -> Result<Plan, i32> {
    let (suites_from, backends_from) = sources(select)?;
    let suite_files = if select.suites.is_empty() {
        files_in(suites_from.dir()).map_err(|e| {
            bad_input(format!(
                "cannot list suites in {}: {e} (give --suites-dir)",
                suites_from.dir().display()
            ))
        })?
    } else {
        select
            .suites
            .iter()
            .map(|s| suite_path(s, suites_from.dir()))
            .collect()
    };
    let backend_files = files_in(backends_from.dir()).map_err(|e| {
        bad_input(format!(
            "cannot list backends in {}: {e} (give --backends-dir)",
            backends_from.dir().display()
        ))
    })?;
    let mut errors: Vec<SuiteError> = Vec::new();
    let mut suites = Vec::new();
    for f in &suite_files {
        match Suite::load(f) {
            Ok(s) => suites.push(s),
            Err(e) => errors.push(e),
        }
    }
    let mut backends = Vec::new();
    for f in &backend_files {
        match Backend::load(f) {
            Ok(b) => backends.push(b),
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        for e in &errors {
            eprintln!("error: {e}");
        }
        return Err(EXIT_BAD_INPUT);
    }
    for b in &mut backends {
        b.allow_destructive = select.allow_destructive;
    }
    let (backends, without_twin) = place(backends, select.provider);
    let placed_name = |name: &String| {
        if name.contains('@') {
            name.clone()
        } else {
            format!("{name}{}", select.provider.suffix())
        }
    };
    for wanted in select.backends.iter().chain(&select.required) {
        if without_twin.contains(wanted) {
            return Err(bad_input(format!(
                "backend '{wanted}' has no container twin (--provider container runs: {})",
                backends
                    .iter()
                    .map(|b| b.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    if !without_twin.is_empty() && select.backends.is_empty() {
        eprintln!(
            "note: not run under --provider {} (no container twin): {}",
            select.provider.name(),
            without_twin.join(", ")
        );
    }
    let selection = Selection {
        backends: select.backends.iter().map(placed_name).collect(),
        filter: select.filter.clone(),
        tags: select.tags.clone(),
        required: select.required.iter().map(placed_name).collect(),
        strict: select.strict,
        partition: select.partition,
    };
    Plan::new(suites, backends, &selection).map_err(|e| bad_input(format!("{e:#}")))
}

/// The backends where `placement` puts them, and the names of those it cannot (kinds
/// without a container twin).
fn place(backends: Vec<Backend>, placement: Placement) -> (Vec<Backend>, Vec<String>) {
    let mut placed = Vec::new();
    let mut without = Vec::new();
    for b in backends {
        let name = b.name.clone();
        match b.placed(placement) {
            Ok(b) => placed.push(b),
            Err(_) => without.push(name),
        }
    }
    (placed, without)
}
