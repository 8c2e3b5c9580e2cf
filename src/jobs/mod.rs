//! Jobs: turning a configured schedule into fire times, and (with the runner) into runs.

pub mod freshness;
pub mod runner;
pub mod schedule;
pub mod window;
