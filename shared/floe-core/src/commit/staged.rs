//! Staged files as data files to commit, whatever schema of the table they were written in.
//!
//! Ingest records the table schema a file was written in ([`StagedFile::schema_id`]). A file of an older schema
//! is committed as it is: readers match its columns by field id, fill the columns added since with nulls and
//! widen promoted types. Its column bounds, though, are encoded in the types it was written with; a bound of a
//! column whose type was widened since is dropped (it is only an optimisation, and an `int` bound read as a
//! `long` one would be wrong). A file whose schema the table does not have is never committed: the table was
//! replaced behind floe's back, or the file was written for another table.

use std::collections::HashMap;

use iceberg::spec::{DataFile, NestedField, Schema, TableMetadata, Type};

use crate::error::{Error, Result};
use crate::state::StagedFile;
use crate::table::layout::TableLayout;
use crate::table::writer::TableWriter;

/// The data file of `staged`, for a commit into `table` (`layout` bound to it, see [`TableLayout::on_table`]).
pub fn data_file(table: &TableMetadata, layout: &TableLayout, staged: &StagedFile) -> Result<DataFile> {
    let current = table.current_schema();
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
