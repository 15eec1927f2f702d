//! Protobuf values in the Confluent wire format (message indexes after the schema id): see `registry_common.rs`.
#![no_main]

mod registry_common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| registry_common::run(registry_common::Format::Protobuf, false, data));
