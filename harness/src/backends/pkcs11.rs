//! Provider `pkcs11`: a vendor's existing PKCS#11 token, as it is, reached through the
//! PKCS#11 signer: `provider: { pkcs11: { module, slot, user_pin, env, second_slot } }`.
//!
//! The harness does not own such a token, so it never initialises, wipes or re-PINs it
//! and never replaces a key on it: those abilities refuse, and a backend file cannot
//! claim the capabilities that need them. What it does to keep the token as it was:
//!
//! - cells on one token never run at the same time: each holds an exclusive lock
//!   (`flock`) on a file in the system's temporary directory named after the module
//!   and the token, for the whole cell, so every object that appears during a cell is
//!   that cell's;
//! - when an instance is made, the harness's own session records every object it can
//!   see (class, CKA_ID, CKA_LABEL, key type, and the oracle's identifier of a public
//!   key), and keeps that session open, so the object handles stay valid;
//! - when the cell ends ([`Instance::finish`], or the instance's drop), every object
//!   that was not there at the start is destroyed, and every recorded object must be
//!   there still with the same facts. What could not be destroyed, what is missing or
//!   changed, is the cell's `<error>` and is in its log and report properties.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use cryptoki::context::Pkcs11 as Context11;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::object::{Attribute, AttributeType, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use hsm_signers::config::{Pkcs11Config, SignerKind, SlotSelector};
use hsm_signers::{Algorithm, KeyIdentifier, Secret};
use secrecy::ExposeSecret;
use serde::de::{self, Deserializer};
use serde::Deserialize;

use super::lock;
use super::server::Runtime;
use super::shim::{self, ShimSpec};
use super::token::{self, ck, Module};
use super::{log_line, CellBackend, Instance, Observed, Provider, SignerOptions};
use crate::model::backend::Placement;
use crate::model::suite::{Capability, InstanceSpec};

/// A vendor's existing PKCS#11 token (and optionally a second one for two-instance
/// cases), used as it is: never initialised, wiped or re-PINned; objects that were
/// there before a cell are left unchanged, keys a cell makes are destroyed when it
/// ends.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11 {
    /// The vendor's PKCS#11 module (a shared library).
    pub module: PathBuf,
    /// The token of instance `a`.
    pub slot: SlotChoice,
    /// The user PIN, for the signer and the harness's own sessions: `env:NAME` or
    /// `file:PATH` only (a PIN written in the backend file is refused).
    pub user_pin: PinSource,
    /// Environment variables the module reads, set in each cell's process before the
    /// module loads.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The token of instance `b`, for cases with two instances (same PIN); without it
    /// such cases cannot run here.
    #[serde(default)]
    pub second_slot: Option<SlotChoice>,
    /// Put the PKCS#11 shim in front of the module in every cell, with these settings
    /// (`{}`: trace only; `rules` make functions fail, as a module that lacks them
    /// would), before any settings of the case. The harness's own sessions (snapshot,
    /// inventory, clean-up) always use the module itself.
    #[serde(default)]
    pub shim: Option<ShimSpec>,
}

/// `provider: pkcs11` alone has no module, slot or PIN; [`Provider::check`] refuses it.
impl Default for Pkcs11 {
    fn default() -> Self {
        Pkcs11 {
            module: PathBuf::new(),
            slot: SlotChoice::Index(0),
            user_pin: PinSource(Secret::Env(String::new())),
            env: BTreeMap::new(),
            second_slot: None,
            shim: None,
        }
    }
}

/// Which token: by its label, the slot's id, or the position in the module's list of
/// slots with a token (0 is the first).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum SlotChoice {
    /// The token's label (CKA_LABEL of the token, trailing blanks ignored).
    Label(String),
    /// The slot id.
    Id(u64),
    /// The position in C_GetSlotList(with token), from 0.
    Index(usize),
}

impl fmt::Display for SlotChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SlotChoice::Label(l) => write!(f, "token label '{l}'"),
            SlotChoice::Id(id) => write!(f, "slot id {id}"),
            SlotChoice::Index(i) => write!(f, "slot index {i}"),
        }
    }
}

/// A PIN named by where it is read from (`env:NAME`, `file:PATH`), never a literal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinSource(pub Secret);

impl<'de> Deserialize<'de> for PinSource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let refused =
            "a PIN written in the backend file is refused: give \"env:NAME\" or \"file:PATH\"";
        match Secret::deserialize(d)? {
            Secret::Literal(_) => Err(de::Error::custom(refused)),
            s => Ok(PinSource(s)),
        }
    }
}

impl schemars::JsonSchema for PinSource {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "pinSource".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "Where the PIN is read from: \"env:NAME\" or \"file:PATH\".",
            "type": "string",
            "pattern": "^(env|file):.+$"
        })
    }
}

impl Provider for Pkcs11 {
    fn name(&self) -> &'static str {
        "pkcs11"
    }

    fn check(&self) -> Result<(), String> {
        if self.module.as_os_str().is_empty() {
            return Err("the pkcs11 provider needs settings: module, slot and user_pin".into());
        }
        if self.second_slot.as_ref() == Some(&self.slot) {
            return Err(format!(
                "provider pkcs11: second_slot names the same token as slot ({})",
                self.slot
            ));
        }
        if let Some(k) = self
            .env
            .keys()
            .find(|k| k.is_empty() || k.contains('=') || k.contains('\0'))
        {
            return Err(format!(
                "provider pkcs11: '{k}' is not an environment variable name"
            ));
        }
        match &self.shim {
            Some(s) => s.check().map_err(|m| format!("provider pkcs11: shim: {m}")),
            None => Ok(()),
        }
    }

    fn signer_type(&self) -> super::SignerType {
        super::SignerType::Pkcs11
    }

    /// The PKCS#11 signer and the shim in front of the module; a PIN change and
    /// impostor keys only with `--allow-destructive` (see [`Provider::existing`]).
    fn administers(&self) -> &'static [Capability] {
        &[
            Capability::Pkcs11Shim,
            Capability::Pkcs11,
            Capability::Credentials,
            Capability::ReplaceKeys,
        ]
    }

    fn existing(&self) -> bool {
        true
    }

    fn lacks_instance(&self, name: &str) -> Option<String> {
        match name {
            "a" => None,
            "b" if self.second_slot.is_some() => None,
            "b" => Some(
                "the case uses instance 'b', a second token: give `second_slot` in the \
                 pkcs11 provider's settings"
                    .into(),
            ),
            other => Some(format!(
                "the case uses instance '{other}'; the pkcs11 provider has 'a' (slot) and \
                 'b' (second_slot) only"
            )),
        }
    }

    fn unavailable_reason(&self, placement: Placement) -> Option<String> {
        match placement {
            Placement::Local if !self.module.exists() => Some(format!(
                "PKCS#11 module {} not found",
                self.module.display()
            )),
            Placement::Local => self.shim.as_ref().and_then(|_| shim::library().err()),
            Placement::Container => self.container_unavailable_reason(),
        }
    }

    fn shim(&self) -> Option<&ShimSpec> {
        self.shim.as_ref()
    }

    fn open(&self, workdir: &Path, _runtime: &Runtime) -> anyhow::Result<Box<dyn CellBackend>> {
        // Read by the vendor's module when it loads, which is after this.
        for (k, v) in &self.env {
            std::env::set_var(k, v);
        }
        // Cells on one module (with one environment) load and look it up one at a
        // time: a module that keeps its tokens in files (SoftHSMv2) can miss a token
        // while another cell's process writes it, so the token locks below, which
        // need the token found first, would come too late.
        let canonical = std::fs::canonicalize(&self.module).unwrap_or(self.module.clone());
        let mut module_key = canonical.display().to_string();
        for (k, v) in &self.env {
            module_key.push_str(&format!("\0{k}={v}"));
        }
        let module_lock =
            lock::acquire(&lock::path("pkcs11-module", &module_key), "PKCS#11 module")?;
        let module = Module::external(&self.module, workdir);
        let p11 = module.p11()?;
        let mut slots = vec![("a", resolve(&p11, &self.slot)?)];
        if let Some(second) = &self.second_slot {
            slots.push(("b", resolve(&p11, second)?));
        }
        if slots.len() == 2 && slots[0].1.slot == slots[1].1.slot {
            bail!(
                "slot ({}) and second_slot ({}) are the same slot",
                self.slot,
                self.second_slot
                    .as_ref()
                    .map(|s| s.to_string())
                    .unwrap_or_default()
            );
        }
        // Locks in one order (by file name), so two cells never wait for each other.
        let mut lock_files: Vec<PathBuf> = slots
            .iter()
            .map(|(_, t)| lock_path(&canonical, t))
            .collect();
        lock_files.sort();
        let mut locks = vec![module_lock];
        for path in &lock_files {
            locks.push(lock::acquire(path, "token")?);
        }
        for (_, token) in &slots {
            restore_pin_left_changed(
                &p11,
                token,
                &pin_record(&canonical, token),
                &self.user_pin.0,
            )?;
            // The run's directory holds the run's baseline of each token (only in a
            // run: a `probe` has no run, and its directory is not one).
            let run = workdir.parent().filter(|r| {
                r.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(crate::run::lifeline::RUN_DIR_PREFIX))
            });
            if let Some(run) = run {
                let baseline = run.join(
                    lock_path(&canonical, token)
                        .with_extension("baseline")
                        .file_name()
                        .unwrap_or_default(),
                );
                sweep_leftovers(&p11, token, &baseline, &self.user_pin.0)?;
            }
        }
        Ok(Box::new(Pkcs11Cell {
            module,
            p11,
            pin: self.user_pin.0.clone(),
            selectors: slots
                .into_iter()
                .zip([Some(&self.slot), self.second_slot.as_ref()])
                .map(|((name, token), choice)| {
                    let selector = match choice {
                        Some(SlotChoice::Label(l)) => SlotSelector::Label(l.clone()),
                        _ => SlotSelector::Id(token.slot.id()),
                    };
                    (name.to_string(), (token, selector))
                })
                .collect(),
            used: BTreeSet::new(),
            module_key: canonical,
            allow_destructive: false,
            _locks: locks,
        }))
    }
}

/// A token found in a slot.
#[derive(Clone, Debug)]
struct FoundToken {
    slot: Slot,
    label: String,
    serial: String,
}

/// The slot `choice` names, which must hold an initialised token.
fn resolve(p11: &Context11, choice: &SlotChoice) -> anyhow::Result<FoundToken> {
    let slots = p11.get_slots_with_token().map_err(ck("C_GetSlotList"))?;
    let slot = match choice {
        SlotChoice::Index(i) => slots.get(*i).copied().ok_or_else(|| {
            anyhow!(
                "{choice}: the module has {} slots with a token",
                slots.len()
            )
        })?,
        SlotChoice::Id(id) => slots
            .iter()
            .copied()
            .find(|s| s.id() == *id)
            .ok_or_else(|| anyhow!("{choice}: no slot with a token has that id"))?,
        SlotChoice::Label(label) => {
            let found: Vec<Slot> = slots
                .iter()
                .copied()
                .filter(|s| {
                    p11.get_token_info(*s)
                        .map(|t| t.label().trim_end() == label)
                        .unwrap_or(false)
                })
                .collect();
            match found[..] {
                [s] => s,
                [] => bail!("{choice}: no token has that label"),
                _ => bail!("{choice}: {} tokens have that label", found.len()),
            }
        }
    };
    let info = p11.get_token_info(slot).map_err(ck("C_GetTokenInfo"))?;
    if !info.token_initialized() {
        bail!("{choice}: the token is not initialised (the harness never initialises an external token)");
    }
    Ok(FoundToken {
        slot,
        label: info.label().trim_end().to_string(),
        serial: info.serial_number().trim_end().to_string(),
    })
}

/// The lock file of a token: named from the module's path and the token's serial
/// number and label (see [`lock`]).
fn lock_path(module: &Path, token: &FoundToken) -> PathBuf {
    let key = format!("{}\0{}\0{}", module.display(), token.serial, token.label);
    lock::path("pkcs11", &key)
}

/// Where a changed user PIN of `token` is kept while it is changed (see
/// [`External::pin_record`]): beside the token's lock file.
fn pin_record(module: &Path, token: &FoundToken) -> PathBuf {
    lock_path(module, token).with_extension("changed-pin")
}

/// Writes `secret` to `path`, mode 0600, replacing what was there.
fn write_secret(path: &Path, secret: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(secret.as_bytes())
        .and_then(|_| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// The first cell of a run on a token records what the token holds (the run's
/// baseline, in the run's directory); every later cell destroys what is there beyond
/// it before it starts. A cell that ends cleans up after itself, so what is beyond
/// the baseline was made by a cell of this run that was killed (its timeout, a crash
/// of the module) before it could. Objects are told by their facts (handles are per
/// process), counted, so two alike objects are two.
fn sweep_leftovers(
    p11: &Context11,
    token: &FoundToken,
    baseline: &Path,
    pin: &Secret,
) -> anyhow::Result<()> {
    let session = user_session(p11, token.slot, pin)?;
    let now = snapshot(&session)?;
    let line = |f: &Facts| f.to_string();
    let Ok(text) = std::fs::read_to_string(baseline) else {
        let mut text = String::new();
        for (_, f) in &now {
            text.push_str(&line(f).replace('\n', " "));
            text.push('\n');
        }
        return std::fs::write(baseline, text)
            .with_context(|| format!("writing {}", baseline.display()));
    };
    let mut expected: Vec<&str> = text.lines().collect();
    for (h, f) in now {
        let l = line(&f).replace('\n', " ");
        if let Some(at) = expected.iter().position(|e| *e == l) {
            expected.swap_remove(at);
            continue;
        }
        session
            .destroy_object(h)
            .map_err(token::ck("C_DestroyObject"))
            .with_context(|| {
                format!(
                    "token '{}': destroying {f}, left by a cell of this run that did not end",
                    token.label
                )
            })?;
        log_line(format!(
            "  token '{}': destroyed {f}, left by a cell of this run that did not end",
            token.label
        ));
    }
    Ok(())
}

/// A cell that changed the user PIN and died before setting it back left the changed
/// PIN at `record`: set the backend file's PIN again before anything else.
fn restore_pin_left_changed(
    p11: &Context11,
    token: &FoundToken,
    record: &Path,
    pin: &Secret,
) -> anyhow::Result<()> {
    let Ok(changed) = std::fs::read_to_string(record) else {
        return Ok(());
    };
    let original = pin
        .resolve()
        .map_err(|e| anyhow!("the user PIN ({pin}): {e}"))?;
    let session = p11
        .open_rw_session(token.slot)
        .map_err(token::ck("C_OpenSession"))?;
    session
        .login(UserType::User, Some(&AuthPin::from(changed.clone())))
        .or_else(|e| match e {
            CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _) => Ok(()),
            e => Err(e),
        })
        .map_err(|e| {
            anyhow!(
                "token '{}': a cell left the user PIN changed (the PIN is in {}), and logging \
                 in with it failed: {e}",
                token.label,
                record.display()
            )
        })?;
    session
        .set_pin(
            &AuthPin::from(changed),
            &AuthPin::from(original.expose_secret().to_string()),
        )
        .map_err(|e| {
            anyhow!(
                "token '{}': setting the user PIN back: C_SetPIN: {e}",
                token.label
            )
        })?;
    let _ = session.logout();
    std::fs::remove_file(record).with_context(|| format!("removing {}", record.display()))?;
    log_line(format!(
        "  token '{}': a cell had left the user PIN changed; set back to the backend file's",
        token.label
    ));
    Ok(())
}

struct Pkcs11Cell {
    module: Module,
    p11: Context11,
    pin: Secret,
    /// Per instance name (`a`, `b`), its token and how the signer finds it.
    selectors: BTreeMap<String, (FoundToken, SlotSelector)>,
    /// The slots of the instances made so far.
    used: BTreeSet<u64>,
    /// The module's canonical path, which names the tokens' lock files.
    module_key: PathBuf,
    /// `--allow-destructive`: wipes, PIN changes and impostors are done, not refused.
    allow_destructive: bool,
    _locks: Vec<File>,
}

impl CellBackend for Pkcs11Cell {
    fn allow_destructive(&mut self) {
        self.allow_destructive = true;
    }

    fn make(
        &mut self,
        name: &str,
        dir: &Path,
        _spec: &InstanceSpec,
    ) -> anyhow::Result<Box<dyn Instance>> {
        // The capability probe ([`super::Instances::probe`]) looks at instance a's
        // token and makes nothing there.
        let probing = name == "Probe";
        let key = if probing { "a" } else { name };
        let Some((token, selector)) = self.selectors.get(key).cloned() else {
            if name == "b" {
                bail!("instance 'b' needs second_slot in the pkcs11 provider's settings");
            }
            bail!("the pkcs11 provider has instances 'a' (slot) and 'b' (second_slot) only, not '{name}'");
        };
        if !probing && !self.used.insert(token.slot.id()) {
            bail!(
                "instance '{name}': slot {} already serves another instance of this cell",
                token.slot.id()
            );
        }
        let session = user_session(&self.p11, token.slot, &self.pin)?;
        let snapshot = snapshot(&session)?;
        let token_for_record = token.clone();
        log_line(format!(
            "  instance '{name}': token '{}' (serial {}) in slot {}, {} objects there before the cell",
            token.label,
            token.serial,
            token.slot.id(),
            snapshot.len()
        ));
        Ok(Box::new(External {
            name: name.to_string(),
            p11: self.p11.clone(),
            pin: self.pin.clone(),
            token,
            selector,
            signer_module: self.module.signer_module(),
            real_module: self.module.path().to_path_buf(),
            session,
            snapshot,
            finished: None,
            allow_destructive: self.allow_destructive,
            pin_record: pin_record(&self.module_key, &token_for_record),
            pin_file: dir.join("user.pin"),
            changed_pin: None,
            wiped: Vec::new(),
        }))
    }

    fn module(&self) -> Option<&Module> {
        Some(&self.module)
    }

    fn module_mut(&mut self) -> Option<&mut Module> {
        Some(&mut self.module)
    }

    fn properties(&self) -> Vec<(String, String)> {
        self.module.properties()
    }
}

/// A session of the harness's own, logged in as user. It never logs out (login state
/// is per token: it would log the signer out too).
fn user_session(p11: &Context11, slot: Slot, pin: &Secret) -> anyhow::Result<Session> {
    let session = p11.open_rw_session(slot).map_err(ck("C_OpenSession"))?;
    login(&session, pin)?;
    Ok(session)
}

fn login(session: &Session, pin: &Secret) -> anyhow::Result<()> {
    let pin = pin
        .resolve()
        .map_err(|e| anyhow!("the user PIN ({pin}): {e}"))?;
    let pin = AuthPin::from(pin.expose_secret().to_string());
    match session.login(UserType::User, Some(&pin)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        Err(e) => Err(anyhow!("C_Login: {e}")),
    }
}

/// What the harness records of an object on an external token.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Facts {
    class: String,
    cka_id: String,
    label: String,
    key_type: Option<String>,
    /// The oracle's identifier, for a public key of a kind it knows.
    key_id: Option<String>,
}

impl fmt::Display for Facts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} CKA_ID {} label '{}'",
            self.class, self.cka_id, self.label
        )?;
        if let Some(t) = &self.key_type {
            write!(f, " type {t}")?;
        }
        if let Some(k) = &self.key_id {
            write!(f, " key {k}")?;
        }
        Ok(())
    }
}

/// The facts of object `h`. Attributes an object does not have are left empty.
fn facts(session: &Session, h: ObjectHandle) -> anyhow::Result<Facts> {
    let attrs = session
        .get_attributes(
            h,
            &[
                AttributeType::Class,
                AttributeType::Id,
                AttributeType::Label,
                AttributeType::KeyType,
                AttributeType::Modulus,
                AttributeType::PublicExponent,
                AttributeType::EcParams,
                AttributeType::EcPoint,
            ],
        )
        .map_err(ck("C_GetAttributeValue"))?;
    let mut out = Facts {
        class: "?".into(),
        cka_id: String::new(),
        label: String::new(),
        key_type: None,
        key_id: None,
    };
    let (mut n, mut e, mut params, mut point) = (None, None, None, None);
    let mut public = false;
    for a in attrs {
        match a {
            Attribute::Class(c) => {
                public = c == cryptoki::object::ObjectClass::PUBLIC_KEY;
                out.class = c.to_string();
            }
            Attribute::Id(v) => out.cka_id = hex::encode(v),
            Attribute::Label(v) => out.label = String::from_utf8_lossy(&v).into_owned(),
            Attribute::KeyType(t) => out.key_type = Some(t.to_string()),
            Attribute::Modulus(v) => n = Some(v),
            Attribute::PublicExponent(v) => e = Some(v),
            Attribute::EcParams(v) => params = Some(v),
            Attribute::EcPoint(v) => point = Some(v),
            _ => {}
        }
    }
    if public {
        out.key_id = match token::public_key_identifier(n, e, params, point) {
            Some(Ok(id)) => Some(id.to_string()),
            Some(Err(e)) => Some(format!("unreadable ({e})")),
            None => None,
        };
    }
    Ok(out)
}

/// Every object the session sees, with its facts.
fn snapshot(session: &Session) -> anyhow::Result<Vec<(ObjectHandle, Facts)>> {
    let handles = session.find_objects(&[]).map_err(ck("C_FindObjects"))?;
    handles
        .into_iter()
        .map(|h| Ok((h, facts(session, h)?)))
        .collect()
}

/// An instance: an external token, with what was on it when the instance was made.
struct External {
    name: String,
    p11: Context11,
    pin: Secret,
    token: FoundToken,
    selector: SlotSelector,
    signer_module: PathBuf,
    /// The vendor's module itself (the harness's own calls never go through the shim).
    real_module: PathBuf,
    /// Open for the instance's life, so that the snapshot's handles stay valid.
    session: Session,
    snapshot: Vec<(ObjectHandle, Facts)>,
    /// What the end of the cell found (once it ran).
    finished: Option<Vec<String>>,
    /// `--allow-destructive`: wipes, PIN changes and impostors are done, not refused.
    allow_destructive: bool,
    /// While the user PIN is changed, the changed PIN is kept here (mode 0600, beside
    /// the token's lock file, outside the cell's directory), so that whoever takes the
    /// token next puts the vendor's PIN back should this cell die first.
    pin_record: PathBuf,
    /// The PIN file the signer reads once the PIN is changed (mode 0600).
    pin_file: PathBuf,
    /// The user PIN now, when a case changed it.
    changed_pin: Option<String>,
    /// Objects there before the cell that a wipe destroyed (allowed).
    wiped: Vec<Facts>,
}

impl External {
    /// Whether object `h` was on the token when the instance was made.
    fn was_there(&self, h: ObjectHandle) -> bool {
        self.snapshot.iter().any(|(s, _)| *s == h)
    }

    fn refuse(&self, what: &str) -> anyhow::Error {
        anyhow!(
            "instance '{}' is an external token (pkcs11 provider): the harness {what} it only \
             with --allow-destructive",
            self.name
        )
    }

    /// The user PIN as it is now.
    fn current_pin(&self) -> Secret {
        match &self.changed_pin {
            Some(_) => Secret::File(self.pin_file.clone()),
            None => self.pin.clone(),
        }
    }

    /// Puts the vendor's PIN back after a change (see [`External::pin_record`]).
    fn restore_pin(&mut self) -> anyhow::Result<()> {
        let Some(changed) = self.changed_pin.clone() else {
            return Ok(());
        };
        let original = self
            .pin
            .resolve()
            .map_err(|e| anyhow!("the user PIN ({}): {e}", self.pin))?;
        self.session
            .set_pin(
                &AuthPin::from(changed),
                &AuthPin::from(original.expose_secret().to_string()),
            )
            .map_err(|e| {
                anyhow!(
                    "C_SetPIN back to the user PIN failed ({e}); the changed PIN is in {}",
                    self.pin_record.display()
                )
            })?;
        self.changed_pin = None;
        let _ = std::fs::remove_file(&self.pin_record);
        log_line(format!(
            "  token '{}': user PIN set back to the backend file's",
            self.token.label
        ));
        Ok(())
    }

    /// Destroys what the cell made and checks what was there before; the problems.
    fn clean_up(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        let token = format!("token '{}'", self.token.label);
        if let Err(e) = self.restore_pin() {
            problems.push(format!("{token}: {e:#}"));
        }
        for w in &self.wiped {
            log_line(format!(
                "  {token}: {w}, there before the cell, was destroyed by a wipe (--allow-destructive)"
            ));
        }
        // The signer may have logged the token out; objects must be visible again.
        if let Err(e) = login(&self.session, &self.current_pin()) {
            problems.push(format!("{token}: cannot log in to check it: {e:#}"));
            return problems;
        }
        let now = match self.session.find_objects(&[]) {
            Ok(h) => h,
            Err(e) => {
                problems.push(format!("{token}: C_FindObjects: {e}"));
                return problems;
            }
        };
        let mut destroyed = 0;
        for h in now.iter().filter(|h| !self.was_there(**h)) {
            let what = facts(&self.session, *h)
                .map(|f| f.to_string())
                .unwrap_or_else(|e| format!("object {h} ({e:#})"));
            match self.session.destroy_object(*h) {
                Ok(()) => {
                    destroyed += 1;
                    log_line(format!("  {token}: destroyed {what} (made by this cell)"));
                }
                Err(e) => problems.push(format!(
                    "{token}: could not destroy {what}, made by this cell: C_DestroyObject: {e}"
                )),
            }
        }
        for (h, before) in &self.snapshot {
            if !now.contains(h) {
                problems.push(format!("{token}: {before}, there before the cell, is gone"));
                continue;
            }
            match facts(&self.session, *h) {
                Ok(after) if after == *before => {}
                Ok(after) => problems.push(format!(
                    "{token}: {before}, there before the cell, changed: now {after}"
                )),
                Err(e) => problems.push(format!(
                    "{token}: {before}, there before the cell, cannot be read: {e:#}"
                )),
            }
        }
        log_line(format!(
            "  {token}: cell end: {destroyed} objects made by the cell destroyed, {} there before it checked, {} problems",
            self.snapshot.len(),
            problems.len()
        ));
        for p in &problems {
            log_line(format!("  {p}"));
        }
        problems
    }
}

impl Instance for External {
    fn signer_kind(&self, options: &SignerOptions<'_>) -> anyhow::Result<SignerKind> {
        Ok(SignerKind::Pkcs11(Pkcs11Config {
            lib_path: self.signer_module.clone(),
            slot: self.selector.clone(),
            user_pin: Some(self.current_pin()),
            login: true,
            force: options.pkcs11.and_then(|o| o.force).unwrap_or(false),
        }))
    }

    /// The key pairs made since the instance was (those there before are the vendor's,
    /// not the cell's: a case sees the token as if it had been empty).
    fn inventory(&mut self) -> anyhow::Result<Vec<KeyIdentifier>> {
        login(&self.session, &self.current_pin())?;
        let mut ids: Vec<KeyIdentifier> = token::pairs(&self.session)?
            .into_iter()
            .filter(|p| p.private.is_some() && !self.was_there(p.public))
            .map(|p| p.id)
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Allowed: destroys every object the user sees (the vendor's too: that is what
    /// `--allow-destructive` allows); the token itself is not initialised again.
    fn wipe(&mut self) -> anyhow::Result<()> {
        if !self.allow_destructive {
            return Err(self.refuse("wipes"));
        }
        login(&self.session, &self.current_pin())?;
        let all = self
            .session
            .find_objects(&[])
            .map_err(token::ck("C_FindObjects"))?;
        for h in all {
            let what = facts(&self.session, h);
            self.session
                .destroy_object(h)
                .map_err(token::ck("C_DestroyObject"))?;
            if let Some(at) = self.snapshot.iter().position(|(s, _)| *s == h) {
                let (_, before) = self.snapshot.remove(at);
                self.wiped.push(before);
            } else if let Ok(f) = what {
                log_line(format!("  wipe: destroyed {f} (made by this cell)"));
            }
        }
        // Handles of destroyed objects may be handed out again: nothing is "there
        // before" any more.
        self.wiped.extend(self.snapshot.drain(..).map(|(_, f)| f));
        log_line(format!(
            "  token '{}' wiped (--allow-destructive): {} objects there before the cell destroyed",
            self.token.label,
            self.wiped.len()
        ));
        Ok(())
    }

    /// Allowed: a new random user PIN (C_SetPIN), which the signer then reads from
    /// the instance's PIN file; the backend file's PIN is set back when the cell ends.
    fn change_credentials(&mut self) -> anyhow::Result<()> {
        if !self.allow_destructive {
            return Err(self.refuse("changes the PIN of"));
        }
        let info = self
            .p11
            .get_token_info(self.token.slot)
            .map_err(token::ck("C_GetTokenInfo"))?;
        let length = info.min_pin_length().clamp(8, 32).max(8);
        let new = super::random_hex(length.div_ceil(2));
        let old = match &self.changed_pin {
            Some(p) => p.clone(),
            None => self
                .pin
                .resolve()
                .map_err(|e| anyhow!("the user PIN ({}): {e}", self.pin))?
                .expose_secret()
                .to_string(),
        };
        // Recorded first: should the cell die right after C_SetPIN, the next cell on
        // this token finds the PIN here and sets the vendor's back.
        write_secret(&self.pin_record, &new)?;
        if let Err(e) = write_secret(&self.pin_file, &new) {
            let _ = std::fs::remove_file(&self.pin_record);
            return Err(e);
        }
        if let Err(e) = self
            .session
            .set_pin(&AuthPin::from(old), &AuthPin::from(new.clone()))
        {
            // The PIN is as it was: so are the record and the signer's file.
            match &self.changed_pin {
                None => {
                    let _ = std::fs::remove_file(&self.pin_record);
                }
                Some(p) => {
                    let _ = write_secret(&self.pin_record, p);
                    let _ = write_secret(&self.pin_file, p);
                }
            }
            bail!("C_SetPIN: {e}");
        }
        self.changed_pin = Some(new);
        log_line(format!(
            "  token '{}': user PIN changed (--allow-destructive); set back when the cell ends",
            self.token.label
        ));
        Ok(())
    }

    /// Allowed, for a key pair the cell made: a new pair under the same CKA_ID and
    /// labels. A pair that was there before the cell is never replaced.
    fn replace_key(&mut self, id: &KeyIdentifier, alg: Algorithm) -> anyhow::Result<()> {
        if !self.allow_destructive {
            return Err(self.refuse("plants impostor keys on"));
        }
        login(&self.session, &self.current_pin())?;
        let pair = token::pairs(&self.session)?
            .into_iter()
            .find(|p| p.id == *id)
            .ok_or_else(|| anyhow!("no key pair {id} on token '{}'", self.token.label))?;
        if self.was_there(pair.public) {
            bail!("key pair {id} was on the token before the cell; the harness never replaces it");
        }
        token::replace_pair(&self.session, &self.token.label, id, alg)
    }

    fn start_server(&mut self) -> anyhow::Result<()> {
        bail!("instance '{}' has no server process", self.name)
    }

    fn properties(&self) -> Vec<(String, String)> {
        let mut props = vec![
            ("token_label".to_string(), self.token.label.clone()),
            ("token_serial".to_string(), self.token.serial.clone()),
            (
                "objects_before".to_string(),
                self.snapshot.len().to_string(),
            ),
        ];
        if let Some(problems) = &self.finished {
            props.push((
                "cleanup".to_string(),
                if problems.is_empty() {
                    "token left as found".to_string()
                } else {
                    problems.join("; ")
                },
            ));
        }
        props
    }

    fn probe(&mut self) -> anyhow::Result<Vec<Observed>> {
        token::probe_slot(&self.p11, self.token.slot)
    }

    fn describe(&mut self) -> anyhow::Result<super::Description> {
        token::describe_slot(&self.p11, &self.real_module, self.token.slot)
    }

    fn finish(&mut self) -> Vec<String> {
        match &self.finished {
            Some(p) => p.clone(),
            None => {
                let problems = self.clean_up();
                self.finished = Some(problems.clone());
                problems
            }
        }
    }
}

impl Drop for External {
    /// A cell that ends without [`Instance::finish`] (an early error) cleans up too.
    fn drop(&mut self) {
        if self.finished.is_none() {
            self.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::backend::Backend;

    fn load(provider: &str) -> Result<Backend, crate::model::suite::SuiteError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b.yaml");
        std::fs::write(
            &p,
            format!(
                "backend: x\nabout: x\nprovider:\n  pkcs11:\n{provider}capabilities: [pkcs11]\n"
            ),
        )
        .unwrap();
        Backend::load(&p)
    }

    #[test]
    fn settings_load() {
        let b = load(
            "    module: /m.so\n    slot: { label: vendor }\n    user_pin: env:PIN\n    env: { VENDOR_CONF: /etc/v.conf }\n    second_slot: { index: 1 }\n",
        )
        .unwrap();
        assert_eq!(b.provider_name(), "pkcs11");
        let text = format!("{:?}", b.provider);
        assert!(
            text.contains("VENDOR_CONF") && text.contains("Index(1)"),
            "{text}"
        );
    }

    #[rstest::rstest]
    #[case::id("{ id: 7 }")]
    #[case::index("{ index: 0 }")]
    #[case::label("{ label: 'a token' }")]
    fn slot_shapes(#[case] slot: &str) {
        load(&format!(
            "    module: /m.so\n    slot: {slot}\n    user_pin: file:/run/pin\n"
        ))
        .unwrap();
    }

    /// A PIN written in the file is refused where it stands, with its line.
    #[rstest::rstest]
    #[case::string("\"1234\"")]
    #[case::integer("1234")]
    #[case::bare("secret")]
    fn literal_pin_is_refused_with_its_place(#[case] pin: &str) {
        let e = load(&format!(
            "    module: /m.so\n    slot: {{ id: 0 }}\n    user_pin: {pin}\n"
        ))
        .unwrap_err();
        assert_eq!(e.line, 7, "{e}");
        assert!(e.column > 0, "{e}");
        assert!(e.message.contains("env:NAME"), "{e}");
        assert!(!e.to_string().contains(pin.trim_matches('"')), "{e}");
    }

    #[rstest::rstest]
    #[case::two_ways("{ id: 1, label: x }")]
    #[case::unknown_way("{ serial: '1234' }")]
    #[case::bare_number("3")]
    #[case::negative_index("{ index: -1 }")]
    fn bad_slot_shape_is_refused(#[case] slot: &str) {
        let e = load(&format!(
            "    module: /m.so\n    slot: {slot}\n    user_pin: env:PIN\n"
        ))
        .unwrap_err();
        assert!(e.line >= 6, "{e}");
    }

    #[rstest::rstest]
    #[case::no_settings("provider: pkcs11\ncapabilities: []\n", "needs settings")]
    #[case::same_slot(
        "provider: { pkcs11: { module: /m.so, slot: { id: 1 }, second_slot: { id: 1 }, user_pin: env:P } }\ncapabilities: []\n",
        "same token"
    )]
    #[case::kmip(
        "provider: { pkcs11: { module: /m.so, slot: { id: 1 }, user_pin: env:P } }\ncapabilities: [kmip]\n",
        "'kmip' is not something the pkcs11 provider can give"
    )]
    fn refused(#[case] rest: &str, #[case] said: &str) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b.yaml");
        std::fs::write(&p, format!("backend: x\nabout: x\n{rest}")).unwrap();
        let e = Backend::load(&p).unwrap_err();
        assert!(e.message.contains(said), "{e}");
    }

    #[test]
    fn lock_files_differ_per_token_and_module() {
        let t = |label: &str| FoundToken {
            slot: Slot::try_from(1u64).unwrap(),
            label: label.into(),
            serial: "1".into(),
        };
        let m = Path::new("/m.so");
        assert_eq!(lock_path(m, &t("a")), lock_path(m, &t("a")));
        assert_ne!(lock_path(m, &t("a")), lock_path(m, &t("b")));
        assert_ne!(
            lock_path(m, &t("a")),
            lock_path(Path::new("/n.so"), &t("a"))
        );
    }
}
