//! One cell: one case run against one backend, inside the cell's own process.
//!
//! The runner starts `hsm-harness cell ...` for every cell. This module is what runs
//! there: bring the backend up, build the signer router, run the steps, and write the
//! verdict to `<workdir>/result.json`. Everything it says goes to stderr, which the
//! runner keeps as the cell's log; if the process dies, the runner reports the
//! signal and the tail of that log instead.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use hsm_signers::{Algorithm, KeyIdentifier, Router, SignerError};
use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};

use crate::backend::Backend;
use crate::outcome::Status;
use crate::suite::{Case, Expect, SelfTest, Step, Verdict};
use crate::verify;

/// The payload signed when a `sign` step gives no `data`.
pub const DEFAULT_DATA: &str = "hsm-harness test payload";

/// What a cell process leaves for the runner.
#[derive(Debug, Serialize, Deserialize)]
pub struct CellReport {
    #[serde(flatten)]
    pub status: Status,
    pub properties: Vec<(String, String)>,
}

pub const RESULT_FILE: &str = "result.json";

struct KeyEntry {
    id: KeyIdentifier,
    alg: Algorithm,
    spki: Vec<u8>,
}

struct SignatureEntry {
    key: String,
    alg: Algorithm,
    data: Vec<u8>,
    bytes: Vec<u8>,
}

/// The state a case builds up as its steps run.
#[derive(Default)]
struct Bindings {
    keys: HashMap<String, KeyEntry>,
    signatures: HashMap<String, SignatureEntry>,
}

fn log(line: impl AsRef<str>) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{}", line.as_ref());
}

/// Runs `case` against `backend` with `workdir` as the cell's private directory and
/// writes the report file there.
pub fn run_and_report(case: &Case, backend: &Backend, workdir: &Path) -> anyhow::Result<()> {
    let report = run(case, backend, workdir);
    log(format!("cell result: {}", report.status.label()));
    let tmp = workdir.join(format!("{RESULT_FILE}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec_pretty(&report)?)?;
    std::fs::rename(&tmp, workdir.join(RESULT_FILE))?;
    Ok(())
}

fn run(case: &Case, backend: &Backend, workdir: &Path) -> CellReport {
    log(format!(
        "case '{}' on backend '{}' ({} provider)",
        case.name,
        backend.name,
        backend.provider_name()
    ));
    let provisioned = match backend.provision(workdir) {
        Ok(p) => p,
        Err(e) => {
            return CellReport {
                status: Status::Errored {
                    message: format!("backend '{}' did not come up: {e:#}", backend.name),
                },
                properties: vec![],
            }
        }
    };
    let mut properties = provisioned.properties;
    let router = match Router::new(&provisioned.setup, &workdir.join("state")) {
        Ok(r) => r,
        Err(e) => {
            return CellReport {
                status: Status::Errored {
                    message: format!("cannot start the signer router: {e}"),
                },
                properties,
            }
        }
    };
    match router.default_signer().info() {
        Ok(info) => {
            log(format!("signer '{}' ({})", info.name, info.signer_type));
            for (k, v) in info.details {
                log(format!("  {k}: {v}"));
                if !properties.iter().any(|(pk, _)| *pk == k) {
                    properties.push((k, v));
                }
            }
        }
        Err(e) => {
            return CellReport {
                status: Status::Errored {
                    message: format!("signer for backend '{}' is unusable: {e}", backend.name),
                },
                properties,
            }
        }
    }
    let mut bindings = Bindings::default();
    for (i, step) in case.steps.iter().enumerate() {
        let n = i + 1;
        let at = format!(
            "step {n} ({}, line {})",
            step.value.keyword(),
            step.referenced.line()
        );
        log(format!("{at}: start"));
        if let Err(message) = run_step(&router, &mut bindings, &step.value) {
            log(format!("{at}: FAILED: {message}"));
            return CellReport {
                status: Status::Failed {
                    message: format!("{at}: {message}"),
                },
                properties,
            };
        }
    }
    CellReport {
        status: Status::Passed,
        properties,
    }
}

/// Applies a step's expectation to what the signer did. `Ok(Some(v))`: success, go on
/// with `v`; `Ok(None)`: failed as expected; `Err`: the expectation did not hold.
fn expect<T>(expect: &Expect, result: Result<T, SignerError>) -> Result<Option<T>, String> {
    match (&expect.error, result) {
        (None, Ok(v)) => Ok(Some(v)),
        (None, Err(e)) => Err(format!("signer error: {e}")),
        (Some(kind), Err(e)) if e.kind == *kind => {
            log(format!("  failed as expected: {e}"));
            Ok(None)
        }
        (Some(kind), Err(e)) => Err(format!(
            "expected an error of kind '{kind}', got '{}': {}",
            e.kind, e.message
        )),
        (Some(kind), Ok(_)) => Err(format!(
            "expected an error of kind '{kind}', but the step succeeded"
        )),
    }
}

fn run_step(router: &Router, b: &mut Bindings, step: &Step) -> Result<(), String> {
    match step {
        Step::CreateKey {
            alg,
            name,
            expect: e,
        } => {
            let Some(created) = expect(e, router.create_key(*alg))? else {
                return Ok(());
            };
            // Recompute the identifier here rather than trusting the signer's.
            let spki = spki::SubjectPublicKeyInfoRef::try_from(created.public_key.as_slice())
                .map_err(|err| format!("public key is not a DER SubjectPublicKeyInfo: {err}"))?;
            let bits = spki
                .subject_public_key
                .as_bytes()
                .ok_or("subjectPublicKey has unused bits")?;
            let expected: [u8; 20] = Sha1::digest(bits).into();
            if created.id.as_bytes() != &expected {
                return Err(format!(
                    "key identifier {} is not the SHA-1 of the key bits ({})",
                    created.id,
                    hex::encode(expected)
                ));
            }
            log(format!("  created {alg} key {} as '{name}'", created.id));
            b.keys.insert(
                name.clone(),
                KeyEntry {
                    id: created.id,
                    alg: *alg,
                    spki: created.public_key,
                },
            );
        }
        Step::Sign {
            key,
            alg,
            data,
            name,
            expect: e,
        } => {
            let entry = b.keys.get(&key.value).ok_or("unknown key")?;
            let alg = alg.unwrap_or(entry.alg);
            let data = data.as_deref().unwrap_or(DEFAULT_DATA).as_bytes().to_vec();
            let Some(sig) = expect(e, router.sign(&entry.id, alg, &data))? else {
                return Ok(());
            };
            log(format!(
                "  {alg} signature of {} bytes with key '{}'",
                sig.len(),
                key.value
            ));
            if let Some(name) = name {
                b.signatures.insert(
                    name.clone(),
                    SignatureEntry {
                        key: key.value.clone(),
                        alg,
                        data,
                        bytes: sig,
                    },
                );
            }
        }
        Step::Verify {
            signature,
            key,
            data,
            expect,
        } => {
            let sig = b
                .signatures
                .get(&signature.value)
                .ok_or("unknown signature")?;
            let key_name = key.as_ref().map_or(&sig.key, |k| &k.value);
            let key = b.keys.get(key_name).ok_or("unknown key")?;
            let data = data
                .as_ref()
                .map_or(sig.data.clone(), |d| d.as_bytes().to_vec());
            let got = verify::verify(&key.spki, sig.alg, &data, &sig.bytes);
            let verdict = match &got {
                Ok(()) => Verdict::Valid,
                Err(e) if e.kind_name() == "mismatch" => Verdict::Mismatch,
                Err(e) if e.kind_name() == "bad-encoding" => Verdict::BadEncoding,
                Err(e) => return Err(format!("independent verifier refused the key: {e}")),
            };
            if verdict != *expect {
                return Err(match got {
                    Ok(()) => format!(
                        "signature '{}' verified with key '{key_name}', expected {expect:?}",
                        signature.value
                    ),
                    Err(e) => format!(
                        "independent verification of '{}' with key '{key_name}': {e}",
                        signature.value
                    ),
                });
            }
            log(format!(
                "  independent verifier: {verdict:?} (as expected) for '{}' with key '{key_name}'",
                signature.value
            ));
        }
        Step::PublicKey { key, expect: e } => {
            let entry = b.keys.get(&key.value).ok_or("unknown key")?;
            let Some(spki) = expect(e, router.public_key(&entry.id))? else {
                return Ok(());
            };
            if spki != entry.spki {
                return Err(format!(
                    "public key of '{}' read back differs from the one create_key returned",
                    key.value
                ));
            }
            log(format!("  public key of '{}' matches", key.value));
        }
        Step::DestroyKey { key, expect: e } => {
            let entry = b.keys.get(&key.value).ok_or("unknown key")?;
            if expect(e, router.destroy_key(&entry.id))?.is_some() {
                log(format!("  destroyed '{}' ({})", key.value, entry.id));
            }
        }
        Step::Random { bytes, expect: e } => {
            let Some(r) = expect(e, router.random(*bytes))? else {
                return Ok(());
            };
            if r.len() != *bytes {
                return Err(format!("asked for {bytes} random bytes, got {}", r.len()));
            }
            log(format!("  {} random bytes", r.len()));
        }
        Step::Sleep { seconds } => {
            std::thread::sleep(Duration::from_secs_f64(seconds.max(0.0)));
        }
        Step::SelfTest(SelfTest::Abort) => {
            log("  self_test: aborting the cell process");
            std::process::abort();
        }
        Step::SelfTest(SelfTest::Hang) => {
            log("  self_test: hanging");
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
    }
    Ok(())
}
