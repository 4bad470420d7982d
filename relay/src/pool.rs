//! A fixed pool of PKCS#11 sessions on one token, shared by all connections.
//!
//! Contract: [`Pool::with_session`] lends one session to one closure at a time (a
//! PKCS#11 session must not be used by two threads at once) and blocks the calling
//! (blocking-pool) thread until a session is free or the configured wait is over, which
//! is answered as a General Failure ("busy"). A session the closure reports lost
//! (CKR_SESSION_HANDLE_INVALID, CKR_SESSION_CLOSED, ...) is closed and replaced by a
//! fresh one before it goes back into the pool; if no fresh one can be opened, the pool
//! shrinks by one and says so in the log.

use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use cryptoki::context::Pkcs11;
use cryptoki::session::Session;
use cryptoki::slot::Slot;

use crate::message::KmipError;

/// What a closure run on a session can fail with.
pub struct Failure {
    pub error: KmipError,
    /// The session is no longer usable.
    pub lost: bool,
}

impl From<KmipError> for Failure {
    fn from(error: KmipError) -> Self {
        Failure { error, lost: false }
    }
}

pub struct Pool {
    pkcs11: Pkcs11,
    slot: Slot,
    idle: Mutex<Vec<Session>>,
    freed: Condvar,
    wait: Duration,
}

impl Pool {
    /// Opens `size` read/write sessions on `slot`.
    pub fn open(
        pkcs11: &Pkcs11,
        slot: Slot,
        size: usize,
        wait: Duration,
    ) -> Result<Pool, cryptoki::error::Error> {
        let mut idle = Vec::with_capacity(size);
        for _ in 0..size {
            idle.push(pkcs11.open_rw_session(slot)?);
        }
        Ok(Pool {
            pkcs11: pkcs11.clone(),
            slot,
            idle: Mutex::new(idle),
            freed: Condvar::new(),
            wait,
        })
    }

    /// Runs `op` on a free session. See the module documentation.
    pub fn with_session<T>(
        &self,
        op: impl FnOnce(&Session) -> Result<T, Failure>,
    ) -> Result<T, KmipError> {
        let session = self.take()?;
        let result = op(&session);
        let lost = matches!(&result, Err(f) if f.lost);
        let back = if lost {
            drop(session);
            match self.pkcs11.open_rw_session(self.slot) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::error!("cannot replace a lost PKCS#11 session: {e}; the pool shrinks");
                    None
                }
            }
        } else {
            Some(session)
        };
        if let Some(s) = back {
            self.idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(s);
            self.freed.notify_one();
        }
        result.map_err(|f| f.error)
    }

    fn take(&self) -> Result<Session, KmipError> {
        let deadline = Instant::now() + self.wait;
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(s) = idle.pop() {
                return Ok(s);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(KmipError::general(
                    "busy: no PKCS#11 session became free in time",
                ));
            }
            idle = self
                .freed
                .wait_timeout(idle, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}
