//! JSON record values → one Arrow `RecordBatch` in the target table's schema, plus a reason for every record
//! that cannot be represented.
//!
//! The fast path hands all values of a topic-partition to one `arrow-json` decoder. Each value must add exactly
//! one row: this catches empty values, several JSON values in one record, and truncated JSON that would otherwise
//! merge with the next record. When a flush fails (a type error somewhere in the segment), the segment is bisected
//! with fresh decoders, so good records still load and only bad ones are rejected, each with a reason naming the
//! field. Bad records cost extra work; good batches are decoded once.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use arrow_array::builder::{LargeBinaryBuilder, StringBuilder};
use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{
    Array, ArrayRef, BooleanArray, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
    UInt32Array, make_array,
};
use arrow_buffer::NullBuffer;
use arrow_json::ReaderBuilder;
use arrow_json::reader::Decoder;
use arrow_schema::{DataType, Field, FieldRef, Fields, Schema, SchemaRef};
use arrow_select::concat::concat_batches;
use arrow_select::filter::filter_record_batch;

use crate::error::Result;
use crate::input::avro::AvroValues;
use crate::input::event::{Problem, SourcePartition, SourceRecord};
use crate::input::framing::bodies;
use crate::input::protobuf::ProtobufValues;
use crate::input::registry::{Resolved, SchemaKind};
use crate::pipeline::{Column, ColumnSource, Framing, Pipeline, TimestampFormat, ValueFormat};
use crate::table::layout::TableLayout;

mod guard;
use guard::DecimalGuard;

/// Rows decoded from one topic-partition's records.
#[derive(Debug)]
pub struct Decoded {
    /// Good rows in source order, in the table's Arrow schema (`None` if no record was good).
    pub batch: Option<RecordBatch>,
    /// Records that could not be represented: (index into the input records, problem), in index order.
    pub rejects: Vec<(usize, Problem)>,
}

/// Decodes record values for one table. Built once per pipeline.
#[derive(Debug)]
pub struct RecordDecoder {
    target: SchemaRef,
    /// The target schema with every top-level column nullable: rows are assembled here, then filtered.
    relaxed: SchemaRef,
    /// The shape arrow-json decodes: a tree of the JSON paths the columns read.
    value_schema: SchemaRef,
    columns: Vec<ColumnPlan>,
    /// JSON paths that must be present and non-null (to explain rejects precisely).
    required_paths: Vec<Vec<String>>,
    /// Keeps numbers arrow-json's decimal parser overflows on away from it.
    guard: DecimalGuard,
    /// The decoder of binary registry formats (`avro`, `protobuf`): values are then not JSON.
    binary: Option<BinaryValues>,
    format: ValueFormat,
    /// How registry formats name their schema (`None` for JSON).
    framing: Option<Framing>,
    /// The decoder of keys, when columns read into them (`@key.<path>`, `source.key_format`).
    key: Option<Box<RecordDecoder>>,
}

#[derive(Debug)]
enum BinaryValues {
    Avro(AvroValues),
    Protobuf(ProtobufValues),
}

#[derive(Debug)]
enum ColumnPlan {
    Value { path: Vec<String>, format: TimestampFormat },
    Key,
    KeyPath { path: Vec<String>, format: TimestampFormat },
    RawValue,
    Timestamp,
    Topic,
    Partition,
    Offset,
    Header(String),
}

/// A node of the value-schema tree built from the column paths.
#[derive(Default)]
struct Node {
    leaf: Option<FieldRef>,
    children: BTreeMap<String, Node>,
    required: bool,
}

fn node_fields(node: &Node) -> Vec<FieldRef> {
    node.children
        .iter()
        .map(|(name, child)| match &child.leaf {
            Some(leaf) => leaf.clone(),
            None => Arc::new(Field::new(name, DataType::Struct(Fields::from(node_fields(child))), !child.required)),
        })
        .collect()
}

type RowRejects = Vec<(usize, Problem)>;

impl RecordDecoder {
    pub fn new(pipeline: &Pipeline, layout: &TableLayout) -> Result<RecordDecoder> {
        let mut decoder = Self::with_columns(&pipeline.table.columns, layout.input.clone())?;
        decoder.set_format(pipeline.format.value, pipeline.format.framing);
        if let Some(key_format) = pipeline.format.key {
            // The key columns as value columns of a decoder of keys (all optional there: required ones are
            // checked when rows are assembled).
            let (columns, fields): (Vec<Column>, Vec<Field>) = (pipeline.table.columns.iter())
                .zip(layout.input.fields())
                .filter_map(|(c, f)| match &c.source {
                    ColumnSource::KeyPath { path, format } => Some((
                        Column {
                            required: false,
                            source: ColumnSource::Value { path: path.clone(), format: *format },
                            ..c.clone()
                        },
                        f.as_ref().clone().with_nullable(true),
                    )),
                    _ => None,
                })
                .unzip();
            let mut key = Self::with_columns(&columns, Arc::new(Schema::new(fields)))?;
            key.set_format(key_format, pipeline.format.framing);
            decoder.key = Some(Box::new(key));
        }
        Ok(decoder)
    }

    fn set_format(&mut self, format: ValueFormat, framing: Option<Framing>) {
        self.format = format;
        self.framing = if format == ValueFormat::Json { None } else { framing };
        self.binary = match (format, framing) {
            (ValueFormat::Avro, Some(framing)) => {
                Some(BinaryValues::Avro(AvroValues::new(framing, self.value_schema.clone())))
            }
            (ValueFormat::Protobuf, Some(framing)) => {
                Some(BinaryValues::Protobuf(ProtobufValues::new(framing, self.value_schema.clone())))
            }
            _ => None,
        };
    }

    /// A decoder of `columns` into rows of `target` (a field per column, in order).
    pub(crate) fn with_columns(declared: &[Column], target: SchemaRef) -> Result<RecordDecoder> {
        let mut root = Node::default();
        let mut columns = Vec::new();
        let mut required_paths = Vec::new();
        for (column, field) in declared.iter().zip(target.fields()) {
            columns.push(match &column.source {
                ColumnSource::Value { path, format } => {
                    let leaf_type = match format {
                        TimestampFormat::Rfc3339 => field.data_type().clone(),
                        _ => DataType::Int64,
                    };
                    let mut node = &mut root;
                    for seg in path {
                        node = node.children.entry(seg.clone()).or_default();
                        node.required |= column.required;
                    }
                    let name = path.last().expect("validated non-empty path");
                    let leaf = Field::new(name, leaf_type, !column.required).with_metadata(field.metadata().clone());
                    node.leaf = Some(Arc::new(leaf));
                    if column.required {
                        required_paths.push(path.clone());
                    }
                    ColumnPlan::Value { path: path.clone(), format: *format }
                }
                ColumnSource::Key => ColumnPlan::Key,
                ColumnSource::KeyPath { path, format } => ColumnPlan::KeyPath { path: path.clone(), format: *format },
                ColumnSource::RawValue => ColumnPlan::RawValue,
                ColumnSource::Timestamp => ColumnPlan::Timestamp,
                ColumnSource::Topic => ColumnPlan::Topic,
                ColumnSource::Partition => ColumnPlan::Partition,
                ColumnSource::Offset => ColumnPlan::Offset,
                ColumnSource::Header(h) => ColumnPlan::Header(h.clone()),
            });
        }
        let relaxed = Arc::new(Schema::new(
            target.fields().iter().map(|f| f.as_ref().clone().with_nullable(true)).collect::<Vec<_>>(),
        ));
        let value_schema = Arc::new(Schema::new(node_fields(&root)));
        let guard = DecimalGuard::new(value_schema.fields().iter().map(|f| f.as_ref()));
        Ok(RecordDecoder {
            target,
            relaxed,
            value_schema,
            columns,
            required_paths,
            guard,
            binary: None,
            format: ValueFormat::Json,
            framing: None,
            key: None,
        })
    }

    /// Decode the records of one topic-partition. Records that already carry a problem are rejected as such.
    pub fn decode(&self, source: &SourcePartition, records: &[SourceRecord]) -> Result<Decoded> {
        self.decode_with(source, records, None)
    }

    /// [`RecordDecoder::decode`] for a registry format: `schemas` are the writer schemas the records name,
    /// resolved by the registry `registry` describes.
    pub fn decode_with(
        &self,
        source: &SourcePartition,
        records: &[SourceRecord],
        schemas: Option<(&Resolved, &str)>,
    ) -> Result<Decoded> {
        let mut rejects: RowRejects = Vec::new();
        let mut inputs: Vec<(usize, &[u8])> = Vec::with_capacity(records.len());
        for (i, r) in records.iter().enumerate() {
            match (&r.problem, &r.value) {
                (Some(p), _) => rejects.push((i, p.clone())),
                (None, Some(v)) => inputs.push((i, v)),
                (None, None) => {
                    rejects.push((i, Problem { kind: "null_value", reason: "record has no value (tombstone)".into() }))
                }
            }
        }
        let needs_schemas =
            self.format != ValueFormat::Json || self.key.as_ref().is_some_and(|k| k.format != ValueFormat::Json);
        let (resolved, registry) = match schemas {
            Some(s) => s,
            None if needs_schemas => {
                return Err(crate::Error::Invariant("a registry format decoded without its schemas".into()));
            }
            None => (&Resolved::new(), ""),
        };
        let (values, value_rows) = self.values(&inputs, resolved, registry, &mut rejects)?;
        if value_rows.is_empty() {
            rejects.sort_by_key(|(i, _)| *i);
            return Ok(Decoded { batch: None, rejects });
        }
        let Some(key) = &self.key else {
            return self.assemble(source, records, &values, None, &value_rows, rejects);
        };
        // Decode the keys of the decoded values; a record whose key does not decode is a `key` dead letter, one
        // without a key has null key columns.
        let key_inputs: Vec<(usize, &[u8])> =
            value_rows.iter().filter_map(|&i| records[i].key.as_deref().map(|k| (i, k))).collect();
        let mut key_rejects = Vec::new();
        let (keys, key_rows) = key.values(&key_inputs, resolved, registry, &mut key_rejects)?;
        let bad: HashSet<usize> = key_rejects.iter().map(|(i, _)| *i).collect();
        for (i, p) in key_rejects {
            rejects.push((i, Problem { kind: "key", reason: format!("key ({}): {}", p.kind, p.reason) }));
        }
        let keep = BooleanArray::from(value_rows.iter().map(|i| !bad.contains(i)).collect::<Vec<_>>());
        let values = filter_record_batch(&values, &keep)?;
        let value_rows: Vec<usize> = value_rows.into_iter().filter(|i| !bad.contains(i)).collect();
        if value_rows.is_empty() {
            rejects.sort_by_key(|(i, _)| *i);
            return Ok(Decoded { batch: None, rejects });
        }
        let at: HashMap<usize, u32> = key_rows.iter().enumerate().map(|(n, &i)| (i, n as u32)).collect();
        let indices = UInt32Array::from(value_rows.iter().map(|i| at.get(i).copied()).collect::<Vec<_>>());
        let keys = arrow_select::take::take_record_batch(&keys, &indices)?;
        self.assemble(source, records, &values, Some(&keys), &value_rows, rejects)
    }

    /// Decode `inputs` (record index, value) in this decoder's format into rows of its value schema (record index
    /// of each row), adding the others to `rejects`.
    fn values(
        &self,
        inputs: &[(usize, &[u8])],
        resolved: &Resolved,
        registry: &str,
        rejects: &mut RowRejects,
    ) -> Result<(RecordBatch, Vec<usize>)> {
        if let Some(binary) = &self.binary {
            let (mut out, schema) = match binary {
                BinaryValues::Avro(d) => (d.decode(inputs, resolved, registry)?, d.relaxed_schema()),
                BinaryValues::Protobuf(d) => (d.decode(inputs, resolved, registry)?, d.relaxed_schema()),
            };
            rejects.append(&mut out.rejects);
            return Ok((concat_batches(schema, &out.batches)?, out.rows));
        }
        // JSON, or JSON Schema: JSON bodies behind a registry header.
        let bodies: Vec<(usize, Cow<[u8]>)> = match self.framing {
            Some(f) => bodies(f, inputs, resolved, registry, SchemaKind::JsonSchema, rejects)
                .into_iter()
                .map(|b| (b.index, b.bytes))
                .collect(),
            None => inputs.iter().map(|&(index, v)| (index, Cow::Borrowed(v))).collect(),
        };
        let mut json: Vec<(usize, &[u8])> = Vec::with_capacity(bodies.len());
        for (index, bytes) in &bodies {
            match self.guard.check(bytes) {
                Some(reason) => rejects.push((*index, Problem { kind: "schema", reason })),
                None => json.push((*index, bytes)),
            }
        }
        let mut out = JsonOutput::default();
        self.decode_values(&json, &mut out)?;
        rejects.append(&mut out.rejects);
        Ok((concat_batches(&self.value_schema, &out.batches)?, out.rows))
    }

    /// Target rows from decoded `values` (row `n` from record `value_rows[n]`): the value columns by path, the
    /// metadata columns from the records. Conversions and required columns can still reject rows.
    fn assemble(
        &self,
        source: &SourcePartition,
        records: &[SourceRecord],
        values: &RecordBatch,
        keys: Option<&RecordBatch>,
        value_rows: &[usize],
        mut rejects: RowRejects,
    ) -> Result<Decoded> {
        let rows: Vec<&SourceRecord> = value_rows.iter().map(|i| &records[*i]).collect();

        // Assemble the target columns. Metadata columns and conversions can still reject rows.
        let mut row_rejects: RowRejects = Vec::new();
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.columns.len());
        for (plan, field) in self.columns.iter().zip(self.target.fields()) {
            let array = match plan {
                ColumnPlan::Value { path, format } => {
                    convert_timestamp(extract_path(values, path)?, *format, field, &mut row_rejects)?
                }
                ColumnPlan::KeyPath { path, format } => {
                    let keys =
                        keys.ok_or_else(|| crate::Error::Invariant("key columns without decoded keys".into()))?;
                    convert_timestamp(extract_path(keys, path)?, *format, field, &mut row_rejects)?
                }
                ColumnPlan::Topic => Arc::new(StringArray::from_iter_values(rows.iter().map(|_| &source.topic))),
                ColumnPlan::Partition => match field.data_type() {
                    DataType::Int32 => Arc::new(Int32Array::from_value(source.partition, rows.len())) as ArrayRef,
                    _ => Arc::new(Int64Array::from_value(i64::from(source.partition), rows.len())),
                },
                ColumnPlan::Offset => Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.offset))),
                ColumnPlan::Timestamp => timestamp_column(rows.iter().map(|r| r.timestamp_ms), field.data_type()),
                ColumnPlan::Key => {
                    bytes_column(rows.iter().map(|r| r.key.as_deref()), field, "key", "record key", &mut row_rejects)
                }
                ColumnPlan::RawValue => bytes_column(
                    rows.iter().map(|r| r.value.as_deref()),
                    field,
                    "value",
                    "record value",
                    &mut row_rejects,
                ),
                ColumnPlan::Header(name) => {
                    let values =
                        rows.iter().map(|r| r.headers.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v.as_slice()));
                    bytes_column(values, field, "header", &format!("header `{name}`"), &mut row_rejects)
                }
            };
            if !field.is_nullable() {
                for row in (0..array.len()).filter(|r| array.is_null(*r)) {
                    let reason = format!("required column `{}` is null", field.name());
                    row_rejects.push((row, Problem { kind: "schema", reason }));
                }
            }
            columns.push(array);
        }

        let mut batch = RecordBatch::try_new(self.relaxed.clone(), columns)?;
        if !row_rejects.is_empty() {
            let mut keep = vec![true; rows.len()];
            row_rejects.sort_by_key(|(row, _)| *row);
            row_rejects.dedup_by_key(|(row, _)| *row); // first reason per row
            for (row, problem) in row_rejects {
                keep[row] = false;
                rejects.push((value_rows[row], problem));
            }
            batch = filter_record_batch(&batch, &BooleanArray::from(keep))?;
        }
        rejects.sort_by_key(|(i, _)| *i);
        let batch = RecordBatch::try_new(self.target.clone(), batch.columns().to_vec())?;
        Ok(Decoded { batch: (batch.num_rows() > 0).then_some(batch), rejects })
    }

    fn new_decoder(&self, capacity: usize) -> Result<Decoder> {
        Ok(ReaderBuilder::new(self.value_schema.clone()).with_batch_size(capacity + 1).build_decoder()?)
    }

    fn decoder_with<'a>(&self, values: impl ExactSizeIterator<Item = &'a [u8]>) -> Result<Decoder> {
        let mut decoder = self.new_decoder(values.len())?;
        for v in values {
            decoder.decode(v)?;
        }
        Ok(decoder)
    }

    fn decode_values(&self, inputs: &[(usize, &[u8])], out: &mut JsonOutput) -> Result<()> {
        let mut decoder = self.new_decoder(inputs.len())?;
        let mut start = 0; // first input of the current segment
        for (n, &(index, bytes)) in inputs.iter().enumerate() {
            let before = decoder.len();
            let one_row = match decoder.decode(bytes) {
                Ok(used) => used == bytes.len() && !decoder.has_partial_record() && decoder.len() == before + 1,
                Err(_) => false,
            };
            if one_row {
                continue;
            }
            out.rejects.push((index, self.explain(bytes)));
            // The decoder may hold part of the bad value: decode the good prefix again with a fresh one.
            let segment = &inputs[start..n];
            self.flush_segment(self.decoder_with(segment.iter().map(|(_, b)| *b))?, segment, out)?;
            start = n + 1;
            decoder = self.new_decoder(inputs.len() - start)?;
        }
        self.flush_segment(decoder, &inputs[start..], out)
    }

    /// Flush a segment of well-formed values; on a type error, bisect to isolate the bad records.
    fn flush_segment(&self, mut decoder: Decoder, segment: &[(usize, &[u8])], out: &mut JsonOutput) -> Result<()> {
        if segment.is_empty() {
            return Ok(());
        }
        match decoder.flush() {
            Ok(Some(batch)) => {
                out.batches.push(batch);
                out.rows.extend(segment.iter().map(|(i, _)| *i));
            }
            Ok(None) => {}
            Err(_) if segment.len() == 1 => out.rejects.push((segment[0].0, self.explain(segment[0].1))),
            Err(_) => {
                let (left, right) = segment.split_at(segment.len() / 2);
                for half in [left, right] {
                    self.flush_segment(self.decoder_with(half.iter().map(|(_, b)| *b))?, half, out)?;
                }
            }
        }
        Ok(())
    }

    /// A precise reason for one bad value (only called for rejected records).
    fn explain(&self, bytes: &[u8]) -> Problem {
        let json = |reason: String| Problem { kind: "json", reason };
        let value: serde_json::Value = match serde_json::from_slice(bytes) {
            Ok(v) => v,
            Err(_) if bytes.iter().all(u8::is_ascii_whitespace) => {
                return json("value is empty".into());
            }
            Err(e) => return json(format!("invalid JSON: {e}")),
        };
        if !value.is_object() {
            return json(format!("value is a JSON {}, expected an object", json_kind(&value)));
        }
        for path in &self.required_paths {
            let found = path.iter().try_fold(&value, |v, seg| v.get(seg));
            if found.is_none_or(serde_json::Value::is_null) {
                let reason = format!("required field `$.{}` is missing or null", path.join("."));
                return Problem { kind: "schema", reason };
            }
        }
        // Name the top-level field whose decoding fails.
        for field in self.value_schema.fields() {
            let schema = Arc::new(Schema::new(vec![field.clone()]));
            let result = ReaderBuilder::new(schema).build_decoder().and_then(|mut d| {
                d.decode(bytes)?;
                d.flush()
            });
            if let Err(e) = result {
                return Problem { kind: "schema", reason: format!("field `$.{}`: {e}", field.name()) };
            }
        }
        Problem { kind: "schema", reason: "value does not match the table schema".into() }
    }
}

#[derive(Default)]
struct JsonOutput {
    batches: Vec<RecordBatch>,
    /// Input record index of every decoded row, in order.
    rows: Vec<usize>,
    rejects: RowRejects,
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

/// The array at `path` inside the decoded values; a null parent struct makes the value null.
fn extract_path(values: &RecordBatch, path: &[String]) -> Result<ArrayRef> {
    let mut array = values.column_by_name(&path[0]).expect("value schema has every path").clone();
    let mut parent_nulls: Option<NullBuffer> = None;
    for seg in &path[1..] {
        let parent = array.as_struct();
        parent_nulls = NullBuffer::union(parent_nulls.as_ref(), parent.nulls());
        array = parent.column_by_name(seg).expect("value schema has every path").clone();
    }
    if parent_nulls.as_ref().is_some_and(|n| n.null_count() > 0) {
        let nulls = NullBuffer::union(parent_nulls.as_ref(), array.nulls());
        array = make_array(array.to_data().into_builder().nulls(nulls).build()?);
    }
    Ok(array)
}

/// Epoch numbers → microsecond timestamps; values that overflow are rejected.
fn convert_timestamp(
    array: ArrayRef,
    format: TimestampFormat,
    field: &Field,
    rejects: &mut RowRejects,
) -> Result<ArrayRef> {
    let factor: i64 = match format {
        TimestampFormat::Rfc3339 => return Ok(array),
        TimestampFormat::EpochSeconds => 1_000_000,
        TimestampFormat::EpochMillis => 1_000,
        TimestampFormat::EpochMicros => 1,
    };
    let DataType::Timestamp(_, tz) = field.data_type() else { unreachable!("validated: format only on timestamps") };
    let values = array.as_primitive::<Int64Type>();
    let micros: TimestampMicrosecondArray = values
        .iter()
        .enumerate()
        .map(|(row, v)| {
            let v = v?;
            let m = v.checked_mul(factor);
            if m.is_none() {
                let reason = format!("column `{}`: epoch value {v} is out of the timestamp range", field.name());
                rejects.push((row, Problem { kind: "schema", reason }));
            }
            m
        })
        .collect();
    Ok(Arc::new(micros.with_timezone_opt(tz.clone())))
}

fn timestamp_column(millis: impl Iterator<Item = Option<i64>>, data_type: &DataType) -> ArrayRef {
    match data_type {
        DataType::Timestamp(_, tz) => {
            let a: TimestampMicrosecondArray = millis.map(|m| m.and_then(|m| m.checked_mul(1000))).collect();
            Arc::new(a.with_timezone_opt(tz.clone()))
        }
        _ => Arc::new(millis.collect::<Int64Array>()),
    }
}

/// Key or header bytes as a string (must be UTF-8) or binary column.
fn bytes_column<'a>(
    values: impl Iterator<Item = Option<&'a [u8]>>,
    field: &Field,
    kind: &'static str,
    what: &str,
    rejects: &mut RowRejects,
) -> ArrayRef {
    // Iceberg `binary` is Arrow `LargeBinary`.
    if field.data_type() == &DataType::LargeBinary {
        let mut b = LargeBinaryBuilder::new();
        values.for_each(|v| b.append_option(v));
        return Arc::new(b.finish());
    }
    let mut b = StringBuilder::new();
    for (row, v) in values.enumerate() {
        match v.map(std::str::from_utf8) {
            Some(Ok(s)) => b.append_value(s),
            Some(Err(e)) => {
                b.append_null();
                let reason = format!("{what} for column `{}` is not valid UTF-8: {e}", field.name());
                rejects.push((row, Problem { kind, reason }));
            }
            None => b.append_null(),
        }
    }
    Arc::new(b.finish())
}

#[cfg(test)]
mod tests;
