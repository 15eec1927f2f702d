//! Fault injection for tests, compiled only with the `failpoints` feature (the `floe-faults` test binary): arm
//! the named steps of [`crate::failpoint`] to crash or pause there, and wrap a state store so any of its calls
//! fails as throttled ([`FaultyState`]). The binaries users run are built without it.

mod faults;

pub use crate::failpoint::{Pause, arm, arm_pause, arm_times};
pub use faults::FaultyState;
