//! An instance that is one KMIP server process owning its own storage (PyKMIP, Cosmian
//! KMS): what such kinds share. Each kind says how to start its server, what wiping
//! removes and how its signer is configured; everything the harness does to such an
//! instance (inventory and Query through the oracle's KMIP client, kill and restart,
//! the proxy) is here once.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail};
use hsm_signers::config::{KmipConfig, SignerKind};
use hsm_signers::{Algorithm, KeyIdentifier};

use super::kmip_describe::describe_kmip;
use super::pki::Pki;
use super::server::{
    inventory_endpoint, kmip_config, with_options, with_proxy, Runtime, Server, ServerSlot,
};
use super::{probe_kmip, Description, Instance, Observed, SignerOptions};
use crate::model::suite::InstanceSpec;
use crate::oracle_terms;

/// What differs between kinds of KMIP server.
pub(crate) trait KmipServerKind: Send + Sync {
    /// The product's name, for messages.
    fn product(&self) -> &'static str;

    /// Starts the server for the instance in `dir` on `port` (0: a free one), where
    /// `runtime` runs servers, and waits until it is ready.
    fn start(
        &self,
        dir: &Path,
        pki: &Pki,
        spec: &InstanceSpec,
        port: u16,
        runtime: &Runtime,
    ) -> anyhow::Result<Server>;

    /// Where the server in `dir` writes what it says when it fails to start.
    fn stderr_file(&self, dir: &Path) -> PathBuf;

    /// Removes the server's data in `dir` (the server is stopped).
    fn remove_data(&self, dir: &Path) -> anyhow::Result<()>;

    /// The provider's adjustments to the KMIP signer's configuration.
    fn configure(&self, config: KmipConfig) -> KmipConfig {
        config
    }
}

/// One instance: a server of `kind`, its directory and certificates.
pub(crate) struct KmipServerInstance {
    name: String,
    dir: PathBuf,
    pki: Pki,
    spec: InstanceSpec,
    server: ServerSlot,
    kind: &'static dyn KmipServerKind,
    runtime: Runtime,
}

impl KmipServerInstance {
    /// Starts the server (behind the proxy, when the case asks for one).
    pub fn start(
        kind: &'static dyn KmipServerKind,
        name: &str,
        dir: &Path,
        pki: Pki,
        spec: &InstanceSpec,
        runtime: &Runtime,
    ) -> anyhow::Result<Self> {
        let server = with_proxy(kind.start(dir, &pki, spec, 0, runtime)?, spec)?;
        Ok(KmipServerInstance {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            pki,
            spec: spec.clone(),
            server: ServerSlot::running(server),
            kind,
            runtime: runtime.clone(),
        })
    }
}

impl Instance for KmipServerInstance {
    fn signer_kind(&self, options: &SignerOptions<'_>) -> anyhow::Result<SignerKind> {
        let c = self
            .kind
            .configure(kmip_config(self.server.signer_port(), &self.pki));
        Ok(SignerKind::Kmip(with_options(c, options)))
    }

    /// Through the oracle's KMIP client, with the signer's client certificate (Cosmian
    /// shows a user only the objects that user owns), straight to the server (not
    /// through a proxy the case put in front of it).
    fn inventory(&mut self) -> anyhow::Result<Vec<KeyIdentifier>> {
        let port = self.server.direct_port(&self.name)?;
        let ids = oracle::kmip::inventory(&inventory_endpoint(port, &self.pki))
            .map_err(|e| anyhow!("{e}"))?;
        Ok(ids.into_iter().map(oracle_terms::key_identifier).collect())
    }

    /// Stopped first (the server holds its database open), data removed, started again
    /// on a new port.
    fn wipe(&mut self) -> anyhow::Result<()> {
        self.server.stop();
        self.kind.remove_data(&self.dir)?;
        let server = with_proxy(
            self.kind
                .start(&self.dir, &self.pki, &self.spec, 0, &self.runtime)?,
            &self.spec,
        )?;
        self.server.put(server);
        Ok(())
    }

    fn change_credentials(&mut self) -> anyhow::Result<()> {
        bail!("instance '{}' has no credentials to change", self.name)
    }

    fn replace_key(&mut self, _id: &KeyIdentifier, _alg: Algorithm) -> anyhow::Result<()> {
        bail!(
            "replacing a key under its handle is not supported on {} (server-assigned identifiers)",
            self.kind.product()
        )
    }

    fn server(&self) -> Option<&ServerSlot> {
        Some(&self.server)
    }

    fn server_mut(&mut self) -> Option<&mut ServerSlot> {
        Some(&mut self.server)
    }

    fn start_server(&mut self) -> anyhow::Result<()> {
        let (kind, dir, pki, spec) = (self.kind, &self.dir, &self.pki, &self.spec);
        let runtime = &self.runtime;
        self.server.start_again(
            &self.name,
            |port| kind.start(dir, pki, spec, port, runtime),
            |server| server.wait_for_port(&kind.stderr_file(dir)),
        )
    }

    /// Query, asked by the oracle: what the server says it does.
    fn probe(&mut self) -> anyhow::Result<Vec<Observed>> {
        match self.kmip_endpoint() {
            Some(endpoint) => probe_kmip(&endpoint?),
            None => Ok(Vec::new()),
        }
    }

    /// What the server says about itself, asked by the oracle's client.
    fn describe(&mut self) -> anyhow::Result<Description> {
        match self.kmip_endpoint() {
            Some(endpoint) => describe_kmip(&endpoint?),
            None => Ok(Description::default()),
        }
    }

    fn kmip_endpoint(&self) -> Option<anyhow::Result<oracle::kmip::Endpoint>> {
        Some(
            self.server
                .direct_port(&self.name)
                .map(|port| inventory_endpoint(port, &self.pki)),
        )
    }
}
