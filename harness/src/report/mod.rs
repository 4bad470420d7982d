//! What a run tells: the outcome of each cell, the JUnit XML and JSON twin, and the
//! live console.

pub mod clock;
pub mod console;
pub mod junit;
pub mod outcome;
