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
    /// The backend could not be reached or loaded, or refused the login.
    Unavailable,
    /// The backend answered with an error we do not classify further.
    Backend,
    /// The signer configuration is wrong.
    Config,
    /// Local storage failed (key files, state directory).
    Io,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 7] = [
        ErrorKind::NotFound,
        ErrorKind::Unsupported,
        ErrorKind::InvalidInput,
        ErrorKind::Unavailable,
        ErrorKind::Backend,
        ErrorKind::Config,
        ErrorKind::Io,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not-found",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::InvalidInput => "invalid-input",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Backend => "backend",
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

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
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
