//! Registry-framed Avro values → Arrow rows, decoded by arrow-avro (arrow-rs's Avro reader) against each value's
//! writer schema, then shaped ([`crate::input::shape`]) into the rows the pipeline's columns read.
//!
//! Each value is unframed here (Confluent or Glue, [`crate::input::framing`]) and handed to one streaming
//! arrow-avro decoder as a Confluent frame naming the schema's process-local id, so both framings share one
//! path. Every value must add exactly one row: after its body, the decoder must be between values (checked
//! by offering it one byte that cannot start a frame), which catches truncated bodies and trailing bytes. A
//! value that fails leaves the decoder in an unknown state: it is rejected, and the values decoded since the
//! last flush are decoded again by a fresh decoder. Rows keep the records' order.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arrow_array::{ArrayRef, StructArray};
use arrow_avro::reader::{Decoder, ReaderBuilder};
use arrow_avro::schema::{AvroSchema, Fingerprint, FingerprintAlgorithm, SchemaStore};
use arrow_schema::SchemaRef;

use crate::error::Result;
use crate::input::avro_refs::self_contained;
use crate::input::event::Problem;
use crate::input::framing::{Body, bodies};
use crate::input::registry::{RegisteredSchema, Resolved, SchemaKind};
use crate::input::shape::{ValueRows, ValueShape};
use crate::pipeline::Framing;

/// Decodes Avro values into rows of a value schema (the tree of paths the columns read).
#[derive(Debug)]
pub(crate) struct AvroValues {
    framing: Framing,
    shape: ValueShape,
    /// Each writer schema as arrow-avro reads it (references inlined, checked once), by process-local id, or why
    /// it cannot be read: prepared once per process, not per batch.
    prepared: Mutex<HashMap<u32, std::result::Result<AvroSchema, String>>>,
}

const PREFIX_MAGIC: u8 = 0;
/// A byte that cannot start a Confluent frame: offered after each body to check the decoder is between values.
const NOT_A_FRAME: [u8; 1] = [0xff];

impl AvroValues {
    pub(crate) fn new(framing: Framing, value_schema: SchemaRef) -> AvroValues {
        AvroValues { framing, shape: ValueShape::new(value_schema), prepared: Mutex::new(HashMap::new()) }
    }

    pub(crate) fn relaxed_schema(&self) -> &SchemaRef {
        self.shape.relaxed_schema()
    }

    /// Decode `inputs` (record index, value) with the schemas `resolved` names.
    pub(crate) fn decode(&self, inputs: &[(usize, &[u8])], resolved: &Resolved, registry: &str) -> Result<ValueRows> {
        let mut out = ValueRows::default();
        let mut bodies = bodies(self.framing, inputs, resolved, registry, SchemaKind::Avro, &mut out.rejects);
        let schemas: HashMap<u32, &RegisteredSchema> =
            bodies.iter().map(|b| (b.schema.local, &b.schema.schema)).collect();
        // A schema arrow-avro cannot read rejects its records, not the batch.
        let mut usable: HashMap<u32, AvroSchema> = HashMap::new();
        for (&local, &registered) in &schemas {
            match self.prepared(local, registered) {
                Ok(schema) => {
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
        self.shape.finish(&mut out)?;
        Ok(out)
    }

    /// The schema `local` names, made self-contained and checked by building a decoder with it (once per process).
    fn prepared(&self, local: u32, registered: &RegisteredSchema) -> std::result::Result<AvroSchema, String> {
        let mut cache = self.prepared.lock().expect("prepared schemas lock");
        cache
            .entry(local)
            .or_insert_with(|| {
                let text =
                    self_contained(registered).map_err(|e| arrow_schema::ArrowError::SchemaError(e).to_string())?;
                let schema = AvroSchema::new(text.into_owned());
                new_decoder(&[(local, schema.clone())], 1).map_err(|e| e.to_string())?;
                Ok(schema)
            })
            .clone()
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
        let records: Vec<usize> = pending.iter().map(|b| b.index).collect();
        self.shape.push(&values, &records, out)?;
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
