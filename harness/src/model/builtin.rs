//! The suites and backend files built into the binary (`build.rs` embeds the
//! repository's `suites/*.yaml` and `fixtures/backends/*.yaml`), so that an installed
//! harness runs from any directory.
//!
//! Where a command reads them from: the directory `--suites-dir` / `--backends-dir`
//! names; else `suites` / `fixtures/backends` under the working directory, when it is
//! there (the repository's own, which a developer may have edited since the build);
//! else the built-in files. Cells load their suite and backend from files, so the
//! built-in ones are written out once to a directory of their own, named after their
//! content (`$XDG_CACHE_HOME/hsm-harness/`, else `~/.cache/hsm-harness/`, else the
//! temporary directory), where runs of other builds never change them.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

mod files {
    include!(concat!(env!("OUT_DIR"), "/builtin.rs"));
}

/// Suites or backend files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Suites,
    Backends,
}

impl Kind {
    /// The directory under the working directory that wins over the built-in files.
    pub fn default_dir(self) -> &'static str {
        match self {
            Kind::Suites => "suites",
            Kind::Backends => "fixtures/backends",
        }
    }

    /// The built-in files: (file name, content), sorted by name.
    pub fn files(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Kind::Suites => files::SUITES,
            Kind::Backends => files::BACKENDS,
        }
    }

    fn subdir(self) -> &'static str {
        match self {
            Kind::Suites => "suites",
            Kind::Backends => "backends",
        }
    }
}

/// Where a command's suites or backend files come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A directory the user named, or the one under the working directory.
    Directory(PathBuf),
    /// The files built into this binary, written out to this directory.
    BuiltIn(PathBuf),
}

impl Origin {
    /// The directory to read.
    pub fn dir(&self) -> &Path {
        match self {
            Origin::Directory(d) | Origin::BuiltIn(d) => d,
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Directory(d) => write!(f, "{}", d.display()),
            Origin::BuiltIn(d) => write!(
                f,
                "built into hsm-harness {} (written out to {})",
                env!("CARGO_PKG_VERSION"),
                d.display()
            ),
        }
    }
}

/// Where to read `kind` from: `given`; else its default directory under the working
/// directory, if there is one; else the built-in files, written out.
pub fn resolve(given: Option<&Path>, kind: Kind) -> io::Result<Origin> {
    if let Some(dir) = given {
        return Ok(Origin::Directory(dir.to_path_buf()));
    }
    let local = Path::new(kind.default_dir());
    if local.is_dir() {
        return Ok(Origin::Directory(local.to_path_buf()));
    }
    written_out(kind).map(Origin::BuiltIn)
}

/// The built-in files of `kind` in a directory named after their content, written if
/// missing or different (each file atomically, so concurrent runs agree).
fn written_out(kind: Kind) -> io::Result<PathBuf> {
    let mut hash = Sha256::new();
    for (name, text) in kind.files() {
        hash.update(name.as_bytes());
        hash.update([0]);
        hash.update(text.as_bytes());
        hash.update([0]);
    }
    let digest: String = hash.finalize()[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let leaf = Path::new(kind.subdir()).join(format!("built-in-{digest}"));
    let mut last = io::Error::other("no directory to write the built-in files to");
    for base in cache_dirs() {
        let dir = base.join(&leaf);
        match write_files(&dir, kind.files()) {
            Ok(()) => return Ok(dir),
            Err(e) => {
                last = io::Error::new(e.kind(), format!("{}: {e}", dir.display()));
            }
        }
    }
    Err(last)
}

fn cache_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        dirs.push(PathBuf::from(x).join("hsm-harness"));
    } else if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        dirs.push(PathBuf::from(home).join(".cache/hsm-harness"));
    }
    // SAFETY: getuid cannot fail and touches no memory.
    let uid = unsafe { libc::getuid() };
    dirs.push(std::env::temp_dir().join(format!("hsm-harness-{uid}")));
    dirs
}

fn write_files(dir: &Path, files: &[(&str, &str)]) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, text) in files {
        let path = dir.join(name);
        if std::fs::read(&path).is_ok_and(|old| old == text.as_bytes()) {
            continue;
        }
        let tmp = dir.join(format!(".{name}.{}", std::process::id()));
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_suite_and_backend_file_of_the_repository_is_built_in() {
        for kind in [Kind::Suites, Kind::Backends] {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join(kind.default_dir());
            let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
                .unwrap()
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".yaml"))
                .collect();
            on_disk.sort();
            let built_in: Vec<&str> = kind.files().iter().map(|(n, _)| *n).collect();
            assert_eq!(built_in, on_disk, "{kind:?}");
            for (name, text) in kind.files() {
                assert_eq!(std::fs::read_to_string(dir.join(name)).unwrap(), *text);
            }
        }
    }

    #[test]
    fn written_out_files_equal_the_built_in_ones_and_are_rewritten_when_changed() {
        let dir = tempfile::tempdir().unwrap();
        let files = Kind::Backends.files();
        write_files(dir.path(), files).unwrap();
        let (name, text) = files[0];
        std::fs::write(dir.path().join(name), "changed").unwrap();
        write_files(dir.path(), files).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join(name)).unwrap(),
            text
        );
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), files.len(), "a temporary file was left");
    }

    #[test]
    fn a_named_directory_wins() {
        let origin = resolve(Some(Path::new("/x/suites")), Kind::Suites).unwrap();
        assert_eq!(origin, Origin::Directory("/x/suites".into()));
    }
}
