//! The YAML suite model and its loader.
//!
//! A suite names a behaviour, says what it needs, and lists cases made of steps in the
//! signer's own language. The step vocabulary is documented in `suites/README.md` and
//! described by `suites/schema.json`. Loading refuses, with file, line, column and the
//! allowed values: YAML syntax errors, unknown fields, unknown steps, algorithms and
//! capabilities, duplicate case names, and references to names (`key: k`) that no
//! earlier step defined.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use hsm_signers::{Algorithm, ErrorKind};
use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

/// A suite file, loaded and checked.
#[derive(Clone, Debug)]
pub struct Suite {
    pub path: PathBuf,
    pub name: String,
    pub about: String,
    pub tags: Vec<String>,
    pub requires: Vec<Capability>,
    pub cases: Vec<Case>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSuite {
    suite: String,
    about: String,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    requires: Vec<Capability>,
    cases: Vec<RawCase>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    name: Spanned<String>,
    #[serde(default)]
    about: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    requires: Vec<Capability>,
    steps: Vec<Spanned<Step>>,
}

/// One case: a named sequence of steps, run in one cell per backend.
#[derive(Clone, Debug)]
pub struct Case {
    pub name: String,
    pub about: Option<String>,
    pub tags: Vec<String>,
    /// Capabilities this case needs: the suite's, the case's own, and the algorithm of
    /// every key it creates.
    pub requires: Vec<Capability>,
    pub steps: Vec<Spanned<Step>>,
}

/// Something a backend can or cannot do, as listed in its capability profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Capability {
    #[serde(rename = "rsa2048")]
    Rsa2048,
    #[serde(rename = "rsa2048-pss")]
    Rsa2048Pss,
    #[serde(rename = "ecdsa-p256")]
    EcdsaP256,
    #[serde(rename = "ecdsa-p384")]
    EcdsaP384,
    Ed25519,
    /// The backend has its own random generator.
    Random,
    /// Keys survive a restart of the signer.
    PersistentKeys,
}

impl Capability {
    pub fn of(alg: Algorithm) -> Capability {
        match alg {
            Algorithm::Rsa2048Pkcs1Sha256 => Capability::Rsa2048,
            Algorithm::Rsa2048PssSha256 => Capability::Rsa2048Pss,
            Algorithm::EcdsaP256Sha256 => Capability::EcdsaP256,
            Algorithm::EcdsaP384Sha384 => Capability::EcdsaP384,
            Algorithm::Ed25519 => Capability::Ed25519,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Capability::Rsa2048 => "rsa2048",
            Capability::Rsa2048Pss => "rsa2048-pss",
            Capability::EcdsaP256 => "ecdsa-p256",
            Capability::EcdsaP384 => "ecdsa-p384",
            Capability::Ed25519 => "ed25519",
            Capability::Random => "random",
            Capability::PersistentKeys => "persistent-keys",
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a step expects when it is not plain success.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// The step must fail with an error of this kind.
    pub error: Option<ErrorKind>,
}

/// The verdict a `verify` step expects from the independent verifier.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    #[default]
    Valid,
    /// Well-formed, but does not verify (tampered data, wrong key).
    Mismatch,
    /// Not in the expected encoding (e.g. raw r||s where DER is required).
    BadEncoding,
}

/// One step. Steps speak the signer's language; names (`as: k`) bind results for
/// later steps of the same case.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    /// Create a key pair with the default signer; checks the SPKI parses and the key
    /// identifier is the SHA-1 of its key bits.
    CreateKey {
        alg: Algorithm,
        #[serde(rename = "as")]
        name: String,
        #[serde(default)]
        expect: Expect,
    },
    /// Sign `data` (default: a fixed payload) with a key; `alg` defaults to the key's.
    Sign {
        key: Spanned<String>,
        #[serde(default)]
        alg: Option<Algorithm>,
        #[serde(default)]
        data: Option<String>,
        #[serde(default, rename = "as")]
        name: Option<String>,
        #[serde(default)]
        expect: Expect,
    },
    /// Verify a signature independently (RustCrypto, not the backend). `key` and `data`
    /// default to the ones the signature was made with; give others for negative checks.
    Verify {
        signature: Spanned<String>,
        #[serde(default)]
        key: Option<Spanned<String>>,
        #[serde(default)]
        data: Option<String>,
        #[serde(default)]
        expect: Verdict,
    },
    /// Read the public key back through the signer and compare it with the one
    /// `create_key` returned.
    PublicKey {
        key: Spanned<String>,
        #[serde(default)]
        expect: Expect,
    },
    /// Destroy a key pair.
    DestroyKey {
        key: Spanned<String>,
        #[serde(default)]
        expect: Expect,
    },
    /// Ask the router for random bytes; checks the length.
    Random {
        bytes: usize,
        #[serde(default)]
        expect: Expect,
    },
    /// Wait, e.g. to let a timeout pass.
    Sleep { seconds: f64 },
    /// Make the cell process misbehave, to check the runner's crash isolation itself:
    /// `abort` raises SIGABRT, `hang` never returns.
    SelfTest(SelfTest),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SelfTest {
    Abort,
    Hang,
}

impl Step {
    /// The step's name as written in YAML.
    pub fn keyword(&self) -> &'static str {
        match self {
            Step::CreateKey { .. } => "create_key",
            Step::Sign { .. } => "sign",
            Step::Verify { .. } => "verify",
            Step::PublicKey { .. } => "public_key",
            Step::DestroyKey { .. } => "destroy_key",
            Step::Random { .. } => "random",
            Step::Sleep { .. } => "sleep",
            Step::SelfTest(_) => "self_test",
        }
    }
}

/// A suite that could not be loaded, with where and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SuiteError {
    pub file: String,
    pub line: u64,
    pub column: u64,
    pub message: String,
}

impl fmt::Display for SuiteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file, self.line, self.column, self.message
            )
        }
    }
}

impl std::error::Error for SuiteError {}

impl SuiteError {
    fn at(file: &Path, loc: &Location, message: String) -> Self {
        SuiteError {
            file: file.display().to_string(),
            line: loc.line(),
            column: loc.column(),
            message,
        }
    }
}

/// Turns a YAML deserialisation error into file:line:col plus the bare message.
pub(crate) fn yaml_error(file: &Path, e: &serde_saphyr::Error) -> SuiteError {
    let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
    let text = e.without_snippet().to_string();
    // The library prefixes "error: line L column C: "; we print our own place.
    let message = text
        .strip_prefix("error: ")
        .unwrap_or(&text)
        .split_once(": ")
        .filter(|(head, _)| head.starts_with("line "))
        .map_or(text.clone(), |(_, rest)| rest.to_string());
    // Syntax errors repeat the place at the end ("... at line 5, column 10").
    let message = match message.rfind(" at line ") {
        Some(i) if message[i..].contains(", column ") => message[..i].to_string(),
        _ => message,
    };
    SuiteError {
        file: file.display().to_string(),
        line,
        column,
        message,
    }
}

impl Suite {
    pub fn load(path: &Path) -> Result<Suite, SuiteError> {
        let text = std::fs::read_to_string(path).map_err(|e| SuiteError {
            file: path.display().to_string(),
            line: 0,
            column: 0,
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Suite, SuiteError> {
        let raw: RawSuite = serde_saphyr::from_str(text).map_err(|e| yaml_error(path, &e))?;
        if raw.cases.is_empty() {
            return Err(SuiteError {
                file: path.display().to_string(),
                line: 1,
                column: 1,
                message: format!("suite '{}' has no cases", raw.suite),
            });
        }
        let mut seen = HashSet::new();
        let mut cases = Vec::new();
        for case in raw.cases {
            if !seen.insert(case.name.value.clone()) {
                return Err(SuiteError::at(
                    path,
                    &case.name.referenced,
                    format!("duplicate case name '{}'", case.name.value),
                ));
            }
            check_names(path, &case)?;
            let mut requires = raw.requires.clone();
            for c in &case.requires {
                if !requires.contains(c) {
                    requires.push(*c);
                }
            }
            for step in &case.steps {
                if let Step::CreateKey { alg, .. } = &step.value {
                    let c = Capability::of(*alg);
                    if !requires.contains(&c) {
                        requires.push(c);
                    }
                }
            }
            cases.push(Case {
                name: case.name.value,
                about: case.about,
                tags: case.tags,
                requires,
                steps: case.steps,
            });
        }
        Ok(Suite {
            path: path.to_path_buf(),
            name: raw.suite,
            about: raw.about,
            tags: raw.tags,
            requires: raw.requires,
            cases,
        })
    }
}

/// Every `key:` and `signature:` must name something an earlier step bound with `as:`.
fn check_names(path: &Path, case: &RawCase) -> Result<(), SuiteError> {
    let mut keys: HashSet<&str> = HashSet::new();
    let mut signatures: HashSet<&str> = HashSet::new();
    let unknown = |what: &str, name: &Spanned<String>, known: &HashSet<&str>| {
        let mut known: Vec<&str> = known.iter().copied().collect();
        known.sort();
        SuiteError::at(
            path,
            &name.referenced,
            format!(
                "no earlier step made a {what} named '{}' (known: {})",
                name.value,
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ),
        )
    };
    for step in &case.steps {
        match &step.value {
            Step::CreateKey { name, .. } => {
                keys.insert(name);
            }
            Step::Sign { key, name, .. } => {
                if !keys.contains(key.value.as_str()) {
                    return Err(unknown("key", key, &keys));
                }
                if let Some(n) = name {
                    signatures.insert(n);
                }
            }
            Step::Verify { signature, key, .. } => {
                if !signatures.contains(signature.value.as_str()) {
                    return Err(unknown("signature", signature, &signatures));
                }
                if let Some(k) = key {
                    if !keys.contains(k.value.as_str()) {
                        return Err(unknown("key", k, &keys));
                    }
                }
            }
            Step::PublicKey { key, .. } | Step::DestroyKey { key, .. } => {
                if !keys.contains(key.value.as_str()) {
                    return Err(unknown("key", key, &keys));
                }
            }
            Step::Random { .. } | Step::Sleep { .. } | Step::SelfTest(_) => {}
        }
    }
    Ok(())
}

/// Every `*.yaml` / `*.yml` file directly in `dir`, sorted by name.
pub fn files_in(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("yaml") | Some("yml")
                )
        })
        .collect();
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn parse(text: &str) -> Result<Suite, SuiteError> {
        Suite::parse(text, Path::new("suites/t.yaml"))
    }

    const GOOD: &str = "\
suite: t
about: a test suite
tags: [baseline]
cases:
  - name: sign and verify
    steps:
      - create_key: { alg: ecdsa-p256, as: k }
      - sign: { key: k, as: s }
      - verify: { signature: s }
      - verify: { signature: s, data: tampered, expect: mismatch }
      - destroy_key: { key: k }
      - sign: { key: k, expect: { error: not-found } }
";

    #[test]
    fn a_good_suite_loads_and_collects_required_algorithms() {
        let s = parse(GOOD).unwrap();
        assert_eq!(s.name, "t");
        assert_eq!(s.cases[0].steps.len(), 6);
        assert_eq!(s.cases[0].requires, vec![Capability::EcdsaP256]);
    }

    #[rstest]
    #[case::unknown_step(
        "      - creat_key: { alg: rsa2048, as: k }\n",
        7,
        9,
        "expected one of"
    )]
    #[case::unknown_alg("      - create_key: { alg: rsa1024, as: k }\n", 7, 28, "rsa2048")]
    #[case::unknown_error_kind(
        "      - create_key: { alg: rsa2048, as: k }\n      - sign: { key: k, expect: { error: lost } }\n",
        8,
        40,
        "not-found"
    )]
    #[case::undefined_key(
        "      - sign: { key: nope }\n",
        7,
        23,
        "no earlier step made a key named 'nope'"
    )]
    #[case::unknown_field(
        "      - random: { bytes: 4, colour: red }\n",
        7,
        32,
        "unknown field `colour`"
    )]
    fn errors_point_at_the_place(
        #[case] step: &str,
        #[case] line: u64,
        #[case] column: u64,
        #[case] needle: &str,
    ) {
        let text = format!("suite: t\nabout: x\ncases:\n  - name: c\n    steps:\n      - random: {{ bytes: 1 }}\n{step}");
        let e = parse(&text).unwrap_err();
        assert_eq!((e.line, e.column), (line, column), "{e}");
        assert!(e.message.contains(needle), "{e}");
        assert!(
            e.to_string()
                .starts_with(&format!("suites/t.yaml:{line}:{column}: ")),
            "{e}"
        );
    }

    #[test]
    fn duplicate_case_names_are_refused() {
        let text =
            "suite: t\nabout: x\ncases:\n  - name: c\n    steps: []\n  - name: c\n    steps: []\n";
        let e = parse(text).unwrap_err();
        assert_eq!(e.line, 6);
        assert!(e.message.contains("duplicate case name"));
    }

    #[test]
    fn yaml_syntax_error_has_a_place() {
        let e = parse("suite: t\ncases: [\n").unwrap_err();
        assert!(e.line >= 2, "{e}");
    }
}
