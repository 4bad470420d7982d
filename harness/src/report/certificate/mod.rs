//! `certify`'s conformance report: one data model, [`Certificate`], rendered as
//! Markdown ([`markdown`]) and as one self-contained HTML file ([`html`]).
//!
//! Contract:
//!
//! - The header says what was certified and how: the backend (name, about, provider,
//!   file, capability profile, and what it says about itself: its
//!   [`Description`], or why it could not be described), the harness's version, every
//!   suite file with its SHA-256, the UTC date and the command line.
//! - The verdict is **conformant** only when the backend could be described, no cell
//!   failed or errored, at least one cell ran, the run was not interrupted, and every
//!   required row of the function table passed ([`requirements`]); otherwise **not
//!   conformant**, with every reason. Skipped cases are listed with their reasons and do
//!   not break conformance by themselves.
//! - Then the function table (seed 001's PKCS#11 functions or KMIP operations, and the
//!   others the signer used), and a table per suite with every case, its outcome and,
//!   for failures and errors, the evidence: the message, the cell's PKCS#11 calls or
//!   KMIP exchanges, and the end of its log.
//! - Every string from outside the harness (suite text, backend and server output,
//!   logs) is escaped by the renderers; none can add markup.

pub mod html;
pub mod markdown;
pub mod requirements;

use std::path::Path;

use anyhow::Context;

use crate::backends::Description;
use crate::model::backend::Backend;
use crate::model::suite::Suite;
use crate::report::outcome::{CellResult, RunResult, Status, Tally};
use requirements::{cell_name, Interface, Row};

/// The most log lines a failed cell shows in the report (the JUnit file has all).
const LOG_TAIL_LINES: usize = 40;

/// What was certified, how, and how it went.
#[derive(Clone, Debug)]
pub struct Certificate {
    pub backend: BackendFacts,
    /// What the backend says about itself, or why it could not say.
    pub description: Result<Description, String>,
    /// `hsm-harness X.Y.Z`.
    pub harness: String,
    pub suites: Vec<SuiteFacts>,
    /// UTC, `YYYY-MM-DDTHH:MM:SSZ`.
    pub date: String,
    pub command: String,
    pub interface: Interface,
    pub rows: Vec<Row>,
    pub run: RunResult,
    pub verdict: Verdict,
    /// The other files of the certification, beside the report (names only).
    pub files: Vec<String>,
}

/// The backend as its file describes it.
#[derive(Clone, Debug)]
pub struct BackendFacts {
    pub name: String,
    pub about: String,
    pub provider: String,
    pub file: String,
    pub placement: String,
    pub capabilities: Vec<String>,
}

/// One suite file of the run.
#[derive(Clone, Debug)]
pub struct SuiteFacts {
    pub name: String,
    pub about: String,
    pub file: String,
    pub sha256: String,
}

/// The verdict and every reason it is not "conformant".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub conformant: bool,
    pub reasons: Vec<String>,
}

impl Verdict {
    pub fn word(&self) -> &'static str {
        if self.conformant {
            "conformant"
        } else {
            "not conformant"
        }
    }
}

/// What a certificate is made of.
pub struct Inputs<'a> {
    pub backend: &'a Backend,
    pub interface: Interface,
    pub suites: &'a [Suite],
    pub description: Result<Description, String>,
    pub run: RunResult,
    pub command: String,
    /// The signal that stopped the run, by name, if one did.
    pub interrupted: Option<String>,
    pub files: Vec<String>,
}

impl Certificate {
    /// Builds the certificate; reads the suite files to checksum them.
    pub fn new(inputs: Inputs<'_>) -> anyhow::Result<Certificate> {
        let backend = inputs.backend;
        let mut suites = Vec::new();
        for s in inputs.suites {
            let bytes = std::fs::read(&s.path)
                .with_context(|| format!("reading {} to checksum it", s.path.display()))?;
            suites.push(SuiteFacts {
                name: s.name.clone(),
                about: s.about.clone(),
                file: s.path.display().to_string(),
                sha256: sha256_hex(&bytes),
            });
        }
        let rows = requirements::rows(
            inputs.interface,
            &inputs.run.cells,
            inputs.description.as_ref().ok(),
        );
        let verdict = verdict(
            &inputs.description,
            inputs.interface,
            &rows,
            &inputs.run.cells,
            inputs.interrupted.as_deref(),
        );
        Ok(Certificate {
            backend: BackendFacts {
                name: backend.name.clone(),
                about: backend.about.clone(),
                provider: backend.provider_name().to_string(),
                file: backend.path.display().to_string(),
                placement: backend.placement.name().to_string(),
                capabilities: backend.capabilities.iter().map(|c| c.to_string()).collect(),
            },
            description: inputs.description,
            harness: format!("hsm-harness {}", env!("CARGO_PKG_VERSION")),
            suites,
            date: crate::report::clock::utc_now(),
            command: inputs.command,
            interface: inputs.interface,
            rows,
            run: inputs.run,
            verdict,
            files: inputs.files,
        })
    }

    pub fn tally(&self) -> Tally {
        Tally::of(&self.run.cells)
    }

    /// The cells of suite `name`, in run order.
    pub fn cells_of<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a CellResult> + 'a {
        self.run.cells.iter().filter(move |c| c.suite == name)
    }

    /// Writes `report.md` and `report.html` into `dir` (created if missing).
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for (name, text) in [
            (MARKDOWN_FILE, markdown::render(self)),
            (HTML_FILE, html::render(self)),
        ] {
            let path = dir.join(name);
            let tmp = dir.join(format!(".{name}.tmp"));
            std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
            std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }
}

/// The Markdown report's file name.
pub const MARKDOWN_FILE: &str = "report.md";
/// The HTML report's file name.
pub const HTML_FILE: &str = "report.html";

/// The verdict over everything the certificate knows.
fn verdict(
    description: &Result<Description, String>,
    interface: Interface,
    rows: &[Row],
    cells: &[CellResult],
    interrupted: Option<&str>,
) -> Verdict {
    let mut reasons = Vec::new();
    if let Err(why) = description {
        reasons.push(format!("the backend could not be described: {why}"));
    }
    if let Some(sig) = interrupted {
        reasons.push(format!(
            "the run was interrupted by {sig}: not every case ran"
        ));
    }
    let broken: Vec<String> = cells
        .iter()
        .filter(|c| matches!(c.status, Status::Failed { .. } | Status::Errored { .. }))
        .map(|c| format!("{} ({})", cell_name(c), c.status.label()))
        .collect();
    if !broken.is_empty() {
        reasons.push(format!(
            "{} cases failed or errored: {}",
            broken.len(),
            broken.join("; ")
        ));
    }
    if cells
        .iter()
        .all(|c| matches!(c.status, Status::Skipped { .. }))
    {
        reasons.push("no case ran on this backend".to_string());
    }
    for row in rows.iter().filter(|r| r.blocks()) {
        let (word, why) = match &row.status {
            requirements::RowStatus::Failed(t) => ("failed", t),
            requirements::RowStatus::Skipped(t) => ("was not exercised", t),
            requirements::RowStatus::Passed(t) => ("passed", t),
        };
        reasons.push(format!(
            "required {} {} {word}: {why}",
            interface.noun(),
            row.name
        ));
    }
    Verdict {
        conformant: reasons.is_empty(),
        reasons,
    }
}

/// A cell's evidence for a report: its calls or exchanges, as the property says them.
pub fn evidence(cell: &CellResult, interface: Interface) -> Option<&str> {
    cell.properties
        .iter()
        .find(|(k, _)| k == interface.property())
        .map(|(_, v)| v.as_str())
}

/// The last [`LOG_TAIL_LINES`] lines of a cell's log, and whether lines were left out.
pub fn log_tail(cell: &CellResult) -> (String, bool) {
    let lines: Vec<&str> = cell.log.lines().collect();
    let from = lines.len().saturating_sub(LOG_TAIL_LINES);
    (lines[from..].join("\n"), from > 0)
}

/// What a cell's outcome says, in one text: the reason or message, if any.
pub fn outcome_text(cell: &CellResult) -> &str {
    match &cell.status {
        Status::Passed => "",
        Status::Failed { message } | Status::Errored { message } => message,
        Status::Skipped { reason } => reason,
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use rstest::rstest;

    use super::requirements::{Need, RowStatus, Support};
    use super::*;
    use crate::report::evidence::PKCS11_CALLS;

    #[test]
    fn sha256_is_hex() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    pub(crate) fn cell(case: &str, status: Status) -> CellResult {
        CellResult {
            suite: "baseline".into(),
            backend: "ext".into(),
            case: case.into(),
            status,
            duration: Duration::from_millis(250),
            properties: vec![],
            log: String::new(),
        }
    }

    fn passing_row(name: &str) -> Row {
        Row {
            name: name.into(),
            need: Need::Required,
            note: "",
            supported: Support::Unknown,
            status: RowStatus::Passed("ok".into()),
            answers: String::new(),
        }
    }

    /// The verdict's rules: (what went wrong, a word its reason must say); `None`:
    /// conformant.
    #[rstest]
    #[case::all_good(None, None)]
    #[case::not_described(Some("describe"), Some("could not be described: refused"))]
    #[case::failed_cell(Some("fail"), Some("1 cases failed or errored: baseline / b (FAIL)"))]
    #[case::blocking_row(Some("row"), Some("required PKCS#11 function C_Sign failed: boom"))]
    #[case::nothing_ran(Some("skip"), Some("no case ran"))]
    #[case::interrupted(Some("signal"), Some("interrupted by SIGINT"))]
    fn verdict_rules(#[case] wrong: Option<&str>, #[case] said: Option<&str>) {
        let description = match wrong {
            Some("describe") => Err("refused".to_string()),
            _ => Ok(Description::default()),
        };
        let mut cells = vec![
            cell("a", Status::Passed),
            cell(
                "s",
                Status::Skipped {
                    reason: "lacks x".into(),
                },
            ),
        ];
        match wrong {
            Some("fail") => cells.push(cell(
                "b",
                Status::Failed {
                    message: "m".into(),
                },
            )),
            Some("skip") => {
                cells.remove(0);
            }
            _ => {}
        }
        let mut rows = vec![passing_row("C_Sign")];
        if wrong == Some("row") {
            rows[0].status = RowStatus::Failed("boom".into());
        }
        let interrupted = (wrong == Some("signal")).then_some("SIGINT");
        let v = verdict(&description, Interface::Pkcs11, &rows, &cells, interrupted);
        match said {
            None => assert_eq!(
                v,
                Verdict {
                    conformant: true,
                    reasons: vec![]
                }
            ),
            Some(said) => {
                assert!(!v.conformant);
                assert!(
                    v.reasons.iter().any(|r| r.contains(said)),
                    "{:?}",
                    v.reasons
                );
            }
        }
    }

    /// A certificate with hostile strings everywhere, for the renderers' tests.
    pub(crate) fn hostile() -> Certificate {
        let evil = "<script>alert(1)</script> | *x* `y` & \"q\" 'a' [l](u) # h\n\x1b[31mred";
        let mut failed = cell(
            evil,
            Status::Failed {
                message: format!("step 2: {evil}"),
            },
        );
        failed.properties = vec![(
            PKCS11_CALLS.into(),
            "C_Sign=1 CKR_FUNCTION_NOT_SUPPORTED [injected by the backend file]".into(),
        )];
        failed.log = format!("line 1\n{evil}\n```\nend ]]> </pre>");
        let skipped = cell(
            "skipped case",
            Status::Skipped {
                reason: format!("lacks {evil}"),
            },
        );
        let mut description = Description::default();
        description.section(evil, vec![(evil.into(), evil.into())]);
        let cells = vec![cell("fine", Status::Passed), failed, skipped];
        let rows = requirements::rows(Interface::Pkcs11, &cells, Some(&description));
        let verdict = verdict(
            &Ok(description.clone()),
            Interface::Pkcs11,
            &rows,
            &cells,
            None,
        );
        Certificate {
            backend: BackendFacts {
                name: format!("ext{evil}"),
                about: evil.into(),
                provider: "pkcs11".into(),
                file: "/tmp/ext.yaml".into(),
                placement: "local".into(),
                capabilities: vec!["rsa2048".into(), "pkcs11".into()],
            },
            description: Ok(description),
            harness: "hsm-harness 0.1.0".into(),
            suites: vec![SuiteFacts {
                name: "baseline".into(),
                about: evil.into(),
                file: "suites/baseline.yaml".into(),
                sha256: "ab".repeat(32),
            }],
            date: "2025-01-01T00:00:00Z".into(),
            command: format!("hsm-harness certify --backend '{evil}'"),
            interface: Interface::Pkcs11,
            rows,
            run: RunResult {
                cells,
                partition: None,
            },
            verdict,
            files: vec!["junit.xml".into(), "results.json".into()],
        }
    }
}
