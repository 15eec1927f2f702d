//! Reading back the Parquet data files floe wrote, as a stream of Arrow record batches: what a merge reads its
//! inputs with. One row group at a time is decoded, so memory stays bounded by the row group, not the file.

use arrow_array::RecordBatch;
use futures::{Stream, TryStreamExt};
use iceberg::arrow::ArrowFileReader;
use iceberg::io::{FileIO, FileMetadata};
use parquet::arrow::ParquetRecordBatchStreamBuilder;

use crate::error::Result;

/// Rows per decoded batch when reading data files back.
pub const READ_BATCH_ROWS: usize = 8_192;

/// The record batches of the data file at `path`, whose size in bytes is `size` (known from its Iceberg
/// metadata: no extra HEAD request).
pub async fn data_file_batches(
    file_io: &FileIO,
    path: &str,
    size: u64,
) -> Result<impl Stream<Item = Result<RecordBatch>> + Send + Unpin + use<>> {
    let input = file_io.new_input(path)?;
    let reader = ArrowFileReader::new(FileMetadata { size }, input.reader().await?);
    let stream = ParquetRecordBatchStreamBuilder::new(reader).await?.with_batch_size(READ_BATCH_ROWS).build()?;
    Ok(stream.map_err(crate::error::Error::from))
}
