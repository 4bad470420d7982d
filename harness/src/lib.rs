//! hsm-harness: runs YAML suites against HSM backends through complete signer
//! implementations, each case on each backend in its own process, and writes JUnit XML.
//!
//! The binary is a thin `main` over [`cli::main`]; the modules are public so that
//! integration tests can drive the pieces directly. Each room owns one job:
//!
//! - [`cli`]: the subcommands, exit codes and logging;
//! - [`model`]: suite and backend files as loaded, capabilities, load errors with
//!   file, line and column, and the suite schema generated from them;
//! - [`backends`]: how each kind of backend comes up for a cell and how the harness
//!   administers it (tokens, PKI, the TCP proxy, the PKCS#11 shim);
//! - [`bench`]: sign throughput and latency per path against the raw PKCS#11 floor;
//! - [`run`]: the plan of cells, the runner and the cell process;
//! - [`steps`]: each step of a case, one type each: its YAML, its load-time checks,
//!   the capabilities it needs and how it runs in a cell;
//! - [`report`]: outcomes, JUnit, JSON and the console;
//! - [`oracle_terms`]: the bridge from the oracle crate's independent answers to the
//!   signers' vocabulary.

pub mod backends;
pub mod bench;
pub mod cli;
pub mod model;
pub mod oracle_terms;
pub mod report;
pub mod run;
pub mod signer_protocol;
pub mod steps;
