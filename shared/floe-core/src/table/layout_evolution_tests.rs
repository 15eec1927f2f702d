//! Evolution plans ([`crate::table::evolve`]) between tables created from one pipeline file and an edited
//! pipeline file, and layouts bound to the evolved tables.

use std::collections::HashMap;

use iceberg::spec::{Operation, PrimitiveType, Snapshot, Summary, TableMetadata, TableMetadataBuilder, Type};

use crate::error::Result;
use crate::pipeline::Pipeline;
use crate::table::evolve::{Evolution, plan};
use crate::table::layout::TableLayout;

const BASE: &str = r#"
name = "p"
[source]
topics = ["t"]
[table]
namespace = "ns"
name = "events"
[[table.columns]]
name = "id"
type = "long"
required = true
[[table.columns]]
name = "qty"
type = "int"
[[table.columns]]
name = "price"
type = "decimal(10,2)"
[[table.columns]]
name = "user"
type = "struct<name: string, tags: list<string>>"
[[table.columns]]
name = "ts"
type = "timestamptz"
required = true
doc = "event time"
[[table.partition]]
column = "ts"
transform = "day"
"#;

fn layout(text: &str) -> TableLayout {
    TableLayout::target(&Pipeline::parse(text, "p.toml").unwrap(), "file:///w").unwrap()
}

/// The table a pipeline creates; with rows if `rows`.
fn table(text: &str, rows: bool) -> TableMetadata {
    let metadata =
        TableMetadataBuilder::from_table_creation(layout(text).creation()).unwrap().build().unwrap().metadata;
    if !rows {
        return metadata;
    }
    let summary = Summary {
        operation: Operation::Append,
        additional_properties: HashMap::from([("total-records".to_string(), "10".to_string())]),
    };
    let snapshot = Snapshot::builder()
        .with_snapshot_id(1)
        .with_sequence_number(1)
        .with_timestamp_ms(metadata.last_updated_ms() + 1)
        .with_manifest_list("file:///w/ns/events/metadata/snap-1.avro")
        .with_summary(summary)
        .with_schema_id(metadata.current_schema_id())
        .build();
    let main = iceberg::spec::SnapshotReference::new(1, iceberg::spec::SnapshotRetention::branch(None, None, None));
    metadata.into_builder(None).add_snapshot(snapshot).unwrap().set_ref("main", main).unwrap().build().unwrap().metadata
}

fn plan_for(table: &TableMetadata, text: &str) -> Result<Evolution> {
    let l = layout(text);
    plan("ns.events", table, l.desired())
}

fn problems(table: &TableMetadata, text: &str) -> String {
    plan_for(table, text).unwrap_err().to_string()
}

#[test]
fn the_same_pipeline_needs_nothing() {
    let t = table(BASE, true);
    let e = plan_for(&t, BASE).unwrap();
    assert!(e.is_empty() && e.changes.is_empty(), "{e:?}");
}

#[test]
fn allowed_changes_keep_field_ids_and_add_after_the_last_one() {
    let t = table(BASE, true);
    let last = t.last_column_id();
    let edited = BASE
        .replace("type = \"int\"", "type = \"long\"")
        .replace("decimal(10,2)", "decimal(12,2)")
        .replace("struct<name: string, tags: list<string>>", "struct<name: string, tags: list<string>, age: int>")
        .replace("name = \"qty\"", "name = \"quantity\"\nrenamed_from = \"qty\"")
        .replace("doc = \"event time\"", "doc = \"when it happened\"")
        + "[[table.columns]]\nname = \"note\"\ntype = \"list<struct<k: string not null, v: double>>\"\n";
    let e = plan_for(&t, &edited).unwrap();
    let schema = e.schema.expect("a new schema");
    let before = t.current_schema();
    let quantity = schema.field_by_name("quantity").unwrap();
    assert_eq!(quantity.id, before.field_by_name("qty").unwrap().id, "a rename keeps the id");
    assert_eq!(*quantity.field_type, Type::Primitive(PrimitiveType::Long));
    assert!(schema.field_by_name("qty").is_none());
    let price = schema.field_by_name("price").unwrap();
    assert_eq!(*price.field_type, Type::Primitive(PrimitiveType::Decimal { precision: 12, scale: 2 }));
    assert_eq!(schema.field_by_name("ts").unwrap().doc.as_deref(), Some("when it happened"));
    // The nested addition and the new column take the ids after the table's last one, depth first.
    assert_eq!(schema.field_by_name("user.age").unwrap().id, last + 1);
    let note = schema.field_by_name("note").unwrap();
    assert_eq!(note.id, last + 2);
    assert!(!note.required);
    assert_eq!(schema.field_by_name("note.element.k").unwrap().id, last + 4);
    assert_eq!(schema.highest_field_id(), last + 5);
    // Existing columns keep their order; new ones come last.
    let names: Vec<&str> = schema.as_struct().fields().iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["id", "quantity", "price", "user", "ts", "note"]);
    let changes = e.changes.join("\n");
    for expected in [
        "column `qty` renamed to `quantity`",
        "column `quantity`: int → long",
        "column `price`: decimal(10,2) → decimal(12,2)",
        "column `user.age` added: int",
        "column `ts`: doc changed",
        "column `note` added: list<struct<k: string not null, v: double>>",
    ] {
        assert!(changes.contains(expected), "{expected}: {changes}");
    }
}

#[test]
fn a_required_column_may_become_optional_but_not_the_other_way() {
    let t = table(BASE, true);
    let optional =
        BASE.replacen("required = true\n[[table.columns]]\nname = \"qty\"", "[[table.columns]]\nname = \"qty\"", 1);
    let e = plan_for(&t, &optional).unwrap();
    assert!(!e.schema.unwrap().field_by_name("id").unwrap().required);
    // The pipeline declaring `not null` on an optional column changes nothing in the table (ingest checks it).
    let stricter = BASE.replace("name = \"qty\"\ntype = \"int\"", "name = \"qty\"\ntype = \"int\"\nrequired = true");
    assert!(plan_for(&t, &stricter).unwrap().is_empty());
}

#[test]
fn an_older_or_narrower_pipeline_is_compatible_as_it_is() {
    // The table was widened and gained a column; a pipeline file from before (a rolling deployment) still writes.
    let wide =
        BASE.replace("type = \"int\"", "type = \"long\"") + "[[table.columns]]\nname = \"extra\"\ntype = \"string\"\n";
    let t = table(&wide, true);
    assert!(plan_for(&t, BASE).unwrap().is_empty());
}

#[test]
fn disallowed_changes_name_the_column_and_both_types() {
    let t = table(BASE, true);
    let text = BASE
        .replace("name = \"qty\"\ntype = \"int\"", "name = \"qty\"\ntype = \"string\"")
        .replace("struct<name: string, tags: list<string>>", "struct<name: long, tags: list<string>>")
        + "[[table.columns]]\nname = \"must\"\ntype = \"int\"\nrequired = true\n";
    let message = problems(&t, &text);
    for expected in [
        "table ns.events cannot take the pipeline file's schema:",
        "column `qty`: the table has `int`, the pipeline file declares `string`",
        "column `user.name`: the table has `string`, the pipeline file declares `long`",
        "new column `must` is declared not null, but the table already has rows without it",
    ] {
        assert!(message.contains(expected), "{expected}: {message}");
    }
    // On a table without rows a new required column is fine.
    let empty = table(BASE, false);
    let required = BASE.to_string() + "[[table.columns]]\nname = \"must\"\ntype = \"int\"\nrequired = true\n";
    assert!(plan_for(&empty, &required).unwrap().schema.unwrap().field_by_name("must").unwrap().required);
}

#[test]
fn a_required_column_cannot_be_dropped() {
    let t = table(BASE, true);
    let start = BASE.find("[[table.columns]]\nname = \"id\"").unwrap();
    let end = BASE.find("[[table.columns]]\nname = \"qty\"").unwrap();
    let text = format!("{}{}", &BASE[..start], &BASE[end..]);
    assert!(problems(&t, &text).contains("column `id` is required in the table and the pipeline file no longer"));
    // Dropping an optional column is fine: it stays in the table, and new rows leave it null.
    let start = BASE.find("[[table.columns]]\nname = \"qty\"").unwrap();
    let end = BASE.find("[[table.columns]]\nname = \"price\"").unwrap();
    assert!(plan_for(&t, &format!("{}{}", &BASE[..start], &BASE[end..])).unwrap().is_empty());
}

#[test]
fn partition_spec_changes_are_refused_and_partition_sources_keep_their_type() {
    let t = table(BASE, true);
    let text = BASE.replace("transform = \"day\"", "transform = \"hour\"");
    let message = problems(&t, &text);
    assert!(
        message.contains("partition spec: the table is partitioned by day(ts) as ts_day, the pipeline file declares hour(ts) as ts_hour"),
        "{message}"
    );
    let by_qty = BASE.replace("column = \"ts\"\ntransform = \"day\"", "column = \"qty\"\ntransform = \"identity\"");
    let t = table(&by_qty, true);
    let widened = by_qty.replace("name = \"qty\"\ntype = \"int\"", "name = \"qty\"\ntype = \"long\"");
    assert!(
        problems(&t, &widened)
            .contains("column `qty` is the source of partition field `qty`: its type cannot change (int → long)")
    );
}

#[test]
fn properties_the_pipeline_sets_are_applied() {
    let t = table(BASE, true);
    let text = BASE.replace("name = \"events\"\n", "name = \"events\"\ntarget_file_size_mb = 64\n");
    let e = plan_for(&t, &text).unwrap();
    assert!(e.schema.is_none());
    assert_eq!(e.properties["write.target-file-size-bytes"], (64 * 1024 * 1024).to_string());
    assert!(e.changes[0].starts_with("property `write.target-file-size-bytes`"), "{:?}", e.changes);
}

#[test]
fn an_older_file_names_a_renamed_column_by_its_former_name() {
    let renamed =
        BASE.replace("name = \"qty\"\ntype = \"int\"", "name = \"quantity\"\ntype = \"int\"\nrenamed_from = \"qty\"");
    let t = table(BASE, true);
    let e = plan_for(&t, &renamed).unwrap();
    let evolved = t.into_builder(None).add_current_schema(e.schema.unwrap()).unwrap().build().unwrap().metadata;
    // The file from before the rename: `qty` is the column now called `quantity`, not a new one.
    let e = plan_for(&evolved, BASE).unwrap();
    assert!(e.is_empty(), "{:?}", e.changes);
    let bound = layout(BASE).bind(&evolved).unwrap();
    let qty = bound.input.field_with_name("qty").unwrap();
    let id = evolved.current_schema().field_by_name("quantity").unwrap().id;
    assert_eq!(qty.metadata()[parquet::arrow::PARQUET_FIELD_ID_META_KEY], id.to_string());
}
