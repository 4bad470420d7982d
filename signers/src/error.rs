//! The errors signers report, with a stable kind name suites can expect.

use std::fmt;

use crate::KeyIdentifier;

/// What went wrong, coarse enough for a suite to name (`expect: { error: not-found }`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// The signer (or backend) has no key with that identifier.
    NotFound,
    /// The algorithm or operation is not offered by this signer or backend.
    Unsupported,
    /// The request itself is wrong (e.g. an ECDSA algorithm with an RSA key).
    InvalidInput,
    /// The backend cannot be reached right now (connection refused, token not
    /// present, timeout); the router retries with backoff.
    Unavailable,
    /// The TLS handshake with the server was refused for want of a common protocol
    /// version (e.g. a TLS 1.3-only signer and a TLS 1.2 server). Fatal, like
    /// `Unusable`; the message names the versions each side offered.
    TlsRefused,
    /// The signer cannot be used and will not be retried: the module does not load,
    /// the PIN is wrong, required functions are missing, it cannot sign with its own
    /// identity key.
    Unusable,
    /// The key belongs to a signer id that no configured signer is bound to (its
    /// backend is not configured, or was wiped or replaced).
    SignerNotBound,
    /// The backend answered with an error we do not classify further.
    Backend,
    /// The backend's answer could not be read: malformed, missing a field the protocol
    /// requires, or in a format this signer does not handle. The backend was reached
    /// and answered, so this is not `unavailable`; retrying will not help.
    Protocol,
    /// The signer configuration is wrong.
    Config,
    /// Local storage failed (key files, state directory).
    Io,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 11] = [
        ErrorKind::NotFound,
        ErrorKind::Unsupported,
        ErrorKind::InvalidInput,
        ErrorKind::Unavailable,
        ErrorKind::TlsRefused,
        ErrorKind::Unusable,
        ErrorKind::SignerNotBound,
        ErrorKind::Backend,
        ErrorKind::Protocol,
        ErrorKind::Config,
        ErrorKind::Io,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not-found",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::InvalidInput => "invalid-input",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::TlsRefused => "tls-refused",
            ErrorKind::Unusable => "unusable",
            ErrorKind::SignerNotBound => "signer-not-bound",
            ErrorKind::Backend => "backend",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Config => "config",
            ErrorKind::Io => "io",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An error from a signer: a kind plus a message for people.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignerError {
    pub kind: ErrorKind,
    pub message: String,
}

impl SignerError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    pub fn key_not_found(signer: &str, key: &KeyIdentifier) -> Self {
        Self::new(
            ErrorKind::NotFound,
            format!("signer '{signer}' has no key {key}"),
        )
    }

    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unsupported, message)
    }

    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidInput, message)
    }

    pub fn backend(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Backend, message)
    }

    pub fn protocol(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Protocol, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }

    pub fn unusable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unusable, message)
    }

    /// Whether retrying later may help: unreachable backends yes; wrong PINs, missing
    /// modules and bad configuration no (retrying a wrong PIN can lock a token).
    pub fn is_transient(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::Unavailable | ErrorKind::Backend | ErrorKind::Io
        )
    }

    pub fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, message)
    }

    pub fn io(context: impl fmt::Display, err: std::io::Error) -> Self {
        Self::new(ErrorKind::Io, format!("{context}: {err}"))
    }
}

impl fmt::Display for SignerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.kind)
    }
}

impl std::error::Error for SignerError {}

/// A PIN or password that cannot be resolved: an unset variable is a configuration
/// error, an unreadable file an I/O one. Either message names the source, never a value.
impl From<secret_source::SecretError> for SignerError {
    fn from(e: secret_source::SecretError) -> Self {
        match e {
            secret_source::SecretError::EnvNotSet { .. } => SignerError::config(e.to_string()),
            secret_source::SecretError::File { path, cause } => {
                SignerError::io(format!("reading {}", path.display()), cause)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Secret;

    #[test]
    fn an_unset_pin_variable_is_a_config_error_naming_it() {
        let e: SignerError = Secret::Env("HSM_SIGNERS_TEST_SURELY_UNSET".into())
            .resolve()
            .unwrap_err()
            .into();
        assert_eq!(e.kind, ErrorKind::Config);
        assert_eq!(
            e.message,
            "environment variable HSM_SIGNERS_TEST_SURELY_UNSET is not set"
        );
    }

    #[test]
    fn an_unreadable_pin_file_is_an_io_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent");
        let e: SignerError = Secret::File(path.clone()).resolve().unwrap_err().into();
        assert_eq!(e.kind, ErrorKind::Io);
        assert!(
            e.message
                .starts_with(&format!("reading {}: ", path.display())),
            "{e}"
        );
    }
}
