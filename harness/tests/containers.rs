//! The container provider seen from outside: a run that is interrupted, killed, or has
//! a cell that fails or times out leaves no container behind, and the report names the
//! backends `NAME@container`.
//!
//! These need a container engine (DOCKER_HOST) with the images built
//! (`eval "$(ci/container-engine)"; ci/build-images`). `ci/test` provides both and sets
//! HSM_HARNESS_REQUIRE_CONTAINERS=1, under which a missing engine fails the tests;
//! without it they say why and do nothing.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hsm_harness::backends::container::{self, RUN_LABEL};
use rstest::rstest;

mod support;

use support::{run_dirs, wait_for};

const BIN: &str = env!("CARGO_BIN_EXE_hsm-harness");

/// Whether the engine is there; panics when it must be and is not.
fn engine() -> bool {
    match container::check_engine() {
        Ok(()) => true,
        Err(e) if std::env::var_os("HSM_HARNESS_REQUIRE_CONTAINERS").is_some() => {
            panic!("HSM_HARNESS_REQUIRE_CONTAINERS is set but: {e:#}")
        }
        Err(e) => {
            eprintln!("not run (no container engine): {e:#}");
            false
        }
    }
}

struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    fn new() -> Self {
        let p = Project {
            dir: tempfile::tempdir().unwrap(),
        };
        for d in ["suites", "backends", "tmp"] {
            std::fs::create_dir_all(p.dir.path().join(d)).unwrap();
        }
        p.file(
            "backends/relay.yaml",
            "backend: relay\nabout: x\nprovider: relay\ncapabilities: [rsa2048, random, destroy, kmip-modify-attribute, hsm, kmip, tls13, persistent-keys]\n",
        );
        p.file(
            "backends/pykmip.yaml",
            "backend: pykmip\nabout: x\nprovider: pykmip\ncapabilities: [rsa2048, destroy, hsm, kmip, tls12-only, persistent-keys]\n",
        );
        p
    }

    fn file(&self, name: &str, text: &str) {
        std::fs::write(self.dir.path().join(name), text).unwrap();
    }

    fn tmp(&self) -> PathBuf {
        self.dir.path().join("tmp")
    }

    fn junit(&self) -> PathBuf {
        self.dir.path().join("junit.xml")
    }

    fn run(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.arg("run")
            .arg("--suites-dir")
            .arg(self.dir.path().join("suites"))
            .arg("--backends-dir")
            .arg(self.dir.path().join("backends"))
            .arg("--junit")
            .arg(self.junit())
            .args(["--provider", "container"])
            .args(args)
            .env("TMPDIR", self.tmp());
        c
    }

    /// The containers of runs under this project's temporary directory.
    fn containers(&self) -> Vec<String> {
        let tmp = self.tmp().display().to_string();
        container::labelled(RUN_LABEL)
            .unwrap()
            .into_iter()
            .filter(|run| run.starts_with(&tmp))
            .collect()
    }
}

fn slow_suite(p: &Project) {
    let mut cases = String::new();
    for i in 0..4 {
        cases.push_str(&format!(
            "  - name: slow {i}\n    steps:\n      - create_key: {{ alg: rsa2048, as: k }}\n      - sleep: {{ seconds: 60 }}\n"
        ));
    }
    p.file(
        "suites/slow.yaml",
        &format!("suite: slow\nabout: x\ncases:\n{cases}"),
    );
}

/// Ctrl-C, SIGTERM or SIGKILL while containers run: within 10 s none of the run's
/// containers and no run directory is left; after Ctrl-C the report lists every cell.
#[rstest]
#[case::sigint_on_pykmip(libc::SIGINT, "pykmip", 2)]
#[case::sigkill_on_pykmip(libc::SIGKILL, "pykmip", 2)]
#[case::sigterm_on_relay(libc::SIGTERM, "relay", 4)]
#[case::sigkill_on_relay(libc::SIGKILL, "relay", 4)]
fn an_interrupted_container_run_leaves_no_container(
    #[case] signal: i32,
    #[case] backend: &str,
    #[case] containers: usize,
) {
    if !engine() {
        return;
    }
    let p = Project::new();
    slow_suite(&p);
    let mut child = p
        .run(&["--backend", backend, "-j", "2", "--timeout", "120"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Two cells with their containers up (a relay cell has a softhsm2 one too).
    wait_for("the cells' containers", Duration::from_secs(90), || {
        p.containers().len() >= containers
    });
    std::thread::sleep(Duration::from_secs(2));
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, signal) };
    let started = Instant::now();
    let mut status = None;
    wait_for("the run to end", Duration::from_secs(10), || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    wait_for(
        "every container of the run to go",
        Duration::from_secs(10).saturating_sub(started.elapsed()),
        || p.containers().is_empty(),
    );
    wait_for(
        "the run directory to go",
        Duration::from_secs(10).saturating_sub(started.elapsed()),
        || run_dirs(&p.tmp()).is_empty(),
    );
    if signal != libc::SIGKILL {
        assert_eq!(status.unwrap().code(), Some(128 + signal));
        let xml = std::fs::read_to_string(p.junit()).unwrap();
        assert_eq!(xml.matches("<testcase").count(), 4, "{xml}");
        assert!(xml.contains(&format!("{backend}@container")), "{xml}");
    }
}

/// A cell that fails and one that times out (killed, so it cannot remove its own
/// containers) leave none behind either; the passing cell reports its start-up time.
#[test]
fn failing_and_timed_out_cells_leave_no_container() {
    if !engine() {
        return;
    }
    let p = Project::new();
    p.file(
        "suites/mixed.yaml",
        "suite: mixed\nabout: x\ncases:\n  - name: passes\n    steps:\n      - create_key: { alg: rsa2048, as: k }\n      - sign: { key: k, data: hello, as: s }\n      - verify: { signature: s }\n  - name: fails\n    steps:\n      - create_key: { alg: rsa2048, as: k }\n      - sign: { key: k, data: hello, as: s }\n      - verify: { signature: s, data: other }\n  - name: times out\n    steps:\n      - create_key: { alg: rsa2048, as: k }\n      - sleep: { seconds: 60 }\n",
    );
    let o = p
        .run(&["--backend", "pykmip", "-j", "3", "--timeout", "20"])
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(o.status.code(), Some(1), "{said}");
    let xml = std::fs::read_to_string(p.junit()).unwrap();
    testkit::junit10::assert_valid(&xml);
    assert!(xml.contains("container_startup_ms"), "{xml}");
    assert!(xml.contains("timeout"), "{xml}");
    assert!(xml.contains("<failure"), "{xml}");
    assert!(p.containers().is_empty(), "left: {:?}", p.containers());
    assert!(run_dirs(&p.tmp()).is_empty());
}
