//! Registry-framed values (the `avro_*` and `protobuf_*` targets): arbitrary bytes as one record value between
//! two good values (written by confluent-kafka's AvroSerializer or ProtobufSerializer, schema v2 of
//! shared/floe-core/tests/fixtures/registry/{avro,protobuf}.json). An odd first byte feeds the rest as the value as
//! is (exercising the framing checks); an even one wraps it in a valid header (Confluent id 2, or Glue with the
//! known version UUID, zlib-compressed when bit 2 is set; for Protobuf also the index of the fixture's message),
//! so the fuzzer spends its time in the body decoders (arrow-avro, prost-reflect). Each record must end up as
//! exactly one row or one reject, the good neighbours must always load, and nothing may panic.

use std::io::Write;
use std::sync::{Arc, OnceLock};

use floe_core::{
    KnownSchema, Pipeline, RecordDecoder, RegisteredSchema, Resolved, SchemaId, SchemaKind, SourcePartition,
    SourceRecord, TableLayout,
};

/// The encoding a target fuzzes.
#[derive(Clone, Copy)]
pub enum Format {
    Avro,
    Protobuf,
}

const UUID: [u8; 16] = *b"floe-fuzz-uuid!!";

struct Fixture {
    confluent: RecordDecoder,
    glue: RecordDecoder,
    resolved: Resolved,
    good: Vec<u8>,
    /// The good value's body after the Confluent header (and message indexes).
    body: Vec<u8>,
    /// What follows the header before the body: Protobuf's message index (Confluent, Glue).
    index: (&'static [u8], &'static [u8]),
}

fn fixture(format: Format) -> &'static Fixture {
    static AVRO: OnceLock<Fixture> = OnceLock::new();
    static PROTOBUF: OnceLock<Fixture> = OnceLock::new();
    let (cell, pipeline, json, kind, index): (_, &str, &str, _, (&[u8], &[u8])) = match format {
        Format::Avro => (
            &AVRO,
            include_str!("../../shared/floe-core/tests/fixtures/registry/orders.toml"),
            include_str!("../../shared/floe-core/tests/fixtures/registry/avro.json"),
            SchemaKind::Avro,
            (&[], &[]),
        ),
        // v2 declares Ship before Order: Order is Confluent's [1] and the first of Glue's sorted names.
        Format::Protobuf => (
            &PROTOBUF,
            include_str!("../../shared/floe-core/tests/fixtures/registry/orders_protobuf.toml"),
            include_str!("../../shared/floe-core/tests/fixtures/registry/protobuf.json"),
            SchemaKind::Protobuf,
            (&[2, 2], &[0]),
        ),
    };
    cell.get_or_init(|| {
        // floe contains panics of arrow-avro on untrusted bytes (`catch_unwind`, each a rejected value); libFuzzer's
        // hook would abort even on those. A panic that escapes floe still ends the run: libfuzzer-sys aborts when
        // the target unwinds.
        std::panic::set_hook(Box::new(|info| eprintln!("contained or fatal panic: {info}")));
        let f: serde_json::Value = serde_json::from_str(json).unwrap();
        let text = f["schemas"]["2"].as_str().expect("schema 2").to_string();
        let hex = f["values"][2].as_str().expect("a v2 value");
        let good: Vec<u8> = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
        let mut resolved = Resolved::new();
        for (local, id) in [SchemaId::Confluent(2), SchemaId::Glue(UUID)].into_iter().enumerate() {
            let schema = RegisteredSchema::new(kind, text.clone());
            resolved.insert(id, Some(Arc::new(KnownSchema { id, local: local as u32, schema })));
        }
        let decoder = |source: &str| {
            let text = pipeline.replace(r#"registry = { url = "http://registry.test:8081" }"#, source);
            let pipeline = Pipeline::parse(&text, "orders.toml").expect("pipeline parses");
            let layout = TableLayout::target(&pipeline, "file:///fuzz").expect("layout");
            RecordDecoder::new(&pipeline, &layout).expect("decoder")
        };
        Fixture {
            confluent: decoder(r#"registry = { url = "http://registry" }"#),
            glue: decoder("framing = \"glue\"\nregistry = { glue = \"r\" }"),
            resolved,
            body: good[5 + index.0.len()..].to_vec(),
            good,
            index,
        }
    })
}

fn record(offset: i64, value: Vec<u8>) -> SourceRecord {
    SourceRecord { offset, timestamp_ms: Some(1_763_719_200_000), key: None, value: Some(value), headers: vec![], problem: None }
}

pub fn run(format: Format, glue: bool, data: &[u8]) {
    let f = fixture(format);
    let Some((&mode, rest)) = data.split_first() else { return };
    let value = if mode & 1 == 1 {
        rest.to_vec()
    } else if glue {
        let zlib = mode & 4 != 0;
        let mut v = vec![3, if zlib { 5 } else { 0 }];
        v.extend_from_slice(&UUID);
        let rest = [f.index.1, rest].concat();
        if zlib {
            let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
            z.write_all(&rest).unwrap();
            v.extend(z.finish().unwrap());
        } else {
            v.extend_from_slice(&rest);
        }
        v
    } else {
        [&[0, 0, 0, 0, 2][..], f.index.0, rest].concat()
    };
    let (decoder, good) = if glue {
        let mut g = vec![3, 0];
        g.extend_from_slice(&UUID);
        g.extend_from_slice(f.index.1);
        g.extend_from_slice(&f.body);
        (&f.glue, g)
    } else {
        (&f.confluent, f.good.clone())
    };
    let source = SourcePartition { topic: "orders".into(), partition: 0 };
    let between = [record(0, good.clone()), record(1, value), record(2, good)];
    let decoded = decoder.decode_with(&source, &between, Some((&f.resolved, "fuzz"))).expect("rejects, not errors");
    let rows = decoded.batch.as_ref().map_or(0, |b| b.num_rows());
    assert_eq!(rows + decoded.rejects.len(), 3);
    assert!(decoded.rejects.iter().all(|(i, _)| *i == 1), "a good neighbour was rejected: {:?}", decoded.rejects);
}
