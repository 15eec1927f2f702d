//! Backfills (issue 20, in progress; see docs/design/backfill.md): a job's history cut into splits with
//! deterministic identities ([`plan`]), each loaded once under its own fence by the same path as ingest.

pub mod plan;

pub use plan::{KafkaRange, ObjectEntry, Split, SplitSource, kafka_splits, object_splits, run_id};
