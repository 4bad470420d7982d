//! Our KMIP-to-PKCS#11 relay (`kmip2pkcs11`) serving a SoftHSMv2 token of a test's own.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::pki::Pki;
use crate::softhsm::{Hsm, Token};

const READY_WITHIN: Duration = Duration::from_secs(20);

/// A running relay on 127.0.0.1, on a port it chose, in front of one token of an
/// [`Hsm`], with a [`Pki`]'s server certificate (TLS 1.3) and clients required to
/// present a certificate from the same CA (`client_ca`). It logs in with the token's
/// user PIN, read from a file (mode 0600) in a temporary directory of its own, which
/// also holds `relay.toml`, `relay.ready` and its log, `relay.stderr`.
///
/// [`Relay::start`] returns once the relay has written its ready file; dropping it
/// stops the relay with SIGTERM (SIGKILL after 5 s).
pub struct Relay {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Relay {
    /// Starts `binary` (the `kmip2pkcs11` a test's build made) on `token` of `hsm`;
    /// `log_level` is the relay's (`"warn"`, or a filter such as
    /// `"warn,kmip2pkcs11::requests=debug"`). Panics when the relay is missing, exits,
    /// or is not ready within 20 s (with its log).
    pub fn start(binary: &Path, hsm: &Hsm, token: &Token, pki: &Pki, log_level: &str) -> Relay {
        assert!(
            binary.is_file(),
            "{} is missing: build the workspace (cargo build --workspace)",
            binary.display()
        );
        let dir = tempfile::Builder::new()
            .prefix("relay-")
            .tempdir()
            .expect("temporary relay directory");
        let pin = dir.path().join("user.pin");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&pin)
            .expect("relay PIN file");
        std::io::Write::write_all(&mut f, token.pin.as_bytes()).expect("relay PIN file");
        let ready = dir.path().join("relay.ready");
        let config = dir.path().join("relay.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:0\"\nready_file = \"{}\"\nlog_level = \"{log_level}\"\n\n\
                 [tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\n\n\
                 [pkcs11]\nlib_path = \"{}\"\nslot = \"{}\"\nuser_pin = \"file:{}\"\n",
                ready.display(),
                pki.server_cert.display(),
                pki.server_key.display(),
                pki.ca_cert.display(),
                crate::softhsm::MODULE,
                token.label,
                pin.display(),
            ),
        )
        .expect("relay.toml");
        let log = dir.path().join("relay.stderr");
        let child = hsm
            .command(binary)
            .arg("--config")
            .arg(&config)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("relay log"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let mut relay = Relay {
            child,
            port: 0,
            dir,
        };
        let deadline = Instant::now() + READY_WITHIN;
        relay.port = loop {
            let port = std::fs::read_to_string(&ready).ok().and_then(|t| {
                let addr = t.split_whitespace().next()?.to_string();
                addr.rsplit(':').next()?.parse().ok()
            });
            if let Some(port) = port {
                break port;
            }
            if let Some(status) = relay.child.try_wait().expect("relay status") {
                panic!(
                    "the relay exited ({status}) before it was ready:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the relay was not ready after {READY_WITHIN:?}:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        relay
    }

    /// The port it listens on (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its directory: configuration, PIN file, ready file, log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Its log (stderr).
    pub fn log(&self) -> PathBuf {
        self.dir.path().join("relay.stderr")
    }

    /// A KMIP signer configuration (the `[[signers]]` entry of the signer
    /// configuration file) named `name` that reaches this relay with `pki`'s CA and
    /// client certificate.
    pub fn signer_config(&self, name: &str, pki: &Pki) -> String {
        format!(
            "[[signers]]\ntype = \"KMIP\"\nname = \"{name}\"\nhost = \"127.0.0.1\"\nport = {}\n\
             server_ca_cert_path = \"{}\"\nclient_cert_path = \"{}\"\n\
             client_cert_private_key_path = \"{}\"\n",
            self.port,
            pki.ca_cert.display(),
            pki.client_cert.display(),
            pki.client_key.display(),
        )
    }
}

impl Drop for Relay {
    /// SIGTERM first: the relay closes its sessions and logs out; SIGKILL only for a
    /// relay that does not stop.
    fn drop(&mut self) {
        crate::pykmip::stop(&mut self.child, "-TERM");
    }
}
