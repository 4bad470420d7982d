//! Steps that look at or act on the backends behind the signers, through the
//! harness's own sessions and processes: `inventory`, `replace_identity_key`,
//! `traffic`, `server`, `proxy`.

use schemars::JsonSchema;
use serde::Deserialize;

use super::{log, CellContext, CheckContext, CheckError, Needs, StepError, StepKind};
use crate::backends::proxy::Fault;
use crate::model::schema::{InstanceName, InventoryOf, KeyOrOneOffName, NewName, SignerName};
use crate::model::suite::{check_instance, Capability};

/// List the private keys a backend instance holds, through a session of the harness's
/// own (not the signer's), and check it. Identity keys are listed too.
#[derive(Clone, Debug, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Inventory {
    /// A backend instance, or `software`: the cell's state keys directory, used by
    /// `software: true` signers and the OpenSSL one-off signer the router adds.
    #[schemars(with = "InventoryOf")]
    pub of: String,
    /// Keys (or one-off signatures' keys) the instance must hold.
    #[serde(default)]
    #[schemars(with = "Vec<KeyOrOneOffName>")]
    pub has: Vec<String>,
    /// Keys (or one-off signatures' keys) the instance must not hold.
    #[serde(default)]
    #[schemars(with = "Vec<KeyOrOneOffName>")]
    pub lacks: Vec<String>,
    /// Remember this inventory under a name, for a later `same_as`.
    #[serde(default, rename = "as")]
    #[schemars(with = "Option<NewName>")]
    pub name: Option<String>,
    /// The inventory must equal the one remembered earlier under this name.
    #[serde(default)]
    pub same_as: Option<String>,
}

impl StepKind for Inventory {
    fn keyword(&self) -> &'static str {
        "inventory"
    }

    fn check(&self, ctx: &mut CheckContext) -> Result<(), CheckError> {
        if self.of != "software" {
            check_instance(&self.of)?;
            ctx.used_instances.insert(self.of.clone());
        }
        for n in self.has.iter().chain(&self.lacks) {
            if !ctx.keys.contains(n) && !ctx.one_off.contains(n) {
                let mut known = ctx.keys.clone();
                known.extend(ctx.one_off.iter().cloned());
                return Err(CheckContext::unknown("key or one-off signature", n, &known));
            }
        }
        if let Some(s) = &self.same_as {
            if !ctx.inventories.contains(s) {
                return Err(CheckContext::unknown("inventory", s, &ctx.inventories));
            }
        }
        if let Some(n) = &self.name {
            if !ctx.inventories.insert(n.clone()) {
                return Err(format!("inventory name '{n}' is already bound").into());
            }
        }
        Ok(())
    }

    fn run(&self, cell: &mut CellContext) -> Result<(), StepError> {
        let of = &self.of;
        let found = cell.instances.inventory(of).map_err(StepError::harness)?;
        log(format!("  inventory of '{of}': {} key pairs", found.len()));
        for name in &self.has {
            let id = cell.key_id(name)?;
            if !found.contains(&id) {
                return Err(StepError::Failed(format!(
                    "'{of}' has no key pair '{name}' ({id})"
                )));
            }
        }
        for name in &self.lacks {
            let id = cell.key_id(name)?;
            if found.contains(&id) {
                return Err(StepError::Failed(format!(
                    "'{of}' still holds key pair '{name}' ({id})"
                )));
            }
        }
        if let Some(before) = &self.same_as {
            let earlier = cell
                .bindings
                .inventories
                .get(before)
                .ok_or_else(|| StepError::Harness(format!("unknown inventory '{before}'")))?;
            if *earlier != found {
                let added: Vec<String> = found
                    .iter()
                    .filter(|k| !earlier.contains(k))
                    .map(|k| k.to_string())
                    .collect();
                let removed: Vec<String> = earlier
                    .iter()
                    .filter(|k| !found.contains(k))
                    .map(|k| k.to_string())
                    .collect();
                return Err(StepError::Failed(format!(
                    "inventory of '{of}' changed since '{before}': added [{}], removed [{}]",
                    added.join(", "),
                    removed.join(", ")
                )));
            }
        }
        if let Some(n) = &self.name {
            cell.bindings.inventories.insert(n.clone(), found);
        }
        Ok(())
    }
}

/// Replace a signer's identity key in its backend by a different key pair under the
/// same handle (an impostor), through the harness's own session. The case requires
/// `replace-keys`. No expect.
#[derive(Clone, Debug, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplaceIdentityKey {
    /// The configured signer whose identity key is replaced; it must have bound
    /// (signed or created a key) before.
    #[schemars(with = "SignerName")]
    pub signer: String,
}

impl StepKind for ReplaceIdentityKey {
    fn keyword(&self) -> &'static str {
        "replace_identity_key"
    }

    fn check(&self, ctx: &mut CheckContext) -> Result<(), CheckError> {
        ctx.signer(&self.signer)
    }

    fn requires(&self, needs: &mut Needs) {
        needs.add(Capability::ReplaceKeys);
        needs.destroys("plants an impostor key".into());
    }

    fn run(&self, cell: &mut CellContext) -> Result<(), StepError> {
        let signer = &self.signer;
        let (identity_key, identity_alg) = cell.signer()?.identity(signer)?;
        let instance = cell
            .spec
            .signers
            .iter()
            .find(|s| s.name == *signer)
            .and_then(|s| s.on.clone())
            .unwrap_or_else(|| "software".into());
        cell.instances
            .replace_key(&instance, &identity_key, identity_alg)
            .map_err(StepError::harness)?;
        log(format!(
            "  identity key {} of signer '{signer}' replaced by other key material",
            identity_key
        ));
        Ok(())
    }
}

/// The loader's check of the steps that need the proxy in front of instance `of`.
fn check_proxied(keyword: &str, of: &str, ctx: &CheckContext) -> Result<(), CheckError> {
    if ctx.instances.get(of).is_none_or(|i| i.proxy.is_none()) {
        return Err(format!(
            "{keyword}: instance '{of}' has no proxy (give it `proxy: none` under instances:)"
        )
        .into());
    }
    Ok(())
}

/// Check what went through the TCP proxy in front of an instance's server (`proxy:`
/// under `instances:`). Without counts, the step only logs them. The case requires
/// `kmip`. No expect.
#[derive(Clone, Debug, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Traffic {
    /// An instance with a proxy.
    #[schemars(with = "InstanceName")]
    pub of: String,
    /// TLS application-data records the client sent; 0 after a refused handshake shows
    /// that no KMIP request left the signer.
    #[serde(default)]
    pub client_application_records: Option<u64>,
    /// Connections the proxy accepted.
    #[serde(default)]
    pub connections: Option<u64>,
}

impl StepKind for Traffic {
    fn keyword(&self) -> &'static str {
        "traffic"
    }

    fn check(&self, ctx: &mut CheckContext) -> Result<(), CheckError> {
        check_proxied(self.keyword(), &self.of, ctx)
    }

    fn requires(&self, needs: &mut Needs) {
        needs.add(Capability::Kmip);
    }

    fn run(&self, cell: &mut CellContext) -> Result<(), StepError> {
        let of = &self.of;
        let stats = cell.instances.traffic(of).map_err(StepError::harness)?;
        log(format!("  proxy of '{of}': {stats:?}"));
        if let Some(want) = self.client_application_records {
            if stats.client_application_records != want {
                return Err(StepError::Failed(format!(
                    "the client sent {} TLS application-data record(s) to instance '{of}', expected {want}",
                    stats.client_application_records
                )));
            }
        }
        if let Some(want) = self.connections {
            if stats.connections != want {
                return Err(StepError::Failed(format!(
                    "{} connection(s) reached instance '{of}', expected {want}",
                    stats.connections
                )));
            }
        }
        Ok(())
    }
}

/// Kill an instance's server process (SIGKILL), or start it again on the port it had,
/// with its data (KMIP backends; the case requires `kmip`). No expect.
#[derive(Clone, Debug, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Server {
    #[schemars(with = "InstanceName")]
    pub of: String,
    pub action: ServerAction,
}

/// What a `server` step does to the instance's server process.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ServerAction {
    /// SIGKILL: the process dies without a word to its clients.
    Kill,
    /// Start it again on the port it had, with its data.
    Start,
}

impl StepKind for Server {
    fn keyword(&self) -> &'static str {
        "server"
    }

    fn check(&self, ctx: &mut CheckContext) -> Result<(), CheckError> {
        check_instance(&self.of)?;
        ctx.used_instances.insert(self.of.clone());
        Ok(())
    }

    fn requires(&self, needs: &mut Needs) {
        needs.add(Capability::Kmip);
    }

    fn run(&self, cell: &mut CellContext) -> Result<(), StepError> {
        match self.action {
            ServerAction::Kill => cell.instances.kill_server(&self.of),
            ServerAction::Start => cell.instances.start_server(&self.of),
        }
        .map_err(StepError::harness)
    }
}

/// Change what the proxy in front of an instance (`proxy:` under `instances:`) does to
/// connections opened from now on. The case requires `kmip`. No expect.
#[derive(Clone, Debug, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Proxy {
    #[schemars(with = "InstanceName")]
    pub of: String,
    pub fault: Fault,
}

impl StepKind for Proxy {
    fn keyword(&self) -> &'static str {
        "proxy"
    }

    fn check(&self, ctx: &mut CheckContext) -> Result<(), CheckError> {
        check_proxied(self.keyword(), &self.of, ctx)
    }

    fn requires(&self, needs: &mut Needs) {
        needs.add(Capability::Kmip);
    }

    fn run(&self, cell: &mut CellContext) -> Result<(), StepError> {
        cell.instances
            .set_proxy_fault(&self.of, &self.fault)
            .map_err(StepError::harness)
    }
}
