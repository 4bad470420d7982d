//! The paths a signature takes, each brought up the way a cell brings up its backend
//! (the same providers, instances and signer configurations), and one [`SignClient`]
//! per concurrent client on each.
//!
//! The SoftHSMv2 paths share one token directory (one `SOFTHSM2_CONF` for this process
//! and the relay it starts): the PKCS#11 signer's token, whose keys the raw floor signs
//! with too, and the relay's token.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use hsm_signers::config::{SignerConfig, SignerKind};
use hsm_signers::router::build_signer;
use hsm_signers::{Algorithm, KeyIdentifier, Signer};
use secrecy::ExposeSecret;
use sha2::Digest;

use super::measure::SignClient;
use super::{BenchAlg, PathName, PAYLOAD};
use crate::backends::server::Runtime;
use crate::backends::{self, CellBackend, Instance, Provider, SignerOptions};
use crate::model::backend::Placement;
use crate::model::suite::InstanceSpec;

/// Whether a path can be measured, and if not, why.
pub enum Readiness {
    Ready(Box<dyn PathSetup>),
    /// The path cannot run here (a missing program or module), with the reason.
    Skipped(String),
    /// Bringing the path up failed.
    Failed(String),
}

/// A path brought up: its keys, and clients that sign with them.
pub trait PathSetup {
    /// Why `alg` cannot be measured on this path (`Ok(None)`: it can); an `Err` is a
    /// failure to make its key.
    fn lacks(&self, alg: BenchAlg) -> Result<Option<String>, String>;

    /// A new client signing with `alg`'s key; each has its own session or thread-safe
    /// handle on the shared signer.
    fn client(&self, alg: BenchAlg) -> Result<Box<dyn SignClient>, String>;
}

/// Everything the bench started: gone (servers stopped, tokens removed) when dropped.
pub struct Lab {
    pub paths: BTreeMap<PathName, Readiness>,
    /// The PKCS#11 signer's configuration and keys, for the raw floor.
    pkcs11_signer: Option<(SignerKind, Keys)>,
    // Declared before `cells` so instances (servers) go before what they share.
    _instances: Vec<Box<dyn Instance>>,
    _cells: Vec<Box<dyn CellBackend>>,
    _workdir: tempfile::TempDir,
}

impl Lab {
    /// Brings up `wanted` paths (the raw floor always, with the PKCS#11 signer that
    /// makes its keys), each key for `algs` made and one signature checked by the
    /// oracle. `max_clients` sizes the KMIP signers' connection pools.
    ///
    /// Runs on the main thread: servers are killed when the thread that started them
    /// ends.
    pub fn up(wanted: &[PathName], algs: &[BenchAlg], max_clients: usize) -> anyhow::Result<Lab> {
        let workdir = tempfile::Builder::new()
            .prefix("hsm-harness-bench-")
            .tempdir()?;
        let mut lab = Lab {
            paths: BTreeMap::new(),
            pkcs11_signer: None,
            _instances: Vec::new(),
            _cells: Vec::new(),
            _workdir: workdir,
        };
        let dir = lab._workdir.path().to_path_buf();
        let state = dir.join("state");
        let wants = |p: PathName| wanted.contains(&p);

        // The relay first: its token is made before the module loads here, with the
        // same configuration either way (one work directory for every cell).
        if wants(PathName::KmipRelay) {
            let up = lab.signer_path(
                &backends::relay::Relay::default(),
                "relay",
                &dir,
                &state,
                algs,
                max_clients,
            );
            lab.paths.insert(PathName::KmipRelay, up);
        }
        let softhsm = backends::softhsm::Softhsm::default();
        let pkcs11 = lab.signer_path(&softhsm, "pkcs11", &dir, &state, algs, max_clients);
        let raw = match &pkcs11 {
            Readiness::Ready(_) => match lab.pkcs11_signer.take() {
                Some((kind, keys)) => raw_floor(&kind, keys),
                None => Readiness::Failed("the PKCS#11 signer's keys are missing".into()),
            },
            Readiness::Skipped(r) => Readiness::Skipped(r.clone()),
            Readiness::Failed(e) => Readiness::Failed(format!("the PKCS#11 path failed: {e}")),
        };
        lab.paths.insert(PathName::RawCryptoki, raw);
        if wants(PathName::Pkcs11) {
            lab.paths.insert(PathName::Pkcs11, pkcs11);
        }
        if wants(PathName::KmipPykmip) {
            let up = lab.signer_path(
                &backends::pykmip::Pykmip::default(),
                "pykmip",
                &dir,
                &state,
                algs,
                max_clients,
            );
            lab.paths.insert(PathName::KmipPykmip, up);
        }
        if wants(PathName::Software) {
            let up = lab.signer_path(
                &backends::software::Software::default(),
                "software",
                &dir,
                &state,
                algs,
                max_clients,
            );
            lab.paths.insert(PathName::Software, up);
        }
        Ok(lab)
    }

    /// A path through a provider's instance and the signer its configuration names.
    fn signer_path(
        &mut self,
        provider: &dyn Provider,
        name: &str,
        dir: &Path,
        state: &Path,
        algs: &[BenchAlg],
        max_clients: usize,
    ) -> Readiness {
        if let Some(reason) = provider.unavailable_reason(Placement::Local) {
            return Readiness::Skipped(reason);
        }
        let up = (|| -> anyhow::Result<(SignerKind, Arc<dyn Signer>)> {
            let mut cell = provider.open(dir, &Runtime::Local)?;
            let instance = cell.make(
                &format!("bench-{name}"),
                &dir.join("instances").join(name),
                &InstanceSpec::default(),
            );
            self._cells.push(cell);
            let instance = instance?;
            let mut kind = instance.signer_kind(&SignerOptions {
                kmip: None,
                pkcs11: None,
                other_ca: None,
            })?;
            self._instances.push(instance);
            if let SignerKind::Kmip(c) = &mut kind {
                // One idle connection per client, as an operator signing from that
                // many threads would configure; fewer would reconnect (a TLS
                // handshake) on most requests.
                c.pool_size = c.pool_size.max(max_clients);
            }
            let signer = build_signer(
                &SignerConfig {
                    name: format!("bench {name}"),
                    kind: kind.clone(),
                },
                state,
            );
            Ok((kind, signer))
        })();
        let (kind, signer) = match up {
            Ok(x) => x,
            Err(e) => return Readiness::Failed(format!("{e:#}")),
        };
        let mut keys = BTreeMap::new();
        for &alg in algs {
            let key = if name == "pykmip" && alg == BenchAlg::EcdsaP256 {
                Err(Missing::Lacks(
                    "PyKMIP makes RSA key pairs only (no EC)".to_string(),
                ))
            } else {
                make_key(signer.as_ref(), alg.algorithm()).map_err(Missing::Failed)
            };
            keys.insert(alg, key);
        }
        let setup = SignerPath { signer, keys };
        if let SignerKind::Pkcs11(_) = &kind {
            self.pkcs11_signer = Some((kind, setup.keys.clone()));
        }
        Readiness::Ready(Box::new(setup))
    }
}

/// Why a path has no key for an algorithm.
#[derive(Clone, Debug)]
pub enum Missing {
    /// The backend cannot have one (skipped with this reason).
    Lacks(String),
    /// Making it failed.
    Failed(String),
}

type Keys = BTreeMap<BenchAlg, Result<KeyIdentifier, Missing>>;

/// Creates a key for `alg` and checks one signature with the oracle's verifier.
fn make_key(signer: &dyn Signer, alg: Algorithm) -> Result<KeyIdentifier, String> {
    let key = signer
        .create_key(alg)
        .map_err(|e| format!("creating a {alg} key: {e}"))?;
    let sig = signer
        .sign(&key.id, alg, PAYLOAD)
        .map_err(|e| format!("signing with the new {alg} key: {e}"))?;
    oracle::verify::verify(
        &key.public_key,
        crate::oracle_terms::algorithm(alg),
        PAYLOAD,
        &sig,
    )
    .map_err(|e| format!("the first {alg} signature does not verify: {e}"))?;
    Ok(key.id)
}

fn lacks(keys: &Keys, alg: BenchAlg) -> Result<Option<String>, String> {
    match keys.get(&alg) {
        Some(Ok(_)) => Ok(None),
        Some(Err(Missing::Lacks(r))) => Ok(Some(r.clone())),
        Some(Err(Missing::Failed(e))) => Err(e.clone()),
        None => Err(format!("no key was made for {}", alg.name())),
    }
}

fn key_of(keys: &Keys, alg: BenchAlg) -> Result<KeyIdentifier, String> {
    match keys.get(&alg) {
        Some(Ok(k)) => Ok(*k),
        _ => Err(format!("no key for {}", alg.name())),
    }
}

/// A path through one of the `signers` crate's signers.
struct SignerPath {
    signer: Arc<dyn Signer>,
    keys: Keys,
}

impl PathSetup for SignerPath {
    fn lacks(&self, alg: BenchAlg) -> Result<Option<String>, String> {
        lacks(&self.keys, alg)
    }

    fn client(&self, alg: BenchAlg) -> Result<Box<dyn SignClient>, String> {
        Ok(Box::new(SignerClient {
            signer: self.signer.clone(),
            key: key_of(&self.keys, alg)?,
            alg: alg.algorithm(),
        }))
    }
}

struct SignerClient {
    signer: Arc<dyn Signer>,
    key: KeyIdentifier,
    alg: Algorithm,
}

impl SignClient for SignerClient {
    fn sign(&mut self) -> Result<(), String> {
        self.signer
            .sign(&self.key, self.alg, PAYLOAD)
            .map(drop)
            .map_err(|e| e.to_string())
    }
}

/// The floor: `cryptoki` calls on the PKCS#11 signer's token and keys, a session per
/// client and the key handle found once, so each signature is C_SignInit and C_Sign
/// (ECDSA: the SHA-256 here, as SoftHSMv2 has no CKM_ECDSA_SHA256).
struct RawFloor {
    module: std::path::PathBuf,
    label: String,
    pin: Option<String>,
    keys: Keys,
}

fn raw_floor(kind: &SignerKind, keys: Keys) -> Readiness {
    let SignerKind::Pkcs11(c) = kind else {
        return Readiness::Failed("the PKCS#11 path has no PKCS#11 configuration".into());
    };
    let hsm_signers::config::SlotSelector::Label(label) = &c.slot else {
        return Readiness::Failed("the PKCS#11 path names its token by slot id".into());
    };
    let pin = match &c.user_pin {
        Some(p) => match p.resolve() {
            Ok(s) => Some(s.expose_secret().to_string()),
            Err(e) => return Readiness::Failed(format!("reading the user PIN: {e}")),
        },
        None => None,
    };
    Readiness::Ready(Box::new(RawFloor {
        module: c.lib_path.clone(),
        label: label.clone(),
        pin,
        keys,
    }))
}

impl PathSetup for RawFloor {
    fn lacks(&self, alg: BenchAlg) -> Result<Option<String>, String> {
        lacks(&self.keys, alg)
    }

    fn client(&self, alg: BenchAlg) -> Result<Box<dyn SignClient>, String> {
        let key = key_of(&self.keys, alg)?;
        let p11 = hsm_signers::pkcs11::module(&self.module)?;
        let session = crate::backends::token::user_session(
            &p11,
            &self.label,
            self.pin.as_deref().unwrap_or_default(),
        )
        .map_err(|e| format!("{e:#}"))?;
        let found = session
            .find_objects(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Id(key.as_bytes().to_vec()),
            ])
            .map_err(|e| format!("C_FindObjects: {e}"))?;
        let handle = *found
            .first()
            .ok_or_else(|| format!("no private key {key} on the token"))?;
        Ok(Box::new(RawClient {
            session,
            handle,
            ecdsa: alg == BenchAlg::EcdsaP256,
        }))
    }
}

struct RawClient {
    session: Session,
    handle: ObjectHandle,
    ecdsa: bool,
}

impl SignClient for RawClient {
    fn sign(&mut self) -> Result<(), String> {
        let result = if self.ecdsa {
            let digest = sha2::Sha256::digest(PAYLOAD);
            self.session
                .sign(&Mechanism::Ecdsa, self.handle, &digest[..])
        } else {
            self.session
                .sign(&Mechanism::Sha256RsaPkcs, self.handle, PAYLOAD)
        };
        result.map(drop).map_err(|e| format!("C_Sign: {e}"))
    }
}
