//! `hsm-harness bench`: sign throughput and latency on each path a signature can take,
//! against the floor of raw `cryptoki` calls on a SoftHSMv2 token, measured in the
//! same run.
//!
//! Contract:
//!
//! - Paths ([`PathName`]): `raw-cryptoki` (the floor, always measured), `pkcs11` (the
//!   PKCS#11 signer on SoftHSMv2), `kmip-relay` (the KMIP signer through our relay,
//!   TLS 1.3, on SoftHSMv2), `kmip-pykmip` (the KMIP signer to a PyKMIP server, TLS
//!   1.2) and `software` (the software signer). Each is brought up as a cell brings
//!   up its backend ([`paths`]), and signs a fixed 32-byte payload.
//! - Every (path, algorithm, clients) gives one [`Row`]: measured (signs/s over the
//!   wall time, p50 and p99 of each sign's latency, and the throughput as a multiple
//!   of the raw floor's for the same algorithm and clients), skipped with the reason
//!   (a program that is not installed, an algorithm the backend lacks), or an error.
//!   No selected path is silently missing.
//! - Each measurement has a short warm-up first (connection pools, caches), whose
//!   numbers are dropped. Measurements run one after another, never two at once.
//! - Speed is judged here, in numbers, never by timed assertions in tests.

pub mod measure;
pub mod paths;
pub mod table;

use std::time::Duration;

use hsm_signers::Algorithm;
use serde::Serialize;

use measure::{Budget, Stats};
use paths::{Lab, Readiness};

/// What every path signs: 32 bytes, the size of a digest a caller might sign.
pub const PAYLOAD: &[u8] = b"hsm-harness bench payload 32 B.\n";

/// The version of the JSON [`Report`]; raised when a field changes meaning.
pub const SCHEMA_VERSION: u32 = 1;

/// A path a signature takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PathName {
    /// `cryptoki` calls on a SoftHSMv2 token: the floor.
    RawCryptoki,
    /// The PKCS#11 signer on a SoftHSMv2 token.
    Pkcs11,
    /// The KMIP signer through the relay (kmip2pkcs11) on a SoftHSMv2 token.
    KmipRelay,
    /// The KMIP signer to a PyKMIP server.
    KmipPykmip,
    /// The software signer.
    Software,
}

impl PathName {
    pub const ALL: [PathName; 5] = [
        PathName::RawCryptoki,
        PathName::Pkcs11,
        PathName::KmipRelay,
        PathName::KmipPykmip,
        PathName::Software,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PathName::RawCryptoki => "raw-cryptoki",
            PathName::Pkcs11 => "pkcs11",
            PathName::KmipRelay => "kmip-relay",
            PathName::KmipPykmip => "kmip-pykmip",
            PathName::Software => "software",
        }
    }
}

/// An algorithm the bench measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum, Serialize)]
pub enum BenchAlg {
    /// RSA-2048 PKCS#1 v1.5 with SHA-256.
    #[value(name = "rsa2048")]
    #[serde(rename = "rsa2048")]
    Rsa2048,
    /// ECDSA P-256 with SHA-256.
    #[value(name = "ecdsa-p256")]
    #[serde(rename = "ecdsa-p256")]
    EcdsaP256,
}

impl BenchAlg {
    pub const ALL: [BenchAlg; 2] = [BenchAlg::Rsa2048, BenchAlg::EcdsaP256];

    pub fn algorithm(self) -> Algorithm {
        match self {
            BenchAlg::Rsa2048 => Algorithm::Rsa2048Pkcs1Sha256,
            BenchAlg::EcdsaP256 => Algorithm::EcdsaP256Sha256,
        }
    }

    pub fn name(self) -> &'static str {
        self.algorithm().name()
    }
}

/// What to measure.
#[derive(Clone, Debug)]
pub struct Settings {
    pub paths: Vec<PathName>,
    pub algs: Vec<BenchAlg>,
    pub clients: Vec<usize>,
    pub budget: Budget,
}

/// One (path, algorithm, clients) of a run.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub path: PathName,
    pub algorithm: BenchAlg,
    pub clients: usize,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// What became of a row.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Outcome {
    Measured {
        signs: u64,
        seconds: f64,
        signs_per_sec: f64,
        p50_ms: f64,
        p99_ms: f64,
        /// Signs/s as a multiple of the raw floor's (same algorithm and clients);
        /// absent when the floor was not measured. Time per sign is its inverse.
        ratio_to_raw: Option<f64>,
    },
    Skipped {
        reason: String,
    },
    Error {
        message: String,
    },
}

/// The machine a run measured on.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub os: &'static str,
    pub arch: &'static str,
}

impl Machine {
    pub fn this() -> Machine {
        Machine {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            os: std::env::consts::OS,
            arch: std::env::consts::ARCH,
        }
    }
}

/// One of the speed targets, as this run's numbers say.
#[derive(Clone, Debug, Serialize)]
pub struct Target {
    /// What is compared, e.g. `pkcs11 time per sign / raw-cryptoki, rsa2048, 1 client`.
    pub what: String,
    /// `<=` or `>=`.
    pub rule: &'static str,
    pub bound: f64,
    pub measured: f64,
    pub holds: bool,
}

/// A whole run: the JSON of `--json`.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub schema_version: u32,
    pub date: String,
    pub version: &'static str,
    pub machine: Machine,
    /// Seconds per measurement, or signatures per measurement.
    pub budget: serde_json::Value,
    pub rows: Vec<Row>,
    pub targets: Vec<Target>,
}

impl Report {
    /// Whether a row is an error (exit 1).
    pub fn has_errors(&self) -> bool {
        self.rows
            .iter()
            .any(|r| matches!(r.outcome, Outcome::Error { .. }))
    }
}

/// Brings the paths up, measures every row and computes ratios and targets. `progress`
/// hears of each row as it is done (the console prints it).
pub fn run(settings: &Settings, progress: &mut dyn FnMut(&Row)) -> anyhow::Result<Report> {
    let max_clients = settings.clients.iter().copied().max().unwrap_or(1);
    let lab = Lab::up(&settings.paths, &settings.algs, max_clients)?;
    let mut order: Vec<PathName> = PathName::ALL
        .into_iter()
        .filter(|p| *p == PathName::RawCryptoki || settings.paths.contains(p))
        .collect();
    order.dedup();
    let mut rows = Vec::new();
    // Algorithm and clients outermost: the floor and each path are measured close
    // together in time.
    for &alg in &settings.algs {
        for &clients in &settings.clients {
            for &path in &order {
                let outcome = match lab.paths.get(&path) {
                    None => Outcome::Skipped {
                        reason: "not brought up".into(),
                    },
                    Some(readiness) => measure_row(readiness, alg, clients, settings.budget),
                };
                rows.push(Row {
                    path,
                    algorithm: alg,
                    clients,
                    outcome,
                });
                // The floor comes first in each group: the row's ratio is known now.
                add_ratios(&mut rows);
                if let Some(row) = rows.last() {
                    progress(row);
                }
            }
        }
    }
    drop(lab);
    let targets = targets(&rows);
    Ok(Report {
        schema_version: SCHEMA_VERSION,
        date: crate::report::clock::utc_now(),
        version: env!("CARGO_PKG_VERSION"),
        machine: Machine::this(),
        budget: match settings.budget {
            Budget::Time(d) => serde_json::json!({ "seconds": d.as_secs_f64() }),
            Budget::Signs(n) => serde_json::json!({ "signs": n }),
        },
        rows,
        targets,
    })
}

fn measure_row(readiness: &Readiness, alg: BenchAlg, clients: usize, budget: Budget) -> Outcome {
    let setup = match readiness {
        Readiness::Ready(s) => s,
        Readiness::Skipped(reason) => {
            return Outcome::Skipped {
                reason: reason.clone(),
            }
        }
        Readiness::Failed(message) => {
            return Outcome::Error {
                message: message.clone(),
            }
        }
    };
    match setup.lacks(alg) {
        Ok(Some(reason)) => return Outcome::Skipped { reason },
        Ok(None) => {}
        Err(message) => return Outcome::Error { message },
    }
    let measured = (|| -> Result<Stats, String> {
        let mut c = (0..clients)
            .map(|_| setup.client(alg))
            .collect::<Result<Vec<_>, _>>()?;
        measure::run(&mut c, budget.warm_up())?;
        measure::run(&mut c, budget)
    })();
    match measured {
        Ok(s) => Outcome::Measured {
            signs: s.signs,
            seconds: s.seconds,
            signs_per_sec: s.signs_per_sec,
            p50_ms: s.p50_ms,
            p99_ms: s.p99_ms,
            ratio_to_raw: None,
        },
        Err(message) => Outcome::Error { message },
    }
}

/// The throughput of a measured row, if it was measured.
fn throughput(rows: &[Row], path: PathName, alg: BenchAlg, clients: usize) -> Option<f64> {
    rows.iter()
        .find(|r| r.path == path && r.algorithm == alg && r.clients == clients)
        .and_then(|r| match r.outcome {
            Outcome::Measured { signs_per_sec, .. } => Some(signs_per_sec),
            _ => None,
        })
}

fn add_ratios(rows: &mut [Row]) {
    let floors: Vec<(BenchAlg, usize, f64)> = rows
        .iter()
        .filter(|r| r.path == PathName::RawCryptoki)
        .filter_map(|r| match r.outcome {
            Outcome::Measured { signs_per_sec, .. } => {
                Some((r.algorithm, r.clients, signs_per_sec))
            }
            _ => None,
        })
        .collect();
    for row in rows.iter_mut() {
        let floor = floors
            .iter()
            .find(|(a, c, _)| *a == row.algorithm && *c == row.clients)
            .map(|f| f.2);
        if let Outcome::Measured {
            signs_per_sec,
            ratio_to_raw,
            ..
        } = &mut row.outcome
        {
            *ratio_to_raw = floor.filter(|f| *f > 0.0).map(|f| *signs_per_sec / f);
        }
    }
}

fn clients_text(n: usize) -> String {
    if n == 1 {
        "1 client".into()
    } else {
        format!("{n} clients")
    }
}

/// The targets, for the rows this run measured:
/// - PKCS#11 signer time per sign <= 1.05x raw (every algorithm and clients count);
/// - KMIP signer via the relay at 4 clients >= 0.9x raw signs/s for RSA-2048, >= 0.5x
///   for ECDSA P-256;
/// - the relay path >= 10x the PyKMIP path's signs/s (RSA-2048).
pub fn targets(rows: &[Row]) -> Vec<Target> {
    let mut out = Vec::new();
    let mut combos: Vec<(BenchAlg, usize)> =
        rows.iter().map(|r| (r.algorithm, r.clients)).collect();
    combos.sort();
    combos.dedup();
    for &(alg, clients) in &combos {
        let raw = throughput(rows, PathName::RawCryptoki, alg, clients);
        let at = format!("{}, {}", alg.name(), clients_text(clients));
        if let (Some(raw), Some(p)) = (raw, throughput(rows, PathName::Pkcs11, alg, clients)) {
            let measured = raw / p;
            out.push(Target {
                what: format!("pkcs11 time per sign / raw-cryptoki's, {at}"),
                rule: "<=",
                bound: 1.05,
                measured,
                holds: measured <= 1.05,
            });
        }
        if clients == 4 {
            if let (Some(raw), Some(r)) = (raw, throughput(rows, PathName::KmipRelay, alg, clients))
            {
                let bound = match alg {
                    BenchAlg::Rsa2048 => 0.9,
                    BenchAlg::EcdsaP256 => 0.5,
                };
                let measured = r / raw;
                out.push(Target {
                    what: format!("kmip-relay signs/s / raw-cryptoki's, {at}"),
                    rule: ">=",
                    bound,
                    measured,
                    holds: measured >= bound,
                });
            }
        }
        if let (Some(r), Some(p)) = (
            throughput(rows, PathName::KmipRelay, alg, clients),
            throughput(rows, PathName::KmipPykmip, alg, clients),
        ) {
            let measured = r / p;
            out.push(Target {
                what: format!("kmip-relay signs/s / kmip-pykmip's, {at}"),
                rule: ">=",
                bound: 10.0,
                measured,
                holds: measured >= 10.0,
            });
        }
    }
    out
}

/// The default time per measurement.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(3);

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(path: PathName, alg: BenchAlg, clients: usize, sps: f64) -> Row {
        Row {
            path,
            algorithm: alg,
            clients,
            outcome: Outcome::Measured {
                signs: 10,
                seconds: 1.0,
                signs_per_sec: sps,
                p50_ms: 1.0,
                p99_ms: 2.0,
                ratio_to_raw: None,
            },
        }
    }

    #[test]
    fn ratios_and_targets_compare_the_same_algorithm_and_clients() {
        let rsa = BenchAlg::Rsa2048;
        let mut rows = vec![
            measured(PathName::RawCryptoki, rsa, 1, 1000.0),
            measured(PathName::RawCryptoki, rsa, 4, 2000.0),
            measured(PathName::Pkcs11, rsa, 1, 960.0),
            measured(PathName::KmipRelay, rsa, 4, 1700.0),
            measured(PathName::KmipPykmip, rsa, 4, 100.0),
        ];
        add_ratios(&mut rows);
        let ratio = |i: usize| match rows[i].outcome {
            Outcome::Measured { ratio_to_raw, .. } => ratio_to_raw,
            _ => None,
        };
        assert_eq!(ratio(0), Some(1.0));
        assert_eq!(ratio(2), Some(0.96));
        assert_eq!(ratio(3), Some(0.85));
        let t = targets(&rows);
        assert_eq!(t.len(), 3, "{t:?}");
        assert!(t[0].holds && t[0].what.starts_with("pkcs11"));
        assert!(!t[1].holds && (t[1].measured - 0.85).abs() < 1e-9);
        assert!(t[2].holds && (t[2].measured - 17.0).abs() < 1e-9);
    }
}
