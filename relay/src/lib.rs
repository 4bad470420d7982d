//! kmip2pkcs11: a KMIP 1.0–1.2 server (TTLV over TLS) in front of a PKCS#11 module.
//!
//! A client speaks KMIP to the relay; the relay loads the PKCS#11 module in its own
//! process and turns each operation into PKCS#11 calls on one token (seed 003's relay,
//! complete enough to be a real backend for a KMIP signer). The modules, by domain:
//!
//! | module | what |
//! |---|---|
//! | [`ttlv`] | TTLV items: bounded decoding and encoding on kmip-ttlv's primitives |
//! | [`kmip`] | the KMIP numbers used (tags, operations, enumerations) |
//! | [`message`] | request and response messages, batch items, KMIP errors |
//! | [`operations`] | the dispatcher: one operation per batch item, onto PKCS#11 |
//! | [`formats`] | the public key formats Get offers |
//! | [`mimic`] | `[testing] mimic`: standing in for a released server |
//! | [`identifiers`] | Unique Identifiers <-> PKCS#11 objects |
//! | [`token`], [`pool`] | the module, the token, the session pool |
//! | [`logins`] | bounding C_Login for KMIP credentials (no PIN guessing) |
//! | [`tls`] | rustls (aws-lc-rs), certificates, fingerprints |
//! | [`server`] | connections, framing, limits, timeouts |
//! | [`config`] | the TOML configuration |
//! | [`fuzz`] | the fuzz entry point for the request decoder |

pub mod config;
pub mod der;
pub mod formats;
pub mod fuzz;
pub mod identifiers;
pub mod kmip;
pub mod logins;
pub mod message;
pub mod mimic;
pub mod operations;
pub mod pool;
pub mod server;
pub mod tls;
pub mod token;
pub mod ttlv;

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

pub use config::Config;

/// Starts the relay from a configuration and serves until SIGINT/SIGTERM.
///
/// Once listening it prints `kmip2pkcs11 ready ADDRESS sha256=FINGERPRINT` on stdout
/// and, when `ready_file` is set, writes `ADDRESS FINGERPRINT\n` to it (atomically:
/// written beside it, then renamed), so a harness can wait for readiness and pin the
/// certificate.
pub fn run(config: Config) -> Result<(), String> {
    let token = token::Token::open(
        &config.pkcs11,
        config.auth.credentials,
        Duration::from_secs(config.limits.pool_wait_secs),
    )?
    .with_login_policy(logins::LoginPolicy::from(&config.auth))
    .with_operation_deadline(Duration::from_secs(config.limits.operation_timeout_secs));
    tracing::info!(
        "token {:?} ({}), module {}; RNG {}",
        token.facts.label,
        token.facts.model,
        token.facts.library,
        if token.has_rng { "yes" } else { "no" }
    );
    let (tls, fingerprint) = tls::server_config(&config.tls)?;
    let withheld = config.testing.withheld()?;
    if !withheld.is_empty() {
        let names: Vec<String> = withheld.iter().map(|o| kmip::operation::name(*o)).collect();
        tracing::warn!(
            "[testing] withholding KMIP operations: {} (left out of Query, answered \
             Operation Not Supported)",
            names.join(", ")
        );
    }
    let mimic = config.testing.mimic()?;
    if let Some(m) = mimic {
        tracing::warn!(
            "[testing] mimicking the {}: only its operations, request parsing, key formats, \
             signing and identifiers (see the relay's mimic module); not for production",
            m.describe()
        );
    }
    if !config.authenticates_clients() {
        if config.auth.allow_unauthenticated {
            tracing::warn!(
                "[auth] allow_unauthenticated = true: clients need neither a certificate nor \
                 credentials, and every peer that reaches {} may create, use and destroy the \
                 token's keys",
                config.listen
            );
        } else {
            tracing::info!("no client authentication: serving loopback clients only");
        }
    }
    if config.tls.min_version == config::TlsVersion::Tls12 {
        tracing::warn!(
            "[tls] min_version = \"1.2\": TLS 1.2 clients are accepted (opt-in; 1.3 is the default)"
        );
    }
    let dispatcher = Arc::new(
        operations::Dispatcher::new(Arc::new(token), config.limits.max_message_size)
            .withholding(withheld)
            .mimicking(mimic)
            .authenticated_clients(config.authenticates_clients())
            .max_batch_items(config.limits.max_batch_items),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&config.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
        let server = server::Server::new(listener, tls, dispatcher, config.limits.clone());
        let addr = server
            .local_addr()
            .map_err(|e| format!("no local address: {e}"))?;
        tracing::info!(
            "listening on {addr}, TLS {} to {}, certificate SHA-256 {fingerprint}",
            config.tls.min_version,
            config.tls.max_version
        );
        if let Some(path) = &config.ready_file {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, format!("{addr} {fingerprint}\n"))
                .and_then(|()| std::fs::rename(&tmp, path))
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
        let mut out = std::io::stdout();
        let _ = writeln!(out, "kmip2pkcs11 ready {addr} sha256={fingerprint}");
        let _ = out.flush();
        tokio::select! {
            () = server.serve() => {}
            () = shutdown() => tracing::info!("stopping on signal"),
        }
        Ok(())
    })
}

async fn shutdown() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}
