//! Provider `container` (`hsm-harness run --provider container`): the container twins
//! of the local backends, started through `testcontainers` over the Docker API (podman
//! through `DOCKER_HOST`).
//!
//! A backend file does not change: its provider (`softhsm`, `relay`, `pykmip`) still
//! says what comes up and how it is configured; under this provider each process it
//! would have started on the host runs in a container of its image instead
//! (`containers/`, built by `ci/build-images`):
//!
//! - a cell's SoftHSMv2 is one `softhsm2` container serving its tokens through
//!   `p11-kit server` on a unix socket in the cell's work directory; the signers and the
//!   harness's own sessions load `p11-kit-client.so` (so a crashing module stays out of
//!   the harness's process);
//! - each relay is a `relay` container whose module is that same p11-kit client;
//! - each PyKMIP server is a `pykmip` container.
//!
//! Every container mounts the cell's work directory at the same path (configurations,
//! certificates, PIN files and the socket keep their host paths), runs as the host user
//! (so bind-mounted files keep their owner and their 0600 modes), publishes its port on
//! 127.0.0.1 only, and carries the labels of its run and cell: whatever ends a cell or
//! the run (a failure, a timeout, Ctrl-C, SIGKILL), the runner or the run's janitor
//! removes what is left by label ([`remove_labelled`]). A container's logs go to the
//! cell's log (the JUnit `system-out`) when it is removed.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use testcontainers::bollard::query_parameters::{KillContainerOptions, RemoveContainerOptions};
use testcontainers::bollard::Docker;
use testcontainers::core::{ContainerPort, Mount, WaitFor};
use testcontainers::runners::SyncRunner;
use testcontainers::{Container, GenericImage, ImageExt};

use super::log_line;

/// The label every container of a run carries, with the run's work directory.
pub const RUN_LABEL: &str = "org.hsm-harness.run";
/// The label every container of a cell carries, with the cell's work directory.
pub const CELL_LABEL: &str = "org.hsm-harness.cell";
/// Where the images are: `IMAGE_PREFIX/<name>:<tag>`, as `ci/build-images` tags them.
pub const IMAGE_PREFIX: &str = "localhost/hsm-harness";
/// The tag of the images used; `HSM_HARNESS_IMAGE_TAG` overrides it.
pub const DEFAULT_TAG: &str = "latest";
/// The port servers listen on inside their containers.
pub const SERVER_PORT: u16 = 5696;
/// What the softhsm2 image prints once its socket accepts connections.
const SOFTHSM_READY: &str = "hsm-harness softhsm2 ready";
/// Environment variables of the cell process a server container gets too: the p11-kit
/// client's server address and the PKCS#11 shim's configuration (a local server
/// inherits them).
const FORWARDED_ENV: &[&str] = &["P11_KIT_SERVER_ADDRESS", p11shim::config::CONFIG_VAR];
/// How long a container may take to be ready.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Milliseconds this process spent starting containers (a cell's start-up cost).
static STARTUP_MS: AtomicU64 = AtomicU64::new(0);

/// Milliseconds this process has spent starting containers so far.
pub fn startup_millis() -> u64 {
    STARTUP_MS.load(Ordering::Relaxed)
}

/// Where the Docker API is expected, for messages: `DOCKER_HOST` or the default socket.
fn engine_address() -> String {
    std::env::var("DOCKER_HOST")
        .map(|h| format!("DOCKER_HOST={h}"))
        .unwrap_or_else(|_| "/var/run/docker.sock (DOCKER_HOST is not set)".to_string())
}

/// A small runtime for the Docker API calls testcontainers does not make (kill,
/// removal by label, the readiness ping).
fn block_on<F: std::future::Future>(f: F) -> anyhow::Result<F::Output> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a runtime for the Docker API")?;
    Ok(rt.block_on(f))
}

fn docker() -> anyhow::Result<Docker> {
    Docker::connect_with_defaults()
        .map_err(|e| anyhow!("no container engine at {}: {e}", engine_address()))
}

/// Whether a container engine answers; the error names where it was asked and how to
/// get one.
pub fn check_engine() -> anyhow::Result<()> {
    let docker = docker()?;
    let answer =
        block_on(async { tokio::time::timeout(Duration::from_secs(5), docker.ping()).await })?;
    match answer {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(anyhow!(
            "no container engine answers at {}: {e} (start one, e.g. `eval \"$(ci/container-engine)\"`, and set DOCKER_HOST)",
            engine_address()
        )),
        Err(_) => Err(anyhow!(
            "the container engine at {} did not answer within 5 s",
            engine_address()
        )),
    }
}

/// Removes every container carrying `label=value` (running or not), with its
/// volumes; returns how many. Used by the runner after a cell that did not end by
/// itself, and by the run's janitor.
pub fn remove_labelled(label: &str, value: &str) -> anyhow::Result<usize> {
    let ids: Vec<String> = list(label)?
        .into_iter()
        .filter(|(_, v)| v == value)
        .map(|(id, _)| id)
        .collect();
    let docker = docker()?;
    block_on(async {
        let mut removed = 0;
        for id in &ids {
            let options = RemoveContainerOptions {
                force: true,
                v: true,
                ..Default::default()
            };
            if docker.remove_container(id, Some(options)).await.is_ok() {
                removed += 1;
            }
        }
        removed
    })
}

/// The values `label` has on the containers that carry it (running or not): for
/// checks that a run left nothing behind.
pub fn labelled(label: &str) -> anyhow::Result<Vec<String>> {
    Ok(list(label)?.into_iter().map(|(_, v)| v).collect())
}

/// The containers (any state) carrying `label`: id and the label's value.
///
/// Read as plain JSON: bollard's typed list refuses podman's container state
/// `stopped`, which a container passes through while it is removed.
fn list(label: &str) -> anyhow::Result<Vec<(String, String)>> {
    let filters = serde_json::json!({ "label": [label] }).to_string();
    let path = format!(
        "/containers/json?all=true&filters={}",
        percent_encode(&filters)
    );
    let body = get_json(&path)?;
    let found = body
        .as_array()
        .ok_or_else(|| anyhow!("the engine's container list is not a JSON array"))?;
    Ok(found
        .iter()
        .filter_map(|c| {
            let id = c.get("Id")?.as_str()?.to_string();
            let value = c.get("Labels")?.get(label)?.as_str()?.to_string();
            Some((id, value))
        })
        .collect())
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An HTTP/1.0 GET to the engine's unix socket (`DOCKER_HOST=unix://...` or the
/// default socket), its body as JSON.
fn get_json(path: &str) -> anyhow::Result<serde_json::Value> {
    use std::io::{Read, Write};
    let socket = match std::env::var("DOCKER_HOST") {
        Ok(h) => match h.strip_prefix("unix://") {
            Some(p) => PathBuf::from(p),
            None => bail!("listing containers needs a unix socket engine (DOCKER_HOST={h})"),
        },
        Err(_) => PathBuf::from("/var/run/docker.sock"),
    };
    let mut stream = std::os::unix::net::UnixStream::connect(&socket)
        .with_context(|| format!("connecting to the engine at {}", socket.display()))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: engine\r\n\r\n")?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("the engine's answer has no body"))?;
    let status = head.lines().next().unwrap_or_default();
    if !status.contains(" 200 ") {
        bail!("the engine answered {status}: {}", body.trim());
    }
    serde_json::from_str(body).map_err(|e| anyhow!("the engine's answer is not JSON: {e}"))
}

/// The container side of one cell: where its containers come from and what they share.
#[derive(Debug)]
pub struct Engine {
    /// The cell's work directory: mounted into every container at the same path.
    workdir: PathBuf,
    /// The run's work directory (the cell's parent), for the run label.
    run: PathBuf,
    tag: String,
    /// `uid:gid` of this process.
    user: String,
}

impl Engine {
    /// The engine for the cell in `workdir`; fails when no engine answers.
    pub fn for_cell(workdir: &Path) -> anyhow::Result<Engine> {
        check_engine()?;
        // SAFETY: getuid/getgid cannot fail and touch no memory.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        Ok(Engine {
            workdir: workdir.to_path_buf(),
            run: workdir.parent().unwrap_or(workdir).to_path_buf(),
            tag: std::env::var("HSM_HARNESS_IMAGE_TAG").unwrap_or_else(|_| DEFAULT_TAG.into()),
            user: format!("{uid}:{gid}"),
        })
    }

    /// The image `name`, as this run uses it.
    pub fn image(&self, name: &str) -> String {
        format!("{IMAGE_PREFIX}/{name}:{}", self.tag)
    }

    /// Starts a container of image `name` as `launch` says and waits until it is ready
    /// (`ready_line` on its stdout, when given; else once it runs).
    pub fn start(&self, name: &str, launch: &ContainerLaunch) -> anyhow::Result<Running> {
        let began = Instant::now();
        let mut image = GenericImage::new(format!("{IMAGE_PREFIX}/{name}"), self.tag.clone());
        if let Some(line) = launch.ready_line {
            image = image.with_wait_for(WaitFor::message_on_stdout(line));
        }
        let mut request = image
            .with_user(self.user.clone())
            .with_label(RUN_LABEL, self.run.display().to_string())
            .with_label(CELL_LABEL, self.workdir.display().to_string())
            .with_mount(Mount::bind_mount(
                self.workdir.display().to_string(),
                self.workdir.display().to_string(),
            ))
            .with_startup_timeout(STARTUP_TIMEOUT);
        for extra in &launch.mounts {
            request = request.with_mount(Mount::bind_mount(
                extra.display().to_string(),
                extra.display().to_string(),
            ));
        }
        for var in FORWARDED_ENV {
            if let Ok(value) = std::env::var(var) {
                request = request.with_env_var(*var, value);
            }
        }
        for (var, value) in &launch.env {
            request = request.with_env_var(var.clone(), value.clone());
        }
        if !launch.args.is_empty() {
            request =
                request.with_cmd(launch.args.iter().map(|a| a.to_string_lossy().into_owned()));
        }
        if let Some(port) = launch.host_port {
            request = request
                .with_mapped_port(port, ContainerPort::Tcp(SERVER_PORT))
                // Published on loopback only (testcontainers binds every address).
                .with_host_config_modifier(|config| {
                    if let Some(bindings) = config.port_bindings.as_mut() {
                        for binding in bindings.values_mut().flatten().flatten() {
                            binding.host_ip = Some("127.0.0.1".to_string());
                        }
                    }
                });
        }
        let image_name = self.image(name);
        let container = request.start().map_err(|e| {
            anyhow!(
                "starting a container of {image_name}: {e} (are the images built? ci/build-images)"
            )
        })?;
        let took = began.elapsed();
        STARTUP_MS.fetch_add(took.as_millis() as u64, Ordering::Relaxed);
        let running = Running {
            container: Some(container),
            image: image_name,
        };
        log_line(format!(
            "  container {} of {} ready in {} ms",
            running.short_id(),
            running.image,
            took.as_millis()
        ));
        Ok(running)
    }
}

/// How to start one container: its command line, environment and port.
#[derive(Debug, Default)]
pub struct ContainerLaunch {
    /// The arguments to the image's entry point.
    pub args: Vec<OsString>,
    /// Extra environment (besides the forwarded variables).
    pub env: Vec<(String, String)>,
    /// The host port (on 127.0.0.1) that reaches [`SERVER_PORT`] inside.
    pub host_port: Option<u16>,
    /// Host files or directories to mount at the same path (the cell's work directory
    /// always is).
    pub mounts: Vec<PathBuf>,
    /// The line on stdout that says the container is ready.
    pub ready_line: Option<&'static str>,
}

/// A started container. Dropping it removes it, after its logs went to the cell's log.
pub struct Running {
    container: Option<Container<GenericImage>>,
    image: String,
}

impl Running {
    fn short_id(&self) -> String {
        self.container
            .as_ref()
            .map(|c| c.id().chars().take(12).collect())
            .unwrap_or_default()
    }

    fn id(&self) -> anyhow::Result<String> {
        self.container
            .as_ref()
            .map(|c| c.id().to_string())
            .ok_or_else(|| anyhow!("the container is gone"))
    }

    /// SIGKILL to the container's process: no goodbye to clients. The container stays
    /// (stopped), with its port mapping, for [`Running::start_again`].
    pub fn kill(&mut self) -> anyhow::Result<()> {
        let id = self.id()?;
        let docker = docker()?;
        block_on(async {
            docker
                .kill_container(
                    &id,
                    Some(KillContainerOptions {
                        signal: "SIGKILL".to_string(),
                    }),
                )
                .await
        })?
        .map_err(|e| anyhow!("killing container {}: {e}", self.short_id()))?;
        // The engine reports the kill before the container is down; wait for it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.running() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Stops the container: SIGTERM (or the image's stop signal), SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        if let Some(c) = &self.container {
            let _ = c.stop_with_timeout(Some(grace.as_secs() as i32));
        }
    }

    /// Starts the stopped container again: same ports, same mounts.
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        let began = Instant::now();
        let c = self
            .container
            .as_ref()
            .ok_or_else(|| anyhow!("the container is gone"))?;
        c.start()
            .map_err(|e| anyhow!("starting container {} again: {e}", self.short_id()))?;
        STARTUP_MS.fetch_add(began.elapsed().as_millis() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Whether the container's process runs.
    pub fn running(&self) -> bool {
        self.container
            .as_ref()
            .and_then(|c| c.is_running().ok())
            .unwrap_or(false)
    }

    /// Why the container is not running, if it is not (its exit code).
    pub fn exited(&self) -> Option<String> {
        let c = self.container.as_ref()?;
        match c.is_running() {
            Ok(true) => None,
            Ok(false) => Some(match c.exit_code() {
                Ok(Some(code)) => format!("the container exited with status {code}"),
                _ => "the container stopped".to_string(),
            }),
            Err(e) => Some(format!("the container is gone: {e}")),
        }
    }

    /// The last lines of the container's output.
    pub fn tail(&self, lines: usize) -> String {
        let text = self.logs();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Everything the container wrote so far, stdout then stderr.
    pub fn logs(&self) -> String {
        let Some(c) = &self.container else {
            return String::new();
        };
        let mut text = String::from_utf8_lossy(&c.stdout_to_vec().unwrap_or_default()).into_owned();
        text.push_str(&String::from_utf8_lossy(
            &c.stderr_to_vec().unwrap_or_default(),
        ));
        text
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let logs = self.logs();
        let id = self.short_id();
        log_line(format!("---- log of container {id} ({}) ----", self.image));
        for line in logs.lines() {
            log_line(format!("  | {line}"));
        }
        log_line(format!("---- end of the log of container {id} ----"));
        // testcontainers removes the container (with its volumes) when it is dropped.
        self.container = None;
    }
}

/// Where Debian and others put p11-kit's client module.
pub const P11_KIT_CLIENT_PATHS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so",
    "/usr/lib/aarch64-linux-gnu/pkcs11/p11-kit-client.so",
    "/usr/lib/pkcs11/p11-kit-client.so",
    "/usr/lib64/pkcs11/p11-kit-client.so",
];

/// p11-kit's client module on this machine; the error says what to install.
pub fn p11_kit_client() -> Result<PathBuf, String> {
    P11_KIT_CLIENT_PATHS
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or_else(|| {
            format!(
                "p11-kit-client.so not found in {} (install p11-kit-modules)",
                P11_KIT_CLIENT_PATHS.join(", ")
            )
        })
}

/// A cell's SoftHSMv2 in a `softhsm2` container, serving its tokens on `socket`.
pub fn start_softhsm(engine: &Engine, socket: &Path) -> anyhow::Result<Running> {
    engine.start(
        "softhsm2",
        &ContainerLaunch {
            env: vec![("P11_SOCKET".to_string(), socket.display().to_string())],
            ready_line: Some(SOFTHSM_READY),
            ..Default::default()
        },
    )
}
