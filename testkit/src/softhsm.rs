//! SoftHSMv2 token directories of a test's own.
//!
//! Every test gets a `softhsm2.conf` pointing at a token directory of its own, so tests
//! never see each other's tokens; the conf is handed to SoftHSMv2 through
//! `SOFTHSM2_CONF` (in the test's environment before the module loads, or in a child
//! process's).

use std::path::{Path, PathBuf};

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
}
