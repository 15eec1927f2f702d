//! `make bench`'s Rust side: the deterministic event generator, floe's ingest handler timed on the embedded
//! default, the arrow-rs baseline and the compactor's commit of many staged files. `bench/run.py` drives these
//! beside the Python peer and prints the comparison.

pub mod avro;
pub mod baseline;
pub mod changes;
pub mod clicks;
pub mod cpu;
pub mod generate;
pub mod protobuf;
mod reencode;
