//! Arrow rows → Parquet data files with Iceberg metadata (field ids, partition values, column statistics).
//!
//! File names are deterministic: `<prefix>-<NNNNN>.parquet` where the prefix is derived from the pipeline and the
//! source offset range, and partitions are written in sorted order. A retried invocation over the same records
//! therefore rewrites the very same objects (with the very same bytes) instead of leaving duplicates behind.

use std::sync::{Arc, Mutex};

use arrow_array::RecordBatch;
use iceberg::arrow::RecordBatchPartitionSplitter;
use iceberg::io::FileIO;
use iceberg::spec::{DataFile, DataFileFormat, FormatVersion, PartitionKey, Struct, serialize_data_file_to_json};
use iceberg::writer::base_writer::data_file_writer::DataFileWriterBuilder;
use iceberg::writer::file_writer::ParquetWriterBuilder;
use iceberg::writer::file_writer::location_generator::{
    DefaultFileNameGenerator, DefaultLocationGenerator, FileNameGenerator, LocationGenerator,
};
use iceberg::writer::file_writer::rolling_writer::RollingFileWriterBuilder;
use iceberg::writer::{IcebergWriter, IcebergWriterBuilder};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

use crate::error::{Error, Result};
use crate::table::adapt::adapt;
use crate::table::layout::TableLayout;

pub use crate::pipeline::COMPRESSION_CODEC_PROPERTY;

/// Largest row group a writer buffers before flushing it (Athena and PyIceberg read row groups of this size
/// well; larger ones only cost the writer memory).
pub const MAX_ROW_GROUP_BYTES: usize = 32 * 1024 * 1024;

/// Writes data files for one table.
#[derive(Clone)]
pub struct TableWriter {
    layout: TableLayout,
    file_io: FileIO,
    properties: WriterProperties,
    /// Computes partition values; `None` for an unpartitioned table.
    splitter: Option<Arc<RecordBatchPartitionSplitter>>,
}

impl std::fmt::Debug for TableWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableWriter").field("table", &self.layout.name).finish_non_exhaustive()
    }
}

impl TableWriter {
    pub fn new(layout: TableLayout, file_io: FileIO) -> Result<TableWriter> {
        let codec = layout.properties.get(COMPRESSION_CODEC_PROPERTY).map_or("zstd", String::as_str);
        // Validated when the pipeline file is loaded; checked again for layouts built by hand.
        let compression = match codec {
            "zstd" => Compression::ZSTD(ZstdLevel::try_new(1).expect("valid level")),
            "uncompressed" => Compression::UNCOMPRESSED,
            other => {
                return Err(Error::Config {
                    file: "pipeline".into(),
                    message: format!(
                        "table property {COMPRESSION_CODEC_PROPERTY} = `{other}`: use zstd or uncompressed"
                    ),
                });
            }
        };
        let mut properties = WriterProperties::builder();
        // Change streams look keys up in committed files: a bloom filter per key column lets the compactor skip
        // row groups that cannot hold a key (see `crate::commit::changes`).
        for key in &layout.primary_key {
            properties = properties.set_column_bloom_filter_enabled(ColumnPath::from(key.as_str()), true);
        }
        let properties = properties
            .set_compression(compression)
            // Constant writer identity: part of what makes a rewrite byte-identical.
            .set_created_by("floe".into())
            // Bounds the writer's memory when a merge streams a whole partition into one target-size file.
            .set_max_row_group_bytes(Some(MAX_ROW_GROUP_BYTES))
            .build();
        let splitter = match layout.spec.is_unpartitioned() {
            true => None,
            false => Some(Arc::new(RecordBatchPartitionSplitter::try_new_with_computed_values(
                layout.schema.clone(),
                layout.spec.clone(),
            )?)),
        };
        Ok(TableWriter { layout, file_io, properties, splitter })
    }

    pub fn layout(&self) -> &TableLayout {
        &self.layout
    }

    /// Write `batch` (in the table's schema, or in the layout's [`TableLayout::input`]: adapted by field id),
    /// split by partition, as data files named `<prefix>-NNNNN.parquet`.
    pub async fn write(&self, batch: RecordBatch, prefix: &str) -> Result<Vec<DataFile>> {
        let batch = adapt(batch, &self.layout.arrow_schema)?;
        let parts: Vec<(Option<PartitionKey>, RecordBatch)> = if let Some(splitter) = &self.splitter {
            let mut parts: Vec<(String, PartitionKey, RecordBatch)> =
                splitter.split(&batch)?.into_iter().map(|(k, b)| (k.to_path(), k, b)).collect();
            // The splitter's order is not specified: sort so file numbering is deterministic.
            parts.sort_by(|a, b| a.0.cmp(&b.0));
            parts.into_iter().map(|(_, k, b)| (Some(k), b)).collect()
        } else {
            vec![(None, batch)]
        };
        let mut files = Vec::new();
        // One builder, so one file numbering across partitions: each name is unique within the prefix.
        let builder = self.builder(self.names(prefix));
        for (key, part) in parts {
            let mut writer = builder.build(key).await?;
            writer.write(part).await?;
            files.extend(writer.close().await?);
        }
        Ok(files)
    }

    /// A writer of one partition's rows (`partition`: a data file's partition value, as in its metadata) into
    /// files named `<prefix>-NNNNN.parquet` that roll over at the table's target file size. Batches are encoded
    /// as they arrive: memory holds one row group, not the files.
    pub async fn partition_writer(&self, partition: &Struct, prefix: &str) -> Result<PartitionWriter> {
        let key = match self.layout.spec.is_unpartitioned() {
            true => None,
            false => Some(PartitionKey::new(
                self.layout.spec.as_ref().clone(),
                self.layout.schema.clone(),
                partition.clone(),
            )),
        };
        let names = self.names(prefix);
        let locations = names.issued.clone();
        let paths = (self.locations(), key.clone());
        Ok(PartitionWriter {
            inner: self.builder(names).build(key).await?,
            arrow_schema: self.layout.arrow_schema.clone(),
            file_io: self.file_io.clone(),
            issued: locations,
            paths,
        })
    }

    fn names(&self, prefix: &str) -> IssuedNames {
        IssuedNames {
            inner: DefaultFileNameGenerator::new(prefix.to_string(), None, DataFileFormat::Parquet),
            issued: Arc::default(),
        }
    }

    fn locations(&self) -> DefaultLocationGenerator {
        DefaultLocationGenerator::with_data_location(format!("{}/data", self.layout.location))
    }

    fn builder(&self, names: IssuedNames) -> FileWriterBuilder {
        DataFileWriterBuilder::new(RollingFileWriterBuilder::new(
            ParquetWriterBuilder::new(self.properties.clone(), self.layout.schema.clone()),
            self.layout.target_file_size,
            self.file_io.clone(),
            self.locations(),
            names,
        ))
    }

    /// JSON form of a data file (how ingest hands files to the compactor through the state store).
    pub fn data_file_json(&self, file: &DataFile) -> Result<String> {
        Ok(serialize_data_file_to_json(file.clone(), &self.layout.partition_type, FormatVersion::V2)?)
    }

    /// Parse a data file handed over as JSON.
    pub fn data_file_from_json(layout: &TableLayout, json: &str) -> Result<DataFile> {
        Ok(iceberg::spec::deserialize_data_file_from_json(
            json,
            layout.spec.spec_id(),
            &layout.partition_type,
            &layout.schema,
        )?)
    }
}

type FileWriterBuilder = DataFileWriterBuilder<ParquetWriterBuilder, DefaultLocationGenerator, IssuedNames>;

/// iceberg's file names (`<prefix>-NNNNN.parquet`), remembering each name issued: a writer that is abandoned
/// knows every file it may have started (see [`PartitionWriter::abandon`]).
#[derive(Clone, Debug)]
struct IssuedNames {
    inner: DefaultFileNameGenerator,
    issued: Arc<Mutex<Vec<String>>>,
}

impl FileNameGenerator for IssuedNames {
    fn generate_file_name(&self) -> String {
        let name = self.inner.generate_file_name();
        self.issued.lock().expect("not poisoned").push(name.clone());
        name
    }
}

/// Rows of one partition on their way into rolling data files (see [`TableWriter::partition_writer`]).
pub struct PartitionWriter {
    inner: <FileWriterBuilder as IcebergWriterBuilder>::R,
    arrow_schema: arrow_schema::SchemaRef,
    file_io: FileIO,
    issued: Arc<Mutex<Vec<String>>>,
    paths: (DefaultLocationGenerator, Option<PartitionKey>),
}

impl PartitionWriter {
    /// Append a batch, read from a data file written under any schema of the table: its columns are matched
    /// to the table's current schema by field id (see [`crate::table::adapt`]).
    pub async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        let batch = adapt(batch, &self.arrow_schema)?;
        Ok(self.inner.write(batch).await?)
    }

    /// Finish the open file; the data files written, in order.
    pub async fn close(mut self) -> Result<Vec<DataFile>> {
        Ok(self.inner.close().await?)
    }

    /// Give up: delete every file this writer started (finished or not; on a local file system an unfinished
    /// one exists, partly written), so a failed merge leaves nothing behind. Returns the paths it could not
    /// delete (they are unreferenced: orphan removal takes them).
    pub async fn abandon(self) -> Vec<String> {
        let names = std::mem::take(&mut *self.issued.lock().expect("not poisoned"));
        drop(self.inner);
        let (locations, key) = &self.paths;
        let mut left = Vec::new();
        for name in names {
            let path = locations.generate_location(key.as_ref(), &name);
            if self.file_io.delete(&path).await.is_err() {
                left.push(path);
            }
        }
        left
    }
}

/// File-name prefix for the rows of one source range: stable across retries, unique per range and table.
pub fn file_prefix(pipeline: &str, topic: &str, partition: i32, first: i64, last: i64) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if topic.chars().all(safe) {
        return format!("{pipeline}-{topic}-{partition}-{first:020}-{last:020}");
    }
    // A source that is not a Kafka topic (an archive object's location): its characters made safe for a file
    // name, and its hash so that two locations never share a name.
    let cleaned: String = topic.chars().map(|c| if safe(c) { c } else { '_' }).collect();
    let tail = &cleaned[cleaned.len().saturating_sub(80)..];
    let hash = crate::hash::hash64(topic.as_bytes());
    format!("{pipeline}-{tail}-{hash:016x}-{partition}-{first:020}-{last:020}")
}

/// Write `batch` as one small Parquet file at `location` with floe's codec settings (zstd 1, constant writer
/// identity: the same batch gives the same bytes), for floe's own files that are not table data files: key files
/// and position-delete files. Returns its size in bytes.
pub async fn write_parquet_file(file_io: &FileIO, location: &str, batch: &RecordBatch) -> Result<u64> {
    let properties = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).expect("valid level")))
        .set_created_by("floe".into())
        .build();
    let mut buffer = Vec::new();
    let mut writer = parquet::arrow::ArrowWriter::try_new(&mut buffer, batch.schema(), Some(properties))?;
    writer.write(batch)?;
    writer.close()?;
    let size = buffer.len() as u64;
    file_io.new_output(location)?.write(bytes::Bytes::from(buffer)).await?;
    Ok(size)
}
