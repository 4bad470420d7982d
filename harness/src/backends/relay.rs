//! Provider `relay`: our KMIP-to-PKCS#11 relay (`kmip2pkcs11`, built beside this
//! program) on a fresh SoftHSMv2 token per instance, TLS 1.3 by default, with
//! generated certificates, on an ephemeral loopback port, reached through the KMIP
//! signer. The harness administers the token behind it directly (wipe, PIN change,
//! impostor keys), restarting the relay where it must re-read its token.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{anyhow, Context};
use hsm_signers::config::SignerKind;
use hsm_signers::{Algorithm, KeyIdentifier};
use serde::Deserialize;

use super::container::{self, p11_kit_client, ContainerLaunch};
use super::pki::{self, Pki};
use super::server::{
    free_port, inventory_endpoint, kmip_config, with_options, with_proxy, Runtime, Server,
    ServerSlot,
};
use super::shim::{self, ShimSpec};
use super::token::{softhsm_module, Module, Token};
use super::{log_line, CellBackend, Instance, Provider, SignerOptions};
use crate::model::backend::Placement;
use crate::model::suite::{Capability, InstanceSpec, TlsVersion};
use crate::run::lifeline;

/// Our KMIP relay kmip2pkcs11 (built beside hsm-harness) on a fresh SoftHSMv2 token per
/// instance, TLS 1.3, through the KMIP signer: `provider: { relay: { module, shim,
/// mimic } }`.
#[derive(Clone, Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Relay {
    /// The PKCS#11 module behind the relay; default: SoftHSMv2 where Debian puts it.
    #[serde(default)]
    pub module: Option<PathBuf>,
    /// As for `softhsm`: the relay loads the shim in front of the module.
    #[serde(default)]
    pub shim: Option<ShimSpec>,
    /// Make the relay behave like another KMIP server (its `[testing] mimic`); its
    /// signer then logs in as that server wants and sets `force`.
    #[serde(default)]
    pub mimic: Option<Mimic>,
}

/// A KMIP server the relay can stand in for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
pub enum Mimic {
    /// The seed-003 relay as released (cascade-hsm-bridge 0.1.0-alpha): Discover
    /// Versions, Query, Create Key Pair, Activate, Get, Sign and Modify Attribute only;
    /// General Failure on attributes it does not parse; fixed key formats; username =
    /// token label, password = user PIN.
    #[serde(rename = "seed-003")]
    Seed003,
}

impl Mimic {
    /// The value of the relay's `[testing] mimic`.
    pub fn name(self) -> &'static str {
        match self {
            Mimic::Seed003 => "seed-003",
        }
    }
}

/// The variable that names the relay binary, where it is not beside this program.
pub const RELAY_ENV: &str = "HSM_HARNESS_KMIP2PKCS11";

/// The relay binary: the file [`RELAY_ENV`] names; else beside this program (cargo
/// builds all of a workspace's binaries into one directory, and `cargo install` puts
/// them in one too); else on PATH.
pub fn relay_binary() -> Result<PathBuf, String> {
    super::companion::find(
        "kmip2pkcs11",
        RELAY_ENV,
        true,
        "cargo install --path relay, or cargo build -p kmip-relay",
    )
}

impl Provider for Relay {
    /// A token and the relay in front.
    fn start_cost(&self) -> u32 {
        2
    }

    fn name(&self) -> &'static str {
        "relay"
    }

    fn check(&self) -> Result<(), String> {
        match &self.shim {
            Some(s) => s.check().map_err(|m| format!("provider shim: {m}")),
            None => Ok(()),
        }
    }

    fn signer_type(&self) -> super::SignerType {
        super::SignerType::Kmip
    }

    fn administers(&self) -> &'static [Capability] {
        &[
            Capability::Credentials,
            Capability::ReplaceKeys,
            Capability::Pkcs11Shim,
            Capability::Kmip,
            Capability::KmipWithhold,
        ]
    }

    fn unavailable_reason(&self, placement: Placement) -> Option<String> {
        let parts = match placement {
            Placement::Local => softhsm_module(self.module.as_deref()).and_then(|_| relay_binary()),
            Placement::Container => p11_kit_client(),
        };
        parts
            .and_then(|_| {
                self.shim
                    .as_ref()
                    .map_or(Ok(()), |_| shim::library().map(drop))
            })
            .err()
    }

    fn shim(&self) -> Option<&ShimSpec> {
        self.shim.as_ref()
    }

    /// The `relay` image (our kmip2pkcs11 beside SoftHSMv2), one container per
    /// instance, its token served by the cell's `softhsm2` container.
    fn container_twin(&self) -> bool {
        true
    }

    fn open(&self, workdir: &Path, runtime: &Runtime) -> anyhow::Result<Box<dyn CellBackend>> {
        Ok(Box::new(RelayCell {
            module: Module::prepare(self.module.as_deref(), workdir, runtime)?,
            mimic: self.mimic,
            runtime: runtime.clone(),
        }))
    }
}

struct RelayCell {
    module: Module,
    mimic: Option<Mimic>,
    runtime: Runtime,
}

impl CellBackend for RelayCell {
    fn make(
        &mut self,
        name: &str,
        dir: &Path,
        spec: &InstanceSpec,
    ) -> anyhow::Result<Box<dyn Instance>> {
        let token = self.module.new_token(name)?;
        let pki = pki::generate(&dir.join("pki"), pki::flaw_of(spec))?;
        let mut relay = RelayInstance {
            name: name.to_string(),
            token,
            dir: dir.to_path_buf(),
            pki,
            spec: spec.clone(),
            module: self.module.signer_module(),
            shim: self.module.shim_library().map(Path::to_path_buf),
            mimic: self.mimic,
            server: ServerSlot::default(),
            runtime: self.runtime.clone(),
        };
        relay.server = ServerSlot::running(with_proxy(relay.start(0)?, spec)?);
        Ok(Box::new(relay))
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

/// The relay's log level: warnings, and a line per operation it ran
/// (`kmip2pkcs11::requests`, e.g. "RNG Retrieve succeeded"), which the `random` step
/// takes as the relay's evidence that its token made random bytes; but not Sign's
/// (`kmip2pkcs11::requests::sign`), the most frequent, whose line would cost each
/// sign about a tenth of its time.
const RELAY_LOG_LEVEL: &str = "warn,kmip2pkcs11::requests=debug,kmip2pkcs11::requests::sign=info";

/// What the relay logs, at [`RELAY_LOG_LEVEL`], when it has answered an RNG Retrieve.
pub const RNG_RETRIEVE_LOGGED: &str = "kmip2pkcs11::requests: RNG Retrieve succeeded";

/// An instance: a token and the relay serving it.
struct RelayInstance {
    name: String,
    token: Token,
    dir: PathBuf,
    pki: Pki,
    spec: InstanceSpec,
    /// The module the relay loads (the shim, when the cell has one).
    module: PathBuf,
    /// The shim library, which a relay's container needs mounted.
    shim: Option<PathBuf>,
    mimic: Option<Mimic>,
    server: ServerSlot,
    runtime: Runtime,
}

fn version(v: TlsVersion) -> &'static str {
    match v {
        TlsVersion::Tls12 => "1.2",
        TlsVersion::Tls13 => "1.3",
    }
}

impl RelayInstance {
    /// The file the relay writes once it listens.
    fn ready_file(&self) -> PathBuf {
        self.dir.join("relay.ready")
    }

    /// Where a local relay's stderr goes.
    fn stderr_file(&self) -> PathBuf {
        self.dir.join("relay.stderr")
    }

    /// The port the relay says it listens on, once it says so.
    fn said_port(&self) -> Option<u16> {
        let text = std::fs::read_to_string(self.ready_file()).ok()?;
        let addr = text.split_whitespace().next()?;
        addr.rsplit(':').next()?.parse().ok()
    }

    /// Starts `kmip2pkcs11` on the token and waits until it says where it listens: a
    /// local process on `port` (0: any), or a container of the `relay` image published
    /// on `port` (0: a free one).
    fn start(&self, port: u16) -> anyhow::Result<Server> {
        let dir = &self.dir;
        let pki = &self.pki;
        let token = &self.token;
        let tls = self.spec.tls.clone().unwrap_or_default();
        let (min, max) = match tls.versions.as_deref() {
            None => (TlsVersion::Tls13, TlsVersion::Tls13),
            Some(v) => (
                v.iter().min().copied().unwrap_or(TlsVersion::Tls13),
                v.iter().max().copied().unwrap_or(TlsVersion::Tls13),
            ),
        };
        let client_ca = if tls.require_client_cert {
            format!("client_ca = \"{}\"\n", pki.ca_cert.display())
        } else {
            String::new()
        };
        // In a container the relay listens on the container's own addresses; only
        // 127.0.0.1 on the host reaches them.
        let (listen, host_port) = match self.runtime {
            Runtime::Local => (format!("127.0.0.1:{port}"), None),
            Runtime::Container(_) => (
                format!("0.0.0.0:{}", container::SERVER_PORT),
                Some(if port == 0 { free_port()? } else { port }),
            ),
        };
        let mut testing = String::new();
        if !self.spec.withhold.is_empty() {
            let names: Vec<String> = self
                .spec
                .withhold
                .iter()
                .map(|o| format!("{o:?}"))
                .collect();
            testing.push_str(&format!("withhold_operations = [{}]\n", names.join(", ")));
        }
        if let Some(m) = self.mimic {
            testing.push_str(&format!("mimic = \"{}\"\n", m.name()));
        }
        if !testing.is_empty() {
            testing = format!("\n[testing]\n{testing}");
        }
        // A mimicked server logs clients in with the token label and PIN, so the relay
        // itself holds no PIN.
        let (pin, auth) = match self.mimic {
            Some(_) => (String::new(), "\n[auth]\ncredentials = \"token\"\n"),
            None if host_port.is_some() && client_ca.is_empty() => (
                format!("user_pin = \"file:{}\"\n", token.pin_file.display()),
                // A case without client certificates: the relay refuses that beyond
                // loopback unless told; the container's port is published on loopback.
                "\n[auth]\nallow_unauthenticated = true\n",
            ),
            None => (
                format!("user_pin = \"file:{}\"\n", token.pin_file.display()),
                "",
            ),
        };
        let ready = self.ready_file();
        let _ = std::fs::remove_file(&ready);
        let config = dir.join("relay.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"{listen}\"\nready_file = \"{}\"\nlog_level = \"{RELAY_LOG_LEVEL}\"\n\n\
                 [tls]\ncert = \"{}\"\nkey = \"{}\"\nmin_version = \"{}\"\nmax_version = \"{}\"\n{}\n\
                 [pkcs11]\nlib_path = \"{}\"\nslot = \"{}\"\n{}{}{}",
                ready.display(),
                pki.server_cert.display(),
                pki.server_key.display(),
                version(min),
                version(max),
                client_ca,
                self.module.display(),
                token.label,
                pin,
                auth,
                testing
            ),
        )
        .with_context(|| format!("writing {}", config.display()))?;
        let mut server = match &self.runtime {
            Runtime::Local => {
                let bin = relay_binary().map_err(|e| anyhow!(e))?;
                let child = lifeline::die_with_parent(
                    Command::new(&bin)
                        .arg("--config")
                        .arg(&config)
                        // RUST_LOG would replace the configured log level, and with it
                        // the request lines the `random` step reads.
                        .env_remove("RUST_LOG")
                        .stdin(Stdio::null())
                        .stdout(std::fs::File::create(dir.join("relay.log"))?)
                        .stderr(std::fs::File::create(self.stderr_file())?),
                )
                .spawn()
                .with_context(|| format!("starting {}", bin.display()))?;
                Server::new(child, 0, libc::SIGTERM)
            }
            Runtime::Container(engine) => {
                let host_port = host_port.unwrap_or_default();
                let running = engine.start(
                    "relay",
                    &ContainerLaunch {
                        args: vec!["--config".into(), config.into_os_string()],
                        host_port: Some(host_port),
                        mounts: self.shim.iter().cloned().collect(),
                        ..Default::default()
                    },
                )?;
                Server::in_container(running, host_port)
            }
        };
        let said = server.wait_until(&self.stderr_file(), || self.said_port())?;
        server.port = host_port.unwrap_or(said);
        log_line(format!(
            "  relay for instance on token '{}' listening on 127.0.0.1:{} (TLS {} to {})",
            token.label,
            server.port,
            version(min),
            version(max)
        ));
        Ok(server)
    }

    /// A new relay process on a new port (and a new proxy), to re-read the token.
    fn restart(&mut self) -> anyhow::Result<()> {
        self.server.stop();
        let server = with_proxy(self.start(0)?, &self.spec)?;
        self.server.put(server);
        Ok(())
    }
}

impl Instance for RelayInstance {
    fn signer_kind(&self, options: &SignerOptions<'_>) -> anyhow::Result<SignerKind> {
        let mut c = kmip_config(self.server.signer_port(), &self.pki);
        if self.mimic.is_some() {
            // The seed-003 relay: the token label and PIN log in, and its Query lacks
            // Destroy, Revoke and Locate.
            c.username = Some(self.token.label.clone());
            c.password = Some(self.token.pin_source());
            c.force = true;
        }
        Ok(SignerKind::Kmip(with_options(c, options)))
    }

    fn inventory(&mut self) -> anyhow::Result<Vec<KeyIdentifier>> {
        self.token.inventory()
    }

    fn wipe(&mut self) -> anyhow::Result<()> {
        // The relay holds sessions; C_InitToken needs none.
        self.server.stop();
        self.token.wipe()?;
        self.restart()
    }

    fn change_credentials(&mut self) -> anyhow::Result<()> {
        self.token.change_pin()?;
        self.restart()
    }

    fn replace_key(&mut self, id: &KeyIdentifier, alg: Algorithm) -> anyhow::Result<()> {
        self.token.replace_key(id, alg)
    }

    fn server(&self) -> Option<&ServerSlot> {
        Some(&self.server)
    }

    fn server_mut(&mut self) -> Option<&mut ServerSlot> {
        Some(&mut self.server)
    }

    fn start_server(&mut self) -> anyhow::Result<()> {
        let mut slot = std::mem::take(&mut self.server);
        // A container started again writes it anew.
        let _ = std::fs::remove_file(self.ready_file());
        let result = slot.start_again(
            &self.name,
            |port| self.start(port),
            |server| {
                server
                    .wait_until(&self.stderr_file(), || self.said_port())
                    .map(drop)
            },
        );
        self.server = slot;
        result
    }

    /// The key pair algorithms the token behind the relay offers (its mechanism list,
    /// through the harness's own session) as far as the relay's mode lets clients use
    /// them ([`relay_algorithms`]), then Query, asked by the oracle: what the server
    /// says it does.
    fn probe(&mut self) -> anyhow::Result<Vec<super::Observed>> {
        let mut seen = relay_algorithms(self.token.probe()?, self.mimic);
        if let Some(endpoint) = self.kmip_endpoint() {
            seen.extend(super::probe_kmip(&endpoint?)?);
        }
        Ok(seen)
    }

    /// What the relay says about itself as a KMIP server, asked by the oracle's client.
    fn describe(&mut self) -> anyhow::Result<super::Description> {
        match self.kmip_endpoint() {
            Some(endpoint) => super::kmip_describe::describe_kmip(&endpoint?),
            None => Ok(super::Description::default()),
        }
    }

    fn kmip_endpoint(&self) -> Option<anyhow::Result<oracle::kmip::Endpoint>> {
        Some(self.server.direct_port(&self.name).map(|port| {
            let mut e = inventory_endpoint(port, &self.pki);
            if self.mimic.is_some() {
                e.credential = Some(oracle::kmip::Credential {
                    username: self.token.label.clone(),
                    password: Some(self.token.user_pin().to_string()),
                });
            }
            e
        }))
    }

    fn properties(&self) -> Vec<(String, String)> {
        vec![("token_label".to_string(), self.token.label.clone())]
    }

    /// The running relay's log (stderr; a restart starts a new one).
    /// The relay's stderr: its file, or for a container a copy of the container's log
    /// taken now.
    fn rng_log(&self) -> Option<PathBuf> {
        let path = self.stderr_file();
        self.server.copy_container_log(&path);
        Some(path)
    }
}

/// The key pair algorithms a relay in front of a token offers, from the token's own
/// evidence (`token`, what [`Token::probe`] saw) narrowed by what the relay makes of
/// it: KMIP 1.2 has no Ed25519 keys, and the seed-003 stand-in ([`Mimic::Seed003`])
/// refuses PSS and makes every EC key P-256. Other observations of the token (its
/// generator) are left out: the relay's Query decides those.
fn relay_algorithms(token: Vec<super::Observed>, mimic: Option<Mimic>) -> Vec<super::Observed> {
    use super::{Observed, KEY_PAIR_ALGORITHMS};
    token
        .into_iter()
        .filter(|o| KEY_PAIR_ALGORITHMS.contains(&o.capability))
        .map(|o| {
            let refused = match (o.capability, mimic) {
                (Capability::Ed25519, _) => {
                    Some("the relay speaks KMIP 1.2, which has no Ed25519 keys")
                }
                (Capability::Rsa2048Pss, Some(Mimic::Seed003)) => {
                    Some("the seed-003 relay refuses PSS signatures")
                }
                (Capability::EcdsaP384, Some(Mimic::Seed003)) => {
                    Some("the seed-003 relay makes every EC key P-256")
                }
                _ => None,
            };
            match refused {
                Some(why) => Observed::exact(
                    o.capability,
                    false,
                    format!("{why} (the token's {})", o.evidence),
                ),
                None => Observed::exact(
                    o.capability,
                    o.has,
                    format!("the token behind the relay: {}", o.evidence),
                ),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::Observed;

    /// A token that offers every algorithm.
    fn everything() -> Vec<Observed> {
        crate::backends::KEY_PAIR_ALGORITHMS
            .into_iter()
            .chain([Capability::Random])
            .map(|c| Observed::exact(c, true, "offered".into()))
            .collect()
    }

    fn offered(seen: &[Observed]) -> Vec<Capability> {
        seen.iter()
            .filter(|o| o.has)
            .map(|o| o.capability)
            .collect()
    }

    #[test]
    fn the_relay_offers_what_both_its_token_and_its_mode_allow() {
        assert_eq!(
            offered(&relay_algorithms(everything(), None)),
            vec![
                Capability::Rsa2048,
                Capability::Rsa2048Pss,
                Capability::EcdsaP256,
                Capability::EcdsaP384
            ]
        );
        assert_eq!(
            offered(&relay_algorithms(everything(), Some(Mimic::Seed003))),
            vec![Capability::Rsa2048, Capability::EcdsaP256]
        );
        let mut no_ec = everything();
        for o in &mut no_ec {
            if matches!(o.capability, Capability::EcdsaP256 | Capability::EcdsaP384) {
                o.has = false;
            }
        }
        assert_eq!(
            offered(&relay_algorithms(no_ec, None)),
            vec![Capability::Rsa2048, Capability::Rsa2048Pss]
        );
        // Random is the relay's Query's to say.
        assert!(relay_algorithms(everything(), None)
            .iter()
            .all(|o| o.capability != Capability::Random && o.exact));
    }
}
