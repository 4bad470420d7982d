//! The certificate as Markdown (`report.md`): for reading in a repository or a merge
//! request. Every outside string is escaped ([`text`]) so that it shows as written
//! and adds no markup, links or HTML; logs go into fenced blocks longer than any
//! backtick run they hold.

use std::fmt::Write as _;

use super::requirements::{Need, RowStatus, Support};
use super::{evidence, log_tail, outcome_text, Certificate};
use crate::report::junit::clean;
use crate::report::outcome::Status;

/// The whole report.
pub fn render(c: &Certificate) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# HSM conformance report: {}\n", text(&c.backend.name));
    if c.verdict.conformant {
        out.push_str("**Verdict: conformant**\n\n");
    } else {
        out.push_str("**Verdict: NOT CONFORMANT**\n\n");
        for reason in &c.verdict.reasons {
            let _ = writeln!(out, "- {}", text(reason));
        }
        out.push('\n');
    }
    header(c, &mut out);
    description(c, &mut out);
    functions(c, &mut out);
    for suite in &c.suites {
        suite_section(c, &suite.name, &suite.about, &mut out);
    }
    out
}

fn header(c: &Certificate, out: &mut String) {
    let t = c.tally();
    let b = &c.backend;
    out.push_str("## What was certified\n\n| | |\n|---|---|\n");
    let rows = [
        ("Backend", text(&b.name)),
        ("About", text(&b.about)),
        (
            "Provider",
            text(&format!("{} ({})", b.provider, b.placement)),
        ),
        ("Backend file", text(&b.file)),
        ("Capability profile", text(&b.capabilities.join(", "))),
        ("Harness", text(&c.harness)),
        ("Date (UTC)", text(&c.date)),
        ("Command", text(&c.command)),
        (
            "Cases",
            text(&format!(
                "{} passed, {} failed, {} errored, {} skipped ({} in all)",
                t.passed,
                t.failed,
                t.errored,
                t.skipped,
                t.total()
            )),
        ),
        ("Files beside this report", text(&c.files.join(", "))),
    ];
    for (k, v) in rows {
        let _ = writeln!(out, "| {k} | {v} |");
    }
    out.push_str("\n### Suites\n\n| Suite | File | SHA-256 |\n|---|---|---|\n");
    for s in &c.suites {
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            text(&s.name),
            text(&s.file),
            text(&s.sha256)
        );
    }
    out.push('\n');
}

fn description(c: &Certificate, out: &mut String) {
    out.push_str("## What the backend says about itself\n\n");
    match &c.description {
        Err(why) => {
            let _ = writeln!(
                out,
                "**The backend could not be described:** {}\n",
                text(why)
            );
        }
        Ok(d) if d.sections.is_empty() => {
            out.push_str("The backend's provider describes nothing about it.\n\n");
        }
        Ok(d) => {
            for section in &d.sections {
                let _ = writeln!(
                    out,
                    "### {}\n\n| Field | Value |\n|---|---|",
                    text(&section.title)
                );
                for (k, v) in &section.rows {
                    let _ = writeln!(out, "| {} | {} |", text(k), text(v));
                }
                out.push('\n');
            }
        }
    }
}

fn functions(c: &Certificate, out: &mut String) {
    let noun = c.interface.noun();
    let _ = writeln!(
        out,
        "## {noun}s (seed 001's required ones first)\n\n\
         | {noun} | Required | Supported | Status | Why | The backend's answers |\n\
         |---|---|---|---|---|---|"
    );
    for row in &c.rows {
        let need = match row.need {
            Need::Required => "required",
            Need::Waived(_) => "required (not exercised)",
            Need::Used => "used",
        };
        let supported = match &row.supported {
            Support::Yes(why) => format!("yes ({why})"),
            Support::No(why) => format!("no ({why})"),
            Support::Unknown => "unknown".to_string(),
        };
        let (status, why) = match &row.status {
            RowStatus::Passed(w) => ("passed", w),
            RowStatus::Failed(w) => ("**FAILED**", w),
            RowStatus::Skipped(w) => ("skipped", w),
        };
        let why = if row.note.is_empty() {
            why.clone()
        } else {
            format!("{why} (note: {})", row.note)
        };
        let _ = writeln!(
            out,
            "| {} | {need} | {} | {status} | {} | {} |",
            text(&row.name),
            text(&supported),
            text(&why),
            text(&row.answers)
        );
    }
    out.push('\n');
}

fn suite_section(c: &Certificate, name: &str, about: &str, out: &mut String) {
    let _ = writeln!(
        out,
        "## Suite {}\n\n{}\n\n| Case | Outcome | Time | Detail |\n|---|---|---|---|",
        text(name),
        text(about)
    );
    let cells: Vec<_> = c.cells_of(name).collect();
    for cell in &cells {
        let _ = writeln!(
            out,
            "| {} | {} | {:.2}s | {} |",
            text(&cell.case),
            cell.status.label(),
            cell.duration.as_secs_f64(),
            text(outcome_text(cell))
        );
    }
    out.push('\n');
    for cell in cells
        .iter()
        .filter(|c| matches!(c.status, Status::Failed { .. } | Status::Errored { .. }))
    {
        let _ = writeln!(
            out,
            "### {} {}\n\n{}\n",
            cell.status.label(),
            text(&cell.case),
            text(outcome_text(cell))
        );
        if let Some(e) = evidence(cell, c.interface) {
            let _ = writeln!(
                out,
                "{}s answered ({}): {}\n",
                c.interface.noun(),
                c.interface.property(),
                text(e)
            );
        }
        let (tail, cut) = log_tail(cell);
        if !tail.is_empty() {
            let _ = writeln!(
                out,
                "{} of the cell's log:\n\n{}\n",
                if cut { "The end" } else { "All" },
                fenced(&tail)
            );
        }
    }
}

/// `s` for Markdown text and table cells: shown as written. Control characters go;
/// characters Markdown or HTML would read are escaped; a newline becomes `<br>`.
pub fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 16);
    for ch in clean(s).chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\n' => out.push_str("<br>"),
            '\r' => {}
            '\t' => out.push(' '),
            '\\' | '|' | '*' | '_' | '`' | '[' | ']' | '#' | '~' | '!' => {
                out.push('\\');
                out.push(ch);
            }
            ch => out.push(ch),
        }
    }
    out
}

/// `s` as a fenced block: a fence longer than any backtick run in it, so nothing in it
/// can end the block.
fn fenced(s: &str) -> String {
    let s = clean(s);
    let mut longest = 0;
    let mut run = 0;
    for ch in s.chars() {
        run = if ch == '`' { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    let fence = "`".repeat((longest + 1).max(3));
    format!("{fence}text\n{s}\n{fence}")
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::super::tests::hostile;
    use super::*;

    #[rstest]
    #[case::html("<b>&</b>", "&lt;b&gt;&amp;&lt;/b&gt;")]
    #[case::table("a | b", "a \\| b")]
    #[case::emphasis("*x* _y_", "\\*x\\* \\_y\\_")]
    #[case::link("[l](u)", "\\[l\\](u)")]
    #[case::newline("a\nb", "a<br>b")]
    #[case::escape_sequence("\x1b[31mred", "red")]
    fn text_is_shown_as_written(#[case] raw: &str, #[case] shown: &str) {
        assert_eq!(text(raw), shown);
    }

    #[test]
    fn a_fence_outlasts_the_backticks_inside() {
        assert_eq!(fenced("a ``` b"), "````text\na ``` b\n````");
        assert_eq!(fenced("plain"), "```text\nplain\n```");
    }

    #[test]
    fn the_report_has_verdict_tables_and_escapes_everything() {
        let md = render(&hostile());
        assert!(md.contains("**Verdict: NOT CONFORMANT**"), "{md}");
        // Raw text only inside fenced blocks, where Markdown shows it as it is.
        let mut fence: Option<&str> = None;
        for line in md.lines() {
            match fence {
                Some(f) if line == f => fence = None,
                Some(_) => {}
                None if line.starts_with("```") => {
                    fence = Some(line.trim_end_matches("text"));
                }
                None => assert!(!line.replace("<br>", "").contains('<'), "{line}"),
            }
        }
        // Every table row has the columns of its header: no stray `|` from the data.
        for line in md.lines().filter(|l| l.starts_with("| C\\_")) {
            let cells = line.replace("\\|", "").matches('|').count();
            assert_eq!(cells, 7, "{line}");
        }
        assert!(md.contains("| C\\_Sign | required | no (the backend answered every call CKR\\_FUNCTION\\_NOT\\_SUPPORTED) | **FAILED** |"), "{md}");
        assert!(md.contains("### FAIL "), "{md}");
        assert!(
            md.contains("CKR\\_FUNCTION\\_NOT\\_SUPPORTED \\[injected by the backend file\\]"),
            "{md}"
        );
        // The log's ``` cannot end its block early.
        assert!(md.contains("````text\n"), "{md}");
    }
}
