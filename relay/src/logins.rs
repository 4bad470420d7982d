//! Bounding C_Login for KMIP clients (`[auth] credentials = "token"`), so the relay is
//! no PIN-guessing oracle for the token.
//!
//! Contract of [`Throttle`]:
//!
//! - Every C_Login the relay makes for a client must first be admitted
//!   ([`Throttle::admit`]). Refused, with how long to wait: a client address still inside
//!   its delay, any client while the global delay runs, and any attempt once
//!   `max_logins_per_minute` C_Logins were admitted in the last 60 s. A refused attempt
//!   never reaches the module and does not lengthen any delay (only real C_Login
//!   failures do), so a flood of wrong passwords costs the module at most
//!   `max_logins_per_minute` C_Logins a minute.
//! - After a failed C_Login ([`Throttle::failed`]) the client's and the global delay
//!   are `login_delay_ms` doubled per consecutive failure, at most
//!   `login_delay_max_ms`. A success ([`Throttle::succeeded`]) resets both.
//! - Per-client state is bounded: at most [`MAX_CLIENTS`] addresses are remembered;
//!   beyond that, those whose delay is over are forgotten first, and the global delay
//!   still applies to everyone.
//!
//! Once a login succeeded, [`crate::token::Token::authenticate`] compares passwords in
//! memory and makes no further C_Login for clients, so the throttle matters only until
//! the first good password (or after a restart).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::config::AuthConfig;

/// Client addresses remembered at once.
pub const MAX_CLIENTS: usize = 4096;

const MINUTE: Duration = Duration::from_secs(60);

/// The delays and the rate cap (from `[auth]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoginPolicy {
    pub delay: Duration,
    pub max_delay: Duration,
    pub per_minute: u32,
}

impl Default for LoginPolicy {
    fn default() -> Self {
        LoginPolicy::from(&AuthConfig::default())
    }
}

impl From<&AuthConfig> for LoginPolicy {
    fn from(a: &AuthConfig) -> Self {
        LoginPolicy {
            delay: Duration::from_millis(a.login_delay_ms),
            max_delay: Duration::from_millis(a.login_delay_max_ms),
            per_minute: a.max_logins_per_minute,
        }
    }
}

#[derive(Clone, Copy, Default)]
struct Backoff {
    failures: u32,
    until: Option<Instant>,
}

impl Backoff {
    fn wait(&self, now: Instant) -> Option<Duration> {
        self.until.filter(|u| *u > now).map(|u| u - now)
    }
    fn fail(&mut self, policy: &LoginPolicy, now: Instant) {
        self.failures = self.failures.saturating_add(1);
        let doublings = (self.failures - 1).min(31);
        let delay = policy
            .delay
            .checked_mul(1 << doublings)
            .unwrap_or(policy.max_delay)
            .min(policy.max_delay);
        self.until = Some(now + delay);
    }
}

/// The login throttle; see the module documentation. Not synchronised: the caller
/// holds it under the login lock.
pub struct Throttle {
    policy: LoginPolicy,
    global: Backoff,
    clients: HashMap<IpAddr, Backoff>,
    /// When the C_Logins of the last minute were admitted.
    recent: VecDeque<Instant>,
}

impl Throttle {
    pub fn new(policy: LoginPolicy) -> Self {
        Throttle {
            policy,
            global: Backoff::default(),
            clients: HashMap::new(),
            recent: VecDeque::new(),
        }
    }

    /// Admits one C_Login for `client` now, or says how long to wait.
    pub fn admit(&mut self, client: Option<IpAddr>, now: Instant) -> Result<(), Duration> {
        while self.recent.front().is_some_and(|t| now - *t >= MINUTE) {
            self.recent.pop_front();
        }
        let mut wait = self.global.wait(now);
        if let Some(c) = client.and_then(|c| self.clients.get(&c)) {
            wait = wait.max(c.wait(now));
        }
        if self.recent.len() >= self.policy.per_minute as usize {
            let oldest = self.recent.front().copied().unwrap_or(now);
            wait = wait.max(Some(MINUTE.saturating_sub(now - oldest)));
        }
        match wait {
            Some(w) => Err(w.max(Duration::from_millis(1))),
            None => {
                self.recent.push_back(now);
                Ok(())
            }
        }
    }

    /// Records a failed C_Login; returns the client's delay now running.
    pub fn failed(&mut self, client: Option<IpAddr>, now: Instant) -> Duration {
        self.global.fail(&self.policy, now);
        let Some(c) = client else {
            return self.global.wait(now).unwrap_or_default();
        };
        if !self.clients.contains_key(&c) && self.clients.len() >= MAX_CLIENTS {
            self.clients.retain(|_, b| b.wait(now).is_some());
            if self.clients.len() >= MAX_CLIENTS {
                // Still full of clients inside their delay: the global delay holds.
                return self.global.wait(now).unwrap_or_default();
            }
        }
        let b = self.clients.entry(c).or_default();
        b.fail(&self.policy, now);
        b.wait(now).unwrap_or_default()
    }

    /// Records a good C_Login: every delay is over.
    pub fn succeeded(&mut self) {
        self.global = Backoff::default();
        self.clients.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    const MS: Duration = Duration::from_millis(1);

    fn policy() -> LoginPolicy {
        LoginPolicy {
            delay: 100 * MS,
            max_delay: 400 * MS,
            per_minute: 5,
        }
    }

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([192, 0, 2, last]))
    }

    #[rstest]
    #[case(1, 100)]
    #[case(2, 200)]
    #[case(3, 400)]
    #[case(4, 400)]
    #[case(40, 400)]
    fn delays_double_up_to_the_cap(#[case] failures: u32, #[case] ms: u32) {
        let mut t = Throttle::new(policy());
        let now = Instant::now();
        let mut d = Duration::ZERO;
        for _ in 0..failures {
            d = t.failed(ip(1), now);
        }
        assert_eq!(d, ms * MS);
        assert!(t.admit(ip(1), now + (ms - 1) * MS).is_err());
        assert!(t.admit(ip(1), now + ms * MS).is_ok());
    }

    #[test]
    fn the_global_delay_holds_other_clients_too() {
        let mut t = Throttle::new(policy());
        let now = Instant::now();
        t.admit(ip(1), now).unwrap();
        t.failed(ip(1), now);
        assert!(t.admit(ip(2), now + 50 * MS).is_err());
        assert!(t.admit(None, now + 50 * MS).is_err());
        assert!(t.admit(ip(2), now + 100 * MS).is_ok());
    }

    #[test]
    fn refused_attempts_do_not_lengthen_the_delay_and_success_resets() {
        let mut t = Throttle::new(policy());
        let now = Instant::now();
        t.failed(ip(1), now);
        for i in 0..50 {
            assert!(t.admit(ip(1), now + i * MS).is_err());
        }
        assert!(t.admit(ip(1), now + 100 * MS).is_ok());
        t.succeeded();
        assert!(t.admit(ip(1), now + 101 * MS).is_ok());
    }

    #[test]
    fn at_most_per_minute_logins_a_minute() {
        let mut t = Throttle::new(policy());
        let start = Instant::now();
        let admitted = (0..600)
            .filter(|i| t.admit(ip(1), start + *i * 100 * MS).is_ok())
            .count();
        assert_eq!(admitted, 5, "one minute of attempts every 100 ms");
        assert!(t.admit(ip(1), start + 60_000 * MS).is_ok());
    }

    #[test]
    fn client_state_is_bounded() {
        let mut t = Throttle::new(policy());
        let now = Instant::now();
        for i in 0..(MAX_CLIENTS as u32 + 10) {
            t.failed(Some(IpAddr::from(i.to_be_bytes())), now);
        }
        assert!(t.clients.len() <= MAX_CLIENTS);
    }
}
