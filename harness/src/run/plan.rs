//! The plan of a run: the matrix of suite case x backend in order, the selectors that
//! choose cells from it, and why a cell would be skipped (a backend that cannot start
//! here, a capability the profile lacks) before anything is started.

use anyhow::Context;
use globset::{Glob, GlobMatcher};

use crate::model::backend::Backend;
use crate::model::suite::Suite;
use crate::run::partition::Partition;

/// One cell of the matrix, by index into the plan's suites and backends.
#[derive(Clone, Copy, Debug)]
pub struct PlannedCell {
    pub suite: usize,
    pub case: usize,
    pub backend: usize,
}

/// Which cells to run.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// Backend names; empty = all.
    pub backends: Vec<String>,
    /// Glob over case names and over `suite.backend/case`.
    pub filter: Option<String>,
    /// Suite or case tags; empty = all. A cell is selected if it has any of them.
    pub tags: Vec<String>,
    /// Backends that must start here: a cell on one that cannot is an error, not a
    /// skip (`--require-backend`).
    pub required: Vec<String>,
    /// Every selected backend must start (`--strict`).
    pub strict: bool,
    /// Only the cells of this shard (`--partition k/n`), after every other selector.
    pub partition: Option<Partition>,
}

/// A cell's full name: `suite.backend/case`.
pub fn cell_name(suite: &str, backend: &str, case: &str) -> String {
    format!("{suite}.{backend}/{case}")
}

/// What happens to a cell before anything is started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Before {
    /// It runs.
    Run,
    /// It is skipped, with the reason: a capability the profile lacks or has, or a
    /// backend or harness part that is missing here.
    Skip(String),
    /// It is an error: a backend that must start cannot (`--strict`,
    /// `--require-backend`).
    Error(String),
}

/// The suites and backends of a run and the cells chosen from them.
pub struct Plan {
    pub suites: Vec<Suite>,
    pub backends: Vec<Backend>,
    pub cells: Vec<PlannedCell>,
    /// The shard of the selected cells that `cells` holds, if the run is partitioned.
    pub partition: Option<Partition>,
    /// How many cells the selectors chose before partitioning: a shard may be empty
    /// when they chose some.
    pub selected: usize,
    /// Names of the backends that must start (see [`Selection::required`]).
    required: Vec<String>,
    strict: bool,
}

impl Plan {
    /// The matrix in order: suite, then backend, then case.
    ///
    /// Refused: a `--backend` or `--require-backend` naming no loaded backend, a
    /// required backend that `--backend` leaves out, or a filter that is not a glob.
    pub fn new(
        suites: Vec<Suite>,
        backends: Vec<Backend>,
        selection: &Selection,
    ) -> anyhow::Result<Plan> {
        for wanted in selection.backends.iter().chain(&selection.required) {
            if !backends.iter().any(|b| &b.name == wanted) {
                let known: Vec<&str> = backends.iter().map(|b| b.name.as_str()).collect();
                anyhow::bail!("no backend named '{wanted}' (known: {})", known.join(", "));
            }
        }
        if let Some(left_out) = selection
            .required
            .iter()
            .find(|r| !selection.backends.is_empty() && !selection.backends.contains(r))
        {
            anyhow::bail!("--require-backend {left_out} is not among the --backend selected");
        }
        let filter: Option<GlobMatcher> = selection
            .filter
            .as_deref()
            .map(|g| Glob::new(g).map(|g| g.compile_matcher()))
            .transpose()
            .context("--filter is not a valid glob")?;
        let mut cells = Vec::new();
        for (si, suite) in suites.iter().enumerate() {
            for (bi, backend) in backends.iter().enumerate() {
                if !selection.backends.is_empty() && !selection.backends.contains(&backend.name) {
                    continue;
                }
                for (ci, case) in suite.cases.iter().enumerate() {
                    if let Some(f) = &filter {
                        let id = cell_name(&suite.name, &backend.name, &case.name);
                        if !f.is_match(&case.name) && !f.is_match(&id) {
                            continue;
                        }
                    }
                    if !selection.tags.is_empty()
                        && !suite
                            .tags
                            .iter()
                            .chain(&case.tags)
                            .any(|t| selection.tags.contains(t))
                    {
                        continue;
                    }
                    cells.push(PlannedCell {
                        suite: si,
                        case: ci,
                        backend: bi,
                    });
                }
            }
        }
        let selected = cells.len();
        let mut plan = Plan {
            suites,
            backends,
            cells,
            partition: selection.partition,
            selected,
            required: selection.required.clone(),
            strict: selection.strict,
        };
        if let Some(p) = selection.partition {
            let cells = std::mem::take(&mut plan.cells);
            plan.cells = cells
                .into_iter()
                .filter(|c| p.contains(&plan.name(c)))
                .collect();
        }
        Ok(plan)
    }

    /// The cell's full name, `suite.backend/case`: what `--filter` matches and what
    /// `--partition` shards by.
    pub fn name(&self, cell: &PlannedCell) -> String {
        let suite = &self.suites[cell.suite];
        cell_name(
            &suite.name,
            &self.backends[cell.backend].name,
            &suite.cases[cell.case].name,
        )
    }

    /// Whether a cell runs, is skipped or is an error before it starts. A backend that
    /// cannot start here skips its cells, unless the run is strict or requires that
    /// backend: then they are errors, so a missing backend never makes a green run.
    pub fn before(&self, cell: &PlannedCell) -> Before {
        let backend = &self.backends[cell.backend];
        let must_start = self.strict || self.required.contains(&backend.name);
        let cannot_start = backend
            .unavailable_reason()
            .map(|reason| format!("backend '{}' cannot start here: {reason}", backend.name));
        match (cannot_start, self.skip_reason(cell)) {
            (Some(reason), _) if must_start => Before::Error(reason),
            (_, Some(reason)) => Before::Skip(reason),
            (_, None) => Before::Run,
        }
    }

    /// Why a cell will not run here, if it will not.
    pub fn skip_reason(&self, cell: &PlannedCell) -> Option<String> {
        let backend = &self.backends[cell.backend];
        if let Some(reason) = backend.unavailable_reason() {
            return Some(format!(
                "backend '{}' cannot start here: {reason}",
                backend.name
            ));
        }
        let case = &self.suites[cell.suite].cases[cell.case];
        if backend.provider.existing() && !backend.allow_destructive && !case.destructive.is_empty()
        {
            return Some(format!(
                "the case {}; backend '{}' is an existing {} backend the harness does not own \
                 (run with --allow-destructive to allow it)",
                case.destructive.join(" and "),
                backend.name,
                backend.provider.name()
            ));
        }
        if let Some(why) = case
            .instance_names
            .iter()
            .find_map(|n| backend.provider.lacks_instance(n))
        {
            return Some(format!("backend '{}': {why}", backend.name));
        }
        if let Some(c) = backend.missing(&case.requires) {
            if let Some((_, why)) = backend.withdrawn.iter().find(|(w, _)| *w == c) {
                return Some(format!(
                    "backend '{}' lacks capability '{c}' under the container provider: {why}",
                    backend.name
                ));
            }
            return Some(format!(
                "backend '{}' lacks capability '{c}' (capability profile in {})",
                backend.name,
                backend.path.display()
            ));
        }
        if let Some(c) = case.lacks.iter().find(|c| backend.has(**c)) {
            return Some(format!(
                "backend '{}' has capability '{c}'; the case is for backends without it (capability profile in {})",
                backend.name,
                backend.path.display()
            ));
        }
        if case.shim.is_some() {
            if let Err(reason) = crate::backends::shim::library() {
                return Some(format!("the case needs the PKCS#11 shim: {reason}"));
            }
        }
        None
    }
}
