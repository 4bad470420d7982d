//! The run's JUnit XML report for CI (its JSON twin is [`super::json`]).
//!
//! JUnit is written with quick-junit 0.8 rather than junit-report 0.9: junit-report has no
//! `<properties>` at all (the testsuite properties below need them) and writes
//! `system-out` as one CDATA section, which a log holding `]]>` breaks. quick-junit
//! escapes text and attributes, has properties, and can read its output back.
//!
//! Layout: one `<testsuite name="SUITE.BACKEND">` per (suite, backend) pair, sorted by
//! suite and backend; in it, sorted by case, one `<testcase name="CASE" classname="SUITE.BACKEND" time="...">`
//! per cell with `<failure>` / `<error>` / `<skipped message="REASON">` and, as
//! `<system-out>`, the cell's own properties (e.g. the negotiated TLS version and cipher
//! suite) followed by its log. The testsuite's `<properties>` are `backend`, `partition`
//! (`K/N`, in a shard's report only) and then the cells' properties (first value wins).
//! The sorted order makes a run's report and the merged reports of its shards the same
//! document but for times and properties.
//!
//! The default document keeps the rules of the junit-10 schema that strict consumers
//! (the Jenkins xUnit plugin, pytest's `xunit2` family) validate with: no `<properties>`
//! in a `<testcase>` and no `skipped` on `<testsuites>`. [`JunitStyle::case_properties`]
//! adds the per-case `<properties>` that Surefire-style readers (GitLab, Jenkins' JUnit
//! plugin) show, at the cost of that schema.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use quick_junit::{NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestSuite};

use crate::report::outcome::{CellResult, RunResult, Status};

/// What a JUnit report holds beyond the schema strict consumers validate with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JunitStyle {
    /// Each cell's properties also as `<properties>` inside its `<testcase>`. The
    /// junit-10 schema refuses them there; by default they are in `<system-out>` only.
    pub case_properties: bool,
}

/// Writes `run` as JUnit XML to `path` (atomically; parent directories are created).
pub fn write_junit(run: &RunResult, path: &Path, style: JunitStyle) -> anyhow::Result<()> {
    let xml = junit_xml(run, style)?;
    super::write_atomically(path, xml.as_bytes())
        .with_context(|| format!("cannot write the JUnit report {}", path.display()))
}

/// The JUnit XML text of `run`.
fn junit_xml(run: &RunResult, style: JunitStyle) -> anyhow::Result<String> {
    let mut report = Report::new("hsm-harness");
    for group in group_cells(&run.in_report_order()) {
        let suite_name = format!("{}.{}", group[0].suite, group[0].backend);
        let mut suite = TestSuite::new(for_xml(&suite_name));

        // `backend` and `partition` first, then the union of the cells' properties;
        // first value wins.
        let mut seen: Vec<&str> = vec!["backend", "partition"];
        suite.add_property(Property::new("backend", for_xml(&group[0].backend)));
        if let Some(p) = run.partition {
            suite.add_property(Property::new("partition", p.to_string()));
        }
        for cell in &group {
            for (name, value) in &cell.properties {
                if !seen.contains(&name.as_str()) {
                    seen.push(name);
                    suite.add_property(Property::new(for_xml(name), for_xml(value)));
                }
            }
        }

        for cell in &group {
            suite.add_test_case(test_case(cell, &suite_name, style));
        }
        suite.set_time(group.iter().map(|c| c.duration).sum::<Duration>());
        report.add_test_suite(suite);
    }
    report.set_time(run.cells.iter().map(|c| c.duration).sum::<Duration>());
    let xml = report
        .to_string()
        .context("cannot serialise the JUnit report")?;
    Ok(without_total_skipped(xml))
}

/// `xml` without the `skipped` attribute quick-junit always writes on `<testsuites>`:
/// the junit-10 schema does not allow it there (each `<testsuite>` keeps its own count).
fn without_total_skipped(mut xml: String) -> String {
    let Some(start) = xml.find("<testsuites") else {
        return xml;
    };
    let end = xml[start..].find('>').map_or(xml.len(), |e| start + e);
    if let Some(at) = xml[start..end].find(" skipped=\"").map(|a| start + a) {
        let value = at + " skipped=\"".len();
        if let Some(close) = xml[value..end].find('"') {
            xml.replace_range(at..value + close + 1, "");
        }
    }
    xml
}

fn test_case(cell: &CellResult, classname: &str, style: JunitStyle) -> TestCase {
    let status = match &cell.status {
        Status::Passed => TestCaseStatus::success(),
        Status::Failed { message } => non_success(NonSuccessKind::Failure, "failure", message),
        Status::Errored { message } => non_success(NonSuccessKind::Error, "error", message),
        Status::Skipped { reason } => {
            let mut status = TestCaseStatus::skipped();
            status.set_message(for_xml(reason));
            status
        }
    };
    let mut case = TestCase::new(for_xml(&cell.case), status);
    case.set_classname(for_xml(classname));
    case.set_time(cell.duration);
    // The cell's own facts (its TLS version and cipher suite, say): cells of one
    // testsuite may differ, and the testsuite's union keeps only the first value.
    let out = system_out(cell);
    if !out.is_empty() {
        case.set_system_out(for_xml(&out));
    }
    if style.case_properties {
        for (name, value) in &cell.properties {
            case.add_property(Property::new(for_xml(name), for_xml(value)));
        }
    }
    case
}

/// The cell's properties, one `NAME: VALUE` line each under `properties:`, then its log.
fn system_out(cell: &CellResult) -> String {
    let mut out = String::new();
    if !cell.properties.is_empty() {
        out.push_str("properties:\n");
        for (name, value) in &cell.properties {
            out.push_str(&format!("  {name}: {value}\n"));
        }
        if !cell.log.is_empty() {
            out.push('\n');
        }
    }
    out.push_str(&cell.log);
    out
}

fn non_success(kind: NonSuccessKind, ty: &str, message: &str) -> TestCaseStatus {
    let message = for_xml(message);
    let mut status = TestCaseStatus::non_success(kind);
    status.set_type(ty);
    // XML readers fold newlines in attributes into spaces: keep a multi-line message
    // intact in the element's text as well.
    if message.contains('\n') {
        status.set_description(message.as_str());
    }
    status.set_message(message);
    status
}

/// The cells grouped by (suite, backend), groups and cells in first-seen order.
fn group_cells<'a>(cells: &[&'a CellResult]) -> Vec<Vec<&'a CellResult>> {
    let mut index: HashMap<(&str, &str), usize> = HashMap::new();
    let mut groups: Vec<Vec<&CellResult>> = Vec::new();
    for &cell in cells {
        let i = *index
            .entry((cell.suite.as_str(), cell.backend.as_str()))
            .or_insert_with(|| {
                groups.push(Vec::new());
                groups.len() - 1
            });
        groups[i].push(cell);
    }
    groups
}

/// `text` as it goes into the XML: [`clean`]ed, with tabs expanded to spaces (8-column
/// stops). quick-junit passes every string through `strip-ansi-escapes`, which drops tabs
/// and carriage returns; expanding tabs first keeps a log's indentation.
fn for_xml(text: &str) -> String {
    let text = clean(text);
    if !text.contains('\t') {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 16);
    let mut column = 0;
    for c in text.chars() {
        match c {
            '\t' => {
                let spaces = 8 - column % 8;
                out.extend(std::iter::repeat_n(' ', spaces));
                column += spaces;
            }
            '\n' | '\r' => {
                out.push(c);
                column = 0;
            }
            _ => {
                out.push(c);
                column += 1;
            }
        }
    }
    out
}

/// `text` without terminal escape sequences and without characters XML 1.0 cannot hold
/// or that are control characters: C0 controls except tab, newline and carriage return,
/// DEL and C1 controls, U+FFFE and U+FFFF.
pub(crate) fn clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => skip_escape_sequence(&mut chars),
            // C1 CSI: the 8-bit form of ESC [.
            '\u{9b}' => skip_csi(&mut chars),
            '\t' | '\n' | '\r' => out.push(c),
            '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}' | '\u{fffe}' | '\u{ffff}' => {}
            _ => out.push(c),
        }
    }
    out
}

/// Skips what follows an ESC (ECMA-48): a CSI sequence, a string command (OSC, DCS,
/// ...) up to its terminator, or a two-character escape.
fn skip_escape_sequence(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    match chars.peek() {
        Some('[') => {
            chars.next();
            skip_csi(chars);
        }
        // OSC, DCS, SOS, PM, APC: up to BEL or ST (ESC \).
        Some(']' | 'P' | 'X' | '^' | '_') => {
            chars.next();
            while let Some(c) = chars.next() {
                if c == '\u{7}' || c == '\u{9c}' {
                    break;
                }
                if c == '\u{1b}' {
                    if chars.peek() == Some(&'\\') {
                        chars.next();
                    }
                    break;
                }
            }
        }
        // ESC followed by intermediates (0x20-0x2F), then one final character.
        Some(_) => {
            while chars
                .next_if(|c| ('\u{20}'..='\u{2f}').contains(c))
                .is_some()
            {}
            chars.next_if(|c| ('\u{30}'..='\u{7e}').contains(c));
        }
        None => {}
    }
}

/// Skips a CSI sequence's parameters, intermediates and final byte.
fn skip_csi(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    while chars
        .next_if(|c| ('\u{30}'..='\u{3f}').contains(c))
        .is_some()
    {}
    while chars
        .next_if(|c| ('\u{20}'..='\u{2f}').contains(c))
        .is_some()
    {}
    chars.next_if(|c| ('\u{40}'..='\u{7e}').contains(c));
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    // One way to make a test cell, shared with the JSON twin's tests.
    use crate::report::json::tests::cell;

    /// One cell of each status across two (suite, backend) pairs, with dirty strings.
    fn sample_run() -> RunResult {
        let mut passed = cell("baseline", "softhsm", "rsa2048 sign", Status::Passed);
        passed.log = "step 1 \x1b[31mred\x1b[0m ok\nNUL:\0: bell:\x07: tab:\t: ünï ✓".into();
        passed.properties = vec![
            ("module".into(), "this cell's own module".into()),
            ("library-version".into(), "2.6\x1b[1m.1".into()),
        ];
        let mut failed = cell(
            "baseline",
            "softhsm",
            "ecdsa-p256 verify",
            Status::Failed {
                message: "step 2: signature \x1b[1mmismatch\x1b[0m\nsecond line".into(),
            },
        );
        // The first cell of its testsuite in report order: its values win there.
        failed.properties = vec![
            ("module".into(), "/usr/lib/softhsm/libsofthsm2.so".into()),
            ("token-label".into(), "harness".into()),
        ];
        failed.log = "log with ]]> and <tags> & \u{ffff} and \u{85}".into();
        let errored = cell(
            "baseline",
            "kmip",
            "rsa2048 sign",
            Status::Errored {
                message: "killed by signal 9 (SIGKILL)".into(),
            },
        );
        let skipped = cell(
            "baseline",
            "kmip",
            "ed25519 sign",
            Status::Skipped {
                reason: "backend lacks capability ed25519".into(),
            },
        );
        let again = cell("baseline", "softhsm", "random", Status::Passed);
        RunResult {
            cells: vec![passed, failed, errored, skipped, again],
            partition: None,
        }
    }

    fn assert_no_control_chars(text: &str) {
        for (i, c) in text.char_indices() {
            assert!(
                (!c.is_control() || matches!(c, '\n' | '\t' | '\r'))
                    && !matches!(c, '\u{fffe}' | '\u{ffff}'),
                "control character U+{:04X} at byte {i} in {text:?}",
                c as u32
            );
        }
    }

    #[test]
    fn clean_strips_escapes_and_controls() {
        assert_eq!(clean("\x1b[31mred\x1b[0m"), "red");
        assert_eq!(clean("a\0b\x07c\x7fd\u{9b}1;2mE"), "abcdE");
        assert_eq!(clean("\x1b]0;title\x07after"), "after");
        assert_eq!(clean("\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\"), "link");
        assert_eq!(clean("\x1b(Bx\x1b7y\x1b"), "xy");
        assert_eq!(
            clean("keep\ttab\nnewline\r\n and ünïcödé ✓"),
            "keep\ttab\nnewline\r\n and ünïcödé ✓"
        );
        assert_eq!(clean("\u{fffe}\u{ffff}\u{fffd}"), "\u{fffd}");
    }

    #[test]
    fn tabs_are_expanded_for_xml() {
        assert_eq!(
            for_xml("a\tb\n\tc\x1b[0m\tdefghijkl\te"),
            "a       b\n        c       defghijkl       e"
        );
    }

    #[test]
    fn junit_report_is_valid_and_complete() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/deeper/junit.xml");
        write_junit(&sample_run(), &path, JunitStyle::default()).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        testkit::junit10::assert_valid(&text);
        assert_no_control_chars(&text);
        assert!(!text.contains("[31m"), "ANSI escape left over:\n{text}");

        let doc = roxmltree::Document::parse(&text).expect("the report is well-formed XML");
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "testsuites");
        assert_eq!(root.attribute("tests"), Some("5"));
        assert_eq!(root.attribute("failures"), Some("1"));
        assert_eq!(root.attribute("errors"), Some("1"));
        assert_eq!(root.attribute("skipped"), None);

        let suites: Vec<_> = root
            .children()
            .filter(|n| n.has_tag_name("testsuite"))
            .collect();
        let names: Vec<_> = suites
            .iter()
            .map(|s| s.attribute("name").unwrap())
            .collect();
        // Sorted by suite and backend, whatever the run's order.
        assert_eq!(names, ["baseline.kmip", "baseline.softhsm"]);
        let (kmip, softhsm) = (suites[0], suites[1]);
        assert_eq!(softhsm.attribute("tests"), Some("3"));
        assert_eq!(softhsm.attribute("failures"), Some("1"));
        assert_eq!(kmip.attribute("tests"), Some("2"));
        assert_eq!(kmip.attribute("errors"), Some("1"));
        assert_eq!(kmip.attribute("skipped"), Some("1"));

        // The element's own <properties>, not those of its testcases.
        let properties = |node: roxmltree::Node| -> Vec<(String, String)> {
            node.children()
                .filter(|n| n.has_tag_name("properties"))
                .flat_map(|ps| ps.children())
                .filter(|n| n.has_tag_name("property"))
                .map(|p| {
                    (
                        p.attribute("name").unwrap().into(),
                        p.attribute("value").unwrap().into(),
                    )
                })
                .collect()
        };
        let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(
            properties(softhsm),
            [
                pair("backend", "softhsm"),
                pair("module", "/usr/lib/softhsm/libsofthsm2.so"),
                pair("token-label", "harness"),
                pair("library-version", "2.6.1"),
            ]
        );
        assert_eq!(properties(kmip), [pair("backend", "kmip")]);
        // Testcases have no <properties>: their own values are in their system-out.
        assert!(!doc
            .descendants()
            .filter(|n| n.has_tag_name("testcase"))
            .any(|c| c.children().any(|n| n.has_tag_name("properties"))));

        let cases: Vec<_> = doc
            .descendants()
            .filter(|n| n.has_tag_name("testcase"))
            .collect();
        assert_eq!(cases.len(), 5);
        let by_name = |suite: &str, name: &str| {
            *cases
                .iter()
                .find(|c| {
                    c.attribute("classname") == Some(suite) && c.attribute("name") == Some(name)
                })
                .unwrap_or_else(|| panic!("no testcase {suite} / {name}"))
        };

        let passed = by_name("baseline.softhsm", "rsa2048 sign");
        assert_eq!(passed.attribute("time"), Some("1.500"));
        assert!(!passed
            .children()
            .any(|n| n.has_tag_name("failure") || n.has_tag_name("error")));
        let out = passed
            .children()
            .find(|n| n.has_tag_name("system-out"))
            .unwrap();
        // The cell's own properties, also where the testsuite kept another value, then
        // the log; tabs become spaces up to the next 8-column stop.
        assert_eq!(
            out.text(),
            Some(
                "properties:\n  module: this cell's own module\n  library-version: 2.6.1\n\n\
                 step 1 red ok\nNUL:: bell:: tab:       : ünï ✓"
            )
        );

        let failed = by_name("baseline.softhsm", "ecdsa-p256 verify");
        let failure = failed
            .children()
            .find(|n| n.has_tag_name("failure"))
            .unwrap();
        assert_eq!(failure.attribute("type"), Some("failure"));
        // Attribute values fold the newline into a space; the text keeps it.
        assert_eq!(
            failure.attribute("message"),
            Some("step 2: signature mismatch second line")
        );
        assert_eq!(
            failure.text(),
            Some("step 2: signature mismatch\nsecond line")
        );
        let out = failed
            .children()
            .find(|n| n.has_tag_name("system-out"))
            .unwrap();
        assert_eq!(
            out.text(),
            Some(
                "properties:\n  module: /usr/lib/softhsm/libsofthsm2.so\n  token-label: harness\n\n\
                 log with ]]> and <tags> &  and "
            )
        );

        let errored = by_name("baseline.kmip", "rsa2048 sign");
        let error = errored
            .children()
            .find(|n| n.has_tag_name("error"))
            .unwrap();
        assert_eq!(error.attribute("type"), Some("error"));
        assert_eq!(
            error.attribute("message"),
            Some("killed by signal 9 (SIGKILL)")
        );
        assert!(!errored.children().any(|n| n.has_tag_name("system-out")));

        let skipped = by_name("baseline.kmip", "ed25519 sign");
        let skip = skipped
            .children()
            .find(|n| n.has_tag_name("skipped"))
            .unwrap();
        assert_eq!(
            skip.attribute("message"),
            Some("backend lacks capability ed25519")
        );

        // Every skipped element carries its reason.
        for skip in doc.descendants().filter(|n| n.has_tag_name("skipped")) {
            assert!(!skip.attribute("message").unwrap_or("").is_empty());
        }

        // quick-junit reads it back too.
        let back = Report::deserialize_from_str(&text).unwrap();
        assert_eq!(back.tests, 5);

        // No temporary file left behind.
        let left: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(left.len(), 1);
    }

    #[test]
    fn case_properties_put_each_cells_own_values_in_its_testcase() {
        let style = JunitStyle {
            case_properties: true,
        };
        let text = junit_xml(&sample_run(), style).unwrap();
        let doc = roxmltree::Document::parse(&text).unwrap();
        let own: Vec<(&str, &str)> = doc
            .descendants()
            .filter(|n| n.has_tag_name("testcase") && n.attribute("name") == Some("rsa2048 sign"))
            .flat_map(|c| c.children().filter(|n| n.has_tag_name("properties")))
            .flat_map(|ps| ps.children().filter(|n| n.has_tag_name("property")))
            .map(|p| (p.attribute("name").unwrap(), p.attribute("value").unwrap()))
            .collect();
        assert_eq!(
            own,
            [
                ("module", "this cell's own module"),
                ("library-version", "2.6.1")
            ]
        );
        // Which is exactly what the junit-10 schema refuses, and nothing else.
        let broken = testkit::junit10::violations(&text);
        assert!(!broken.is_empty());
        assert!(
            broken
                .iter()
                .all(|v| v.contains("<properties> is not allowed in it")),
            "{broken:?}"
        );
        // And quick-junit reads it back.
        assert_eq!(Report::deserialize_from_str(&text).unwrap().tests, 5);
    }

    #[test]
    fn a_shards_testsuites_name_the_partition_after_the_backend() {
        let mut run = sample_run();
        run.partition = Some("2/3".parse().unwrap());
        let text = junit_xml(&run, JunitStyle::default()).unwrap();
        let doc = roxmltree::Document::parse(&text).unwrap();
        let suites: Vec<_> = doc
            .descendants()
            .filter(|n| n.has_tag_name("testsuite"))
            .collect();
        assert_eq!(suites.len(), 2);
        for suite in suites {
            let names: Vec<(&str, &str)> = suite
                .children()
                .filter(|n| n.has_tag_name("properties"))
                .flat_map(|ps| ps.children())
                .filter(|p| p.has_tag_name("property"))
                .map(|p| (p.attribute("name").unwrap(), p.attribute("value").unwrap()))
                .collect();
            assert_eq!(names[1], ("partition", "2/3"), "{names:?}");
        }
    }

    #[test]
    fn empty_run_is_valid_junit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junit.xml");
        write_junit(&RunResult::default(), &path, JunitStyle::default()).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        testkit::junit10::assert_valid(&text);
        let doc = roxmltree::Document::parse(&text).unwrap();
        assert_eq!(doc.root_element().attribute("tests"), Some("0"));
    }

    #[test]
    fn rewriting_replaces_the_report() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junit.xml");
        write_junit(&sample_run(), &path, JunitStyle::default()).unwrap();
        write_junit(&RunResult::default(), &path, JunitStyle::default()).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(!text.contains("testcase"), "{text}");
    }

    #[test]
    fn unwritable_path_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        fs::write(&blocker, "").unwrap();
        let err = write_junit(
            &sample_run(),
            &blocker.join("junit.xml"),
            JunitStyle::default(),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("junit.xml"), "{err:#}");
    }
}
