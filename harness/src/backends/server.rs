//! Server processes that serve an instance (the relay, PyKMIP, Cosmian KMS): starting
//! and waiting for them, stopping them, the TCP proxy a case may put in front, and the
//! KMIP signer configuration and oracle endpoint that reach them.

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use hsm_signers::config::KmipConfig;

use super::container::{self, Engine};
use super::pki::Pki;
use super::proxy::{Fault, Proxy, Stats};
use super::pykmip_zygote::Forked;
use super::{log_line, SignerOptions};
use crate::model::suite::{InstanceSpec, KmipOptions};

/// Where a backend's server processes run: children of the cell's process on this
/// host, or containers of the backend's image ([`container`]).
#[derive(Clone, Debug)]
pub enum Runtime {
    Local,
    Container(Arc<Engine>),
}

impl Runtime {
    /// The engine, when servers run in containers.
    pub fn engine(&self) -> Option<&Engine> {
        match self {
            Runtime::Local => None,
            Runtime::Container(e) => Some(e),
        }
    }
}

/// A server process: a child of this process, one the run's PyKMIP zygote forked for
/// this cell, or a container.
pub(crate) enum Process {
    Local(Child),
    Forked(Forked),
    Container(Box<container::Running>),
}

impl Process {
    /// Why the process is not running, if it is not.
    fn exited(&mut self) -> Option<String> {
        match self {
            Process::Local(child) => match child.try_wait() {
                Ok(Some(status)) => Some(format!("exited ({status})")),
                Ok(None) => None,
                Err(e) => Some(format!("is lost: {e}")),
            },
            Process::Forked(f) => f.exited().then(|| "exited".to_string()),
            Process::Container(c) => c.exited(),
        }
    }

    /// SIGKILL, and wait until it is gone.
    fn kill(&mut self) {
        match self {
            Process::Local(child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            Process::Forked(f) => f.stop(libc::SIGKILL, Duration::from_secs(3)),
            Process::Container(c) => {
                if let Err(e) = c.kill() {
                    log_line(format!("  {e:#}"));
                }
            }
        }
    }

    /// The last lines of what it said: `stderr` for a local process, the container's
    /// log for a container.
    fn tail(&self, stderr: &Path) -> String {
        match self {
            Process::Local(_) | Process::Forked(_) => {
                let text = std::fs::read_to_string(stderr).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                lines[lines.len().saturating_sub(10)..].join("\n")
            }
            Process::Container(c) => c.tail(10),
        }
    }
}

/// A server process serving an instance, perhaps behind the harness's TCP proxy.
/// Dropping it stops the process (its stop signal, then SIGKILL after 3 s) or removes
/// its container.
pub struct Server {
    pub(crate) process: Process,
    /// The port on 127.0.0.1 that reaches the server (a container's published port).
    pub(crate) port: u16,
    /// The signal that stops it (then SIGKILL after 3 s): what ends it promptly and
    /// as the case needs (see each kind's `start`).
    pub(crate) stop_signal: i32,
    pub(crate) proxy: Option<Proxy>,
}

impl Server {
    pub fn new(child: Child, port: u16, stop_signal: i32) -> Self {
        Server {
            process: Process::Local(child),
            port,
            stop_signal,
            proxy: None,
        }
    }

    /// A server the run's PyKMIP zygote forked, on `port`.
    pub fn forked(forked: Forked, port: u16, stop_signal: i32) -> Self {
        Server {
            process: Process::Forked(forked),
            port,
            stop_signal,
            proxy: None,
        }
    }

    /// A server in a container, published on `port`.
    pub fn in_container(running: container::Running, port: u16) -> Self {
        Server {
            process: Process::Container(Box::new(running)),
            port,
            stop_signal: libc::SIGTERM,
            proxy: None,
        }
    }

    /// The port signers connect to: the proxy's, if there is one.
    pub fn signer_port(&self) -> u16 {
        self.proxy.as_ref().map_or(self.port, |p| p.port())
    }

    /// Waits (15 s at most) until the server accepts TCP connections on its port.
    pub fn wait_for_port(&mut self, stderr: &Path) -> anyhow::Result<()> {
        let port = self.port;
        self.wait_until(stderr, || {
            TcpStream::connect((Ipv4Addr::LOCALHOST, port))
                .ok()
                .map(|_| port)
        })?;
        Ok(())
    }

    /// Waits (15 s at most) until `ready` gives the port, failing early with the
    /// server's last words (`stderr`, or the container's log) if it stops.
    pub(crate) fn wait_until(
        &mut self,
        stderr: &Path,
        ready: impl Fn() -> Option<u16>,
    ) -> anyhow::Result<u16> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(port) = ready() {
                return Ok(port);
            }
            if let Some(why) = self.process.exited() {
                bail!(
                    "the server {why} before it was ready:\n{}",
                    self.process.tail(stderr)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "the server was not ready within 15 s:\n{}",
                    self.process.tail(stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.proxy = None;
        match &mut self.process {
            Process::Local(child) => {
                // Already reaped (killed by a step, say): its pid may be another
                // process's by now.
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                // SAFETY: kill(2) on our own child's pid, not yet reaped; no memory
                // involved.
                unsafe {
                    libc::kill(child.id() as libc::pid_t, self.stop_signal);
                }
                let deadline = Instant::now() + Duration::from_secs(3);
                while Instant::now() < deadline {
                    if let Ok(Some(_)) = child.try_wait() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
            Process::Forked(f) => f.stop(self.stop_signal, Duration::from_secs(3)),
            // Removed (its log kept) when the container handle drops, right after.
            Process::Container(c) => c.stop(Duration::from_secs(3)),
        }
    }
}

/// The server of an instance, which a case may kill and start again, and the proxy in
/// front of it. Killing keeps the proxy (clients see a dead upstream, not a closed
/// port) and the port the server comes back on.
#[derive(Default)]
pub struct ServerSlot {
    server: Option<Server>,
}

impl ServerSlot {
    pub fn running(server: Server) -> Self {
        ServerSlot {
            server: Some(server),
        }
    }

    /// Stops the server (dropping it) before its data is changed underneath.
    pub fn stop(&mut self) {
        self.server = None;
    }

    /// Puts a new server in place (after [`ServerSlot::stop`]).
    pub fn put(&mut self, server: Server) {
        self.server = Some(server);
    }

    /// SIGKILL: no goodbye to clients. The proxy in front of it, if any, stays up; a
    /// container stays, stopped.
    pub fn kill(&mut self, name: &str) -> anyhow::Result<()> {
        let s = self
            .server
            .as_mut()
            .ok_or_else(|| anyhow!("instance '{name}' has no running server process"))?;
        s.process.kill();
        log_line(format!(
            "  killed the server of instance '{name}' (port {})",
            s.port
        ));
        Ok(())
    }

    /// Starts a killed server again on the port it had, with its data: a container is
    /// started again and `ready` waits for it; a local server is started anew with
    /// `start(port)` and the old proxy put back in front. Signers find it where it was.
    /// Refused while the server still runs.
    pub fn start_again(
        &mut self,
        name: &str,
        start: impl FnOnce(u16) -> anyhow::Result<Server>,
        ready: impl FnOnce(&mut Server) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let Some(mut old) = self.server.take() else {
            bail!("instance '{name}' has no server process");
        };
        if old.process.exited().is_none() {
            self.server = Some(old);
            bail!("the server of instance '{name}' is running; kill it first");
        }
        let port = old.port;
        if let Process::Container(c) = &mut old.process {
            let started = c.start_again().and_then(|()| ready(&mut old));
            self.server = Some(old);
            started?;
            log_line(format!(
                "  started the container of instance '{name}' again on port {port}"
            ));
            return Ok(());
        }
        let proxy = old.proxy.take();
        drop(old);
        let mut server = start(port)?;
        server.proxy = proxy;
        log_line(format!(
            "  started the server of instance '{name}' again on port {port}"
        ));
        self.server = Some(server);
        Ok(())
    }

    /// Changes what the proxy in front of the server does to new connections.
    pub fn set_proxy_fault(&self, name: &str, fault: &Fault) -> anyhow::Result<()> {
        let proxy = self
            .server
            .as_ref()
            .and_then(|s| s.proxy.as_ref())
            .ok_or_else(|| anyhow!("instance '{name}' has no proxy"))?;
        proxy.set_fault(fault.clone());
        log_line(format!("  proxy of instance '{name}' now: {fault:?}"));
        Ok(())
    }

    /// What went through the proxy so far.
    pub fn traffic(&self, name: &str) -> anyhow::Result<Stats> {
        self.server
            .as_ref()
            .and_then(|s| s.proxy.as_ref())
            .map(|p| p.stats())
            .ok_or_else(|| anyhow!("instance '{name}' has no proxy"))
    }

    /// The port signers connect to (0 when there is no server).
    pub fn signer_port(&self) -> u16 {
        self.server.as_ref().map_or(0, |s| s.signer_port())
    }

    /// For a server in a container: writes the container's log so far to `path`,
    /// where a local server's output would be.
    pub fn copy_container_log(&self, path: &Path) {
        if let Some(Server {
            process: Process::Container(c),
            ..
        }) = &self.server
        {
            if let Err(e) = std::fs::write(path, c.logs()) {
                log_line(format!(
                    "  cannot copy the container's log to {}: {e}",
                    path.display()
                ));
            }
        }
    }

    /// The server's own port, not the proxy's: the oracle goes straight to it.
    pub fn direct_port(&self, name: &str) -> anyhow::Result<u16> {
        self.server
            .as_ref()
            .map(|s| s.port)
            .ok_or_else(|| anyhow!("instance '{name}' has no server running"))
    }
}

/// Puts the harness's TCP proxy in front of `server` when the instance asks for one.
pub(crate) fn with_proxy(mut server: Server, spec: &InstanceSpec) -> anyhow::Result<Server> {
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

/// A free loopback port, found by binding port 0.
pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// Two distinct free loopback ports (both listeners are held until both are known, so
/// the two differ).
pub(crate) fn two_free_ports() -> anyhow::Result<(u16, u16)> {
    let a = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let b = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok((a.local_addr()?.port(), b.local_addr()?.port()))
}

/// The KMIP signer configuration for a server on `port` with the instance's PKI: its
/// CA, and the client certificate and key.
pub(crate) fn kmip_config(port: u16, pki: &Pki) -> KmipConfig {
    let mut c = KmipConfig::new("127.0.0.1", port);
    c.server_ca_cert_path = Some(pki.ca_cert.clone());
    c.client_cert_path = Some(pki.client_cert.clone());
    c.client_cert_private_key_path = Some(pki.client_key.clone());
    c
}

/// Applies a case's KMIP options to the provider's configuration.
pub(crate) fn with_options(mut c: KmipConfig, options: &SignerOptions<'_>) -> KmipConfig {
    apply(&mut c, options.kmip, options.other_ca.clone());
    c
}

fn apply(c: &mut KmipConfig, options: Option<&KmipOptions>, other_ca: Option<PathBuf>) {
    let Some(o) = options else { return };
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
}

/// The oracle's view of a KMIP instance: the instance's CA and client certificate, as
/// the signers get them, straight to the server's own port.
pub(crate) fn inventory_endpoint(port: u16, pki: &Pki) -> oracle::kmip::Endpoint {
    let mut e = oracle::kmip::Endpoint::new("127.0.0.1", port, &pki.harness_trust);
    e.identity = Some(oracle::kmip::ClientIdentity {
        cert: pki.client_cert.clone(),
        key: pki.client_key.clone(),
    });
    e
}
