//! An external PKCS#11 backend (`provider: pkcs11`): a SoftHSMv2 token prepared
//! outside the harness, with a key pair of its own, runs the baseline suite; the key
//! pair is there unchanged afterwards and nothing the run made is left.

use std::path::{Path, PathBuf};
use std::process::Command;

mod support;

use support::prepared::{assert_only_the_prepared_pair, Prepared};

const BIN: &str = env!("CARGO_BIN_EXE_hsm-harness");

/// The repository's own suites.
fn suites() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../suites")
}

/// The prepared token's backend file, `backends/external.yaml`, with the standard
/// profile plus credentials and replace-keys (for --allow-destructive).
fn prepared() -> Prepared {
    let p = Prepared::new();
    p.backend_in(&backends(&p), "", ", credentials, replace-keys");
    p
}

fn backends(p: &Prepared) -> PathBuf {
    p.dir.path().join("backends")
}

/// `hsm-harness run` on the external backend; exit code, the cells, the output.
fn run(
    p: &Prepared,
    suites_dir: &Path,
    suite: &str,
) -> (Option<i32>, Vec<serde_json::Value>, String) {
    run_with(p, suites_dir, suite, &[])
}

/// `run` with more arguments.
fn run_with(
    p: &Prepared,
    suites_dir: &Path,
    suite: &str,
    more: &[&str],
) -> (Option<i32>, Vec<serde_json::Value>, String) {
    let json = p.dir.path().join("out/results.json");
    let out = Command::new(BIN)
        .arg("run")
        .arg("--suites-dir")
        .arg(suites_dir)
        .arg("--backends-dir")
        .arg(backends(p))
        .args(["--backend", "external", "--suite", suite])
        .args(if more.contains(&"-j") {
            &[][..]
        } else {
            &["-j", "2"][..]
        })
        .args(more)
        .arg("--junit")
        .arg(p.dir.path().join("out/junit.xml"))
        .arg("--json")
        .arg(&json)
        // The cells must get the module's configuration from the backend file.
        .env_remove("SOFTHSM2_CONF")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&json).unwrap_or_else(|e| panic!("no JSON results ({e}): {text}")),
    )
    .unwrap();
    (
        out.status.code(),
        v["cells"].as_array().unwrap().clone(),
        text,
    )
}

#[test]
fn baseline_runs_on_a_prepared_token_and_leaves_it_as_it_was() {
    let p = prepared();
    let before = p.state();
    assert_only_the_prepared_pair(&before.0);

    let (code, cells, out) = run(&p, &suites(), "baseline-signing");
    assert_eq!(code, Some(0), "{out}");
    let passed = cells.iter().filter(|c| c["status"] == "passed").count();
    assert!(passed >= 8, "{out}");
    for c in &cells {
        assert!(c["status"] == "passed" || c["status"] == "skipped", "{c:#}");
    }
    // Each cell that ran says it put the token back (its keys destroyed, the
    // prepared pair checked).
    let ran = cells
        .iter()
        .find(|c| c["case"] == "rsa2048 signs and verifies independently");
    let said = ran.map(|c| c.to_string()).unwrap_or_default();
    assert!(said.contains("token left as found"), "{said}");
    assert!(said.contains("made by this cell"), "{said}");

    let after = p.state();
    assert_eq!(before.0, after.0, "the objects on the token changed");
    assert_eq!(before.1, after.1, "the prepared public key changed");
}

/// A case that fails half-way still has its key destroyed; a case that needs a PIN
/// change is skipped (a backend file cannot claim `credentials` for an external token).
#[test]
fn a_failing_case_leaves_no_key_and_administration_is_skipped() {
    let p = prepared();
    let before = p.state();
    let suites = p.dir.path().join("suites");
    std::fs::create_dir_all(&suites).unwrap();
    std::fs::write(
        suites.join("ext.yaml"),
        "suite: ext\nabout: x\ncases:\n  - name: fails after creating a key\n    steps:\n      - create_key: { alg: ecdsa-p256, as: k }\n      - sign: { key: k, data: abc, as: sig }\n      - verify: { signature: sig, expect: mismatch }\n  - name: changes the PIN\n    steps:\n      - create_key: { alg: rsa2048, as: k }\n      - restart: { change_pin: [a] }\n",
    )
    .unwrap();
    let (code, cells, out) = run(&p, &suites, "ext");
    assert_eq!(code, Some(1), "{out}");
    let failed = cells
        .iter()
        .find(|c| c["case"] == "fails after creating a key")
        .unwrap();
    assert_eq!(failed["status"], "failed", "{failed:#}");
    assert!(
        failed.to_string().contains("made by this cell"),
        "{failed:#}"
    );
    let pin = cells
        .iter()
        .find(|c| c["case"] == "changes the PIN")
        .unwrap();
    assert_eq!(pin["status"], "skipped", "{pin:#}");
    assert!(
        pin.to_string().contains("changes the PIN of instance 'a'")
            && pin.to_string().contains("--allow-destructive"),
        "{pin:#}"
    );
    assert_eq!(p.state(), before);
}

/// The mechanism names pkcs11-tool prints, the way the harness spells them
/// (`CKM_` + underscores), and the codes of those it prints only by number.
fn pkcs11_tool_mechanisms(listed: &str) -> (Vec<String>, Vec<u64>) {
    let mut names = Vec::new();
    let mut codes = Vec::new();
    for line in listed.lines().filter(|l| l.starts_with("  ")) {
        let name = line.trim().split(',').next().unwrap_or_default();
        match name.strip_prefix("mechtype-0x") {
            Some(hex) => codes.push(u64::from_str_radix(hex, 16).unwrap()),
            None => names.push(format!("CKM_{}", name.replace('-', "_"))),
        }
    }
    (names, codes)
}

#[test]
fn probe_writes_a_profile_listing_the_mechanisms_pkcs11_tool_shows() {
    let p = prepared();
    let profile = p.dir.path().join("external.profile.yaml");
    let out = Command::new(BIN)
        .arg("probe")
        .arg("--backend")
        .arg(backends(&p).join("external.yaml"))
        .arg("--write")
        .arg(&profile)
        .env_remove("SOFTHSM2_CONF")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("SoftHSM"), "{text}");

    let written: serde_json::Value =
        serde_saphyr::from_str(&std::fs::read_to_string(&profile).unwrap()).unwrap();
    let mechanisms = written["described"]["mechanisms"].as_object().unwrap();
    let (names, codes) = pkcs11_tool_mechanisms(&p.tool(&["--list-mechanisms"]));
    assert_eq!(
        mechanisms.len(),
        names.len() + codes.len(),
        "one profile row per mechanism pkcs11-tool lists: {mechanisms:?} against {names:?} {codes:?}"
    );
    // The two tools name a few mechanisms differently (PKCS#11 gave CKM_EC_KEY_PAIR_GEN
    // the older name CKM_ECDSA_KEY_PAIR_GEN); compare those by their code.
    let code_of = |row: &serde_json::Value| {
        let text = row.as_str().unwrap();
        u64::from_str_radix(text[2..10].trim_end_matches(';'), 16).unwrap()
    };
    let written_codes: Vec<u64> = mechanisms.values().map(code_of).collect();
    let mut unnamed_by_the_harness = 0;
    for name in &names {
        let alias = match name.as_str() {
            "CKM_ECDSA_KEY_PAIR_GEN" => Some(0x1040),
            _ => None,
        };
        match alias {
            Some(code) => assert!(written_codes.contains(&code), "{name}"),
            None if mechanisms.contains_key(name) => {}
            // A name cryptoki does not know (CKM_DES2_KEY_GEN): in the profile by code.
            None => unnamed_by_the_harness += 1,
        }
    }
    let by_code = mechanisms
        .iter()
        .filter(|(k, v)| k.starts_with("CKM_0x") && !codes.contains(&code_of(v)))
        .count();
    assert_eq!(
        unnamed_by_the_harness, by_code,
        "{mechanisms:?} against {names:?}"
    );
    for code in &codes {
        assert!(written_codes.contains(code), "0x{code:x}");
    }
    let caps: Vec<&str> = written["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    for c in ["rsa2048", "ecdsa-p256", "random", "pkcs11"] {
        assert!(caps.contains(&c), "{caps:?}");
    }

    // A backend file that names the profile runs on it.
    let file = backends(&p).join("external.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    let capabilities = text
        .lines()
        .find(|l| l.starts_with("capabilities:"))
        .unwrap();
    std::fs::write(
        &file,
        text.replace(capabilities, &format!("profile: {}", profile.display())),
    )
    .unwrap();
    let check = Command::new(BIN).arg("check").arg(&file).output().unwrap();
    assert!(check.status.success(), "{check:?}");
}

#[test]
fn with_allow_destructive_a_pin_change_and_an_impostor_run_and_the_token_is_put_back() {
    let p = prepared();
    let before = p.state();
    let cases = [
        "changed credentials keep the keys",
        "an impostor identity key does not bind",
    ];
    let filter = "*{changed credentials keep the keys,an impostor identity key does not bind}";

    let (code, cells, out) = run_with(&p, &suites(), "identity-binding", &["--filter", filter]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(cells.len(), 2, "{out}");
    for c in &cells {
        assert_eq!(c["status"], "skipped", "{c:#}");
        assert!(c.to_string().contains("--allow-destructive"), "{c:#}");
    }

    let (code, cells, out) = run_with(
        &p,
        &suites(),
        "identity-binding",
        &["--filter", filter, "--allow-destructive"],
    );
    assert_eq!(code, Some(0), "{out}");
    for case in cases {
        let c = cells.iter().find(|c| c["case"] == case).unwrap();
        assert_eq!(c["status"], "passed", "{c:#}");
    }
    // The backend file's PIN works again (state() logs in with it), the prepared pair is
    // as it was, and nothing the run made is left.
    assert_eq!(p.state(), before);
    assert_only_the_prepared_pair(&before.0);
}

#[test]
fn keys_of_a_cell_that_died_are_destroyed_by_the_next_cell_of_the_run() {
    let p = prepared();
    let before = p.state();
    let suites = p.dir.path().join("suites");
    std::fs::create_dir_all(&suites).unwrap();
    // Cases run in this order with -j 1 (the run's matrix order is the suite's).
    std::fs::write(
        suites.join("dies.yaml"),
        "suite: dies\nabout: x\ncases:\n  - name: a the module aborts after a key was made\n    shim: { rules: [ { function: C_SignInit, action: abort } ] }\n    steps:\n      - create_key: { alg: rsa2048, as: k }\n      - sign: { key: k, data: abc, as: sig }\n  - name: b signs\n    steps:\n      - create_key: { alg: ecdsa-p256, as: k }\n      - sign: { key: k, data: abc, as: sig }\n      - verify: { signature: sig }\n",
    )
    .unwrap();
    let file = backends(&p).join("external.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("pkcs11-shim"), "{text}");
    let (code, cells, out) = run_with(&p, &suites, "dies", &["-j", "1"]);
    assert_eq!(code, Some(1), "{out}");
    let died = cells
        .iter()
        .find(|c| c["case"].as_str().unwrap().starts_with("a "))
        .unwrap();
    assert_eq!(died["status"], "errored", "{died:#}");
    let next = cells.iter().find(|c| c["case"] == "b signs").unwrap();
    assert_eq!(next["status"], "passed", "{next:#}");
    assert!(
        next.to_string()
            .contains("left by a cell of this run that did not end"),
        "{next:#}"
    );
    assert_eq!(p.state(), before);
}
