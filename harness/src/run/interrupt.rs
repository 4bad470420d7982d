//! SIGINT (Ctrl-C) and SIGTERM (how CI systems cancel a job) stop a run in order: no
//! new cell starts, running cells get SIGTERM and then SIGKILL after a grace period,
//! the reports are written with every cell (the unfinished ones as errors,
//! "interrupted"), and the exit code says which signal it was (130 or 143).

use std::sync::atomic::{AtomicI32, Ordering};

/// The signal that interrupted the run, 0 while none has.
static RECEIVED: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    RECEIVED.store(sig, Ordering::SeqCst);
}

/// Installs the handlers for SIGINT and SIGTERM. A second signal is noted like the
/// first; the runner's grace period bounds how long stopping takes.
pub fn install() {
    // SAFETY: sigaction with a handler that only stores to an atomic.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGINT, &action, std::ptr::null_mut());
        libc::sigaction(libc::SIGTERM, &action, std::ptr::null_mut());
    }
}

/// The signal that interrupted the run, if one did.
pub fn received() -> Option<i32> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        sig => Some(sig),
    }
}

/// The exit code of a run stopped by `sig`: 128 + the signal number, as shells report.
pub fn exit_code(sig: i32) -> i32 {
    128 + sig
}
