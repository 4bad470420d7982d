//! What a run tells: the outcome of each cell, the evidence it carries, the JUnit XML
//! and JSON twin, the live console, and `certify`'s conformance report; and what runs
//! tell together: the diff between two and the merge of shards.

pub mod certificate;
pub mod clock;
pub mod console;
pub mod diff;
pub mod evidence;
pub mod json;
pub mod junit;
pub mod merge;
pub mod outcome;
pub mod progress;

use std::fs;
use std::io::Write as _;
use std::path::Path;

use anyhow::Context as _;

/// Writes `bytes` to a temporary file next to `path`, then renames it over `path`, so
/// a reader never sees half a report. Creates the parent directories.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let file_name = path
        .file_name()
        .with_context(|| format!("{} is not a file path", path.display()))?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;

    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| -> anyhow::Result<()> {
        let mut file =
            fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
            .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}
