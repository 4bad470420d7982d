//! The harness's end of the signer protocol: a signer implementation started as a
//! child process, asked one request at a time.
//!
//! A refusal (`ok: false`) is the signer's answer and goes to the step as a signer
//! error. Anything else that goes wrong is a [`CallError::Broken`] naming the request
//! and quoting the evidence (the line, the exit status, the last lines of standard
//! error): the process exited, wrote a line that is not a response to that request, or
//! did not answer within the timeout. A broken process is killed and every later call
//! is refused with the same message: nothing it says afterwards can be trusted to be
//! framed right.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use super::{Envelope, ErrorBody, Hello, Op, Request, MAX_LINE, PROTOCOL};

/// How long `shutdown` may take before the process is killed.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How many lines of standard error a broken call quotes.
const STDERR_TAIL: usize = 12;
/// How much of a malformed line a broken call quotes.
const QUOTED: usize = 400;

/// Why a call gave no answer.
#[derive(Debug)]
pub enum CallError {
    /// The signer answered `ok: false`.
    Refused(ErrorBody),
    /// The process broke the protocol (or died, or hung): the harness's `<error>`.
    Broken(String),
}

/// A running signer implementation.
pub struct SignerProcess {
    command: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<Result<String, String>>,
    stderr: Arc<Mutex<VecDeque<String>>>,
    /// Says when standard error has been read to its end.
    stderr_ended: Receiver<()>,
    timeout: Duration,
    next_id: u64,
    broken: Option<String>,
    /// What the implementation said in `hello`.
    pub hello: Hello,
}

impl SignerProcess {
    /// Starts `command` (a program and its arguments, quoted and expanded as `sh` reads
    /// them) with `--config CONFIG --state STATE` appended and says `hello`. `sh` execs
    /// the program, so the process the harness shuts down or kills is the signer
    /// itself, in the cell's process group (it dies with the cell). Its standard error
    /// goes to this process's (the cell's log), each line prefixed.
    pub fn start(
        command: &str,
        config: &Path,
        state: &Path,
        timeout: Duration,
    ) -> Result<SignerProcess, String> {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!("exec {command} \"$@\""))
            .arg("signer")
            .arg("--config")
            .arg(config)
            .arg("--state")
            .arg(state)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("signer command '{command}' could not start: {e}"))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr_pipe = child.stderr.take().expect("stderr is piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || read_lines(stdout, tx));
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        let kept = Arc::clone(&stderr);
        let (ended, stderr_ended) = mpsc::channel();
        std::thread::spawn(move || {
            keep_stderr(stderr_pipe, kept);
            let _ = ended.send(());
        });
        let mut process = SignerProcess {
            command: command.to_string(),
            stdin: child.stdin.take(),
            child,
            lines,
            stderr,
            stderr_ended,
            timeout,
            next_id: 1,
            broken: None,
            hello: Hello {
                protocol: 0,
                implementation: super::Implementation {
                    name: String::new(),
                    version: String::new(),
                },
                algorithms: Vec::new(),
                features: Vec::new(),
            },
        };
        let hello: Hello = match process.call(Op::Hello { protocol: PROTOCOL }) {
            Ok(h) => h,
            Err(CallError::Refused(e)) => {
                return Err(format!(
                    "signer command '{command}' refused hello ({}): {}",
                    e.kind, e.message
                ))
            }
            Err(CallError::Broken(m)) => return Err(m),
        };
        if hello.protocol == 0 || hello.protocol > PROTOCOL {
            return Err(format!(
                "signer command '{command}' answered hello with protocol {}; this harness speaks 1 to {PROTOCOL}",
                hello.protocol
            ));
        }
        process.hello = hello;
        Ok(process)
    }

    /// Whether `hello` offered `feature`.
    pub fn offers(&self, feature: &str) -> bool {
        self.hello.features.iter().any(|f| f == feature)
    }

    /// Sends `op` and reads its answer's fields as `T`.
    pub fn call<T: DeserializeOwned>(&mut self, op: Op) -> Result<T, CallError> {
        if let Some(m) = &self.broken {
            return Err(CallError::Broken(m.clone()));
        }
        let name = op.name();
        let id = self.next_id;
        self.next_id += 1;
        let what = format!("`{name}` (request {id})");
        let line = serde_json::to_string(&Request { id, op }).expect("a request serialises");
        let sent = match self.stdin.as_mut() {
            Some(stdin) => writeln!(stdin, "{line}").and_then(|()| stdin.flush()),
            None => Err(std::io::Error::other("standard input is closed")),
        };
        if let Err(e) = sent {
            return Err(self.broke(format!("could not be sent {what}: {e}")));
        }
        let started = Instant::now();
        let text = match self.lines.recv_timeout(self.timeout) {
            Ok(Ok(text)) => text,
            Ok(Err(end)) => {
                let status = self.wait_briefly();
                return Err(self.broke(format!("{end} during {what}{status}")));
            }
            Err(RecvTimeoutError::Timeout) => {
                return Err(self.broke(format!(
                    "gave no answer to {what} within {:.0} s",
                    self.timeout.as_secs_f64()
                )))
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.wait_briefly();
                return Err(self.broke(format!("closed its output during {what}{status}")));
            }
        };
        tracing::debug!(
            op = name,
            ms = started.elapsed().as_millis() as u64,
            "signer answered"
        );
        let envelope: Envelope = match serde_json::from_str(&text) {
            Ok(e) => e,
            Err(e) => {
                return Err(self.broke(format!(
                    "answered {what} with a line that is not a JSON response ({e}): {}",
                    quote(&text)
                )))
            }
        };
        if envelope.id != Some(id) {
            return Err(self.broke(format!(
                "answered {what} with a response for id {}: {}",
                envelope.id.map_or("(none)".to_string(), |i| i.to_string()),
                quote(&text)
            )));
        }
        match (envelope.ok, envelope.error) {
            (Some(false), Some(error)) => Err(CallError::Refused(error)),
            (Some(true), _) => serde_json::from_value(serde_json::Value::Object(envelope.fields))
                .map_err(|e| {
                    self.broke(format!(
                        "answered {what} without what it must hold ({e}): {}",
                        quote(&text)
                    ))
                }),
            _ => Err(self.broke(format!(
                "answered {what} with neither `ok: true` nor `ok: false` and an error: {}",
                quote(&text)
            ))),
        }
    }

    /// Marks the process broken with `what` (and its standard error's last lines), and
    /// kills it.
    fn broke(&mut self, what: String) -> CallError {
        let _ = self.child.kill();
        // The last lines may still be in the pipe: read them (to its end, which a
        // process the signer started may hold open; not longer than a moment).
        let _ = self.stderr_ended.recv_timeout(Duration::from_millis(500));
        let tail: Vec<String> = self
            .stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect();
        let mut message = format!("signer process '{}' {what}", self.command);
        if !tail.is_empty() {
            message.push_str(&format!("; its last standard error: {}", tail.join(" | ")));
        }
        self.broken = Some(message.clone());
        CallError::Broken(message)
    }

    /// ", which exited with status N" once the process has ended (waiting a moment).
    fn wait_briefly(&mut self) -> String {
        let until = Instant::now() + Duration::from_millis(500);
        while Instant::now() < until {
            if let Ok(Some(status)) = self.child.try_wait() {
                return format!(" (it {})", describe(status));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        String::new()
    }

    /// Asks the process to end: `shutdown`, the end of its input, then a kill once
    /// [`SHUTDOWN_GRACE`] has passed.
    pub fn shutdown(&mut self) {
        let until = Instant::now() + SHUTDOWN_GRACE;
        if self.broken.is_none() {
            let timeout = std::mem::replace(&mut self.timeout, SHUTDOWN_GRACE);
            if let Err(CallError::Broken(m)) = self.call::<serde_json::Value>(Op::Shutdown) {
                eprintln!("  {m}");
            }
            self.timeout = timeout;
        }
        self.stdin = None;
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(10)),
                _ => break,
            }
        }
        eprintln!(
            "  signer process '{}' did not exit within {} s of shutdown; killed",
            self.command,
            SHUTDOWN_GRACE.as_secs()
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for SignerProcess {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Copies the process's standard error to ours (the cell's log), line by line, and
/// keeps the last [`STDERR_TAIL`] lines, each cut to [`QUOTED`] characters. Reads to the
/// end whatever comes (bytes that are not UTF-8, lines without an end): a process that
/// cannot write its standard error would block.
fn keep_stderr(pipe: impl Read, kept: Arc<Mutex<VecDeque<String>>>) {
    let mut reader = BufReader::new(pipe);
    loop {
        let mut line = Vec::new();
        match reader
            .by_ref()
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line)
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        eprintln!("  signer| {text}");
        let mut kept = kept.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() == STDERR_TAIL {
            kept.pop_front();
        }
        kept.push_back(cut(&text));
    }
}

/// Reads `out` line by line into `tx`; an over-long line or the end of output is the
/// last thing sent.
fn read_lines(out: impl Read, tx: mpsc::Sender<Result<String, String>>) {
    let mut reader = BufReader::new(out);
    loop {
        let mut line = Vec::new();
        match (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
        {
            Ok(0) => {
                let _ = tx.send(Err("ended its output".into()));
                return;
            }
            Ok(_) if line.len() > MAX_LINE && !line.ends_with(b"\n") => {
                let _ = tx.send(Ok(format!(
                    "(a line longer than {MAX_LINE} bytes, starting) {}",
                    String::from_utf8_lossy(&line[..QUOTED])
                )));
                return;
            }
            Ok(_) => {
                let text = String::from_utf8_lossy(&line).trim_end().to_string();
                if text.is_empty() {
                    continue;
                }
                if tx.send(Ok(text)).is_err() {
                    return;
                }
            }
            Err(e) => {
                let _ = tx.send(Err(format!("could not be read ({e})")));
                return;
            }
        }
    }
}

fn quote(text: &str) -> String {
    format!("'{}'", cut(text))
}

/// At most [`QUOTED`] characters of `text`.
fn cut(text: &str) -> String {
    if text.chars().count() > QUOTED {
        let cut: String = text.chars().take(QUOTED).collect();
        format!("{cut}...")
    } else {
        text.to_string()
    }
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        _ => "ended".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    /// A fake signer (a fault no real one is known to produce on demand): it greets,
    /// then answers the next request with the bytes of `answer` and a newline (saying
    /// so on standard error first), then waits for one more line.
    fn fake(dir: &tempfile::TempDir, answer: &[u8]) -> SignerProcess {
        std::fs::write(dir.path().join("answer"), answer).unwrap();
        let script = dir.path().join("fake-signer");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\nread -r line\necho '{}'\nread -r line\necho 'fake: answering' >&2\ncat '{}'\necho\nread -r line\n",
                r#"{"id":1,"ok":true,"protocol":1,"implementation":{"name":"fake","version":"0"},"algorithms":[]}"#,
                dir.path().join("answer").display()
            ),
        )
        .unwrap();
        let p = SignerProcess::start(
            &format!("sh {}", script.display()),
            &dir.path().join("signers.toml"),
            dir.path(),
            Duration::from_secs(3),
        )
        .unwrap();
        assert_eq!(p.hello.implementation.name, "fake");
        p
    }

    /// The message of the call `answer` breaks.
    fn broken_by(answer: &[u8]) -> String {
        let dir = tempfile::tempdir().unwrap();
        let mut p = fake(&dir, answer);
        match p.call::<super::super::Listing>(Op::List { orphans: false }) {
            Err(CallError::Broken(m)) => {
                // Broken for good: the next call is refused with the same words.
                match p.call::<super::super::Listing>(Op::List { orphans: false }) {
                    Err(CallError::Broken(again)) => assert_eq!(again, m),
                    other => panic!("a broken process answered again: {other:?}"),
                }
                m
            }
            other => panic!("not broken: {other:?}"),
        }
    }

    #[rstest]
    #[case::another_id(br#"{"id":7,"ok":true,"keys":[]}"#, "with a response for id 7")]
    #[case::no_id(br#"{"ok":true,"keys":[]}"#, "with a response for id (none)")]
    #[case::no_ok(br#"{"id":2,"keys":[]}"#, "neither `ok: true` nor `ok: false`")]
    #[case::ok_as_text(br#"{"id":2,"ok":"true","keys":[]}"#, "not a JSON response")]
    #[case::error_without_kind(
        br#"{"id":2,"ok":false,"error":{"message":"x"}}"#,
        "not a JSON response"
    )]
    #[case::field_missing(br#"{"id":2,"ok":true}"#, "without what it must hold")]
    #[case::not_json(b"<html>oops</html>", "not a JSON response")]
    #[case::not_utf8(b"\xff\xfe{", "not a JSON response")]
    fn a_line_that_is_not_the_response_breaks_the_process(
        #[case] answer: &[u8],
        #[case] words: &str,
    ) {
        let m = broken_by(answer);
        assert!(m.contains("`list` (request 2)"), "{m}");
        assert!(m.contains(words), "{m}");
        assert!(
            m.contains("fake: answering"),
            "the stderr tail is missing: {m}"
        );
    }

    #[test]
    fn an_overlong_line_is_quoted_in_part() {
        let m = broken_by(&vec![b'x'; MAX_LINE + 10]);
        assert!(
            m.contains("a line longer than"),
            "{}",
            &m[..200.min(m.len())]
        );
        assert!(m.len() < 2 * QUOTED + 1000, "{} bytes quoted", m.len());
    }

    #[test]
    fn a_refusal_is_the_signers_answer_not_a_broken_process() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = fake(
            &dir,
            br#"{"id":2,"ok":false,"error":{"kind":"not-found","message":"no such key"}}"#,
        );
        match p.call::<super::super::Listing>(Op::List { orphans: false }) {
            Err(CallError::Refused(e)) => {
                assert_eq!(e.kind, "not-found");
                assert_eq!(e.message, "no such key");
            }
            other => panic!("{other:?}"),
        }
    }
}
