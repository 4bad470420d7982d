//! Backend instances of one cell: each `on: a`, `on: b` in a suite is a fresh backend
//! of the cell's kind (a SoftHSMv2 token with its own label and PINs, or a keys
//! directory), made on first use and gone with the cell's work directory.
//!
//! The harness reaches instances through sessions of its own, never the signer's:
//! inventories, wipes, PIN changes and impostor keys are done here, beside the signer
//! under test, as an operator with pkcs11-tool would. For the KMIP servers that own
//! their storage (PyKMIP, Cosmian KMS) that is the oracle's KMIP client. Inventories
//! name keys by identifiers the oracle computes from the public keys, so a signer's
//! encoding mistake cannot agree with itself.

pub mod cosmian_config;
pub mod pki;
pub mod proxy;
pub mod shim;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use cryptoki::context::Pkcs11;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use hsm_signers::config::{KmipConfig, OpenSslConfig, Pkcs11Config, SignerKind, SlotSelector};
use hsm_signers::software::SoftwareSigner;
use hsm_signers::{Algorithm, KeyIdentifier, KeyType, Secret, Signer};
use oracle::public_key::{self, Curve};

use crate::model::backend::{
    pykmip_server, random_hex, relay_binary, softhsm_module, Backend, Mimic, Provider,
};
use crate::model::suite::{
    CaChoice, InstanceSpec, KmipOptions, Pkcs11Options, ServerCert, TlsVersion,
};
use crate::oracle_terms;
use pki::{Pki, ServerFlaw};
use proxy::{Fault, Proxy, Stats};
use shim::ShimSpec;

/// A SoftHSMv2 token made for an instance.
struct Token {
    label: String,
    so_pin: String,
    user_pin: String,
    /// The environment variable the signer configuration reads the PIN from.
    pin_env: String,
}

/// A server process (relay, PyKMIP or Cosmian KMS) serving an instance, perhaps
/// behind the harness's TCP proxy.
struct Server {
    child: Child,
    port: u16,
    /// SIGINT stops PyKMIP promptly where SIGTERM may not.
    stop_signal: i32,
    proxy: Option<Proxy>,
}

impl Server {
    /// The port signers connect to: the proxy's, if there is one.
    fn signer_port(&self) -> u16 {
        self.proxy.as_ref().map_or(self.port, |p| p.port())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.proxy = None;
        // SAFETY: kill(2) on our own child's pid; no memory involved.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, self.stop_signal);
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One instance of the cell's backend.
enum Instance {
    Software {
        keys_dir: PathBuf,
    },
    Token(Token),
    Relay {
        token: Token,
        dir: PathBuf,
        pki: Pki,
        server: Option<Server>,
    },
    Pykmip {
        dir: PathBuf,
        pki: Pki,
        server: Option<Server>,
    },
    Cosmian {
        dir: PathBuf,
        pki: Pki,
        server: Option<Server>,
    },
}

/// The instances of one cell.
pub struct Instances {
    backend: Backend,
    workdir: PathBuf,
    module: Option<PathBuf>,
    made: BTreeMap<String, Instance>,
    /// The case's settings per instance name (absent: the backend's defaults).
    specs: BTreeMap<String, InstanceSpec>,
    /// The PKCS#11 shim the signers load instead of `module` ([`Instances::use_shim`]).
    shim: Option<PathBuf>,
}

fn ck(what: &str) -> impl Fn(CkError) -> anyhow::Error + '_ {
    move |e| anyhow!("{what}: {e}")
}

impl Instances {
    /// Prepares the cell's backend; for SoftHSMv2 this points `SOFTHSM2_CONF` at a
    /// token directory of the cell's own, so it must run before any module loads.
    pub fn new(
        backend: &Backend,
        workdir: &Path,
        specs: &BTreeMap<String, InstanceSpec>,
    ) -> anyhow::Result<Self> {
        let module = match &backend.provider {
            Provider::Software | Provider::Pykmip | Provider::Cosmian => None,
            Provider::Softhsm { module, .. } | Provider::Relay { module, .. } => {
                let module = softhsm_module(module.as_deref()).map_err(|e| anyhow!(e))?;
                let dir = workdir.join("softhsm");
                let tokens = dir.join("tokens");
                std::fs::create_dir_all(&tokens)
                    .with_context(|| format!("creating {}", tokens.display()))?;
                let conf = dir.join("softhsm2.conf");
                std::fs::write(
                    &conf,
                    format!(
                        "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
                        tokens.display()
                    ),
                )
                .with_context(|| format!("writing {}", conf.display()))?;
                std::env::set_var("SOFTHSM2_CONF", &conf);
                Some(module)
            }
        };
        Ok(Instances {
            backend: backend.clone(),
            workdir: workdir.to_path_buf(),
            module,
            made: BTreeMap::new(),
            specs: specs.clone(),
            shim: None,
        })
    }

    /// Puts the PKCS#11 shim, with `spec`'s settings, in front of the module for the
    /// signers of this cell: the PKCS#11 signer (in this process) or the relay (in its
    /// own) loads `libp11shim.so`, which forwards to the real module and traces to
    /// [`shim::TRACE_FILE`] in the work directory. The harness's own sessions keep using
    /// the real module. Must come before the first instance is made (the shim reads
    /// its configuration once per process); refused for providers without a PKCS#11
    /// module.
    pub fn use_shim(&mut self, spec: &ShimSpec) -> anyhow::Result<()> {
        let module = match (&self.backend.provider, &self.module) {
            (Provider::Softhsm { .. } | Provider::Relay { .. }, Some(m)) => m.clone(),
            _ => bail!(
                "backend '{}' has no PKCS#11 module to put the shim in front of",
                self.backend.name
            ),
        };
        if !self.made.is_empty() {
            bail!("the shim must be set up before the first instance is made");
        }
        let library = shim::library().map_err(|e| anyhow!(e))?;
        let dir = self.workdir.join("shim");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let config = dir.join("p11shim.toml");
        let trace = self.workdir.join(shim::TRACE_FILE);
        std::fs::write(&config, spec.config(&module, Some(&trace)).to_toml())
            .with_context(|| format!("writing {}", config.display()))?;
        // Read by the shim on its first C_GetFunctionList, here or in a relay process
        // (which inherits it).
        std::env::set_var(p11shim::config::CONFIG_VAR, &config);
        log_line(format!(
            "  PKCS#11 shim {} in front of {}{}",
            library.display(),
            module.display(),
            if spec.is_transparent() {
                " (nothing injected)".to_string()
            } else {
                format!(
                    " (hidden mechanisms: [{}]; rules: {})",
                    spec.hide_mechanisms.join(", "),
                    spec.rules.len()
                )
            }
        ));
        self.shim = Some(library);
        Ok(())
    }

    /// Replaces the running shim's settings (rules, hidden mechanisms): the file is
    /// written anew (atomically), and the shim reads it on its next call, in this
    /// process or the relay's.
    pub fn update_shim(&mut self, spec: &ShimSpec) -> anyhow::Result<()> {
        if self.shim.is_none() {
            bail!("this cell's signers do not run through the PKCS#11 shim");
        }
        let module = self
            .module
            .clone()
            .ok_or_else(|| anyhow!("no PKCS#11 module"))?;
        let dir = self.workdir.join("shim");
        let config = dir.join("p11shim.toml");
        let trace = self.workdir.join(shim::TRACE_FILE);
        let tmp = dir.join("p11shim.toml.tmp");
        std::fs::write(&tmp, spec.config(&module, Some(&trace)).to_toml())
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &config)
            .with_context(|| format!("replacing {}", config.display()))?;
        log_line(format!(
            "  PKCS#11 shim settings now: hidden mechanisms [{}]; rules: {}",
            spec.hide_mechanisms.join(", "),
            spec.rules.len()
        ));
        Ok(())
    }

    /// The shim's trace of this cell, when the signers run through the shim.
    pub fn trace_path(&self) -> Option<PathBuf> {
        self.shim
            .as_ref()
            .map(|_| self.workdir.join(shim::TRACE_FILE))
    }

    /// The module the signers load: the shim when there is one, else the real module.
    fn signer_module(&self) -> Option<PathBuf> {
        self.shim.clone().or_else(|| self.module.clone())
    }

    fn p11(&self) -> anyhow::Result<Pkcs11> {
        let path = self
            .module
            .as_ref()
            .ok_or_else(|| anyhow!("no PKCS#11 module"))?;
        hsm_signers::pkcs11::module(path).map_err(|e| anyhow!(e))
    }

    /// Facts for the report: the module and the token labels made so far.
    pub fn properties(&self) -> Vec<(String, String)> {
        let mut props = Vec::new();
        if let Some(m) = &self.module {
            props.push(("module".to_string(), m.display().to_string()));
        }
        if let Some(s) = &self.shim {
            props.push(("pkcs11_shim".to_string(), s.display().to_string()));
        }
        if matches!(self.backend.provider, Provider::Cosmian) {
            if let Ok(bin) = cosmian_config::binary() {
                props.push(("cosmian_kms".to_string(), bin.display().to_string()));
            }
        }
        for (name, inst) in &self.made {
            match inst {
                Instance::Token(t) | Instance::Relay { token: t, .. } => {
                    props.push((format!("token_label.{name}"), t.label.clone()));
                }
                _ => {}
            }
        }
        props
    }

    fn ensure(&mut self, name: &str) -> anyhow::Result<&mut Instance> {
        if !self.made.contains_key(name) {
            let dir = self.workdir.join("instances").join(name);
            let inst = match &self.backend.provider {
                Provider::Software => Instance::Software {
                    keys_dir: dir.join("keys"),
                },
                Provider::Softhsm { .. } => Instance::Token(self.new_token(name)?),
                Provider::Relay { .. } => {
                    let token = self.new_token(name)?;
                    let pki = pki::generate(&dir.join("pki"), self.flaw(name))?;
                    let spec = self.specs.get(name).cloned().unwrap_or_default();
                    let server = with_proxy(self.start_relay(name, &dir, &token, &pki, 0)?, &spec)?;
                    Instance::Relay {
                        token,
                        dir,
                        pki,
                        server: Some(server),
                    }
                }
                Provider::Pykmip => {
                    let spec = self.specs.get(name).cloned().unwrap_or_default();
                    let pki = pki::generate(&dir.join("pki"), self.flaw(name))?;
                    let server = with_proxy(start_pykmip(&dir, &pki, &spec, 0)?, &spec)?;
                    Instance::Pykmip {
                        dir,
                        pki,
                        server: Some(server),
                    }
                }
                Provider::Cosmian => {
                    let spec = self.specs.get(name).cloned().unwrap_or_default();
                    let pki = pki::generate_for_client(
                        &dir.join("pki"),
                        self.flaw(name),
                        &cosmian_user(name),
                    )?;
                    let server = with_proxy(start_cosmian(&dir, &pki, &spec, 0)?, &spec)?;
                    Instance::Cosmian {
                        dir,
                        pki,
                        server: Some(server),
                    }
                }
            };
            self.made.insert(name.to_string(), inst);
        }
        self.made
            .get_mut(name)
            .ok_or_else(|| anyhow!("instance '{name}' vanished"))
    }

    /// The server certificate flaw the case asks for on instance `name`.
    fn flaw(&self, name: &str) -> ServerFlaw {
        match self.specs.get(name).and_then(|s| s.tls.as_ref()) {
            None => ServerFlaw::None,
            Some(t) => match t.certificate {
                ServerCert::Valid => ServerFlaw::None,
                ServerCert::Expired => ServerFlaw::Expired,
                ServerCert::WrongHost => ServerFlaw::WrongHost,
                ServerCert::SelfSigned => ServerFlaw::SelfSigned,
            },
        }
    }

    /// Kills instance `name`'s server process (SIGKILL: no goodbye to clients); the
    /// proxy in front of it, if any, stays up. `start_server` brings it back.
    pub fn kill_server(&mut self, name: &str) -> anyhow::Result<()> {
        self.ensure(name)?;
        match self.made.get_mut(name) {
            Some(Instance::Relay {
                server: Some(s), ..
            })
            | Some(Instance::Pykmip {
                server: Some(s), ..
            })
            | Some(Instance::Cosmian {
                server: Some(s), ..
            }) => {
                let _ = s.child.kill();
                let _ = s.child.wait();
                log_line(format!(
                    "  killed the server of instance '{name}' (port {})",
                    s.port
                ));
                Ok(())
            }
            _ => bail!("instance '{name}' has no running server process"),
        }
    }

    /// Starts instance `name`'s server again on the port it had, with the same data;
    /// signers (and the proxy) find it where it was.
    pub fn start_server(&mut self, name: &str) -> anyhow::Result<()> {
        self.ensure(name)?;
        let spec = self.specs.get(name).cloned().unwrap_or_default();
        let old = match self.made.get_mut(name) {
            Some(Instance::Relay { server, .. })
            | Some(Instance::Pykmip { server, .. })
            | Some(Instance::Cosmian { server, .. }) => server.take(),
            _ => None,
        };
        let Some(mut old) = old else {
            bail!("instance '{name}' has no server process");
        };
        if let Ok(None) = old.child.try_wait() {
            self.put_server(name, old);
            bail!("the server of instance '{name}' is running; kill it first");
        }
        let proxy = old.proxy.take();
        let port = old.port;
        drop(old);
        let started = match self.made.get(name) {
            Some(Instance::Relay {
                token, dir, pki, ..
            }) => self.start_relay(name, dir, token, pki, port),
            Some(Instance::Pykmip { dir, pki, .. }) => start_pykmip(dir, pki, &spec, port),
            Some(Instance::Cosmian { dir, pki, .. }) => start_cosmian(dir, pki, &spec, port),
            _ => bail!("instance '{name}' has no server process"),
        };
        let mut server = started?;
        server.proxy = proxy;
        log_line(format!(
            "  started the server of instance '{name}' again on port {port}"
        ));
        self.put_server(name, server);
        Ok(())
    }

    fn put_server(&mut self, name: &str, new: Server) {
        if let Some(Instance::Relay { server, .. })
        | Some(Instance::Pykmip { server, .. })
        | Some(Instance::Cosmian { server, .. }) = self.made.get_mut(name)
        {
            *server = Some(new);
        }
    }

    /// Changes what the proxy in front of instance `name` does to new connections.
    pub fn set_proxy_fault(&mut self, name: &str, fault: &Fault) -> anyhow::Result<()> {
        self.ensure(name)?;
        let proxy = match self.made.get(name) {
            Some(Instance::Relay { server, .. })
            | Some(Instance::Pykmip { server, .. })
            | Some(Instance::Cosmian { server, .. }) => {
                server.as_ref().and_then(|s| s.proxy.as_ref())
            }
            _ => None,
        };
        let proxy = proxy.ok_or_else(|| anyhow!("instance '{name}' has no proxy"))?;
        proxy.set_fault(fault.clone());
        log_line(format!("  proxy of instance '{name}' now: {fault:?}"));
        Ok(())
    }

    /// What went through the proxy in front of instance `name` so far.
    pub fn traffic(&self, name: &str) -> anyhow::Result<Stats> {
        let server = match self.made.get(name) {
            Some(Instance::Relay { server, .. })
            | Some(Instance::Pykmip { server, .. })
            | Some(Instance::Cosmian { server, .. }) => server.as_ref(),
            Some(_) => bail!("instance '{name}' has no server to proxy"),
            None => bail!("instance '{name}' was never used"),
        };
        server
            .and_then(|s| s.proxy.as_ref())
            .map(|p| p.stats())
            .ok_or_else(|| anyhow!("instance '{name}' has no proxy"))
    }

    /// A fresh token with a random label and PINs; the user PIN goes to an
    /// environment variable for the signer configuration (never argv or logs).
    fn new_token(&self, name: &str) -> anyhow::Result<Token> {
        let label = format!("hsm-harness-{name}-{}", random_hex(3));
        let so_pin = random_hex(8);
        let user_pin = random_hex(8);
        let p11 = self.p11()?;
        let slot = free_slot(&p11)?;
        init_token(&p11, slot, &label, &so_pin, &user_pin)?;
        let pin_env = format!(
            "HSM_HARNESS_PIN_{}",
            name.to_uppercase()
                .replace(|c: char| !c.is_ascii_alphanumeric(), "_")
        );
        std::env::set_var(&pin_env, &user_pin);
        Ok(Token {
            label,
            so_pin,
            user_pin,
            pin_env,
        })
    }

    /// Starts `kmip2pkcs11` on `token` and waits until it says where it listens.
    fn start_relay(
        &self,
        name: &str,
        dir: &Path,
        token: &Token,
        pki: &Pki,
        port: u16,
    ) -> anyhow::Result<Server> {
        let spec = self.specs.get(name).cloned().unwrap_or_default();
        let tls = spec.tls.clone().unwrap_or_default();
        let (min, max) = match tls.versions.as_deref() {
            None => (TlsVersion::Tls13, TlsVersion::Tls13),
            Some(v) => (
                v.iter().min().copied().unwrap_or(TlsVersion::Tls13),
                v.iter().max().copied().unwrap_or(TlsVersion::Tls13),
            ),
        };
        let version = |v: TlsVersion| match v {
            TlsVersion::Tls12 => "1.2",
            TlsVersion::Tls13 => "1.3",
        };
        let client_ca = if tls.require_client_cert {
            format!("client_ca = \"{}\"\n", pki.ca_cert.display())
        } else {
            String::new()
        };
        let mimic = self.mimic();
        let mut testing = String::new();
        if !spec.withhold.is_empty() {
            let names: Vec<String> = spec.withhold.iter().map(|o| format!("{o:?}")).collect();
            testing.push_str(&format!("withhold_operations = [{}]\n", names.join(", ")));
        }
        if let Some(m) = mimic {
            testing.push_str(&format!("mimic = \"{}\"\n", m.name()));
        }
        if !testing.is_empty() {
            testing = format!("\n[testing]\n{testing}");
        }
        // A mimicked server logs clients in with the token label and PIN, so the relay
        // itself holds no PIN.
        let (pin, auth) = match mimic {
            Some(_) => (String::new(), "\n[auth]\ncredentials = \"token\"\n"),
            None => (format!("user_pin = \"env:{}\"\n", token.pin_env), ""),
        };
        let bin = relay_binary().map_err(|e| anyhow!(e))?;
        let module = self.signer_module().ok_or_else(|| anyhow!("no module"))?;
        let ready = dir.join("relay.ready");
        let _ = std::fs::remove_file(&ready);
        let config = dir.join("relay.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:{port}\"\nready_file = \"{}\"\nlog_level = \"warn\"\n\n\
                 [tls]\ncert = \"{}\"\nkey = \"{}\"\nmin_version = \"{}\"\nmax_version = \"{}\"\n{}\n\
                 [pkcs11]\nlib_path = \"{}\"\nslot = \"{}\"\n{}{}{}",
                ready.display(),
                pki.server_cert.display(),
                pki.server_key.display(),
                version(min),
                version(max),
                client_ca,
                module.display(),
                token.label,
                pin,
                auth,
                testing
            ),
        )
        .with_context(|| format!("writing {}", config.display()))?;
        let log = dir.join("relay.log");
        let child = Command::new(&bin)
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log)?)
            .stderr(std::fs::File::create(dir.join("relay.stderr"))?)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut server = Server {
            child,
            port: 0,
            stop_signal: libc::SIGTERM,
            proxy: None,
        };
        server.port = wait_until(&mut server.child, &dir.join("relay.stderr"), || {
            let text = std::fs::read_to_string(&ready).ok()?;
            let addr = text.split_whitespace().next()?;
            addr.rsplit(':').next()?.parse().ok()
        })?;
        log_line(format!(
            "  relay for instance on token '{}' listening on 127.0.0.1:{} (TLS {} to {})",
            token.label,
            server.port,
            version(min),
            version(max)
        ));
        Ok(server)
    }

    /// The signer configuration that reaches instance `name`.
    pub fn signer_kind(
        &mut self,
        name: &str,
        options: Option<&KmipOptions>,
        pkcs11: Option<&Pkcs11Options>,
    ) -> anyhow::Result<SignerKind> {
        let module = self.signer_module();
        let mimic = self.mimic();
        let other_ca = match options.map(|o| o.server_ca) {
            Some(CaChoice::Other) => Some(self.other_ca()?),
            _ => None,
        };
        Ok(match self.ensure(name)? {
            Instance::Software { keys_dir } => SignerKind::OpenSsl(OpenSslConfig {
                keys_dir: Some(keys_dir.clone()),
            }),
            Instance::Token(t) => SignerKind::Pkcs11(Pkcs11Config {
                lib_path: module.ok_or_else(|| anyhow!("no module"))?,
                slot: SlotSelector::Label(t.label.clone()),
                user_pin: Some(Secret::Env(t.pin_env.clone())),
                login: true,
                force: pkcs11.and_then(|o| o.force).unwrap_or(false),
            }),
            Instance::Relay {
                pki, server, token, ..
            } => {
                let port = server.as_ref().map_or(0, |s| s.signer_port());
                let mut c = kmip_config(port, pki);
                if mimic.is_some() {
                    // The seed-003 relay: the token label and PIN log in, and its Query
                    // lacks Destroy, Revoke and Locate.
                    c.username = Some(token.label.clone());
                    c.password = Some(Secret::Env(token.pin_env.clone()));
                    c.force = true;
                }
                SignerKind::Kmip(with_options(c, options, other_ca))
            }
            Instance::Pykmip { pki, server, .. } => {
                let port = server.as_ref().map_or(0, |s| s.signer_port());
                let mut c = kmip_config(port, pki);
                // PyKMIP speaks TLS 1.2 only, and its Query omits Modify Attribute.
                c.weaken_security_allow_tls12 = true;
                c.force = true;
                SignerKind::Kmip(with_options(c, options, other_ca))
            }
            // The signer's defaults (TLS 1.3 only) are what an operator would use.
            Instance::Cosmian { pki, server, .. } => {
                let port = server.as_ref().map_or(0, |s| s.signer_port());
                let c = kmip_config(port, pki);
                SignerKind::Kmip(with_options(c, options, other_ca))
            }
        })
    }

    /// The server the relay stands in for, if any.
    fn mimic(&self) -> Option<Mimic> {
        match &self.backend.provider {
            Provider::Relay { mimic, .. } => *mimic,
            _ => None,
        }
    }

    /// The certificate of a CA that issued nothing any instance presents.
    fn other_ca(&self) -> anyhow::Result<PathBuf> {
        let dir = self.workdir.join("other-pki");
        let ca = dir.join("ca.pem");
        if !ca.exists() {
            pki::generate(&dir, ServerFlaw::None)?;
        }
        Ok(ca)
    }

    /// Empties instance `name` and initialises it again with the same label and PINs
    /// (the signer configuration still reaches it; its content is new). Servers are
    /// restarted, on a new port.
    pub fn wipe(&mut self, name: &str) -> anyhow::Result<()> {
        self.ensure(name)?;
        let p11 = self.module.as_ref().map(|_| self.p11()).transpose()?;
        let relay_restart = match self.made.get_mut(name) {
            Some(Instance::Software { keys_dir }) => {
                if keys_dir.exists() {
                    std::fs::remove_dir_all(&*keys_dir)
                        .with_context(|| format!("wiping {}", keys_dir.display()))?;
                }
                None
            }
            Some(Instance::Token(t)) => {
                let p11 = p11.ok_or_else(|| anyhow!("no module"))?;
                let slot = slot_of(&p11, &t.label)?;
                init_token(&p11, slot, &t.label, &t.so_pin, &t.user_pin)?;
                None
            }
            Some(Instance::Relay { token, server, .. }) => {
                // The relay holds sessions; C_InitToken needs none.
                *server = None;
                let p11 = p11.ok_or_else(|| anyhow!("no module"))?;
                let slot = slot_of(&p11, &token.label)?;
                init_token(&p11, slot, &token.label, &token.so_pin, &token.user_pin)?;
                Some(())
            }
            Some(Instance::Pykmip { dir, pki, server }) => {
                *server = None;
                let _ = std::fs::remove_file(dir.join("pykmip.db"));
                let spec = self.specs.get(name).cloned().unwrap_or_default();
                *server = Some(with_proxy(start_pykmip(dir, pki, &spec, 0)?, &spec)?);
                None
            }
            Some(Instance::Cosmian { dir, pki, server }) => {
                // Stopped first: the server holds the database open.
                *server = None;
                let db = cosmian_config::database_dir(dir);
                if db.exists() {
                    std::fs::remove_dir_all(&db)
                        .with_context(|| format!("wiping {}", db.display()))?;
                }
                let spec = self.specs.get(name).cloned().unwrap_or_default();
                *server = Some(with_proxy(start_cosmian(dir, pki, &spec, 0)?, &spec)?);
                None
            }
            None => bail!("no instance '{name}'"),
        };
        if relay_restart.is_some() {
            self.restart_relay(name)?;
        }
        Ok(())
    }

    fn restart_relay(&mut self, name: &str) -> anyhow::Result<()> {
        let Some(Instance::Relay {
            token,
            dir,
            pki,
            server,
        }) = self.made.remove(name)
        else {
            bail!("instance '{name}' is not a relay");
        };
        drop(server);
        let spec = self.specs.get(name).cloned().unwrap_or_default();
        let server = with_proxy(self.start_relay(name, &dir, &token, &pki, 0)?, &spec)?;
        self.made.insert(
            name.to_string(),
            Instance::Relay {
                token,
                dir,
                pki,
                server: Some(server),
            },
        );
        Ok(())
    }

    /// Gives instance `name` a new user PIN (C_SetPIN); the signer configuration's PIN
    /// source follows (a relay is restarted to read it).
    pub fn change_pin(&mut self, name: &str) -> anyhow::Result<()> {
        self.ensure(name)?;
        let p11 = self.p11()?;
        let is_relay = matches!(self.made.get(name), Some(Instance::Relay { .. }));
        let token = match self.made.get_mut(name) {
            Some(Instance::Token(t)) | Some(Instance::Relay { token: t, .. }) => t,
            _ => bail!("instance '{name}' has no credentials to change"),
        };
        let new_pin = random_hex(8);
        let slot = slot_of(&p11, &token.label)?;
        let session = p11.open_rw_session(slot).map_err(ck("C_OpenSession"))?;
        session
            .set_pin(
                &AuthPin::from(token.user_pin.clone()),
                &AuthPin::from(new_pin.clone()),
            )
            .map_err(ck("C_SetPIN"))?;
        drop(session);
        token.user_pin = new_pin;
        std::env::set_var(&token.pin_env, token.user_pin.as_str());
        if is_relay {
            self.restart_relay(name)?;
        }
        Ok(())
    }

    /// The key identifiers of the key pairs instance `name` holds, read through a
    /// session of the harness's own: PKCS#11 directly on the token (also behind the
    /// relay), the oracle's KMIP client for PyKMIP and Cosmian KMS (with the signer's
    /// client certificate: Cosmian shows a user only the objects that user owns),
    /// straight to the server, not through the proxy a case may put in front of it
    /// for the signers. Software keys are named by their files.
    pub fn inventory(&mut self, name: &str) -> anyhow::Result<Vec<KeyIdentifier>> {
        if name == "software" {
            return software_inventory(&self.workdir.join("state").join("keys"));
        }
        self.ensure(name)?;
        let p11 = self.module.as_ref().map(|_| self.p11()).transpose()?;
        match &self.made[name] {
            Instance::Software { keys_dir } => software_inventory(keys_dir),
            Instance::Token(t) | Instance::Relay { token: t, .. } => {
                let p11 = p11.ok_or_else(|| anyhow!("no module"))?;
                token_inventory(&p11, t)
            }
            Instance::Pykmip { pki, server, .. } | Instance::Cosmian { pki, server, .. } => {
                let server = server
                    .as_ref()
                    .ok_or_else(|| anyhow!("instance '{name}' has no server running"))?;
                let ids = oracle::kmip::inventory(&inventory_endpoint(server.port, pki))
                    .map_err(|e| anyhow!("{e}"))?;
                Ok(ids.into_iter().map(oracle_terms::key_identifier).collect())
            }
        }
    }

    /// Replaces the key pair `id` in instance `name` by a new key pair of the same
    /// type under the same identifier: same handle, other key material.
    pub fn replace_key(
        &mut self,
        name: &str,
        id: &KeyIdentifier,
        alg: Algorithm,
    ) -> anyhow::Result<()> {
        if name == "software" {
            let keys_dir = self.workdir.join("state").join("keys");
            return replace_software_key(&self.workdir, &keys_dir, id, alg);
        }
        self.ensure(name)?;
        let p11 = self.module.as_ref().map(|_| self.p11()).transpose()?;
        match &self.made[name] {
            Instance::Software { keys_dir } => {
                replace_software_key(&self.workdir, keys_dir, id, alg)
            }
            Instance::Token(t) | Instance::Relay { token: t, .. } => {
                let p11 = p11.ok_or_else(|| anyhow!("no module"))?;
                let session = user_session(&p11, &t.label, &t.user_pin)?;
                let pair = pairs(&session)?
                    .into_iter()
                    .find(|p| p.id == *id)
                    .ok_or_else(|| anyhow!("no key pair {id} on token '{}'", t.label))?;
                session
                    .destroy_object(pair.public)
                    .map_err(ck("C_DestroyObject"))?;
                let private_label = match pair.private {
                    Some((h, label)) => {
                        session.destroy_object(h).map_err(ck("C_DestroyObject"))?;
                        label
                    }
                    None => pair.public_label.clone(),
                };
                // Same CKA_ID and labels: whoever finds keys by them finds the impostor.
                generate_with_id(
                    &session,
                    alg.key_type(),
                    &pair.cka_id,
                    &pair.public_label,
                    &private_label,
                )
            }
            Instance::Pykmip { .. } => {
                bail!("replacing a key under its handle is not supported on PyKMIP (server-assigned identifiers)")
            }
            Instance::Cosmian { .. } => {
                bail!("replacing a key under its handle is not supported on Cosmian KMS (server-assigned identifiers)")
            }
        }
    }
}

/// Applies a case's KMIP options to the provider's configuration.
fn with_options(
    mut c: KmipConfig,
    options: Option<&KmipOptions>,
    other_ca: Option<PathBuf>,
) -> KmipConfig {
    let Some(o) = options else { return c };
    if let Some(v) = o.allow_tls12 {
        c.weaken_security_allow_tls12 = v;
    }
    if let Some(v) = o.force {
        c.force = v;
    }
    if let Some(ms) = o.read_timeout_ms {
        c.read_timeout = Duration::from_millis(ms);
    }
    c.insecure = o.insecure;
    if o.client_cert == Some(false) {
        c.client_cert_path = None;
        c.client_cert_private_key_path = None;
    }
    if let Some(ca) = other_ca {
        c.server_ca_cert_path = Some(ca);
    }
    c
}

/// Puts the harness's TCP proxy in front of `server` when the instance asks for one.
fn with_proxy(mut server: Server, spec: &InstanceSpec) -> anyhow::Result<Server> {
    if let Some(fault) = &spec.proxy {
        let upstream = std::net::SocketAddr::from((Ipv4Addr::LOCALHOST, server.port));
        let proxy = Proxy::start(upstream, fault.clone()).context("starting the TCP proxy")?;
        log_line(format!(
            "  proxy on 127.0.0.1:{} in front of port {} ({fault:?})",
            proxy.port(),
            server.port
        ));
        server.proxy = Some(proxy);
    }
    Ok(server)
}

fn kmip_config(port: u16, pki: &Pki) -> KmipConfig {
    let mut c = KmipConfig::new("127.0.0.1", port);
    c.server_ca_cert_path = Some(pki.ca_cert.clone());
    c.client_cert_path = Some(pki.client_cert.clone());
    c.client_cert_private_key_path = Some(pki.client_key.clone());
    c
}

/// The oracle's view of a KMIP instance: the instance's CA and client certificate, as
/// the signers get them.
fn inventory_endpoint(port: u16, pki: &Pki) -> oracle::kmip::Endpoint {
    let mut e = oracle::kmip::Endpoint::new("127.0.0.1", port, &pki.ca_cert);
    e.identity = Some(oracle::kmip::ClientIdentity {
        cert: pki.client_cert.clone(),
        key: pki.client_key.clone(),
    });
    e
}

fn log_line(line: String) {
    eprintln!("{line}");
}

/// Waits (15 s at most) until `ready` gives the port, failing early with the server's
/// stderr tail if it exits.
fn wait_until(
    child: &mut Child,
    stderr: &Path,
    ready: impl Fn() -> Option<u16>,
) -> anyhow::Result<u16> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(port) = ready() {
            return Ok(port);
        }
        let tail = || {
            let text = std::fs::read_to_string(stderr).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(10)..].join("\n")
        };
        if let Ok(Some(status)) = child.try_wait() {
            bail!(
                "the server exited ({status}) before it was ready:\n{}",
                tail()
            );
        }
        if Instant::now() > deadline {
            bail!("the server was not ready within 15 s:\n{}", tail());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts a PyKMIP server on a free loopback port with `pki`, a fresh database in
/// `dir`, TLS 1.2 with an ECDHE-ECDSA-GCM suite rustls speaks.
/// Starts PyKMIP on `port` (0: a free one).
fn start_pykmip(dir: &Path, pki: &Pki, spec: &InstanceSpec, port: u16) -> anyhow::Result<Server> {
    if !spec.withhold.is_empty() {
        bail!("PyKMIP cannot withhold operations (the relay can: capability kmip-withhold)");
    }
    let bin = pykmip_server().map_err(|e| anyhow!(e))?;
    if let Some(v) = spec.tls.as_ref().and_then(|t| t.versions.as_ref()) {
        if v.contains(&TlsVersion::Tls13) {
            bail!("PyKMIP speaks TLS 1.2 only (the backend should not list tls13)");
        }
    }
    std::fs::create_dir_all(dir.join("policies"))?;
    let port = match port {
        0 => TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port(),
        p => p,
    };
    let config = dir.join("server.conf");
    std::fs::write(
        &config,
        format!(
            "[server]\nhostname=127.0.0.1\nport={port}\ncertificate_path={}\nkey_path={}\n\
             ca_path={}\nauth_suite=TLS1.2\npolicy_path={}\nenable_tls_client_auth=False\n\
             tls_cipher_suites=TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256\nlogging_level=ERROR\n\
             database_path={}\n",
            pki.server_cert.display(),
            pki.server_key.display(),
            pki.ca_cert.display(),
            dir.join("policies").display(),
            dir.join("pykmip.db").display()
        ),
    )?;
    let child = Command::new(&bin)
        .arg("-f")
        .arg(&config)
        .arg("-l")
        .arg(dir.join("pykmip.log"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("pykmip.stderr"))?)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let mut server = Server {
        child,
        port,
        stop_signal: libc::SIGINT,
        proxy: None,
    };
    wait_until(&mut server.child, &dir.join("pykmip.stderr"), || {
        TcpStream::connect((Ipv4Addr::LOCALHOST, port))
            .ok()
            .map(|_| port)
    })?;
    log_line(format!("  PyKMIP listening on 127.0.0.1:{port}"));
    Ok(server)
}

/// The Cosmian user an instance's client certificate names (Cosmian takes the user
/// from the certificate's common name; objects belong to their user).
fn cosmian_user(instance: &str) -> String {
    format!("hsm-harness-{instance}")
}

/// Two distinct free loopback ports, found by binding port 0 (both listeners are held
/// until both are known, so the two differ).
fn two_free_ports() -> anyhow::Result<(u16, u16)> {
    let a = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let b = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok((a.local_addr()?.port(), b.local_addr()?.port()))
}

/// Starts Cosmian KMS for an instance: its KMIP socket server on `port` (0: a free
/// one), its HTTP server on another free loopback port, the SQLite database in `dir`
/// (kept across restarts), and waits until the KMIP port accepts connections. A TCP
/// connect is the probe because the socket server wants a client certificate before
/// it says anything.
fn start_cosmian(dir: &Path, pki: &Pki, spec: &InstanceSpec, port: u16) -> anyhow::Result<Server> {
    if !spec.withhold.is_empty() {
        bail!("Cosmian KMS cannot withhold operations (the relay can: capability kmip-withhold)");
    }
    let bin = cosmian_config::binary().map_err(|e| anyhow!(e))?;
    let versions = spec.tls.as_ref().and_then(|t| t.versions.as_deref());
    let (free, http_port) = two_free_ports()?;
    let port = if port == 0 { free } else { port };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let config = dir.join("kms.toml");
    let text = cosmian_config::config(&cosmian_config::Settings {
        dir,
        pki,
        kmip_port: port,
        http_port,
        versions,
    })
    .map_err(|e| anyhow!(e))?;
    std::fs::write(&config, text).with_context(|| format!("writing {}", config.display()))?;
    // Its log goes to stdout and its fatal errors to stderr: one file holds both, for
    // the tail in a start-up error.
    let log_path = dir.join("cosmian.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let child = Command::new(&bin)
        .arg("-c")
        .arg(&config)
        // It reads a `.env` file from its working directory: make that the instance's.
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let mut server = Server {
        child,
        port,
        stop_signal: libc::SIGTERM,
        proxy: None,
    };
    wait_until(&mut server.child, &log_path, || {
        TcpStream::connect((Ipv4Addr::LOCALHOST, port))
            .ok()
            .map(|_| port)
    })?;
    log_line(format!(
        "  Cosmian KMS listening on 127.0.0.1:{port} (KMIP; HTTP on {http_port})"
    ));
    Ok(server)
}

/// A key pair on a token, identified by its public key material (not by CKA_ID,
/// which a server such as the relay chooses itself).
struct Pair {
    id: KeyIdentifier,
    cka_id: Vec<u8>,
    public: ObjectHandle,
    public_label: Vec<u8>,
    private: Option<(ObjectHandle, Vec<u8>)>,
}

/// Every key pair on the token whose private half is there too.
fn pairs(session: &Session) -> anyhow::Result<Vec<Pair>> {
    let publics = session
        .find_objects(&[Attribute::Class(ObjectClass::PUBLIC_KEY)])
        .map_err(ck("C_FindObjects"))?;
    let mut out = Vec::new();
    for h in publics {
        let attrs = session
            .get_attributes(
                h,
                &[
                    AttributeType::Id,
                    AttributeType::Label,
                    AttributeType::Modulus,
                    AttributeType::PublicExponent,
                    AttributeType::EcParams,
                    AttributeType::EcPoint,
                ],
            )
            .map_err(ck("C_GetAttributeValue"))?;
        let (mut cka_id, mut label, mut n, mut e, mut params, mut point) =
            (Vec::new(), Vec::new(), None, None, None, None);
        for a in attrs {
            match a {
                Attribute::Id(v) => cka_id = v,
                Attribute::Label(v) => label = v,
                Attribute::Modulus(v) => n = Some(v),
                Attribute::PublicExponent(v) => e = Some(v),
                Attribute::EcParams(v) => params = Some(v),
                Attribute::EcPoint(v) => point = Some(v),
                _ => {}
            }
        }
        // Keys on curves the harness does not know are not counted.
        let spki = match (n, e, params, point) {
            (Some(n), Some(e), _, _) => public_key::rsa(&n, &e),
            (_, _, Some(params), Some(point)) => match Curve::from_ec_params(&params) {
                Some(curve) => public_key::ec(curve, &point),
                None => continue,
            },
            _ => continue,
        };
        let spki =
            spki.map_err(|e| anyhow!("public key with CKA_ID {}: {e}", hex::encode(&cka_id)))?;
        let id = oracle::KeyId::of_spki(&spki)
            .map(oracle_terms::key_identifier)
            .map_err(|e| anyhow!("{e}"))?;
        let private = session
            .find_objects(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Id(cka_id.clone()),
            ])
            .map_err(ck("C_FindObjects"))?
            .into_iter()
            .next()
            .map(|h| {
                let label = session
                    .get_attributes(h, &[AttributeType::Label])
                    .ok()
                    .and_then(|a| {
                        a.into_iter().find_map(|a| match a {
                            Attribute::Label(v) => Some(v),
                            _ => None,
                        })
                    })
                    .unwrap_or_default();
                (h, label)
            });
        out.push(Pair {
            id,
            cka_id,
            public: h,
            public_label: label,
            private,
        });
    }
    Ok(out)
}

/// The identifiers of the complete key pairs on the token, computed from their public
/// key material.
fn token_inventory(p11: &Pkcs11, t: &Token) -> anyhow::Result<Vec<KeyIdentifier>> {
    let session = user_session(p11, &t.label, &t.user_pin)?;
    let mut ids: Vec<KeyIdentifier> = pairs(&session)?
        .into_iter()
        .filter(|p| p.private.is_some())
        .map(|p| p.id)
        .collect();
    ids.sort();
    Ok(ids)
}

/// Puts the key file of a new key pair where key `id` was: same name, other key.
fn replace_software_key(
    workdir: &Path,
    keys_dir: &Path,
    id: &KeyIdentifier,
    alg: Algorithm,
) -> anyhow::Result<()> {
    let scratch = workdir.join("impostor");
    let other = SoftwareSigner::new("impostor", scratch.clone());
    let made = other.create_key(alg).map_err(|e| anyhow!("{e}"))?;
    std::fs::copy(
        scratch.join(format!("{}.key", made.id)),
        keys_dir.join(format!("{id}.key")),
    )
    .context("putting the impostor key in place")?;
    Ok(())
}

fn software_inventory(dir: &Path) -> anyhow::Result<Vec<KeyIdentifier>> {
    let mut ids: Vec<KeyIdentifier> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let n = e.file_name().into_string().ok()?;
                n.strip_suffix(".key")?.parse().ok()
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => vec![],
        Err(e) => return Err(anyhow!("listing {}: {e}", dir.display())),
    };
    ids.sort();
    Ok(ids)
}

fn free_slot(p11: &Pkcs11) -> anyhow::Result<Slot> {
    p11.get_slots_with_token()
        .map_err(ck("C_GetSlotList"))?
        .into_iter()
        .find(|s| {
            p11.get_token_info(*s)
                .map(|t| !t.token_initialized())
                .unwrap_or(false)
        })
        .ok_or_else(|| anyhow!("the module offers no uninitialised token slot"))
}

/// The slot of the token labelled `label` (SoftHSMv2 moves tokens to new slot ids).
fn slot_of(p11: &Pkcs11, label: &str) -> anyhow::Result<Slot> {
    p11.get_slots_with_token()
        .map_err(ck("C_GetSlotList"))?
        .into_iter()
        .find(|s| {
            p11.get_token_info(*s)
                .map(|t| t.label().trim_end() == label)
                .unwrap_or(false)
        })
        .ok_or_else(|| anyhow!("no token labelled '{label}'"))
}

/// C_InitToken (a fresh or wiped token), then the user PIN.
fn init_token(
    p11: &Pkcs11,
    slot: Slot,
    label: &str,
    so_pin: &str,
    user_pin: &str,
) -> anyhow::Result<()> {
    p11.init_token(slot, &AuthPin::from(so_pin.to_string()), label)
        .map_err(ck("C_InitToken"))?;
    let slot = slot_of(p11, label)?;
    let session = p11.open_rw_session(slot).map_err(ck("C_OpenSession"))?;
    session
        .login(UserType::So, Some(&AuthPin::from(so_pin.to_string())))
        .map_err(ck("C_Login(SO)"))?;
    session
        .init_pin(&AuthPin::from(user_pin.to_string()))
        .map_err(ck("C_InitPIN"))?;
    session.logout().map_err(ck("C_Logout"))?;
    Ok(())
}

/// A R/W session logged in as user. Never logs out: logging out would log out the
/// signer's sessions too (login state is per token, not per session).
fn user_session(p11: &Pkcs11, label: &str, pin: &str) -> anyhow::Result<Session> {
    let slot = slot_of(p11, label)?;
    let session = p11.open_rw_session(slot).map_err(ck("C_OpenSession"))?;
    match session.login(UserType::User, Some(&AuthPin::from(pin.to_string()))) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
        Err(e) => Err(anyhow!("C_Login: {e}")),
    }
}

fn generate_with_id(
    session: &Session,
    kt: KeyType,
    id: &[u8],
    public_label: &[u8],
    private_label: &[u8],
) -> anyhow::Result<()> {
    let id = id.to_vec();
    let (mech, mut public) = match kt {
        KeyType::Rsa2048 => (
            Mechanism::RsaPkcsKeyPairGen,
            vec![
                Attribute::ModulusBits(2048.into()),
                Attribute::PublicExponent(vec![1, 0, 1]),
            ],
        ),
        KeyType::EcP256 => (
            Mechanism::EccKeyPairGen,
            vec![Attribute::EcParams(Curve::P256.ec_params())],
        ),
        KeyType::EcP384 => (
            Mechanism::EccKeyPairGen,
            vec![Attribute::EcParams(Curve::P384.ec_params())],
        ),
        KeyType::Ed25519 => (
            Mechanism::EccEdwardsKeyPairGen,
            vec![Attribute::EcParams(Curve::Ed25519.ec_params())],
        ),
    };
    public.extend([
        Attribute::Token(true),
        Attribute::Verify(true),
        Attribute::Id(id.clone()),
        Attribute::Label(public_label.to_vec()),
    ]);
    let private = vec![
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Id(id),
        Attribute::Label(private_label.to_vec()),
    ];
    session
        .generate_key_pair(&mech, &public, &private)
        .map_err(ck("C_GenerateKeyPair"))?;
    Ok(())
}
