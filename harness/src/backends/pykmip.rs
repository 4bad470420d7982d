//! Provider `pykmip`: a PyKMIP server (`pykmip-server`, Debian's python3-pykmip) with
//! generated certificates, a fresh database and an ephemeral loopback port per
//! instance. It speaks TLS 1.2 only, so its signer opts in to TLS 1.2; its Query omits
//! Modify Attribute, so its signer sets `force`. The server assigns its own object
//! identifiers, so the harness cannot put an impostor under a key's handle.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context};
use hsm_signers::config::KmipConfig;
use serde::Deserialize;

use super::container::{self, ContainerLaunch};
use super::kmip_server::{KmipServerInstance, KmipServerKind};
use super::pki::{self, Pki};
use super::pykmip_zygote::{Forked, ZYGOTE_ENV};
use super::server::{free_port, Process, Runtime, Server};
use super::{log_line, CellBackend, Instance, Provider};
use crate::model::backend::Placement;
use crate::model::suite::{Capability, InstanceSpec, TlsVersion};
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
    /// A Python server.
    fn start_cost(&self) -> u32 {
        4
    }

    fn name(&self) -> &'static str {
        "pykmip"
    }

    fn signer_type(&self) -> super::SignerType {
        super::SignerType::Kmip
    }

    fn administers(&self) -> &'static [Capability] {
        &[Capability::Kmip]
    }

    fn unavailable_reason(&self, placement: Placement) -> Option<String> {
        match placement {
            Placement::Local => pykmip_server().err(),
            Placement::Container => None,
        }
    }

    /// The `pykmip` image: the same server, from the same Debian package.
    fn container_twin(&self) -> bool {
        true
    }

    fn open(&self, _workdir: &Path, runtime: &Runtime) -> anyhow::Result<Box<dyn CellBackend>> {
        Ok(Box::new(PykmipCell {
            runtime: runtime.clone(),
        }))
    }
}

struct PykmipCell {
    runtime: Runtime,
}

impl CellBackend for PykmipCell {
    fn make(
        &mut self,
        name: &str,
        dir: &Path,
        spec: &InstanceSpec,
    ) -> anyhow::Result<Box<dyn Instance>> {
        let pki = pki::generate(&dir.join("pki"), pki::flaw_of(spec))?;
        Ok(Box::new(KmipServerInstance::start(
            &PykmipServer,
            name,
            dir,
            pki,
            spec,
            &self.runtime,
        )?))
    }
}

/// An instance: one PyKMIP server and its database.
struct PykmipServer;

impl KmipServerKind for PykmipServer {
    fn product(&self) -> &'static str {
        "PyKMIP"
    }

    fn start(
        &self,
        dir: &Path,
        pki: &Pki,
        spec: &InstanceSpec,
        port: u16,
        runtime: &Runtime,
    ) -> anyhow::Result<Server> {
        start(dir, pki, spec, port, runtime)
    }

    fn stderr_file(&self, dir: &Path) -> PathBuf {
        dir.join("pykmip.stderr")
    }

    fn remove_data(&self, dir: &Path) -> anyhow::Result<()> {
        let _ = std::fs::remove_file(dir.join("pykmip.db"));
        Ok(())
    }

    /// PyKMIP speaks TLS 1.2 only, and its Query omits Modify Attribute.
    fn configure(&self, mut c: KmipConfig) -> KmipConfig {
        c.weaken_security_allow_tls12 = true;
        c.force = true;
        c
    }
}

/// Starts PyKMIP on `port` (0: a free one) with `pki`, the database in `dir`, TLS 1.2
/// with an ECDHE-ECDSA-GCM suite rustls speaks; in a container of the `pykmip` image
/// (listening on all its addresses, published on `port`) under a container runtime.
fn start(
    dir: &Path,
    pki: &Pki,
    spec: &InstanceSpec,
    port: u16,
    runtime: &Runtime,
) -> anyhow::Result<Server> {
    if !spec.withhold.is_empty() {
        bail!("PyKMIP cannot withhold operations (the relay can: capability kmip-withhold)");
    }
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
    let (hostname, listen_port) = match runtime {
        Runtime::Local => ("127.0.0.1", port),
        Runtime::Container(_) => ("0.0.0.0", container::SERVER_PORT),
    };
    let config = dir.join("server.conf");
    std::fs::write(
        &config,
        format!(
            "[server]\nhostname={hostname}\nport={listen_port}\ncertificate_path={}\nkey_path={}\n\
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
    let args = [
        OsString::from("-f"),
        config.into_os_string(),
        OsString::from("-l"),
        dir.join("pykmip.log").into_os_string(),
    ];
    let mut server = match (runtime, std::env::var_os(ZYGOTE_ENV)) {
        // The run's zygote forks it: the same server without Python's imports.
        (Runtime::Local, Some(zygote)) => {
            let stderr = dir.join("pykmip.stderr");
            let forked = Forked::start(Path::new(&zygote), &args, &stderr)?;
            // The whole group at once: PyKMIP's orderly stop waits for its policy
            // monitor's 1-s poll, a second of every cell, and nothing needs it (the
            // database is the cell's own; SQLite survives a kill, as the `kill` step
            // shows).
            Server::forked(forked, port, libc::SIGKILL)
        }
        (Runtime::Local, None) => {
            let bin = pykmip_server().map_err(|e| anyhow!(e))?;
            let child = lifeline::die_with_parent(
                Command::new(&bin)
                    .args(&args)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(std::fs::File::create(dir.join("pykmip.stderr"))?),
            )
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
            // SIGINT: PyKMIP stops its policy monitor process too (a SIGKILL would
            // leave it behind), waiting up to its 1-s poll.
            Server::new(child, port, libc::SIGINT)
        }
        (Runtime::Container(engine), _) => {
            let running = engine.start(
                "pykmip",
                &ContainerLaunch {
                    args: args.to_vec(),
                    host_port: Some(port),
                    ..Default::default()
                },
            )?;
            Server::in_container(running, port)
        }
    };
    server.wait_for_port(&dir.join("pykmip.stderr"))?;
    let how = match &server.process {
        Process::Forked(_) => " (forked by the run's PyKMIP zygote)",
        _ => "",
    };
    log_line(format!("  PyKMIP listening on 127.0.0.1:{port}{how}"));
    Ok(server)
}
