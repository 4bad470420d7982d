//! The signer under test, as the steps see it: our own router in this process, or a
//! signer implementation in a child process speaking the signer protocol
//! (`run --signer-cmd`).
//!
//! Each question returns `Ok(signer's answer)` or a [`StepError`]: for a child process,
//! one that broke the protocol is the harness's `<error>` quoting the evidence, and a
//! question that needs a feature its `hello` did not offer makes the case skipped with
//! the reason. The signer's own refusals stay [`SignerError`]s, which the steps judge.

use std::cell::RefCell;

use hsm_signers::router::RandomSource;
use hsm_signers::{Algorithm, ErrorKind, KeyIdentifier, Router, SignerError, SignerInfo};
use serde::de::DeserializeOwned;

use super::StepError;
use crate::signer_protocol::child::{CallError, SignerProcess};
use crate::signer_protocol::{self as protocol, Op, B64};

/// A signer's answer, or why the step cannot judge one.
pub type Answer<T> = Result<Result<T, SignerError>, StepError>;

/// A key the signer made.
pub struct Created {
    pub id: KeyIdentifier,
    pub public_key: Vec<u8>,
    /// The configured signer the implementation says owns the key (for our router:
    /// what its key map says).
    pub owner: Result<String, SignerError>,
}

pub enum SignerUnderTest {
    Router(Router),
    Process(RefCell<SignerProcess>),
}

impl SignerUnderTest {
    /// Who the implementation is, for the report: (name, version) of a signer process;
    /// `None` for our built-in router (the report's default).
    pub fn implementation(&self) -> Option<(String, String)> {
        match self {
            SignerUnderTest::Router(_) => None,
            SignerUnderTest::Process(p) => {
                let p = p.borrow();
                Some((
                    p.hello.implementation.name.clone(),
                    p.hello.implementation.version.clone(),
                ))
            }
        }
    }

    pub fn create_key(&self, alg: Algorithm) -> Answer<Created> {
        match self {
            SignerUnderTest::Router(r) => Ok(r.create_key(alg).map(|k| Created {
                owner: r.owner_name(&k.id),
                id: k.id,
                public_key: k.public_key,
            })),
            SignerUnderTest::Process(p) => {
                offers_alg(p, alg)?;
                let answer: Result<protocol::Created, _> = call(
                    p,
                    Op::CreateKey {
                        alg: alg.to_string(),
                        signer: None,
                    },
                )?;
                match answer {
                    Ok(c) => {
                        let id = match key_id(&c.key, "create_key") {
                            Ok(id) => id,
                            Err(r) => return settle(Err(r)),
                        };
                        Ok(Ok(Created {
                            id,
                            public_key: c.public_key.0,
                            owner: Ok(c.signer),
                        }))
                    }
                    Err(r) => settle(Err(r)),
                }
            }
        }
    }

    pub fn sign(&self, key: &KeyIdentifier, alg: Algorithm, data: &[u8]) -> Answer<Vec<u8>> {
        match self {
            SignerUnderTest::Router(r) => Ok(r.sign(key, alg, data)),
            SignerUnderTest::Process(p) => {
                let a: Result<protocol::Signed, _> = call(
                    p,
                    Op::Sign {
                        key: key.to_string(),
                        alg: alg.to_string(),
                        data: B64(data.to_vec()),
                    },
                )?;
                settle(a.map(|s| s.signature.0))
            }
        }
    }

    pub fn public_key(&self, key: &KeyIdentifier) -> Answer<Vec<u8>> {
        match self {
            SignerUnderTest::Router(r) => Ok(r.public_key(key)),
            SignerUnderTest::Process(p) => {
                let a: Result<protocol::PublicKey, _> = call(
                    p,
                    Op::PublicKey {
                        key: key.to_string(),
                    },
                )?;
                settle(a.map(|k| k.public_key.0))
            }
        }
    }

    /// Destroys a key; on success, the configured signer that held it (for our router:
    /// its key map's owner, asked before the destroy), if known.
    pub fn destroy_key(&self, key: &KeyIdentifier) -> Answer<Option<String>> {
        match self {
            SignerUnderTest::Router(r) => {
                let owner = r.owner_name(key).ok();
                Ok(r.destroy_key(key).map(|()| owner))
            }
            SignerUnderTest::Process(p) => {
                let a: Result<protocol::Destroyed, _> = call(
                    p,
                    Op::Destroy {
                        key: key.to_string(),
                    },
                )?;
                settle(a.map(|d| Some(d.signer)))
            }
        }
    }

    /// The configured signer that owns `key` now.
    pub fn owner_name(&self, key: &KeyIdentifier) -> Answer<String> {
        match self {
            SignerUnderTest::Router(r) => Ok(r.owner_name(key)),
            SignerUnderTest::Process(p) => {
                needs(p, "owners", "which configured signer owns a key")?;
                let listing = match list(p)? {
                    Ok(l) => l,
                    Err(e) => return Ok(Err(e)),
                };
                let hex = key.to_string();
                Ok(listing
                    .keys
                    .into_iter()
                    .find(|k| k.key == hex)
                    .map(|k| {
                        k.signer.ok_or_else(|| {
                            SignerError::protocol(format!("`list` names no owner of key {hex}"))
                        })
                    })
                    .unwrap_or_else(|| {
                        Err(SignerError::new(
                            ErrorKind::NotFound,
                            format!("`list` does not hold key {hex}"),
                        ))
                    }))
            }
        }
    }

    /// Whether the key map (for another implementation: its `list`) holds `key`.
    pub fn holds(&self, key: &KeyIdentifier) -> Result<bool, StepError> {
        let read = |e: SignerError| StepError::Failed(format!("reading the key map: {e}"));
        match self {
            SignerUnderTest::Router(r) => r.keymap().key(key).map(|k| k.is_some()).map_err(read),
            SignerUnderTest::Process(p) => {
                let listing = list(p)?.map_err(read)?;
                let hex = key.to_string();
                Ok(listing.keys.iter().any(|k| k.key == hex))
            }
        }
    }

    /// A one-off signature: (signature, public key, the signer that made the key).
    pub fn sign_one_off(&self, alg: Algorithm, data: &[u8]) -> Answer<(Vec<u8>, Vec<u8>, String)> {
        match self {
            SignerUnderTest::Router(r) => Ok(r
                .sign_one_off(alg, data)
                .map(|(s, k)| (s, k, r.one_off_signer().name().to_string()))),
            SignerUnderTest::Process(p) => {
                needs(p, "one-off", "one-off signing")?;
                offers_alg(p, alg)?;
                let a: Result<protocol::OneOff, _> = call(
                    p,
                    Op::SignOneOff {
                        alg: alg.to_string(),
                        data: B64(data.to_vec()),
                    },
                )?;
                settle(a.map(|o| (o.signature.0, o.public_key.0, o.signer)))
            }
        }
    }

    pub fn random_with_source(&self, bytes: usize) -> Answer<(Vec<u8>, RandomSource)> {
        match self {
            SignerUnderTest::Router(r) => Ok(r.random_with_source(bytes)),
            SignerUnderTest::Process(p) => {
                needs(p, "random", "random values")?;
                let a: Result<protocol::Random, _> = call(p, Op::Random { bytes })?;
                match a {
                    Ok(r) => {
                        let source = match r.source.as_str() {
                            "default-signer" => RandomSource::DefaultSigner,
                            "fallback" => RandomSource::Fallback,
                            other => {
                                return Err(StepError::Harness(format!(
                                    "the signer's `random` names source '{other}'; the protocol knows default-signer and fallback"
                                )))
                            }
                        };
                        Ok(Ok((r.random.0, source)))
                    }
                    Err(e) => settle(Err(e)),
                }
            }
        }
    }

    /// What configured signer `name` knows of its backend.
    pub fn info(&self, name: &str) -> Answer<SignerInfo> {
        match self {
            SignerUnderTest::Router(r) => {
                let signer = r
                    .signers()
                    .find(|s| s.name() == name)
                    .ok_or_else(|| StepError::Harness(format!("no signer named '{name}'")))?;
                Ok(signer.info())
            }
            SignerUnderTest::Process(p) => {
                needs(p, "info", "what a signer knows of its backend")?;
                let a: Result<protocol::Info, _> = call(
                    p,
                    Op::Info {
                        signer: Some(name.to_string()),
                    },
                )?;
                settle(a.map(info_of))
            }
        }
    }

    /// The default signer's details, when the implementation can give them (for the
    /// report's properties): `None` if it offers no `info`. A signer process that breaks
    /// the protocol here is the cell's error like anywhere else.
    pub fn default_info(&self) -> Result<Option<Result<SignerInfo, SignerError>>, StepError> {
        match self {
            SignerUnderTest::Router(r) => Ok(Some(r.default_signer().info())),
            SignerUnderTest::Process(p) => {
                if !p.borrow().offers("info") {
                    return Ok(None);
                }
                let a: Result<protocol::Info, _> = call(p, Op::Info { signer: None })?;
                settle(a.map(info_of)).map(Some)
            }
        }
    }

    /// The identity key configured signer `name` was last bound by: (key, algorithm).
    pub fn identity(&self, name: &str) -> Result<(KeyIdentifier, Algorithm), StepError> {
        match self {
            SignerUnderTest::Router(r) => {
                let map = r.keymap();
                let signer_id = map
                    .bound_name(name)
                    .map_err(|e| StepError::Harness(e.to_string()))?
                    .ok_or_else(|| {
                        StepError::Harness(format!(
                            "signer '{name}' has never been bound; nothing to replace"
                        ))
                    })?;
                let record = map
                    .signer(&signer_id)
                    .map_err(|e| StepError::Harness(e.to_string()))?
                    .ok_or_else(|| {
                        StepError::Harness(format!("no record of signer id {signer_id}"))
                    })?;
                Ok((record.identity_key, record.identity_alg))
            }
            SignerUnderTest::Process(p) => {
                needs(p, "identity", "the identity key a signer is bound by")?;
                let a: Result<protocol::Identity, _> = call(
                    p,
                    Op::Identity {
                        signer: name.to_string(),
                    },
                )?;
                let i = a.map_err(|e| {
                    StepError::Harness(format!(
                        "the signer gave no identity key of '{name}': {}",
                        e.describe()
                    ))
                })?;
                let key = key_id(&i.identity_key, "identity").map_err(|r| match r {
                    Refusal::Step(e) => e,
                    Refusal::Signer(e) => StepError::Harness(e.to_string()),
                })?;
                let alg = i.identity_alg.parse().map_err(|e| {
                    StepError::Harness(format!(
                        "the signer's `identity` names algorithm '{}': {e}",
                        i.identity_alg
                    ))
                })?;
                Ok((key, alg))
            }
        }
    }
}

/// Why a protocol call gave no answer the step can use.
enum Refusal {
    /// The signer refused (a signer error, judged by the step).
    Signer(SignerError),
    /// The harness cannot go on (`<error>`) or the case is skipped.
    Step(StepError),
}

impl Refusal {
    fn describe(&self) -> String {
        match self {
            Refusal::Signer(e) => e.to_string(),
            Refusal::Step(e) => e.message().to_string(),
        }
    }
}

/// Sends `op`: the signer's answer (or refusal), or the broken process as a step error.
fn call<T: DeserializeOwned>(
    p: &RefCell<SignerProcess>,
    op: Op,
) -> Result<Result<T, Refusal>, StepError> {
    match p.borrow_mut().call(op) {
        Ok(v) => Ok(Ok(v)),
        Err(CallError::Refused(e)) => Ok(Err(Refusal::Signer(signer_error(e)))),
        Err(CallError::Broken(m)) => Err(StepError::Harness(m)),
    }
}

fn settle<T>(a: Result<T, Refusal>) -> Answer<T> {
    match a {
        Ok(v) => Ok(Ok(v)),
        Err(Refusal::Signer(e)) => Ok(Err(e)),
        Err(Refusal::Step(e)) => Err(e),
    }
}

fn info_of(i: protocol::Info) -> SignerInfo {
    SignerInfo {
        name: i.name,
        signer_type: i.signer_type,
        details: i.details.into_iter().collect(),
    }
}

fn list(p: &RefCell<SignerProcess>) -> Answer<protocol::Listing> {
    let a: Result<protocol::Listing, _> = call(p, Op::List { orphans: false })?;
    settle(a)
}

/// A protocol error body as the signers' error: the kind by its name (an unknown kind
/// is a backend error naming it).
fn signer_error(e: protocol::ErrorBody) -> SignerError {
    match ErrorKind::ALL.iter().find(|k| k.name() == e.kind) {
        Some(kind) => SignerError::new(*kind, e.message),
        None => SignerError::backend(format!("(error kind '{}') {}", e.kind, e.message)),
    }
}

fn key_id(hex: &str, op: &str) -> Result<KeyIdentifier, Refusal> {
    hex.parse().map_err(|e| {
        Refusal::Step(StepError::Failed(format!(
            "the signer's `{op}` answer names key '{hex}', which is not a key identifier: {e}"
        )))
    })
}

fn needs(p: &RefCell<SignerProcess>, feature: &str, what: &str) -> Result<(), StepError> {
    let p = p.borrow();
    if p.offers(feature) {
        return Ok(());
    }
    Err(StepError::Skipped(format!(
        "the signer implementation '{}' does not offer feature '{feature}' ({what})",
        p.hello.implementation.name
    )))
}

fn offers_alg(p: &RefCell<SignerProcess>, alg: Algorithm) -> Result<(), StepError> {
    let p = p.borrow();
    let name = alg.to_string();
    if p.hello.algorithms.contains(&name) {
        return Ok(());
    }
    Err(StepError::Skipped(format!(
        "the signer implementation '{}' does not offer algorithm {name}",
        p.hello.implementation.name
    )))
}
