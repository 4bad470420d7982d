//! The certificate as one self-contained HTML file (`report.html`): inline CSS, no
//! scripts, no external resources (a Content-Security-Policy says so to the browser
//! as well), status colours that survive printing, and `@media print` rules so that
//! it prints as a document. Every outside string is escaped ([`escape`]).

use std::fmt::Write as _;

use super::requirements::{Need, RowStatus, Support};
use super::{evidence, log_tail, outcome_text, Certificate};
use crate::report::junit::clean;
use crate::report::outcome::Status;

const STYLE: &str = r#"
:root { --ok: #137333; --ok-bg: #e6f4ea; --bad: #a50e0e; --bad-bg: #fce8e6;
        --err: #8a3b00; --err-bg: #feefe3; --skip: #5f6368; --skip-bg: #f1f3f4; }
* { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       margin: 2em auto; max-width: 75em; padding: 0 1em; color: #202124; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: .3em; }
h2 { font-size: 1.3em; margin-top: 1.8em; border-bottom: 1px solid #dadce0; }
h3 { font-size: 1.05em; }
table { border-collapse: collapse; width: 100%; margin: .5em 0 1em; font-size: .92em; }
th, td { border: 1px solid #dadce0; padding: .3em .5em; text-align: left; vertical-align: top; }
th { background: #f8f9fa; }
td { white-space: pre-wrap; overflow-wrap: anywhere; }
table.facts th { width: 14em; }
.verdict { font-size: 1.4em; font-weight: bold; padding: .5em .8em; border-radius: 4px; }
.verdict.conformant { color: var(--ok); background: var(--ok-bg); border: 2px solid var(--ok); }
.verdict.not-conformant { color: var(--bad); background: var(--bad-bg); border: 2px solid var(--bad); }
.reasons li { color: var(--bad); white-space: pre-wrap; overflow-wrap: anywhere; }
.problem { color: var(--bad); background: var(--bad-bg); padding: .5em; font-weight: bold;
           white-space: pre-wrap; }
td.passed, td.pass { color: var(--ok); background: var(--ok-bg); font-weight: bold; }
td.failed, td.fail { color: var(--bad); background: var(--bad-bg); font-weight: bold; }
td.error { color: var(--err); background: var(--err-bg); font-weight: bold; }
td.skipped, td.skip { color: var(--skip); background: var(--skip-bg); }
table.functions td:first-child, td.passed, td.failed, td.skipped, td.pass, td.fail,
td.error, td.skip { white-space: nowrap; overflow-wrap: normal; }
td.yes { color: var(--ok); } td.no { color: var(--bad); } td.unknown { color: var(--skip); }
.evidence { border-left: 4px solid var(--bad); padding: 0 0 0 1em; margin: 1em 0; }
.evidence p { white-space: pre-wrap; overflow-wrap: anywhere; }
pre { background: #f8f9fa; border: 1px solid #dadce0; padding: .5em; overflow: auto;
      max-height: 30em; white-space: pre-wrap; overflow-wrap: anywhere; font-size: .85em; }
code, .mono { font-family: ui-monospace, "DejaVu Sans Mono", monospace; }
footer { margin-top: 2em; color: var(--skip); font-size: .85em; }
@media print {
  body { margin: 0; max-width: none; font-size: 9.5pt; }
  h2 { break-after: avoid; page-break-after: avoid; }
  tr, .evidence, .verdict { break-inside: avoid; page-break-inside: avoid; }
  pre { max-height: none; overflow: visible; }
  thead { display: table-header-group; }
}
"#;

/// The whole report.
pub fn render(c: &Certificate) -> String {
    let mut out = String::with_capacity(64 * 1024);
    let title = format!(
        "HSM conformance report: {} ({})",
        c.backend.name,
        c.verdict.word()
    );
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        escape(&title)
    );
    let _ = writeln!(
        out,
        "<h1>HSM conformance report: {}</h1>",
        escape(&c.backend.name)
    );
    let class = if c.verdict.conformant {
        "conformant"
    } else {
        "not-conformant"
    };
    let _ = writeln!(
        out,
        "<p id=\"verdict\" class=\"verdict {class}\">Verdict: {}</p>",
        c.verdict.word()
    );
    if !c.verdict.reasons.is_empty() {
        out.push_str("<ul class=\"reasons\">\n");
        for r in &c.verdict.reasons {
            let _ = writeln!(out, "<li>{}</li>", escape(r));
        }
        out.push_str("</ul>\n");
    }
    header(c, &mut out);
    description(c, &mut out);
    functions(c, &mut out);
    for suite in &c.suites {
        suite_section(c, &suite.name, &suite.about, &mut out);
    }
    let _ = writeln!(
        out,
        "<footer>Written by {} on {} (UTC).</footer>\n</body>\n</html>",
        escape(&c.harness),
        escape(&c.date)
    );
    out
}

fn header(c: &Certificate, out: &mut String) {
    let t = c.tally();
    let b = &c.backend;
    out.push_str(
        "<section id=\"certified\">\n<h2>What was certified</h2>\n<table class=\"facts\">\n",
    );
    let rows = [
        ("Backend", b.name.clone()),
        ("About", b.about.clone()),
        ("Provider", format!("{} ({})", b.provider, b.placement)),
        ("Backend file", b.file.clone()),
        ("Capability profile", b.capabilities.join(", ")),
        ("Harness", c.harness.clone()),
        ("Date (UTC)", c.date.clone()),
        ("Command", c.command.clone()),
        (
            "Cases",
            format!(
                "{} passed, {} failed, {} errored, {} skipped ({} in all)",
                t.passed,
                t.failed,
                t.errored,
                t.skipped,
                t.total()
            ),
        ),
        ("Files beside this report", c.files.join(", ")),
    ];
    for (k, v) in rows {
        let _ = writeln!(out, "<tr><th>{k}</th><td>{}</td></tr>", escape(&v));
    }
    out.push_str("</table>\n<h3>Suites</h3>\n<table class=\"suites\">\n<thead><tr><th>Suite</th><th>File</th><th>SHA-256</th></tr></thead>\n");
    for s in &c.suites {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td class=\"mono\">{}</td></tr>",
            escape(&s.name),
            escape(&s.file),
            escape(&s.sha256)
        );
    }
    out.push_str("</table>\n</section>\n");
}

fn description(c: &Certificate, out: &mut String) {
    out.push_str("<section id=\"backend\">\n<h2>What the backend says about itself</h2>\n");
    match &c.description {
        Err(why) => {
            let _ = writeln!(
                out,
                "<p class=\"problem\">The backend could not be described: {}</p>",
                escape(why)
            );
        }
        Ok(d) if d.sections.is_empty() => {
            out.push_str("<p>The backend's provider describes nothing about it.</p>\n");
        }
        Ok(d) => {
            for section in &d.sections {
                let _ = writeln!(
                    out,
                    "<h3>{}</h3>\n<table class=\"description\">\n<thead><tr><th>Field</th><th>Value</th></tr></thead>",
                    escape(&section.title)
                );
                for (k, v) in &section.rows {
                    let _ = writeln!(out, "<tr><td>{}</td><td>{}</td></tr>", escape(k), escape(v));
                }
                out.push_str("</table>\n");
            }
        }
    }
    out.push_str("</section>\n");
}

fn functions(c: &Certificate, out: &mut String) {
    let noun = c.interface.noun();
    let _ = writeln!(
        out,
        "<section id=\"functions\">\n<h2>{noun}s (seed 001's required ones first)</h2>\n\
         <table class=\"functions\">\n<thead><tr><th>{noun}</th><th>Required</th><th>Supported</th>\
         <th>Status</th><th>Why</th><th>The backend's answers</th></tr></thead>"
    );
    for row in &c.rows {
        let need = match row.need {
            Need::Required => "required",
            Need::Waived(_) => "required (not exercised)",
            Need::Used => "used",
        };
        let (sclass, supported) = match &row.supported {
            Support::Yes(why) => ("yes", format!("yes ({why})")),
            Support::No(why) => ("no", format!("no ({why})")),
            Support::Unknown => ("unknown", "unknown".to_string()),
        };
        let (class, why) = match &row.status {
            RowStatus::Passed(w) => ("passed", w),
            RowStatus::Failed(w) => ("failed", w),
            RowStatus::Skipped(w) => ("skipped", w),
        };
        let why = if row.note.is_empty() {
            why.clone()
        } else {
            format!("{why} (note: {})", row.note)
        };
        let _ = writeln!(
            out,
            "<tr><td class=\"mono\">{}</td><td>{need}</td><td class=\"{sclass}\">{}</td>\
             <td class=\"{class}\">{class}</td><td>{}</td><td>{}</td></tr>",
            escape(&row.name),
            escape(&supported),
            escape(&why),
            escape(&row.answers)
        );
    }
    out.push_str("</table>\n</section>\n");
}

fn suite_section(c: &Certificate, name: &str, about: &str, out: &mut String) {
    let _ = writeln!(
        out,
        "<section class=\"suite\">\n<h2>Suite {}</h2>\n<p>{}</p>\n<table class=\"cases\">\n\
         <thead><tr><th>Case</th><th>Outcome</th><th>Time</th><th>Detail</th></tr></thead>",
        escape(name),
        escape(about)
    );
    let cells: Vec<_> = c.cells_of(name).collect();
    for cell in &cells {
        let class = match cell.status {
            Status::Passed => "pass",
            Status::Failed { .. } => "fail",
            Status::Errored { .. } => "error",
            Status::Skipped { .. } => "skip",
        };
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td class=\"{class}\">{}</td><td>{:.2}s</td><td>{}</td></tr>",
            escape(&cell.case),
            cell.status.label(),
            cell.duration.as_secs_f64(),
            escape(outcome_text(cell))
        );
    }
    out.push_str("</table>\n");
    for cell in cells
        .iter()
        .filter(|c| matches!(c.status, Status::Failed { .. } | Status::Errored { .. }))
    {
        let _ = writeln!(
            out,
            "<div class=\"evidence\">\n<h3>{} {}</h3>\n<p>{}</p>",
            cell.status.label(),
            escape(&cell.case),
            escape(outcome_text(cell))
        );
        if let Some(e) = evidence(cell, c.interface) {
            let _ = writeln!(
                out,
                "<p>{}s answered (<code>{}</code>): {}</p>",
                c.interface.noun(),
                c.interface.property(),
                escape(e)
            );
        }
        let (tail, cut) = log_tail(cell);
        if !tail.is_empty() {
            let _ = writeln!(
                out,
                "<p>{} of the cell's log:</p>\n<pre>{}</pre>",
                if cut { "The end" } else { "All" },
                escape(&tail)
            );
        }
        out.push_str("</div>\n");
    }
    out.push_str("</section>\n");
}

/// `s` as HTML text or attribute value: control characters dropped, the five
/// special characters as entities.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 16);
    for ch in clean(s).chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            ch => out.push(ch),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::super::tests::hostile;
    use super::*;

    #[rstest]
    #[case::tags("<script>x</script>", "&lt;script&gt;x&lt;/script&gt;")]
    #[case::attribute("\" onload='x'", "&quot; onload=&#39;x&#39;")]
    #[case::entity("&amp;", "&amp;amp;")]
    #[case::escape_sequence("\x1b[31mred\0", "red")]
    #[case::unicode_kept("clé ✓", "clé ✓")]
    fn escape_makes_text(#[case] raw: &str, #[case] shown: &str) {
        assert_eq!(escape(raw), shown);
    }

    /// Hostile strings everywhere add no element: the only tags are the renderer's.
    #[test]
    fn the_report_is_one_file_of_our_own_markup() {
        let html = render(&hostile());
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("src="), "no external resources");
        assert!(!html.contains("href="), "no links out");
        let ours = [
            "!DOCTYPE", "html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "p",
            "ul", "li", "section", "table", "thead", "tr", "th", "td", "div", "pre", "code",
            "footer",
        ];
        for tag in html.split('<').skip(1) {
            let name = tag
                .trim_start_matches('/')
                .split([' ', '>', '\n'])
                .next()
                .unwrap_or("");
            assert!(ours.contains(&name), "unexpected tag <{name}");
        }
        assert!(html
            .contains("id=\"verdict\" class=\"verdict not-conformant\">Verdict: not conformant<"));
        assert!(html.contains("@media print"));
        assert!(html.contains("<td class=\"failed\">failed</td>"), "{html}");
    }
}
