//! Change-stream records → the rows a staging step upserts and the keys it touches.
//!
//! Each record becomes an upsert (a new row image) or a delete (a primary key), by the pipeline's format
//! ([`ChangeFormat`]): the Debezium envelope is unwrapped into its row image first (with the envelope's `op`,
//! `source` and `ts_ms` under [`CHANGE_ENVELOPE`]), an upsert tombstone's Kafka key becomes the key to delete.
//! All images then go through one JSON decoder in which every column is optional (a delete carries only its
//! key); keys are checked on every change and the other required columns on upserts afterwards. The changes of one key within
//! the batch collapse to the last (Kafka order within a partition), so a staging step holds at most one row and
//! one key entry per key: the *key batch* lists every key touched with its operation, offset, Kafka timestamp and
//! `order_by` value, which is what the compactor needs to delete the rows these changes replace.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, Int32Array, Int64Array, RecordBatch, UInt32Array};
use arrow_row::{RowConverter, SortField};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use arrow_select::take::take;
use serde_json::{Map, Value};

use crate::error::Result;
use crate::input::decode::RecordDecoder;
use crate::input::event::{Problem, SourcePartition, SourceRecord};
use crate::pipeline::{CHANGE_ENVELOPE, ChangeFormat, Changes, Column, ColumnSource, ColumnType, TimestampFormat};

/// Columns of the key batch beside the key (and `order_by`) columns.
pub mod key_columns {
    /// 0: the last change upserted the key; 1: it deleted it.
    pub const OP: &str = "_floe_op";
    pub const OFFSET: &str = "_floe_offset";
    /// Kafka timestamp in milliseconds (null when the record has none).
    pub const TIMESTAMP: &str = "_floe_timestamp";
}
pub const OP_UPSERT: i32 = 0;
pub const OP_DELETE: i32 = 1;

/// Name of the hidden column reading `op_field` when no declared column does.
const OP_COLUMN: &str = "_floe_change_op";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Upsert,
    Delete,
    /// Read from the op field after decoding.
    FromField,
}

/// One partition's changes, collapsed to the last per key.
#[derive(Debug)]
pub struct DecodedChanges {
    /// New row images (rows of the target's input schema), one per upserted key, in offset order.
    pub upserts: Option<RecordBatch>,
    /// The record index of each upsert row.
    pub upsert_records: Vec<usize>,
    /// Every key the batch touched: key columns, [`key_columns`], and the `order_by` column if declared.
    pub keys: Option<RecordBatch>,
    /// Keys deleted (their last change in the batch is a delete).
    pub deletes: u64,
    /// Records that replaced an earlier change of their key within the batch.
    pub collapsed: u64,
    /// Debezium tombstones (the key's delete came before them): nothing to do.
    pub skipped: u64,
    pub rejects: Vec<(usize, Problem)>,
}

/// Decodes the changes of one pipeline. Built once per target layout.
#[derive(Debug)]
pub struct ChangeDecoder {
    format: ChangeFormat,
    decoder: RecordDecoder,
    /// The rows' schema (the target's input schema).
    target: SchemaRef,
    /// Required columns that are not keys: checked on upserts only.
    required: Vec<usize>,
    keys: Vec<usize>,
    /// The key columns' JSON paths (`None`: not read from the value), for building a tombstone's key object.
    key_paths: Vec<Option<Vec<String>>>,
    order: Option<usize>,
    /// Column of the decoded batch holding the op field's value.
    op_column: Option<usize>,
    key_schema: SchemaRef,
}

impl ChangeDecoder {
    /// The decoder of `changes` for rows of `target` (one field per column of `columns`).
    pub fn new(changes: &Changes, columns: &[Column], target: SchemaRef) -> Result<ChangeDecoder> {
        let index = |name: &str| columns.iter().position(|c| c.name == name).expect("validated column");
        let keys: Vec<usize> = changes.primary_key.iter().map(|k| index(k)).collect();
        let order = changes.order_by.as_deref().map(index);
        let mut relaxed: Vec<Column> = columns.to_vec();
        let mut fields: Vec<Field> = target.fields().iter().map(|f| f.as_ref().clone()).collect();
        // Everything optional in the decoder: a delete carries only its key, and a missing key is a `change`
        // problem named here, not a generic missing field.
        for (c, f) in relaxed.iter_mut().zip(fields.iter_mut()) {
            c.required = false;
            *f = f.clone().with_nullable(true);
        }
        let mut op_column = None;
        if let ChangeFormat::OpField { path, .. } = &changes.format {
            let declared =
                columns.iter().position(|c| matches!(&c.source, ColumnSource::Value { path: p, .. } if p == path));
            op_column = Some(declared.unwrap_or(relaxed.len()));
            if declared.is_none() {
                let source = ColumnSource::Value { path: path.clone(), format: TimestampFormat::default() };
                relaxed.push(Column {
                    name: OP_COLUMN.into(),
                    ty: ColumnType::String,
                    required: false,
                    source,
                    doc: None,
                    renamed_from: None,
                });
                fields.push(Field::new(OP_COLUMN, DataType::Utf8, true));
            }
        }
        let decoder = RecordDecoder::with_columns(&relaxed, Arc::new(Schema::new(fields)))?;
        let required = (0..columns.len()).filter(|i| columns[*i].required && !keys.contains(i)).collect();
        let key_paths = keys
            .iter()
            .map(|&k| match &columns[k].source {
                ColumnSource::Value { path, .. } => Some(path.clone()),
                _ => None,
            })
            .collect();
        let key_schema = key_schema(&target, &keys, order);
        Ok(ChangeDecoder {
            format: changes.format.clone(),
            decoder,
            target,
            required,
            keys,
            key_paths,
            order,
            op_column,
            key_schema,
        })
    }

    /// Decode one topic-partition's records (in offset order).
    pub fn decode(&self, source: &SourcePartition, records: &[SourceRecord]) -> Result<DecodedChanges> {
        let mut rejects = Vec::new();
        let mut skipped = 0;
        // The images to decode, the index of the record each came from, and its operation.
        let mut images: Vec<SourceRecord> = Vec::with_capacity(records.len());
        let mut origin: Vec<usize> = Vec::with_capacity(records.len());
        let mut ops: Vec<Op> = Vec::with_capacity(records.len());
        for (i, r) in records.iter().enumerate() {
            if let Some(p) = &r.problem {
                rejects.push((i, p.clone()));
                continue;
            }
            let (op, value) = match self.image(r) {
                Ok(Some(image)) => image,
                Ok(None) => {
                    skipped += 1;
                    continue;
                }
                Err(problem) => {
                    rejects.push((i, problem));
                    continue;
                }
            };
            images.push(SourceRecord { value: Some(value), problem: None, ..r.clone() });
            origin.push(i);
            ops.push(op);
        }
        let decoded = self.decoder.decode(source, &images)?;
        let mut good = vec![true; images.len()];
        for (j, problem) in decoded.rejects {
            good[j] = false;
            rejects.push((origin[j], problem));
        }
        let rows: Vec<usize> = (0..images.len()).filter(|j| good[*j]).collect();
        let Some(batch) = decoded.batch else {
            rejects.sort_by_key(|(i, _)| *i);
            return Ok(DecodedChanges::empty(rejects, skipped));
        };

        // Each row's operation, and the rows that cannot be applied.
        let mut row_ops = Vec::with_capacity(rows.len());
        let mut keep = vec![true; rows.len()];
        let op_values = self.op_column.map(|c| batch.column(c).as_string::<i32>().clone());
        for (row, &j) in rows.iter().enumerate() {
            let op = match (ops[j], &op_values, &self.format) {
                (Op::FromField, Some(values), ChangeFormat::OpField { path, upsert, delete }) => {
                    let value = values.is_valid(row).then(|| values.value(row));
                    match value {
                        Some(v) if upsert.iter().any(|u| u == v) => Op::Upsert,
                        Some(v) if delete.iter().any(|d| d == v) => Op::Delete,
                        Some(v) => {
                            let reason = format!("unknown operation `{v}` in `$.{}`", path.join("."));
                            rejects.push((origin[j], Problem { kind: "change", reason }));
                            keep[row] = false;
                            Op::Delete
                        }
                        None => {
                            let reason = format!("operation field `$.{}` is missing or null", path.join("."));
                            rejects.push((origin[j], Problem { kind: "change", reason }));
                            keep[row] = false;
                            Op::Delete
                        }
                    }
                }
                (op, _, _) => op,
            };
            row_ops.push(op);
        }
        for (row, &j) in rows.iter().enumerate() {
            if !keep[row] {
                continue;
            }
            let missing_key = self.keys.iter().find(|&&k| batch.column(k).is_null(row));
            let missing = match missing_key {
                Some(&k) => Some(Problem {
                    kind: "change",
                    reason: format!("primary-key column `{}` is missing or null", self.target.field(k).name()),
                }),
                None if row_ops[row] == Op::Upsert => {
                    self.required.iter().find(|&&c| batch.column(c).is_null(row)).map(|&c| Problem {
                        kind: "schema",
                        reason: format!("required column `{}` is null", self.target.field(c).name()),
                    })
                }
                None => None,
            };
            if let Some(problem) = missing {
                rejects.push((origin[j], problem));
                keep[row] = false;
            }
        }
        rejects.sort_by_key(|(i, _)| *i);

        // The last change of each key wins (rows are in offset order).
        let key_arrays: Vec<ArrayRef> = self.keys.iter().map(|&k| batch.column(k).clone()).collect();
        let converter = RowConverter::new(key_arrays.iter().map(|a| SortField::new(a.data_type().clone())).collect())?;
        let key_rows = converter.convert_columns(&key_arrays)?;
        let mut last: HashMap<&[u8], usize> = HashMap::with_capacity(rows.len());
        for row in (0..rows.len()).filter(|r| keep[*r]) {
            last.insert(key_rows.row(row).data(), row);
        }
        let mut winners: Vec<usize> = last.into_values().collect();
        winners.sort_unstable();
        let kept = keep.iter().filter(|k| **k).count();
        let collapsed = (kept - winners.len()) as u64;

        let upsert_rows: Vec<usize> = winners.iter().copied().filter(|r| row_ops[*r] == Op::Upsert).collect();
        let deletes = (winners.len() - upsert_rows.len()) as u64;
        let upsert_records = upsert_rows.iter().map(|r| origin[rows[*r]]).collect();
        let columns: Vec<ArrayRef> = batch.columns()[..self.target.fields().len()].to_vec();
        let upserts =
            select(&columns, &upsert_rows)?.map(|cols| RecordBatch::try_new(self.target.clone(), cols)).transpose()?;
        let keys = self.key_batch(&batch, &winners, &row_ops, |row| &images[rows[row]])?;
        Ok(DecodedChanges { upserts, upsert_records, keys, deletes, collapsed, skipped, rejects })
    }

    /// A record's operation and the JSON the decoder reads for it; `None` for a record that changes nothing.
    fn image(&self, r: &SourceRecord) -> std::result::Result<Option<(Op, Vec<u8>)>, Problem> {
        match (&self.format, &r.value) {
            (ChangeFormat::Upsert, Some(v)) => Ok(Some((Op::Upsert, v.clone()))),
            (ChangeFormat::Upsert, None) => Ok(Some((Op::Delete, self.key_image(r.key.as_deref())?))),
            (ChangeFormat::OpField { .. }, Some(v)) => Ok(Some((Op::FromField, v.clone()))),
            (ChangeFormat::OpField { path, .. }, None) => Err(change(format!(
                "record has no value (tombstone); a delete is a value with `$.{}` naming a delete operation",
                path.join(".")
            ))),
            // The tombstone Debezium sends after a delete: the delete itself carried the key.
            (ChangeFormat::Debezium, None) => Ok(None),
            (ChangeFormat::Debezium, Some(v)) => self.debezium_image(v, r.key.as_deref()).map(Some),
        }
    }

    /// The row image of a Debezium envelope (`after` for c/r/u, `before` or the Kafka key for d), with the
    /// envelope's other fields under [`CHANGE_ENVELOPE`].
    fn debezium_image(&self, value: &[u8], key: Option<&[u8]>) -> std::result::Result<(Op, Vec<u8>), Problem> {
        let json = |reason: String| Problem { kind: "json", reason };
        let envelope: Value = serde_json::from_slice(value).map_err(|e| json(format!("invalid JSON: {e}")))?;
        let Value::Object(mut envelope) = unwrap_payload(envelope) else {
            return Err(json("value is not a JSON object (a Debezium envelope)".into()));
        };
        let op = match envelope.get("op") {
            Some(Value::String(op)) => op.clone(),
            Some(_) => return Err(change("Debezium `op` is not a string".into())),
            None => return Err(change("Debezium envelope has no `op`".into())),
        };
        let before = envelope.remove("before");
        let after = envelope.remove("after");
        let (op, image) = match op.as_str() {
            "c" | "r" | "u" => match after {
                Some(Value::Object(after)) => (Op::Upsert, after),
                _ => return Err(change(format!("Debezium `op` = `{op}` without an `after` row"))),
            },
            "d" => match before {
                Some(Value::Object(before)) => (Op::Delete, before),
                _ => match serde_json::from_slice::<Value>(&self.key_image(key)?) {
                    Ok(Value::Object(key)) => (Op::Delete, key),
                    _ => return Err(change("Debezium delete without `before` or a key".into())),
                },
            },
            other => {
                return Err(change(format!(
                    "Debezium `op` = `{other}` is not a row change (c, r, u or d); truncates and messages are not applied"
                )));
            }
        };
        let mut image = image;
        image.insert(CHANGE_ENVELOPE.to_string(), Value::Object(envelope));
        Ok((op, serde_json::to_vec(&Value::Object(image)).expect("a JSON value serialises")))
    }

    /// The key object a tombstone deletes, from its Kafka key: a JSON object (a schema wrapper's `payload`
    /// taken), or, for a one-column key read from the value, the bare value (a JSON scalar, or text).
    fn key_image(&self, key: Option<&[u8]>) -> std::result::Result<Vec<u8>, Problem> {
        let Some(key) = key else {
            return Err(change("tombstone without a key: nothing says which row to delete".into()));
        };
        // A key column read from the Kafka key itself (`from = "@key"`) needs no JSON.
        if self.key_paths.iter().any(Option::is_none) && self.key_paths.iter().flatten().count() == 0 {
            return Ok(b"{}".to_vec());
        }
        let parsed = serde_json::from_slice::<Value>(key).map(unwrap_payload);
        let object = match parsed {
            Ok(Value::Object(o)) => o,
            Ok(Value::Null) => return Err(change("tombstone with a null key".into())),
            scalar => {
                let value = match scalar {
                    Ok(v) => v,
                    // Not JSON: the key's text.
                    Err(_) => match std::str::from_utf8(key) {
                        Ok(text) => Value::String(text.to_string()),
                        Err(_) => return Err(change("tombstone key is neither JSON nor UTF-8 text".into())),
                    },
                };
                let [Some(path)] = self.key_paths.as_slice() else {
                    return Err(change(
                        "tombstone key is a bare value, and the primary key has several columns: send a JSON object"
                            .into(),
                    ));
                };
                nest(path, value)
            }
        };
        Ok(serde_json::to_vec(&Value::Object(object)).expect("a JSON value serialises"))
    }

    /// The key batch of `winners` (rows of `batch`).
    fn key_batch<'a>(
        &self,
        batch: &RecordBatch,
        winners: &[usize],
        ops: &[Op],
        record: impl Fn(usize) -> &'a SourceRecord,
    ) -> Result<Option<RecordBatch>> {
        let mut columns: Vec<ArrayRef> = self.keys.iter().map(|&k| batch.column(k).clone()).collect();
        if let Some(o) = self.order {
            columns.push(batch.column(o).clone());
        }
        let Some(mut columns) = select(&columns, winners)? else { return Ok(None) };
        let op = |r: &usize| if ops[*r] == Op::Upsert { OP_UPSERT } else { OP_DELETE };
        columns.push(Arc::new(Int32Array::from_iter_values(winners.iter().map(op))));
        columns.push(Arc::new(Int64Array::from_iter_values(winners.iter().map(|r| record(*r).offset))));
        columns.push(Arc::new(winners.iter().map(|r| record(*r).timestamp_ms).collect::<Int64Array>()));
        Ok(Some(RecordBatch::try_new(self.key_schema.clone(), columns)?))
    }
}

impl DecodedChanges {
    fn empty(rejects: Vec<(usize, Problem)>, skipped: u64) -> DecodedChanges {
        DecodedChanges {
            upserts: None,
            upsert_records: Vec::new(),
            keys: None,
            deletes: 0,
            collapsed: 0,
            skipped,
            rejects,
        }
    }
}

/// The key batch's schema: the key columns (and `order_by`) as in `target`, then [`key_columns`].
fn key_schema(target: &Schema, keys: &[usize], order: Option<usize>) -> SchemaRef {
    let mut fields: Vec<Field> = keys.iter().map(|&i| plain(target.field(i))).collect();
    if let Some(o) = order {
        fields.push(plain(target.field(o)).with_nullable(true));
    }
    fields.push(Field::new(key_columns::OP, DataType::Int32, false));
    fields.push(Field::new(key_columns::OFFSET, DataType::Int64, false));
    fields.push(Field::new(key_columns::TIMESTAMP, DataType::Int64, true));
    Arc::new(Schema::new(fields))
}

/// A field without Iceberg metadata (the key file is floe's own, not a table file).
fn plain(f: &Field) -> Field {
    Field::new(f.name(), f.data_type().clone(), f.is_nullable())
}

/// The rows `rows` of `columns`; `None` when there are none.
fn select(columns: &[ArrayRef], rows: &[usize]) -> Result<Option<Vec<ArrayRef>>> {
    if rows.is_empty() {
        return Ok(None);
    }
    let indices = UInt32Array::from_iter_values(rows.iter().map(|r| *r as u32));
    Ok(Some(columns.iter().map(|c| take(c.as_ref(), &indices, None)).collect::<std::result::Result<_, _>>()?))
}

/// Debezium's and Kafka Connect's JSON converter with schemas: `{"schema": …, "payload": …}`.
fn unwrap_payload(value: Value) -> Value {
    match value {
        Value::Object(mut o) if o.len() == 2 && o.contains_key("schema") && o.contains_key("payload") => {
            o.remove("payload").expect("checked")
        }
        other => other,
    }
}

/// `{"a": {"b": value}}` for path `[a, b]`.
fn nest(path: &[String], value: Value) -> Map<String, Value> {
    let mut inner = value;
    for segment in path[1..].iter().rev() {
        let mut o = Map::new();
        o.insert(segment.clone(), inner);
        inner = Value::Object(o);
    }
    let mut object = Map::new();
    object.insert(path[0].clone(), inner);
    object
}

fn change(reason: String) -> Problem {
    Problem { kind: "change", reason }
}

#[cfg(test)]
#[path = "changes_tests.rs"]
mod tests;
