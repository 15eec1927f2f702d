//! The arrow-rs baseline: what the libraries under floe do with nothing around them. A minimal handler a user
//! could write with only serde_json, base64, arrow-json and parquet: read the event, base64-decode each
//! partition's values, decode them with arrow-json against the explicit schema, and write one Parquet file per
//! partition with floe's writer settings (zstd level 1, the parquet crate's defaults otherwise). No dead
//! letters, no fences, no state, no Iceberg metadata.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;

use anyhow::Context;
use arrow_json::ReaderBuilder;
use arrow_schema::SchemaRef;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::Deserialize;

#[derive(Deserialize)]
struct Event<'a> {
    #[serde(borrow)]
    records: BTreeMap<&'a str, Vec<Record<'a>>>,
}

#[derive(Deserialize)]
struct Record<'a> {
    value: &'a str,
}

/// floe's data-file writer settings (see floe-core's `writer.rs`).
pub fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).expect("valid level")))
        .set_created_by("floe".into())
        .build()
}

/// What one call wrote.
#[derive(Debug, Default, Clone, Copy)]
pub struct Written {
    pub rows: u64,
    pub files: u64,
    pub bytes: u64,
}

impl Written {
    pub fn add(&mut self, other: Written) {
        self.rows += other.rows;
        self.files += other.files;
        self.bytes += other.bytes;
    }
}

/// Handle one serialized event, writing `<out>/<name>-<topic-partition>.parquet`.
pub fn handle(
    event: &[u8],
    schema: &SchemaRef,
    properties: &WriterProperties,
    out: &Path,
    name: &str,
) -> anyhow::Result<Written> {
    let event: Event = serde_json::from_slice(event).context("not an MSK event")?;
    let mut written = Written::default();
    let mut buffer = Vec::new();
    for (key, records) in &event.records {
        buffer.clear();
        for record in records {
            STANDARD.decode_vec(record.value, &mut buffer).context("value is not base64")?;
            buffer.push(b'\n');
        }
        let mut decoder = ReaderBuilder::new(schema.clone()).build_decoder()?;
        let path = out.join(format!("{name}-{key}.parquet"));
        let mut writer = ArrowWriter::try_new(File::create(&path)?, schema.clone(), Some(properties.clone()))?;
        let mut rest = buffer.as_slice();
        while !rest.is_empty() {
            let read = decoder.decode(rest)?;
            rest = &rest[read..];
            if let Some(batch) = decoder.flush()? {
                written.rows += batch.num_rows() as u64;
                writer.write(&batch)?;
            }
        }
        writer.close()?;
        written.files += 1;
        written.bytes += std::fs::metadata(&path)?.len();
    }
    Ok(written)
}
