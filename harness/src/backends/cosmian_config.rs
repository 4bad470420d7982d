//! Cosmian KMS (`cosmian_kms`, 5.28, non-FIPS build) as a backend: where the binary
//! is, and the configuration file one instance's server runs with.
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

use crate::backends::pki::Pki;
use crate::model::suite::TlsVersion;

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
