//! Backfills (see docs/design/backfill.md): a job's history, from a Kafka cluster or an archive of objects, cut
//! into splits with deterministic identities ([`plan`]), planned against the live stream and earlier backfills
//! ([`job`]), and each loaded through the same path as ingest under the pipelines' backfill fences ([`run`]).
//! The compactor commits backfilled files under positions of their own (`floe.positions.<pipeline>~bf`).

pub mod archive;
pub mod job;
pub mod plan;
pub mod run;
pub mod source;

pub use archive::{ObjectFormat, ObjectReader, list_objects, object_records, object_source};
pub use job::{Cap, OBJECT_DONE, PartitionSpan, Plan, check_backfill, plan_kafka, plan_objects};
pub use plan::{KafkaRange, ObjectEntry, Split, SplitSource, kafka_splits, object_splits, run_id};
pub use run::{SplitReport, run_split};
pub use source::{Chunk, SplitReader};
