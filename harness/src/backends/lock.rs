//! Exclusive locks on a backend the harness does not own (an external token, a vendor's
//! KMIP server), so that cells on one such backend never run at the same time and
//! every object that appears during a cell is that cell's.
//!
//! A lock is `flock` on a file in the system's temporary directory, named after the
//! kind of backend and a hash of what identifies it (FNV-1a, stable across builds, so
//! every harness process on the machine agrees). It is held until the file is closed:
//! by the cell's end, or by the kernel when the cell's process dies.

use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::log_line;

/// The lock file of the backend of `kind` identified by `key`.
pub(crate) fn path(kind: &str, key: &str) -> PathBuf {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    std::env::temp_dir().join(format!("hsm-harness-{kind}-{hash:016x}.lock"))
}

/// An exclusive lock on `path` (created if missing); waits, saying so in the cell's
/// log, while another cell holds it. `what` names the backend in that line.
pub(crate) fn acquire(path: &Path, what: &str) -> anyhow::Result<File> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("opening lock file {}", path.display()))?;
    let fd = file.as_raw_fd();
    // SAFETY: flock on a file descriptor this function owns.
    if unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(file);
    }
    log_line(format!(
        "  waiting for {}: another cell is using this {what}",
        path.display()
    ));
    loop {
        // SAFETY: as above; blocks until the other cell's process closes the file.
        if unsafe { libc::flock(fd, libc::LOCK_EX) } == 0 {
            return Ok(file);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e).with_context(|| format!("locking {}", path.display()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_differ_by_kind_and_key() {
        assert_eq!(path("kmip", "h:1"), path("kmip", "h:1"));
        assert_ne!(path("kmip", "h:1"), path("kmip", "h:2"));
        assert_ne!(path("kmip", "h:1"), path("pkcs11", "h:1"));
    }

    /// A second lock on the same file from another open file waits; once the first is
    /// closed it is granted.
    #[test]
    fn a_held_lock_excludes_another() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.lock");
        let first = acquire(&p, "test").unwrap();
        let other = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        // SAFETY: flock on a descriptor this test owns.
        let busy = unsafe { libc::flock(other.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        assert_ne!(busy, 0);
        drop(first);
        acquire(&p, "test").unwrap();
    }
}
