//! The rules of the JUnit "junit-10" schema, the one the Jenkins xUnit plugin validates
//! reports with (pytest's `xunit2` family targets it too), encoded as a check.
//!
//! Only what the schema allows passes: the elements it declares, each with its own
//! attributes (required ones present) and its own children, no text where it has element
//! content only, and `time` of `<testsuite>` and `<testsuites>` in its SUREFIRE_TIME
//! form. Notably refused: `<properties>` inside `<testcase>`, and `skipped` (or any
//! attribute but name, time, tests, failures, errors) on `<testsuites>`.

use roxmltree::{Document, Node, NodeType};

/// Every way `xml` breaks the schema's rules, each naming the element and its line;
/// empty when the document keeps them. Not well-formed XML is one violation.
pub fn violations(xml: &str) -> Vec<String> {
    let doc = match Document::parse(xml) {
        Ok(doc) => doc,
        Err(e) => return vec![format!("not well-formed XML: {e}")],
    };
    let mut out = Vec::new();
    check(&doc, doc.root_element(), &mut out);
    out
}

/// Panics listing every violation of the schema's rules in `xml`.
pub fn assert_valid(xml: &str) {
    let found = violations(xml);
    assert!(
        found.is_empty(),
        "the JUnit report breaks the junit-10 schema:\n  {}",
        found.join("\n  ")
    );
}

/// What the schema says of one element: its attributes (required ones marked), the
/// elements allowed in it, and whether it holds text.
struct Rule {
    attributes: &'static [(&'static str, Required)],
    children: &'static [&'static str],
    text: bool,
}

#[derive(PartialEq)]
enum Required {
    Yes,
    No,
}

use Required::{No, Yes};

const MESSAGE_AND_TYPE: &[(&str, Required)] = &[("type", No), ("message", No)];
const RERUN: Rule = Rule {
    attributes: &[("message", No), ("type", Yes)],
    children: &["stackTrace", "system-out", "system-err"],
    text: true,
};
const STRING: Rule = Rule {
    attributes: &[],
    children: &[],
    text: true,
};

fn rule(name: &str) -> Option<Rule> {
    Some(match name {
        "testsuites" => Rule {
            attributes: &[
                ("name", No),
                ("time", No),
                ("tests", No),
                ("failures", No),
                ("errors", No),
            ],
            children: &["testsuite"],
            text: false,
        },
        "testsuite" => Rule {
            attributes: &[
                ("name", Yes),
                ("tests", Yes),
                ("failures", Yes),
                ("errors", Yes),
                ("group", No),
                ("time", No),
                ("skipped", No),
                ("timestamp", No),
                ("hostname", No),
                ("id", No),
                ("package", No),
                ("file", No),
                ("log", No),
                ("url", No),
            ],
            children: &[
                "testsuite",
                "properties",
                "testcase",
                "system-out",
                "system-err",
            ],
            text: false,
        },
        "properties" => Rule {
            attributes: &[],
            children: &["property"],
            text: false,
        },
        "property" => Rule {
            attributes: &[("name", Yes), ("value", Yes)],
            children: &[],
            text: false,
        },
        "testcase" => Rule {
            attributes: &[
                ("name", Yes),
                ("time", No),
                ("classname", No),
                ("group", No),
            ],
            children: &[
                "skipped",
                "error",
                "failure",
                "rerunFailure",
                "rerunError",
                "flakyFailure",
                "flakyError",
                "system-out",
                "system-err",
            ],
            text: false,
        },
        "failure" | "error" | "skipped" => Rule {
            attributes: MESSAGE_AND_TYPE,
            children: &[],
            text: true,
        },
        "rerunFailure" | "rerunError" | "flakyFailure" | "flakyError" => RERUN,
        "system-out" | "system-err" | "stackTrace" => STRING,
        _ => return None,
    })
}

fn check(doc: &Document, node: Node, out: &mut Vec<String>) {
    let name = node.tag_name().name();
    let line = doc.text_pos_at(node.range().start).row;
    let at = format!("<{name}> at line {line}");
    if node.tag_name().namespace().is_some() {
        out.push(format!("{at} is in a namespace; the schema has none"));
    }
    let Some(rule) = rule(name) else {
        out.push(format!("{at}: the schema has no such element"));
        return;
    };
    for attribute in node.attributes() {
        if !rule.attributes.iter().any(|(a, _)| *a == attribute.name()) {
            out.push(format!(
                "{at}: attribute `{}` is not allowed",
                attribute.name()
            ));
        }
    }
    for (attribute, required) in rule.attributes {
        if *required == Yes && node.attribute(*attribute).is_none() {
            out.push(format!("{at}: required attribute `{attribute}` is missing"));
        }
    }
    if matches!(name, "testsuite" | "testsuites") {
        if let Some(time) = node.attribute("time") {
            if !is_surefire_time(time) {
                out.push(format!("{at}: time `{time}` is not a SUREFIRE_TIME"));
            }
        }
    }
    let mut sequence_at = 0;
    for child in node.children() {
        match child.node_type() {
            NodeType::Element => {
                let child_name = child.tag_name().name();
                match rule.children.iter().position(|c| *c == child_name) {
                    None => out.push(format!("{at}: <{child_name}> is not allowed in it")),
                    // The rerun types' children are a sequence: in order, each at most once.
                    Some(i) if std::ptr::eq(rule.children, RERUN.children) => {
                        if i < sequence_at {
                            out.push(format!("{at}: <{child_name}> is out of order"));
                        }
                        sequence_at = i + 1;
                    }
                    Some(_) => {}
                }
                if rule.children.contains(&child_name) {
                    check(doc, child, out);
                }
            }
            NodeType::Text if !rule.text && !child.text().unwrap_or("").trim().is_empty() => {
                out.push(format!("{at} holds text; the schema allows elements only"));
            }
            _ => {}
        }
    }
}

/// SUREFIRE_TIME, the schema's own pattern (XSD patterns match the whole value):
/// digits, grouped by three after commas if grouped, and an optional fraction; no sign,
/// no exponent.
fn is_surefire_time(time: &str) -> bool {
    static PATTERN: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    PATTERN
        .get_or_init(|| {
            regex::Regex::new(r"^(?:(?:[0-9]{0,3},)*[0-9]{3}|[0-9]{0,3})*(?:\.[0-9]*)?$")
                .expect("the SUREFIRE_TIME pattern compiles")
        })
        .is_match(time)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuites name="x" tests="2" failures="1" errors="0" time="1.5">
  <testsuite name="s" tests="2" failures="1" errors="0" skipped="0" time="1,234.5" timestamp="t">
    <properties><property name="a" value="b"/></properties>
    <testcase name="c" classname="s" time="0.1"><system-out>log</system-out></testcase>
    <testcase name="d"><failure type="failure" message="m">text</failure></testcase>
  </testsuite>
</testsuites>"#;

    #[test]
    fn a_report_within_the_rules_passes() {
        assert_eq!(violations(VALID), Vec::<String>::new());
    }

    #[test]
    fn what_strict_consumers_refuse_is_named() {
        let xml = VALID
            .replace(
                r#"<testsuites name="x""#,
                r#"<testsuites name="x" skipped="0""#,
            )
            .replace(
                "<system-out>log</system-out>",
                r#"<properties><property name="a" value="b"/></properties>"#,
            )
            .replace(r#"time="1.5""#, r#"time="1e3""#)
            .replace(r#"<testcase name="d">"#, r#"<testcase>"#);
        let found = violations(&xml).join("\n");
        for expected in [
            "<testsuites> at line 2: attribute `skipped` is not allowed",
            "<testcase> at line 5: <properties> is not allowed in it",
            "time `1e3` is not a SUREFIRE_TIME",
            "<testcase> at line 6: required attribute `name` is missing",
        ] {
            assert!(found.contains(expected), "{expected:?} not in:\n{found}");
        }
    }

    #[test]
    fn surefire_time_has_digits_grouped_by_three_and_a_fraction() {
        for ok in [
            "0",
            "1.500",
            "12345.6",
            "1,234",
            "1,234,567.89",
            "12,34,567",
            ".5",
            "",
        ] {
            assert!(is_surefire_time(ok), "{ok}");
        }
        for bad in ["-1", "1e3", "1,23", "1.2.3", "abc", "1 000", "1,"] {
            assert!(!is_surefire_time(bad), "{bad}");
        }
    }
}
