//! The run's PyKMIP zygote: one Python process that has imported PyKMIP's server and
//! forks a fresh server process for each local PyKMIP instance a cell makes.
//!
//! Starting `pykmip-server` costs about a second of Python imports, most of a PyKMIP
//! cell's start-up. A forked server is the same server (the same package's code, the
//! same arguments, its own process, port, certificates and database), without that
//! cost; nothing is shared between cells but the imported code. The runner starts the
//! zygote when the plan holds local PyKMIP cells and names its socket in
//! [`ZYGOTE_ENV`]; without it a cell starts `pykmip-server` itself.
//!
//! A forked server leads a process group of its own (PyKMIP starts helper processes, its
//! policy monitor among them) and is tied to the connection that asked for it: the
//! group ends at once when that connection closes (its cell dropped it, or died), and
//! the cell sees end-of-file on it exactly when the whole group is gone. The cell stops
//! it early by signalling the group. The zygote dies with the runner.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};

use super::pykmip::pykmip_server;
use crate::run::lifeline;

/// The variable that names the zygote's socket to a cell.
pub const ZYGOTE_ENV: &str = "HSM_HARNESS_PYKMIP_ZYGOTE";

const SCRIPT: &str = include_str!("pykmip_zygote.py");

/// The running zygote; dropping it kills it (servers already forked live on).
pub struct Zygote {
    child: Child,
    socket: PathBuf,
}

impl Zygote {
    /// Starts the zygote with `pykmip-server`'s own interpreter, its socket and files
    /// in `dir`, and waits (15 s at most) until it has imported PyKMIP.
    pub fn start(dir: &Path) -> anyhow::Result<Zygote> {
        let server = pykmip_server().map_err(|e| anyhow!(e))?;
        let interpreter = interpreter_of(&server)?;
        let script = dir.join("pykmip_zygote.py");
        std::fs::write(&script, SCRIPT).with_context(|| format!("writing {}", script.display()))?;
        let socket = dir.join("pykmip-zygote.sock");
        let stderr = dir.join("pykmip-zygote.stderr");
        let mut child = lifeline::die_with_parent(
            Command::new(&interpreter[0])
                .args(&interpreter[1..])
                .arg(&script)
                .arg(&socket)
                // Its own process group: a Ctrl-C at the terminal is the runner's to
                // handle; the zygote dies with the runner.
                .process_group(0)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(std::fs::File::create(&stderr)?),
        )
        .spawn()
        .with_context(|| format!("starting the PyKMIP zygote with {:?}", interpreter))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let mut zygote = Zygote { child, socket };
        match rx.recv_timeout(Duration::from_secs(15)) {
            Ok(line) if line.trim() == "ready" => Ok(zygote),
            _ => {
                let _ = zygote.child.kill();
                let _ = zygote.child.wait();
                let said = std::fs::read_to_string(&stderr).unwrap_or_default();
                bail!("the PyKMIP zygote did not start: {}", said.trim())
            }
        }
    }

    /// Where cells ask it for servers.
    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Drop for Zygote {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The command line of `script`'s `#!` line (`/usr/bin/python3`, or `/usr/bin/env
/// python3`): the interpreter the package was installed for.
fn interpreter_of(script: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read(script).with_context(|| format!("reading {}", script.display()))?;
    let first = text.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(first);
    let words: Vec<String> = line
        .strip_prefix("#!")
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    if words.is_empty() {
        bail!("{} has no #! line naming its Python", script.display());
    }
    Ok(words)
}

/// A server process the zygote forked for this cell, and its process group.
pub struct Forked {
    /// The server's pid, which is also its process group's id.
    pid: libc::pid_t,
    /// Held for the server's life: closing it ends the server; end-of-file on it means
    /// the server is gone.
    conn: UnixStream,
    gone: bool,
}

impl Forked {
    /// Asks the zygote at `socket` for a `pykmip-server` with `args` and its stderr in
    /// `stderr`.
    pub fn start(socket: &Path, args: &[OsString], stderr: &Path) -> anyhow::Result<Forked> {
        let text = |s: &std::ffi::OsStr| {
            s.to_str()
                .map(str::to_string)
                .ok_or_else(|| anyhow!("{s:?} is not UTF-8"))
        };
        let request = serde_json::json!({
            "args": args.iter().map(|a| text(a)).collect::<anyhow::Result<Vec<_>>>()?,
            "stderr": text(stderr.as_os_str())?,
        });
        let mut conn = UnixStream::connect(socket)
            .with_context(|| format!("reaching the PyKMIP zygote at {}", socket.display()))?;
        conn.set_read_timeout(Some(Duration::from_secs(15)))?;
        conn.write_all(format!("{request}\n").as_bytes())?;
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while byte[0] != b'\n' {
            match conn.read(&mut byte)? {
                0 => bail!("the PyKMIP zygote closed the connection without an answer"),
                _ => line.push(byte[0]),
            }
        }
        let answer: serde_json::Value =
            serde_json::from_slice(&line).context("the PyKMIP zygote's answer")?;
        match (answer["pid"].as_i64(), answer["error"].as_str()) {
            (Some(pid), _) if pid > 0 => Ok(Forked {
                pid: pid as libc::pid_t,
                conn,
                gone: false,
            }),
            (_, Some(e)) => bail!("the PyKMIP zygote refused: {e}"),
            _ => bail!("the PyKMIP zygote answered {answer}"),
        }
    }

    /// Whether the server is gone (end-of-file on its connection), without waiting.
    pub fn exited(&mut self) -> bool {
        if !self.gone {
            let _ = self.conn.set_nonblocking(true);
            let mut byte = [0u8; 1];
            self.gone = !matches!(self.conn.read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
            let _ = self.conn.set_nonblocking(false);
        }
        self.gone
    }

    /// Sends `signal` to the server's group, then waits up to `grace` for it to be
    /// gone; SIGKILL after that.
    pub fn stop(&mut self, signal: i32, grace: Duration) {
        if self.exited() {
            return;
        }
        // SAFETY: killpg(2) on the server's group, which exists while the connection
        // is open (its members hold it until they exit); no memory involved.
        unsafe {
            libc::killpg(self.pid, signal);
        }
        if !self.wait_gone(grace) {
            // SAFETY: as above.
            unsafe {
                libc::killpg(self.pid, libc::SIGKILL);
            }
            self.wait_gone(Duration::from_secs(5));
        }
    }

    fn wait_gone(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let mut byte = [0u8; 1];
        while !self.gone {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let _ = self.conn.set_read_timeout(Some(left));
            match self.conn.read(&mut byte) {
                Ok(0) => self.gone = true,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => self.gone = true,
            }
        }
        true
    }
}

impl Drop for Forked {
    fn drop(&mut self) {
        self.stop(libc::SIGKILL, Duration::from_secs(3));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interpreter_comes_from_the_scripts_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("s");
        for (line, expected) in [
            ("#! /usr/bin/python3\nimport re\n", vec!["/usr/bin/python3"]),
            ("#!/usr/bin/env python3\n", vec!["/usr/bin/env", "python3"]),
        ] {
            std::fs::write(&script, line).unwrap();
            assert_eq!(interpreter_of(&script).unwrap(), expected);
        }
        std::fs::write(&script, "import re\n").unwrap();
        assert!(interpreter_of(&script).is_err());
    }
}
