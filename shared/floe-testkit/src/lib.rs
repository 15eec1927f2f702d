//! Test and demo support for floe: a deterministic generator of realistic click/order events (with a few
//! malformed records), packing of records into MSK-shaped events, a local MSK event-source-mapping poller for a
//! real Kafka-protocol broker, and helpers to read a table back.

pub mod esm;
pub mod generator;
pub mod kafka;
pub mod readback;

pub use generator::{Generated, GeneratorOptions, generate};
