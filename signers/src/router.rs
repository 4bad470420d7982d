//! The signer router: roles, key ownership, signer identity binding and lifecycle.
//!
//! - **Roles** (seed 001): the default signer creates every new key; with several
//!   signers it must be named. The one-off signer creates, signs with and destroys
//!   one-off keys in one call. When the default is not an OpenSSL signer and no one-off
//!   signer is named, an OpenSSL signer is added for one-off keys; it also answers for
//!   OpenSSL keys made before the HSM was configured.
//! - **Ownership**: the [`KeyMap`] says which signer id owns a key; operations on an
//!   existing key go to the configured signer bound to that id, whatever the default
//!   is now. A key is in the map before `create_key` returns.
//! - **Binding** ([`crate::identity`]): a configured signer is bound to a signer id
//!   only if that id's identity key is in its backend and proves itself against the
//!   recorded public key; the id this name was last bound to is tried first. A backend
//!   that matches no id is registered as a new signer.
//! - **Lifecycle**: nothing connects at start-up; a signer connects and binds on first
//!   use. Transient errors put it in backoff ([`RetryPolicy`]); fatal ones
//!   ([`ErrorKind::Unusable`]: module does not load, wrong PIN, ...) make it unusable
//!   for the life of the router, without retries. One signer's trouble never blocks
//!   operations on the keys of another.
//! - **Random** values come from the default signer, or from the OpenSSL signer when the
//!   default has no generator (remembered, so the backend is not asked again) or cannot
//!   be reached. Random never fails because an HSM lacks an RNG.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::{RetryPolicy, SignerConfig, SignerKind, SignerSetup};
use crate::identity;
use crate::keymap::{KeyMap, KeyRecord, SignerRecord};
use crate::kmip::KmipSigner;
use crate::pkcs11::Pkcs11Signer;
use crate::software::SoftwareSigner;
use crate::{Algorithm, CreatedKey, ErrorKind, KeyIdentifier, KeyType, Signer, SignerError};

/// Name of the OpenSSL signer the router adds for one-off keys when none is configured.
pub const ONE_OFF_FALLBACK_NAME: &str = "OpenSSL one-off signer";

/// Builds the signer a configuration entry describes; nothing is connected yet.
///
/// `state` is where signers keep what they persist (OpenSSL key files by default).
pub fn build_signer(config: &SignerConfig, state: &Path) -> Arc<dyn Signer> {
    match &config.kind {
        SignerKind::OpenSsl(c) => Arc::new(SoftwareSigner::new(
            &config.name,
            c.keys_dir.clone().unwrap_or_else(|| state.join("keys")),
        )),
        SignerKind::Pkcs11(c) => Arc::new(Pkcs11Signer::new(&config.name, c)),
        SignerKind::Kmip(c) => Arc::new(KmipSigner::new(&config.name, c)),
    }
}

/// Where a configured signer is in its lifecycle.
#[derive(Clone, Debug)]
enum Lifecycle {
    NotConnected,
    Bound {
        signer_id: String,
    },
    /// Unreachable; not tried again before `until`.
    Waiting {
        until: Instant,
        delay: Duration,
        error: SignerError,
    },
    /// Fatal; never tried again by this router.
    Unusable {
        error: SignerError,
    },
}

/// A signer's state as `status` shows it.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum SignerState {
    NotConnected,
    Bound {
        signer_id: String,
        /// The identity key's identifier in the backend.
        identity_key: Option<KeyIdentifier>,
    },
    Waiting {
        retry_in_secs: f64,
        error: String,
    },
    Unusable {
        error: String,
    },
}

struct Slot {
    signer: Arc<dyn Signer>,
    signer_type: &'static str,
    life: Mutex<Lifecycle>,
    /// Learned that the backend has no random generator.
    no_rng: AtomicBool,
}

/// One configured signer as [`Router::status`] shows it.
#[derive(Clone, Debug, Serialize)]
pub struct SignerStatus {
    pub name: String,
    #[serde(rename = "type")]
    pub signer_type: &'static str,
    pub roles: Vec<&'static str>,
    #[serde(flatten)]
    pub state: SignerState,
    /// Key types the signer's backend refused to create, with the backend's words.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unavailable: Vec<UnavailableKeyType>,
}

/// A key type a signer cannot create, and why.
#[derive(Clone, Debug, Serialize)]
pub struct UnavailableKeyType {
    pub key_type: KeyType,
    pub reason: String,
}

/// Where [`Router::random_with_source`] got its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RandomSource {
    /// The default signer's own generator (for an OpenSSL default signer, its own).
    DefaultSigner,
    /// The OpenSSL signer, because the default signer has no generator (learned once,
    /// then never asked again by this router) or could not be used just now.
    Fallback,
}

/// One key as `list` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct KeyListing {
    pub key: KeyIdentifier,
    pub alg: Algorithm,
    pub signer_id: String,
    /// The configured signer bound to the owner now, or the owner's last name.
    pub signer: String,
}

/// The configured signers, their roles, and the key map.
pub struct Router {
    slots: Vec<Slot>,
    default_signer: usize,
    one_off_signer: usize,
    /// The OpenSSL signer random values fall back to.
    software_random: Arc<dyn Signer>,
    keymap: KeyMap,
    retry: RetryPolicy,
    /// signer id -> slot bound to it, so that one id binds one slot at a time.
    bound: Mutex<HashMap<String, usize>>,
}

/// The error a signer in a fatal state answers with: `unusable`, except that a refused
/// TLS version keeps its own kind so that users and suites can tell it apart.
fn fatal(name: &str, error: &SignerError) -> SignerError {
    let kind = match error.kind {
        ErrorKind::TlsRefused => ErrorKind::TlsRefused,
        _ => ErrorKind::Unusable,
    };
    SignerError::new(
        kind,
        format!("signer '{name}' is unusable: {}", error.message),
    )
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Router {
    /// The router for `setup`, with its key map and signer state under `state`.
    /// Opens the key map; connects to no signer.
    pub fn new(setup: &SignerSetup, state: &Path) -> Result<Self, SignerError> {
        let keymap = KeyMap::open(state)?;
        let mut slots: Vec<Slot> = setup
            .signers
            .iter()
            .map(|c| Slot {
                signer: build_signer(c, state),
                signer_type: c.kind.type_name(),
                life: Mutex::new(Lifecycle::NotConnected),
                no_rng: AtomicBool::new(false),
            })
            .collect();
        let default_signer = setup.default_signer;
        let is_software = |i: usize| matches!(setup.signers[i].kind, SignerKind::OpenSsl(_));
        let configured_software = (0..setup.signers.len()).find(|&i| is_software(i));
        let one_off_signer = match setup.one_off_signer {
            Some(i) => i,
            None if is_software(default_signer) => default_signer,
            None => configured_software.unwrap_or_else(|| {
                slots.push(Slot {
                    signer: Arc::new(SoftwareSigner::new(
                        ONE_OFF_FALLBACK_NAME,
                        state.join("keys"),
                    )),
                    signer_type: "OpenSSL",
                    life: Mutex::new(Lifecycle::NotConnected),
                    no_rng: AtomicBool::new(false),
                });
                slots.len() - 1
            }),
        };
        let software_random: Arc<dyn Signer> = match configured_software {
            Some(i) => slots[i].signer.clone(),
            None if slots[one_off_signer].signer_type == "OpenSSL" => {
                slots[one_off_signer].signer.clone()
            }
            None => Arc::new(SoftwareSigner::new("OpenSSL random", state.join("keys"))),
        };
        for (i, s) in slots.iter().enumerate() {
            let mut roles = Vec::new();
            if i == default_signer {
                roles.push("default");
            }
            if i == one_off_signer {
                roles.push("one-off");
            }
            tracing::info!(
                signer = s.signer.name(),
                r#type = s.signer_type,
                roles = roles.join(","),
                "signer configured (not connected yet)"
            );
        }
        Ok(Router {
            slots,
            default_signer,
            one_off_signer,
            software_random,
            keymap,
            retry: setup.retry,
            bound: Mutex::new(HashMap::new()),
        })
    }

    pub fn keymap(&self) -> &KeyMap {
        &self.keymap
    }

    pub fn signers(&self) -> impl Iterator<Item = &Arc<dyn Signer>> {
        self.slots.iter().map(|s| &s.signer)
    }

    pub fn default_signer(&self) -> &Arc<dyn Signer> {
        &self.slots[self.default_signer].signer
    }

    pub fn one_off_signer(&self) -> &Arc<dyn Signer> {
        &self.slots[self.one_off_signer].signer
    }

    /// Connects and binds the signer at `slot` if it is not yet, honouring backoff and
    /// fatal states. Returns the signer id it is bound to.
    fn ensure_bound(&self, slot: usize) -> Result<String, SignerError> {
        let s = &self.slots[slot];
        let name = s.signer.name();
        let mut life = lock(&s.life);
        let previous_delay = match &*life {
            Lifecycle::Bound { signer_id } => return Ok(signer_id.clone()),
            Lifecycle::Unusable { error } => return Err(fatal(name, error)),
            Lifecycle::Waiting {
                until,
                delay,
                error,
            } => {
                let now = Instant::now();
                if now < *until {
                    let what = if error.kind == ErrorKind::Unavailable {
                        "is unreachable"
                    } else {
                        "could not be bound"
                    };
                    return Err(SignerError::unavailable(format!(
                        "signer '{name}' {what} ({}); next attempt in {:.1}s",
                        error.message,
                        (*until - now).as_secs_f64()
                    )));
                }
                Some(*delay)
            }
            Lifecycle::NotConnected => None,
        };
        tracing::info!(signer = name, "connecting");
        match self.bind(slot) {
            Ok(signer_id) => {
                tracing::info!(signer = name, signer_id = %signer_id, "bound");
                *life = Lifecycle::Bound {
                    signer_id: signer_id.clone(),
                };
                Ok(signer_id)
            }
            Err(error) if error.is_transient() => {
                let delay = previous_delay.map_or(self.retry.first(), |d| self.retry.next(d));
                // Say what happened: only a transport failure is "unreachable"; a
                // server that answered with an error was reached.
                let what = if error.kind == ErrorKind::Unavailable {
                    "unreachable"
                } else {
                    "binding failed"
                };
                tracing::warn!(
                    signer = name,
                    retry_in = delay.as_secs_f64(),
                    "{what}, retrying: {error}"
                );
                *life = Lifecycle::Waiting {
                    until: Instant::now() + delay,
                    delay,
                    error: error.clone(),
                };
                Err(error)
            }
            Err(error) => {
                tracing::error!(signer = name, "unusable, not retrying: {error}");
                let e = fatal(name, &error);
                *life = Lifecycle::Unusable { error };
                Err(e)
            }
        }
    }

    /// Finds the signer id whose identity key the backend of `slot` proves, or
    /// registers the backend as a new signer.
    fn bind(&self, slot: usize) -> Result<String, SignerError> {
        let s = &self.slots[slot];
        let signer = s.signer.as_ref();
        let name = signer.name();
        let info = signer.info()?;
        let mut candidates = self.keymap.signers()?;
        let last = self.keymap.bound_name(name)?;
        // The id last bound to this name first; then the others, oldest name order.
        candidates.sort_by_key(|c| (Some(&c.signer_id) != last.as_ref(), c.last_name.clone()));
        for candidate in candidates {
            if lock(&self.bound).contains_key(&candidate.signer_id) {
                continue;
            }
            if let Some(handle) = &candidate.identity_handle {
                signer.recall(&candidate.identity_key, handle);
            }
            match signer.public_key(&candidate.identity_key) {
                Ok(_) => {}
                Err(e) if e.kind == ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
            if identity::prove(
                signer,
                &candidate.identity_key,
                candidate.identity_alg,
                &candidate.identity_public_key,
            )? {
                let mut record = candidate;
                record.last_name = name.to_string();
                record.signer_type = s.signer_type.to_string();
                record.info = info.details.clone();
                self.keymap.put_signer(&record)?;
                self.keymap.set_name(name, &record.signer_id)?;
                lock(&self.bound).insert(record.signer_id.clone(), slot);
                return Ok(record.signer_id);
            }
            tracing::warn!(
                signer = name,
                signer_id = %candidate.signer_id,
                identity_key = %candidate.identity_key,
                "the backend holds this signer id's identity key handle, but it does not \
                 sign with the recorded key material: not binding"
            );
        }
        self.register(slot, info.details)
    }

    /// Creates an identity key in the backend of `slot`, proves it, and records a new
    /// signer id.
    fn register(&self, slot: usize, info: Vec<(String, String)>) -> Result<String, SignerError> {
        let s = &self.slots[slot];
        let signer = s.signer.as_ref();
        let alg = identity::identity_algorithm(signer)?;
        if alg != Algorithm::EcdsaP256Sha256 {
            let why = signer
                .unavailable()
                .into_iter()
                .find(|(kt, _)| *kt == Algorithm::EcdsaP256Sha256.key_type())
                .map_or_else(|| "not offered".to_string(), |(_, why)| why);
            tracing::warn!(
                signer = signer.name(),
                "ecdsa-p256 is unavailable ({why}); the identity key is {alg}"
            );
        }
        let created = signer.create_key(alg)?;
        if !identity::prove(signer, &created.id, alg, &created.public_key)? {
            let _ = signer.destroy_key(&created.id);
            return Err(SignerError::unusable(format!(
                "signer '{}' made an identity key whose signature does not verify",
                signer.name()
            )));
        }
        let record = SignerRecord {
            signer_id: uuid::Uuid::new_v4().to_string(),
            last_name: signer.name().to_string(),
            signer_type: s.signer_type.to_string(),
            identity_key: created.id,
            identity_alg: alg,
            identity_public_key: created.public_key,
            identity_handle: Some(created.handle),
            info,
            unavailable: signer.unavailable(),
        };
        self.keymap.put_signer(&record)?;
        self.keymap.set_name(signer.name(), &record.signer_id)?;
        lock(&self.bound).insert(record.signer_id.clone(), slot);
        tracing::info!(
            signer = signer.name(),
            signer_id = %record.signer_id,
            identity_key = %record.identity_key,
            "registered a new signer identity"
        );
        Ok(record.signer_id)
    }

    /// Moves a bound signer that lost its backend back to backoff, so the next use
    /// reconnects and binds again.
    fn note_failure(&self, slot: usize, error: &SignerError) {
        if error.kind != ErrorKind::Unavailable {
            return;
        }
        let s = &self.slots[slot];
        let mut life = lock(&s.life);
        if let Lifecycle::Bound { signer_id } = &*life {
            lock(&self.bound).remove(signer_id);
            let delay = self.retry.first();
            *life = Lifecycle::Waiting {
                until: Instant::now() + delay,
                delay,
                error: error.clone(),
            };
        }
    }

    /// Records in the key map what key types the signer bound to `signer_id` found
    /// unavailable, so `status` can say so in later processes. Best effort: the key map
    /// is not the signer's business, a failure to write it is only logged.
    /// `created`: a key type the signer just created, so available again.
    fn note_unavailable(&self, slot: usize, signer_id: &str, created: Option<KeyType>) {
        let live = self.slots[slot].signer.unavailable();
        let result = self.keymap.signer(signer_id).and_then(|record| {
            let Some(mut record) = record else {
                return Ok(());
            };
            let mut now: Vec<(KeyType, String)> = record
                .unavailable
                .iter()
                .filter(|(kt, _)| Some(*kt) != created && !live.iter().any(|(k, _)| k == kt))
                .cloned()
                .collect();
            now.extend(live);
            now.sort_by_key(|(kt, _)| kt.to_string());
            if now == record.unavailable {
                return Ok(());
            }
            record.unavailable = now;
            self.keymap.put_signer(&record)
        });
        if let Err(e) = result {
            tracing::warn!("cannot record unavailable key types: {e}");
        }
    }

    /// Creates a key with the default signer and records it before returning.
    pub fn create_key(&self, alg: Algorithm) -> Result<CreatedKey, SignerError> {
        let slot = self.default_signer;
        let signer_id = self.ensure_bound(slot)?;
        let signer = &self.slots[slot].signer;
        let created = signer.create_key(alg).inspect_err(|e| {
            self.note_failure(slot, e);
            if e.kind == ErrorKind::Unsupported {
                self.note_unavailable(slot, &signer_id, None);
            }
        })?;
        self.note_unavailable(slot, &signer_id, Some(alg.key_type()));
        let record = KeyRecord {
            signer_id,
            handle: created.handle.clone(),
            alg,
        };
        if let Err(e) = self.keymap.insert_key(&created.id, &record) {
            // Not reported, so not kept: no key without an owner in the map.
            let _ = signer.destroy_key(&created.id);
            return Err(e);
        }
        Ok(created)
    }

    /// The slot bound to the signer that owns `key`, and the key's record.
    ///
    /// Refused: a key the map does not know ([`ErrorKind::NotFound`]); a key whose
    /// signer id no configured signer binds to ([`ErrorKind::SignerNotBound`], naming
    /// the id and its last name), or [`ErrorKind::Unavailable`] when some signer could
    /// not be asked and may be the one.
    fn owner(&self, key: &KeyIdentifier) -> Result<(usize, KeyRecord), SignerError> {
        let record = self.keymap.key(key)?.ok_or_else(|| {
            SignerError::new(
                ErrorKind::NotFound,
                format!("key {key} is not in the key map"),
            )
        })?;
        let bound = lock(&self.bound).get(&record.signer_id).copied();
        if let Some(slot) = bound {
            self.slots[slot].signer.recall(key, &record.handle);
            return Ok((slot, record));
        }
        // Try the signer last bound under the owner's name first, then the others.
        let last_name = self
            .keymap
            .signer(&record.signer_id)?
            .map(|s| s.last_name)
            .unwrap_or_else(|| "unknown".into());
        let mut order: Vec<usize> = (0..self.slots.len()).collect();
        order.sort_by_key(|&i| self.slots[i].signer.name() != last_name);
        let mut unreachable = Vec::new();
        for slot in order {
            match self.ensure_bound(slot) {
                Ok(id) if id == record.signer_id => {
                    self.slots[slot].signer.recall(key, &record.handle);
                    return Ok((slot, record));
                }
                Ok(_) => {}
                Err(e) => unreachable.push(e.message),
            }
        }
        let mut message = format!(
            "key {key} belongs to signer id {} (last named '{last_name}'), which no configured signer is bound to",
            record.signer_id
        );
        let kind = if unreachable.is_empty() {
            ErrorKind::SignerNotBound
        } else {
            message.push_str(&format!(
                "; signers that could not be checked: {}",
                unreachable.join("; ")
            ));
            ErrorKind::Unavailable
        };
        Err(SignerError::new(kind, message))
    }

    /// The name of the configured signer that owns `key` now.
    pub fn owner_name(&self, key: &KeyIdentifier) -> Result<String, SignerError> {
        let (slot, _) = self.owner(key)?;
        Ok(self.slots[slot].signer.name().to_string())
    }

    pub fn public_key(&self, key: &KeyIdentifier) -> Result<Vec<u8>, SignerError> {
        let (slot, _) = self.owner(key)?;
        self.slots[slot]
            .signer
            .public_key(key)
            .inspect_err(|e| self.note_failure(slot, e))
    }

    pub fn sign(
        &self,
        key: &KeyIdentifier,
        alg: Algorithm,
        data: &[u8],
    ) -> Result<Vec<u8>, SignerError> {
        let (slot, _) = self.owner(key)?;
        self.slots[slot]
            .signer
            .sign(key, alg, data)
            .inspect_err(|e| self.note_failure(slot, e))
    }

    /// Destroys `key` in its owner's backend and removes it from the map. A key the
    /// backend no longer has is removed from the map too, and reported as not found.
    ///
    /// A key the map does not know is destroyed only if it is an orphan
    /// ([`Router::orphans`]: never an identity key) of exactly one reachable signer,
    /// such as a KMIP pair a killed `create-key` left under its temporary names.
    pub fn destroy_key(&self, key: &KeyIdentifier) -> Result<(), SignerError> {
        self.destroy_key_of(key).map(drop)
    }

    /// [`Router::destroy_key`], returning the name of the signer whose backend held the
    /// key (its owner, or the one signer whose orphan it was).
    pub fn destroy_key_of(&self, key: &KeyIdentifier) -> Result<String, SignerError> {
        if self.keymap.key(key)?.is_none() {
            return self.destroy_orphan(key);
        }
        let (slot, _) = self.owner(key)?;
        let name = self.slots[slot].signer.name().to_string();
        match self.slots[slot].signer.destroy_key(key) {
            Ok(()) => self.keymap.remove_key(key).map(|()| name),
            Err(e) if e.kind == ErrorKind::NotFound => {
                self.keymap.remove_key(key)?;
                Err(e)
            }
            Err(e) => {
                self.note_failure(slot, &e);
                Err(e)
            }
        }
    }

    /// Creates a key with the one-off signer, signs `data` with it and destroys it.
    /// Returns the signature and the public key (SPKI DER). The key is never mapped.
    pub fn sign_one_off(
        &self,
        alg: Algorithm,
        data: &[u8],
    ) -> Result<(Vec<u8>, Vec<u8>), SignerError> {
        let slot = self.one_off_signer;
        self.ensure_bound(slot)?;
        let signer = &self.slots[slot].signer;
        let created = signer
            .create_key(alg)
            .inspect_err(|e| self.note_failure(slot, e))?;
        let signed = signer.sign(&created.id, alg, data);
        let destroyed = signer.destroy_key(&created.id);
        let signature = signed?;
        destroyed?;
        Ok((signature, created.public_key))
    }

    /// Random bytes from the default signer, or from the OpenSSL signer when the
    /// default has no generator or cannot be used now.
    pub fn random(&self, len: usize) -> Result<Vec<u8>, SignerError> {
        self.random_with_source(len).map(|(bytes, _)| bytes)
    }

    /// [`Router::random`], saying where the bytes came from. Once the default signer
    /// has answered [`ErrorKind::Unsupported`], this router never asks it again: every
    /// later call answers [`RandomSource::Fallback`] without touching its backend.
    pub fn random_with_source(&self, len: usize) -> Result<(Vec<u8>, RandomSource), SignerError> {
        let slot = &self.slots[self.default_signer];
        if slot.signer_type == "OpenSSL" {
            return Ok((slot.signer.random(len)?, RandomSource::DefaultSigner));
        }
        if !slot.no_rng.load(Ordering::Relaxed) {
            match self
                .ensure_bound(self.default_signer)
                .and_then(|_| slot.signer.random(len))
            {
                Ok(r) => return Ok((r, RandomSource::DefaultSigner)),
                Err(e) if e.kind == ErrorKind::Unsupported => {
                    slot.no_rng.store(true, Ordering::Relaxed);
                    tracing::info!(
                        signer = slot.signer.name(),
                        "no random generator ({e}); using the OpenSSL signer from now on"
                    );
                }
                Err(e) => tracing::warn!(
                    signer = slot.signer.name(),
                    "random values from the OpenSSL signer: {e}"
                ),
            }
        }
        Ok((self.software_random.random(len)?, RandomSource::Fallback))
    }

    /// Every mapped key with its owner.
    pub fn list(&self) -> Result<Vec<KeyListing>, SignerError> {
        let records: HashMap<String, SignerRecord> = self
            .keymap
            .signers()?
            .into_iter()
            .map(|r| (r.signer_id.clone(), r))
            .collect();
        let bound = lock(&self.bound).clone();
        Ok(self
            .keymap
            .keys()?
            .into_iter()
            .map(|(key, rec)| {
                let signer = match bound.get(&rec.signer_id) {
                    Some(&slot) => self.slots[slot].signer.name().to_string(),
                    None => records
                        .get(&rec.signer_id)
                        .map_or("unknown".into(), |r| r.last_name.clone()),
                };
                KeyListing {
                    key,
                    alg: rec.alg,
                    signer_id: rec.signer_id,
                    signer,
                }
            })
            .collect())
    }

    /// Destroys `key`, which the map does not know, in the one signer that lists it as
    /// an orphan; not found when none does (or more than one: which would be a guess).
    fn destroy_orphan(&self, key: &KeyIdentifier) -> Result<String, SignerError> {
        let holders: Vec<String> = self
            .orphans()
            .into_iter()
            .filter(|(_, found)| found.as_ref().is_ok_and(|keys| keys.contains(key)))
            .map(|(name, _)| name)
            .collect();
        let [name] = holders.as_slice() else {
            return Err(SignerError::new(
                ErrorKind::NotFound,
                if holders.is_empty() {
                    format!("key {key} is not in the key map, nor an orphan of any signer")
                } else {
                    format!(
                        "key {key} is not in the key map and is an orphan of several signers \
                         ({}): not destroyed",
                        holders.join(", ")
                    )
                },
            ));
        };
        let Some(slot) = self.slots.iter().position(|s| s.signer.name() == name) else {
            return Err(SignerError::key_not_found(name, key));
        };
        tracing::info!(signer = %name, "destroying orphan key {key}");
        self.slots[slot]
            .signer
            .destroy_key(key)
            .inspect_err(|e| self.note_failure(slot, e))
            .map(|()| name.clone())
    }

    /// Keys each reachable signer's backend holds that the map does not know (identity
    /// keys excluded), by signer name; unreachable signers are reported with their error.
    pub fn orphans(&self) -> Vec<(String, Result<Vec<KeyIdentifier>, SignerError>)> {
        self.orphans_with_state()
            .into_iter()
            .map(|(name, found)| {
                (
                    name,
                    found.map(|keys| keys.into_iter().map(|(k, _)| k).collect()),
                )
            })
            .collect()
    }

    /// As [`Router::orphans`], each key with whether it is pending (its creation was
    /// interrupted; see [`Signer::is_pending`]).
    #[allow(clippy::type_complexity)]
    pub fn orphans_with_state(
        &self,
    ) -> Vec<(String, Result<Vec<(KeyIdentifier, bool)>, SignerError>)> {
        // Bind first: binding may register identity keys, which are not orphans.
        self.connect_all();
        self.slots
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let found = self.ensure_bound(i).and_then(|_| {
                    let identity: Vec<KeyIdentifier> = self
                        .keymap
                        .signers()?
                        .into_iter()
                        .map(|r| r.identity_key)
                        .collect();
                    let mut out = Vec::new();
                    for k in s.signer.list_keys()? {
                        if !identity.contains(&k) && self.keymap.key(&k)?.is_none() {
                            out.push((k, s.signer.is_pending(&k)));
                        }
                    }
                    Ok(out)
                });
                (s.signer.name().to_string(), found)
            })
            .collect()
    }

    /// Connects every signer that is not connected yet (used by `status`).
    pub fn connect_all(&self) {
        for i in 0..self.slots.len() {
            let _ = self.ensure_bound(i);
        }
    }

    /// Each signer with its roles and lifecycle state, without connecting.
    pub fn status(&self) -> Vec<SignerStatus> {
        self.slots
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mut roles = Vec::new();
                if i == self.default_signer {
                    roles.push("default");
                }
                if i == self.one_off_signer {
                    roles.push("one-off");
                }
                let mut unavailable = s.signer.unavailable();
                let state = match &*lock(&s.life) {
                    Lifecycle::NotConnected => SignerState::NotConnected,
                    Lifecycle::Bound { signer_id } => {
                        let record = self.keymap.signer(signer_id).ok().flatten();
                        // What an earlier process learned, unless this one knows better.
                        for (kt, why) in record.iter().flat_map(|r| r.unavailable.clone()) {
                            if !unavailable.iter().any(|(k, _)| *k == kt) {
                                unavailable.push((kt, why));
                            }
                        }
                        SignerState::Bound {
                            signer_id: signer_id.clone(),
                            identity_key: record.map(|r| r.identity_key),
                        }
                    }
                    Lifecycle::Waiting { until, error, .. } => SignerState::Waiting {
                        retry_in_secs: until
                            .saturating_duration_since(Instant::now())
                            .as_secs_f64(),
                        error: error.message.clone(),
                    },
                    Lifecycle::Unusable { error } => SignerState::Unusable {
                        error: error.message.clone(),
                    },
                };
                SignerStatus {
                    name: s.signer.name().to_string(),
                    signer_type: s.signer_type,
                    roles,
                    state,
                    unavailable: unavailable
                        .into_iter()
                        .map(|(key_type, reason)| UnavailableKeyType { key_type, reason })
                        .collect(),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SignerInfo;
    use std::sync::atomic::AtomicUsize;

    /// A software signer whose backend is "down" for the first `down` connects, or
    /// refuses every connect as fatal: the faults a real OpenSSL signer cannot make.
    struct Flaky {
        inner: SoftwareSigner,
        down: usize,
        fatal: bool,
        connects: AtomicUsize,
    }

    impl Signer for Flaky {
        fn name(&self) -> &str {
            self.inner.name()
        }
        fn info(&self) -> Result<SignerInfo, SignerError> {
            let n = self.connects.fetch_add(1, Ordering::SeqCst);
            if self.fatal {
                Err(SignerError::unusable("wrong PIN"))
            } else if n < self.down {
                Err(SignerError::unavailable("connection refused"))
            } else {
                self.inner.info()
            }
        }
        fn supports(&self, alg: Algorithm) -> Result<bool, SignerError> {
            self.inner.supports(alg)
        }
        fn create_key(&self, alg: Algorithm) -> Result<CreatedKey, SignerError> {
            self.inner.create_key(alg)
        }
        fn public_key(&self, key: &KeyIdentifier) -> Result<Vec<u8>, SignerError> {
            self.inner.public_key(key)
        }
        fn sign(&self, k: &KeyIdentifier, a: Algorithm, d: &[u8]) -> Result<Vec<u8>, SignerError> {
            self.inner.sign(k, a, d)
        }
        fn destroy_key(&self, key: &KeyIdentifier) -> Result<(), SignerError> {
            self.inner.destroy_key(key)
        }
        fn random(&self, len: usize) -> Result<Vec<u8>, SignerError> {
            self.inner.random(len)
        }
        fn list_keys(&self) -> Result<Vec<KeyIdentifier>, SignerError> {
            self.inner.list_keys()
        }
    }

    fn with_flaky(dir: &Path, down: usize, fatal: bool, retry: &str) -> (Router, Arc<Flaky>) {
        let text = format!(
            "default_signer = \"flaky\"\n{retry}[[signers]]\ntype = \"OpenSSL\"\nname = \"flaky\"\nkeys_dir = \"{}\"\n[[signers]]\ntype = \"OpenSSL\"\nname = \"steady\"\nkeys_dir = \"{}\"\n",
            dir.join("flaky").display(),
            dir.join("steady").display()
        );
        let mut r = Router::new(&setup(&text), &dir.join("state")).unwrap();
        let flaky = Arc::new(Flaky {
            inner: SoftwareSigner::new("flaky", dir.join("flaky")),
            down,
            fatal,
            connects: AtomicUsize::new(0),
        });
        r.slots[0].signer = flaky.clone();
        (r, flaky)
    }

    #[test]
    fn an_unreachable_signer_backs_off_then_binds() {
        let dir = tempfile::tempdir().unwrap();
        let (r, flaky) = with_flaky(
            dir.path(),
            2,
            false,
            "[signer_retry]\ninitial_delay = 0.5\nfactor = 4.0\nmax_delay = 2.0\n",
        );
        let e = r.create_key(Algorithm::EcdsaP256Sha256).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unavailable);
        // Within the delay: refused without touching the backend.
        let e = r.create_key(Algorithm::EcdsaP256Sha256).unwrap_err();
        assert!(e.message.contains("next attempt in"), "{e}");
        assert_eq!(flaky.connects.load(Ordering::SeqCst), 1);
        std::thread::sleep(Duration::from_millis(600));
        // Second attempt fails too; the delay grows by the factor, up to the cap.
        assert!(r.create_key(Algorithm::EcdsaP256Sha256).is_err());
        assert!(matches!(
            r.status()[0].state,
            SignerState::Waiting { retry_in_secs, .. } if retry_in_secs > 0.5
        ));
        std::thread::sleep(Duration::from_millis(2100));
        r.create_key(Algorithm::EcdsaP256Sha256).unwrap();
        assert_eq!(flaky.connects.load(Ordering::SeqCst), 3);
        assert!(matches!(r.status()[0].state, SignerState::Bound { .. }));
    }

    #[test]
    fn a_fatal_error_is_not_retried_and_other_signers_keep_working() {
        let dir = tempfile::tempdir().unwrap();
        // A key made by "steady" first, while "flaky" is the default and dead.
        let text = format!(
            "default_signer = \"steady\"\n[[signers]]\ntype = \"OpenSSL\"\nname = \"flaky\"\nkeys_dir = \"{}\"\n[[signers]]\ntype = \"OpenSSL\"\nname = \"steady\"\nkeys_dir = \"{}\"\n",
            dir.path().join("flaky").display(),
            dir.path().join("steady").display()
        );
        let k = Router::new(&setup(&text), &dir.path().join("state"))
            .unwrap()
            .create_key(Algorithm::EcdsaP256Sha256)
            .unwrap();
        let (r, flaky) = with_flaky(dir.path(), 0, true, "");
        for _ in 0..3 {
            let e = r.create_key(Algorithm::EcdsaP256Sha256).unwrap_err();
            assert_eq!(e.kind, ErrorKind::Unusable, "{e}");
        }
        assert_eq!(
            flaky.connects.load(Ordering::SeqCst),
            1,
            "retried a fatal error"
        );
        assert!(matches!(r.status()[0].state, SignerState::Unusable { .. }));
        // The other signer's keys still sign.
        r.sign(&k.id, Algorithm::EcdsaP256Sha256, b"x").unwrap();
        assert_eq!(r.owner_name(&k.id).unwrap(), "steady");
    }

    fn setup(text: &str) -> SignerSetup {
        SignerSetup::parse(text, "test.conf").unwrap()
    }

    fn two_software(dir: &Path, a: &str, b: &str, default: &str) -> SignerSetup {
        setup(&format!(
            "default_signer = \"{default}\"\n[[signers]]\ntype = \"OpenSSL\"\nname = \"{a}\"\nkeys_dir = \"{}\"\n[[signers]]\ntype = \"OpenSSL\"\nname = \"{b}\"\nkeys_dir = \"{}\"\n",
            dir.join("ka").display(),
            dir.join("kb").display()
        ))
    }

    #[test]
    fn single_hsm_default_gets_an_openssl_one_off_signer() {
        let dir = tempfile::tempdir().unwrap();
        let r = Router::new(
            &setup("[[signers]]\ntype = \"PKCS#11\"\nname = \"hsm\"\nlib_path = \"/nonexistent.so\"\nslot = 1\n"),
            dir.path(),
        )
        .unwrap();
        assert_eq!(r.default_signer().name(), "hsm");
        assert_eq!(r.one_off_signer().name(), ONE_OFF_FALLBACK_NAME);
    }

    #[test]
    fn random_falls_back_when_the_default_cannot() {
        let dir = tempfile::tempdir().unwrap();
        let r = Router::new(
            &setup("[[signers]]\ntype = \"KMIP\"\nname = \"k\"\nhost = \"localhost\"\n"),
            dir.path(),
        )
        .unwrap();
        assert_eq!(r.random(16).unwrap().len(), 16);
        let (bytes, source) = r.random_with_source(8).unwrap();
        assert_eq!((bytes.len(), source), (8, RandomSource::Fallback));
    }

    #[test]
    fn an_openssl_default_signer_gives_its_own_random_values() {
        let dir = tempfile::tempdir().unwrap();
        let r = Router::new(
            &two_software(dir.path(), "a", "b", "a"),
            &dir.path().join("s"),
        )
        .unwrap();
        let (bytes, source) = r.random_with_source(32).unwrap();
        assert_eq!((bytes.len(), source), (32, RandomSource::DefaultSigner));
    }

    #[test]
    fn keys_route_to_their_owner_across_a_rename_and_a_default_change() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let k = {
            let r = Router::new(&two_software(dir.path(), "a", "b", "a"), &state).unwrap();
            r.create_key(Algorithm::EcdsaP256Sha256).unwrap()
        };
        // "a" renamed to "renamed", default moved to "b": the key still signs through
        // the backend that holds it.
        let r = Router::new(&two_software(dir.path(), "renamed", "b", "b"), &state).unwrap();
        assert_eq!(r.owner_name(&k.id).unwrap(), "renamed");
        r.sign(&k.id, Algorithm::EcdsaP256Sha256, b"x").unwrap();
        let k2 = r.create_key(Algorithm::EcdsaP256Sha256).unwrap();
        assert_eq!(r.owner_name(&k2.id).unwrap(), "b");
        r.destroy_key(&k.id).unwrap();
        assert_eq!(
            r.sign(&k.id, Algorithm::EcdsaP256Sha256, b"x")
                .unwrap_err()
                .kind,
            ErrorKind::NotFound
        );
    }

    #[test]
    fn a_wiped_backend_is_a_new_signer_and_old_keys_name_the_missing_one() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let k = {
            let r = Router::new(&two_software(dir.path(), "a", "b", "a"), &state).unwrap();
            r.create_key(Algorithm::EcdsaP256Sha256).unwrap()
        };
        std::fs::remove_dir_all(dir.path().join("ka")).unwrap();
        let r = Router::new(&two_software(dir.path(), "a", "b", "a"), &state).unwrap();
        let e = r.sign(&k.id, Algorithm::EcdsaP256Sha256, b"x").unwrap_err();
        assert_eq!(e.kind, ErrorKind::SignerNotBound, "{e}");
        assert!(e.message.contains("last named 'a'"), "{e}");
    }

    #[test]
    fn an_impostor_identity_key_does_not_bind() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let k = {
            let r = Router::new(&two_software(dir.path(), "a", "b", "a"), &state).unwrap();
            r.create_key(Algorithm::EcdsaP256Sha256).unwrap()
        };
        // Replace the identity key file of "a" by another key under the same name.
        let map = KeyMap::open(&state).unwrap();
        let ident = map
            .signers()
            .unwrap()
            .into_iter()
            .find(|s| s.last_name == "a")
            .unwrap();
        drop(map);
        let other = SoftwareSigner::new("x", dir.path().join("other"));
        let o = other.create_key(ident.identity_alg).unwrap();
        std::fs::copy(
            dir.path().join("other").join(format!("{}.key", o.id)),
            dir.path()
                .join("ka")
                .join(format!("{}.key", ident.identity_key)),
        )
        .unwrap();
        let r = Router::new(&two_software(dir.path(), "a", "b", "a"), &state).unwrap();
        let e = r.sign(&k.id, Algorithm::EcdsaP256Sha256, b"x").unwrap_err();
        assert_eq!(e.kind, ErrorKind::SignerNotBound, "{e}");
    }

    #[test]
    fn one_off_keys_are_gone_afterwards_and_never_mapped() {
        let dir = tempfile::tempdir().unwrap();
        let r = Router::new(&SignerSetup::implicit(), dir.path()).unwrap();
        let (sig, spki) = r.sign_one_off(Algorithm::EcdsaP256Sha256, b"m").unwrap();
        assert!(identity::verifies(
            &spki,
            Algorithm::EcdsaP256Sha256,
            b"m",
            &sig
        ));
        assert!(r.list().unwrap().is_empty());
        for (_, o) in r.orphans() {
            assert!(o.unwrap().is_empty());
        }
    }
}
