//! What passed between a cell's signers and its backend, per PKCS#11 function or KMIP
//! operation: how many calls got which answer, and who gave it.
//!
//! Contract:
//!
//! - A cell whose PKCS#11 module runs through the shim carries the report property
//!   [`PKCS11_CALLS`], counted from the shim's trace by the runner (so a crashed or
//!   timed-out cell has it too); a cell whose KMIP signer talked to a server carries
//!   [`KMIP_EXCHANGES`], counted in the cell from the signer's exchange events.
//! - Every answer has an [`Origin`]: the backend itself, a shim rule of the backend
//!   file (part of the backend under test: a module put behind a shim that refuses
//!   `C_Sign` is a module without `C_Sign`), or a fault the case injected (a shim rule
//!   or a withheld operation of the case: scaffolding, never held against the backend).
//! - The property text is `NAME=COUNT ANSWER[,COUNT ANSWER...]; NAME=...`, names and
//!   answers in sorted order, an answer a case or backend file injected followed by
//!   ` [injected by the case]` or ` [injected by the backend file]`. It reads back to
//!   the same value ([`Exchanges::parse`]); characters the format uses as separators
//!   are replaced by blanks in names and answers, so hostile server text cannot forge
//!   entries.

use std::collections::BTreeMap;
use std::fmt;

use crate::backends::shim::{Call, ShimSpec};

/// The report property of the PKCS#11 calls per function.
pub const PKCS11_CALLS: &str = "pkcs11_calls";

/// The report property of the KMIP exchanges per operation.
pub const KMIP_EXCHANGES: &str = "kmip_exchanges";

/// Who gave an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Origin {
    /// The module or server.
    Backend,
    /// A PKCS#11 shim rule of the backend file: part of the backend under test.
    InjectedByBackendFile,
    /// A fault the case injected: not the backend's answer.
    InjectedByCase,
}

impl Origin {
    const BACKEND_FILE: &'static str = " [injected by the backend file]";
    const CASE: &'static str = " [injected by the case]";

    fn suffix(self) -> &'static str {
        match self {
            Origin::Backend => "",
            Origin::InjectedByBackendFile => Self::BACKEND_FILE,
            Origin::InjectedByCase => Self::CASE,
        }
    }

    /// Whether the answer counts as the backend's (everything but a case's fault).
    pub fn is_backends(self) -> bool {
        self != Origin::InjectedByCase
    }
}

/// One kind of answer: a `CKR_*` name, or a KMIP result ("Success", "Operation Failed
/// (Item Not Found)", "no answer (unavailable)"), and who gave it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Answer {
    pub result: String,
    pub origin: Origin,
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.result, self.origin.suffix())
    }
}

/// Per function or operation name, how many times each answer came.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Exchanges {
    per_name: BTreeMap<String, BTreeMap<Answer, u64>>,
}

impl Exchanges {
    /// Counts `count` more answers `result` from `origin` to `name`.
    pub fn add(&mut self, name: &str, result: &str, origin: Origin, count: u64) {
        let answer = Answer {
            result: plain(result),
            origin,
        };
        *self
            .per_name
            .entry(plain(name))
            .or_default()
            .entry(answer)
            .or_insert(0) += count;
    }

    pub fn is_empty(&self) -> bool {
        self.per_name.is_empty()
    }

    /// Each name with its answers and counts, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &BTreeMap<Answer, u64>)> {
        self.per_name.iter().map(|(n, a)| (n.as_str(), a))
    }

    /// The answers to `name`, if it was called.
    pub fn answers(&self, name: &str) -> Option<&BTreeMap<Answer, u64>> {
        self.per_name.get(name)
    }

    /// Adds everything `other` counted.
    pub fn merge(&mut self, other: &Exchanges) {
        for (name, answers) in other.iter() {
            for (answer, n) in answers {
                self.add(name, &answer.result, answer.origin, *n);
            }
        }
    }

    /// The calls of a PKCS#11 shim trace. An answer the shim gave is the backend
    /// file's when a rule of `backend` (the backend file's shim settings) for that
    /// function with that action exists, or, for hidden mechanisms, when the backend
    /// file hides any; otherwise the case's.
    pub fn from_shim_trace(calls: &[Call], backend: Option<&ShimSpec>) -> Exchanges {
        let mut out = Exchanges::default();
        for call in calls {
            let origin = if !call.injected {
                Origin::Backend
            } else if backend.is_some_and(|spec| backend_injects(spec, call)) {
                Origin::InjectedByBackendFile
            } else {
                Origin::InjectedByCase
            };
            out.add(
                &call.function,
                call.rv.as_deref().unwrap_or("aborted"),
                origin,
                1,
            );
        }
        out
    }

    /// The property text (see the module's contract).
    pub fn to_property(&self) -> String {
        self.per_name
            .iter()
            .map(|(name, answers)| {
                let answers: Vec<String> = answers
                    .iter()
                    .map(|(answer, n)| format!("{n} {answer}"))
                    .collect();
                format!("{name}={}", answers.join(","))
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Reads a property text back; an entry that does not fit the format is an error
    /// naming it.
    pub fn parse(text: &str) -> Result<Exchanges, String> {
        let mut out = Exchanges::default();
        for entry in text.split(';').map(str::trim).filter(|e| !e.is_empty()) {
            let (name, answers) = entry
                .split_once('=')
                .ok_or_else(|| format!("'{entry}' has no '='"))?;
            for answer in answers.split(',').map(str::trim) {
                let (count, result) = answer
                    .split_once(' ')
                    .ok_or_else(|| format!("'{answer}' is not 'COUNT ANSWER'"))?;
                let count: u64 = count
                    .parse()
                    .map_err(|_| format!("'{count}' in '{answer}' is not a count"))?;
                let (result, origin) = if let Some(r) = result.strip_suffix(Origin::CASE) {
                    (r, Origin::InjectedByCase)
                } else if let Some(r) = result.strip_suffix(Origin::BACKEND_FILE) {
                    (r, Origin::InjectedByBackendFile)
                } else {
                    (result, Origin::Backend)
                };
                out.add(name.trim(), result, origin, count);
            }
        }
        Ok(out)
    }
}

/// Whether the backend file's shim settings explain the shim's answer to `call`.
fn backend_injects(spec: &ShimSpec, call: &Call) -> bool {
    match call.action.as_deref() {
        Some("hide_mechanisms") => !spec.hide_mechanisms.is_empty(),
        Some(action) => spec.rules.iter().any(|r| {
            r.function == call.function
                && serde_json::to_value(r.action)
                    .ok()
                    .is_some_and(|a| a.as_str() == Some(action))
        }),
        None => false,
    }
}

/// `text` without the characters the property format uses (and without control
/// characters), trimmed.
fn plain(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            ',' | ';' | '=' | '[' | ']' => ' ',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect::<String>()
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use p11shim::config::{Action, Rule};

    fn call(function: &str, rv: Option<&str>, action: Option<&str>) -> Call {
        serde_json::from_value(serde_json::json!({
            "seq": 1, "function": function, "call": 1, "rv": rv,
            "injected": action.is_some(), "action": action,
        }))
        .unwrap()
    }

    #[test]
    fn a_trace_is_counted_per_function_and_answer() {
        let calls = [
            call("C_Sign", Some("CKR_OK"), None),
            call("C_Sign", Some("CKR_OK"), None),
            call(
                "C_Sign",
                Some("CKR_FUNCTION_NOT_SUPPORTED"),
                Some("unsupported"),
            ),
            call("C_Login", None, None),
        ];
        let e = Exchanges::from_shim_trace(&calls, None);
        assert_eq!(
            e.to_property(),
            "C_Login=1 aborted; C_Sign=1 CKR_FUNCTION_NOT_SUPPORTED [injected by the case],2 CKR_OK"
        );
    }

    /// Who injected an answer: the backend file when one of its rules has that
    /// function and action (or it hides mechanisms), else the case.
    #[rstest::rstest]
    #[case::backend_rule("C_Sign", "unsupported", Origin::InjectedByBackendFile)]
    #[case::other_function("C_Login", "unsupported", Origin::InjectedByCase)]
    #[case::other_action("C_Sign", "return", Origin::InjectedByCase)]
    #[case::hidden_mechanism("C_SignInit", "hide_mechanisms", Origin::InjectedByBackendFile)]
    fn injected_answers_are_attributed(
        #[case] function: &str,
        #[case] action: &str,
        #[case] origin: Origin,
    ) {
        let backend = ShimSpec {
            hide_mechanisms: vec!["CKM_ECDSA".into()],
            rules: vec![Rule::new("C_Sign", Action::Unsupported)],
        };
        let e = Exchanges::from_shim_trace(
            &[call(function, Some("CKR_X"), Some(action))],
            Some(&backend),
        );
        let answers = e.answers(function).unwrap();
        assert_eq!(answers.keys().next().unwrap().origin, origin);
    }

    #[rstest::rstest]
    #[case::empty("")]
    #[case::pkcs11("C_Sign=3 CKR_OK,1 CKR_FUNCTION_NOT_SUPPORTED [injected by the backend file]; C_Login=1 CKR_OK")]
    #[case::kmip("Create Key Pair=2 Success; Sign=1 Operation Failed (Operation Not Supported) [injected by the case],4 Success")]
    fn the_property_reads_back(#[case] text: &str) {
        let e = Exchanges::parse(text).unwrap();
        assert_eq!(Exchanges::parse(&e.to_property()).unwrap(), e);
        // And names each entry once, sorted.
        assert_eq!(
            e.to_property(),
            Exchanges::parse(&e.to_property()).unwrap().to_property()
        );
    }

    #[rstest::rstest]
    #[case::no_equals("C_Sign 3 CKR_OK", "no '='")]
    #[case::no_count("C_Sign=CKR_OK", "COUNT ANSWER")]
    #[case::bad_count("C_Sign=x CKR_OK", "not a count")]
    fn a_bad_property_is_refused(#[case] text: &str, #[case] said: &str) {
        let e = Exchanges::parse(text).unwrap_err();
        assert!(e.contains(said), "{e}");
    }

    /// A server's text with the format's separators cannot add entries.
    #[test]
    fn separators_in_answers_are_blanked() {
        let mut e = Exchanges::default();
        e.add(
            "Sign",
            "Operation Failed (x; Get=1 Success, [injected by the case])",
            Origin::Backend,
            1,
        );
        let back = Exchanges::parse(&e.to_property()).unwrap();
        assert_eq!(back.iter().count(), 1);
        let (answer, n) = back.answers("Sign").unwrap().iter().next().unwrap();
        assert_eq!((answer.origin, *n), (Origin::Backend, 1));
        assert!(!answer.result.contains(';'), "{answer}");
    }
}
