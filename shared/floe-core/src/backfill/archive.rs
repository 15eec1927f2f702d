//! Archive objects as records: JSON lines (optionally gzip'd) and Parquet, read through the warehouse's FileIO
//! (`s3://` on AWS, `file://` locally) and listed with its [`ObjectLister`]. Each line or row is one record whose
//! offset is its line or row number, counted from 1; the record's topic is the object's location, so dead
//! letters name the object and line, and its timestamp the object's modification time. An object that cannot be read as its format (a corrupt gzip or Parquet
//! file) becomes one dead letter at offset 0 naming the reason, and the rest of the archive loads.

use std::io::Read;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use iceberg::io::FileIO;

use super::plan::ObjectEntry;
use super::source::{Chunk, SplitReader};
use crate::backends::ObjectLister;
use crate::error::{Error, Result};
use crate::input::event::{Problem, SourcePartition, SourceRecord};

/// Records per chunk, and bytes: a chunk is one staging step, so one set of files per table.
const CHUNK_RECORDS: usize = 50_000;
const CHUNK_BYTES: usize = 32 * 1024 * 1024;

/// How an object's bytes become records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectFormat {
    JsonLines { gzip: bool },
    Parquet,
}

impl ObjectFormat {
    /// The format of `key` by its suffix (`.jsonl`, `.ndjson`, `.json`, each optionally `.gz`; `.parquet`), or
    /// `None` for anything else (markers like `_SUCCESS`, other formats).
    pub fn of(key: &str) -> Option<ObjectFormat> {
        let lower = key.to_ascii_lowercase();
        let (inner, gzip) = match lower.strip_suffix(".gz") {
            Some(inner) => (inner.to_string(), true),
            None => (lower, false),
        };
        if [".jsonl", ".ndjson", ".json"].iter().any(|s| inner.ends_with(s)) {
            Some(ObjectFormat::JsonLines { gzip })
        } else if inner.ends_with(".parquet") && !gzip {
            Some(ObjectFormat::Parquet)
        } else {
            None
        }
    }
}

/// The objects under `prefix` that have a known format (in key order), and how many were skipped.
pub async fn list_objects(lister: &dyn ObjectLister, prefix: &str) -> Result<(Vec<ObjectEntry>, Vec<String>)> {
    let mut listed = lister.list(prefix).await?;
    let (mut objects, mut skipped) = (Vec::new(), Vec::new());
    while let Some(object) = listed.next().await {
        let object = object?;
        if ObjectFormat::of(&object.location).is_none() {
            skipped.push(object.location);
            continue;
        }
        let version = format!("{}-{}", object.size, object.last_modified_ms.unwrap_or_default());
        let modified_ms = object.last_modified_ms;
        objects.push(ObjectEntry { key: object.location, version, size: object.size, modified_ms });
    }
    objects.sort_by(|a, b| a.key.cmp(&b.key));
    Ok((objects, skipped))
}

/// The source partition of an object's records: its location, and its version as a partition number (so an
/// object re-uploaded with new content is a new source with fences of its own).
pub fn object_source(object: &ObjectEntry) -> SourcePartition {
    SourcePartition { topic: object.key.clone(), partition: (object.digest() & 0x7fff_ffff) as i32 }
}

/// The records of an object's bytes (see the module doc for offsets and corrupt objects), without timestamps.
pub fn object_records(key: &str, bytes: Bytes) -> Vec<SourceRecord> {
    let parsed = match ObjectFormat::of(key) {
        Some(ObjectFormat::JsonLines { gzip }) => json_lines(bytes, gzip),
        Some(ObjectFormat::Parquet) => parquet_rows(bytes),
        None => Err(format!("`{key}` has no known format (.jsonl, .ndjson, .json, their .gz, .parquet)")),
    };
    parsed.unwrap_or_else(|reason| {
        let problem = Problem { kind: "archive", reason: format!("object {key} cannot be read: {reason}") };
        vec![record(0, None, Some(problem))]
    })
}

fn record(offset: i64, value: Option<Vec<u8>>, problem: Option<Problem>) -> SourceRecord {
    SourceRecord { offset, timestamp_ms: None, key: None, value, headers: Vec::new(), problem }
}

fn json_lines(bytes: Bytes, gzip: bool) -> std::result::Result<Vec<SourceRecord>, String> {
    let text = if gzip {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(bytes.as_ref()).read_to_end(&mut out).map_err(|e| format!("gzip: {e}"))?;
        Bytes::from(out)
    } else {
        bytes
    };
    let mut records = Vec::new();
    for (i, line) in text.split(|b| *b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue; // blank lines (and the final newline) are not records
        }
        records.push(record(i as i64 + 1, Some(line.to_vec()), None));
    }
    Ok(records)
}

/// Parquet rows as JSON values (arrow-json's encoding: timestamps as RFC 3339 text), decoded by the pipeline like
/// any JSON record, so the archive's columns are matched to the table's by name.
fn parquet_rows(bytes: Bytes) -> std::result::Result<Vec<SourceRecord>, String> {
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
        .map_err(|e| format!("parquet: {e}"))?
        .build()
        .map_err(|e| format!("parquet: {e}"))?;
    let mut records = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| format!("parquet: {e}"))?;
        let mut writer = arrow_json::LineDelimitedWriter::new(Vec::new());
        writer.write(&batch).map_err(|e| format!("parquet row as JSON: {e}"))?;
        writer.finish().map_err(|e| format!("parquet row as JSON: {e}"))?;
        for line in writer.into_inner().split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            records.push(record(records.len() as i64 + 1, Some(line.to_vec()), None));
        }
    }
    Ok(records)
}

/// Reads one object (whole, on the first read) and serves its records in chunks.
pub struct ObjectReader {
    file_io: FileIO,
    object: ObjectEntry,
    records: Option<Vec<SourceRecord>>,
}

impl ObjectReader {
    pub fn new(file_io: FileIO, object: ObjectEntry) -> ObjectReader {
        ObjectReader { file_io, object, records: None }
    }
}

#[async_trait]
impl SplitReader for ObjectReader {
    async fn read(&mut self, from: i64, to: i64) -> Result<Chunk> {
        if self.records.is_none() {
            let key = &self.object.key;
            let bytes = self.file_io.new_input(key)?.read().await.map_err(|e| {
                let retryable = e.retryable();
                Error::Source { message: format!("reading {key}: {e}"), retryable }
            })?;
            let mut records = object_records(key, bytes);
            for r in &mut records {
                r.timestamp_ms = self.object.modified_ms;
            }
            self.records = Some(records);
        }
        let all = self.records.as_deref().unwrap_or_default();
        let start = all.partition_point(|r| r.offset < from);
        let (mut records, mut size) = (Vec::new(), 0usize);
        for r in all[start..].iter().take_while(|r| r.offset < to) {
            if records.len() >= CHUNK_RECORDS || (size >= CHUNK_BYTES && !records.is_empty()) {
                break;
            }
            size += r.value.as_ref().map_or(0, Vec::len);
            records.push(r.clone());
        }
        let next = records.last().map_or(from, |r| r.offset + 1);
        let end = all.iter().all(|r| r.offset < next || r.offset >= to);
        Ok(Chunk { records, next, end })
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn offsets_and_values(records: &[SourceRecord]) -> Vec<(i64, String)> {
        records.iter().map(|r| (r.offset, String::from_utf8_lossy(r.value.as_deref().unwrap_or(b"")).into())).collect()
    }

    #[test]
    fn formats_come_from_the_suffix() {
        assert_eq!(ObjectFormat::of("a/b.jsonl.gz"), Some(ObjectFormat::JsonLines { gzip: true }));
        assert_eq!(ObjectFormat::of("a/b.NDJSON"), Some(ObjectFormat::JsonLines { gzip: false }));
        assert_eq!(ObjectFormat::of("a/b.parquet"), Some(ObjectFormat::Parquet));
        assert_eq!(ObjectFormat::of("a/_SUCCESS"), None);
        assert_eq!(ObjectFormat::of("a/b.parquet.gz"), None);
    }

    #[test]
    fn json_lines_are_numbered_by_line_and_skip_blank_ones() {
        let records = object_records("x.jsonl", Bytes::from_static(b"{\"a\":1}\r\n\n{\"a\":2}\nnot json\n"));
        assert_eq!(
            offsets_and_values(&records),
            [(1, "{\"a\":1}".into()), (3, "{\"a\":2}".into()), (4, "not json".into())]
        );
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"{\"a\":1}\n{\"a\":2}\n").unwrap();
        let records = object_records("x.json.gz", Bytes::from(gz.finish().unwrap()));
        assert_eq!(offsets_and_values(&records), [(1, "{\"a\":1}".into()), (2, "{\"a\":2}".into())]);
    }

    #[test]
    fn a_corrupt_object_is_one_dead_letter_naming_it() {
        let records = object_records("s3://b/x.jsonl.gz", Bytes::from_static(b"not gzip at all"));
        assert_eq!(records.len(), 1);
        let problem = records[0].problem.as_ref().expect("a problem");
        assert_eq!((records[0].offset, problem.kind), (0, "archive"));
        assert!(problem.reason.contains("s3://b/x.jsonl.gz") && problem.reason.contains("gzip"), "{}", problem.reason);
        let records = object_records("x.parquet", Bytes::from_static(b"PAR1 truncated"));
        assert!(records[0].problem.as_ref().unwrap().reason.contains("parquet"));
    }

    #[test]
    fn parquet_rows_become_json_values() {
        use std::sync::Arc;
        let schema = Arc::new(arrow_schema::Schema::new(vec![
            arrow_schema::Field::new("id", arrow_schema::DataType::Int64, false),
            arrow_schema::Field::new("name", arrow_schema::DataType::Utf8, true),
        ]));
        let batch = arrow_array::RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(arrow_array::Int64Array::from(vec![1, 2])),
                Arc::new(arrow_array::StringArray::from(vec![Some("a"), None])),
            ],
        )
        .unwrap();
        let mut bytes = Vec::new();
        let mut writer = parquet::arrow::ArrowWriter::try_new(&mut bytes, schema, None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        let records = object_records("x.parquet", Bytes::from(bytes));
        assert_eq!(offsets_and_values(&records), [(1, "{\"id\":1,\"name\":\"a\"}".into()), (2, "{\"id\":2}".into())]);
    }

    #[tokio::test]
    async fn chunks_resume_from_an_offset_and_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.jsonl");
        std::fs::write(&path, "{\"a\":1}\n{\"a\":2}\n\n{\"a\":3}\n").unwrap();
        let file_io = iceberg::io::FileIOBuilder::new(std::sync::Arc::new(iceberg::io::LocalFsStorageFactory)).build();
        let key = format!("file://{}", path.display());
        let object = ObjectEntry { key, version: "1".into(), size: 30, modified_ms: Some(7) };
        let mut reader = ObjectReader::new(file_io, object);
        let chunk = reader.read(2, i64::MAX).await.unwrap();
        assert_eq!(
            chunk.records.iter().map(|r| (r.offset, r.timestamp_ms)).collect::<Vec<_>>(),
            [(2, Some(7)), (4, Some(7))]
        );
        assert_eq!((chunk.next, chunk.end), (5, true));
        let chunk = reader.read(5, i64::MAX).await.unwrap();
        assert!(chunk.records.is_empty() && chunk.end);
        let chunk = reader.read(1, 2).await.unwrap();
        assert_eq!((chunk.records.len(), chunk.next, chunk.end), (1, 2, true));
    }
}
