//! What a run tells: the outcome of each cell, the evidence it carries, the JUnit XML
//! and JSON twin, the live console, and `certify`'s conformance report.

pub mod certificate;
pub mod clock;
pub mod console;
pub mod evidence;
pub mod junit;
pub mod outcome;
