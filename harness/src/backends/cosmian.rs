//! Provider `cosmian`: Cosmian KMS (`cosmian_kms`, 5.28, non-FIPS build) with
//! generated certificates, a fresh SQLite database and ephemeral loopback ports per
//! instance, reached over its KMIP socket server with the signer's default (TLS 1.3)
//! settings: where the binary is, the configuration file one instance's server runs
//! with, and the instance itself.
//!
//! The server is configured through one TOML file passed with `-c`: with `-c`, Cosmian
//! ignores its command-line flags, its `KMS_*` environment variables and
//! `/etc/cosmian/kms.toml`, so nothing on the machine changes what a cell gets. Its
//! KMIP binary (TTLV over TLS) "socket server" is the port the KMIP signer talks to;
//! the HTTP server cannot be switched off, so it listens on a second loopback port
//! nobody uses.
//!
//! Facts this relies on (read in the 5.28.0 source, `src/config/`, `src/tls_config.rs`,
//! `src/socket_server.rs`):
//! - PEM server certificate and key (PKCS#8) are accepted (`tls_cert_file`,
//!   `tls_key_file`); PKCS#12 is an alternative we do not need.
//! - The socket server refuses to start without `clients_ca_cert_file`; it takes the
//!   user name from the client certificate's common name, and every object belongs to
//!   the user that made it (so the harness's own inventory connection must present
//!   the same certificate as the signer).
//! - TLS: by default TLS 1.2 and 1.3 (OpenSSL's "intermediate" profile). A cipher list
//!   of TLS 1.3 suites only switches to TLS 1.3 only. TLS 1.2 only cannot be had: any
//!   list with a TLS 1.2 suite keeps the maximum at TLS 1.3.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context};

use serde::Deserialize;

use super::kmip_server::{KmipServerInstance, KmipServerKind};
use super::pki::{self, Pki};
use super::server::{two_free_ports, Runtime, Server};
use super::{log_line, CellBackend, Instance, Provider};
use crate::model::backend::Placement;
use crate::model::suite::{Capability, InstanceSpec, TlsVersion};
use crate::run::lifeline;

/// The version `ci/install-cosmian` builds.
pub const VERSION: &str = "5.28.0";

/// Names the binary explicitly; wins over the cache.
pub const BIN_VAR: &str = "COSMIAN_KMS_BIN";

/// The TLS 1.3 suites given to the server to make it TLS 1.3 only (OpenSSL's names).
const TLS13_ONLY_SUITES: &str =
    "TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256";

/// Where `ci/install-cosmian` puts the binary:
/// `${HSM_HARNESS_CACHE:-$HOME/.cache/hsm-harness}/cosmian-kms-<VERSION>/bin/cosmian_kms`.
/// `None` when neither variable is set.
pub fn cached_binary() -> Option<PathBuf> {
    let cache = match std::env::var_os("HSM_HARNESS_CACHE").filter(|v| !v.is_empty()) {
        Some(c) => PathBuf::from(c),
        None => PathBuf::from(std::env::var_os("HOME").filter(|v| !v.is_empty())?)
            .join(".cache")
            .join("hsm-harness"),
    };
    Some(
        cache
            .join(format!("cosmian-kms-{VERSION}"))
            .join("bin")
            .join("cosmian_kms"),
    )
}

/// The `cosmian_kms` binary: `$COSMIAN_KMS_BIN` if set (it must exist), else the
/// cache path of [`cached_binary`]. The error says how to get it.
pub fn binary() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os(BIN_VAR).filter(|v| !v.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!(
                "{BIN_VAR}={} is not a file (run ci/install-cosmian, or unset {BIN_VAR})",
                p.display()
            ))
        };
    }
    match cached_binary() {
        Some(p) if p.is_file() => Ok(p),
        Some(p) => Err(format!(
            "Cosmian KMS not found at {} (run ci/install-cosmian, or set {BIN_VAR})",
            p.display()
        )),
        None => Err(format!(
            "Cosmian KMS not found: neither HSM_HARNESS_CACHE nor HOME is set \
             (run ci/install-cosmian and set {BIN_VAR})"
        )),
    }
}

/// Why the server cannot run with these TLS versions, if it cannot.
pub fn check_versions(versions: Option<&[TlsVersion]>) -> Result<(), String> {
    match versions {
        Some(v) if v.contains(&TlsVersion::Tls12) && !v.contains(&TlsVersion::Tls13) => Err(
            "Cosmian KMS cannot be limited to TLS 1.2: it always offers TLS 1.3 too \
             (the backend should not list tls12-only)"
                .to_string(),
        ),
        _ => Ok(()),
    }
}

/// What one server process of an instance is started with.
pub struct Settings<'a> {
    /// The instance's directory: the database and Cosmian's work directories go below.
    pub dir: &'a Path,
    pub pki: &'a Pki,
    /// The KMIP socket server's loopback port.
    pub kmip_port: u16,
    /// The HTTP server's loopback port (unused, but it always starts).
    pub http_port: u16,
    /// `None`: Cosmian's default (TLS 1.2 and 1.3).
    pub versions: Option<&'a [TlsVersion]>,
}

/// The SQLite database directory of an instance (wiping removes it).
pub fn database_dir(dir: &Path) -> PathBuf {
    dir.join("sqlite-data")
}

/// TOML basic string: quotes and backslashes escaped, control characters refused
/// (paths come from the work directory, which the harness chose).
fn quoted(path: &Path) -> Result<String, String> {
    let s = path
        .to_str()
        .ok_or_else(|| format!("{} is not UTF-8", path.display()))?;
    if s.chars().any(char::is_control) {
        return Err(format!("{s:?} holds control characters"));
    }
    Ok(format!(
        "\"{}\"",
        s.replace('\\', "\\\\").replace('"', "\\\"")
    ))
}

/// The configuration file's text.
pub fn config(s: &Settings<'_>) -> Result<String, String> {
    check_versions(s.versions)?;
    let tls13_only = s
        .versions
        .is_some_and(|v| v.contains(&TlsVersion::Tls13) && !v.contains(&TlsVersion::Tls12));
    let mut t = String::new();
    // Writing to a String cannot fail; the results are ignored for that reason.
    let _ = writeln!(t, "[db]");
    let _ = writeln!(t, "database_type = \"sqlite\"");
    let _ = writeln!(t, "sqlite_path = {}", quoted(&database_dir(s.dir))?);
    let _ = writeln!(t, "clear_database = false");
    let _ = writeln!(t, "\n[socket_server]");
    let _ = writeln!(t, "socket_server_start = true");
    let _ = writeln!(t, "socket_server_hostname = \"127.0.0.1\"");
    let _ = writeln!(t, "socket_server_port = {}", s.kmip_port);
    let _ = writeln!(t, "\n[http]");
    let _ = writeln!(t, "hostname = \"127.0.0.1\"");
    let _ = writeln!(t, "port = {}", s.http_port);
    let _ = writeln!(t, "\n[tls]");
    let _ = writeln!(t, "tls_cert_file = {}", quoted(&s.pki.server_cert)?);
    let _ = writeln!(t, "tls_key_file = {}", quoted(&s.pki.server_key)?);
    let _ = writeln!(t, "clients_ca_cert_file = {}", quoted(&s.pki.ca_cert)?);
    if tls13_only {
        let _ = writeln!(t, "tls_cipher_suites = \"{TLS13_ONLY_SUITES}\"");
    }
    // A relative root would be taken relative to $HOME: keep everything in the instance.
    let _ = writeln!(t, "\n[workspace]");
    let _ = writeln!(t, "root_data_path = {}", quoted(&s.dir.join("kms-root"))?);
    let _ = writeln!(t, "tmp_path = {}", quoted(&s.dir.join("kms-tmp"))?);
    let _ = writeln!(t, "\n[logging]");
    let _ = writeln!(t, "rust_log = \"warn\"");
    let _ = writeln!(t, "ansi_colors = false");
    Ok(t)
}

/// A Cosmian KMS server (binary from $COSMIAN_KMS_BIN or ci/install-cosmian's cache)
/// with generated certificates, a fresh SQLite database and ephemeral loopback ports
/// per instance, TLS 1.2 and 1.3. No settings: `provider: cosmian`.
#[derive(Clone, Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Cosmian {}

impl Provider for Cosmian {
    /// A KMS server.
    fn start_cost(&self) -> u32 {
        3
    }

    fn name(&self) -> &'static str {
        "cosmian"
    }

    fn signer_type(&self) -> super::SignerType {
        super::SignerType::Kmip
    }

    fn administers(&self) -> &'static [Capability] {
        &[Capability::Kmip]
    }

    fn unavailable_reason(&self, _placement: Placement) -> Option<String> {
        binary().err()
    }

    fn open(&self, _workdir: &Path, _runtime: &Runtime) -> anyhow::Result<Box<dyn CellBackend>> {
        Ok(Box::new(CosmianCell))
    }
}

struct CosmianCell;

impl CellBackend for CosmianCell {
    fn make(
        &mut self,
        name: &str,
        dir: &Path,
        spec: &InstanceSpec,
    ) -> anyhow::Result<Box<dyn Instance>> {
        let pki = pki::generate_for_client(&dir.join("pki"), pki::flaw_of(spec), &user(name))?;
        Ok(Box::new(KmipServerInstance::start(
            &CosmianServer,
            name,
            dir,
            pki,
            spec,
            &Runtime::Local,
        )?))
    }

    fn properties(&self) -> Vec<(String, String)> {
        binary()
            .map(|bin| vec![("cosmian_kms".to_string(), bin.display().to_string())])
            .unwrap_or_default()
    }
}

/// The Cosmian user an instance's client certificate names (Cosmian takes the user
/// from the certificate's common name; objects belong to their user).
fn user(instance: &str) -> String {
    format!("hsm-harness-{instance}")
}

/// An instance: one Cosmian KMS server and its database. The signer's defaults (TLS
/// 1.3 only) are what an operator would use, so its configuration is left alone.
struct CosmianServer;

impl KmipServerKind for CosmianServer {
    fn product(&self) -> &'static str {
        "Cosmian KMS"
    }

    fn start(
        &self,
        dir: &Path,
        pki: &Pki,
        spec: &InstanceSpec,
        port: u16,
        _runtime: &Runtime,
    ) -> anyhow::Result<Server> {
        start(dir, pki, spec, port)
    }

    fn stderr_file(&self, dir: &Path) -> PathBuf {
        dir.join(LOG_FILE)
    }

    fn remove_data(&self, dir: &Path) -> anyhow::Result<()> {
        let db = database_dir(dir);
        if db.exists() {
            std::fs::remove_dir_all(&db).with_context(|| format!("wiping {}", db.display()))?;
        }
        Ok(())
    }
}

/// Starts Cosmian KMS for an instance: its KMIP socket server on `port` (0: a free
/// one), its HTTP server on another free loopback port, the SQLite database in `dir`
/// (kept across restarts), and waits until the KMIP port accepts connections. A TCP
/// connect is the probe because the socket server wants a client certificate before
/// it says anything.
/// Where the server's output goes, in the instance's directory.
const LOG_FILE: &str = "cosmian.log";

fn start(dir: &Path, pki: &Pki, spec: &InstanceSpec, port: u16) -> anyhow::Result<Server> {
    if !spec.withhold.is_empty() {
        bail!("Cosmian KMS cannot withhold operations (the relay can: capability kmip-withhold)");
    }
    let bin = binary().map_err(|e| anyhow!(e))?;
    let versions = spec.tls.as_ref().and_then(|t| t.versions.as_deref());
    let (free, http_port) = two_free_ports()?;
    let port = if port == 0 { free } else { port };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let config_path = dir.join("kms.toml");
    let text = config(&Settings {
        dir,
        pki,
        kmip_port: port,
        http_port,
        versions,
    })
    .map_err(|e| anyhow!(e))?;
    std::fs::write(&config_path, text)
        .with_context(|| format!("writing {}", config_path.display()))?;
    // Its log goes to stdout and its fatal errors to stderr: one file holds both, for
    // the tail in a start-up error.
    let log_path = dir.join(LOG_FILE);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let child = lifeline::die_with_parent(
        Command::new(&bin)
            .arg("-c")
            .arg(&config_path)
            // It reads a `.env` file from its working directory: make that the instance's.
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log),
    )
    .spawn()
    .with_context(|| format!("starting {}", bin.display()))?;
    let mut server = Server::new(child, port, libc::SIGTERM);
    server.wait_for_port(&log_path)?;
    log_line(format!(
        "  Cosmian KMS listening on 127.0.0.1:{port} (KMIP; HTTP on {http_port})"
    ));
    Ok(server)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pki(dir: &Path) -> Pki {
        Pki {
            ca_cert: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
            harness_trust: dir.join("ca.pem"),
        }
    }

    #[test]
    fn the_config_keeps_everything_in_the_instance_and_on_loopback() {
        let dir = Path::new("/w/inst \"a\"");
        let p = pki(dir);
        let text = config(&Settings {
            dir,
            pki: &p,
            kmip_port: 4000,
            http_port: 4001,
            versions: None,
        })
        .unwrap();
        let v: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(
            v["db"]["sqlite_path"].as_str(),
            Some("/w/inst \"a\"/sqlite-data")
        );
        assert_eq!(
            v["socket_server"]["socket_server_port"].as_integer(),
            Some(4000)
        );
        assert_eq!(
            v["socket_server"]["socket_server_hostname"].as_str(),
            Some("127.0.0.1")
        );
        assert_eq!(v["http"]["hostname"].as_str(), Some("127.0.0.1"));
        assert_eq!(v["http"]["port"].as_integer(), Some(4001));
        assert!(v["tls"].get("tls_cipher_suites").is_none());
        assert!(v["tls"]["clients_ca_cert_file"].as_str().is_some());
    }

    #[test]
    fn tls13_only_is_a_tls13_cipher_list_and_tls12_only_is_refused() {
        let dir = Path::new("/w");
        let p = pki(dir);
        let mut s = Settings {
            dir,
            pki: &p,
            kmip_port: 1,
            http_port: 2,
            versions: Some(&[TlsVersion::Tls13]),
        };
        let text = config(&s).unwrap();
        assert!(text.contains("tls_cipher_suites = \"TLS_AES_256_GCM_SHA384:"));
        s.versions = Some(&[TlsVersion::Tls12, TlsVersion::Tls13]);
        assert!(!config(&s).unwrap().contains("tls_cipher_suites"));
        s.versions = Some(&[TlsVersion::Tls12]);
        assert!(config(&s).unwrap_err().contains("TLS 1.2"));
    }

    #[test]
    fn control_characters_in_paths_are_refused() {
        assert!(quoted(Path::new("/a\nb")).is_err());
    }
}
