//! hsm-harness: runs YAML suites against HSM backends through complete signer
//! implementations, each case on each backend in its own process, and writes JUnit XML.
//!
//! The binary is a thin `main` over [`cli::main`]; the modules are public so that
//! integration tests can drive the pieces directly.

pub mod backend;
pub mod cell;
pub mod cli;
pub mod console;
pub mod cosmian;
pub mod instance;
pub mod junit;
pub mod oracle_terms;
pub mod outcome;
pub mod pki;
pub mod proxy;
pub mod runner;
pub mod shim;
pub mod suite;
