//! Key files: the keys one staging step of a change stream touched (see [`crate::input::changes`]), written by
//! ingest beside the step's data files and read by the compactor, which turns them into position deletes. They
//! are floe's own Parquet files, never part of the table: named after the step's source range (a retry writes
//! the same object), listed in the ledger until the commit, deleted after it.

use arrow_array::RecordBatch;
use iceberg::io::FileIO;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::error::Result;
use crate::table::layout::TableLayout;
use crate::table::writer::write_parquet_file;

/// Where the key file of the staging step named `prefix` lives.
pub fn key_file_location(layout: &TableLayout, prefix: &str) -> String {
    format!("{}/changes/{prefix}-keys.parquet", layout.location)
}

/// Write `keys` as the key file of `prefix`; its location and size.
pub async fn write_key_file(
    file_io: &FileIO,
    layout: &TableLayout,
    prefix: &str,
    keys: &RecordBatch,
) -> Result<(String, u64)> {
    let location = key_file_location(layout, prefix);
    let size = write_parquet_file(file_io, &location, keys).await?;
    Ok((location, size))
}

/// Read a key file (small: one staging step's keys).
pub async fn read_key_file(file_io: &FileIO, location: &str) -> Result<Vec<RecordBatch>> {
    let bytes = file_io.new_input(location)?.read().await?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)?.build()?;
    Ok(reader.collect::<std::result::Result<Vec<_>, _>>()?)
}
