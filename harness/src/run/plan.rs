//! The plan of a run: the matrix of suite case x backend in order, the selectors that
//! choose cells from it, and why a cell would be skipped (a backend that cannot start
//! here, a capability the profile lacks) before anything is started.

use anyhow::Context;
use globset::{Glob, GlobMatcher};

use crate::model::backend::Backend;
use crate::model::suite::Suite;

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
}

/// The suites and backends of a run and the cells chosen from them.
pub struct Plan {
    pub suites: Vec<Suite>,
    pub backends: Vec<Backend>,
    pub cells: Vec<PlannedCell>,
}

impl Plan {
    /// The matrix in order: suite, then backend, then case.
    ///
    /// Refused: a `--backend` naming no loaded backend, or a filter that is not a glob.
    pub fn new(
        suites: Vec<Suite>,
        backends: Vec<Backend>,
        selection: &Selection,
    ) -> anyhow::Result<Plan> {
        for wanted in &selection.backends {
            if !backends.iter().any(|b| &b.name == wanted) {
                let known: Vec<&str> = backends.iter().map(|b| b.name.as_str()).collect();
                anyhow::bail!("no backend named '{wanted}' (known: {})", known.join(", "));
            }
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
                        let id = format!("{}.{}/{}", suite.name, backend.name, case.name);
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
        Ok(Plan {
            suites,
            backends,
            cells,
        })
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
        if let Some(c) = backend.missing(&case.requires) {
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
