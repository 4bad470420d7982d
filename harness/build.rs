//! Embeds the repository's suites (`suites/*.yaml`) and backend files
//! (`fixtures/backends/*.yaml`) in the binary, so that an installed harness runs without
//! the repository (see `src/model/builtin.rs`).

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut out = String::new();
    for (constant, dir) in [("SUITES", "suites"), ("BACKENDS", "fixtures/backends")] {
        let dir = root.join(dir);
        println!("cargo:rerun-if-changed={}", dir.display());
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .collect();
        files.sort();
        writeln!(out, "pub const {constant}: &[(&str, &str)] = &[").unwrap();
        for f in files {
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            let path = f.canonicalize().unwrap();
            writeln!(out, "    ({name:?}, include_str!({:?})),", path.display()).unwrap();
        }
        writeln!(out, "];").unwrap();
    }
    let dest = Path::new(&std::env::var("OUT_DIR").unwrap()).join("builtin.rs");
    std::fs::write(dest, out).unwrap();
}
