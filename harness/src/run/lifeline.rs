//! Processes a run starts die with it, however it ends.
//!
//! Cells run in process groups of their own (so a timeout can kill all a cell started),
//! which also puts them out of reach of the terminal's Ctrl-C and of a signal sent to
//! the harness alone. Two things close that gap:
//!
//! - [`die_with_parent`]: a child (a cell, a backend server) gets SIGKILL from the
//!   kernel when the thread that started it dies, also when the harness itself is
//!   killed with SIGKILL (Linux `PR_SET_PDEATHSIG`). A cell's servers die with the cell,
//!   the cell with the runner.
//! - [`Janitor`]: a small process of the harness's own, started with the run, that
//!   removes the run's work directory once the runner is gone, whether it returned,
//!   was interrupted or was killed. It learns that from its standard input, a pipe
//!   from the runner that the kernel closes when the runner dies.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

/// Makes the child started by `cmd` get SIGKILL when the thread that starts it dies.
/// A child whose parent died before the request took effect exits at once.
pub fn die_with_parent(cmd: &mut Command) -> &mut Command {
    // SAFETY: getpid is async-signal-safe; the value is read before the fork.
    let parent = unsafe { libc::getpid() };
    // SAFETY: only async-signal-safe calls (prctl, getppid, _exit) between fork and
    // exec, as pre_exec requires.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        })
    }
}

/// The run's janitor: removes `dir` once the runner is gone.
pub struct Janitor {
    child: Child,
    /// Held open for as long as the runner lives; dropping it tells the janitor to clean.
    pipe: Option<ChildStdin>,
}

impl Janitor {
    /// Starts `program janitor --dir DIR` in a process group of its own (so Ctrl-C at
    /// the terminal does not stop it before it has cleaned up).
    pub fn start(program: &Path, dir: &Path, containers: bool) -> std::io::Result<Janitor> {
        let mut child = Command::new(program)
            .arg("janitor")
            .arg("--dir")
            .arg(dir)
            .args(containers.then_some("--containers"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()?;
        let pipe = child.stdin.take();
        Ok(Janitor { child, pipe })
    }

    /// Tells the janitor the run is over and waits until it has cleaned up.
    pub fn finish(mut self) {
        self.pipe = None;
        let _ = self.child.wait();
    }
}

impl Drop for Janitor {
    fn drop(&mut self) {
        self.pipe = None;
        let _ = self.child.wait();
    }
}

/// The janitor's side: waits until standard input closes (the runner finished or
/// died), gives the processes that die with the runner a moment, then removes `dir`.
/// Only a directory the runner made (`hsm-harness-run-*`) is removed.
pub fn janitor_main(dir: &Path, containers: bool) -> i32 {
    // SAFETY: setting signal dispositions to ignore; no handler code runs.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
    }
    let mut sink = [0u8; 64];
    let mut stdin = std::io::stdin();
    while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
    let named_ours = dir
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with(RUN_DIR_PREFIX));
    if !named_ours {
        return 2;
    }
    // Containers are not children: nothing kills them with the runner. They go first,
    // as they hold the directory mounted.
    if containers {
        let _ = crate::backends::container::remove_labelled(
            crate::backends::container::RUN_LABEL,
            &dir.display().to_string(),
        );
    }
    // Servers die with their cells by SIGKILL; a moment lets their files close.
    for _ in 0..50 {
        match std::fs::remove_dir_all(dir) {
            Ok(()) => return 0,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return 0,
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    1
}

/// The prefix of a run's work directory in the temporary directory.
pub const RUN_DIR_PREFIX: &str = "hsm-harness-run-";

/// A run's work directory (removed by the runner or its janitor, never by a drop that
/// a killed runner would skip).
pub fn run_dir() -> std::io::Result<PathBuf> {
    Ok(tempfile::Builder::new()
        .prefix(RUN_DIR_PREFIX)
        .tempdir()?
        .keep())
}
