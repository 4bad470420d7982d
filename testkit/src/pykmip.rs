//! A PyKMIP server of a test's own (Debian's python3-pykmip, 0.10).

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::pki::Pki;

const PYKMIP_SERVER: &str = "/usr/bin/pykmip-server";
const PYTHON: &str = "/usr/bin/python3";
const INSTALL_HINT: &str = "apt-get install python3-pykmip (ci/install-deps does this)";
const READY_WITHIN: Duration = Duration::from_secs(20);

/// The TLS versions the server speaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Tls {
    /// Stock PyKMIP: TLS 1.2 only.
    #[default]
    V12,
    /// Through a launcher that lets PyKMIP's TLS 1.2 suite negotiate TLS 1.3 as well.
    V12AndV13,
}

/// The launcher for [`Tls::V12AndV13`].
const TLS13_LAUNCHER: &str = r#"
import ssl, sys
from kmip.services import auth
_init = auth.TLS12AuthenticationSuite.__init__
def _init13(self, *args, **kwargs):
    _init(self, *args, **kwargs)
    self._protocol = ssl.PROTOCOL_TLS_SERVER
auth.TLS12AuthenticationSuite.__init__ = _init13
from kmip.services.server import server
sys.argv[0] = "pykmip-server"
sys.exit(server.main())
"#;

/// A running PyKMIP server on 127.0.0.1, on a free port, with the server certificate
/// of a [`Pki`], a fresh database and an empty policy directory, in a temporary
/// directory of its own. It does not ask clients for certificates (PyKMIP's
/// `enable_tls_client_auth=False`) and offers one cipher suite,
/// TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 (the PKI's keys are EC).
///
/// [`PyKmip::start`] returns once a TLS handshake with the PKI's CA and client
/// certificate completes; dropping it stops the server with SIGINT (SIGKILL after 5 s).
pub struct PyKmip {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl PyKmip {
    /// Starts a server with `pki`'s server certificate, speaking `tls`; panics when
    /// PyKMIP is missing, exits, or is not ready within 20 s (with its stderr and log).
    pub fn start(pki: &Pki, tls: Tls) -> PyKmip {
        assert!(
            Path::new(PYKMIP_SERVER).exists(),
            "{PYKMIP_SERVER} is missing: {INSTALL_HINT}"
        );
        let dir = tempfile::Builder::new()
            .prefix("pykmip-")
            .tempdir()
            .expect("temporary PyKMIP directory");
        let port = free_port();
        let policies = dir.path().join("policies");
        std::fs::create_dir(&policies).expect("policy directory");
        let conf = dir.path().join("server.conf");
        std::fs::write(
            &conf,
            format!(
                "[server]\nhostname=127.0.0.1\nport={port}\ncertificate_path={}\nkey_path={}\n\
                 ca_path={}\nauth_suite=TLS1.2\npolicy_path={}\nenable_tls_client_auth=False\n\
                 tls_cipher_suites=TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256\n\
                 logging_level=ERROR\ndatabase_path={}\n",
                pki.server_cert.display(),
                pki.server_key.display(),
                pki.ca_cert.display(),
                policies.display(),
                dir.path().join("pykmip.db").display(),
            ),
        )
        .expect("PyKMIP server.conf");
        let mut cmd = match tls {
            Tls::V12 => Command::new(PYKMIP_SERVER),
            Tls::V12AndV13 => {
                let launcher = dir.path().join("pykmip_tls13.py");
                std::fs::write(&launcher, TLS13_LAUNCHER).expect("PyKMIP launcher");
                let mut c = Command::new(PYTHON);
                c.arg(launcher);
                c
            }
        };
        cmd.arg("-f")
            .arg(&conf)
            .arg("-l")
            .arg(dir.path().join("server.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("stderr.txt")).expect("PyKMIP stderr"),
            ));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start pykmip-server: {e}: {INSTALL_HINT}"));
        let mut server = PyKmip { child, port, dir };
        server.wait_ready(pki);
        server
    }

    /// The port it listens on (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its working directory: configuration, database, `server.log`, `stderr.txt`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Ready when a TLS handshake (1.2 or 1.3, with the client certificate) completes:
    /// PyKMIP listens before its TLS set-up is done, so an open port is not enough.
    fn wait_ready(&mut self, pki: &Pki) {
        let tls = client_config(pki);
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Some(status) = self.child.try_wait().expect("pykmip-server status") {
                let read = |name: &str| {
                    std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
                };
                panic!(
                    "pykmip-server exited ({status}) before it was ready:\n{}\n{}",
                    read("stderr.txt"),
                    read("server.log")
                );
            }
            if let Ok(mut sock) = TcpStream::connect(("127.0.0.1", self.port)) {
                sock.set_read_timeout(Some(Duration::from_secs(2)))
                    .expect("socket timeout");
                let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
                let mut conn = rustls::ClientConnection::new(tls.clone(), name).unwrap();
                let mut ok = true;
                while conn.is_handshaking() {
                    if conn.complete_io(&mut sock).is_err() {
                        ok = false;
                        break;
                    }
                }
                if ok {
                    conn.send_close_notify();
                    let _ = conn.complete_io(&mut sock);
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "pykmip-server not ready after {READY_WITHIN:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for PyKmip {
    /// SIGINT first: PyKMIP serves until a KeyboardInterrupt and then shuts down in
    /// order; SIGKILL only for a server that does not stop.
    fn drop(&mut self) {
        stop(&mut self.child, "-INT");
    }
}

/// Stops a server the tests started: `signal` (as `kill` spells it), then SIGKILL if it
/// has not exited within 5 s.
pub(crate) fn stop(child: &mut Child, signal: &str) {
    let _ = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A port nobody listened on a moment ago. PyKMIP takes its port from its
/// configuration, so it cannot be handed a listening socket.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// A plain rustls client (TLS 1.2 and 1.3) trusting `pki`'s CA, with its client
/// certificate: only for the readiness handshake.
fn client_config(pki: &Pki) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca_der()).expect("the test CA as a root");
    let (chain, key) = pki.client_identity();
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .expect("the test client certificate"),
    )
}
