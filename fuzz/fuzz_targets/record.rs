//! The record decoder: arbitrary bytes as one Kafka record value between two good records. The batch path runs
//! first; when it fails, bisection decodes the bad record alone with a fresh decoder. Each record must end up as
//! exactly one row or one reject, and the good neighbours must always load.
#![no_main]

mod common;

use floe_core::{SourcePartition, SourceRecord};
use libfuzzer_sys::fuzz_target;

const GOOD: &[u8] = br#"{"event_id":"e-1","type":"click","ts":"2026-11-21T10:00:00Z","user":{"id":7,"country":"DE"},
"page":{"url":"/a","referrer":null},"items":[{"sku":"s","qty":1,"price":"1.50"}],"amount":"3.25",
"attrs":{"k":"v"},"client_ts":1763719200000}"#;

fn record(offset: i64, value: &[u8]) -> SourceRecord {
    SourceRecord {
        offset,
        timestamp_ms: Some(1_763_719_200_000),
        key: Some(b"k".to_vec()),
        value: Some(value.to_vec()),
        headers: vec![("trace-id".into(), b"t-1".to_vec())],
        problem: None,
    }
}

fuzz_target!(|data: &[u8]| {
    let fixture = common::fixture();
    let source = SourcePartition { topic: fixture.pipeline.topics[0].clone(), partition: 0 };
    let between = [record(0, GOOD), record(1, data), record(2, GOOD)];
    let decoded = fixture.decoder.decode(&source, &between).expect("decode returns rejects, not errors");
    let rows = decoded.batch.as_ref().map_or(0, |b| b.num_rows());
    assert_eq!(rows + decoded.rejects.len(), 3);
    assert!(decoded.rejects.iter().all(|(i, _)| *i == 1), "a good neighbour was rejected: {:?}", decoded.rejects);
});
