use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type};

use super::*;
use crate::pipeline::Pipeline;
use crate::table::layout::TableLayout;

const DEBEZIUM: &str = r#"
name = "cdc"
[source]
topics = ["dbserver1.inventory.customers"]
changes = "debezium"
[table]
namespace = "ns"
name = "customers"
primary_key = ["id"]
order_by = "lsn"
[[table.columns]]
name = "id"
type = "int"
required = true
[[table.columns]]
name = "email"
type = "string"
required = true
[[table.columns]]
name = "lsn"
type = "long"
from = "@change.source.lsn"
"#;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/debezium/{name}",
        std::env::var("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn decoder(text: &str) -> ChangeDecoder {
    let p = Pipeline::parse(text, "p.toml").unwrap();
    let layout = TableLayout::target(&p, "file:///wh").unwrap();
    ChangeDecoder::new(p.changes.as_ref().unwrap(), &p.table.columns, layout.input.clone()).unwrap()
}

fn record(offset: i64, key: Option<&[u8]>, value: Option<&[u8]>) -> SourceRecord {
    SourceRecord {
        offset,
        timestamp_ms: Some(1_000 + offset),
        key: key.map(<[u8]>::to_vec),
        value: value.map(<[u8]>::to_vec),
        headers: vec![],
        problem: None,
    }
}

fn source() -> SourcePartition {
    SourcePartition { topic: "t".into(), partition: 0 }
}

/// (key, op, offset) of each key-batch row.
fn keys(d: &DecodedChanges) -> Vec<(i64, i32, i64)> {
    let Some(k) = &d.keys else { return vec![] };
    let id = arrow_cast::cast(k.column(0), &DataType::Int64).unwrap();
    let ops = k.column_by_name(key_columns::OP).unwrap().as_primitive::<Int32Type>().clone();
    let offsets = k.column_by_name(key_columns::OFFSET).unwrap().as_primitive::<Int64Type>().clone();
    (0..k.num_rows()).map(|r| (id.as_primitive::<Int64Type>().value(r), ops.value(r), offsets.value(r))).collect()
}

#[test]
fn debezium_fixtures_create_read_update_delete_and_tombstone() {
    let d = decoder(DEBEZIUM);
    let records = vec![
        record(0, Some(&fixture("create.key.json")), Some(&fixture("create.json"))),
        record(1, Some(&fixture("snapshot.key.json")), Some(&fixture("snapshot.json"))),
        record(2, Some(&fixture("update.key.json")), Some(&fixture("update.json"))),
        record(3, Some(&fixture("delete.key.json")), Some(&fixture("delete.json"))),
        record(4, Some(&fixture("delete.key.json")), None),
        record(5, Some(br#"{"id":1004}"#), Some(&fixture("delete_key_only.json"))),
    ];
    let out = d.decode(&source(), &records).unwrap();
    assert!(out.rejects.is_empty(), "{:?}", out.rejects);
    assert_eq!(out.skipped, 1, "the tombstone after the delete changes nothing");
    // 1005 created then deleted, 1001 read then updated: one entry per key, the last change.
    assert_eq!(keys(&out), vec![(1001, OP_UPSERT, 2), (1005, OP_DELETE, 3), (1004, OP_DELETE, 5)]);
    assert_eq!((out.collapsed, out.deletes), (2, 2));
    let rows = out.upserts.unwrap();
    assert_eq!(rows.num_rows(), 1);
    assert_eq!(rows.column(1).as_string::<i32>().value(0), "noreply@acme.com");
    assert_eq!(rows.column(2).as_primitive::<Int64Type>().value(0), 24023376, "lsn from the envelope's source");
    assert_eq!(out.upsert_records, vec![2]);
    let lsn = out.keys.as_ref().unwrap().column_by_name("lsn").unwrap().as_primitive::<Int64Type>().clone();
    assert_eq!(lsn.values().to_vec(), vec![24023376, 24023624, 24023872]);
}

#[test]
fn bad_debezium_changes_are_rejected_with_their_reason() {
    let d = decoder(DEBEZIUM);
    let create = String::from_utf8(fixture("snapshot.json")).unwrap();
    let records = vec![
        record(0, None, Some(create.replace(r#""op":"r""#, r#""op":"t""#).as_bytes())),
        record(1, None, Some(create.replace(r#""after":{"id""#, r#""after":null,"x":{"id""#).as_bytes())),
        record(2, None, Some(create.replace(r#""op":"r","#, "").as_bytes())),
        record(3, None, Some(create.replace(r#""id":1001,"#, "").as_bytes())),
        record(4, None, Some(create.replace(r#""email":"sally.thomas@acme.com""#, r#""email":null"#).as_bytes())),
        record(5, None, Some(b"{not json")),
        record(6, None, Some(br#"{"before":null,"after":null,"op":"d"}"#)),
        record(7, None, Some(create.as_bytes())),
    ];
    let out = d.decode(&source(), &records).unwrap();
    let reasons: Vec<(usize, &str, &str)> = out.rejects.iter().map(|(i, p)| (*i, p.kind, p.reason.as_str())).collect();
    assert_eq!(reasons.len(), 7, "{reasons:?}");
    assert!(reasons[0].2.contains("`op` = `t` is not a row change"), "{reasons:?}");
    assert!(reasons[1].2.contains("without an `after` row"), "{reasons:?}");
    assert!(reasons[2].2.contains("has no `op`"), "{reasons:?}");
    assert_eq!((reasons[3].1, reasons[3].2), ("change", "primary-key column `id` is missing or null"));
    assert_eq!((reasons[4].1, reasons[4].2), ("schema", "required column `email` is null"));
    assert_eq!(reasons[5].1, "json");
    assert!(reasons[6].2.contains("tombstone without a key"), "{reasons:?}");
    assert_eq!(keys(&out), vec![(1001, OP_UPSERT, 7)]);
}

const UPSERT: &str = r#"
name = "u"
[source]
topics = ["t"]
changes = "upsert"
[table]
namespace = "ns"
name = "t"
primary_key = ["id"]
[[table.columns]]
name = "id"
type = "long"
required = true
[[table.columns]]
name = "v"
type = "string"
"#;

#[test]
fn upsert_tombstones_delete_by_the_kafka_key_in_its_forms() {
    let d = decoder(UPSERT);
    let records = vec![
        record(0, Some(b"1"), Some(br#"{"id":1,"v":"a"}"#)),
        record(1, Some(b"2"), Some(br#"{"id":2,"v":"b"}"#)),
        record(2, Some(b"1"), None),           // bare JSON scalar
        record(3, Some(br#"{"id":2}"#), None), // object
        record(4, Some(br#"{"schema":{"type":"struct"},"payload":{"id":3}}"#), None), // schema wrapper
        record(5, Some(b"2"), Some(br#"{"id":2,"v":"c"}"#)), // re-insert after a delete
        record(6, None, None),
        record(7, Some(b"x"), None),
    ];
    let out = d.decode(&source(), &records).unwrap();
    assert_eq!(keys(&out), vec![(1, OP_DELETE, 2), (3, OP_DELETE, 4), (2, OP_UPSERT, 5)]);
    assert_eq!(out.upsert_records, vec![5]);
    let reasons: Vec<&str> = out.rejects.iter().map(|(_, p)| p.reason.as_str()).collect();
    assert_eq!(out.rejects.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![6, 7], "{reasons:?}");
    assert!(reasons[0].contains("tombstone without a key"));
    assert!(reasons[1].contains("`$.id`") || reasons[1].contains("id"), "{reasons:?}");
}

#[test]
fn op_field_changes_and_unknown_operations() {
    let text = UPSERT.replace(
        r#"changes = "upsert""#,
        r#"changes = { op_field = "$.meta.op", delete = ["D"], upsert = ["I", "U"] }"#,
    );
    let d = decoder(&text);
    let records = vec![
        record(0, None, Some(br#"{"id":1,"v":"a","meta":{"op":"I"}}"#)),
        record(1, None, Some(br#"{"id":1,"meta":{"op":"D"}}"#)),
        record(2, None, Some(br#"{"id":2,"v":"b","meta":{"op":"X"}}"#)),
        record(3, None, Some(br#"{"id":3,"v":"b"}"#)),
        record(4, None, Some(br#"{"id":4,"v":"d","meta":{"op":"U"}}"#)),
        record(5, None, None),
    ];
    let out = d.decode(&source(), &records).unwrap();
    assert_eq!(keys(&out), vec![(1, OP_DELETE, 1), (4, OP_UPSERT, 4)]);
    let reasons: Vec<(usize, &str)> = out.rejects.iter().map(|(i, p)| (*i, p.reason.as_str())).collect();
    assert_eq!(reasons[0], (2, "unknown operation `X` in `$.meta.op`"));
    assert_eq!(reasons[1], (3, "operation field `$.meta.op` is missing or null"));
    assert!(reasons[2].1.contains("tombstone"), "{reasons:?}");
    let rows = out.upserts.unwrap();
    assert_eq!(rows.num_columns(), 2, "the op field is not a column of the rows");
}

#[test]
fn many_changes_of_few_keys_collapse_to_the_last_in_offset_order() {
    let d = decoder(UPSERT);
    let records: Vec<SourceRecord> = (0..1000)
        .map(|i| {
            let value = format!(r#"{{"id":{},"v":"{i}"}}"#, i % 7);
            record(i, None, if i % 11 == 0 { None } else { Some(value.as_bytes()) })
        })
        .map(|mut r| {
            if r.value.is_none() {
                r.key = Some(format!("{}", r.offset % 7).into_bytes());
            }
            r
        })
        .collect();
    let out = d.decode(&source(), &records).unwrap();
    let mut expected: std::collections::BTreeMap<i64, (i32, i64)> = Default::default();
    for i in 0..1000i64 {
        expected.insert(i % 7, (if i % 11 == 0 { OP_DELETE } else { OP_UPSERT }, i));
    }
    let mut got = keys(&out);
    got.sort();
    assert_eq!(got, expected.into_iter().map(|(k, (op, o))| (k, op, o)).collect::<Vec<_>>());
    assert_eq!(out.collapsed, 1000 - 7);
}
