//! Running cells: the runner plans the matrix of case x backend and starts each cell
//! in its own process; the cell process runs one case on one backend and hands its
//! report back through a file in its work directory.

pub mod cell;
pub mod interrupt;
pub mod lifeline;
pub mod plan;
pub mod protocol;
pub mod runner;
