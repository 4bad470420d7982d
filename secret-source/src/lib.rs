//! Secrets (PINs, passwords) named in configuration, resolved only when used.
//!
//! A secret is written as a literal, `env:NAME` or `file:PATH` (in TOML a literal may
//! also be an integer: `user_pin = 5678`). It is never printed: `Debug` and `Display`
//! show where it comes from, not its value, and a [`SecretError`] names the source,
//! never a value. Values are held as [`SecretString`] (secrecy): wiped from memory when
//! dropped, redacted when debugged; it is also the type cryptoki's `AuthPin` is.
//!
//! One type for the signers (`hsm-signers`) and the relay (`kmip-relay`); each maps
//! [`SecretError`] into its own error.

use std::fmt;
use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};

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
    /// Parses the configuration form: `env:NAME`, `file:PATH`, anything else is a
    /// literal. Refused: `env:` or `file:` with nothing after it.
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

    /// The secret's value, read now. One trailing newline (`\n` or `\r\n`) of a file
    /// is dropped. The error names the source, never a value.
    pub fn resolve(&self) -> Result<SecretString, SecretError> {
        match self {
            Secret::Literal(v) => Ok(v.clone()),
            Secret::Env(name) => std::env::var(name)
                .map(SecretString::from)
                .map_err(|_| SecretError::EnvNotSet { name: name.clone() }),
            Secret::File(path) => {
                let mut v = std::fs::read_to_string(path).map_err(|cause| SecretError::File {
                    path: path.clone(),
                    cause,
                })?;
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

/// The source only, as `Display`.
impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The source only: `env:NAME`, `file:PATH`, or `<literal, redacted>`.
impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Literal(_) => f.write_str("<literal, redacted>"),
            Secret::Env(name) => write!(f, "env:{name}"),
            Secret::File(path) => write!(f, "file:{}", path.display()),
        }
    }
}

/// From a string (as [`Secret::parse`]) or an integer (a literal: `user_pin = 5678`).
impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;

        impl serde::de::Visitor<'_> for Visitor {
            type Value = Secret;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a secret: a literal, \"env:NAME\", \"file:PATH\" or an integer")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Secret, E> {
                Secret::parse(v).map_err(E::custom)
            }

            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Secret, E> {
                Ok(Secret::Literal(v.to_string().into()))
            }

            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Secret, E> {
                Ok(Secret::Literal(v.to_string().into()))
            }
        }

        d.deserialize_any(Visitor)
    }
}

/// Why a secret could not be resolved. It names the source (a variable, a path), never
/// a value.
#[derive(Debug)]
pub enum SecretError {
    /// `env:NAME`: the variable is not set (or not valid Unicode).
    EnvNotSet { name: String },
    /// `file:PATH`: the file could not be read.
    File {
        path: PathBuf,
        cause: std::io::Error,
    },
}

impl fmt::Display for SecretError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretError::EnvNotSet { name } => write!(f, "environment variable {name} is not set"),
            SecretError::File { path, cause } => {
                write!(f, "cannot read {}: {cause}", path.display())
            }
        }
    }
}

impl std::error::Error for SecretError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SecretError::EnvNotSet { .. } => None,
            SecretError::File { cause, .. } => Some(cause),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use serde::de::value::{Error as DeError, I64Deserializer, StrDeserializer, U64Deserializer};
    use serde::de::IntoDeserializer;
    use serde::Deserialize;

    #[rstest]
    #[case::literal("5678", Secret::Literal("5678".into()))]
    #[case::env("env:HSM_PIN", Secret::Env("HSM_PIN".into()))]
    #[case::file("file:/run/pin", Secret::File("/run/pin".into()))]
    #[case::prefix_only_at_start("xenv:A", Secret::Literal("xenv:A".into()))]
    fn parses(#[case] text: &str, #[case] want: Secret) {
        assert_eq!(Secret::parse(text).unwrap(), want);
    }

    #[rstest]
    #[case("env:")]
    #[case("file:")]
    fn empty_sources_are_refused(#[case] text: &str) {
        assert!(Secret::parse(text).is_err());
    }

    #[rstest]
    #[case::literal("5678", "<literal, redacted>")]
    #[case::env("env:HSM_PIN", "env:HSM_PIN")]
    #[case::file("file:/run/pin", "file:/run/pin")]
    fn shows_the_source_only(#[case] text: &str, #[case] shown: &str) {
        let s = Secret::parse(text).unwrap();
        assert_eq!(format!("{s}"), shown);
        assert_eq!(format!("{s:?}"), shown);
    }

    #[test]
    fn literal_is_never_shown() {
        let s = Secret::parse("5678").unwrap();
        assert!(!format!("{s:?} {s}").contains("5678"));
        assert_eq!(s.resolve().unwrap().expose_secret(), "5678");
    }

    #[test]
    fn equality_compares_sources_and_literal_values() {
        assert_eq!(Secret::parse("1").unwrap(), Secret::parse("1").unwrap());
        assert_ne!(Secret::parse("1").unwrap(), Secret::parse("2").unwrap());
        assert_ne!(
            Secret::parse("env:A").unwrap(),
            Secret::parse("file:A").unwrap()
        );
    }

    #[rstest]
    #[case::lf("1234\n", "1234")]
    #[case::crlf("1234\r\n", "1234")]
    #[case::only_one("1234\n\n", "1234\n")]
    #[case::none("1234", "1234")]
    fn file_secret_drops_one_trailing_newline(#[case] content: &str, #[case] want: &str) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pin");
        std::fs::write(&p, content).unwrap();
        let s = Secret::parse(&format!("file:{}", p.display())).unwrap();
        assert_eq!(s.resolve().unwrap().expose_secret(), want);
    }

    #[test]
    fn missing_env_names_the_variable_only() {
        let s = Secret::parse("env:SECRET_SOURCE_TEST_SURELY_UNSET").unwrap();
        let e = s.resolve().unwrap_err();
        assert!(matches!(e, SecretError::EnvNotSet { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            "environment variable SECRET_SOURCE_TEST_SURELY_UNSET is not set"
        );
    }

    #[test]
    fn unreadable_file_names_the_path_and_keeps_the_cause() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("absent");
        let e = Secret::File(p.clone()).resolve().unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with(&format!("cannot read {}: ", p.display())),
            "{text}"
        );
        match &e {
            SecretError::File { path, cause } => {
                assert_eq!(path, &p);
                assert_eq!(cause.kind(), std::io::ErrorKind::NotFound);
            }
            other => panic!("{other:?}"),
        }
        assert!(std::error::Error::source(&e).is_some());
    }

    #[rstest]
    #[case::literal("5678", Secret::Literal("5678".into()))]
    #[case::env("env:HSM_PIN", Secret::Env("HSM_PIN".into()))]
    #[case::file("file:/run/pin", Secret::File("/run/pin".into()))]
    fn deserializes_from_a_string(#[case] text: &str, #[case] want: Secret) {
        let d: StrDeserializer<DeError> = text.into_deserializer();
        assert_eq!(Secret::deserialize(d).unwrap(), want);
    }

    #[test]
    fn deserializes_an_integer_as_a_literal() {
        let d: I64Deserializer<DeError> = 5678i64.into_deserializer();
        assert_eq!(
            Secret::deserialize(d).unwrap(),
            Secret::Literal("5678".into())
        );
        let d: U64Deserializer<DeError> = 5678u64.into_deserializer();
        assert_eq!(
            Secret::deserialize(d).unwrap(),
            Secret::Literal("5678".into())
        );
    }

    #[test]
    fn deserializing_an_empty_source_is_refused() {
        let d: StrDeserializer<DeError> = "env:".into_deserializer();
        let e = Secret::deserialize(d).unwrap_err();
        assert!(
            e.to_string().contains("'env:' needs a variable name"),
            "{e}"
        );
    }
}
