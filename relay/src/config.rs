//! The relay's configuration file (TOML).
//!
//! ```toml
//! listen = "127.0.0.1:5696"        # port 0: any free port (see ready_file)
//! ready_file = "/run/relay.ready"  # optional: "ADDRESS SHA256-FINGERPRINT\n" once listening
//! log_level = "info"               # error, warn, info, debug, trace
//!
//! [tls]
//! cert = "server.pem"              # cert + key from files; both absent: self-signed
//! key = "server.key"
//! self_signed_names = ["localhost", "127.0.0.1"]
//! client_ca = "ca.pem"             # optional: clients must present a certificate from it
//! min_version = "1.3"              # "1.2" only as an explicit opt-in
//! max_version = "1.3"              # "1.2" makes a TLS 1.2-only relay (for testing clients)
//!
//! [pkcs11]
//! lib_path = "/usr/lib/softhsm/libsofthsm2.so"
//! slot = "My token"                # a label; an integer (or "0x..." string) is a slot id
//! user_pin = "env:HSM_PIN"         # literal, env:NAME or file:PATH; optional
//! pool_size = 4                    # PKCS#11 sessions serving concurrent clients
//!
//! [auth]
//! credentials = "none"             # or "token": Username = token label, Password = user PIN
//! allow_unauthenticated = false    # true: serve unauthenticated clients beyond loopback
//! login_delay_ms = 1000            # credentials = "token": wait after a failed C_Login ...
//! login_delay_max_ms = 60000       # ... doubling per failure up to this
//! max_logins_per_minute = 10       # C_Login calls for KMIP clients, all clients together
//!
//! [limits]
//! max_message_size = 65536         # bytes, TTLV header included
//! read_timeout_secs = 10           # a started message (header included) must arrive within this
//! write_timeout_secs = 30          # a response must be taken by the client within this
//! idle_timeout_secs = 300          # a connection with no request for this long is closed
//! max_connections = 256
//! max_connections_per_client = 16  # connections from one IP address at once
//! max_batch_items = 64             # batch items in one request
//! pool_wait_secs = 10              # how long a request waits for a free session
//! operation_timeout_secs = 30      # a request's PKCS#11 work (session wait included)
//!
//! [testing]                        # for conformance tests of KMIP clients only
//! withhold_operations = ["Revoke"] # left out of Query, answered Operation Not Supported
//! mimic = "seed-003"               # behave like a released server (needs credentials = "token")
//! ```
//!
//! `[testing] withhold_operations` makes the relay stand in for a server that lacks
//! operations: each is left out of the Query answer and every request for it is
//! answered Result Reason Operation Not Supported, without touching the token. Names
//! are KMIP 1.2's (`Create Key Pair`, `Modify Attribute`, ...); a name the relay does
//! not know is refused. The relay logs a warning at start when any is withheld.
//!
//! `[testing] mimic = "seed-003"` makes the relay behave like seed 003's relay as
//! released (cascade-hsm-bridge 0.1.0-alpha), so KMIP clients can be tested against a
//! minimal real-world server: its operations only (Modify Attribute runs but is not in
//! Query), its request parser (an attribute it does not know fails the whole request
//! with General Failure), its fixed Get formats, its SHA-256-only Sign and its
//! `<HEX>_priv` / `<HEX>_pub` identifiers; [`crate::mimic`] has the whole contract.
//! "seed-003" is the only value; any other is refused naming the allowed ones. It needs
//! `[auth] credentials = "token"` (the released relay logs in with the token label and
//! user PIN), so any other credential mode is refused with it. The relay logs a warning
//! at start when it mimics.
//!
//! Closed by default: a relay without client authentication (no `[tls] client_ca` and
//! `credentials = "none"`) lets every peer that can connect create, use and destroy
//! keys, so it is refused unless `listen` is a loopback address (`127.0.0.0/8`, `::1`,
//! `localhost`) or `[auth] allow_unauthenticated = true` says so explicitly (the relay
//! then logs a warning at start). Unauthenticated clients get Query's Server
//! Information without the module and the token's details (see
//! [`crate::operations`]).
//!
//! In `credentials = "token"` mode a wrong password reaches the module (C_Login) only
//! until the first good one, and even then only at a bounded rate: after each failed
//! C_Login the next one waits `login_delay_ms`, doubling per consecutive failure up to
//! `login_delay_max_ms`, both per client address and for all clients together, and at
//! most `max_logins_per_minute` C_Login calls are made in any minute. Attempts inside
//! a delay are refused (Permission Denied) without touching the token. See
//! [`crate::logins`].
//!
//! Refused, with the offending key or value named: unknown keys anywhere, a missing
//! `listen` or `[pkcs11]`, only one of `cert`/`key`, `min_version`/`max_version` other than
//! "1.2" or "1.3", a `max_version` below `min_version`, `credentials = "token"` together with a `user_pin` (the PIN comes from the
//! client then), an unknown `mimic`, `mimic` without `credentials = "token"`, zero sizes or timeouts, a `max_message_size` below 1 KiB or above
//! 16 MiB, an empty `env:`/`file:` PIN source. Secrets are never shown: `Debug` of
//! [`Secret`] prints its source only.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::mimic::Mimic;

/// Where a PIN comes from (literal, `env:NAME`, `file:PATH`, or an integer literal);
/// its value is read only when used, and never shown. The one type the signers use too
/// (crate `secret-source`).
pub use secret_source::Secret;

/// A slot by id or by token label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SlotSelector {
    Id(u64),
    Label(String),
}

impl<'de> Deserialize<'de> for SlotSelector {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        Ok(match Raw::deserialize(d)? {
            Raw::Number(n) => SlotSelector::Id(n),
            Raw::Text(t) => match t
                .strip_prefix("0x")
                .and_then(|h| u64::from_str_radix(h, 16).ok())
            {
                Some(id) => SlotSelector::Id(id),
                None => SlotSelector::Label(t),
            },
        })
    }
}

/// A TLS protocol version, in order (1.2 < 1.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize, Default)]
pub enum TlsVersion {
    #[serde(rename = "1.2")]
    Tls12,
    #[default]
    #[serde(rename = "1.3")]
    Tls13,
}

impl std::fmt::Display for TlsVersion {
    /// As the configuration spells it ("1.2", "1.3").
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TlsVersion::Tls12 => "1.2",
            TlsVersion::Tls13 => "1.3",
        })
    }
}

/// How KMIP credentials are used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum CredentialMode {
    /// No credentials needed; the relay logs in with `user_pin` (if any) at start.
    #[default]
    None,
    /// Every request but Discover Versions carries Username (the token label) and
    /// Password (the user PIN), checked against the token.
    Token,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    #[serde(default = "default_names")]
    pub self_signed_names: Vec<String>,
    pub client_ca: Option<PathBuf>,
    #[serde(default)]
    pub min_version: TlsVersion,
    /// The highest version offered; "1.2" only to stand in for servers that lack 1.3.
    #[serde(default)]
    pub max_version: TlsVersion,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert: None,
            key: None,
            self_signed_names: default_names(),
            client_ca: None,
            min_version: TlsVersion::default(),
            max_version: TlsVersion::default(),
        }
    }
}

fn default_names() -> Vec<String> {
    vec!["localhost".into(), "127.0.0.1".into()]
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11Config {
    pub lib_path: PathBuf,
    pub slot: SlotSelector,
    pub user_pin: Option<Secret>,
    #[serde(default = "default_pool")]
    pub pool_size: usize,
}

fn default_pool() -> usize {
    4
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    #[serde(default)]
    pub credentials: CredentialMode,
    /// Serve clients without any authentication on a non-loopback address.
    #[serde(default)]
    pub allow_unauthenticated: bool,
    /// Delay after the first failed C_Login of a KMIP client, in milliseconds.
    #[serde(default = "default_login_delay")]
    pub login_delay_ms: u64,
    /// The longest delay after consecutive failed C_Logins, in milliseconds.
    #[serde(default = "default_login_delay_max")]
    pub login_delay_max_ms: u64,
    /// C_Login calls made for KMIP clients in any minute, all clients together.
    #[serde(default = "default_logins_per_minute")]
    pub max_logins_per_minute: u32,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            credentials: CredentialMode::default(),
            allow_unauthenticated: false,
            login_delay_ms: default_login_delay(),
            login_delay_max_ms: default_login_delay_max(),
            max_logins_per_minute: default_logins_per_minute(),
        }
    }
}

fn default_login_delay() -> u64 {
    1000
}
fn default_login_delay_max() -> u64 {
    60_000
}
fn default_logins_per_minute() -> u32 {
    10
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default = "default_max_message")]
    pub max_message_size: usize,
    #[serde(default = "default_read_timeout")]
    pub read_timeout_secs: u64,
    #[serde(default = "default_write_timeout")]
    pub write_timeout_secs: u64,
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_secs: u64,
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    #[serde(default = "default_max_connections_per_client")]
    pub max_connections_per_client: usize,
    #[serde(default = "default_max_batch_items")]
    pub max_batch_items: usize,
    #[serde(default = "default_pool_wait")]
    pub pool_wait_secs: u64,
    #[serde(default = "default_operation_timeout")]
    pub operation_timeout_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_size: default_max_message(),
            read_timeout_secs: default_read_timeout(),
            write_timeout_secs: default_write_timeout(),
            idle_timeout_secs: default_idle_timeout(),
            max_connections: default_max_connections(),
            max_connections_per_client: default_max_connections_per_client(),
            max_batch_items: default_max_batch_items(),
            pool_wait_secs: default_pool_wait(),
            operation_timeout_secs: default_operation_timeout(),
        }
    }
}

fn default_max_message() -> usize {
    64 * 1024
}
fn default_read_timeout() -> u64 {
    10
}
fn default_operation_timeout() -> u64 {
    30
}
fn default_write_timeout() -> u64 {
    30
}
fn default_max_connections_per_client() -> usize {
    16
}
fn default_max_batch_items() -> usize {
    64
}
fn default_idle_timeout() -> u64 {
    300
}
fn default_max_connections() -> usize {
    256
}
fn default_pool_wait() -> u64 {
    10
}

/// The whole configuration file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub listen: String,
    pub ready_file: Option<PathBuf>,
    #[serde(default = "default_log_level")]
    pub log_level: String,
    #[serde(default)]
    pub tls: TlsConfig,
    pub pkcs11: Pkcs11Config,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub testing: Testing,
}

/// `[testing]`: switches for conformance tests of KMIP clients; never for production.
#[derive(Clone, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Testing {
    /// KMIP 1.2 operation names the relay pretends not to have.
    #[serde(default)]
    pub withhold_operations: Vec<String>,
    /// A released server to behave like (see [`crate::mimic`]); only "seed-003".
    pub mimic: Option<String>,
}

impl Testing {
    /// The withheld operations' codes; unknown names are refused.
    pub fn withheld(&self) -> Result<Vec<u32>, String> {
        self.withhold_operations
            .iter()
            .map(|n| {
                crate::kmip::operation::from_name(n).ok_or_else(|| {
                    let known: Vec<String> = crate::kmip::operation::KNOWN
                        .into_iter()
                        .map(crate::kmip::operation::name)
                        .collect();
                    format!(
                        "[testing] withhold_operations: unknown operation {n:?} (known: {})",
                        known.join(", ")
                    )
                })
            })
            .collect()
    }

    /// The server to mimic, if any; values other than [`crate::mimic::NAMES`] are
    /// refused.
    pub fn mimic(&self) -> Result<Option<Mimic>, String> {
        let Some(name) = &self.mimic else {
            return Ok(None);
        };
        Mimic::from_name(name).map(Some).ok_or_else(|| {
            let allowed: Vec<String> = crate::mimic::NAMES
                .iter()
                .map(|n| format!("{n:?}"))
                .collect();
            format!(
                "[testing] mimic: unknown value {name:?} (allowed: {})",
                allowed.join(", ")
            )
        })
    }
}

fn default_log_level() -> String {
    "info".into()
}

impl Config {
    /// Parses and validates a configuration text. Relative paths are taken relative to
    /// `base` (the file's directory).
    pub fn parse(text: &str, base: &Path) -> Result<Config, String> {
        let mut c: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        c.validate()?;
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        for p in [
            c.tls.cert.as_mut(),
            c.tls.key.as_mut(),
            c.tls.client_ca.as_mut(),
            c.ready_file.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            fix(p);
        }
        Ok(c)
    }

    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&text, base).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Whether clients must authenticate: by certificate (`client_ca`) or by
    /// credentials (`credentials = "token"`).
    pub fn authenticates_clients(&self) -> bool {
        self.tls.client_ca.is_some() || self.auth.credentials == CredentialMode::Token
    }

    /// Whether `listen` is a loopback address (an IP literal in 127.0.0.0/8 or ::1, or
    /// the name `localhost`). Anything else, names included, counts as reachable.
    pub fn loopback_only(&self) -> bool {
        if let Ok(addr) = self.listen.parse::<std::net::SocketAddr>() {
            return addr.ip().is_loopback();
        }
        self.listen
            .rsplit_once(':')
            .is_some_and(|(host, _)| host.eq_ignore_ascii_case("localhost"))
    }

    fn validate(&self) -> Result<(), String> {
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return Err("[tls] needs both 'cert' and 'key', or neither (self-signed)".into());
        }
        if self.tls.cert.is_none() && self.tls.self_signed_names.is_empty() {
            return Err("[tls] 'self_signed_names' must name at least one host".into());
        }
        if self.tls.max_version < self.tls.min_version {
            return Err("[tls] 'max_version' is below 'min_version'".into());
        }
        if self.auth.credentials == CredentialMode::Token && self.pkcs11.user_pin.is_some() {
            return Err(
                "[auth] credentials = \"token\" takes the PIN from each client: remove [pkcs11] user_pin"
                    .into(),
            );
        }
        if self.pkcs11.pool_size == 0 || self.pkcs11.pool_size > 1024 {
            return Err("[pkcs11] 'pool_size' must be 1..=1024".into());
        }
        let l = &self.limits;
        if !(1024..=16 * 1024 * 1024).contains(&l.max_message_size) {
            return Err("[limits] 'max_message_size' must be between 1024 and 16777216".into());
        }
        if l.read_timeout_secs == 0
            || l.write_timeout_secs == 0
            || l.idle_timeout_secs == 0
            || l.max_connections == 0
            || l.max_connections_per_client == 0
            || l.max_batch_items == 0
            || l.pool_wait_secs == 0
            || l.operation_timeout_secs == 0
        {
            return Err(
                "[limits] timeouts, 'max_connections', 'max_connections_per_client' and \
                 'max_batch_items' must be above zero"
                    .into(),
            );
        }
        let a = &self.auth;
        if a.login_delay_ms == 0 || a.login_delay_max_ms < a.login_delay_ms {
            return Err(
                "[auth] 'login_delay_ms' must be above zero and 'login_delay_max_ms' not below it"
                    .into(),
            );
        }
        if a.max_logins_per_minute == 0 {
            return Err("[auth] 'max_logins_per_minute' must be above zero".into());
        }
        if !self.authenticates_clients() && !a.allow_unauthenticated && !self.loopback_only() {
            return Err(format!(
                "no client authentication (neither [tls] client_ca nor [auth] credentials = \
                 \"token\") and 'listen' = {:?} is not a loopback address: every peer could \
                 use and destroy the token's keys. Configure client authentication, listen on \
                 127.0.0.1, or set [auth] allow_unauthenticated = true",
                self.listen
            ));
        }
        self.testing.withheld()?;
        if let Some(m) = self.testing.mimic()? {
            if self.auth.credentials != CredentialMode::Token {
                return Err(format!(
                    "[testing] mimic = {:?} needs [auth] credentials = \"token\" (the {} \
                     logs in with Username = token label, Password = user PIN)",
                    m.name(),
                    m.describe()
                ));
            }
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log_level).is_err() {
            return Err(format!("'log_level' {:?} is not a level", self.log_level));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    const MINIMAL: &str = r#"
listen = "127.0.0.1:0"
[pkcs11]
lib_path = "/usr/lib/softhsm/libsofthsm2.so"
slot = "relay"
user_pin = "1234"
"#;

    #[test]
    fn minimal_gets_defaults() {
        let c = Config::parse(MINIMAL, Path::new("/etc")).unwrap();
        assert_eq!(c.tls.min_version, TlsVersion::Tls13);
        assert_eq!(c.limits.max_message_size, 65536);
        assert_eq!(c.pkcs11.slot, SlotSelector::Label("relay".into()));
        assert_eq!(c.auth.credentials, CredentialMode::None);
        assert!(!format!("{c:?}").contains("1234"), "PIN in Debug output");
    }

    #[rstest]
    #[case::unknown_top("bogus = 1\n")]
    #[case::unknown_tls("[tls]\nciphers = \"x\"\n")]
    #[case::bad_version("[tls]\nmin_version = \"1.1\"\n")]
    #[case::max_below_min("[tls]\nmax_version = \"1.2\"\n")]
    #[case::cert_without_key("[tls]\ncert = \"a.pem\"\n")]
    #[case::tiny_limit("[limits]\nmax_message_size = 10\n")]
    #[case::zero_timeout("[limits]\nread_timeout_secs = 0\n")]
    #[case::token_and_pin("[auth]\ncredentials = \"token\"\n")]
    #[case::bad_mode("[auth]\ncredentials = \"ldap\"\n")]
    #[case::unknown_withheld("[testing]\nwithhold_operations = [\"Frobnicate\"]\n")]
    #[case::lowercase_withheld("[testing]\nwithhold_operations = [\"revoke\"]\n")]
    #[case::unknown_testing("[testing]\nchaos = true\n")]
    #[case::unknown_mimic("[testing]\nmimic = \"pykmip\"\n")]
    #[case::mimic_without_token_credentials("[testing]\nmimic = \"seed-003\"\n")]
    #[case::zero_write_timeout("[limits]\nwrite_timeout_secs = 0\n")]
    #[case::zero_per_client("[limits]\nmax_connections_per_client = 0\n")]
    #[case::zero_batch("[limits]\nmax_batch_items = 0\n")]
    #[case::zero_operation_timeout("[limits]\noperation_timeout_secs = 0\n")]
    #[case::zero_login_delay("[auth]\nlogin_delay_ms = 0\n")]
    #[case::max_delay_below_delay("[auth]\nlogin_delay_ms = 10\nlogin_delay_max_ms = 5\n")]
    #[case::zero_logins("[auth]\nmax_logins_per_minute = 0\n")]
    fn refuses(#[case] extra: &str) {
        let text = format!("{MINIMAL}{extra}");
        assert!(Config::parse(&text, Path::new("/")).is_err(), "{text}");
    }

    #[rstest]
    #[case("slot = 5", SlotSelector::Id(5))]
    #[case("slot = \"0x1f\"", SlotSelector::Id(31))]
    #[case("slot = \"tok\"", SlotSelector::Label("tok".into()))]
    fn slots(#[case] line: &str, #[case] want: SlotSelector) {
        let text = format!("listen = \"127.0.0.1:1\"\n[pkcs11]\nlib_path = \"/l\"\n{line}\n");
        assert_eq!(
            Config::parse(&text, Path::new("/")).unwrap().pkcs11.slot,
            want
        );
    }

    #[rstest]
    #[case::literal("user_pin = \"1234\"", Some(Secret::Literal("1234".into())))]
    #[case::integer("user_pin = 5678", Some(Secret::Literal("5678".into())))]
    #[case::env("user_pin = \"env:HSM_PIN\"", Some(Secret::Env("HSM_PIN".into())))]
    #[case::file("user_pin = \"file:/run/pin\"", Some(Secret::File("/run/pin".into())))]
    #[case::absent("", None)]
    fn user_pins(#[case] line: &str, #[case] want: Option<Secret>) {
        let text =
            format!("listen = \"127.0.0.1:1\"\n[pkcs11]\nlib_path = \"/l\"\nslot = 1\n{line}\n");
        let c = Config::parse(&text, Path::new("/")).unwrap();
        assert_eq!(c.pkcs11.user_pin, want);
        assert!(!format!("{c:?}").contains("5678"), "PIN in Debug output");
    }

    #[rstest]
    #[case::empty_env("user_pin = \"env:\"", "'env:' needs a variable name")]
    #[case::empty_file("user_pin = \"file:\"", "'file:' needs a path")]
    #[case::boolean("user_pin = true", "user_pin")]
    fn refuses_user_pin(#[case] line: &str, #[case] named: &str) {
        let text =
            format!("listen = \"127.0.0.1:1\"\n[pkcs11]\nlib_path = \"/l\"\nslot = 1\n{line}\n");
        let e = Config::parse(&text, Path::new("/")).unwrap_err();
        assert!(e.contains(named), "{e}");
    }

    #[test]
    fn withheld_operations_by_kmip_name() {
        let c = Config::parse(MINIMAL, Path::new("/")).unwrap();
        assert!(c.testing.withheld().unwrap().is_empty());
        let text = format!(
            "{MINIMAL}[testing]\nwithhold_operations = [\"Modify Attribute\", \"Revoke\"]\n"
        );
        let c = Config::parse(&text, Path::new("/")).unwrap();
        assert_eq!(
            c.testing.withheld().unwrap(),
            vec![
                crate::kmip::operation::MODIFY_ATTRIBUTE,
                crate::kmip::operation::REVOKE
            ]
        );
    }

    #[test]
    fn mimic_seed003_with_token_credentials() {
        let base = "listen = \"127.0.0.1:0\"\n[pkcs11]\nlib_path = \"/l\"\nslot = \"t\"\n\
                    [auth]\ncredentials = \"token\"\n";
        let c = Config::parse(base, Path::new("/")).unwrap();
        assert_eq!(c.testing.mimic(), Ok(None));
        let text = format!("{base}[testing]\nmimic = \"seed-003\"\n");
        let c = Config::parse(&text, Path::new("/")).unwrap();
        assert_eq!(c.testing.mimic(), Ok(Some(Mimic::Seed003)));
        let text = format!("{base}[testing]\nmimic = \"seed-004\"\n");
        let e = Config::parse(&text, Path::new("/")).unwrap_err();
        assert!(e.contains("allowed: \"seed-003\""), "{e}");
        let text = format!("{MINIMAL}[testing]\nmimic = \"seed-003\"\n");
        let e = Config::parse(&text, Path::new("/")).unwrap_err();
        assert!(e.contains("credentials = \"token\""), "{e}");
    }

    #[rstest]
    #[case::any_v4("0.0.0.0:0")]
    #[case::public_v4("192.0.2.1:5696")]
    #[case::any_v6("[::]:5696")]
    #[case::name("kmip.example:5696")]
    fn refuses_unauthenticated_beyond_loopback(#[case] listen: &str) {
        let body = "[pkcs11]\nlib_path = \"/l\"\nslot = 1\n";
        let text = format!("listen = \"{listen}\"\n{body}");
        let e = Config::parse(&text, Path::new("/")).unwrap_err();
        assert!(e.contains("allow_unauthenticated"), "{e}");
        // Any one of the three ways out is enough.
        for extra in [
            "[auth]\nallow_unauthenticated = true\n",
            "[auth]\ncredentials = \"token\"\n",
            "[tls]\nclient_ca = \"ca.pem\"\n",
        ] {
            let text = format!("{text}{extra}");
            assert!(Config::parse(&text, Path::new("/")).is_ok(), "{text}");
        }
    }

    #[rstest]
    #[case("127.0.0.1:5696")]
    #[case("127.1.2.3:0")]
    #[case("[::1]:5696")]
    #[case("localhost:5696")]
    fn loopback_needs_no_client_authentication(#[case] listen: &str) {
        let text = format!("listen = \"{listen}\"\n[pkcs11]\nlib_path = \"/l\"\nslot = 1\n");
        let c = Config::parse(&text, Path::new("/")).unwrap();
        assert!(c.loopback_only() && !c.authenticates_clients());
    }

    #[test]
    fn relative_paths_follow_the_file() {
        let text = format!("{MINIMAL}[tls]\ncert = \"c.pem\"\nkey = \"/abs/k.pem\"\n");
        let c = Config::parse(&text, Path::new("/etc/relay")).unwrap();
        assert_eq!(c.tls.cert.unwrap(), Path::new("/etc/relay/c.pem"));
        assert_eq!(c.tls.key.unwrap(), Path::new("/abs/k.pem"));
    }
}
