//! A fixed pool of PKCS#11 sessions on one token, shared by all connections.
//!
//! Contract: [`Pool::with_session`] lends one session to one closure at a time (a
//! PKCS#11 session must not be used by two threads at once) and blocks the calling
//! (blocking-pool) thread until a session is free or the configured wait is over, which
//! is answered as a General Failure ("busy"). A session the closure reports lost
//! (CKR_SESSION_HANDLE_INVALID, CKR_SESSION_CLOSED, ...) or that was in use when the
//! closure panicked is closed and replaced by a fresh one before it goes back into the
//! pool; a panic is answered as General Failure, never passed on. If no fresh session
//! can be opened, the pool is one short and says so in the log, and every later
//! request that finds no free session tries to open the missing ones again first, so
//! the pool grows back to its size once the module recovers.
//!
//! With an operation deadline ([`Pool::with_deadline`]; the server answers the request
//! as failed at the same deadline), a session lent out for longer than the deadline is
//! abandoned as soon as another request finds no free session: a replacement is opened
//! for it, and the hung session is closed, not reused, when its call returns (if ever).
//! A hung module thus costs the requests that hang, not every client.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
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
    idle: Mutex<Slots>,
    freed: Condvar,
    wait: Duration,
    deadline: Option<Duration>,
}

/// The free sessions, how many the pool is short of its size, and the sessions lent
/// out (by lease number: since when, and whether abandoned).
struct Slots {
    free: Vec<Session>,
    missing: usize,
    lent: HashMap<u64, Lease>,
    next_lease: u64,
}

struct Lease {
    since: Instant,
    abandoned: bool,
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
            idle: Mutex::new(Slots {
                free: idle,
                missing: 0,
                lent: HashMap::new(),
                next_lease: 0,
            }),
            freed: Condvar::new(),
            wait,
            deadline: None,
        })
    }

    /// Abandons sessions lent out for longer than `deadline` (see the module
    /// documentation).
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Runs `op` on a free session. See the module documentation.
    pub fn with_session<T>(
        &self,
        op: impl FnOnce(&Session) -> Result<T, Failure>,
    ) -> Result<T, KmipError> {
        let (session, lease) = self.take()?;
        let result = match catch_unwind(AssertUnwindSafe(|| op(&session))) {
            Ok(r) => r,
            Err(_) => {
                tracing::error!("a PKCS#11 operation panicked; its session is replaced");
                Err(Failure {
                    error: KmipError::general("internal error while running the operation"),
                    lost: true,
                })
            }
        };
        let abandoned = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .lent
            .remove(&lease)
            .is_some_and(|l| l.abandoned);
        if abandoned {
            // Already replaced: close it (C_CloseSession on drop).
            tracing::warn!("an abandoned PKCS#11 call returned; its session is closed");
            drop(session);
            return result.map_err(|f| f.error);
        }
        let lost = matches!(&result, Err(f) if f.lost);
        let back = if lost {
            drop(session);
            self.open_replacement()
        } else {
            Some(session)
        };
        let mut slots = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        match back {
            Some(s) => slots.free.push(s),
            None => slots.missing += 1,
        }
        drop(slots);
        self.freed.notify_one();
        result.map_err(|f| f.error)
    }

    /// A fresh session for a lost one, or `None` (logged) when the module gives none.
    fn open_replacement(&self) -> Option<Session> {
        match self.pkcs11.open_rw_session(self.slot) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(
                    "cannot replace a lost PKCS#11 session: {}; the pool is one short until \
                     a new one opens",
                    crate::token::describe(&e)
                );
                None
            }
        }
    }

    /// A free session and its lease number.
    fn take(&self) -> Result<(Session, u64), KmipError> {
        let session = self.take_session()?;
        let mut slots = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let lease = slots.next_lease;
        slots.next_lease += 1;
        slots.lent.insert(
            lease,
            Lease {
                since: Instant::now(),
                abandoned: false,
            },
        );
        Ok((session, lease))
    }

    /// Marks sessions lent out beyond the deadline abandoned (each then counts as
    /// missing, to be replaced); returns how long until the next one would be.
    fn abandon_overdue(&self, slots: &mut Slots, now: Instant) -> Option<Duration> {
        let deadline = self.deadline?;
        let mut next: Option<Duration> = None;
        for lease in slots.lent.values_mut().filter(|l| !l.abandoned) {
            let age = now - lease.since;
            if age >= deadline {
                lease.abandoned = true;
                slots.missing += 1;
                tracing::warn!(
                    "a PKCS#11 call has run for over {}s; its session is abandoned and replaced",
                    deadline.as_secs()
                );
            } else {
                next = Some(next.map_or(deadline - age, |n| n.min(deadline - age)));
            }
        }
        next
    }

    fn take_session(&self) -> Result<Session, KmipError> {
        let deadline = Instant::now() + self.wait;
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(s) = idle.free.pop() {
                return Ok(s);
            }
            let overdue_in = self.abandon_overdue(&mut idle, Instant::now());
            if idle.missing > 0 {
                // Grow back: open a missing session (outside the lock: it is a module
                // call), or count it missing again.
                idle.missing -= 1;
                drop(idle);
                let fresh = self.open_replacement();
                idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
                match fresh {
                    Some(s) => {
                        tracing::info!("a missing PKCS#11 session was opened again");
                        return Ok(s);
                    }
                    None => idle.missing += 1,
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(KmipError::general(
                    "busy: no PKCS#11 session became free in time",
                ));
            }
            // While sessions are missing, look again soon rather than only when one is
            // given back: none may be in use at all.
            let mut pause = if idle.missing > 0 {
                (deadline - now).min(Duration::from_millis(100))
            } else {
                deadline - now
            };
            if let Some(d) = overdue_in {
                pause = pause.min(d + Duration::from_millis(1));
            }
            idle = self
                .freed
                .wait_timeout(idle, pause)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}
