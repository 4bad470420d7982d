//! Running cells: the runner plans the matrix of case x backend and starts each cell
//! in its own process; the cell process runs one case on one backend and hands its
//! report back through a file in its work directory. A backend's description (for
//! `certify`) is asked the same way.

pub mod cell;
pub mod describe;
pub mod interrupt;
pub mod kmip_exchanges;
pub mod lifeline;
pub mod partition;
pub mod plan;
pub mod protocol;
pub mod runner;
