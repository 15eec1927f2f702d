//! The Iceberg tables a pipeline writes: their layouts (schema with field ids, partition spec, location,
//! properties) derived from the pipeline file alone ([`layout`]), and the writer that turns Arrow batches into
//! Parquet data files with Iceberg metadata under deterministic names ([`writer`]). Ingest writes with these; the
//! compactor creates and checks tables from the same layouts.

pub(crate) mod layout;
pub(crate) mod writer;

pub use layout::{TableLayout, dead_letter_columns, table_location};
pub use writer::{TableWriter, file_prefix};
