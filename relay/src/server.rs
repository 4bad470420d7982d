//! Connections: TLS accept, message framing with limits and timeouts, dispatch.
//!
//! Contract, per connection:
//!
//! - The TLS handshake must finish within the read timeout.
//! - Between requests a connection may stay idle for the idle timeout, then it is
//!   closed. Once a message has started (its first byte arrived), the rest, the 8-byte
//!   header included, must arrive within the read timeout, or the connection is closed
//!   and the reason logged (a client trickling a header cannot hold a connection for
//!   the idle timeout).
//! - Each response must be taken by the client within the write timeout; a client that
//!   stops reading loses its connection (and its connection slot).
//! - A header that is not a Request Message structure (tag 420078, type Structure)
//!   leaves no way to find where the message ends: the connection is closed and the
//!   reason logged.
//! - A message longer than `max_message_size` is answered with an Invalid Message
//!   response naming the limit, then the connection is closed (its body is not read).
//! - A connection closed in the middle of a message gets a best-effort Invalid Message
//!   response ("truncated") and is closed.
//! - Everything else gets a response (see [`Dispatcher::handle`]). Dispatch runs on the
//!   blocking pool; a dispatch that panicked would be answered as General Failure
//!   without taking the process down. A dispatch that has not finished within
//!   `operation_timeout_secs` (a hung module) is answered as Operation Failed (General
//!   Failure naming the deadline) and left to finish on its own; the session pool
//!   abandons and replaces its session (see [`crate::pool`]), so other clients go on.
//! - At most `max_connections` connections are served at once; more wait in the
//!   listen backlog. At most `max_connections_per_client` of them come from one IP
//!   address: more from it are closed right after accept, before TLS, and logged.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use crate::config::Limits;
use crate::kmip::tag;
use crate::message::{KmipError, Response, Version};
use crate::operations::Dispatcher;
use crate::ttlv::{Header, HEADER_LEN};

/// A bound, ready-to-serve relay.
pub struct Server {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    dispatcher: Arc<Dispatcher>,
    limits: Limits,
}

impl Server {
    pub fn new(
        listener: TcpListener,
        tls: Arc<rustls::ServerConfig>,
        dispatcher: Arc<Dispatcher>,
        limits: Limits,
    ) -> Self {
        Server {
            listener,
            acceptor: TlsAcceptor::from(tls),
            dispatcher,
            limits,
        }
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until the task is dropped.
    pub async fn serve(self) {
        let permits = Arc::new(Semaphore::new(self.limits.max_connections));
        let per_client = Arc::new(Mutex::new(HashMap::<IpAddr, usize>::new()));
        loop {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let (tcp, peer) = match self.listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Some(client_slot) = ClientSlot::take(
                &per_client,
                peer.ip(),
                self.limits.max_connections_per_client,
            ) else {
                tracing::warn!(
                    "{peer}: refused: {} connections from {} already",
                    self.limits.max_connections_per_client,
                    peer.ip()
                );
                drop(tcp);
                continue;
            };
            let acceptor = self.acceptor.clone();
            let dispatcher = self.dispatcher.clone();
            let limits = self.limits.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let _client_slot = client_slot;
                let _ = tcp.set_nodelay(true);
                let read_timeout = Duration::from_secs(limits.read_timeout_secs);
                let tls = match tokio::time::timeout(read_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::info!("{peer}: TLS handshake failed: {e}");
                        return;
                    }
                    Err(_) => {
                        tracing::info!("{peer}: TLS handshake timed out");
                        return;
                    }
                };
                let version = tls
                    .get_ref()
                    .1
                    .protocol_version()
                    .map(|v| format!("{v:?}"))
                    .unwrap_or_default();
                tracing::debug!("{peer}: connected ({version})");
                let reason = serve_connection(tls, &dispatcher, &limits, Some(peer.ip())).await;
                tracing::info!("{peer}: connection closed: {reason}");
            });
        }
    }
}

/// Serves requests on one stream until it ends; returns why it ended.
pub async fn serve_connection<S>(
    mut stream: S,
    dispatcher: &Arc<Dispatcher>,
    limits: &Limits,
    client: Option<IpAddr>,
) -> String
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let idle = Duration::from_secs(limits.idle_timeout_secs);
    let read_timeout = Duration::from_secs(limits.read_timeout_secs);
    let write_timeout = Duration::from_secs(limits.write_timeout_secs);
    let op_timeout = Duration::from_secs(limits.operation_timeout_secs);
    let mut served = 0u64;
    loop {
        let mut head = [0u8; HEADER_LEN];
        // Idle until the first byte; from then on the read timeout (slowloris).
        match tokio::time::timeout(idle, stream.read_exact(&mut head[..1])).await {
            Err(_) => return format!("idle for {}s after {served} requests", idle.as_secs()),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return format!("client closed after {served} requests")
            }
            Ok(Err(e)) => return format!("read error: {e}"),
            Ok(Ok(_)) => {}
        }
        let started = tokio::time::Instant::now();
        match tokio::time::timeout(read_timeout, stream.read_exact(&mut head[1..])).await {
            Err(_) => {
                return format!(
                    "message header not complete within {}s",
                    read_timeout.as_secs()
                )
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return "client closed within a message header".into()
            }
            Ok(Err(e)) => return format!("read error: {e}"),
            Ok(Ok(_)) => {}
        }
        let header = Header::parse(&head);
        if header.tag != tag::REQUEST_MESSAGE || !header.is_structure() {
            return format!(
                "not a KMIP request: header tag {:06X} type {:#04x}; cannot find the message end",
                header.tag, header.item_type
            );
        }
        let total = HEADER_LEN as u64 + u64::from(header.length);
        if total > limits.max_message_size as u64 {
            let r = Response::failure(
                Version::HIGHEST,
                KmipError::invalid_message(format!(
                    "the request is {total} bytes; this relay accepts at most {} bytes",
                    limits.max_message_size
                )),
            );
            let _ = write(&mut stream, &r.to_bytes(), write_timeout).await;
            return format!("oversized request of {total} bytes refused");
        }
        let mut frame = vec![0u8; total as usize];
        frame[..HEADER_LEN].copy_from_slice(&head);
        let rest = read_timeout.saturating_sub(started.elapsed());
        match tokio::time::timeout(rest, stream.read_exact(&mut frame[HEADER_LEN..])).await {
            Err(_) => {
                return format!(
                    "message not complete within {}s (expected {total} bytes)",
                    read_timeout.as_secs()
                )
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                let r = Response::failure(
                    Version::HIGHEST,
                    KmipError::invalid_message(format!(
                        "truncated request: the header announced {total} bytes"
                    )),
                );
                let _ = write(&mut stream, &r.to_bytes(), write_timeout).await;
                return "truncated request".into();
            }
            Ok(Err(e)) => return format!("read error: {e}"),
            Ok(Ok(_)) => {}
        }
        let d = dispatcher.clone();
        let dispatch = tokio::task::spawn_blocking(move || d.handle_from(&frame, client));
        let response = match tokio::time::timeout(op_timeout, dispatch).await {
            Ok(Ok(bytes)) => bytes,
            Err(_) => {
                tracing::error!(
                    "a request did not finish within {}s (operation_timeout_secs): answered \
                         as failed, left to finish on its own",
                    op_timeout.as_secs()
                );
                Response::failure(
                    Version::HIGHEST,
                    KmipError::general(format!(
                        "the PKCS#11 module did not finish the request within {}s",
                        op_timeout.as_secs()
                    )),
                )
                .to_bytes()
            }
            Ok(Err(e)) => {
                tracing::error!("dispatch failed: {e}");
                Response::failure(
                    Version::HIGHEST,
                    KmipError::general("internal error while handling the request"),
                )
                .to_bytes()
            }
        };
        if let Err(e) = write(&mut stream, &response, write_timeout).await {
            return format!("write error: {e}");
        }
        served += 1;
    }
}

/// Writes a response; a client that does not take it within `timeout` fails it.
async fn write<S: AsyncWrite + Unpin>(
    stream: &mut S,
    bytes: &[u8],
    timeout: Duration,
) -> std::io::Result<()> {
    let all = async {
        stream.write_all(bytes).await?;
        stream.flush().await
    };
    match tokio::time::timeout(timeout, all).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "the client did not take a {}-byte response within {}s",
                bytes.len(),
                timeout.as_secs()
            ),
        )),
    }
}

/// One of a client address's `max_connections_per_client` connections; given back
/// when dropped.
struct ClientSlot {
    table: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl ClientSlot {
    fn take(table: &Arc<Mutex<HashMap<IpAddr, usize>>>, ip: IpAddr, max: usize) -> Option<Self> {
        let mut t = table.lock().unwrap_or_else(PoisonError::into_inner);
        let n = t.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            table: table.clone(),
            ip,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut t = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = t.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                t.remove(&self.ip);
            }
        }
    }
}
