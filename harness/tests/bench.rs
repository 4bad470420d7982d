//! `hsm-harness bench` through the real binary, with tiny budgets: the table and the
//! JSON report have every row (measured, or skipped with the reason), ratios to the
//! raw floor, and the exit codes. No assertion about speed: speed is what the bench
//! reports, not what a test can judge.

use std::process::Command;

use serde_json::Value;

mod support;

use support::Run;

const BIN: &str = env!("CARGO_BIN_EXE_hsm-harness");

fn bench(args: &[&str], path_var: Option<&str>) -> Run {
    let mut cmd = Command::new(BIN);
    cmd.arg("bench").args(args).env_remove("RUST_LOG");
    if let Some(p) = path_var {
        cmd.env("PATH", p);
    }
    let out = cmd.output().expect("hsm-harness runs");
    Run::from_output(format!("hsm-harness bench {}", args.join(" ")), out)
}

fn softhsm_here() -> bool {
    hsm_harness::backends::token::softhsm_module(None).is_ok()
}

#[test]
fn software_and_softhsm_paths_give_every_row_with_ratios_and_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("b.json");
    // No pykmip-server on this PATH: its rows are skipped, saying why.
    let empty = dir.path().join("empty-path");
    std::fs::create_dir(&empty).unwrap();
    let run = bench(
        &[
            "--duration",
            "0.05",
            "--clients",
            "1,2",
            "--path",
            "software",
            "--path",
            "pkcs11",
            "--path",
            "kmip-pykmip",
            "--json",
            json.to_str().unwrap(),
        ],
        Some(empty.to_str().unwrap()),
    );
    let table = run.success();
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["schema_version"], 1);
    assert!(report["machine"]["cores"].as_u64().unwrap() >= 1);
    let rows = report["rows"].as_array().unwrap();
    // 4 paths (the raw floor always) x 2 algorithms x 2 client counts.
    assert_eq!(rows.len(), 16, "{}", run.describe());
    let row = |path: &str, alg: &str, clients: u64| {
        rows.iter()
            .find(|r| r["path"] == path && r["algorithm"] == alg && r["clients"] == clients)
            .unwrap_or_else(|| panic!("no row {path} {alg} {clients}\n{}", run.describe()))
    };
    for alg in ["rsa2048", "ecdsa-p256"] {
        for clients in [1, 2] {
            let soft = row("software", alg, clients);
            assert_eq!(soft["status"], "measured", "{soft}");
            assert!(soft["signs"].as_u64().unwrap() >= 1);
            assert!(soft["p99_ms"].as_f64().unwrap() >= soft["p50_ms"].as_f64().unwrap());
            let py = row("kmip-pykmip", alg, clients);
            assert_eq!(py["status"], "skipped", "{py}");
            assert!(
                py["reason"].as_str().unwrap().contains("pykmip-server"),
                "{py}"
            );
            for path in ["raw-cryptoki", "pkcs11"] {
                let r = row(path, alg, clients);
                if softhsm_here() {
                    assert_eq!(r["status"], "measured", "{r}");
                } else {
                    assert_eq!(r["status"], "skipped", "{r}");
                }
            }
            if softhsm_here() {
                assert_eq!(row("raw-cryptoki", alg, clients)["ratio_to_raw"], 1.0);
                assert!(soft["ratio_to_raw"].as_f64().unwrap() > 0.0, "{soft}");
            }
        }
    }
    if softhsm_here() {
        let targets = report["targets"].as_array().unwrap();
        assert!(
            targets
                .iter()
                .any(|t| t["what"].as_str().unwrap().starts_with("pkcs11")),
            "{targets:?}"
        );
    }
    // The table: a header, a line per row, the skip reasons, the targets.
    assert!(table.starts_with("path "), "{table}");
    assert!(table.contains("x raw"), "{table}");
    assert!(table.contains("kmip-pykmip   ecdsa-p256"), "{table}");
    assert!(
        table.contains("skipped: pykmip-server not found"),
        "{table}"
    );
    if softhsm_here() {
        assert!(table.contains("1.00x"), "{table}");
        assert!(table.contains("targets:"), "{table}");
    }
}

#[test]
fn a_signs_budget_counts_signatures() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("b.json");
    bench(
        &[
            "--signs",
            "7",
            "--clients",
            "3",
            "--path",
            "software",
            "--alg",
            "ecdsa-p256",
            "--json",
            json.to_str().unwrap(),
        ],
        None,
    )
    .success();
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let soft = report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["path"] == "software")
        .unwrap()
        .clone();
    assert_eq!(soft["signs"], 7, "{soft}");
    assert_eq!(soft["clients"], 3);
    assert_eq!(report["budget"]["signs"], 7);
}

#[test]
fn bad_input_exits_2() {
    for args in [
        &["--clients", "0"][..],
        &["--duration", "0"],
        &["--duration", "1", "--signs", "5"],
        &["--alg", "ed448"],
        &["--path", "nowhere"],
        &["--signs", "0"],
    ] {
        let run = bench(args, None);
        run.fails_with(2);
    }
}
