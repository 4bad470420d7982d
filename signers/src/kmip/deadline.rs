//! The KMIP signer's socket: every read and write bounded by the per-call timeout
//! (`read_timeout`) and by the deadline of the request it serves (`request_timeout`).
//!
//! The per-call timeout alone lets a server that trickles one byte per interval keep
//! a request going for up to [`super::MAX_RESPONSE`] intervals; rustls may read the
//! socket several times for one TLS read, so the deadline is checked here, below
//! rustls, before every socket call.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// The error inside the `io::Error` (kind `TimedOut`) a socket call returns once the
/// deadline has passed, so that callers can tell it from an ordinary timeout.
#[derive(Debug)]
pub struct DeadlinePassed;

impl fmt::Display for DeadlinePassed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the request deadline passed")
    }
}

impl std::error::Error for DeadlinePassed {}

/// Whether `e` is the deadline passing (not an ordinary per-call timeout).
pub fn is_deadline(e: &io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.downcast_ref::<DeadlinePassed>().is_some())
}

/// A TCP stream with a per-call timeout and an optional deadline.
pub struct DeadlineSocket {
    sock: TcpStream,
    per_call: Duration,
    deadline: Option<Instant>,
}

impl DeadlineSocket {
    pub fn new(sock: TcpStream, per_call: Duration, deadline: Option<Instant>) -> Self {
        Self {
            sock,
            per_call,
            deadline,
        }
    }

    /// Sets the deadline for the calls that follow (a pooled connection gets the
    /// deadline of each request it serves).
    pub fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }

    /// The timeout for the next socket call: the per-call timeout, or less if the
    /// deadline is nearer; an error once the deadline has passed.
    fn next_timeout(&self) -> io::Result<Duration> {
        match self.deadline {
            None => Ok(self.per_call),
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    Err(passed())
                } else {
                    Ok(left.min(self.per_call))
                }
            }
        }
    }

    /// A timeout the deadline cut short is the deadline passing.
    fn classify(&self, e: io::Error) -> io::Error {
        let timed_out = matches!(
            e.kind(),
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
        );
        if timed_out && self.deadline.is_some_and(|d| Instant::now() >= d) {
            passed()
        } else {
            e
        }
    }
}

fn passed() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, DeadlinePassed)
}

impl Read for DeadlineSocket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let timeout = self.next_timeout()?;
        self.sock.set_read_timeout(Some(timeout))?;
        self.sock.read(buf).map_err(|e| self.classify(e))
    }
}

impl Write for DeadlineSocket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let timeout = self.next_timeout()?;
        self.sock.set_write_timeout(Some(timeout))?;
        self.sock.write(buf).map_err(|e| self.classify(e))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.sock.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A peer that trickles a byte every 20 ms: with a 1 s per-call timeout each read
    /// succeeds, and only the deadline ends the loop.
    #[test]
    fn a_trickling_peer_meets_the_deadline() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let peer = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            for _ in 0..100 {
                if s.write_all(b"x").is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let started = Instant::now();
        let mut sock = DeadlineSocket::new(
            TcpStream::connect(addr).unwrap(),
            Duration::from_secs(1),
            Some(started + Duration::from_millis(300)),
        );
        let mut byte = [0u8; 1];
        let err = loop {
            match sock.read(&mut byte) {
                Ok(0) => panic!("the peer closed before the deadline"),
                Ok(_) => {}
                Err(e) => break e,
            }
        };
        assert!(is_deadline(&err), "{err:?}");
        assert!(started.elapsed() < Duration::from_millis(900));
        drop(sock);
        peer.join().unwrap();
    }
}
