//! Registry-framed Avro values → Arrow rows, decoded by arrow-avro (arrow-rs's Avro reader) against each value's
//! writer schema, then [`conform`]ed to the shape the pipeline's columns read.
//!
//! Each value is unframed here (Confluent or Glue, [`crate::input::framing`]) and handed to one streaming
//! arrow-avro decoder as a Confluent frame naming the schema's process-local id, so both framings share one
//! path. Every value must add exactly one row: after its body, the decoder must be between values (checked
//! by offering it one byte that cannot start a frame), which catches truncated bodies and trailing bytes. A
//! value that fails leaves the decoder in an unknown state: it is rejected, and the values decoded since the
//! last flush are decoded again by a fresh decoder. Rows keep the records' order.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, RecordBatch, StructArray};
use arrow_avro::reader::{Decoder, ReaderBuilder};
use arrow_avro::schema::{AvroSchema, Fingerprint, FingerprintAlgorithm, SchemaStore};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use crate::error::Result;
use crate::input::conform::{conform, relaxed, required_violation, retype};
use crate::input::event::Problem;
use crate::input::framing::{Body, bodies};
use crate::input::registry::{Resolved, SchemaKind};
use crate::pipeline::Framing;

/// Decoded values in the relaxed value shape, and why the others were not.
#[derive(Debug, Default)]
pub(crate) struct ValueRows {
    pub batches: Vec<RecordBatch>,
    /// The input record index of every row, in order.
    pub rows: Vec<usize>,
    pub rejects: Vec<(usize, Problem)>,
}

/// Decodes Avro values into rows of a value schema (the tree of paths the columns read).
#[derive(Debug)]
pub(crate) struct AvroValues {
    framing: Framing,
    /// The value schema as the columns declare it (nested nullability is checked against it).
    strict: SchemaRef,
    /// The same with top-level fields nullable (required columns are checked when rows are assembled): the
    /// schema of the rows this returns.
    relaxed: SchemaRef,
    /// Every field nullable, at any depth: the shape values are converted in before nested fields are checked.
    loose: DataType,
}

const PREFIX_MAGIC: u8 = 0;
/// A byte that cannot start a Confluent frame: offered after each body to check the decoder is between values.
const NOT_A_FRAME: [u8; 1] = [0xff];

impl AvroValues {
    pub(crate) fn new(framing: Framing, value_schema: SchemaRef) -> AvroValues {
        let nullable: Vec<Field> =
            value_schema.fields().iter().map(|f| f.as_ref().clone().with_nullable(true)).collect();
        let loose: Vec<Field> = nullable.iter().map(|f| f.clone().with_data_type(relaxed(f.data_type()))).collect();
        AvroValues {
            framing,
            strict: value_schema,
            relaxed: Arc::new(Schema::new(nullable)),
            loose: DataType::Struct(loose.into()),
        }
    }

    pub(crate) fn relaxed_schema(&self) -> &SchemaRef {
        &self.relaxed
    }

    /// Decode `inputs` (record index, value) with the schemas `resolved` names.
    pub(crate) fn decode(&self, inputs: &[(usize, &[u8])], resolved: &Resolved, registry: &str) -> Result<ValueRows> {
        let mut out = ValueRows::default();
        let mut bodies = bodies(self.framing, inputs, resolved, registry, SchemaKind::Avro, &mut out.rejects);
        let schemas: HashMap<u32, &str> =
            bodies.iter().map(|b| (b.schema.local, b.schema.schema.text.as_str())).collect();
        // A schema arrow-avro cannot read rejects its records, not the batch.
        let mut usable: HashMap<u32, AvroSchema> = HashMap::new();
        for (&local, &text) in &schemas {
            let schema = AvroSchema::new(text.to_string());
            match new_decoder(&[(local, schema.clone())], 1) {
                Ok(_) => {
                    usable.insert(local, schema);
                }
                Err(e) => {
                    let id = resolved.values().flatten().find(|k| k.local == local).map(|k| k.id.to_string());
                    let reason = format!("{} cannot be read: {e}", id.unwrap_or_default());
                    for b in bodies.iter().filter(|b| b.schema.local == local) {
                        out.rejects.push((b.index, Problem { kind: "schema", reason: reason.clone() }));
                    }
                }
            }
        }
        bodies.retain(|b| usable.contains_key(&b.schema.local));
        let store: Vec<(u32, AvroSchema)> = usable.into_iter().collect();
        // Values of one writer schema are decoded together (a batch holds one schema's rows, and producers rolling
        // out a new version interleave two), then the rows are put back in the records' order.
        let mut grouped: Vec<&Body<'_>> = bodies.iter().collect();
        grouped.sort_by_key(|b| b.schema.local); // stable: record order within a schema
        self.decode_bodies(&grouped, &store, &mut out)?;
        if !out.rows.is_sorted() {
            let batch = arrow_select::concat::concat_batches(&self.relaxed, &out.batches)?;
            let mut order: Vec<u32> = (0..out.rows.len() as u32).collect();
            order.sort_by_key(|&n| out.rows[n as usize]);
            let indices = arrow_array::UInt32Array::from(order);
            out.batches = vec![arrow_select::take::take_record_batch(&batch, &indices)?];
            out.rows.sort_unstable();
        }
        out.rejects.sort_by_key(|(i, _)| *i);
        Ok(out)
    }

    fn decode_bodies(&self, bodies: &[&Body<'_>], store: &[(u32, AvroSchema)], out: &mut ValueRows) -> Result<()> {
        if bodies.is_empty() {
            return Ok(());
        }
        let mut decoder = new_decoder(store, bodies.len())?;
        let mut pending: Vec<&Body<'_>> = Vec::new(); // decoded since the last flush
        let mut active: Option<u32> = None;
        for &body in bodies {
            if active.is_some_and(|a| a != body.schema.local) {
                // Flush before the writer schema changes, so the batch holds one schema's rows.
                if self.flush(&mut decoder, &mut pending, store, out)? {
                    decoder = new_decoder(store, bodies.len())?;
                }
            }
            active = Some(body.schema.local);
            match feed(&mut decoder, body) {
                Ok(()) => pending.push(body),
                Err(reason) => {
                    out.rejects.push((body.index, Problem { kind: "avro", reason }));
                    decoder = decoder_with(store, bodies.len(), &pending)?;
                }
            }
        }
        self.flush(&mut decoder, &mut pending, store, out).map(|_| ())
    }

    /// Turn the values decoded since the last flush into rows. Says whether the decoder failed (it is then
    /// unusable, and callers that go on take a fresh one).
    fn flush(
        &self,
        decoder: &mut Decoder,
        pending: &mut Vec<&Body<'_>>,
        store: &[(u32, AvroSchema)],
        out: &mut ValueRows,
    ) -> Result<bool> {
        if pending.is_empty() {
            return Ok(false);
        }
        let flushed =
            guarded(|| decoder.flush()).unwrap_or_else(|reason| Err(arrow_avro::errors::AvroError::General(reason)));
        let batch = match flushed {
            Ok(Some(batch)) => batch,
            Ok(None) => return Err(crate::Error::Invariant("decoded Avro values flushed no rows".into())),
            // A value that decoded can still fail to become an array (an enum index beyond the symbols):
            // bisect with fresh decoders until the values at fault are alone, and reject those.
            Err(e) if pending.len() == 1 => {
                let reason = format!("undecodable Avro value: {e}");
                out.rejects.push((pending[0].index, Problem { kind: "avro", reason }));
                pending.clear();
                return Ok(true);
            }
            Err(_) => {
                let (left, right) = pending.split_at(pending.len() / 2);
                for half in [left, right] {
                    let mut decoder = decoder_with(store, half.len(), half)?;
                    self.flush(&mut decoder, &mut half.to_vec(), store, out)?;
                }
                pending.clear();
                return Ok(true);
            }
        };
        if batch.num_rows() != pending.len() {
            return Err(crate::Error::Invariant(format!(
                "{} Avro values flushed {} rows",
                pending.len(),
                batch.num_rows()
            )));
        }
        let values: ArrayRef = Arc::new(StructArray::from(batch));
        let (conformed, rejects) = conform(&values, &self.loose, "$");
        let mut bad: Vec<Option<String>> = vec![None; pending.len()];
        for (row, reason) in rejects {
            bad[row] = Some(reason);
        }
        let conformed =
            conformed.as_any().downcast_ref::<StructArray>().expect("a struct conforms to a struct").clone();
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
                Some(reason) => out.rejects.push((pending[row].index, Problem { kind: "schema", reason })),
                None => out.rows.push(pending[row].index),
            }
        }
        let mut columns = conformed.columns().to_vec();
        if !keep.iter().all(|k| *k) {
            let keep = arrow_array::BooleanArray::from(keep);
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
        pending.clear();
        Ok(false)
    }
}

fn new_decoder(store: &[(u32, AvroSchema)], capacity: usize) -> Result<Decoder, arrow_schema::ArrowError> {
    let mut schemas = SchemaStore::new_with_type(FingerprintAlgorithm::Id);
    for (local, schema) in store {
        schemas.set(Fingerprint::Id(*local), schema.clone())?;
    }
    ReaderBuilder::new().with_writer_schema_store(schemas).with_batch_size(capacity.max(1) + 1).build_decoder()
}

/// A fresh decoder (room for `capacity` values) holding `good`, values that decoded before in a decoder that
/// failed afterwards.
fn decoder_with(store: &[(u32, AvroSchema)], capacity: usize, good: &[&Body<'_>]) -> Result<Decoder> {
    let mut decoder = new_decoder(store, capacity)?;
    for body in good {
        feed(&mut decoder, body)
            .map_err(|e| crate::Error::Invariant(format!("an Avro value decoded once failed again: {e}")))?;
    }
    Ok(decoder)
}

/// Decode one value; it must add exactly one row and leave the decoder between values.
fn feed(decoder: &mut Decoder, body: &Body<'_>) -> Result<(), String> {
    let mut prefix = [PREFIX_MAGIC; 5];
    prefix[1..].copy_from_slice(&body.schema.local.to_be_bytes());
    let before = decoder.capacity();
    let used = decoder.decode(&prefix).map_err(|e| format!("undecodable Avro value: {e}"))?;
    if used != prefix.len() || decoder.capacity() != before {
        return Err("undecodable Avro value".into());
    }
    let used = guarded(|| decoder.decode(&body.bytes))?.map_err(|e| format!("undecodable Avro value: {e}"))?;
    if used < body.bytes.len() || decoder.capacity() + 1 != before {
        return Err(format!(
            "undecodable Avro value: the body is {} bytes and does not hold exactly one value of its schema \
             (truncated, or bytes after the value)",
            body.bytes.len()
        ));
    }
    // Between values, the decoder reads a frame header, which cannot start with 0xff: anything else means the
    // body ended inside a value, or trailing bytes looked like a new frame.
    match decoder.decode(&NOT_A_FRAME) {
        Err(e) if e.to_string().contains("Missing magic bytes") => Ok(()),
        _ => Err("undecodable Avro value: bytes after the value".into()),
    }
}

/// Run one call into arrow-avro on untrusted bytes, turning a panic into the value's rejection. arrow-avro 58.4
/// negates a block count read from the value (`-block_count`), which overflows for `i64::MIN` (found by the
/// `avro_confluent` fuzz target; a panic where overflow checks are on, a wrapped count elsewhere). The decoder is
/// not used after a failure (see [`AvroValues::decode_bodies`]).
fn guarded<T>(call: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)).map_err(|panic| {
        let what =
            panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned());
        format!("undecodable Avro value: the decoder failed on it ({})", what.unwrap_or_else(|| "panic".into()))
    })
}

#[cfg(test)]
#[path = "avro_tests.rs"]
mod tests;
