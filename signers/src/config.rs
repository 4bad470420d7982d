//! Signer configuration in the `[[signers]]` format of seed 001.
//!
//! ```toml
//! default_signer = "SoftHSMv2"        # required when more than one signer is defined
//! one_off_signer = "Default OpenSSL"  # optional
//!
//! [[signers]]
//! type = "PKCS#11"
//! name = "SoftHSMv2"
//! lib_path = "/usr/lib/softhsm/libsofthsm2.so"
//! slot = "My token 1"   # label; an integer (or "0x..." string) is a slot id
//! user_pin = 5678       # literal, "env:NAME" or "file:PATH"
//! login = true          # optional (default true)
//! force = false         # optional: go on without C_DestroyObject, C_GetInfo or
//!                       # C_GetSlotInfo (default false: such a module is unusable)
//! ```
//!
//! Refused, each with the file, line and column: unknown keys (top level or per
//! signer type), a missing or unknown `type`, duplicate names, a role naming no
//! signer, and several signers without `default_signer`. No `[[signers]]` at all means
//! one OpenSSL signer, which is the default.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::{Spanned, Table, Value};

use crate::Secret;

/// The name given to the implicit signer when no `[[signers]]` are configured.
pub const IMPLICIT_SIGNER_NAME: &str = "Default OpenSSL signer";

/// The whole signer configuration: the signers and who plays which role.
#[derive(Clone, Debug)]
pub struct SignerSetup {
    pub signers: Vec<SignerConfig>,
    /// Index into `signers` of the signer that creates new keys.
    pub default_signer: usize,
    /// Index into `signers` of the signer named as `one_off_signer`, if any.
    pub one_off_signer: Option<usize>,
    /// How unreachable signers are retried.
    pub retry: RetryPolicy,
}

/// Backoff for signers that cannot be reached: the first retry waits `initial_delay`,
/// each next one `factor` times longer, never more than `max_delay`.
///
/// Written as a top-level table:
/// `[signer_retry]` with `initial_delay = 2.0`, `factor = 1.5`, `max_delay = 30.0`
/// (seconds). Refused: non-positive delays, a factor below 1.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    pub initial_delay: f64,
    pub factor: f64,
    pub max_delay: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial_delay: 2.0,
            factor: 1.5,
            max_delay: 30.0,
        }
    }
}

impl RetryPolicy {
    /// The delay after `delay`.
    pub fn next(&self, delay: std::time::Duration) -> std::time::Duration {
        let next = (delay.as_secs_f64() * self.factor).min(self.max_delay);
        std::time::Duration::from_secs_f64(next.max(0.0))
    }

    pub fn first(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.initial_delay.min(self.max_delay).max(0.0))
    }
}

/// One `[[signers]]` entry.
#[derive(Clone, Debug)]
pub struct SignerConfig {
    pub name: String,
    pub kind: SignerKind,
}

/// The type-specific part of a signer entry.
#[derive(Clone, Debug)]
pub enum SignerKind {
    OpenSsl(OpenSslConfig),
    Pkcs11(Pkcs11Config),
    Kmip(KmipConfig),
}

impl SignerKind {
    /// The `type` value as written in configuration.
    pub fn type_name(&self) -> &'static str {
        match self {
            SignerKind::OpenSsl(_) => "OpenSSL",
            SignerKind::Pkcs11(_) => "PKCS#11",
            SignerKind::Kmip(_) => "KMIP",
        }
    }
}

/// `type = "OpenSSL"`: the software signer.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenSslConfig {
    /// Where key files live; default `<state>/keys`.
    pub keys_dir: Option<PathBuf>,
}

/// `type = "PKCS#11"`.
#[derive(Clone, Debug)]
pub struct Pkcs11Config {
    pub lib_path: PathBuf,
    pub slot: SlotSelector,
    pub user_pin: Option<Secret>,
    /// Log in as user before use (default true). `false` for tokens that need no login.
    pub login: bool,
    /// Go on with a module that lacks a required function the signer can do without
    /// (default false), as `force` does for a KMIP server: C_GetInfo, C_GetSlotInfo
    /// (details left out) and C_DestroyObject (then `destroy_key` is unsupported).
    /// Logged as a warning. The functions every operation needs stay fatal.
    pub force: bool,
}

/// How a PKCS#11 slot is chosen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SlotSelector {
    Id(u64),
    Label(String),
}

impl fmt::Display for SlotSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SlotSelector::Id(id) => write!(f, "slot id {id:#x}"),
            SlotSelector::Label(l) => write!(f, "token label '{l}'"),
        }
    }
}

/// `type = "KMIP"`: the keys seed 001 documents, plus connection settings.
///
/// Seed 001's keys: `host`, `port` (default 5696), `server_ca_cert_path`,
/// `client_cert_path`, `client_cert_private_key_path`, `username`, `password` (a secret:
/// literal, `env:NAME` or `file:PATH`), `insecure`, `force`. Ours: `connect_timeout`,
/// `read_timeout` and `request_timeout` (seconds, integer or decimal, defaults 5, 30
/// and 60; `request_timeout` bounds one whole request, connecting included, however
/// slowly the server trickles its bytes), `pool_size` (idle
/// connections kept, default 2) and `weaken_security_allow_tls12` (default false: only
/// TLS 1.3 is offered). Refused: a client certificate without its key (or the other way
/// round), a `password` without a `username`, non-positive or absurd timeouts, a pool
/// above 64.
#[derive(Clone, Debug)]
pub struct KmipConfig {
    pub host: String,
    pub port: u16,
    pub server_ca_cert_path: Option<PathBuf>,
    pub client_cert_path: Option<PathBuf>,
    pub client_cert_private_key_path: Option<PathBuf>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub insecure: bool,
    pub force: bool,
    /// How long to wait for the TCP connection (per address).
    pub connect_timeout: std::time::Duration,
    /// How long to wait for each read or write on an open connection (TLS handshake
    /// included).
    pub read_timeout: std::time::Duration,
    /// How long one request may take in all: connect, TLS handshake, first-contact
    /// questions, sending and reading the whole answer. Each read or write is also
    /// bounded by `read_timeout`, but a server that trickles a byte at a time never
    /// trips that; this deadline ends such a call.
    pub request_timeout: std::time::Duration,
    /// How many idle connections are kept for reuse.
    pub pool_size: usize,
    /// Also offer TLS 1.2 (TLS 1.3 only when false). Weakens security; every connect
    /// logs a warning.
    pub weaken_security_allow_tls12: bool,
}

impl KmipConfig {
    /// A configuration for `host:port` with every optional key at its default.
    pub fn new(host: &str, port: u16) -> Self {
        KmipConfig {
            host: host.to_string(),
            port,
            server_ca_cert_path: None,
            client_cert_path: None,
            client_cert_private_key_path: None,
            username: None,
            password: None,
            insecure: false,
            force: false,
            connect_timeout: std::time::Duration::from_secs(5),
            read_timeout: std::time::Duration::from_secs(30),
            request_timeout: std::time::Duration::from_secs(60),
            pool_size: 2,
            weaken_security_allow_tls12: false,
        }
    }
}

/// A configuration error with its place in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

impl std::error::Error for ConfigError {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSetup {
    signer_retry: Option<Spanned<RetryPolicy>>,
    default_signer: Option<Spanned<String>>,
    one_off_signer: Option<Spanned<String>>,
    signers: Option<Vec<Spanned<Table>>>,
}

const OPENSSL_KEYS: &[&str] = &["type", "name", "keys_dir"];
const PKCS11_KEYS: &[&str] = &[
    "type", "name", "lib_path", "slot", "user_pin", "login", "force",
];
const KMIP_KEYS: &[&str] = &[
    "type",
    "name",
    "host",
    "port",
    "server_ca_cert_path",
    "client_cert_path",
    "client_cert_private_key_path",
    "username",
    "password",
    "insecure",
    "force",
    "connect_timeout",
    "read_timeout",
    "request_timeout",
    "pool_size",
    "weaken_security_allow_tls12",
];
const TYPES: &str = "\"OpenSSL\", \"PKCS#11\", \"KMIP\"";

impl SignerSetup {
    /// Reads and parses a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.display().to_string(),
            line: 0,
            column: 0,
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// The configuration used when none is given: one OpenSSL signer.
    pub fn implicit() -> Self {
        SignerSetup {
            signers: vec![SignerConfig {
                name: IMPLICIT_SIGNER_NAME.to_string(),
                kind: SignerKind::OpenSsl(OpenSslConfig::default()),
            }],
            default_signer: 0,
            one_off_signer: None,
            retry: RetryPolicy::default(),
        }
    }

    /// Parses configuration text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self, ConfigError> {
        let place = Place { text, file };
        let raw: RawSetup = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            place.error(span, e.message().to_string())
        })?;
        let retry = match &raw.signer_retry {
            None => RetryPolicy::default(),
            Some(r) => {
                let p = *r.get_ref();
                if !(p.initial_delay > 0.0 && p.max_delay > 0.0 && p.factor >= 1.0) {
                    return Err(place.error(
                        r.span(),
                        "signer_retry needs initial_delay > 0, max_delay > 0 and factor >= 1"
                            .into(),
                    ));
                }
                p
            }
        };
        let Some(entries) = raw.signers else {
            if let Some(name) = raw.default_signer.as_ref().or(raw.one_off_signer.as_ref()) {
                return Err(place.error(
                    name.span(),
                    format!(
                        "'{}' names a signer but no [[signers]] are defined",
                        name.get_ref()
                    ),
                ));
            }
            return Ok(SignerSetup {
                retry,
                ..Self::implicit()
            });
        };
        if entries.is_empty() {
            return Ok(SignerSetup {
                retry,
                ..Self::implicit()
            });
        }

        let mut signers: Vec<SignerConfig> = Vec::new();
        for entry in &entries {
            let config = parse_signer(&place, entry)?;
            if signers.iter().any(|s| s.name == config.name) {
                let span = value_span(&place, entry.span(), "name");
                return Err(place.error(span, format!("duplicate signer name '{}'", config.name)));
            }
            signers.push(config);
        }

        let find = |role: &str, name: &Spanned<String>| -> Result<usize, ConfigError> {
            signers
                .iter()
                .position(|s| &s.name == name.get_ref())
                .ok_or_else(|| {
                    let known: Vec<String> =
                        signers.iter().map(|s| format!("'{}'", s.name)).collect();
                    place.error(
                        name.span(),
                        format!(
                            "{role} '{}' is not the name of a configured signer (known: {})",
                            name.get_ref(),
                            known.join(", ")
                        ),
                    )
                })
        };
        let default_signer = match &raw.default_signer {
            Some(name) => find("default_signer", name)?,
            None if signers.len() == 1 => 0,
            None => {
                return Err(place.error(
                    entries[1].span(),
                    format!(
                        "{} signers are defined but default_signer is not set; \
                         name the one that creates new keys",
                        signers.len()
                    ),
                ))
            }
        };
        let one_off_signer = raw
            .one_off_signer
            .as_ref()
            .map(|n| find("one_off_signer", n))
            .transpose()?;
        Ok(SignerSetup {
            signers,
            default_signer,
            one_off_signer,
            retry,
        })
    }
}

/// Writing a setup back out, for a signer implementation in another process (the
/// harness's `--signer-cmd`).
impl SignerSetup {
    /// The setup in the `[[signers]]` format [`SignerSetup::parse`] reads back as the
    /// same setup. Secrets are written as their source (`env:NAME`, `file:PATH`);
    /// refused: a literal secret, which would put a PIN or password in the file.
    pub fn to_toml(&self) -> Result<String, String> {
        fn secret(s: &Secret, what: &str) -> Result<Value, String> {
            match s {
                Secret::Literal(_) => Err(format!(
                    "{what} is a literal; only env: and file: sources are written out"
                )),
                other => Ok(Value::String(other.to_string())),
            }
        }
        fn path(p: &Path) -> Value {
            Value::String(p.display().to_string())
        }
        fn seconds(d: std::time::Duration) -> Value {
            Value::Float(d.as_secs_f64())
        }
        let mut root = Table::new();
        if self.signers.len() > 1 {
            root.insert(
                "default_signer".into(),
                Value::String(self.signers[self.default_signer].name.clone()),
            );
        }
        if let Some(i) = self.one_off_signer {
            root.insert(
                "one_off_signer".into(),
                Value::String(self.signers[i].name.clone()),
            );
        }
        if self.retry != RetryPolicy::default() {
            let mut t = Table::new();
            t.insert(
                "initial_delay".into(),
                Value::Float(self.retry.initial_delay),
            );
            t.insert("factor".into(), Value::Float(self.retry.factor));
            t.insert("max_delay".into(), Value::Float(self.retry.max_delay));
            root.insert("signer_retry".into(), Value::Table(t));
        }
        let mut entries = Vec::new();
        for s in &self.signers {
            let mut t = Table::new();
            t.insert("type".into(), Value::String(s.kind.type_name().into()));
            t.insert("name".into(), Value::String(s.name.clone()));
            match &s.kind {
                SignerKind::OpenSsl(c) => {
                    if let Some(d) = &c.keys_dir {
                        t.insert("keys_dir".into(), path(d));
                    }
                }
                SignerKind::Pkcs11(c) => {
                    t.insert("lib_path".into(), path(&c.lib_path));
                    let slot = match &c.slot {
                        SlotSelector::Id(id) => Value::String(format!("{id:#x}")),
                        SlotSelector::Label(l) => Value::String(l.clone()),
                    };
                    t.insert("slot".into(), slot);
                    if let Some(pin) = &c.user_pin {
                        t.insert("user_pin".into(), secret(pin, "user_pin")?);
                    }
                    t.insert("login".into(), Value::Boolean(c.login));
                    t.insert("force".into(), Value::Boolean(c.force));
                }
                SignerKind::Kmip(c) => {
                    t.insert("host".into(), Value::String(c.host.clone()));
                    t.insert("port".into(), Value::Integer(c.port.into()));
                    for (k, v) in [
                        ("server_ca_cert_path", &c.server_ca_cert_path),
                        ("client_cert_path", &c.client_cert_path),
                        (
                            "client_cert_private_key_path",
                            &c.client_cert_private_key_path,
                        ),
                    ] {
                        if let Some(p) = v {
                            t.insert(k.into(), path(p));
                        }
                    }
                    if let Some(u) = &c.username {
                        t.insert("username".into(), Value::String(u.clone()));
                    }
                    if let Some(p) = &c.password {
                        t.insert("password".into(), secret(p, "password")?);
                    }
                    t.insert("insecure".into(), Value::Boolean(c.insecure));
                    t.insert("force".into(), Value::Boolean(c.force));
                    t.insert("connect_timeout".into(), seconds(c.connect_timeout));
                    t.insert("read_timeout".into(), seconds(c.read_timeout));
                    t.insert("request_timeout".into(), seconds(c.request_timeout));
                    t.insert("pool_size".into(), Value::Integer(c.pool_size as i64));
                    t.insert(
                        "weaken_security_allow_tls12".into(),
                        Value::Boolean(c.weaken_security_allow_tls12),
                    );
                }
            }
            entries.push(Value::Table(t));
        }
        root.insert("signers".into(), Value::Array(entries));
        toml::to_string(&root).map_err(|e| e.to_string())
    }
}

/// The text being parsed, to turn byte spans into line and column.
struct Place<'a> {
    text: &'a str,
    file: &'a str,
}

impl Place<'_> {
    fn error(&self, span: Range<usize>, message: String) -> ConfigError {
        let (line, column) = line_col(self.text, span.start);
        ConfigError {
            file: self.file.to_string(),
            line,
            column,
            message,
        }
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// The span of `key = ...` inside a table's span, found by scanning its lines; the
/// table's own span when the key is not written there (e.g. an inline table).
fn value_span(place: &Place, table: Range<usize>, key: &str) -> Range<usize> {
    // toml spans an array-of-tables entry by its header only: the body runs to the next
    // header line.
    let start = table.start.min(place.text.len());
    let rest = &place.text[start..];
    let first_line = rest.find('\n').map_or(rest.len(), |i| i + 1);
    let end = rest[first_line..]
        .match_indices('\n')
        .map(|(i, _)| first_line + i + 1)
        .find(|&i| rest[i..].trim_start_matches([' ', '\t']).starts_with('['))
        .map_or(place.text.len(), |i| start + i);
    let body = &place.text[start..end];
    let mut offset = table.start;
    for line in body.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let quoted = format!("\"{key}\"");
        for written in [key, quoted.as_str()] {
            if let Some(rest) = trimmed.strip_prefix(written) {
                if rest.trim_start().starts_with('=') {
                    let indent = line.len() - trimmed.len();
                    return offset + indent..offset + line.len();
                }
            }
        }
        offset += line.len();
    }
    table
}

fn parse_signer(place: &Place, entry: &Spanned<Table>) -> Result<SignerConfig, ConfigError> {
    let table = entry.get_ref();
    let span = entry.span();
    let at = |key: &str| value_span(place, span.clone(), key);
    let signer_type = match table.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(_) => return Err(place.error(at("type"), format!("type must be one of {TYPES}"))),
        None => {
            return Err(place.error(span.clone(), format!("signer has no type (one of {TYPES})")))
        }
    };
    let name = match table.get("name") {
        Some(Value::String(n)) if !n.trim().is_empty() => n.clone(),
        Some(_) => return Err(place.error(at("name"), "name must be a non-empty string".into())),
        None => return Err(place.error(span.clone(), "signer has no name".into())),
    };
    let allowed = match signer_type {
        "OpenSSL" => OPENSSL_KEYS,
        "PKCS#11" => PKCS11_KEYS,
        "KMIP" => KMIP_KEYS,
        other => {
            return Err(place.error(
                at("type"),
                format!("unknown signer type '{other}' (allowed: {TYPES})"),
            ))
        }
    };
    if let Some(unknown) = table.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(place.error(
            at(unknown),
            format!(
                "unknown key '{unknown}' for a {signer_type} signer (allowed: {})",
                allowed.join(", ")
            ),
        ));
    }
    let fields = Fields {
        place,
        table,
        span: span.clone(),
        signer_type,
    };
    let kind = match signer_type {
        "OpenSSL" => SignerKind::OpenSsl(OpenSslConfig {
            keys_dir: fields.opt_string("keys_dir")?.map(PathBuf::from),
        }),
        "PKCS#11" => SignerKind::Pkcs11(Pkcs11Config {
            lib_path: PathBuf::from(fields.string("lib_path")?),
            slot: fields.slot()?,
            user_pin: fields.opt_secret("user_pin")?,
            login: fields.opt_bool("login")?.unwrap_or(true),
            force: fields.opt_bool("force")?.unwrap_or(false),
        }),
        _ => SignerKind::Kmip(kmip_config(&fields)?),
    };
    Ok(SignerConfig { name, kind })
}

/// The KMIP branch: seed 001's keys plus timeouts, pool size and the TLS 1.2 opt-in.
fn kmip_config(fields: &Fields) -> Result<KmipConfig, ConfigError> {
    let defaults = KmipConfig::new("", 5696);
    let config = KmipConfig {
        host: fields.string("host")?,
        port: fields.port()?,
        server_ca_cert_path: fields.opt_string("server_ca_cert_path")?.map(PathBuf::from),
        client_cert_path: fields.opt_string("client_cert_path")?.map(PathBuf::from),
        client_cert_private_key_path: fields
            .opt_string("client_cert_private_key_path")?
            .map(PathBuf::from),
        username: fields.opt_string("username")?,
        password: fields.opt_secret("password")?,
        insecure: fields.opt_bool("insecure")?.unwrap_or(false),
        force: fields.opt_bool("force")?.unwrap_or(false),
        connect_timeout: fields
            .opt_seconds("connect_timeout")?
            .unwrap_or(defaults.connect_timeout),
        read_timeout: fields
            .opt_seconds("read_timeout")?
            .unwrap_or(defaults.read_timeout),
        request_timeout: fields
            .opt_seconds("request_timeout")?
            .unwrap_or(defaults.request_timeout),
        pool_size: match fields.table.get("pool_size") {
            None => defaults.pool_size,
            Some(Value::Integer(i)) if (0..=64).contains(i) => *i as usize,
            Some(_) => return Err(fields.wrong("pool_size", "an integer from 0 to 64")),
        },
        weaken_security_allow_tls12: fields
            .opt_bool("weaken_security_allow_tls12")?
            .unwrap_or(false),
    };
    if config.host.trim().is_empty() {
        return Err(fields.wrong("host", "a non-empty host name or IP address"));
    }
    match (
        &config.client_cert_path,
        &config.client_cert_private_key_path,
    ) {
        (Some(_), None) => {
            return Err(fields.wrong(
                "client_cert_path",
                "set together with client_cert_private_key_path",
            ))
        }
        (None, Some(_)) => {
            return Err(fields.wrong(
                "client_cert_private_key_path",
                "set together with client_cert_path",
            ))
        }
        _ => {}
    }
    if config.password.is_some() && config.username.is_none() {
        return Err(fields.wrong("password", "set together with username"));
    }
    Ok(config)
}

/// Typed access to one signer table, with errors that point at the key.
struct Fields<'a> {
    place: &'a Place<'a>,
    table: &'a Table,
    span: Range<usize>,
    signer_type: &'a str,
}

impl Fields<'_> {
    fn wrong(&self, key: &str, expected: &str) -> ConfigError {
        self.place.error(
            value_span(self.place, self.span.clone(), key),
            format!("{key} must be {expected}"),
        )
    }

    fn string(&self, key: &str) -> Result<String, ConfigError> {
        self.opt_string(key)?.ok_or_else(|| {
            self.place.error(
                self.span.clone(),
                format!("a {} signer needs '{key}'", self.signer_type),
            )
        })
    }

    fn opt_string(&self, key: &str) -> Result<Option<String>, ConfigError> {
        match self.table.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(self.wrong(key, "a string")),
        }
    }

    fn opt_bool(&self, key: &str) -> Result<Option<bool>, ConfigError> {
        match self.table.get(key) {
            None => Ok(None),
            Some(Value::Boolean(b)) => Ok(Some(*b)),
            Some(_) => Err(self.wrong(key, "true or false")),
        }
    }

    /// A secret: a string (`env:`/`file:`/literal) or, as seed 001 writes a PIN, an integer.
    fn opt_secret(&self, key: &str) -> Result<Option<Secret>, ConfigError> {
        match self.table.get(key) {
            None => Ok(None),
            Some(Value::Integer(i)) if *i >= 0 => Ok(Some(Secret::Literal(i.to_string().into()))),
            Some(Value::String(s)) => Secret::parse(s)
                .map(Some)
                .map_err(|e| self.wrong(key, &format!("a valid secret ({e})"))),
            Some(_) => Err(self.wrong(key, "a string, \"env:NAME\", \"file:PATH\" or an integer")),
        }
    }

    fn slot(&self) -> Result<SlotSelector, ConfigError> {
        match self.table.get("slot") {
            None => Err(self.place.error(
                self.span.clone(),
                "a PKCS#11 signer needs 'slot' (an integer slot id or a token label)".into(),
            )),
            Some(Value::Integer(i)) if *i >= 0 => Ok(SlotSelector::Id(*i as u64)),
            Some(Value::String(s)) => {
                // "0x1a2b" written as a string is still a slot id, as pkcs11-tool prints them.
                let hex = s
                    .strip_prefix("0x")
                    .or_else(|| s.strip_prefix("0X"))
                    .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit()));
                match hex {
                    Some(h) => u64::from_str_radix(h, 16)
                        .map(SlotSelector::Id)
                        .map_err(|_| self.wrong("slot", "a slot id that fits in 64 bits")),
                    None if s.is_empty() => Err(self.wrong("slot", "a non-empty token label")),
                    None => Ok(SlotSelector::Label(s.clone())),
                }
            }
            Some(_) => Err(self.wrong("slot", "a non-negative integer slot id or a token label")),
        }
    }

    /// A duration in seconds: a positive integer or decimal, at most a day.
    fn opt_seconds(&self, key: &str) -> Result<Option<std::time::Duration>, ConfigError> {
        let secs = match self.table.get(key) {
            None => return Ok(None),
            Some(Value::Integer(i)) => *i as f64,
            Some(Value::Float(f)) => *f,
            Some(_) => return Err(self.wrong(key, "a number of seconds")),
        };
        if !(secs > 0.0 && secs <= 86400.0) {
            return Err(self.wrong(key, "a number of seconds above 0 and at most 86400"));
        }
        Ok(Some(std::time::Duration::from_secs_f64(secs)))
    }

    fn port(&self) -> Result<u16, ConfigError> {
        match self.table.get("port") {
            None => Ok(5696),
            Some(Value::Integer(i)) if (1..=65535).contains(i) => Ok(*i as u16),
            Some(_) => Err(self.wrong("port", "an integer from 1 to 65535")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    const SEED_SOFTHSM: &str = r#"
[[signers]]
type = "PKCS#11"
name = "SoftHSMv2"
lib_path = "/usr/lib/softhsm/libsofthsm2.so"
slot = "My token 1"
user_pin = 5678
"#;

    #[test]
    fn seed_softhsm_example_parses_as_written() {
        let setup = SignerSetup::parse(SEED_SOFTHSM, "krill.conf").unwrap();
        assert_eq!(setup.signers.len(), 1);
        assert_eq!(setup.default_signer, 0);
        let SignerKind::Pkcs11(p) = &setup.signers[0].kind else {
            panic!("not PKCS#11")
        };
        assert_eq!(p.slot, SlotSelector::Label("My token 1".into()));
        assert_eq!(
            secrecy::ExposeSecret::expose_secret(&p.user_pin.as_ref().unwrap().resolve().unwrap()),
            "5678"
        );
        assert!(p.login);
        assert!(!p.force);
        let forced = SignerSetup::parse(&format!("{SEED_SOFTHSM}force = true\n"), "c").unwrap();
        let SignerKind::Pkcs11(p) = &forced.signers[0].kind else {
            panic!("not PKCS#11")
        };
        assert!(p.force);
        let e = SignerSetup::parse(&format!("{SEED_SOFTHSM}force = 1\n"), "c").unwrap_err();
        assert!(e.message.contains("force must be true or false"), "{e}");
    }

    #[test]
    fn seed_kmip_example_parses() {
        let text = r#"
[[signers]]
type = "KMIP"
name = "Kryptus via KMIP"
host = "my.hsm.example.com"
port = 5696                                             # optional, default = 5696
server_ca_cert_path = "/path/to/some/ca.pem"            # optional
client_cert_path = "/path/to/some/cert.pem"             # optional
client_cert_private_key_path = "/path/to/some/key.pem"  # optional
username = "user1"                                      # optional
password = "xxxxxx"                                     # optional
insecure = false                                        # optional
force = false                                           # optional
"#;
        let setup = SignerSetup::parse(text, "krill.conf").unwrap();
        let SignerKind::Kmip(k) = &setup.signers[0].kind else {
            panic!("not KMIP")
        };
        assert_eq!((k.host.as_str(), k.port), ("my.hsm.example.com", 5696));
        assert!(
            !format!("{k:?}").contains("xxxxxx"),
            "password leaked in Debug"
        );
    }

    #[test]
    fn kmip_defaults_and_connection_keys() {
        let base = "[[signers]]\ntype = \"KMIP\"\nname = \"k\"\nhost = \"h\"\n";
        let setup = SignerSetup::parse(base, "c").unwrap();
        let SignerKind::Kmip(k) = &setup.signers[0].kind else {
            panic!("not KMIP")
        };
        assert_eq!(k.port, 5696);
        assert_eq!(k.connect_timeout, std::time::Duration::from_secs(5));
        assert_eq!(k.read_timeout, std::time::Duration::from_secs(30));
        assert_eq!(k.request_timeout, std::time::Duration::from_secs(60));
        assert_eq!(k.pool_size, 2);
        assert!(!k.weaken_security_allow_tls12 && !k.insecure && !k.force);
        let text = format!(
            "{base}connect_timeout = 1.5\nread_timeout = 60\nrequest_timeout = 2.5\npool_size = 0\n\
             weaken_security_allow_tls12 = true\nusername = \"u\"\npassword = \"env:KMIP_PW\"\n"
        );
        let setup = SignerSetup::parse(&text, "c").unwrap();
        let SignerKind::Kmip(k) = &setup.signers[0].kind else {
            panic!("not KMIP")
        };
        assert_eq!(k.connect_timeout, std::time::Duration::from_millis(1500));
        assert_eq!(k.read_timeout, std::time::Duration::from_secs(60));
        assert_eq!(k.request_timeout, std::time::Duration::from_millis(2500));
        assert_eq!(k.pool_size, 0);
        assert!(k.weaken_security_allow_tls12);
        assert_eq!(k.password, Some(Secret::Env("KMIP_PW".into())));
    }

    #[rstest]
    #[case::zero_timeout("connect_timeout = 0", 5, "connect_timeout must be")]
    #[case::text_timeout("read_timeout = \"soon\"", 5, "read_timeout must be")]
    #[case::zero_request_timeout("request_timeout = 0", 5, "request_timeout must be")]
    #[case::big_pool("pool_size = 1000", 5, "pool_size must be")]
    #[case::tls12_not_bool("weaken_security_allow_tls12 = \"yes\"", 5, "true or false")]
    #[case::cert_without_key("client_cert_path = \"/c.pem\"", 5, "client_cert_private_key_path")]
    #[case::key_without_cert("client_cert_private_key_path = \"/k.pem\"", 5, "client_cert_path")]
    #[case::password_without_username("password = \"x\"", 5, "username")]
    #[case::min_tls_is_not_a_key("min_tls_version = \"1.2\"", 5, "unknown key 'min_tls_version'")]
    fn kmip_refusals(#[case] line: &str, #[case] at: usize, #[case] needle: &str) {
        let text = format!("[[signers]]\ntype = \"KMIP\"\nname = \"k\"\nhost = \"h\"\n{line}\n");
        let err = SignerSetup::parse(&text, "c").unwrap_err();
        assert_eq!(err.line, at, "{err}");
        assert!(err.message.contains(needle), "{err}");
    }

    #[test]
    fn retry_policy_defaults_and_overrides() {
        let d = SignerSetup::parse("", "c").unwrap().retry;
        assert_eq!((d.initial_delay, d.factor, d.max_delay), (2.0, 1.5, 30.0));
        let s = SignerSetup::parse("[signer_retry]\ninitial_delay = 0.5\n", "c").unwrap();
        assert_eq!(s.retry.initial_delay, 0.5);
        assert_eq!(s.retry.factor, 1.5);
        let e = SignerSetup::parse("[signer_retry]\nfactor = 0.5\n", "c").unwrap_err();
        assert_eq!(e.line, 1, "{e}");
    }

    #[test]
    fn no_signers_means_one_default_openssl_signer() {
        let setup = SignerSetup::parse("", "empty.conf").unwrap();
        assert_eq!(setup.signers.len(), 1);
        assert_eq!(setup.signers[0].kind.type_name(), "OpenSSL");
    }

    #[test]
    fn a_written_setup_reads_back_the_same() {
        let text = r#"
default_signer = "hsm"
one_off_signer = "soft"

[signer_retry]
initial_delay = 0.5
factor = 2.0
max_delay = 4.0

[[signers]]
type = "OpenSSL"
name = "soft"

[[signers]]
type = "PKCS#11"
name = "hsm"
lib_path = "/usr/lib/softhsm/libsofthsm2.so"
slot = 0x12a9f8f7
user_pin = "env:PIN"
login = false

[[signers]]
type = "KMIP"
name = "kmip"
host = "localhost"
port = 5697
server_ca_cert_path = "/ca.pem"
client_cert_path = "/c.pem"
client_cert_private_key_path = "/k.pem"
username = "u"
password = "file:/pw"
read_timeout = 2.5
pool_size = 0
"#;
        let setup = SignerSetup::parse(text, "t.toml").unwrap();
        let written = setup.to_toml().unwrap();
        let again = SignerSetup::parse(&written, "w.toml").unwrap();
        assert_eq!(format!("{:?}", again), format!("{setup:?}"), "{written}");
    }

    #[test]
    fn a_literal_secret_is_not_written_out() {
        let text = "[[signers]]\ntype = \"PKCS#11\"\nname = \"h\"\nlib_path = \"/l.so\"\nslot = \"t\"\nuser_pin = 1234\n";
        let setup = SignerSetup::parse(text, "t.toml").unwrap();
        let e = setup.to_toml().unwrap_err();
        assert!(e.contains("user_pin is a literal"), "{e}");
        assert!(!e.contains("1234"));
    }

    #[rstest]
    #[case::hex_integer("slot = 0x12a9f8f7", SlotSelector::Id(0x12a9f8f7))]
    #[case::decimal("slot = 123456", SlotSelector::Id(123456))]
    #[case::hex_string("slot = \"0x12a9f8f7\"", SlotSelector::Id(0x12a9f8f7))]
    #[case::label("slot = \"My token 1\"", SlotSelector::Label("My token 1".into()))]
    fn slot_forms(#[case] line: &str, #[case] expected: SlotSelector) {
        let text = format!(
            "[[signers]]\ntype = \"PKCS#11\"\nname = \"h\"\nlib_path = \"/x.so\"\n{line}\n"
        );
        let setup = SignerSetup::parse(&text, "c").unwrap();
        let SignerKind::Pkcs11(p) = &setup.signers[0].kind else {
            panic!()
        };
        assert_eq!(p.slot, expected);
    }

    #[rstest]
    #[case::unknown_key(
        "[[signers]]\ntype = \"OpenSSL\"\nname = \"a\"\nlib_path = \"/x.so\"\n",
        4,
        "unknown key 'lib_path'"
    )]
    #[case::unknown_top_level("colour = \"blue\"\n", 1, "unknown field `colour`")]
    #[case::duplicate_names(
        "default_signer = \"a\"\n[[signers]]\ntype = \"OpenSSL\"\nname = \"a\"\n\n[[signers]]\ntype = \"OpenSSL\"\nname = \"a\"\n",
        8,
        "duplicate signer name 'a'"
    )]
    #[case::missing_default(
        "[[signers]]\ntype = \"OpenSSL\"\nname = \"a\"\n\n[[signers]]\ntype = \"OpenSSL\"\nname = \"b\"\n",
        5,
        "default_signer is not set"
    )]
    #[case::default_names_nobody(
        "default_signer = \"zz\"\n[[signers]]\ntype = \"OpenSSL\"\nname = \"a\"\n",
        1,
        "'zz' is not the name"
    )]
    #[case::unknown_type(
        "[[signers]]\ntype = \"HSM\"\nname = \"a\"\n",
        2,
        "unknown signer type 'HSM'"
    )]
    #[case::bad_port(
        "[[signers]]\ntype = \"KMIP\"\nname = \"k\"\nhost = \"h\"\nport = 70000\n",
        5,
        "port must be"
    )]
    #[case::syntax("[[signers]\n", 1, "")]
    fn errors_name_the_line(#[case] text: &str, #[case] line: usize, #[case] needle: &str) {
        let err = SignerSetup::parse(text, "bad.conf").unwrap_err();
        assert_eq!(err.file, "bad.conf");
        assert_eq!(err.line, line, "{err}");
        assert!(err.message.contains(needle), "{err}");
    }
}
