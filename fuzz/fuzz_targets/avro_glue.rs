//! Avro values in the Glue Schema Registry wire format: see `registry_common.rs`.
#![no_main]

mod registry_common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| registry_common::run(registry_common::Format::Avro, true, data));
