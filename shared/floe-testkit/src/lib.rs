//! Test and demo support for floe: a deterministic generator of realistic click/order events (with a few
//! malformed records), packing of records into MSK-shaped events, and helpers to read a table back.

pub mod generator;
pub mod readback;

pub use generator::{Generated, GeneratorOptions, generate};
