//! What a run tells: the outcome of each cell, the evidence it carries, the JUnit XML
//! and JSON twin, and the live console.

pub mod console;
pub mod evidence;
pub mod junit;
pub mod outcome;
