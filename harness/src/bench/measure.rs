//! One measurement: N clients signing at once, each on its own thread, for a time or
//! a number of signatures; throughput over the wall time and latency percentiles of
//! every single sign.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// One client of a path: signs the bench's payload once per call. Each client is used
/// by one thread at a time.
pub trait SignClient: Send {
    /// One signature; the error says what failed.
    fn sign(&mut self) -> Result<(), String>;
}

/// How long a measurement runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Budget {
    /// Every client signs until this much time has passed.
    Time(Duration),
    /// The clients together make this many signatures.
    Signs(u64),
}

impl Budget {
    /// The short run before each measurement that fills connection pools and caches,
    /// whose numbers are dropped.
    pub fn warm_up(self) -> Budget {
        match self {
            Budget::Time(d) => Budget::Time((d / 10).min(Duration::from_millis(500))),
            Budget::Signs(n) => Budget::Signs((n / 10).max(1)),
        }
    }
}

/// What a measurement saw.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stats {
    pub signs: u64,
    pub seconds: f64,
    pub signs_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// Runs every client on its own thread within `budget`; the first error ends the
/// measurement (the other clients stop after their current sign).
pub fn run(clients: &mut [Box<dyn SignClient>], budget: Budget) -> Result<Stats, String> {
    let tickets = AtomicU64::new(0);
    let failed = std::sync::atomic::AtomicBool::new(false);
    let start = Instant::now();
    let deadline = match budget {
        Budget::Time(d) => Some(start + d),
        Budget::Signs(_) => None,
    };
    let more = || {
        if failed.load(Ordering::Relaxed) {
            return false;
        }
        match (deadline, budget) {
            (Some(d), _) => Instant::now() < d,
            (None, Budget::Signs(n)) => tickets.fetch_add(1, Ordering::Relaxed) < n,
            (None, Budget::Time(_)) => false,
        }
    };
    let per_client: Vec<Result<Vec<Duration>, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = clients
            .iter_mut()
            .map(|client| {
                let (more, failed) = (&more, &failed);
                s.spawn(move || {
                    let mut times = Vec::new();
                    while more() {
                        let t = Instant::now();
                        if let Err(e) = client.sign() {
                            failed.store(true, Ordering::Relaxed);
                            return Err(e);
                        }
                        times.push(t.elapsed());
                    }
                    Ok(times)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a client thread panicked".to_string()))
            })
            .collect()
    });
    let elapsed = start.elapsed();
    let mut times = Vec::new();
    for r in per_client {
        times.extend(r?);
    }
    stats(times, elapsed)
}

/// Throughput and percentiles from every sign's latency and the wall time.
pub fn stats(mut times: Vec<Duration>, elapsed: Duration) -> Result<Stats, String> {
    if times.is_empty() {
        return Err("no signature was made within the budget".to_string());
    }
    times.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let seconds = elapsed.as_secs_f64();
    Ok(Stats {
        signs: times.len() as u64,
        seconds,
        signs_per_sec: times.len() as f64 / seconds,
        p50_ms: ms(percentile(&times, 50.0)),
        p99_ms: ms(percentile(&times, 99.0)),
    })
}

/// The nearest-rank percentile `p` of sorted, non-empty `times`.
fn percentile(times: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * times.len() as f64).ceil() as usize;
    times[rank.clamp(1, times.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Counting(u64);
    impl SignClient for Counting {
        fn sign(&mut self) -> Result<(), String> {
            self.0 += 1;
            if self.0 > 1_000_000 {
                return Err("too many".into());
            }
            Ok(())
        }
    }

    #[test]
    fn nearest_rank_percentiles() {
        let t: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&t, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&t, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&t[..1], 99.0), Duration::from_millis(1));
    }

    #[test]
    fn a_sign_budget_is_shared_by_the_clients() {
        let mut clients: Vec<Box<dyn SignClient>> =
            (0..4).map(|_| Box::new(Counting(0)) as _).collect();
        let s = run(&mut clients, Budget::Signs(101)).unwrap();
        assert_eq!(s.signs, 101);
    }

    #[test]
    fn an_error_ends_the_measurement_with_its_message() {
        struct Failing;
        impl SignClient for Failing {
            fn sign(&mut self) -> Result<(), String> {
                Err("token gone".into())
            }
        }
        let mut clients: Vec<Box<dyn SignClient>> = vec![Box::new(Failing)];
        let e = run(&mut clients, Budget::Time(Duration::from_secs(5))).unwrap_err();
        assert_eq!(e, "token gone");
    }
}
