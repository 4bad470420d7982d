//! The programs the harness runs beside itself: the relay (`kmip2pkcs11`) and the
//! PKCS#11 shim (`libp11shim.so`). An installed harness finds them as a built one does.

use std::path::PathBuf;

/// `name`: the file the variable `env` names (which must exist); else beside this
/// program (in `deps/` first, where cargo keeps the freshest copy, and one directory
/// up, for integration tests that run from `deps/`); else, with `on_path`, on PATH.
/// The error names every place looked at and `how` to get it.
pub fn find(name: &str, env: &str, on_path: bool, how: &str) -> Result<PathBuf, String> {
    if let Some(given) = std::env::var_os(env).filter(|v| !v.is_empty()) {
        let given = PathBuf::from(given);
        return if given.is_file() {
            Ok(given)
        } else {
            Err(format!(
                "{env} names {}, which is not a file",
                given.display()
            ))
        };
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let dir = exe.parent().ok_or("this program has no directory")?;
    let beside = [
        dir.join("deps").join(name),
        dir.join(name),
        dir.join("..").join(name),
    ];
    let path_dirs: Vec<PathBuf> = match (on_path, std::env::var_os("PATH")) {
        (true, Some(p)) => std::env::split_paths(&p).collect(),
        _ => Vec::new(),
    };
    beside
        .into_iter()
        .chain(path_dirs.iter().map(|d| d.join(name)))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "{name} not found: not in {env}, not beside {}{} ({how})",
                exe.display(),
                if on_path { ", not on PATH" } else { "" }
            )
        })
}
