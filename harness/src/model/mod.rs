//! What the harness reads: suite files (`suites/*.yaml`) and backend files
//! (`fixtures/backends/*.yaml`), checked when loaded; every error names the file,
//! line and column.

pub mod backend;
pub mod builtin;
pub mod schema;
pub mod suite;
