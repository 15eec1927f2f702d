//! The Iceberg tables a pipeline writes: their layouts (schema with field ids, partition spec, location,
//! properties) derived from the pipeline file alone ([`layout`]), and the writer that turns Arrow batches into
//! Parquet data files with Iceberg metadata under deterministic names ([`writer`]), and the reader that streams
//! those files back as batches ([`reader`]). Ingest writes with these; the compactor creates and checks tables
//! from the same layouts and merges small files through the reader and the writer.

pub(crate) mod files;
pub(crate) mod layout;
pub(crate) mod reader;
pub(crate) mod writer;

pub use files::live_data_files;
pub use layout::{TableLayout, dead_letter_columns, table_location};
pub use writer::{TableWriter, file_prefix};
