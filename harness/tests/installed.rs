//! The harness as `cargo install` leaves it: the program alone in a directory of its
//! own, run from a directory without the repository's suites and backend files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_hsm-harness");

struct Installed {
    dir: tempfile::TempDir,
}

impl Installed {
    /// The program copied to `bin/` alone; an empty working directory and cache.
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["bin", "work", "cache"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        std::fs::copy(BIN, dir.path().join("bin/hsm-harness")).unwrap();
        Installed { dir }
    }

    fn path(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(self.path("bin/hsm-harness"));
        cmd.args(args)
            .current_dir(self.path("work"))
            .env("XDG_CACHE_HOME", self.path("cache"))
            .env("PATH", "/usr/bin:/bin")
            .env_remove("HSM_HARNESS_KMIP2PKCS11")
            .env_remove("HSM_HARNESS_P11SHIM");
        cmd
    }
}

fn said(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The relay built beside the test's own program.
fn relay() -> PathBuf {
    let dir = Path::new(BIN).parent().unwrap();
    let relay = dir.join("kmip2pkcs11");
    assert!(
        relay.is_file(),
        "build the workspace first: no {}",
        relay.display()
    );
    relay
}

#[test]
fn from_any_directory_the_built_in_suites_run_on_the_software_backend() {
    let i = Installed::new();
    let o = i
        .command(&["run", "--backend", "software", "--junit", "out/junit.xml"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", said(&o));
    let xml = std::fs::read_to_string(i.path("work/out/junit.xml")).unwrap();
    testkit::junit10::assert_valid(&xml);
    // Every built-in suite ran.
    for suite in std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../suites"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "yaml"))
    {
        let text = std::fs::read_to_string(suite.path()).unwrap();
        let name = text
            .lines()
            .find_map(|l| l.strip_prefix("suite: "))
            .unwrap()
            .trim();
        assert!(
            xml.contains(&format!("<testsuite name=\"{name}.software\"")),
            "{name} did not run"
        );
    }
}

#[test]
fn list_says_where_the_suites_and_backends_came_from() {
    let i = Installed::new();
    let o = i
        .command(&["list", "--backend", "software"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", said(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("suite baseline-signing: built into hsm-harness"),
        "{err}"
    );
    assert!(err.contains("backends: built into hsm-harness"), "{err}");
    assert!(
        err.contains(&i.path("cache").display().to_string()),
        "{err}"
    );

    // A directory of the working directory's own wins, and is named.
    std::fs::create_dir_all(i.path("work/suites")).unwrap();
    std::fs::write(
        i.path("work/suites/mine.yaml"),
        "suite: mine\nabout: x\ncases:\n  - name: c\n    steps:\n      - random: { bytes: 8 }\n",
    )
    .unwrap();
    let o = i
        .command(&["list", "--backend", "software"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", said(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("suite mine: suites/mine.yaml"), "{err}");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "mine.software/c\n");
}

#[test]
fn the_relay_is_found_through_its_variable_and_its_absence_is_named() {
    let i = Installed::new();
    let o = i
        .command(&["list", "--backend", "relay", "--strict"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("kmip2pkcs11 not found") && out.contains("HSM_HARNESS_KMIP2PKCS11"),
        "{}",
        said(&o)
    );
    let o = i
        .command(&["list", "--backend", "relay", "--strict"])
        .env("HSM_HARNESS_KMIP2PKCS11", relay())
        .output()
        .unwrap();
    assert!(!said(&o).contains("kmip2pkcs11 not found"), "{}", said(&o));
    // Or beside the program, as `cargo install --path relay` puts it.
    std::fs::copy(relay(), i.path("bin/kmip2pkcs11")).unwrap();
    let o = i
        .command(&["list", "--backend", "relay", "--strict"])
        .output()
        .unwrap();
    assert!(!said(&o).contains("kmip2pkcs11 not found"), "{}", said(&o));
}
