//! Spreading a run over CI jobs and comparing runs, through the real binary:
//! `--partition K/N` shards, `merge-junit` of their results, and `diff` between two
//! runs' JSON results.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rstest::rstest;
use serde_json::{json, Value};

mod support;

use support::Run;

const BIN: &str = env!("CARGO_BIN_EXE_hsm-harness");

/// A scratch project with two software backends (one without ECDSA, so some cells
/// skip), two suites and one failing case: 14 cells of every status but errored.
struct Project {
    dir: tempfile::TempDir,
}

const SUITE_A: &str = "suite: alpha\nabout: x\ncases:
  - name: sign
    steps:
      - create_key: { alg: ecdsa-p256, as: k }
      - sign: { key: k, as: s }
      - verify: { signature: s }
  - name: good signature declared bad
    steps:
      - create_key: { alg: ecdsa-p256, as: k }
      - sign: { key: k, as: s }
      - verify: { signature: s, expect: mismatch }
  - name: random 8
    steps:
      - random: { bytes: 8 }
  - name: random 16
    steps:
      - random: { bytes: 16 }
";

const SUITE_B: &str = "suite: beta\nabout: x\ncases:
  - name: random 1
    steps:
      - random: { bytes: 1 }
  - name: random 2
    steps:
      - random: { bytes: 2 }
  - name: random 3
    steps:
      - random: { bytes: 3 }
";

impl Project {
    fn new() -> Self {
        let p = Project {
            dir: tempfile::tempdir().unwrap(),
        };
        for d in ["suites", "backends"] {
            std::fs::create_dir_all(p.dir.path().join(d)).unwrap();
        }
        for (name, capabilities) in [("software", "[ecdsa-p256, random]"), ("plain", "[random]")] {
            std::fs::write(
                p.dir.path().join(format!("backends/{name}.yaml")),
                format!(
                    "backend: {name}\nabout: test backend\nprovider: software\ncapabilities: {capabilities}\n"
                ),
            )
            .unwrap();
        }
        std::fs::write(p.dir.path().join("suites/alpha.yaml"), SUITE_A).unwrap();
        std::fs::write(p.dir.path().join("suites/beta.yaml"), SUITE_B).unwrap();
        p
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn harness(&self, sub: &str, args: &[&str]) -> Run {
        let mut cmd = std::process::Command::new(BIN);
        cmd.arg(sub);
        if ["run", "list"].contains(&sub) {
            cmd.arg("--suites-dir")
                .arg(self.path("suites"))
                .arg("--backends-dir")
                .arg(self.path("backends"));
        }
        cmd.args(args);
        Run::from_output(
            format!("hsm-harness {sub} {}", args.join(" ")),
            cmd.output().unwrap(),
        )
    }

    /// `run` writing `NAME.xml` and `NAME.json`; returns what it did.
    fn run(&self, name: &str, extra: &[&str]) -> Run {
        let (xml, json) = (
            self.path(&format!("{name}.xml")),
            self.path(&format!("{name}.json")),
        );
        let mut args = vec![
            "--junit",
            xml.to_str().unwrap(),
            "--json",
            json.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        self.harness("run", &args)
    }

    fn json(&self, name: &str) -> Value {
        serde_json::from_slice(&std::fs::read(self.path(&format!("{name}.json"))).unwrap()).unwrap()
    }

    fn list(&self, extra: &[&str]) -> Vec<String> {
        self.harness("list", extra)
            .success()
            .lines()
            .map(|l| l.split("  (").next().unwrap().to_string())
            .collect()
    }
}

/// The cell names of a JSON twin, in its order.
fn cell_names(results: &Value) -> Vec<String> {
    results["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{}.{}/{}",
                c["suite"].as_str().unwrap(),
                c["backend"].as_str().unwrap(),
                c["case"].as_str().unwrap()
            )
        })
        .collect()
}

/// What a JUnit report says, without times and properties: the root's counts, each
/// testsuite's name and counts, and each testcase as (classname, name, verdict).
#[derive(Debug, PartialEq, Eq)]
struct Junit {
    counts: Vec<Option<String>>,
    suites: Vec<(String, Vec<Option<String>>)>,
    cases: Vec<(String, String, String)>,
}

fn junit(path: &Path) -> Junit {
    let text = std::fs::read_to_string(path).unwrap();
    testkit::junit10::assert_valid(&text);
    let doc = roxmltree::Document::parse(&text).expect("JUnit is well-formed XML");
    let counts = |n: roxmltree::Node| -> Vec<Option<String>> {
        ["tests", "failures", "errors", "skipped"]
            .iter()
            .map(|a| n.attribute(*a).map(str::to_string))
            .collect()
    };
    let root = doc.root_element();
    Junit {
        counts: counts(root),
        suites: root
            .children()
            .filter(|n| n.has_tag_name("testsuite"))
            .map(|s| (s.attribute("name").unwrap().to_string(), counts(s)))
            .collect(),
        cases: doc
            .descendants()
            .filter(|n| n.has_tag_name("testcase"))
            .map(|c| {
                let verdict = c
                    .children()
                    .find(|v| ["failure", "error", "skipped"].contains(&v.tag_name().name()))
                    .map_or("passed", |v| v.tag_name().name());
                (
                    c.attribute("classname").unwrap().to_string(),
                    c.attribute("name").unwrap().to_string(),
                    verdict.to_string(),
                )
            })
            .collect(),
    }
}

/// The testsuites' `partition` properties of a JUnit report.
fn partition_properties(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let doc = roxmltree::Document::parse(&text).unwrap();
    doc.root_element()
        .children()
        .filter(|n| n.has_tag_name("testsuite"))
        .flat_map(|s| s.children().filter(|n| n.has_tag_name("properties")))
        .flat_map(|ps| ps.children())
        .filter(|p| p.has_tag_name("property") && p.attribute("name") == Some("partition"))
        .map(|p| p.attribute("value").unwrap().to_string())
        .collect()
}

#[test]
fn three_shards_run_every_cell_once_and_merge_into_the_whole_report() {
    let p = Project::new();
    let whole = p.run("whole", &[]);
    // The failing case fails the run.
    whole.fails_with(1);
    let everything = cell_names(&p.json("whole"));
    assert_eq!(everything.len(), 14, "{everything:?}");
    assert_eq!(p.list(&[]).len(), 14);

    let mut ran: BTreeMap<String, usize> = BTreeMap::new();
    let mut listed = 0;
    for k in 1..=3 {
        let shard = format!("{k}/3");
        let name = format!("shard{k}");
        let run = p.run(&name, &["--partition", &shard]);
        assert!(matches!(run.code, Some(0 | 1)), "{}", run.describe());
        let results = p.json(&name);
        assert_eq!(results["partition"], shard.as_str());
        assert_eq!(results["schema_version"], 1);
        let cells = cell_names(&results);
        // `list` shows the same shard.
        let mut shown = p.list(&["--partition", &shard]);
        shown.sort();
        let mut sorted = cells.clone();
        sorted.sort();
        assert_eq!(shown, sorted, "list and run disagree on shard {shard}");
        listed += shown.len();
        if !cells.is_empty() {
            let props = partition_properties(&p.path(&format!("{name}.xml")));
            assert!(
                !props.is_empty() && props.iter().all(|v| *v == shard),
                "{props:?}"
            );
        }
        for c in cells {
            *ran.entry(c).or_default() += 1;
        }
    }
    assert_eq!(listed, 14);
    let mut expected = everything.clone();
    expected.sort();
    assert_eq!(ran.keys().cloned().collect::<Vec<_>>(), expected);
    assert!(ran.values().all(|n| *n == 1), "a cell ran twice: {ran:?}");

    let (merged_xml, merged_json) = (p.path("merged.xml"), p.path("merged.json"));
    let shards: Vec<String> = (1..=3)
        .map(|k| p.path(&format!("shard{k}.json")).display().to_string())
        .collect();
    let mut args = vec![
        merged_xml.to_str().unwrap(),
        "--json",
        merged_json.to_str().unwrap(),
    ];
    args.extend(shards.iter().map(String::as_str));
    let merge = p.harness("merge-junit", &args);
    // The merged results hold the failing cell, so merge exits 1 as the run did.
    merge.fails_with(1);

    let (merged, unpartitioned) = (junit(&merged_xml), junit(&p.path("whole.xml")));
    assert_eq!(merged, unpartitioned);
    // The junit-10 schema has no `skipped` on <testsuites>; the testsuites count them.
    assert_eq!(
        merged.counts,
        [Some("14"), Some("1"), Some("0"), None].map(|c| c.map(str::to_string))
    );
    let skipped: usize = merged
        .suites
        .iter()
        .map(|(_, c)| c[3].as_deref().unwrap().parse::<usize>().unwrap())
        .sum();
    assert_eq!(skipped, 2);
    assert!(partition_properties(&merged_xml).is_empty());
    let merged = p.json("merged");
    assert!(merged.get("partition").is_none());
    assert_eq!(merged["tally"], p.json("whole")["tally"]);
    assert_eq!(cell_names(&merged), everything);

    // Nothing changed between the whole run and the merged shards.
    let diff = p.harness(
        "diff",
        &[
            p.path("whole.json").to_str().unwrap(),
            merged_json.to_str().unwrap(),
        ],
    );
    assert!(
        diff.success().contains("0 regressions") && diff.stdout.contains("14 cells unchanged"),
        "{}",
        diff.describe()
    );
}

#[test]
fn a_shard_with_no_cells_is_a_green_run_with_a_note() {
    let p = Project::new();
    let one = [
        "--suite",
        "beta",
        "--backend",
        "plain",
        "--filter",
        "random 1",
    ];
    assert_eq!(p.list(&one), ["beta.plain/random 1"]);
    // Of eight shards, seven are empty.
    let empty = (1..=8)
        .map(|k| format!("{k}/8"))
        .find(|shard| {
            let mut args = one.to_vec();
            args.extend(["--partition", shard.as_str()]);
            p.list(&args).is_empty()
        })
        .unwrap();
    let mut args = one.to_vec();
    args.extend(["--partition", empty.as_str()]);
    let run = p.run("empty", &args);
    assert!(
        run.success().contains("none of the selected cells"),
        "{}",
        run.describe()
    );
    let results = p.json("empty");
    assert_eq!(results["partition"], empty.as_str());
    assert_eq!(results["cells"], json!([]));
    // Selectors that match nothing at all are still bad input, shard or not.
    p.run("none", &["--filter", "no such case", "--partition", "1/2"])
        .fails_with(2);
}

#[rstest]
#[case("0/3")]
#[case("4/3")]
#[case("1/0")]
#[case("one/3")]
#[case("3")]
fn a_partition_that_is_no_shard_is_bad_input(#[case] partition: &str) {
    let p = Project::new();
    let err = p
        .harness("list", &["--partition", partition])
        .fails_with(2)
        .to_string();
    assert!(err.contains("--partition"), "{err}");
    p.run("bad", &["--partition", partition]).fails_with(2);
}

/// A results file with one cell per (case, status).
fn results(p: &Project, name: &str, cells: &[(&str, Value)]) -> PathBuf {
    let cells: Vec<Value> = cells
        .iter()
        .map(|(case, status)| {
            let mut c = json!({
                "suite": "baseline-signing", "backend": "softhsm", "case": case,
                "duration": 1.25, "properties": [["port", "40001"]], "log": "",
            });
            c.as_object_mut()
                .unwrap()
                .extend(status.as_object().unwrap().clone());
            c
        })
        .collect();
    let path = p.path(&format!("{name}.json"));
    std::fs::write(
        &path,
        serde_json::to_vec(&json!({"schema_version": 1, "tally": {}, "cells": cells})).unwrap(),
    )
    .unwrap();
    path
}

#[test]
fn diff_exits_1_naming_a_cell_that_went_from_passed_to_failed() {
    let p = Project::new();
    let passed = json!({"status": "passed"});
    let old = results(
        &p,
        "old",
        &[
            ("rsa2048 sign", passed.clone()),
            ("ecdsa sign", passed.clone()),
        ],
    );
    let new = results(
        &p,
        "new",
        &[
            (
                "rsa2048 sign",
                json!({"status": "failed", "message": "step 3 (verify, line 9): signature does not verify"}),
            ),
            ("ecdsa sign", passed.clone()),
        ],
    );
    let diff = p.harness("diff", &[old.to_str().unwrap(), new.to_str().unwrap()]);
    diff.fails_with(1);
    assert!(
        diff.stdout.contains(
            "  FAIL  baseline-signing.softhsm/rsa2048 sign  (was PASS)\n        step 3 (verify, line 9): signature does not verify\n"
        ),
        "{}",
        diff.describe()
    );
    assert!(
        diff.stdout.starts_with("Regressions"),
        "{}",
        diff.describe()
    );

    let as_json = p.harness(
        "diff",
        &["--json", old.to_str().unwrap(), new.to_str().unwrap()],
    );
    as_json.fails_with(1);
    let v: Value = serde_json::from_str(&as_json.stdout).unwrap();
    assert_eq!(
        v["regressions"][0]["cell"],
        "baseline-signing.softhsm/rsa2048 sign"
    );
    assert_eq!(v["unchanged"], 1);

    // The other way round it is a fix: exit 0.
    let back = p.harness("diff", &[new.to_str().unwrap(), old.to_str().unwrap()]);
    assert!(back.success().contains("Fixed"), "{}", back.describe());
}

#[rstest]
#[case::junit("<testsuites/>", "is not a results file")]
#[case::other_json("{\"cells\": []}", "is not a results file")]
#[case::future(r#"{"schema_version": 7, "cells": []}"#, "schema_version 7")]
fn diff_and_merge_refuse_what_they_cannot_read(#[case] text: &str, #[case] says: &str) {
    let p = Project::new();
    let good = results(&p, "good", &[("a", json!({"status": "passed"}))]);
    let bad = p.path("bad.json");
    std::fs::write(&bad, text).unwrap();
    let (good, bad) = (good.to_str().unwrap(), bad.to_str().unwrap());
    let err = p.harness("diff", &[good, bad]).fails_with(2).to_string();
    assert!(err.contains(says) && err.contains("bad.json"), "{err}");
    let out = p.path("out.xml");
    let err = p
        .harness("merge-junit", &[out.to_str().unwrap(), bad])
        .fails_with(2)
        .to_string();
    assert!(err.contains(says), "{err}");
    assert!(!out.exists());
}

#[test]
fn merge_refuses_a_cell_in_two_inputs() {
    let p = Project::new();
    let first = results(&p, "first", &[("a", json!({"status": "passed"}))]);
    let second = results(
        &p,
        "second",
        &[
            ("b", json!({"status": "passed"})),
            ("a", json!({"status": "passed"})),
        ],
    );
    let out = p.path("merged.xml");
    let err = p
        .harness(
            "merge-junit",
            &[
                out.to_str().unwrap(),
                first.to_str().unwrap(),
                second.to_str().unwrap(),
            ],
        )
        .fails_with(2)
        .to_string();
    assert!(
        err.contains("baseline-signing.softhsm/a is in both") && err.contains("second.json"),
        "{err}"
    );
    assert!(!out.exists());
    // Outputs first: a JSON file in OUT.xml's place would be overwritten otherwise.
    let err = p
        .harness(
            "merge-junit",
            &[first.to_str().unwrap(), second.to_str().unwrap()],
        )
        .fails_with(2)
        .to_string();
    assert!(err.contains("the output comes first"), "{err}");
}
