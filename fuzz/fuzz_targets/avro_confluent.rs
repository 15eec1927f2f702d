//! Avro values in the Confluent wire format: see `avro_common.rs`.
#![no_main]

mod avro_common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| avro_common::run(false, data));
