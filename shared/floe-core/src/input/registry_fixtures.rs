//! Test support shared by the registry-format decoders' tests (`avro_tests.rs`, `protobuf_tests.rs`): the
//! fixtures written by confluent-kafka's serializers, records around their values, and rows as JSON.

use std::sync::Arc;

use serde_json::Value;

use crate::input::decode::{Decoded, RecordDecoder};
use crate::input::event::{SourcePartition, SourceRecord};
use crate::input::registry::{KnownSchema, RegisteredSchema, Resolved, SchemaId, SchemaKind};
use crate::pipeline::Pipeline;
use crate::table::layout::TableLayout;

/// `tests/fixtures/registry/<name>`, parsed.
pub(crate) fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/registry/{name}",
        std::env::var("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

pub(crate) fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

/// Records of topic `orders` holding `values`, at offsets from 10.
pub(crate) fn records(values: &[Vec<u8>]) -> Vec<SourceRecord> {
    let rec = |(i, v): (usize, &Vec<u8>)| SourceRecord {
        offset: 10 + i as i64,
        timestamp_ms: Some(1_700_000_000_000),
        key: None,
        value: Some(v.clone()),
        headers: vec![],
        problem: None,
    };
    values.iter().enumerate().map(rec).collect()
}

/// `values` decoded by `decoder` with the schemas `resolved` names.
pub(crate) fn decode_values(decoder: &RecordDecoder, values: &[Vec<u8>], resolved: &Resolved) -> Decoded {
    let source = SourcePartition { topic: "orders".into(), partition: 0 };
    decoder.decode_with(&source, &records(values), Some((resolved, "http://registry.test:8081"))).unwrap()
}

/// Rows as JSON objects, without the last column (the raw value, checked separately).
pub(crate) fn rows(decoded: &Decoded) -> Vec<Value> {
    let Some(batch) = &decoded.batch else { return vec![] };
    let mut w = arrow_json::ArrayWriter::new(Vec::new());
    w.write(&batch.project(&(0..batch.num_columns() - 1).collect::<Vec<_>>()).unwrap()).unwrap();
    w.finish().unwrap();
    serde_json::from_slice(&w.into_inner()).unwrap()
}

/// The schemas of a fixture's `{id: text}` object as the registry cache would hold them (local ids from 100).
pub(crate) fn schemas(by_id: &Value, kind: SchemaKind) -> Resolved {
    let mut resolved = Resolved::new();
    for (n, (id, text)) in by_id.as_object().unwrap().iter().enumerate() {
        let id = SchemaId::Confluent(id.parse().unwrap());
        let schema = RegisteredSchema::new(kind, text.as_str().unwrap().to_string());
        resolved.insert(id, Some(Arc::new(KnownSchema { id, local: 100 + n as u32, schema })));
    }
    resolved
}

/// The decoder of a pipeline file's text.
pub(crate) fn decoder(text: &str, file: &str) -> RecordDecoder {
    let p = Pipeline::parse(text, file).unwrap();
    let layout = TableLayout::target(&p, "file:///wh").unwrap();
    RecordDecoder::new(&p, &layout).unwrap()
}
