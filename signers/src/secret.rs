//! Secrets (PINs, passwords) named in configuration, resolved only when used.
//!
//! A secret is written as a literal, `env:NAME` or `file:PATH`. It is never printed:
//! `Debug` and `Display` show where it comes from, not its value. Values are held as
//! [`SecretString`] (secrecy): wiped from memory when dropped, redacted when debugged.

use std::fmt;
use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};

use crate::SignerError;

/// Where a secret comes from.
#[derive(Clone)]
pub enum Secret {
    /// Written in the configuration itself (also `user_pin = 5678`).
    Literal(SecretString),
    /// Read from an environment variable when first needed.
    Env(String),
    /// Read from a file when first needed; one trailing newline is dropped.
    File(PathBuf),
}

impl Secret {
    /// Parses the configuration form. Refused: `env:` or `file:` with nothing after it.
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some(name) = text.strip_prefix("env:") {
            if name.is_empty() {
                return Err("'env:' needs a variable name".into());
            }
            Ok(Secret::Env(name.to_string()))
        } else if let Some(path) = text.strip_prefix("file:") {
            if path.is_empty() {
                return Err("'file:' needs a path".into());
            }
            Ok(Secret::File(PathBuf::from(path)))
        } else {
            Ok(Secret::Literal(text.into()))
        }
    }

    /// The secret's value. The error names the source, never a value.
    pub fn resolve(&self) -> Result<SecretString, SignerError> {
        match self {
            Secret::Literal(v) => Ok(v.clone()),
            Secret::Env(name) => std::env::var(name).map(SecretString::from).map_err(|_| {
                SignerError::config(format!("environment variable {name} is not set"))
            }),
            Secret::File(path) => {
                let mut v = std::fs::read_to_string(path)
                    .map_err(|e| SignerError::io(format!("reading {}", path.display()), e))?;
                if v.ends_with('\n') {
                    v.pop();
                    if v.ends_with('\r') {
                        v.pop();
                    }
                }
                Ok(SecretString::from(v))
            }
        }
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Secret::Literal(a), Secret::Literal(b)) => a.expose_secret() == b.expose_secret(),
            (Secret::Env(a), Secret::Env(b)) => a == b,
            (Secret::File(a), Secret::File(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Literal(_) => f.write_str("<literal, redacted>"),
            Secret::Env(name) => write!(f, "env:{name}"),
            Secret::File(path) => write!(f, "file:{}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_is_never_shown() {
        let s = Secret::parse("5678").unwrap();
        assert!(!format!("{s:?} {s}").contains("5678"));
        assert_eq!(s.resolve().unwrap().expose_secret(), "5678");
    }

    #[test]
    fn file_secret_drops_one_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pin");
        std::fs::write(&p, "1234\n").unwrap();
        let s = Secret::parse(&format!("file:{}", p.display())).unwrap();
        assert_eq!(s.resolve().unwrap().expose_secret(), "1234");
    }

    #[test]
    fn missing_env_names_the_variable_only() {
        let s = Secret::parse("env:HSM_HARNESS_TEST_SURELY_UNSET").unwrap();
        let e = s.resolve().unwrap_err();
        assert!(e.message.contains("HSM_HARNESS_TEST_SURELY_UNSET"));
    }

    #[test]
    fn empty_sources_are_refused() {
        assert!(Secret::parse("env:").is_err());
        assert!(Secret::parse("file:").is_err());
    }
}
