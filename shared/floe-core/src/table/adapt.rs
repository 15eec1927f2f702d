//! Rows of one schema rewritten in another by Iceberg field id: what lets files be written and merged across a
//! schema evolution. A target column is the source column with the same field id (whatever its name now),
//! widened where the table's type is wider (`int` → `long`, `float` → `double`, a larger decimal precision), with
//! struct fields, list elements and map values matched the same way; a column the source lacks is null.
//!
//! Ingest's rows carry the pipeline file's columns ([`super::layout::TableLayout::input`]); a merge reads files
//! written under any earlier schema of the table. Both are written in the table's current schema.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, ListArray, MapArray, RecordBatch, RecordBatchOptions, StructArray, new_null_array};
use arrow_schema::{DataType, Field, Fields, SchemaRef};
use parquet::arrow::PARQUET_FIELD_ID_META_KEY;

use crate::error::{Error, Result};

/// `batch` in the `target` schema, matching columns by field id. Costs nothing when the schemas already agree.
pub fn adapt(batch: RecordBatch, target: &SchemaRef) -> Result<RecordBatch> {
    let source = batch.schema();
    let same = source.fields().len() == target.fields().len()
        && source
            .fields()
            .iter()
            .zip(target.fields())
            .all(|(s, t)| field_id(s) == field_id(t) && s.data_type() == t.data_type());
    if same {
        return Ok(RecordBatch::try_new(target.clone(), batch.columns().to_vec())?);
    }
    let rows = batch.num_rows();
    let columns = fields(batch.columns(), source.fields(), target.fields(), rows)?;
    let options = RecordBatchOptions::new().with_row_count(Some(rows));
    Ok(RecordBatch::try_new_with_options(target.clone(), columns, &options)?)
}

/// The Iceberg field id an Arrow field carries (iceberg's schemas and Parquet readers both put it there).
fn field_id(f: &Field) -> Option<i32> {
    f.metadata().get(PARQUET_FIELD_ID_META_KEY)?.parse().ok()
}

fn fields(columns: &[ArrayRef], source: &Fields, target: &Fields, rows: usize) -> Result<Vec<ArrayRef>> {
    target
        .iter()
        .map(|t| {
            let id = field_id(t);
            match source.iter().position(|s| id.is_some() && field_id(s) == id) {
                Some(i) => array(&columns[i], &source[i], t),
                None if t.is_nullable() => Ok(new_null_array(t.data_type(), rows)),
                None => Err(Error::Invariant(format!(
                    "column `{}` (field id {id:?}) is required, and the rows have no value for it",
                    t.name()
                ))),
            }
        })
        .collect()
}

fn array(array: &ArrayRef, source: &Field, target: &Field) -> Result<ArrayRef> {
    if source.data_type() == target.data_type() {
        return Ok(array.clone());
    }
    Ok(match (source.data_type(), target.data_type()) {
        (DataType::Struct(s), DataType::Struct(t)) => {
            let a = array.as_struct();
            let columns = fields(a.columns(), s, t, a.len())?;
            Arc::new(StructArray::try_new(t.clone(), columns, a.nulls().cloned())?)
        }
        (DataType::List(s), DataType::List(t)) => {
            let a = array.as_list::<i32>();
            let values = self::array(a.values(), s, t)?;
            Arc::new(ListArray::try_new(t.clone(), a.offsets().clone(), values, a.nulls().cloned())?)
        }
        (DataType::Map(s, _), DataType::Map(t, sorted)) => {
            let a = array.as_map();
            let (DataType::Struct(sf), DataType::Struct(tf)) = (s.data_type(), t.data_type()) else {
                return Err(Error::Invariant(format!("map `{}` has no entries struct", target.name())));
            };
            let entries = a.entries();
            let columns = fields(entries.columns(), sf, tf, entries.len())?;
            let entries = StructArray::try_new(tf.clone(), columns, entries.nulls().cloned())?;
            Arc::new(MapArray::try_new(t.clone(), a.offsets().clone(), entries, a.nulls().cloned(), *sorted)?)
        }
        // Type promotions, and equal types that differ only in nested field names or metadata.
        _ => arrow_cast::cast(array, target.data_type())?,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use arrow_array::{Int32Array, Int64Array, StringArray};
    use arrow_schema::Schema;

    use super::*;

    fn with_id(field: Field, id: i32) -> Field {
        field.with_metadata(HashMap::from([(PARQUET_FIELD_ID_META_KEY.to_string(), id.to_string())]))
    }

    #[test]
    fn columns_follow_their_field_ids_across_renames_widenings_and_additions() {
        // Written under an older schema: qty (id 2) was an int, user (id 3) a struct of name (id 4).
        let user_old = Fields::from(vec![with_id(Field::new("name", DataType::Utf8, true), 4)]);
        let source = Arc::new(Schema::new(vec![
            with_id(Field::new("id", DataType::Int64, false), 1),
            with_id(Field::new("qty", DataType::Int32, true), 2),
            with_id(Field::new("user", DataType::Struct(user_old.clone()), true), 3),
        ]));
        let user =
            StructArray::try_new(user_old, vec![Arc::new(StringArray::from(vec![Some("a"), None]))], None).unwrap();
        let batch = RecordBatch::try_new(
            source,
            vec![
                Arc::new(Int64Array::from(vec![1, 2])),
                Arc::new(Int32Array::from(vec![Some(7), None])),
                Arc::new(user),
            ],
        )
        .unwrap();
        // The table now: qty renamed quantity and widened to long, user gained age (id 6), a new column note (5).
        let user_new = Fields::from(vec![
            with_id(Field::new("name", DataType::Utf8, true), 4),
            with_id(Field::new("age", DataType::Int32, true), 6),
        ]);
        let target = Arc::new(Schema::new(vec![
            with_id(Field::new("id", DataType::Int64, false), 1),
            with_id(Field::new("quantity", DataType::Int64, true), 2),
            with_id(Field::new("user", DataType::Struct(user_new), true), 3),
            with_id(Field::new("note", DataType::Utf8, true), 5),
        ]));
        let out = adapt(batch, &target).unwrap();
        assert_eq!(out.schema(), target);
        assert_eq!(out.column(1).as_primitive::<arrow_array::types::Int64Type>().values(), &[7, 0]);
        assert!(out.column(1).is_null(1));
        let user = out.column(2).as_struct();
        assert_eq!(user.column(0).as_string::<i32>().value(0), "a");
        assert_eq!(user.column(1).null_count(), 2, "the new nested field is null");
        assert_eq!(out.column(3).null_count(), 2, "the new column is null");
    }

    #[test]
    fn a_required_column_the_rows_lack_is_an_error() {
        let source = Arc::new(Schema::new(vec![with_id(Field::new("a", DataType::Int64, true), 1)]));
        let batch = RecordBatch::try_new(source, vec![Arc::new(Int64Array::from(vec![1]))]).unwrap();
        let target = Arc::new(Schema::new(vec![
            with_id(Field::new("a", DataType::Int64, true), 1),
            with_id(Field::new("b", DataType::Int64, false), 2),
        ]));
        assert!(matches!(adapt(batch, &target), Err(Error::Invariant(_))));
    }
}
