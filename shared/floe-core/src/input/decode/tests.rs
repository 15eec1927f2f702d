use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, TimestampMicrosecondType};

use super::*;

const PIPELINE: &str = r#"
name = "t"
[source]
topics = ["events"]
[table]
namespace = "ns"
name = "tbl"
[[table.columns]]
name = "id"
type = "long"
required = true
[[table.columns]]
name = "user_id"
type = "long"
required = true
from = "$.user.id"
[[table.columns]]
name = "country"
type = "string"
from = "$.user.country"
[[table.columns]]
name = "items"
type = "list<struct<sku: string not null, qty: int>>"
[[table.columns]]
name = "price"
type = "decimal(10,2)"
[[table.columns]]
name = "attrs"
type = "map<string, string>"
[[table.columns]]
name = "ts"
type = "timestamptz"
format = "epoch_millis"
[[table.columns]]
name = "key"
type = "string"
from = "@key"
[[table.columns]]
name = "trace"
type = "string"
from = "@header.trace"
[[table.columns]]
name = "raw_trace"
type = "binary"
from = "@header.trace"
[[table.columns]]
name = "off"
type = "long"
required = true
from = "@offset"
[[table.columns]]
name = "part"
type = "int"
from = "@partition"
"#;

fn decoder() -> RecordDecoder {
    let p = Pipeline::parse(PIPELINE, "p.toml").unwrap();
    let layout = TableLayout::target(&p, "file:///wh").unwrap();
    RecordDecoder::new(&p, &layout).unwrap()
}

fn rec(offset: i64, value: &str) -> SourceRecord {
    SourceRecord {
        offset,
        timestamp_ms: Some(1_700_000_000_000 + offset),
        key: Some(format!("k{offset}").into_bytes()),
        value: Some(value.as_bytes().to_vec()),
        headers: vec![("trace".into(), b"t-1".to_vec())],
        problem: None,
    }
}

fn source() -> SourcePartition {
    SourcePartition { topic: "events".into(), partition: 3 }
}

const GOOD: &str = r#"{"id": 1, "user": {"id": 10, "country": "DE"}, "items": [{"sku": "A", "qty": 2}],
  "price": "12.34", "attrs": {"a": "b"}, "ts": 1700000000123, "unknown": {"ignored": true}}"#;

#[test]
fn decodes_nested_values_and_metadata() {
    let d = decoder();
    let records = vec![rec(5, GOOD), rec(6, r#"{"id": 2, "user": {"id": 20}}"#)];
    let out = d.decode(&source(), &records).unwrap();
    assert!(out.rejects.is_empty(), "{:?}", out.rejects);
    let b = out.batch.unwrap();
    assert_eq!(b.num_rows(), 2);
    assert_eq!(b.column_by_name("user_id").unwrap().as_primitive::<Int64Type>().values(), &[10, 20]);
    let country = b.column_by_name("country").unwrap().as_string::<i32>();
    assert_eq!(country.value(0), "DE");
    assert!(country.is_null(1));
    let items = b.column_by_name("items").unwrap().as_list::<i32>();
    assert_eq!(items.value(0).as_struct().column(0).as_string::<i32>().value(0), "A");
    assert!(items.is_null(1));
    let ts = b.column_by_name("ts").unwrap().as_primitive::<TimestampMicrosecondType>();
    assert_eq!(ts.value(0), 1_700_000_000_123_000);
    assert_eq!(b.column_by_name("key").unwrap().as_string::<i32>().value(1), "k6");
    assert_eq!(b.column_by_name("trace").unwrap().as_string::<i32>().value(0), "t-1");
    assert_eq!(b.column_by_name("off").unwrap().as_primitive::<Int64Type>().values(), &[5, 6]);
    assert_eq!(b.column_by_name("part").unwrap().as_primitive::<arrow_array::types::Int32Type>().value(0), 3);
    assert_eq!(b.schema(), d.target);
}

#[test]
fn every_bad_record_is_rejected_with_a_reason_and_good_ones_survive() {
    let d = decoder();
    let mut bad_key = rec(9, GOOD);
    bad_key.key = Some(vec![0xff, 0xfe]);
    let mut tombstone = rec(10, GOOD);
    tombstone.value = None;
    let records = vec![
        rec(0, GOOD),
        rec(1, r#"{"id": 1, "user": {"id": "#), // truncated: must not swallow the next record
        rec(2, GOOD),
        rec(3, r#"{"id": 3, "user": {"id": 1}} {"id": 4, "user": {"id": 1}}"#), // two values
        rec(4, ""),
        rec(5, "[1, 2]"),
        rec(6, r#"{"id": "abc", "user": {"id": 1}}"#), // type error: found by bisecting
        rec(7, r#"{"id": 7}"#),                        // missing required nested field
        rec(8, r#"{"id": 8, "user": {"id": 1}, "items": [{"qty": 1}]}"#), // required struct field in list
        bad_key,
        tombstone,
        rec(11, GOOD),
    ];
    let out = d.decode(&source(), &records).unwrap();
    let rejected: Vec<(i64, &str, &str)> =
        out.rejects.iter().map(|(i, p)| (records[*i].offset, p.kind, p.reason.as_str())).collect();
    let offsets: Vec<i64> = rejected.iter().map(|r| r.0).collect();
    assert_eq!(offsets, [1, 3, 4, 5, 6, 7, 8, 9, 10], "{rejected:#?}");
    let reason = |o: i64| rejected.iter().find(|r| r.0 == o).unwrap();
    assert_eq!(reason(1).1, "json");
    assert!(reason(1).2.contains("invalid JSON"), "{:?}", reason(1));
    assert!(reason(3).2.contains("trailing characters"), "{:?}", reason(3));
    assert_eq!(reason(4).2, "value is empty");
    assert_eq!(reason(5).2, "value is a JSON array, expected an object");
    assert!(reason(6).2.starts_with("field `$.id`:"), "{:?}", reason(6));
    assert_eq!(reason(7).2, "required field `$.user.id` is missing or null");
    assert!(reason(8).2.starts_with("field `$.items`:"), "{:?}", reason(8));
    assert!(reason(9).2.contains("record key for column `key` is not valid UTF-8"), "{:?}", reason(9));
    assert_eq!(reason(10).1, "null_value");
    let b = out.batch.unwrap();
    assert_eq!(b.column_by_name("off").unwrap().as_primitive::<Int64Type>().values(), &[0, 2, 11]);
}

#[test]
fn epoch_overflow_is_rejected() {
    let d = decoder();
    let records = vec![rec(0, r#"{"id": 1, "user": {"id": 1}, "ts": 9223372036854775807}"#), rec(1, GOOD)];
    let out = d.decode(&source(), &records).unwrap();
    assert_eq!(out.rejects.len(), 1);
    assert!(out.rejects[0].1.reason.contains("out of the timestamp range"));
    assert_eq!(out.batch.unwrap().num_rows(), 1);
}

/// Regression for the `record` fuzz target's crashes (crash-ae13…, crash-5d64…, crash-7e63…): arrow-cast's
/// decimal parser overflowed on a long exponent (a panic with overflow checks, a wrong value without).
#[test]
fn decimals_the_parser_would_overflow_on_are_rejected() {
    let d = decoder();
    let long_digits = format!(r#"{{"id": 4, "user": {{"id": 1}}, "price": {}}}"#, "9".repeat(300));
    let records = vec![
        rec(0, GOOD),
        rec(1, r#"{"id": 2, "user": {"id": 1}, "price": 116920954900000e000099000002}"#),
        rec(2, r#"{"id": 3, "user": {"id": 1}, "price": "1e65537"}"#),
        rec(3, &long_digits),
        rec(4, r#"{"id": 5, "user": {"id": 1}, "price": 1.5e3}"#),
        rec(5, r#"{"id": 6, "user": {"id": 1}, "price": 11954900000e40-002}"#),
    ];
    let out = d.decode(&source(), &records).unwrap();
    let rejected: Vec<usize> = out.rejects.iter().map(|(i, _)| *i).collect();
    assert_eq!(rejected, [1, 2, 3, 5]);
    for (_, p) in &out.rejects {
        assert_eq!(p.kind, "schema");
        assert!(p.reason.starts_with("field `price`: number `") && p.reason.contains("out of range"), "{}", p.reason);
    }
    let batch = out.batch.unwrap();
    let price = batch.column_by_name("price").unwrap().as_primitive::<arrow_array::types::Decimal128Type>();
    assert_eq!((price.value(0), price.value(1)), (1234, 150_000));
}

#[test]
fn all_bad_gives_no_batch() {
    let d = decoder();
    let out = d.decode(&source(), &[rec(0, "nope"), rec(1, "{")]).unwrap();
    assert!(out.batch.is_none());
    assert_eq!(out.rejects.len(), 2);
}

#[test]
fn the_raw_value_is_kept_byte_for_byte_beside_the_parsed_columns() {
    let text = PIPELINE.to_string()
        + "[[table.columns]]\nname = \"raw\"\ntype = \"string\"\nfrom = \"@value\"\n"
        + "[[table.columns]]\nname = \"raw_bytes\"\ntype = \"binary\"\nfrom = \"@value\"\n";
    let p = Pipeline::parse(&text, "p.toml").unwrap();
    let d = RecordDecoder::new(&p, &TableLayout::target(&p, "file:///wh").unwrap()).unwrap();
    let spaced = "{ \"id\" : 2,\n  \"user\": {\"id\": 20}, \"extra\": [1, 2] }";
    let mut not_utf8 = rec(3, "");
    not_utf8.value = Some(b"{\"id\": 3, \"user\": {\"id\": 1}, \"x\": \"\xff\"}".to_vec());
    let records = vec![rec(0, GOOD), rec(1, spaced), rec(2, r#"{"id": "x", "user": {"id": 1}}"#), not_utf8];
    let out = d.decode(&source(), &records).unwrap();
    let kinds: Vec<(usize, &str)> = out.rejects.iter().map(|(i, p)| (*i, p.kind)).collect();
    // A value that is not UTF-8 is not JSON either: the decoder rejects it before a string column could.
    assert_eq!(kinds, [(2, "schema"), (3, "json")], "{:?}", out.rejects);
    let b = out.batch.unwrap();
    let raw = b.column_by_name("raw").unwrap().as_string::<i32>();
    assert_eq!((raw.value(0), raw.value(1)), (GOOD, spaced), "the value as received, whitespace and fields kept");
    let bytes = b.column_by_name("raw_bytes").unwrap().as_binary::<i64>();
    assert_eq!(bytes.value(1), spaced.as_bytes());
    assert_eq!(b.column_by_name("id").unwrap().as_primitive::<Int64Type>().values(), &[1, 2]);

    let bad_type = format!("{text}[[table.columns]]\nname = \"n\"\ntype = \"long\"\nfrom = \"@value\"\n");
    let err = Pipeline::parse(&bad_type, "p.toml").unwrap_err().to_string();
    assert!(err.contains("must have type string or binary"), "{err}");
}

/// JSON Schema values as confluent-kafka's JSONSerializer frames them: magic byte 0, the schema id, JSON text.
#[test]
fn json_schema_values_are_unframed_then_decoded_as_json() {
    use crate::input::registry::{KnownSchema, RegisteredSchema, SchemaId, SchemaKind};
    let text = PIPELINE.replace(
        "topics = [\"events\"]",
        "topics = [\"events\"]\nformat = \"json-schema\"\nregistry = { url = \"http://sr:8081\" }",
    );
    let p = Pipeline::parse(&text, "p.toml").unwrap();
    let d = RecordDecoder::new(&p, &TableLayout::target(&p, "file:///wh").unwrap()).unwrap();
    let mut resolved = Resolved::new();
    for (id, kind) in [(3, SchemaKind::JsonSchema), (4, SchemaKind::Avro)] {
        let schema = RegisteredSchema::new(kind, "{}".into());
        let id = SchemaId::Confluent(id);
        resolved.insert(id, Some(Arc::new(KnownSchema { id, local: 0, schema })));
    }
    let framed = |id: u8, json: &str| [&[0, 0, 0, 0, id][..], json.as_bytes()].concat();
    let good = r#"{"id": 1, "user": {"id": 10}}"#;
    let mut records =
        vec![rec(0, good), rec(1, good), rec(2, good), rec(3, good), rec(4, "{\"id\": \"x\", \"user\": {\"id\": 1}}")];
    records[0].value = Some(framed(3, good));
    records[2].value = Some(framed(4, good));
    records[3].value = Some(framed(9, good));
    records[4].value = Some(framed(3, "{\"id\": \"x\", \"user\": {\"id\": 1}}"));
    let out = d.decode_with(&source(), &records, Some((&resolved, "http://sr:8081"))).unwrap();
    let kinds: Vec<(usize, &str)> = out.rejects.iter().map(|(i, p)| (*i, p.kind)).collect();
    assert_eq!(kinds, vec![(1, "framing"), (2, "unknown_schema"), (3, "unknown_schema"), (4, "schema")]);
    assert!(
        out.rejects[1].1.reason.contains("is registered as Avro; this pipeline reads JSON Schema"),
        "{:?}",
        out.rejects
    );
    let b = out.batch.unwrap();
    assert_eq!(b.column_by_name("id").unwrap().as_primitive::<Int64Type>().values(), &[1]);
    assert_eq!(b.column_by_name("off").unwrap().as_primitive::<Int64Type>().values(), &[0]);
}

/// With the mapping's own schema-registry integration and `EventRecordFormat = JSON`, records arrive as JSON with
/// `keySchemaMetadata` / `valueSchemaMetadata` beside them (the shape AWS documents and Powertools parses): a plain
/// `format = "json"` pipeline loads them.
#[test]
fn records_the_mapping_decoded_through_its_registry_load_as_json() {
    let value = base64::engine::Engine::encode(&base64::engine::general_purpose::STANDARD, GOOD);
    let event = format!(
        r#"{{"eventSource":"aws:kafka","records":{{"events-3":[{{"topic":"events","partition":3,"offset":8,
        "timestamp":1700000000000,"timestampType":"CREATE_TIME","key":"azg=","value":"{value}",
        "headers":[{{"trace":[116,45,49]}}],
        "keySchemaMetadata":{{"dataFormat":"JSON","schemaId":"key-schema-001"}},
        "valueSchemaMetadata":{{"dataFormat":"AVRO","schemaId":"1234"}}}}]}}}}"#
    );
    let event: crate::input::event::MskEvent = serde_json::from_str(&event).unwrap();
    let groups = crate::input::event::group_records(&event, &["events".to_string()]).unwrap();
    let out = decoder().decode(&groups[0].source, &groups[0].records).unwrap();
    assert!(out.rejects.is_empty(), "{:?}", out.rejects);
    let b = out.batch.unwrap();
    assert_eq!(b.column_by_name("user_id").unwrap().as_primitive::<Int64Type>().values(), &[10]);
    assert_eq!(b.column_by_name("key").unwrap().as_string::<i32>().value(0), "k8");
}

/// `source.key_format = "json"` with `@key.<path>` columns: keys are decoded like values; a key that does not
/// decode is a `key` dead letter; a record without a key has null key columns (rejected when required).
#[test]
fn key_paths_read_the_decoded_key() {
    let text = MINIMAL_KEYED;
    let p = Pipeline::parse(text, "p.toml").unwrap();
    let d = RecordDecoder::new(&p, &TableLayout::target(&p, "file:///wh").unwrap()).unwrap();
    let with_key = |offset: i64, key: Option<&str>| SourceRecord {
        key: key.map(|k| k.as_bytes().to_vec()),
        ..rec(offset, r#"{"id": 1, "user": {"id": 10}}"#)
    };
    let records = vec![
        with_key(0, Some(r#"{"tenant": "acme", "shard": 7}"#)),
        with_key(1, Some("not json")),
        with_key(2, None),
        with_key(3, Some(r#"{"tenant": "beta"}"#)),
        with_key(4, Some(r#"{"shard": 9}"#)),
    ];
    let out = d.decode(&source(), &records).unwrap();
    let kinds: Vec<(usize, &str)> = out.rejects.iter().map(|(i, p)| (*i, p.kind)).collect();
    assert_eq!(kinds, vec![(1, "key"), (2, "schema"), (4, "schema")], "{:?}", out.rejects);
    assert!(out.rejects[0].1.reason.starts_with("key (json): invalid JSON"), "{}", out.rejects[0].1.reason);
    assert!(out.rejects[1].1.reason.contains("required column `tenant` is null"), "{}", out.rejects[1].1.reason);
    let b = out.batch.unwrap();
    let tenant = b.column_by_name("tenant").unwrap().as_string::<i32>();
    assert_eq!((tenant.value(0), tenant.value(1)), ("acme", "beta"));
    let shard = b.column_by_name("shard").unwrap().as_primitive::<Int64Type>();
    assert_eq!(shard.iter().collect::<Vec<_>>(), vec![Some(7), None]);
    assert_eq!(b.column_by_name("off").unwrap().as_primitive::<Int64Type>().values(), &[0, 3]);
}

const MINIMAL_KEYED: &str = r#"
name = "t"
[source]
topics = ["events"]
key_format = "json"
[table]
namespace = "ns"
name = "tbl"
columns = [
  { name = "id", type = "long", required = true },
  { name = "tenant", type = "string", required = true, from = "@key.tenant" },
  { name = "shard", type = "long", from = "@key.shard" },
  { name = "off", type = "long", from = "@offset" },
]
"#;
