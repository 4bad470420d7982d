//! `hsm-harness certify --backend FILE --out DIR`: every suite on one backend, and a
//! conformance report of it.
//!
//! Writes into DIR: `report.md` and `report.html` (see
//! [`crate::report::certificate`]), and beside them `junit.xml` and `results.json`, the
//! run's reports as `run` writes them. Every cell of a backend reached through the
//! PKCS#11 signer runs through the PKCS#11 shim (transparent unless the backend file
//! or the case sets rules), so the report can say what the backend answered to each
//! function; KMIP cells count the signer's exchanges. A backend that cannot start is
//! an error in every cell, never a skip.
//!
//! Exit codes: 0 when the verdict is conformant; 1 when it is not, or the reports
//! could not be written; 2 for bad input (a backend file or suite that does not load,
//! a backend reached through neither PKCS#11 nor KMIP, one that names a module or
//! program missing here, bad arguments). An interrupted run writes its report and
//! exits 128 + the signal.

use crate::backends::SignerType;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::{bad_input, EXIT_FAILED, EXIT_OK};
use crate::model::backend::{Backend, Placement};
use crate::model::builtin::{self, Kind};
use crate::model::suite::{files_in, Capability, Suite};
use crate::report::certificate::requirements::Interface;
use crate::report::certificate::{self, Certificate, Inputs};
use crate::report::{console, json, junit};
use crate::run::runner::{Plan, RunOptions, Selection};
use crate::run::{describe, interrupt};

/// The run's JUnit report, beside the certificate.
const JUNIT_FILE: &str = "junit.xml";
/// The run's JSON report, beside the certificate.
const JSON_FILE: &str = "results.json";

#[derive(Args)]
pub struct CertifyArgs {
    /// The backend file of the backend to certify (see fixtures/README.md; for a
    /// vendor's PKCS#11 token, provider pkcs11).
    #[arg(long, value_name = "FILE")]
    backend: PathBuf,
    /// Where to write report.md, report.html, junit.xml and results.json (created if
    /// missing; files of those names there are replaced).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Where the suites are: every *.yaml there runs [default: `suites` in the working
    /// directory if there is one, else the suites built into this binary]
    #[arg(long, value_name = "DIR")]
    suites_dir: Option<PathBuf>,
    /// Cells run in parallel (default: as `run`; cells on one external token take
    /// turns whatever this says).
    #[arg(short = 'j', long, value_name = "N")]
    jobs: Option<usize>,
    /// Seconds a cell may take before it is killed and reported as an error.
    #[arg(long, value_name = "SECONDS", default_value_t = 60.0)]
    timeout: f64,
    /// Where the backend's servers run (`local` or `container`; see `run --provider`).
    #[arg(long, value_enum, value_name = "WHERE", default_value_t = Placement::Local)]
    provider: Placement,
    /// Let cases wipe, re-PIN or plant impostor keys on the vendor's token or server
    /// (see `run --allow-destructive`); without it those cases are skipped, saying so.
    #[arg(long)]
    allow_destructive: bool,
    /// Also write each cell's properties as `<properties>` inside its `<testcase>` (as
    /// GitLab and Jenkins' JUnit plugin show them). Off by default: the junit-10 schema
    /// that strict consumers validate with (Jenkins xUnit, pytest's xunit2) refuses them
    /// there, so by default they are in the testcase's `<system-out>`.
    #[arg(long)]
    junit_case_properties: bool,
}

pub fn main(args: CertifyArgs) -> i32 {
    let backend = match Backend::load(&args.backend).map_err(|e| e.to_string()) {
        Ok(b) => b.placed(args.provider),
        Err(e) => return bad_input(e),
    };
    let mut backend = match backend {
        Ok(b) => b,
        Err(e) => return bad_input(e),
    };
    backend.allow_destructive = args.allow_destructive;
    let interface = match backend.provider.signer_type() {
        SignerType::Pkcs11 => Interface::Pkcs11,
        SignerType::Kmip => Interface::Kmip,
        SignerType::Software => {
            return bad_input(format!(
                "backend '{}' ({}): certify is for HSMs reached through the PKCS#11 or the \
                 KMIP signer; the {} provider's backends are reached through the software \
                 signer",
                backend.name,
                args.backend.display(),
                backend.provider.name()
            ))
        }
    };
    if let Some(reason) = backend.unavailable_reason() {
        return bad_input(format!(
            "backend '{}' cannot start here: {reason}",
            backend.name
        ));
    }
    let traced = interface == Interface::Pkcs11
        && backend
            .provider
            .administers()
            .contains(&Capability::Pkcs11Shim);
    if traced {
        if let Err(e) = crate::backends::shim::library() {
            eprintln!("error: certify traces every PKCS#11 call through the shim: {e}");
            return EXIT_FAILED;
        }
    }
    if !(args.timeout > 0.0 && args.timeout.is_finite()) {
        return bad_input("--timeout must be a positive number of seconds");
    }
    let suites_from = match builtin::resolve(args.suites_dir.as_deref(), Kind::Suites) {
        Ok(o) => o,
        Err(e) => return bad_input(format!("cannot write out the built-in suites: {e}")),
    };
    let suites = match load_suites(suites_from.dir()) {
        Ok(s) => s,
        Err(code) => return code,
    };
    if let Err(e) = std::fs::create_dir_all(&args.out) {
        return bad_input(format!("cannot create {}: {e}", args.out.display()));
    }
    let program = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => return bad_input(format!("cannot find this program's path: {e}")),
    };
    if args.provider == Placement::Container {
        if let Err(e) = crate::backends::container::check_engine() {
            eprintln!("error: --provider container: {e:#}");
            return EXIT_FAILED;
        }
    }
    let options = RunOptions {
        jobs: args
            .jobs
            .unwrap_or_else(|| crate::run::runner::default_jobs(args.provider)),
        timeout: Duration::from_secs_f64(args.timeout),
        program,
        placement: args.provider,
        trace_pkcs11: traced,
        signer_cmd: None,
    };
    let selection = Selection {
        strict: true,
        ..Selection::default()
    };
    let plan = match Plan::new(suites, vec![backend], &selection) {
        Ok(p) => p,
        Err(e) => return bad_input(format!("{e:#}")),
    };
    let backend = &plan.backends[0];
    interrupt::install();

    println!(
        "hsm-harness certify: backend '{}' ({} provider), {} suites, {} cases",
        backend.name,
        backend.provider_name(),
        plan.suites.len(),
        plan.cells.len()
    );
    let description = describe::describe(backend, &options);
    match &description {
        Ok(d) => println!(
            "described the backend: {}",
            if d.sections.is_empty() {
                "its provider says nothing".to_string()
            } else {
                d.sections
                    .iter()
                    .map(|s| s.title.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ),
        Err(why) => eprintln!("the backend could not be described: {why}"),
    }
    let result = match crate::run::runner::run(&plan, &options, {
        let mut progress = crate::report::progress::Progress::stdout();
        move |done, total, cell| progress.cell_done(done, total, cell)
    }) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e:#}");
            return EXIT_FAILED;
        }
    };
    println!();
    print!("{}", console::summary_table(&result));

    let junit_path = args.out.join(JUNIT_FILE);
    let json_path = args.out.join(JSON_FILE);
    if let Err(e) = junit::write_junit(
        &result,
        &junit_path,
        junit::JunitStyle {
            case_properties: args.junit_case_properties,
        },
    )
    .and_then(|()| json::write(&result, &json_path))
    {
        eprintln!("error: {e:#}");
        return EXIT_FAILED;
    }
    let interrupted = interrupt::received();
    let certificate = Certificate::new(Inputs {
        backend,
        interface,
        suites: &plan.suites,
        description,
        run: result,
        command: command_line(),
        interrupted: interrupted.map(|s| crate::run::runner::signal_name(s).to_string()),
        files: vec![JUNIT_FILE.to_string(), JSON_FILE.to_string()],
    });
    let certificate = match certificate {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return EXIT_FAILED;
        }
    };
    if let Err(e) = certificate.write(&args.out) {
        eprintln!("error: {e:#}");
        return EXIT_FAILED;
    }
    println!("\nverdict: {}", certificate.verdict.word());
    for reason in &certificate.verdict.reasons {
        println!("  - {reason}");
    }
    for name in [
        certificate::MARKDOWN_FILE,
        certificate::HTML_FILE,
        JUNIT_FILE,
        JSON_FILE,
    ] {
        println!("{}", args.out.join(name).display());
    }
    if let Some(sig) = interrupted {
        return interrupt::exit_code(sig);
    }
    if certificate.verdict.conformant {
        EXIT_OK
    } else {
        EXIT_FAILED
    }
}

/// Every suite in `dir`; any that does not load is bad input, each error printed.
fn load_suites(dir: &std::path::Path) -> Result<Vec<Suite>, i32> {
    let files = files_in(dir).map_err(|e| {
        bad_input(format!(
            "cannot list suites in {}: {e} (run from the repository root or give --suites-dir)",
            dir.display()
        ))
    })?;
    let mut suites = Vec::new();
    let mut bad = false;
    for f in &files {
        match Suite::load(f) {
            Ok(s) => suites.push(s),
            Err(e) => {
                eprintln!("error: {e}");
                bad = true;
            }
        }
    }
    if bad {
        return Err(super::EXIT_BAD_INPUT);
    }
    if suites.is_empty() {
        return Err(bad_input(format!("no suites in {}", dir.display())));
    }
    Ok(suites)
}

/// This program's command line, each argument quoted for a POSIX shell where needed.
/// (No argument of `certify` carries a secret: PINs and passwords are named in the
/// backend file by where they are read from.)
fn command_line() -> String {
    std::env::args()
        .map(|a| shell_quote(&a))
        .collect::<Vec<_>>()
        .join(" ")
}

fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./:=@%+,".contains(c));
    if plain {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[rstest::rstest]
    #[case::plain("--out", "--out")]
    #[case::path("/tmp/a-b_c.yaml", "/tmp/a-b_c.yaml")]
    #[case::space("my dir", "'my dir'")]
    #[case::quote("it's", r"'it'\''s'")]
    #[case::empty("", "''")]
    fn arguments_are_quoted_for_a_shell(#[case] arg: &str, #[case] quoted: &str) {
        assert_eq!(shell_quote(arg), quoted);
    }
}
