//! Writer schemas → columns, on the schemas confluent-kafka registered for the fixtures.

use super::*;
use crate::input::protobuf::Compiled;
use crate::input::registry_fixtures::fixture;

fn ty(s: &str) -> ColumnType {
    ColumnType::parse(s).unwrap()
}

#[test]
fn an_avro_record_maps_field_by_field() {
    let v2 = fixture("avro.json")["schemas"]["2"].as_str().unwrap().to_string();
    let (columns, skipped) = avro_columns(&v2).unwrap();
    let want = [
        ("id", "long"),
        ("item", "string"),
        ("qty", "int"),
        ("price", "decimal(10,2)"),
        ("status", "string"),
        ("placed_at", "timestamptz"),
        ("day", "date"),
        ("ref", "string"),
        ("tags", "list<string>"),
        ("attrs", "map<string, long>"),
        ("note", "string"),
        ("ship", "struct<city: string, zip: string>"),
    ];
    let want: Vec<(String, ColumnType)> = want.iter().map(|(n, t)| (n.to_string(), ty(t))).collect();
    assert_eq!(columns, want);
    assert!(skipped.is_empty(), "{skipped:?}");
}

#[test]
fn avro_named_references_unions_and_recursion() {
    let schema = r#"{"type": "record", "name": "Node", "namespace": "t", "fields": [
        {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["A"]}},
        {"name": "again", "type": ["null", "Kind"]},
        {"name": "full", "type": "t.Kind"},
        {"name": "either", "type": ["int", "string"]},
        {"name": "next", "type": ["null", "Node"]},
        {"name": "bad-name", "type": "int"},
        {"name": "at", "type": {"type": "long", "logicalType": "local-timestamp-micros"}},
        {"name": "digest", "type": {"type": "fixed", "name": "Md5", "size": 16}},
        {"name": "digest2", "type": "Md5"}
    ]}"#;
    let (columns, skipped) = avro_columns(schema).unwrap();
    let names: Vec<(&str, ColumnType)> = columns.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
    assert_eq!(
        names,
        vec![
            ("kind", ColumnType::String),
            ("again", ColumnType::String),
            ("full", ColumnType::String),
            ("at", ColumnType::Timestamp),
            ("digest", ColumnType::Binary),
            ("digest2", ColumnType::Binary),
        ]
    );
    assert_eq!(skipped.len(), 3, "{skipped:?}");
    assert!(skipped[0].starts_with("$.either: a union of several non-null types"), "{skipped:?}");
    assert!(skipped[1].starts_with("$.next: a recursive reference to t.Node"), "{skipped:?}");
    assert!(skipped[2].starts_with("$.bad-name: not a name"), "{skipped:?}");
    assert!(avro_columns("\"string\"").unwrap_err().contains("not a record"));
}

#[test]
fn a_protobuf_message_maps_field_by_field() {
    let v2 = fixture("protobuf.json")["texts"]["2"].as_str().unwrap().to_string();
    let compiled = Compiled::new(&v2).unwrap();
    let (order, _) = compiled.select(Framing::Confluent, &[2, 2]).unwrap();
    let (columns, skipped) = protobuf_columns(&order);
    let want = [
        ("id", "long"),
        ("item", "string"),
        ("qty", "int"),
        ("price", "string"),
        ("status", "string"),
        ("placed_at", "timestamptz"),
        ("ref", "string"),
        ("tags", "list<string>"),
        ("attrs", "map<string, long>"),
        ("note", "string"),
        ("ship", "struct<city: string, zip: string>"),
        ("card", "string"),
        ("voucher", "string"),
    ];
    let want: Vec<(String, ColumnType)> = want.iter().map(|(n, t)| (n.to_string(), ty(t))).collect();
    assert_eq!(columns, want);
    assert!(skipped.is_empty(), "{skipped:?}");

    let recursive = Compiled::new(
        "syntax = \"proto3\"; message Tree { string name = 1; repeated Tree children = 2; uint64 big = 3; }",
    )
    .unwrap();
    let (tree, _) = recursive.select(Framing::Confluent, &[0]).unwrap();
    let (columns, skipped) = protobuf_columns(&tree);
    assert_eq!(columns, vec![("name".into(), ColumnType::String), ("big".into(), ty("decimal(20,0)"))]);
    assert!(skipped[0].contains("$.children: a recursive reference to Tree"), "{skipped:?}");
}
