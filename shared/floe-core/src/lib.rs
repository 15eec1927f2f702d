//! floe's pure core: the pipeline file, MSK event decoding, JSON → Arrow, Parquet data files with Iceberg
//! metadata, the exactly-once staging protocol and commit planning. No AWS SDK and no Lambda runtime here:
//! storage sits behind [`StateStore`], Iceberg's `Catalog` trait and `FileIO`, bundled as [`Backends`].
//!
//! The folders follow the data path of the README's diagram, each depending only on those above it in this
//! list (a test checks there is no import circle):
//!
//! - `pipeline/` — the pipeline file: model, validation with file/line/column errors, column types and their
//!   Arrow/Iceberg forms, window arithmetic. Depends on nothing else here.
//! - `table/` — table layouts derived from the pipeline, and the Parquet data-file writer.
//! - `input/` — the MSK event, JSON decoding with its guard, dead letters.
//! - `stateful/` — derived outputs: SQL (DataFusion), dedup, windows, aggregates, sketches, and their store.
//! - `state/` — the state store: offset fences and the ledger of staged files; the recorded plan of the outputs.
//! - `catalog/` — tables loaded, created and evolved to take the pipeline file; metadata swapped in through the
//!   catalog's compare-and-swap.
//! - `ingest` — [`Ingestor`]: an MSK event in, data files written and staged atomically with the fence. The
//!   outputs (SQL with DataFusion) need the `sql` feature; the compactor, and a raw-path-only ingest, build
//!   without it.
//! - `router` — [`Router`]: the pipelines of one deployment (each a route into its own table) sharing one event.
//! - `commit/` — [`Compactor`]: staged files committed as Iceberg snapshots that record source positions; final
//!   windows emitted.
//! - `backfill/` — history from Kafka or an archive: planned against the live stream, cut into splits, each
//!   loaded once under backfill fences through the ingest path.
//! - `testing/` — fault injection, only with the `failpoints` feature.

mod backends;
pub mod backfill;
mod catalog;
mod commit;
mod error;
pub mod failpoint;
pub(crate) mod hash;
mod ingest;
mod input;
mod pipeline;
mod router;
mod state;
mod stateful;
mod table;
#[cfg(feature = "failpoints")]
pub mod testing;

pub use backends::{Backends, ListedObject, MetadataSwap, ObjectLister};
pub use commit::{
    ChangeStats, Compactor, CompactorOptions, DEFAULT_MAX_SNAPSHOT_AGE_MS, DEFAULT_MIN_SNAPSHOTS_TO_KEEP,
    DEFAULT_OLDER_THAN_MS, EXPIRE_BATCH, ExpiryPolicy, MERGED_PREFIX, MIN_OLDER_THAN_MS, OLDER_THAN_MS, OrphanRun,
    Orphans, POSITIONS_PREFIX, Positions, RunReport, TableFailure, TableReport, committed_positions, positions_key,
};
pub use error::{Error, Result};
pub use hash::hash64;
pub use ingest::{IngestReport, Ingestor};
pub use input::{
    Decoded, KnownSchema, MskEvent, MskRecord, PartitionRecords, Problem, RecordDecoder, RegisteredSchema, Resolved,
    SchemaId, SchemaKind, SchemaReference, SchemaRegistry, Schemas, SourcePartition, SourceRecord, group_body,
    group_records, uuid_text,
};
pub use pipeline::window::{WatermarkSpec, Window, WindowSpec};
pub use pipeline::{
    Aggregate, AggregateFn, CHANGE_ENVELOPE, ChangeFormat, Changes, Column, ColumnSource, ColumnType,
    DEFAULT_MAX_NEW_COLUMNS, DEFAULT_TARGET_FILE_SIZE_MB, Dedup, Evolve, Framing, INPUT_TABLE, Output, PartitionField,
    Pipeline, PlanError, Planned, Reference, ReferenceFormat, RegistrySpec, Route, RouteOn, SourceFormat, StructField,
    TableName, TableSpec, TimestampFormat, ValueFormat, WINDOW_END, WINDOW_START, WindowOutput, check_routes,
    topic_matches,
};
pub use router::Router;
pub use state::{
    Fence, StageRequest, StagedContent, StagedFile, StateStore, plan_location, record_plan, recorded_plan,
};
#[cfg(feature = "sql")]
pub use stateful::plan;
pub use stateful::{Cell, CellWrite, ClockWrite, KeyClaim, Partial, StreamStore, WindowProgress};
pub use table::{
    Evolution, TableLayout, TableWriter, dead_letter_columns, file_prefix, live_data_files, table_location,
};

/// Read a pipeline file, validate it and plan its outputs' SQL: what ingest does at cold start and `floe
/// validate` does on the command line.
#[cfg(feature = "sql")]
pub fn load_pipeline(path: &std::path::Path) -> Result<Pipeline> {
    let mut pipeline = Pipeline::load(path)?;
    plan(&mut pipeline)?;
    Ok(pipeline)
}

/// [`load_pipeline`] for text already read (`file` names it in errors).
#[cfg(feature = "sql")]
pub fn parse_pipeline(text: &str, file: &str) -> Result<Pipeline> {
    let mut pipeline = Pipeline::parse(text, file)?;
    plan(&mut pipeline)?;
    Ok(pipeline)
}
