//! Backend files (`fixtures/backends/*.yaml`): a name, what the backend is, the
//! provider that brings it up for each cell (with its settings), and its capability
//! profile.
//!
//! A case that needs a capability the profile lacks is skipped with that reason. The
//! providers themselves live in [`crate::backends`]; this file only reads the choice.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::backends::{ProviderConfig, ADMINISTERED};
use crate::model::suite::{yaml_error, Capability, SuiteError};

/// The JSON Schema of backend files (`fixtures/backend.schema.json`).
///
/// HOOK: for now the committed, hand-written file; the backend and provider types are
/// being rewritten, and this will generate the schema from them as
/// `crate::model::suite::schema` does for suites.
pub fn schema() -> serde_json::Value {
    serde_json::from_str(include_str!("../../../fixtures/backend.schema.json"))
        .expect("fixtures/backend.schema.json is JSON")
}

/// A backend file, loaded.
#[derive(Clone, Debug)]
pub struct Backend {
    pub name: String,
    pub about: String,
    pub path: PathBuf,
    pub provider: ProviderConfig,
    pub capabilities: Vec<Capability>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    backend: String,
    about: String,
    provider: ProviderConfig,
    capabilities: Vec<Capability>,
}

impl Backend {
    /// Reads and checks a backend file. Refused, with file, line and column where the
    /// YAML parser knows them: unknown keys or providers, bad provider settings, and a
    /// profile claiming an administered capability its provider cannot give.
    pub fn load(path: &Path) -> Result<Backend, SuiteError> {
        let text = std::fs::read_to_string(path).map_err(|e| SuiteError {
            file: path.display().to_string(),
            line: 0,
            column: 0,
            message: format!("cannot read: {e}"),
        })?;
        let raw: RawBackend = serde_saphyr::from_str(&text).map_err(|e| yaml_error(path, &e))?;
        let refuse = |message: String| SuiteError {
            file: path.display().to_string(),
            line: 0,
            column: 0,
            message,
        };
        raw.provider.check().map_err(refuse)?;
        if let Some(c) = raw
            .capabilities
            .iter()
            .find(|c| ADMINISTERED.contains(c) && !raw.provider.administers().contains(c))
        {
            return Err(refuse(format!(
                "capability '{c}' is not something the {} provider can give",
                raw.provider.name()
            )));
        }
        Ok(Backend {
            name: raw.backend,
            about: raw.about,
            path: path.to_path_buf(),
            provider: raw.provider,
            capabilities: raw.capabilities,
        })
    }

    /// The provider's name, as the backend file says it.
    pub fn provider_name(&self) -> &'static str {
        self.provider.name()
    }

    /// Why this backend cannot start on this machine, if it cannot.
    pub fn unavailable_reason(&self) -> Option<String> {
        self.provider.unavailable_reason()
    }

    /// The shim settings the provider puts in front of every cell's module, if any.
    pub fn shim(&self) -> Option<&crate::backends::shim::ShimSpec> {
        self.provider.shim()
    }

    /// The first capability of `needed` this backend's profile lacks.
    pub fn missing(&self, needed: &[Capability]) -> Option<Capability> {
        needed
            .iter()
            .copied()
            .find(|c| !self.capabilities.contains(c))
    }

    /// The capability profile lists `c`.
    pub fn has(&self, c: Capability) -> bool {
        self.capabilities.contains(&c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_file_loads_with_its_profile() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b.yaml");
        std::fs::write(
            &p,
            "backend: soft\nabout: x\nprovider: software\ncapabilities: [rsa2048, random]\n",
        )
        .unwrap();
        let b = Backend::load(&p).unwrap();
        assert_eq!(b.name, "soft");
        assert_eq!(b.missing(&[Capability::Rsa2048]), None);
        assert_eq!(
            b.missing(&[Capability::Rsa2048, Capability::Ed25519]),
            Some(Capability::Ed25519)
        );
    }

    #[test]
    fn unknown_provider_names_the_allowed_ones() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b.yaml");
        std::fs::write(
            &p,
            "backend: x\nabout: x\nprovider: cloud\ncapabilities: []\n",
        )
        .unwrap();
        let e = Backend::load(&p).unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        assert!(e.message.contains("software"), "{e}");
    }

    fn load_text(text: &str) -> Result<Backend, SuiteError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b.yaml");
        std::fs::write(&p, text).unwrap();
        Backend::load(&p)
    }

    #[rstest::rstest]
    #[case::name_alone("provider: softhsm", "softhsm")]
    #[case::name_with_settings("provider: { softhsm: { shim: {} } }", "softhsm")]
    #[case::relay_mimic("provider: { relay: { mimic: seed-003 } }", "relay")]
    #[case::empty_settings("provider: { pykmip: {} }", "pykmip")]
    fn provider_is_a_name_or_a_name_with_settings(#[case] provider: &str, #[case] name: &str) {
        let b = load_text(&format!(
            "backend: x\nabout: x\n{provider}\ncapabilities: []\n"
        ))
        .unwrap();
        assert_eq!(b.provider_name(), name);
    }

    #[rstest::rstest]
    #[case::unknown_setting("provider: { softhsm: { modul: /x } }", "modul")]
    #[case::two_providers("provider: { softhsm: {}, pykmip: {} }", "one provider")]
    #[case::unknown_mimic("provider: { relay: { mimic: hal-9000 } }", "seed-003")]
    #[case::claimed_capability(
        "provider: pykmip\ncapabilities: [replace-keys]",
        "'replace-keys' is not something the pykmip provider can give"
    )]
    fn bad_provider_settings_are_refused(#[case] provider: &str, #[case] said: &str) {
        let text = if provider.contains("capabilities") {
            format!("backend: x\nabout: x\n{provider}\n")
        } else {
            format!("backend: x\nabout: x\n{provider}\ncapabilities: []\n")
        };
        let e = load_text(&text).unwrap_err();
        assert!(e.message.contains(said), "{e}");
    }
}
