//! Test support shared by the tests of every crate in the workspace (a dev-dependency
//! only; the product never links it), so that each fixture is written once.

pub mod softhsm;
