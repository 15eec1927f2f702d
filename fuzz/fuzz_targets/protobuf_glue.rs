//! Protobuf values in the Glue Schema Registry wire format (a sorted message index): see `registry_common.rs`.
#![no_main]

mod registry_common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| registry_common::run(registry_common::Format::Protobuf, true, data));
