use std::sync::Arc;

use iceberg::spec::{ListType, NestedField, PrimitiveType, Schema, StructType, Type};

use super::*;

const PIPELINE: &str = r#"
name = "t"
[source]
topics = ["events"]
[table]
namespace = "ns"
name = "tbl"
evolve = "add-fields"
[[table.columns]]
name = "id"
type = "long"
required = true
[[table.columns]]
name = "user_id"
type = "long"
from = "$.user.id"
[[table.columns]]
name = "items"
type = "list<struct<sku: string>>"
[[table.columns]]
name = "attrs"
type = "map<string, struct<v: int>>"
[[table.columns]]
name = "k"
type = "string"
from = "@key"
"#;

fn columns() -> Vec<Column> {
    Pipeline::parse(PIPELINE, "p.toml").unwrap().table.columns
}

fn records(values: &[&str]) -> Vec<SourceRecord> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| SourceRecord {
            offset: i as i64,
            timestamp_ms: None,
            key: None,
            value: Some(v.as_bytes().to_vec()),
            headers: vec![],
            problem: None,
        })
        .collect()
}

fn ty(s: &str) -> ColumnType {
    ColumnType::parse(s).unwrap()
}

#[test]
fn new_fields_at_any_depth_get_inferred_types() {
    let found = discover(
        &columns(),
        &records(&[
            r#"{"id": 1, "user": {"id": 2, "name": "ignored: not a column"}, "price": 3, "tags": ["a"],
                "items": [{"sku": "A", "qty": 1, "dims": {"w": 1.5}}], "attrs": {"x": {"v": 1, "unit": "cm"}}}"#,
            r#"{"id": 2, "price": 4.25, "ok": true, "nothing": null, "empty": {}, "items": [{"qty": 2}],
                "ctx": {"ip": "1.2.3.4", "geo": {"lat": 1, "lon": 2.5}}}"#,
        ]),
        100,
    );
    assert_eq!(
        found.columns,
        [
            ("price".to_string(), ty("double")),
            ("tags".to_string(), ty("list<string>")),
            ("ctx".to_string(), ty("struct<geo: struct<lat: long, lon: double>, ip: string>")),
            ("ok".to_string(), ty("boolean")),
        ],
        "records in order, a record's fields by name; a number seen as integer and fraction is a double; \
         null and {{}} say nothing"
    );
    assert_eq!(
        found.extended,
        [
            (3, ty("map<string, struct<v: int, unit: string>>")),
            (2, ty("list<struct<sku: string, dims: struct<w: double>, qty: long>>")),
        ]
    );
    assert!(found.skipped.is_empty(), "{:?}", found.skipped);
    let grown = apply(&Pipeline::parse(PIPELINE, "p.toml").unwrap(), &found);
    assert_eq!(
        column_count(&grown.table.columns) - column_count(&columns()),
        4 + 4 + 3 + 1,
        "price, tags, ok, ctx with ip, geo, lat, lon; qty, dims, w; unit"
    );
}

#[test]
fn known_fields_names_that_cannot_be_columns_and_the_budget() {
    let known = discover(&columns(), &records(&[r#"{"id": 1, "user": {"id": 3}, "items": [{"sku": "A"}]}"#]), 100);
    assert!(known.is_empty(), "{known:?}");

    let found = discover(
        &columns(),
        &records(&[
            r#"{"id": 1, "Id": 2, "user-agent": "x", "9lives": 1, "K": "s", "k": "t", "a": 1, "b": {"c": 1, "d": 2}}"#,
        ]),
        2,
    );
    assert_eq!(found.columns, [("a".to_string(), ty("long"))], "b costs 3 and the budget has 1 left");
    let skipped = found.skipped.join("\n");
    assert!(skipped.contains("$.Id: differs from `id` only in letter case"), "{skipped}");
    assert!(skipped.contains("$.K: differs from `k` only in letter case"), "@key columns take names too: {skipped}");
    assert!(skipped.contains("$.k: `k` is a column that reads another source"), "{skipped}");
    assert!(skipped.contains("$.user-agent: not a column name"), "{skipped}");
    assert!(skipped.contains("$.9lives: not a column name"), "{skipped}");
    assert!(skipped.contains("$.b: over table.max_new_columns"), "{skipped}");
}

#[test]
fn conflicting_values_keep_the_first_type_and_non_objects_are_left_to_the_decoder() {
    let found =
        discover(&columns(), &records(&[r#"{"x": "s"}"#, r#"{"x": 5}"#, "not json", "[1]", r#"{"id": "1"}"#]), 9);
    assert_eq!(found.columns, [("x".to_string(), ty("string"))]);
    assert!(found.extended.is_empty());
}

#[test]
fn the_table_columns_a_file_does_not_declare_are_read_back_by_name() {
    let long = |id, name: &str| Arc::new(NestedField::optional(id, name, Type::Primitive(PrimitiveType::Long)));
    let declared = schema_of(&columns());
    // What another container added: a top-level column, a field in a list's struct, and a column named like a
    // path the file reads (`user`), which is left alone.
    let mut fields: Vec<_> = declared.as_struct().fields().to_vec();
    fields.push(long(100, "extra"));
    fields.push(long(101, "user"));
    let Type::List(list) = fields[2].field_type.as_ref().clone() else { panic!("items is a list") };
    let Type::Struct(inner) = list.element_field.field_type.as_ref().clone() else { panic!("of structs") };
    let mut inner = inner.fields().to_vec();
    inner.push(long(102, "qty"));
    let element = NestedField::list_element(list.element_field.id, Type::Struct(StructType::new(inner)), false);
    fields[2] = Arc::new(NestedField::optional(fields[2].id, "items", Type::List(ListType::new(Arc::new(element)))));
    let table = Schema::builder().with_fields(fields).build().unwrap();

    let found = from_table(&columns(), &table, &[]);
    assert_eq!(found.columns, [("extra".to_string(), ty("long"))]);
    assert_eq!(found.extended, [(2, ty("list<struct<sku: string, qty: long>>"))]);
    let applied = apply(&Pipeline::parse(PIPELINE, "p.toml").unwrap(), &found);
    let extra = applied.table.columns.last().unwrap();
    assert_eq!((extra.name.as_str(), extra.required), ("extra", false));
    assert_eq!(extra.source, ColumnSource::Value { path: vec!["extra".into()], format: TimestampFormat::Rfc3339 });
    assert!(from_table(&applied.table.columns, &table, &[]).is_empty(), "applied, the table has nothing more");
    let claimed = from_table(&columns(), &table, &["extra".to_string()]);
    assert!(claimed.columns.is_empty(), "a column a declared one is renamed to is not read twice: {claimed:?}");
}

/// The Iceberg schema the columns create (ids as the catalog assigns them).
fn schema_of(columns: &[Column]) -> Schema {
    let mut ids = 0;
    let fields: Vec<_> =
        columns.iter().map(|c| crate::pipeline::field(&mut ids, &c.name, &c.ty, c.required, None)).collect();
    Schema::builder().with_fields(fields).build().unwrap()
}
