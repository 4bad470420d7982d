//! The function table of a certification: seed 001's required PKCS#11 functions or
//! KMIP operations, and the others the signer used, each with what the backend's
//! answers in every cell say about it.
//!
//! Contract, per row (one function or operation, over the cells of the run):
//!
//! - Only the backend's answers count (the module's or server's, and those of the
//!   backend file's shim rules); answers a case injected are scaffolding and ignored.
//! - **failed** when a cell that failed or errored got an error from it (named with
//!   the cells), or when it was called and never worked;
//! - **passed** when it worked at least once (succeeded, or found the state it asks for
//!   holding already: CKR_USER_ALREADY_LOGGED_IN, CKR_CRYPTOKI_ALREADY_INITIALIZED) and
//!   no failed or errored cell got an error from it;
//! - **skipped** when no cell's evidence shows the backend answering it, with why
//!   (the cases that would have were skipped, and for what; or a documented reason the
//!   signer never calls it, which then does not count against the verdict).
//! - **supported**: yes when the backend answered anything but "not supported" (or
//!   the server's Query lists the operation), no when it only answered "not
//!   supported" (or Query does not list it and it never worked), unknown otherwise.
//!
//! Answers that are part of an ordinary conversation (a length query's
//! CKR_BUFFER_TOO_SMALL, an attribute an object does not have, Item Not Found for a key
//! a case destroyed) are not errors either.

use std::collections::BTreeMap;

use crate::backends::Description;
use crate::report::evidence::{Exchanges, KMIP_EXCHANGES, PKCS11_CALLS};
use crate::report::outcome::{CellResult, Status};

/// The most cells a row names; the rest are counted.
const NAMED_CELLS: usize = 5;

/// How the signer under test reaches the backend, and so which table applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interface {
    Pkcs11,
    Kmip,
}

/// Whether seed 001 requires a function or operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// In seed 001's table: it must pass for the backend to be conformant.
    Required,
    /// Required, but the signer never calls it, for the reason given: it cannot be
    /// exercised, and does not count against the verdict.
    Waived(&'static str),
    /// Not in seed 001's table, but the signer used it or can use it.
    Used,
}

/// One entry of a table: a name, whether it is required, and a note.
#[derive(Clone, Copy, Debug)]
pub struct Requirement {
    pub name: &'static str,
    pub need: Need,
    pub note: &'static str,
}

const fn required(name: &'static str, note: &'static str) -> Requirement {
    Requirement {
        name,
        need: Need::Required,
        note,
    }
}

const fn used(name: &'static str, note: &'static str) -> Requirement {
    Requirement {
        name,
        need: Need::Used,
        note,
    }
}

/// Seed 001's PKCS#11 functions (its "C_DeleteObject" is C_DestroyObject), then those
/// the PKCS#11 signer also uses. The harness keeps its own copy of the seed's table:
/// certification must not trust the signer under test to say what is required.
pub const PKCS11: &[Requirement] = &[
    required("C_Initialize", ""),
    Requirement {
        name: "C_Finalize",
        need: Need::Waived(
            "the PKCS#11 signer never calls C_Finalize: it keeps a module loaded for the \
             life of its process (the required-functions suite shows that a module \
             without it loses nothing)",
        ),
        note: "",
    },
    required("C_GetInfo", ""),
    required("C_GetSlotList", ""),
    required("C_GetSlotInfo", ""),
    required("C_GetTokenInfo", ""),
    required("C_OpenSession", ""),
    required("C_Login", ""),
    required("C_FindObjectsInit", ""),
    required("C_FindObjects", ""),
    required("C_FindObjectsFinal", ""),
    required("C_GetAttributeValue", ""),
    required("C_SignInit", ""),
    required("C_Sign", ""),
    required("C_DestroyObject", "seed 001 writes C_DeleteObject"),
    used("C_GenerateKeyPair", "creates every key pair"),
    used(
        "C_GenerateRandom",
        "random values; the router falls back to the software signer without it",
    ),
    used("C_GetMechanismList", "which algorithms the token offers"),
    used(
        "C_CreateObject",
        "the connect-time probe's session object, which C_DestroyObject then removes",
    ),
];

/// Seed 001's KMIP operations, then those the KMIP signer also uses.
pub const KMIP: &[Requirement] = &[
    required(
        "Query",
        "asked at connect: must list the required operations",
    ),
    required("Create Key Pair", ""),
    required("Activate", "the private key, before Sign"),
    required("Get", "the public key"),
    required(
        "Modify Attribute",
        "names a new pair's halves after their key identifier",
    ),
    required("Sign", ""),
    required("Revoke", "before Destroy"),
    required("Destroy", ""),
    used(
        "Discover Versions",
        "asked at connect; without an answer KMIP 1.2 is assumed",
    ),
    used(
        "Locate",
        "finds a key without a recorded handle, where Query offers it",
    ),
    used(
        "Get Attributes",
        "reads the names of a pair a kill left half-made",
    ),
    used(
        "RNG Retrieve",
        "random values; the router falls back to the software signer without it",
    ),
];

impl Interface {
    /// The property of a cell's evidence for this interface.
    pub fn property(self) -> &'static str {
        match self {
            Interface::Pkcs11 => PKCS11_CALLS,
            Interface::Kmip => KMIP_EXCHANGES,
        }
    }

    /// The table's entries.
    pub fn requirements(self) -> &'static [Requirement] {
        match self {
            Interface::Pkcs11 => PKCS11,
            Interface::Kmip => KMIP,
        }
    }

    /// What a row is, in prose: "function" or "operation".
    pub fn noun(self) -> &'static str {
        match self {
            Interface::Pkcs11 => "PKCS#11 function",
            Interface::Kmip => "KMIP operation",
        }
    }

    /// Whether `result` shows the function working: success, or (PKCS#11) the state
    /// the call asks for holding already (another session of the process logged in,
    /// another user of the module initialised it).
    fn worked(self, result: &str) -> bool {
        match self {
            Interface::Pkcs11 => matches!(
                result,
                "CKR_OK" | "CKR_USER_ALREADY_LOGGED_IN" | "CKR_CRYPTOKI_ALREADY_INITIALIZED"
            ),
            Interface::Kmip => result == "Success",
        }
    }

    fn is_not_supported(self, result: &str) -> bool {
        match self {
            Interface::Pkcs11 => result == "CKR_FUNCTION_NOT_SUPPORTED",
            Interface::Kmip => result.contains("Operation Not Supported"),
        }
    }

    /// Whether `result` is an error rather than success or an ordinary turn of the
    /// conversation.
    fn is_error(self, result: &str) -> bool {
        if self.worked(result) {
            return false;
        }
        match self {
            Interface::Pkcs11 => !matches!(
                result,
                "CKR_BUFFER_TOO_SMALL" | "CKR_ATTRIBUTE_TYPE_INVALID" | "CKR_ATTRIBUTE_SENSITIVE"
            ),
            Interface::Kmip => {
                !(result.contains("Item Not Found") || result.contains("Object Not Found"))
            }
        }
    }
}

/// Whether the backend supports a row's function or operation, and the evidence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Support {
    Yes(String),
    No(String),
    Unknown,
}

/// How a row went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RowStatus {
    Passed(String),
    Failed(String),
    Skipped(String),
}

/// One row of the table.
#[derive(Clone, Debug)]
pub struct Row {
    pub name: String,
    pub need: Need,
    pub note: &'static str,
    pub supported: Support,
    pub status: RowStatus,
    /// The backend's answers over all cells, e.g. "CKR_OK ×12, CKR_FUNCTION_NOT_SUPPORTED ×1".
    pub answers: String,
}

impl Row {
    /// Whether the row keeps the backend from being conformant.
    pub fn blocks(&self) -> bool {
        self.need == Need::Required && !matches!(self.status, RowStatus::Passed(_))
    }
}

/// A cell's name in a row: `suite / case`.
pub fn cell_name(cell: &CellResult) -> String {
    format!("{} / {}", cell.suite, cell.case)
}

/// The table for `interface` over `cells`: the listed entries first, in their order,
/// then every other name the evidence shows, in name order. `description` gives the
/// server's Query (its `operations` section) for KMIP.
pub fn rows(
    interface: Interface,
    cells: &[CellResult],
    description: Option<&Description>,
) -> Vec<Row> {
    let evidence: Vec<(&CellResult, Option<Exchanges>)> = cells
        .iter()
        .map(|c| {
            let e = c
                .properties
                .iter()
                .find(|(k, _)| k == interface.property())
                .and_then(|(_, v)| Exchanges::parse(v).ok());
            (c, e)
        })
        .collect();
    let mut names: Vec<(String, Need, &'static str)> = interface
        .requirements()
        .iter()
        .map(|r| (r.name.to_string(), r.need, r.note))
        .collect();
    let mut others: Vec<String> = evidence
        .iter()
        .filter_map(|(_, e)| e.as_ref())
        .flat_map(|e| e.iter().map(|(n, _)| n.to_string()))
        .filter(|n| !names.iter().any(|(listed, _, _)| listed == n))
        .collect();
    others.sort();
    others.dedup();
    names.extend(others.into_iter().map(|n| (n, Need::Used, "")));
    let listed_by_query = match interface {
        Interface::Kmip => description.and_then(|d| d.rows("operations")),
        Interface::Pkcs11 => None,
    };
    names
        .into_iter()
        .map(|(name, need, note)| row(interface, &name, need, note, &evidence, listed_by_query))
        .collect()
}

fn row(
    interface: Interface,
    name: &str,
    need: Need,
    note: &'static str,
    evidence: &[(&CellResult, Option<Exchanges>)],
    query: Option<&[(String, String)]>,
) -> Row {
    let mut answers: BTreeMap<String, u64> = BTreeMap::new();
    let (mut total, mut successes, mut not_supported) = (0u64, 0u64, 0u64);
    let mut failing: Vec<String> = Vec::new();
    let mut only_injected = false;
    for (cell, exchanges) in evidence {
        let Some(per) = exchanges.as_ref().and_then(|e| e.answers(name)) else {
            continue;
        };
        let broken = matches!(cell.status, Status::Failed { .. } | Status::Errored { .. });
        for (answer, n) in per {
            if !answer.origin.is_backends() {
                only_injected = true;
                continue;
            }
            *answers.entry(answer.to_string()).or_insert(0) += n;
            total += n;
            if interface.worked(&answer.result) {
                successes += n;
            }
            if interface.is_not_supported(&answer.result) {
                not_supported += n;
            }
            if broken && interface.is_error(&answer.result) {
                let named = format!("{} in '{}'", answer, cell_name(cell));
                if !failing.contains(&named) {
                    failing.push(named);
                }
            }
        }
    }
    let answered = answers
        .iter()
        .map(|(a, n)| format!("{a} ×{n}"))
        .collect::<Vec<_>>()
        .join(", ");
    let status = if !failing.is_empty() {
        RowStatus::Failed(format!(
            "a failed or errored cell got an error from it: {}",
            name_some(&failing)
        ))
    } else if successes > 0 {
        RowStatus::Passed(format!(
            "worked {successes} times; no failed or errored cell got an error from it"
        ))
    } else if total > 0 {
        RowStatus::Failed(format!("called {total} times, never successfully"))
    } else if let Need::Waived(why) = need {
        RowStatus::Skipped(why.to_string())
    } else if only_injected {
        RowStatus::Skipped(
            "only called where the case injected the answer: no cell shows the backend's own"
                .to_string(),
        )
    } else {
        RowStatus::Skipped(why_not_called(interface, evidence))
    };
    // The describe's `operations` section also has a row, "not listed ...", for each
    // operation the signer requires that Query omits.
    let query_lists = query.map(|rows| {
        rows.iter().any(|(field, value)| {
            (field.trim().eq_ignore_ascii_case(name) && !value.trim().starts_with("not listed"))
                || value.trim().eq_ignore_ascii_case(name)
        })
    });
    // What the backend did outweighs what its Query says.
    let supported = match (query_lists, successes, total, not_supported) {
        (Some(false), s, _, _) if s > 0 => {
            Support::Yes("it worked, though the server's Query does not list it".to_string())
        }
        (_, s, _, _) if s > 0 => Support::Yes("it worked".to_string()),
        (_, _, t, n) if t > 0 && n == t => Support::No(format!(
            "the backend answered every call {}",
            match interface {
                Interface::Pkcs11 => "CKR_FUNCTION_NOT_SUPPORTED",
                Interface::Kmip => "Operation Not Supported",
            }
        )),
        (Some(true), _, _, _) => Support::Yes("the server's Query lists it".to_string()),
        (Some(false), _, _, _) => Support::No("the server's Query does not list it".to_string()),
        (_, _, t, _) if t > 0 => Support::Yes("the backend answered it, with errors".to_string()),
        _ => Support::Unknown,
    };
    Row {
        name: name.to_string(),
        need,
        note,
        supported,
        status,
        answers: answered,
    }
}

/// Why no cell shows the backend answering a function: no evidence at all, or the
/// cases that ran did not call it and others were skipped (the commonest reasons).
fn why_not_called(interface: Interface, evidence: &[(&CellResult, Option<Exchanges>)]) -> String {
    let ran = evidence
        .iter()
        .filter(|(c, _)| !matches!(c.status, Status::Skipped { .. }))
        .count();
    let with_evidence = evidence.iter().filter(|(_, e)| e.is_some()).count();
    let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
    for (c, _) in evidence {
        if let Status::Skipped { reason } = &c.status {
            *reasons.entry(reason.as_str()).or_insert(0) += 1;
        }
    }
    let mut reasons: Vec<(&str, usize)> = reasons.into_iter().collect();
    reasons.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let skipped: usize = reasons.iter().map(|(_, n)| n).sum();
    let skipped_text = if reasons.is_empty() {
        String::new()
    } else {
        let top: Vec<String> = reasons
            .iter()
            .take(3)
            .map(|(r, n)| format!("{r} ({n})"))
            .collect();
        let more = if reasons.len() > 3 {
            format!("; and {} other reasons", reasons.len() - 3)
        } else {
            String::new()
        };
        format!("; {skipped} cases were skipped: {}{more}", top.join("; "))
    };
    let head = if ran == 0 {
        "no case ran on this backend".to_string()
    } else if with_evidence == 0 {
        format!(
            "no cell that ran has {} evidence (property {})",
            interface.noun(),
            interface.property()
        )
    } else {
        "no case that ran needed it on this backend".to_string()
    };
    format!("{head}{skipped_text}")
}

/// Up to [`NAMED_CELLS`] of `items`, and how many more.
fn name_some(items: &[String]) -> String {
    let mut text = items
        .iter()
        .take(NAMED_CELLS)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    if items.len() > NAMED_CELLS {
        text.push_str(&format!("; and {} more", items.len() - NAMED_CELLS));
    }
    text
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rstest::rstest;

    use super::*;

    fn cell(case: &str, status: Status, calls: &str) -> CellResult {
        CellResult {
            suite: "s".into(),
            backend: "b".into(),
            case: case.into(),
            status,
            duration: Duration::ZERO,
            properties: if calls.is_empty() {
                vec![]
            } else {
                vec![(PKCS11_CALLS.into(), calls.into())]
            },
            log: String::new(),
        }
    }

    fn failed() -> Status {
        Status::Failed {
            message: "m".into(),
        }
    }

    fn skipped(reason: &str) -> Status {
        Status::Skipped {
            reason: reason.into(),
        }
    }

    fn status_of(cells: &[CellResult], name: &str) -> RowStatus {
        rows(Interface::Pkcs11, cells, None)
            .into_iter()
            .find(|r| r.name == name)
            .unwrap()
            .status
    }

    /// The row rules, one situation each: (cells, function, expected status kind, a
    /// word the status must say).
    #[rstest]
    #[case::passed(
        vec![cell("a", Status::Passed, "C_Sign=2 CKR_OK")],
        "C_Sign", "passed", "worked 2 times"
    )]
    #[case::failed_cell_with_error(
        vec![
            cell("a", Status::Passed, "C_Sign=2 CKR_OK"),
            cell("b", failed(), "C_Sign=1 CKR_FUNCTION_NOT_SUPPORTED [injected by the backend file]"),
        ],
        "C_Sign", "failed", "CKR_FUNCTION_NOT_SUPPORTED [injected by the backend file] in 's / b'"
    )]
    #[case::error_in_a_passing_cell_is_fine(
        vec![cell("a", Status::Passed, "C_Sign=2 CKR_OK,1 CKR_KEY_HANDLE_INVALID")],
        "C_Sign", "passed", "worked"
    )]
    #[case::benign_answer_in_a_failed_cell(
        vec![cell("a", failed(), "C_GetAttributeValue=1 CKR_OK,1 CKR_ATTRIBUTE_TYPE_INVALID")],
        "C_GetAttributeValue", "passed", "worked 1 times"
    )]
    #[case::already_logged_in_is_working(
        vec![cell("a", failed(), "C_Login=3 CKR_USER_ALREADY_LOGGED_IN")],
        "C_Login", "passed", "worked 3 times"
    )]
    #[case::never_successful(
        vec![cell("a", Status::Passed, "C_Sign=3 CKR_FUNCTION_NOT_SUPPORTED")],
        "C_Sign", "failed", "never successfully"
    )]
    #[case::case_injection_is_ignored(
        vec![
            cell("a", Status::Passed, "C_Sign=2 CKR_OK"),
            cell("b", failed(), "C_Sign=1 CKR_FUNCTION_NOT_SUPPORTED [injected by the case]"),
        ],
        "C_Sign", "passed", "worked 2 times"
    )]
    #[case::only_injected(
        vec![cell("a", Status::Passed, "C_Sign=1 CKR_FUNCTION_NOT_SUPPORTED [injected by the case]")],
        "C_Sign", "skipped", "injected"
    )]
    #[case::not_called_with_skips(
        vec![
            cell("a", Status::Passed, "C_Login=1 CKR_OK"),
            cell("b", skipped("lacks destroy"), ""),
            cell("c", skipped("lacks destroy"), ""),
        ],
        "C_DestroyObject", "skipped", "2 cases were skipped: lacks destroy (2)"
    )]
    #[case::nothing_ran(
        vec![cell("a", skipped("cannot start"), "")],
        "C_Sign", "skipped", "no case ran"
    )]
    #[case::no_evidence(
        vec![cell("a", Status::Passed, "")],
        "C_Sign", "skipped", "no cell that ran has PKCS#11 function evidence"
    )]
    #[case::waived(
        vec![cell("a", Status::Passed, "C_Sign=1 CKR_OK")],
        "C_Finalize", "skipped", "never calls C_Finalize"
    )]
    fn row_status(
        #[case] cells: Vec<CellResult>,
        #[case] name: &str,
        #[case] kind: &str,
        #[case] said: &str,
    ) {
        let (got, text) = match status_of(&cells, name) {
            RowStatus::Passed(t) => ("passed", t),
            RowStatus::Failed(t) => ("failed", t),
            RowStatus::Skipped(t) => ("skipped", t),
        };
        assert_eq!(got, kind, "{text}");
        assert!(text.contains(said), "{text}");
    }

    #[test]
    fn listed_rows_come_first_then_what_the_evidence_shows() {
        let cells = [cell(
            "a",
            Status::Passed,
            "C_Sign=1 CKR_OK; C_GetFunctionList=1 CKR_OK; C_Logout=1 CKR_OK",
        )];
        let names: Vec<String> = rows(Interface::Pkcs11, &cells, None)
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(names[0], "C_Initialize");
        assert_eq!(names.len(), PKCS11.len() + 2);
        assert_eq!(&names[PKCS11.len()..], ["C_GetFunctionList", "C_Logout"]);
    }

    /// Only required rows that did not pass block; a waived row never does.
    #[test]
    fn blocking_rows() {
        let cells = [cell("a", Status::Passed, "C_Sign=1 CKR_OK")];
        let table = rows(Interface::Pkcs11, &cells, None);
        let blocking: Vec<&str> = table
            .iter()
            .filter(|r| r.blocks())
            .map(|r| r.name.as_str())
            .collect();
        assert!(!blocking.contains(&"C_Sign"));
        assert!(!blocking.contains(&"C_Finalize"));
        assert!(!blocking.contains(&"C_GenerateKeyPair"));
        assert!(blocking.contains(&"C_Login"));
    }

    #[rstest]
    #[case::query_lists("Query", "", true)]
    #[case::answers_outweigh_query("Sign", "Operation Failed (Operation Not Supported) ×1", false)]
    #[case::never_answered_and_not_listed("Modify Attribute", "", false)]
    #[case::answered_not_supported(
        "Revoke",
        "Operation Failed (Operation Not Supported) ×2",
        false
    )]
    fn kmip_support_from_query_and_answers(
        #[case] name: &str,
        #[case] answers: &str,
        #[case] supported: bool,
    ) {
        let mut description = Description::default();
        description.section(
            "operations",
            vec![
                ("Sign".into(), String::new()),
                ("Query".into(), String::new()),
            ],
        );
        let mut c = cell("a", Status::Passed, "");
        c.properties = vec![(
            KMIP_EXCHANGES.into(),
            "Sign=1 Operation Failed (Operation Not Supported); Revoke=2 Operation Failed (Operation Not Supported)".into(),
        )];
        let table = rows(Interface::Kmip, &[c], Some(&description));
        let row = table.iter().find(|r| r.name == name).unwrap();
        assert_eq!(row.answers, answers);
        assert_eq!(
            matches!(row.supported, Support::Yes(_)),
            supported,
            "{:?}",
            row.supported
        );
    }
}
