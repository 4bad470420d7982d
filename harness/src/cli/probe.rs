//! `hsm-harness probe --backend FILE [--write PROFILE]`: what a backend offers, asked
//! of the backend itself (library and token, or KMIP server, versions, operations
//! and TLS; mechanisms with key sizes and flags; its random generator), and the
//! capability profile that follows from it.
//!
//! The backend comes up as for a cell (a fresh token or server for the kinds the
//! harness makes; the existing token or server for `pkcs11` and `kmip`), in a work
//! directory of its own that is removed afterwards. Nothing is created on an external
//! backend: the probe reads lists and infos, and draws random bytes.
//!
//! `--write` writes the profile: the capabilities the probe saw, those the harness
//! gives for this kind of backend, and those it cannot observe kept from the backend
//! file as they were (each with where it came from), then every section of what the
//! backend said. A backend file uses it with `profile: PROFILE` in place of
//! `capabilities:`.
//!
//! Exit codes: 0 when the probe ran (and the backend file's own profile, if any,
//! agrees with it); 1 when the backend could not be probed or the backend file's
//! profile disagrees; 2 for bad input.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use clap::Args;

use super::{bad_input, init_logging, EXIT_FAILED, EXIT_OK};
use crate::backends::{Description, Instances, Observed, SignerType, ADMINISTERED};
use crate::model::backend::{Backend, Placement};
use crate::model::suite::Capability;
use crate::report::clock;

#[derive(Args)]
pub struct ProbeArgs {
    /// The backend file (fixtures/backends/*.yaml, or a vendor's own).
    #[arg(long)]
    backend: PathBuf,
    /// Write the capability profile (YAML) to this file; a backend file takes it with
    /// `profile: PATH`.
    #[arg(long, value_name = "PROFILE")]
    write: Option<PathBuf>,
    /// Where the backend's servers run.
    #[arg(long, value_enum, default_value_t = Placement::Local)]
    provider: Placement,
}

pub fn main(args: ProbeArgs) -> i32 {
    init_logging();
    let backend = match Backend::load(&args.backend).and_then(|b| {
        b.placed(args.provider)
            .map_err(|m| crate::model::suite::SuiteError {
                file: args.backend.display().to_string(),
                line: 0,
                column: 0,
                message: m,
            })
    }) {
        Ok(b) => b,
        Err(e) => return bad_input(e),
    };
    if let Some(why) = backend.provider.unavailable_reason(backend.placement) {
        eprintln!(
            "error: backend '{}' cannot come up here: {why}",
            backend.name
        );
        return EXIT_FAILED;
    }
    let (description, observed) = match described(&backend) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: probing backend '{}': {e:#}", backend.name);
            return EXIT_FAILED;
        }
    };
    print!("{}", render(&backend, &description, &observed));
    let disagreements: Vec<String> = observed
        .iter()
        .filter(|o| backend.profile_given && o.disagrees(backend.has(o.capability)))
        .map(|o| {
            format!(
                "the backend file's profile {} '{}', but {}",
                if backend.has(o.capability) {
                    "lists"
                } else {
                    "does not list"
                },
                o.capability,
                o.evidence
            )
        })
        .collect();
    for d in &disagreements {
        println!("disagrees: {d}");
    }
    if let Some(path) = &args.write {
        let text = profile(&backend, &description, &observed);
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("error: writing {}: {e}", path.display());
            return EXIT_FAILED;
        }
        println!("profile written to {}", path.display());
    }
    if disagreements.is_empty() {
        EXIT_OK
    } else {
        EXIT_FAILED
    }
}

/// Brings the backend up in a directory of its own, as a cell would, and asks it.
fn described(backend: &Backend) -> anyhow::Result<(Description, Vec<Observed>)> {
    let dir = tempfile::Builder::new()
        .prefix("hsm-harness-probe-")
        .tempdir()?;
    let mut instances = Instances::new(backend, dir.path(), &BTreeMap::new())?;
    let out = instances.describe();
    // Instances (servers, containers, sessions) go before their directory.
    drop(instances);
    out
}

/// What `probe` prints: every section, then the capabilities with their evidence.
pub fn render(backend: &Backend, d: &Description, observed: &[Observed]) -> String {
    let mut out = format!(
        "backend '{}' ({} provider, {})\n",
        backend.name,
        backend.provider.name(),
        backend.placement.name()
    );
    for s in &d.sections {
        let _ = writeln!(out, "\n{}:", s.title);
        let width = s.rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (k, v) in &s.rows {
            let _ = writeln!(out, "  {k:width$}  {v}");
        }
    }
    let _ = writeln!(out, "\ncapabilities seen:");
    for o in observed {
        let _ = writeln!(
            out,
            "  {:<12} {}  ({})",
            o.capability.to_string(),
            match (o.has, o.exact) {
                (true, true) => "present",
                (true, false) => "not ruled out",
                (false, _) => "absent",
            },
            o.evidence
        );
    }
    out
}

/// Where a capability of the written profile comes from.
fn sources(backend: &Backend, d: &Description, observed: &[Observed]) -> Vec<(Capability, String)> {
    let mut out: Vec<(Capability, String)> = Vec::new();
    for o in observed.iter().filter(|o| o.has) {
        let how = if o.exact { "probed" } else { "not ruled out" };
        out.push((o.capability, format!("{how}: {}", o.evidence)));
    }
    for c in backend.provider.administers() {
        out.push((
            *c,
            format!(
                "given by the harness ({} provider)",
                backend.provider.name()
            ),
        ));
    }
    for (c, why) in implied(backend, d) {
        out.push((c, why));
    }
    let observable: Vec<Capability> = observed.iter().map(|o| o.capability).collect();
    for c in &backend.capabilities {
        if !observable.contains(c) && !ADMINISTERED.contains(c) {
            out.push((*c, "kept from the backend file (not observable)".into()));
        }
    }
    out.sort_by_key(|(c, _)| c.to_string());
    out.dedup_by_key(|(c, _)| *c);
    out
}

/// What follows from the kind of signer and from what the backend said, beyond the
/// capability probe: an HSM to the router, keys that outlive the signer, Destroy, and
/// for KMIP the TLS version and Modify Attribute in Query.
fn implied(backend: &Backend, d: &Description) -> Vec<(Capability, String)> {
    let listed = |section: &str, name: &str| {
        d.rows(section).is_some_and(|rows| {
            rows.iter()
                .any(|(k, v)| k == name && !v.trim_start().starts_with("not listed"))
        })
    };
    let mut out = Vec::new();
    match backend.provider.signer_type() {
        SignerType::Software => {}
        SignerType::Pkcs11 => {
            out.push((Capability::Hsm, "reached through the PKCS#11 signer".into()));
            out.push((
                Capability::PersistentKeys,
                "the PKCS#11 signer makes token objects (CKA_TOKEN), which outlive it".into(),
            ));
            out.push((
                Capability::Destroy,
                "C_DestroyObject is a required PKCS#11 function (seed 001)".into(),
            ));
        }
        SignerType::Kmip => {
            out.push((Capability::Hsm, "reached through the KMIP signer".into()));
            out.push((
                Capability::PersistentKeys,
                "a KMIP server keeps its managed objects".into(),
            ));
            if listed("operations", "Destroy") {
                out.push((Capability::Destroy, "its Query lists Destroy".into()));
            }
            if listed("operations", "Modify Attribute") {
                out.push((
                    Capability::KmipModifyAttribute,
                    "its Query lists Modify Attribute".into(),
                ));
            }
            match d
                .rows("tls")
                .and_then(|r| r.iter().find(|(k, _)| k == "version"))
            {
                Some((_, v)) if v.contains("1.3") => {
                    out.push((Capability::Tls13, format!("it negotiated {v}")))
                }
                Some((_, v)) if v.contains("1.2") => out.push((
                    Capability::Tls12Only,
                    format!("it negotiated {v} when offered TLS 1.3 and 1.2"),
                )),
                _ => {}
            }
        }
    }
    out
}

/// The profile file `--write` writes (YAML; strings as JSON strings, which YAML reads
/// the same, so no value can break the document).
pub fn profile(backend: &Backend, d: &Description, observed: &[Observed]) -> String {
    let q = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
    let caps = sources(backend, d, observed);
    let mut out = format!(
        "# Capability profile of backend '{}' ({} provider), written by `hsm-harness probe`\n\
         # (hsm-harness {}) on {}. A backend file uses it with `profile: <this file>`.\n",
        backend.name,
        backend.provider.name(),
        env!("CARGO_PKG_VERSION"),
        clock::utc_now()
    );
    let _ = writeln!(out, "backend: {}", q(&backend.name));
    let _ = writeln!(
        out,
        "capabilities: [{}]",
        caps.iter()
            .map(|(c, _)| c.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(out, "evidence:");
    for (c, why) in &caps {
        let _ = writeln!(out, "  {}: {}", c, q(why));
    }
    let _ = writeln!(out, "described:");
    for s in &d.sections {
        let _ = writeln!(out, "  {}:", q(&s.title));
        if s.rows.is_empty() {
            let _ = writeln!(out, "    {{}}");
        }
        for (k, v) in &s.rows {
            let _ = writeln!(out, "    {}: {}", q(k), q(v));
        }
    }
    out
}
