//! The benchmark's records as Avro: each JSON value decoded into the benchmark's Arrow schema (arrow-json) and
//! re-encoded as a Confluent-framed Avro value (arrow-avro's encoder, schema id [`SCHEMA_ID`]), in the same events.
//! The Avro schema is the one arrow-avro derives from the Arrow schema; [`StaticRegistry`] serves it in process,
//! so a run measures decoding, not a registry round trip (which floe makes once per schema and container).

use std::io::Cursor;
use std::path::Path;

use anyhow::Context;
use arrow_avro::schema::{AvroSchema, FingerprintStrategy};
use arrow_avro::writer::WriterBuilder;
use arrow_avro::writer::format::AvroSoeFormat;
use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use floe_core::{RegisteredSchema, SchemaId, SchemaKind, SchemaRegistry};
use serde_json::Value;

use crate::generate;
use crate::reencode::reencode_events;

/// The schema id every converted value names.
pub const SCHEMA_ID: u32 = 1;

/// The Avro schema (JSON text) of the benchmark's records.
pub fn avro_schema() -> anyhow::Result<String> {
    Ok(AvroSchema::try_from(generate::arrow_schema().as_ref())?.json_string)
}

/// Write `<out>/events/*.json` (the events of `<data>` with Avro values), `<out>/schema.avsc`,
/// `<out>/schema.arrow` and `<out>/pipeline.toml` (`format = "avro"`).
pub fn convert(data: &Path, out: &Path) -> anyhow::Result<usize> {
    let schema = generate::arrow_schema();
    let records = reencode_events(data, out, "avro", |list| {
        let mut json = Vec::new();
        for r in list.iter() {
            json.extend(STANDARD.decode(r["value"].as_str().context("a value")?)?);
            json.push(b'\n');
        }
        let mut reader = arrow_json::ReaderBuilder::new(schema.clone())
            .with_batch_size(list.len().max(1))
            .build(Cursor::new(json))?;
        let batch = reader.next().context("values")??;
        let mut encoder = WriterBuilder::new(schema.as_ref().clone())
            .with_fingerprint_strategy(FingerprintStrategy::Id(SCHEMA_ID))
            .build_encoder::<AvroSoeFormat>()?;
        encoder.encode(&batch)?;
        let rows = encoder.flush();
        anyhow::ensure!(rows.len() == list.len(), "{} values encoded as {} rows", list.len(), rows.len());
        for (i, r) in list.iter_mut().enumerate() {
            r["value"] = Value::String(STANDARD.encode(rows.row(i)?));
        }
        Ok(())
    })?;
    std::fs::write(out.join("schema.avsc"), avro_schema()?)?;
    Ok(records)
}

/// A registry holding one schema under [`SCHEMA_ID`].
pub struct StaticRegistry(pub SchemaKind, pub String);

#[async_trait]
impl SchemaRegistry for StaticRegistry {
    async fn schema(&self, id: SchemaId) -> floe_core::Result<Option<RegisteredSchema>> {
        Ok((id == SchemaId::Confluent(SCHEMA_ID)).then(|| RegisteredSchema::new(self.0, self.1.clone())))
    }

    fn describe(&self) -> String {
        "in-process".into()
    }
}
