//! SoftHSMv2 token directories and tokens of a test's own.
//!
//! Every test gets a `softhsm2.conf` pointing at a token directory of its own, so tests
//! never see each other's tokens; the conf is handed to SoftHSMv2 through
//! `SOFTHSM2_CONF` (in the test's environment before the module loads, or in a child
//! process's).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

/// Where Debian's softhsm2 package puts the PKCS#11 module.
pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

const INSTALL_HINT: &str = "apt-get install softhsm2 (ci/install-deps does this)";

/// What the directories [`Hsm`] makes are called, so that stale ones can be found.
const DIR_PREFIX: &str = "softhsm-";

/// Creates `dir/tokens` (if missing) and `dir/softhsm2.conf` for it, with file object
/// storage and only errors logged; returns the conf's path.
///
/// Panics (it is test set-up) when the directory or the file cannot be written.
pub fn conf_in(dir: &Path) -> PathBuf {
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens)
        .unwrap_or_else(|e| panic!("creating {}: {e}", tokens.display()));
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .unwrap_or_else(|e| panic!("writing {}: {e}", conf.display()));
    conf
}

/// A token's label and PINs.
///
/// Tests find a token by its label, never by slot number: `softhsm2-util --init-token
/// --free` takes the first free slot and SoftHSMv2 then renumbers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    pub label: String,
    /// The user PIN.
    pub pin: String,
    pub so_pin: String,
}

impl Token {
    /// A token labelled `{prefix}-` and 8 random hex digits, with random 16-digit PINs:
    /// distinctive enough to search logs and messages for a leaked PIN.
    pub fn random(prefix: &str) -> Token {
        Token {
            label: format!("{prefix}-{}", crate::random_hex(4)),
            pin: crate::random_hex(8),
            so_pin: crate::random_hex(8),
        }
    }

    /// A token with the given label and PINs, for tests that must match a fixed
    /// configuration (a seed's, or one a child process has compiled in).
    pub fn new(label: &str, pin: &str, so_pin: &str) -> Token {
        Token {
            label: label.into(),
            pin: pin.into(),
            so_pin: so_pin.into(),
        }
    }
}

/// How [`Hsm::with`] sets up.
#[derive(Clone, Debug)]
pub struct HsmOptions {
    /// The token initialised first.
    pub token: Token,
    /// Lines added to `softhsm2.conf`, e.g. `slots.mechanisms = ...` to switch
    /// mechanisms off.
    pub conf_lines: String,
    /// Where the directory goes instead of the system's temporary directory. An [`Hsm`]
    /// held in a `static` is never dropped and leaves its directory behind, so such
    /// tests put it under the build's `CARGO_TARGET_TMPDIR`: directories that earlier
    /// runs left there, an hour old or more, are removed first.
    pub parent: Option<PathBuf>,
}

impl Default for HsmOptions {
    fn default() -> Self {
        HsmOptions {
            token: Token::random("test"),
            conf_lines: String::new(),
            parent: None,
        }
    }
}

/// A fresh SoftHSMv2 of a test's own: a temporary directory holding `softhsm2.conf`
/// and the token directory, with one initialised token. The directory is removed on
/// drop; tests may keep their own files in it.
///
/// Nothing here sets `SOFTHSM2_CONF` in the test's own environment: tests run as
/// threads of one process, so only a test that owns its process (one fixture for the
/// whole binary) may do that, before the module is loaded.
pub struct Hsm {
    dir: tempfile::TempDir,
    conf: PathBuf,
    token: Token,
}

impl Hsm {
    /// A fresh token with a random label and PINs ([`Token::random`]).
    pub fn new() -> Hsm {
        Hsm::with(HsmOptions::default())
    }

    /// A fresh token as `options` say.
    ///
    /// Panics when the module or `softhsm2-util` is missing, or the token cannot be
    /// initialised.
    pub fn with(options: HsmOptions) -> Hsm {
        assert!(
            Path::new(MODULE).exists(),
            "{MODULE} is missing: {INSTALL_HINT}"
        );
        let mut builder = tempfile::Builder::new();
        builder.prefix(DIR_PREFIX);
        let dir = match &options.parent {
            Some(parent) => {
                remove_stale_dirs(parent);
                builder.tempdir_in(parent)
            }
            None => builder.tempdir(),
        }
        .expect("temporary SoftHSMv2 directory");
        let conf = conf_in(dir.path());
        if !options.conf_lines.is_empty() {
            let mut text = std::fs::read_to_string(&conf).expect("softhsm2.conf");
            text.push_str(&options.conf_lines);
            if !text.ends_with('\n') {
                text.push('\n');
            }
            std::fs::write(&conf, text).expect("softhsm2.conf");
        }
        let hsm = Hsm {
            dir,
            conf,
            token: options.token,
        };
        hsm.init_token(&hsm.token);
        hsm
    }

    /// The directory holding `softhsm2.conf` and `tokens/`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `softhsm2.conf`, for `SOFTHSM2_CONF`.
    pub fn conf(&self) -> &Path {
        &self.conf
    }

    /// The token initialised when this was made.
    pub fn token(&self) -> &Token {
        &self.token
    }

    /// Initialises another token in the next free slot (`softhsm2-util --init-token
    /// --free`); panics when that fails.
    pub fn init_token(&self, token: &Token) {
        let out = self
            .command("softhsm2-util")
            .args(["--init-token", "--free", "--label", &token.label])
            .args(["--so-pin", &token.so_pin, "--pin", &token.pin])
            .output()
            .unwrap_or_else(|e| panic!("cannot run softhsm2-util: {e}: {INSTALL_HINT}"));
        assert!(
            out.status.success(),
            "softhsm2-util --init-token failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `program` with this SoftHSMv2's `SOFTHSM2_CONF` in its environment.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("SOFTHSM2_CONF", &self.conf);
        cmd
    }
}

impl Default for Hsm {
    fn default() -> Self {
        Hsm::new()
    }
}

/// Removes the directories [`Hsm`] left in `parent` an hour ago or earlier.
fn remove_stale_dirs(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    let hour_ago = SystemTime::now() - Duration::from_secs(3600);
    for e in entries.flatten() {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t < hour_ago);
        if old && e.file_name().to_string_lossy().starts_with(DIR_PREFIX) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_conf_names_its_own_token_directory() {
        let dir = std::env::temp_dir().join(format!("testkit-{}", std::process::id()));
        let conf = conf_in(&dir);
        let text = std::fs::read_to_string(&conf).unwrap();
        assert!(text.contains(&format!(
            "directories.tokendir = {}",
            dir.join("tokens").display()
        )));
        assert!(dir.join("tokens").is_dir());
        // A second call (a snapshot of an existing directory) keeps the tokens.
        conf_in(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn random_tokens_differ() {
        let (a, b) = (Token::random("t"), Token::random("t"));
        assert!(a.label.starts_with("t-") && a.label.len() == 10, "{a:?}");
        assert_ne!(a.label, b.label);
        assert_ne!(a.pin, a.so_pin);
        assert_ne!(a.pin, b.pin);
    }

    #[test]
    fn a_fresh_hsm_shows_its_token_and_conf_lines() {
        let hsm = Hsm::with(HsmOptions {
            conf_lines: "slots.removable = false".into(),
            ..HsmOptions::default()
        });
        let conf = std::fs::read_to_string(hsm.conf()).unwrap();
        assert!(conf.ends_with("slots.removable = false\n"), "{conf}");
        let out = hsm
            .command("softhsm2-util")
            .arg("--show-slots")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(&hsm.token().label), "{text}");
        let dir = hsm.dir().to_path_buf();
        drop(hsm);
        assert!(!dir.exists());
    }
}
