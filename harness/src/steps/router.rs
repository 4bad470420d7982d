//! Steps on the signer router: `restart`, `keymap`, `info`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

use super::{log, CellContext, CheckContext, CheckError, Needs, StepError, StepKind};
use crate::backends::shim::ShimSpec;
use crate::model::schema::{InstanceName, KeyName, MapOf, SignerName};
use crate::model::suite::{check_instance, Capability, SignerSpec, SignersSpec};

/// Drop the signer router (closing its sessions and the key map) and start a new one,
/// after changing the signer configuration and the backends, in this order: signers,
/// wipe, change_pin, repoint, swap, rename, default_signer/one_off_signer. The key map
/// and the backends' keys stay. `restart: {}` restarts with nothing changed. Signers
/// bind again on first use.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(transform = crate::model::schema::default_signer_with_several)]
pub struct Restart {
    /// A new list of signers, replacing the configured ones, checked like a signers:
    /// block's list (with this restart's default_signer and one_off_signer). The roles
    /// go back to their defaults unless this restart gives them; with several signers,
    /// default_signer is required.
    #[serde(default)]
    #[schemars(length(min = 1))]
    pub signers: Option<Vec<SignerSpec>>,
    /// Old signer name -> new name. Keys stay with the signer id, so they follow the
    /// backend, not the name.
    #[serde(default)]
    #[schemars(with = "MapOf<SignerName, SignerName>")]
    pub rename: BTreeMap<String, String>,
    /// The new default signer (a name after the renames). Required with a new signers
    /// list of several.
    #[serde(default)]
    #[schemars(with = "Option<SignerName>")]
    pub default_signer: Option<String>,
    /// The new one-off signer (a name after the renames).
    #[serde(default)]
    #[schemars(with = "Option<SignerName>")]
    pub one_off_signer: Option<String>,
    /// Signer (old name) -> the backend instance it talks to from now on (a software
    /// signer becomes one on that instance).
    #[serde(default)]
    #[schemars(with = "MapOf<SignerName, InstanceName>")]
    pub repoint: BTreeMap<String, String>,
    /// Two signers (old names) that exchange their backends.
    #[serde(default)]
    #[schemars(with = "Vec<SignerName>", length(min = 2, max = 2), extend("uniqueItems" = true))]
    pub swap: Vec<String>,
    /// Instances emptied and initialised again, with the same label and PIN: the
    /// signer still reaches them, but their keys (identity keys too) are gone.
    #[serde(default)]
    #[schemars(with = "Vec<InstanceName>")]
    pub wipe: Vec<String>,
    /// Instances whose user PIN is changed (C_SetPIN); the signer configuration
    /// follows. The case requires the `credentials` capability.
    #[serde(default)]
    #[schemars(with = "Vec<InstanceName>")]
    pub change_pin: Vec<String>,
    /// New PKCS#11 shim settings from now on, replacing the case's (the backend
    /// provider's still come first); the running shim reads them on its next call,
    /// and rules count calls from then. The case runs through the shim from the start
    /// and requires `pkcs11-shim`.
    #[serde(default)]
    pub shim: Option<ShimSpec>,
}

impl StepKind for Restart {
    fn keyword(&self) -> &'static str {
        "restart"
    }

    fn check(&self, ctx: &mut CheckContext) -> Result<(), CheckError> {
        if let Some(spec) = &self.shim {
            spec.check().map_err(|m| format!("restart: shim: {m}"))?;
            ctx.needs_shim = true;
        }
        if self.one_off_signer.is_some() {
            ctx.changes_one_off_signer = true;
        }
        for inst in self
            .repoint
            .values()
            .chain(&self.wipe)
            .chain(&self.change_pin)
        {
            check_instance(inst)?;
            ctx.used_instances.insert(inst.clone());
        }
        for s in self.signers.iter().flatten() {
            if let Some(on) = &s.on {
                ctx.used_instances.insert(on.clone());
            }
        }
        if let Some(list) = &self.signers {
            let spec = SignersSpec {
                default_signer: self.default_signer.clone(),
                one_off_signer: self.one_off_signer.clone(),
                signers: list.clone(),
            };
            spec.check()?;
            ctx.signer_names = Some(list.iter().map(|s| s.name.clone()).collect());
        }
        for old in self
            .rename
            .keys()
            .chain(self.repoint.keys())
            .chain(self.swap.iter())
        {
            ctx.signer(old)?;
        }
        if !self.swap.is_empty() && (self.swap.len() != 2 || self.swap[0] == self.swap[1]) {
            return Err("swap names exactly two different signers".into());
        }
        for (old, new) in &self.rename {
            if let Some(n) = ctx.signer_names.iter_mut().flatten().find(|n| *n == old) {
                *n = new.clone();
            }
        }
        for role in [&self.default_signer, &self.one_off_signer]
            .into_iter()
            .flatten()
        {
            ctx.signer(role)?;
        }
        Ok(())
    }

    fn requires(&self, needs: &mut Needs) {
        // One capability per restart, the first that applies (as the loader has always
        // done).
        let new = self.signers.iter().flatten();
        for inst in &self.wipe {
            needs.destroys(format!("wipes instance '{inst}'"));
        }
        for inst in &self.change_pin {
            needs.destroys(format!("changes the PIN of instance '{inst}'"));
        }
        if !self.change_pin.is_empty() {
            needs.add(Capability::Credentials);
        } else if new.clone().any(|s| s.kmip.is_some()) {
            needs.add(Capability::Kmip);
        } else if new.clone().any(|s| s.pkcs11.is_some()) {
            needs.add(Capability::Pkcs11);
        }
    }

    fn run(&self, cell: &mut CellContext) -> Result<(), StepError> {
        // The old signer goes first: it closes its sessions and the key map (a signer
        // process is asked to shut down, and killed after a grace period).
        cell.signer = None;
        if let Some(new) = &self.shim {
            let spec = match &cell.backend_shim {
                Some(b) => b.merged(new),
                None => new.clone(),
            };
            cell.instances
                .update_shim(&spec)
                .map_err(StepError::harness)?;
        }
        if let Some(list) = &self.signers {
            cell.spec.signers = list.clone();
            cell.spec.default_signer = None;
            cell.spec.one_off_signer = None;
            log(format!(
                "  signers now: {}",
                list.iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        for inst in &self.wipe {
            cell.instances.wipe(inst).map_err(StepError::harness)?;
            log(format!("  wiped instance '{inst}'"));
        }
        for inst in &self.change_pin {
            cell.instances
                .change_pin(inst)
                .map_err(StepError::harness)?;
            log(format!("  changed the user PIN of instance '{inst}'"));
        }
        for (signer, inst) in &self.repoint {
            let s = cell.signer_spec(signer)?;
            s.on = Some(inst.clone());
            s.software = false;
            log(format!("  signer '{signer}' now on instance '{inst}'"));
        }
        if let [a, b] = self.swap.as_slice() {
            let ta = cell.signer_spec(a)?.clone();
            let tb = cell.signer_spec(b)?.clone();
            let sa = cell.signer_spec(a)?;
            (sa.on, sa.software) = (tb.on, tb.software);
            let sb = cell.signer_spec(b)?;
            (sb.on, sb.software) = (ta.on, ta.software);
            log(format!("  signers '{a}' and '{b}' swapped backends"));
        }
        for (old, new) in &self.rename {
            cell.signer_spec(old)?.name = new.clone();
            for role in [&mut cell.spec.default_signer, &mut cell.spec.one_off_signer] {
                if role.as_deref() == Some(old.as_str()) {
                    *role = Some(new.clone());
                }
            }
            log(format!("  signer '{old}' renamed '{new}'"));
        }
        if let Some(d) = &self.default_signer {
            cell.spec.default_signer = Some(d.clone());
        }
        if let Some(o) = &self.one_off_signer {
            cell.spec.one_off_signer = Some(o.clone());
        }
        cell.instances
            .renew_signer_connection()
            .map_err(StepError::harness)?;
        cell.start().map_err(StepError::harness)
    }
}

/// Check what the router's key map holds: keys it has, keys it no longer has, and the
/// configured signer that owns a key now.
#[derive(Clone, Debug, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Keymap {
    /// Keys the key map must hold.
    #[serde(default)]
    #[schemars(with = "Vec<KeyName>")]
    pub has: Vec<String>,
    /// Keys the key map must not hold (after destroy_key).
    #[serde(default)]
    #[schemars(with = "Vec<KeyName>")]
    pub lacks: Vec<String>,
    /// Key -> the configured signer that must own it now (the one bound to the key's
    /// signer id).
    #[serde(default)]
    #[schemars(with = "MapOf<KeyName, SignerName>")]
    pub owner: BTreeMap<String, String>,
}

impl StepKind for Keymap {
    fn keyword(&self) -> &'static str {
        "keymap"
    }

    fn check(&self, ctx: &mut CheckContext) -> Result<(), CheckError> {
        for n in self.has.iter().chain(&self.lacks).chain(self.owner.keys()) {
            if !ctx.keys.contains(n) {
                return Err(CheckContext::unknown("key", n, &ctx.keys));
            }
        }
        for s in self.owner.values() {
            ctx.signer(s)?;
        }
        Ok(())
    }

    fn run(&self, cell: &mut CellContext) -> Result<(), StepError> {
        let under_test = cell.signer()?;
        for name in &self.has {
            let id = cell.key_id(name)?;
            if !under_test.holds(&id)? {
                return Err(StepError::Failed(format!(
                    "the key map has no key '{name}' ({id})"
                )));
            }
        }
        for name in &self.lacks {
            let id = cell.key_id(name)?;
            if under_test.holds(&id)? {
                return Err(StepError::Failed(format!(
                    "the key map still has key '{name}' ({id})"
                )));
            }
        }
        for (name, signer) in &self.owner {
            let id = cell.key_id(name)?;
            let owner = under_test
                .owner_name(&id)?
                .map_err(|e| StepError::Failed(format!("owner of '{name}': {e}")))?;
            if owner != *signer {
                return Err(StepError::Failed(format!(
                    "key '{name}' is owned by '{owner}', expected '{signer}'"
                )));
            }
            log(format!("  key '{name}' is owned by '{owner}'"));
        }
        Ok(())
    }
}

/// Check what a configured signer says about itself: every listed detail must have
/// exactly that value (e.g. `tls_version: "TLS 1.3"`). These details also go to the
/// report's properties. No expect.
#[derive(Clone, Debug, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Info {
    /// A configured signer; default: the default signer.
    #[serde(default)]
    #[schemars(with = "Option<SignerName>")]
    pub signer: Option<String>,
    /// Detail name -> the exact value it must have. At least one.
    #[schemars(extend("minProperties" = 1))]
    pub has: BTreeMap<String, String>,
}

impl StepKind for Info {
    fn keyword(&self) -> &'static str {
        "info"
    }

    fn check(&self, ctx: &mut CheckContext) -> Result<(), CheckError> {
        if let Some(name) = &self.signer {
            ctx.signer(name)?;
        }
        if self.has.is_empty() {
            return Err("info: has needs at least one detail".into());
        }
        Ok(())
    }

    fn run(&self, cell: &mut CellContext) -> Result<(), StepError> {
        let name = self
            .signer
            .clone()
            .unwrap_or_else(|| cell.default_signer_name());
        let info = cell
            .signer()?
            .info(&name)?
            .map_err(|e| StepError::Failed(format!("signer '{name}' info: {e}")))?;
        for (k, want) in &self.has {
            match info.details.iter().find(|(dk, _)| dk == k) {
                Some((_, v)) if v == want => log(format!("  {name}: {k} = {v}")),
                Some((_, v)) => {
                    return Err(StepError::Failed(format!(
                        "signer '{name}': {k} is '{v}', expected '{want}'"
                    )))
                }
                None => {
                    let known: Vec<&str> = info.details.iter().map(|(k, _)| k.as_str()).collect();
                    return Err(StepError::Failed(format!(
                        "signer '{name}' says nothing about '{k}' (it says: {})",
                        known.join(", ")
                    )));
                }
            }
        }
        Ok(())
    }
}
