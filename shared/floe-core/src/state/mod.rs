//! The state store: per topic-partition offset fences and the ledger of staged data files.
//!
//! Exactly-once staging rests on one atomic, conditional step ([`StateStore::stage`]): the fence of a
//! topic-partition moves from the value ingest read to the offset after the last record it processed, *and* the
//! files holding those records are recorded, or neither happens. A redelivered or overlapping batch finds the
//! fence past its records and skips them; two concurrent deliveries race on the condition and one loses.
//!
//! Beside the store, [`plan`] keeps the recorded plan of the outputs: the columns ingest's SQL planner found,
//! which the compactor reads instead of planning.

mod plan;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use plan::{plan_location, record_plan, recorded_plan};

use crate::error::Result;
use crate::input::event::SourcePartition;

/// A data file written by ingest and waiting for the compactor to commit it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedFile {
    /// Target table, `namespace.name`.
    pub table: String,
    /// Absolute location of the data file (the ledger key together with `table`).
    pub path: String,
    pub pipeline: String,
    pub source: SourcePartition,
    /// Offset range of the source records this file belongs to (inclusive; the whole delivered range).
    pub first_offset: i64,
    pub last_offset: i64,
    pub record_count: u64,
    pub file_size: u64,
    /// `serialize_data_file_to_json` of the Iceberg data file (partition, statistics).
    pub data_file: String,
    /// The id of the table schema the file was written in (its field ids and types); `None` in ledgers from
    /// before schema evolution, whose files are in the schema the table was created with. The compactor never
    /// commits a file into a table that does not have its schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_id: Option<i32>,
    /// The UUID of the table the file was written for: a table replaced under the same name numbers its
    /// schemas from 0 again, so the schema id alone does not identify the schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_uuid: Option<String>,
    /// What the file holds: rows to commit, or the keys a change set touched (change streams).
    #[serde(default, skip_serializing_if = "StagedContent::is_data")]
    pub content: StagedContent,
}

/// What a staged file holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StagedContent {
    /// A data file of the table: committed as it is.
    #[default]
    Data,
    /// The keys of a change stream's staging step, with their operations and order (a Parquet file that is
    /// never committed: the compactor turns it into position deletes, then deletes it).
    ChangeKeys,
}

impl StagedContent {
    pub fn is_data(&self) -> bool {
        *self == StagedContent::Data
    }

    /// The ledger's spelling (the embedded store's column).
    pub fn as_str(&self) -> &'static str {
        match self {
            StagedContent::Data => "data",
            StagedContent::ChangeKeys => "change_keys",
        }
    }

    pub fn parse(text: Option<&str>) -> StagedContent {
        match text {
            Some("change_keys") => StagedContent::ChangeKeys,
            _ => StagedContent::Data,
        }
    }
}

/// The separator of a ledger key's suffix: `<pipeline>~bf` is the pipeline's backfills, staged under fences
/// and committed under positions of their own (see [`crate::backfill`]).
pub const KEY_SEPARATOR: char = '~';

/// The fence and ledger key of `pipeline`'s backfills.
pub fn backfill_key(pipeline: &str) -> String {
    format!("{pipeline}{KEY_SEPARATOR}bf")
}

/// One atomic staging step for one topic-partition.
#[derive(Debug, Clone)]
pub struct StageRequest {
    pub pipeline: String,
    pub source: SourcePartition,
    /// The fence ingest read (`None`: no fence yet). The step fails with `Error::Conflict` if it moved.
    pub expected_fence: Option<i64>,
    /// The new fence: one past the last offset processed.
    pub next_fence: i64,
    /// The first offset this step covers. A step that creates the fence records it as the fence's start: where
    /// the pipeline began reading the partition, which is where a backfill of its history ends.
    pub first_offset: i64,
    pub files: Vec<StagedFile>,
}

/// A fence as stored: the next offset to process, and the first offset ever staged under it (`None` for fences
/// created before floe recorded starts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    pub next: i64,
    pub start: Option<i64>,
}

/// Where fences and staged files live (SQLite embedded, DynamoDB on AWS); stores also hold the state of
/// stateful outputs ([`crate::stateful::store::StreamStore`]).
#[async_trait]
pub trait StateStore: crate::stateful::store::StreamStore + Send + Sync {
    /// The fence of a topic-partition of a pipeline with its start ([`Fence`]), if any was staged.
    async fn fence_state(&self, pipeline: &str, source: &SourcePartition) -> Result<Option<Fence>>;

    /// Next offset to process for a topic-partition of a pipeline, if any was staged.
    async fn fence(&self, pipeline: &str, source: &SourcePartition) -> Result<Option<i64>> {
        Ok(self.fence_state(pipeline, source).await?.map(|f| f.next))
    }

    /// Atomically check-and-advance the fence and record the staged files.
    async fn stage(&self, request: &StageRequest) -> Result<()>;

    /// All staged, not yet committed files of a table, ordered by (source, first offset, path).
    async fn staged_files(&self, table: &str) -> Result<Vec<StagedFile>>;

    /// Forget staged files once they are in a committed snapshot. The compactor always passes every file of a
    /// staging step together (it never splits a delivered range), so stores may key the ledger by step.
    async fn remove_staged(&self, table: &str, files: &[StagedFile]) -> Result<()>;
}
