//! Staged files as data files to commit, whatever schema of the table they were written in.
//!
//! Ingest records the table schema a file was written in ([`StagedFile::schema_id`]). A file of an older schema
//! is committed as it is: readers match its columns by field id, fill the columns added since with nulls and
//! widen promoted types. Its column bounds, though, are encoded in the types it was written with; a bound of a
//! column whose type was widened since is dropped (it is only an optimisation, and an `int` bound read as a
//! `long` one would be wrong). A file written for another table (a table replaced under the same name: its
//! UUID differs) or in a schema the table does not have is never committed.

use std::collections::HashMap;

use iceberg::spec::{DataFile, NestedField, Schema, TableMetadata, Type};

use crate::error::{Error, Result};
use crate::state::StagedFile;
use crate::table::layout::TableLayout;
use crate::table::writer::TableWriter;

/// The data file of `staged`, for a commit into `table` (`layout` bound to it, see [`TableLayout::on_table`]).
pub fn data_file(table: &TableMetadata, layout: &TableLayout, staged: &StagedFile) -> Result<DataFile> {
    let current = table.current_schema();
    let uuid = table.uuid().to_string();
    if let Some(written_for) = staged.table_uuid.as_ref().filter(|u| **u != uuid) {
        return Err(Error::TableMismatch {
            table: layout.name.to_string(),
            message: format!(
                "staged file {} was written for table {written_for}, and the table in the catalog is {uuid} \
                 (it was replaced); it stays staged",
                staged.path
            ),
        });
    }
    let written = match staged.schema_id {
        None => current,
        Some(id) => table.schema_by_id(id).ok_or_else(|| Error::TableMismatch {
            table: layout.name.to_string(),
            message: format!(
                "staged file {} was written in schema {id}, which the table does not have (was the table \
                 replaced?); it stays staged",
                staged.path
            ),
        })?,
    };
    if written.schema_id() == current.schema_id() {
        return TableWriter::data_file_from_json(layout, &staged.data_file);
    }
    let changed = changed_types(written, current);
    if changed.is_empty() {
        return TableWriter::data_file_from_json(layout, &staged.data_file);
    }
    let json = without_bounds(&staged.data_file, &changed).map_err(|e| Error::TableMismatch {
        table: layout.name.to_string(),
        message: format!("staged file {}: unreadable data file record: {e}", staged.path),
    })?;
    TableWriter::data_file_from_json(layout, &json)
}

/// Ids of the primitive fields whose type differs between `written` and `current`.
fn changed_types(written: &Schema, current: &Schema) -> Vec<i32> {
    let (mut before, mut after) = (HashMap::new(), HashMap::new());
    written.as_struct().fields().iter().for_each(|f| primitives(f, &mut before));
    current.as_struct().fields().iter().for_each(|f| primitives(f, &mut after));
    let mut ids: Vec<i32> =
        before.iter().filter(|(id, t)| after.get(*id).is_some_and(|a| a != *t)).map(|(id, _)| *id).collect();
    ids.sort_unstable();
    ids
}

/// Every primitive field at or under `field`, by id.
fn primitives<'a>(field: &'a NestedField, out: &mut HashMap<i32, &'a Type>) {
    match field.field_type.as_ref() {
        Type::Primitive(_) => {
            out.insert(field.id, field.field_type.as_ref());
        }
        Type::Struct(s) => s.fields().iter().for_each(|f| primitives(f, out)),
        Type::List(l) => primitives(&l.element_field, out),
        Type::Map(m) => {
            primitives(&m.key_field, out);
            primitives(&m.value_field, out);
        }
    }
}

/// The data file record (iceberg's JSON form) without lower and upper bounds for `ids`.
fn without_bounds(json: &str, ids: &[i32]) -> std::result::Result<String, serde_json::Error> {
    let mut record: serde_json::Value = serde_json::from_str(json)?;
    for key in ["lower_bounds", "upper_bounds"] {
        if let Some(entries) = record.get_mut(key).and_then(|v| v.as_array_mut()) {
            entries.retain(|e| e.get("key").and_then(|k| k.as_i64()).is_none_or(|k| !ids.contains(&(k as i32))));
        }
    }
    serde_json::to_string(&record)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{Int32Array, RecordBatch, TimestampMicrosecondArray};
    use iceberg::io::FileIO;
    use iceberg::spec::{Datum, TableMetadataBuilder};

    use super::*;
    use crate::input::event::SourcePartition;
    use crate::pipeline::Pipeline;

    const V1: &str = r#"
name = "s"
[source]
topics = ["t"]
[table]
namespace = "ns"
name = "t"
[[table.columns]]
name = "n"
type = "int"
[[table.columns]]
name = "ts"
type = "timestamptz"
required = true
"#;

    /// A table created from V1 with one staged file of it (n = 3..=9), and the file's ledger entry.
    async fn staged(dir: &std::path::Path) -> (TableMetadata, TableLayout, StagedFile) {
        let layout =
            TableLayout::target(&Pipeline::parse(V1, "s.toml").unwrap(), &format!("file://{}", dir.display())).unwrap();
        let table = TableMetadataBuilder::from_table_creation(layout.creation()).unwrap().build().unwrap().metadata;
        let layout = layout.on_table(&table).unwrap();
        let batch = RecordBatch::try_new(
            layout.arrow_schema.clone(),
            vec![
                Arc::new(Int32Array::from(vec![3, 9])),
                Arc::new(TimestampMicrosecondArray::from(vec![1, 2]).with_timezone("+00:00")),
            ],
        )
        .unwrap();
        let writer = TableWriter::new(layout.clone(), FileIO::new_with_fs()).unwrap();
        let file = writer.write(batch, "f").await.unwrap().remove(0);
        let staged = StagedFile {
            table: "ns.t".into(),
            path: file.file_path().into(),
            pipeline: "s".into(),
            source: SourcePartition { topic: "t".into(), partition: 0 },
            first_offset: 0,
            last_offset: 1,
            record_count: 2,
            file_size: file.file_size_in_bytes(),
            data_file: writer.data_file_json(&file).unwrap(),
            schema_id: Some(layout.schema.schema_id()),
            table_uuid: layout.table_uuid.clone(),
            content: Default::default(),
        };
        (table, layout, staged)
    }

    #[tokio::test]
    async fn a_file_of_an_older_schema_commits_without_the_bounds_of_a_widened_column() {
        let dir = tempfile::tempdir().unwrap();
        let (table, layout, file) = staged(dir.path()).await;
        let same = data_file(&table, &layout, &file).unwrap();
        assert_eq!(same.lower_bounds().get(&1), Some(&Datum::int(3)));

        let wide = Pipeline::parse(&V1.replace("\"int\"", "\"long\""), "s.toml").unwrap();
        let desired = TableLayout::target(&wide, "file:///x").unwrap();
        let schema = desired.evolution_for(&table).unwrap().schema.unwrap();
        let table = table.into_builder(None).add_current_schema(schema).unwrap().build().unwrap().metadata;
        let layout = layout.on_table(&table).unwrap();
        let committed = data_file(&table, &layout, &file).unwrap();
        assert!(committed.lower_bounds().get(&1).is_none() && committed.upper_bounds().get(&1).is_none());
        assert!(committed.lower_bounds().contains_key(&2), "the other columns keep their bounds");
        assert_eq!(committed.record_count(), 2);
    }

    #[tokio::test]
    async fn a_file_of_a_replaced_table_or_an_unknown_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (table, layout, file) = staged(dir.path()).await;
        let replaced = TableMetadataBuilder::from_table_creation(
            TableLayout::target(&Pipeline::parse(V1, "s.toml").unwrap(), "file:///x").unwrap().creation(),
        )
        .unwrap()
        .build()
        .unwrap()
        .metadata;
        let err = data_file(&replaced, &layout.on_table(&replaced).unwrap(), &file).unwrap_err().to_string();
        assert!(err.contains("was written for table") && err.contains("it was replaced"), "{err}");
        let unknown = StagedFile { schema_id: Some(7), ..file };
        let err = data_file(&table, &layout, &unknown).unwrap_err().to_string();
        assert!(err.contains("was written in schema 7, which the table does not have"), "{err}");
    }
}
