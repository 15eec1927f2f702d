//! Values decoded in their writer schema's shape (Avro, Protobuf) → rows of the value schema the pipeline's
//! columns read: [`conform`]ed, nested required fields checked per row, and labelled with the declared types.
//! A row that does not fit is a `schema` dead letter naming the field; the others load.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::{ArrayRef, BooleanArray, RecordBatch, UInt32Array};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use crate::error::Result;
use crate::input::conform::{conform, relaxed, required_violation, retype};
use crate::input::event::Problem;

/// Decoded values in the relaxed value shape, and why the others were not.
#[derive(Debug, Default)]
pub(crate) struct ValueRows {
    pub batches: Vec<RecordBatch>,
    /// The input record index of every row, in order.
    pub rows: Vec<usize>,
    pub rejects: Vec<(usize, Problem)>,
}

/// The value schema a pipeline's columns read, in the three forms decoding needs.
#[derive(Debug)]
pub(crate) struct ValueShape {
    /// As the columns declare it (nested nullability is checked against it).
    strict: SchemaRef,
    /// The same with top-level fields nullable (required columns are checked when rows are assembled): the
    /// schema of the rows decoders return.
    relaxed: SchemaRef,
    /// Every field nullable, at any depth: the shape values are converted in before nested fields are checked.
    loose: DataType,
}

impl ValueShape {
    pub(crate) fn new(value_schema: SchemaRef) -> ValueShape {
        let nullable: Vec<Field> =
            value_schema.fields().iter().map(|f| f.as_ref().clone().with_nullable(true)).collect();
        let loose: Vec<Field> = nullable.iter().map(|f| f.clone().with_data_type(relaxed(f.data_type()))).collect();
        ValueShape {
            strict: value_schema,
            relaxed: Arc::new(Schema::new(nullable)),
            loose: DataType::Struct(loose.into()),
        }
    }

    pub(crate) fn relaxed_schema(&self) -> &SchemaRef {
        &self.relaxed
    }

    /// The struct type values are converted to (every field nullable).
    pub(crate) fn loose(&self) -> &DataType {
        &self.loose
    }

    /// Add `values` (a struct array, row `n` decoded from input record `records[n]`) to `out`: rows that fit the
    /// value schema, and a `schema` dead letter for each row that does not.
    pub(crate) fn push(&self, values: &ArrayRef, records: &[usize], out: &mut ValueRows) -> Result<()> {
        let (conformed, rejects) = conform(values, &self.loose, "$");
        let mut bad: Vec<Option<String>> = vec![None; records.len()];
        for (row, reason) in rejects {
            bad[row] = Some(reason);
        }
        let conformed = conformed.as_struct();
        for (field, column) in self.strict.fields().iter().zip(conformed.columns()) {
            for (row, slot) in bad.iter_mut().enumerate() {
                if slot.is_none() {
                    *slot = required_violation(column.as_ref(), field, row, &format!("$.{}", field.name()))
                        .map(|p| format!("required field `{p}` is null"));
                }
            }
        }
        let keep: Vec<bool> = bad.iter().map(Option::is_none).collect();
        for (row, reason) in bad.into_iter().enumerate() {
            match reason {
                Some(reason) => out.rejects.push((records[row], Problem { kind: "schema", reason })),
                None => out.rows.push(records[row]),
            }
        }
        let mut columns = conformed.columns().to_vec();
        if !keep.iter().all(|k| *k) {
            let keep = BooleanArray::from(keep);
            columns = columns.iter().map(|c| arrow_select::filter::filter(c, &keep)).collect::<Result<_, _>>()?;
        }
        // Every nested required field now holds a value: label the arrays with the declared types.
        let columns = columns
            .iter()
            .zip(self.relaxed.fields())
            .map(|(c, f)| retype(c, f.data_type()))
            .collect::<Result<Vec<_>, _>>()?;
        let batch = RecordBatch::try_new(self.relaxed.clone(), columns)?;
        if batch.num_rows() > 0 {
            out.batches.push(batch);
        }
        Ok(())
    }

    /// Put `out`'s rows back in the records' order (decoders group values by writer schema) as one batch, and
    /// sort the rejects.
    pub(crate) fn finish(&self, out: &mut ValueRows) -> Result<()> {
        if !out.rows.is_sorted() {
            let batch = arrow_select::concat::concat_batches(&self.relaxed, &out.batches)?;
            let mut order: Vec<u32> = (0..out.rows.len() as u32).collect();
            order.sort_by_key(|&n| out.rows[n as usize]);
            out.batches = vec![arrow_select::take::take_record_batch(&batch, &UInt32Array::from(order))?];
            out.rows.sort_unstable();
        }
        out.rejects.sort_by_key(|(i, _)| *i);
        Ok(())
    }
}
