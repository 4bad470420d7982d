//! Provider `pykmip`: a PyKMIP server (`pykmip-server`, Debian's python3-pykmip) with
//! generated certificates, a fresh database and an ephemeral loopback port per
//! instance. It speaks TLS 1.2 only, so its signer opts in to TLS 1.2; its Query omits
//! Modify Attribute, so its signer sets `force`. The server assigns its own object
//! identifiers, so the harness cannot put an impostor under a key's handle.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context};
use hsm_signers::config::SignerKind;
use hsm_signers::{Algorithm, KeyIdentifier};
use serde::Deserialize;

use super::pki::{self, Pki};
use super::server::{
    free_port, inventory_endpoint, kmip_config, with_options, with_proxy, Server, ServerSlot,
};
use super::{log_line, CellBackend, Instance, Provider, SignerOptions};
use crate::model::suite::{Capability, InstanceSpec, TlsVersion};
use crate::oracle_terms;
use crate::run::lifeline;

/// A PyKMIP server (`pykmip-server` on PATH) with generated certificates, a fresh
/// database and an ephemeral loopback port per instance, TLS 1.2. No settings:
/// `provider: pykmip`.
#[derive(Clone, Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Pykmip {}

/// The PyKMIP server program, from PATH.
pub fn pykmip_server() -> Result<PathBuf, String> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("pykmip-server"))
        .find(|p| p.is_file())
        .ok_or_else(|| "pykmip-server not found (install python3-pykmip)".to_string())
}

impl Provider for Pykmip {
    fn name(&self) -> &'static str {
        "pykmip"
    }

    fn administers(&self) -> &'static [Capability] {
        &[Capability::Kmip]
    }

    fn unavailable_reason(&self) -> Option<String> {
        pykmip_server().err()
    }

    fn open(&self, _workdir: &Path) -> anyhow::Result<Box<dyn CellBackend>> {
        Ok(Box::new(PykmipCell))
    }
}

struct PykmipCell;

impl CellBackend for PykmipCell {
    fn make(
        &mut self,
        name: &str,
        dir: &Path,
        spec: &InstanceSpec,
    ) -> anyhow::Result<Box<dyn Instance>> {
        let pki = pki::generate(&dir.join("pki"), pki::flaw_of(spec))?;
        let server = with_proxy(start(dir, &pki, spec, 0)?, spec)?;
        Ok(Box::new(PykmipInstance {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            pki,
            spec: spec.clone(),
            server: ServerSlot::running(server),
        }))
    }
}

/// An instance: one PyKMIP server and its database.
struct PykmipInstance {
    name: String,
    dir: PathBuf,
    pki: Pki,
    spec: InstanceSpec,
    server: ServerSlot,
}

impl Instance for PykmipInstance {
    fn signer_kind(&self, options: &SignerOptions<'_>) -> anyhow::Result<SignerKind> {
        let mut c = kmip_config(self.server.signer_port(), &self.pki);
        // PyKMIP speaks TLS 1.2 only, and its Query omits Modify Attribute.
        c.weaken_security_allow_tls12 = true;
        c.force = true;
        Ok(SignerKind::Kmip(with_options(c, options)))
    }

    /// Through the oracle's KMIP client, with the signer's client certificate, straight
    /// to the server (not through a proxy the case put in front of it).
    fn inventory(&mut self) -> anyhow::Result<Vec<KeyIdentifier>> {
        let port = self.server.direct_port(&self.name)?;
        let ids = oracle::kmip::inventory(&inventory_endpoint(port, &self.pki))
            .map_err(|e| anyhow!("{e}"))?;
        Ok(ids.into_iter().map(oracle_terms::key_identifier).collect())
    }

    fn wipe(&mut self) -> anyhow::Result<()> {
        self.server.stop();
        let _ = std::fs::remove_file(self.dir.join("pykmip.db"));
        let server = with_proxy(start(&self.dir, &self.pki, &self.spec, 0)?, &self.spec)?;
        self.server.put(server);
        Ok(())
    }

    fn change_credentials(&mut self) -> anyhow::Result<()> {
        bail!("instance '{}' has no credentials to change", self.name)
    }

    fn replace_key(&mut self, _id: &KeyIdentifier, _alg: Algorithm) -> anyhow::Result<()> {
        bail!("replacing a key under its handle is not supported on PyKMIP (server-assigned identifiers)")
    }

    fn server(&self) -> Option<&ServerSlot> {
        Some(&self.server)
    }

    fn server_mut(&mut self) -> Option<&mut ServerSlot> {
        Some(&mut self.server)
    }

    /// Query, asked by the oracle: what the server says it does.
    fn probe(&mut self) -> anyhow::Result<Vec<super::Observed>> {
        match self.kmip_endpoint() {
            Some(endpoint) => super::probe_kmip(&endpoint?),
            None => Ok(Vec::new()),
        }
    }

    fn kmip_endpoint(&self) -> Option<anyhow::Result<oracle::kmip::Endpoint>> {
        Some(
            self.server
                .direct_port(&self.name)
                .map(|port| inventory_endpoint(port, &self.pki)),
        )
    }

    fn start_server(&mut self) -> anyhow::Result<()> {
        let (dir, pki, spec) = (&self.dir, &self.pki, &self.spec);
        self.server
            .start_again(&self.name, |port| start(dir, pki, spec, port))
    }
}

/// Starts PyKMIP on `port` (0: a free one) with `pki`, the database in `dir`, TLS 1.2
/// with an ECDHE-ECDSA-GCM suite rustls speaks.
fn start(dir: &Path, pki: &Pki, spec: &InstanceSpec, port: u16) -> anyhow::Result<Server> {
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
        0 => free_port()?,
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
    let child = lifeline::die_with_parent(
        Command::new(&bin)
            .arg("-f")
            .arg(&config)
            .arg("-l")
            .arg(dir.join("pykmip.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("pykmip.stderr"))?),
    )
    .spawn()
    .with_context(|| format!("starting {}", bin.display()))?;
    let mut server = Server::new(child, port, libc::SIGINT);
    server.wait_for_port(&dir.join("pykmip.stderr"))?;
    log_line(format!("  PyKMIP listening on 127.0.0.1:{port}"));
    Ok(server)
}
