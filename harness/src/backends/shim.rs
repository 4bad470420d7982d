//! The PKCS#11 shim (`libp11shim.so`, crate `p11shim`) in front of a cell's module:
//! its settings in suites and backend files, where the library is, and the trace it
//! writes.
//!
//! Contract:
//!
//! - A cell runs through the shim when its case has a `shim:` block or a `trace` step,
//!   or its backend's provider has `shim:`. Then every PKCS#11 call of the signers under
//!   test (in the cell process for `softhsm`, in the relay process for `relay`) goes
//!   through the shim, which forwards it to the real module unless a rule says
//!   otherwise, and appends one JSON line per call to the cell's [`TRACE_FILE`]. The
//!   harness's own sessions (token set-up, inventories, wipes) use the real module and
//!   are not in the trace.
//! - With no rules and no hidden mechanisms the shim is transparent: what passes
//!   without it passes with it (`fixtures/backends/softhsm-shim.yaml` runs every suite
//!   that way).
//! - The trace is counted by lines: every call the application made through the shim,
//!   whether the module or a rule answered it.
//! - Without the library, a cell that needs it is skipped with the reason; it never
//!   runs without the shim it asked for.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use p11shim::config::{Config, Rule};
use serde::Deserialize;

/// The shim's file name, as cargo builds it.
pub const LIBRARY: &str = "libp11shim.so";

/// The trace file, in the cell's work directory.
pub const TRACE_FILE: &str = "shim-trace.jsonl";

/// The most trace lines the report shows; beyond it, the first and last halves.
const REPORT_LINES: usize = 400;

/// The shim's settings as a suite or a backend file gives them: the shim's own
/// configuration without `module` and `trace`, which the harness fills in.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ShimSpec {
    /// Mechanisms (`CKM_*` names or numbers) the module seems not to have.
    #[serde(default)]
    pub hide_mechanisms: Vec<String>,
    /// Faults to inject, in the shim's `[[rule]]` format (see `p11shim/README.md`).
    #[serde(default)]
    pub rules: Vec<Rule>,
}

impl ShimSpec {
    /// Checks names (functions, `CKR_*`, `CKM_*`) and that each rule's fields fit its
    /// action, as the shim itself would when it loads.
    pub fn check(&self) -> Result<(), String> {
        self.config(Path::new("/module"), None).plan().map(|_| ())
    }

    /// `self` followed by `more` (a backend's settings, then a case's): mechanisms of
    /// both are hidden, and rules apply in this order.
    pub fn merged(&self, more: &ShimSpec) -> ShimSpec {
        let mut out = self.clone();
        for m in &more.hide_mechanisms {
            if !out.hide_mechanisms.contains(m) {
                out.hide_mechanisms.push(m.clone());
            }
        }
        out.rules.extend(more.rules.iter().cloned());
        out
    }

    /// Whether the shim does anything but trace.
    pub fn is_transparent(&self) -> bool {
        self.hide_mechanisms.is_empty() && self.rules.is_empty()
    }

    /// The shim's configuration in front of `module`, tracing to `trace`.
    pub fn config(&self, module: &Path, trace: Option<&Path>) -> Config {
        Config {
            module: module.to_path_buf(),
            trace: trace.map(Path::to_path_buf),
            hide_mechanisms: self.hide_mechanisms.clone(),
            rules: self.rules.clone(),
            reconnect: 0,
        }
    }
}

/// Whether `name` is a PKCS#11 2.40 function the shim knows (and so can trace).
pub fn is_function(name: &str) -> bool {
    p11shim::FUNCTIONS.contains(&name)
}

/// The variable that names the shim library, where it is not beside this program.
pub const SHIM_ENV: &str = "HSM_HARNESS_P11SHIM";

/// The shim library: the file [`SHIM_ENV`] names; else, as cargo builds it beside this
/// program, `deps/libp11shim.so` first, then `libp11shim.so` next to it (integration
/// tests run from `deps/` itself). `cargo install` does not install libraries: copy
/// `target/release/libp11shim.so` beside the installed program, or name it.
///
/// `deps/` comes first because it is always the fresh one: cargo rebuilds it whenever
/// the harness (which depends on the shim crate) is built, but copies it up to
/// `target/<profile>/` only when the shim package itself is a top-level unit (`cargo
/// build --workspace` or `-p p11shim`), so the copy up there can be stale.
pub fn library() -> Result<PathBuf, String> {
    super::companion::find(
        LIBRARY,
        SHIM_ENV,
        false,
        "cargo build --release -p p11shim, then copy target/release/libp11shim.so beside \
         hsm-harness",
    )
}

/// One line of the trace (the fields the harness reads; see `p11shim/README.md`).
#[derive(Clone, Debug, Deserialize)]
pub struct Call {
    pub seq: u64,
    pub function: String,
    /// This function's call number in the process that made it.
    pub call: u64,
    #[serde(default)]
    pub args: serde_json::Map<String, serde_json::Value>,
    /// `None`: the call aborted the process.
    pub rv: Option<String>,
    #[serde(default)]
    pub micros: u64,
    /// The shim answered instead of the module.
    #[serde(default)]
    pub injected: bool,
    #[serde(default)]
    pub action: Option<String>,
}

/// The complete lines of the trace at `path`; no file is no calls. A last line still
/// being written (no newline yet) is left out.
pub fn read(path: &Path) -> anyhow::Result<Vec<Call>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => anyhow::bail!("reading the shim trace {}: {e}", path.display()),
    };
    let complete = text.rfind('\n').map_or("", |i| &text[..i]);
    complete
        .lines()
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line)
                .map_err(|e| anyhow::anyhow!("shim trace {} line {}: {e}", path.display(), i + 1))
        })
        .collect()
}

/// Calls per function, in name order.
pub fn counts(calls: &[Call]) -> BTreeMap<&str, u64> {
    let mut counts = BTreeMap::new();
    for c in calls {
        *counts.entry(c.function.as_str()).or_insert(0) += 1;
    }
    counts
}

/// The trace for a cell's report (its JUnit `system-out`): the calls one per line,
/// then the counts per function. Long traces keep their first and last lines.
pub fn render(calls: &[Call]) -> String {
    let mut out = format!("== PKCS#11 shim trace: {} calls\n", calls.len());
    let line = |c: &Call| {
        let args = if c.args.is_empty() {
            String::new()
        } else {
            format!(" {}", serde_json::Value::Object(c.args.clone()))
        };
        let injected = match (&c.injected, &c.action) {
            (true, Some(a)) => format!(" (injected: {a})"),
            (true, None) => " (injected)".to_string(),
            _ => String::new(),
        };
        format!(
            "{:>5} {}#{}{args} -> {}{injected} {}us\n",
            c.seq,
            c.function,
            c.call,
            c.rv.as_deref().unwrap_or("(aborted)"),
            c.micros
        )
    };
    if calls.len() <= REPORT_LINES {
        calls.iter().for_each(|c| out.push_str(&line(c)));
    } else {
        let half = REPORT_LINES / 2;
        calls[..half].iter().for_each(|c| out.push_str(&line(c)));
        out.push_str(&format!(
            "  ... {} calls left out ...\n",
            calls.len() - 2 * half
        ));
        calls[calls.len() - half..]
            .iter()
            .for_each(|c| out.push_str(&line(c)));
    }
    let per: Vec<String> = counts(calls)
        .into_iter()
        .map(|(f, n)| {
            let injected = calls
                .iter()
                .filter(|c| c.function == f && c.injected)
                .count();
            if injected > 0 {
                format!("{f} {n} ({injected} injected)")
            } else {
                format!("{f} {n}")
            }
        })
        .collect();
    out.push_str(&format!("== calls per function: {}\n", per.join(", ")));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_is_checked_like_the_shims_own_configuration() {
        let ok: ShimSpec = serde_json::from_str(
            r#"{"hide_mechanisms":["CKM_ECDSA"],"rules":[{"function":"C_GenerateRandom","action":"unsupported"}]}"#,
        )
        .unwrap();
        ok.check().unwrap();
        let bad: ShimSpec =
            serde_json::from_str(r#"{"rules":[{"function":"C_Nope","action":"unsupported"}]}"#)
                .unwrap();
        assert!(bad.check().unwrap_err().contains("C_Nope"));
        let bad: ShimSpec = serde_json::from_str(r#"{"hide_mechanisms":["CKM_NOPE"]}"#).unwrap();
        assert!(bad.check().is_err());
    }

    #[test]
    fn merging_keeps_both_in_order() {
        let a = ShimSpec {
            hide_mechanisms: vec!["CKM_ECDSA".into()],
            rules: vec![Rule::new("C_Sign", p11shim::config::Action::Unsupported)],
        };
        let b = ShimSpec {
            hide_mechanisms: vec!["CKM_ECDSA".into(), "CKM_EDDSA".into()],
            rules: vec![Rule::new("C_Login", p11shim::config::Action::Abort)],
        };
        let m = a.merged(&b);
        assert_eq!(m.hide_mechanisms, ["CKM_ECDSA", "CKM_EDDSA"]);
        assert_eq!(m.rules[0].function, "C_Sign");
        assert_eq!(m.rules[1].function, "C_Login");
        assert!(ShimSpec::default().is_transparent() && !m.is_transparent());
    }

    #[test]
    fn a_trace_is_read_to_its_last_complete_line_and_rendered() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(TRACE_FILE);
        assert!(read(&p).unwrap().is_empty());
        std::fs::write(
            &p,
            concat!(
                r#"{"seq":1,"function":"C_GetFunctionList","call":1,"args":{},"rv":"CKR_OK","micros":3}"#,
                "\n",
                r#"{"seq":2,"function":"C_GenerateRandom","call":1,"args":{"session":1},"rv":"CKR_FUNCTION_NOT_SUPPORTED","micros":1,"injected":true,"action":"unsupported"}"#,
                "\n",
                r#"{"seq":3,"func"#
            ),
        )
        .unwrap();
        let calls = read(&p).unwrap();
        assert_eq!(calls.len(), 2);
        assert_eq!(counts(&calls)["C_GenerateRandom"], 1);
        let text = render(&calls);
        assert!(text.contains("C_GenerateRandom#1"), "{text}");
        assert!(text.contains("(injected: unsupported)"), "{text}");
        assert!(text.contains("C_GenerateRandom 1 (1 injected)"), "{text}");
    }

    #[test]
    fn function_names_are_the_shims() {
        assert!(is_function("C_GenerateRandom"));
        assert!(!is_function("C_GenerateRandomly"));
    }
}
