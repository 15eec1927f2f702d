//! The Iceberg tables a pipeline writes: their layouts (schema with field ids, partition spec, location,
//! properties) derived from the pipeline file and bound to the table in the catalog ([`layout`]), how a table
//! evolves to take an edited pipeline file ([`evolve`]), rows adapted between schemas by field id ([`adapt`]),
//! the writer that turns Arrow batches into Parquet data files with Iceberg metadata under deterministic names
//! ([`writer`]), and the reader that streams those files back as batches ([`reader`]). Ingest writes with these;
//! the compactor creates and evolves tables from the same layouts and merges small files through the reader and
//! the writer. Change streams also stage key files ([`change_keys`]), floe's own, never committed.

pub(crate) mod adapt;
pub(crate) mod change_keys;
pub(crate) mod evolve;
pub(crate) mod files;
pub(crate) mod layout;
pub(crate) mod reader;
pub(crate) mod writer;

pub use evolve::Evolution;
pub use files::live_data_files;
pub use layout::{TableLayout, dead_letter_columns, table_location};
pub use writer::{TableWriter, file_prefix};
