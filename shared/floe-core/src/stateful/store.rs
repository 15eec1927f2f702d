//! State of stateful outputs (key deduplication and event-time windows), behind one small trait implemented on
//! SQLite (embedded) and DynamoDB.
//!
//! Exactness under redelivery comes from fencing every state item by source position, not from transactions
//! spanning a whole batch (DynamoDB transactions hold at most 100 items):
//! - a dedup claim records the position of the record that owns the key, so a redelivered owner is admitted
//!   again and every other record with the key is a duplicate;
//! - a window cell belongs to one source partition and records the last offset applied to it and the closed
//!   watermark it was decided under, so a redelivered batch skips what is applied and re-decides lateness
//!   exactly as before.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::input::event::SourcePartition;
use crate::stateful::aggregate::Acc;

/// Claim a dedup key for the record at `owner` (`topic/partition/offset`), valid until `expires_ms` of record
/// time. The claim is granted if no claim exists, the existing one expired before `event_ms`, or `owner`
/// already holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyClaim {
    pub key: String,
    pub owner: String,
    pub event_ms: i64,
    pub expires_ms: i64,
}

/// Emission progress of a windowed output.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindowProgress {
    /// Watermark through which windows are closed: no record may be added to a window final at it.
    pub closed_ms: Option<i64>,
    /// Watermark through which closed windows are committed to the table and their cells cleaned up.
    pub emitted_ms: Option<i64>,
}

/// Window state of one (window, group, source partition); for session windows one per (group, partition) with
/// that partition's partial sessions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    pub id: String,
    pub group: String,
    pub source: SourcePartition,
    /// Every record of `source` at or below this offset has been decided for this cell.
    pub last_offset: i64,
    /// The closed watermark those decisions were made under.
    pub closed_seen: Option<i64>,
    pub partials: Vec<Partial>,
}

/// Aggregates of one window (or partial session) `[start_ms, end_ms)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Partial {
    pub start_ms: i64,
    pub end_ms: i64,
    pub accs: Vec<Acc>,
}

impl Cell {
    /// When the cell can be forgotten: the largest end of its windows plus the allowed lateness.
    pub fn close_ms(&self, lateness_ms: i64) -> i64 {
        self.partials.iter().map(|p| p.end_ms.saturating_add(lateness_ms)).max().unwrap_or(i64::MIN)
    }
}

/// A conditional write of a cell: `expected_last_offset` is the value read (`None`: the cell must not exist).
#[derive(Debug, Clone)]
pub struct CellWrite {
    pub cell: Cell,
    pub close_ms: i64,
    pub expected_last_offset: Option<i64>,
}

/// Newest event time and processing time of a source partition, for the watermark (stored as maxima).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClockWrite {
    pub source: SourcePartition,
    pub max_event_ms: i64,
    pub now_ms: i64,
}

/// Storage of dedup claims and window state. `scope` is `<pipeline>/<output table>`.
#[async_trait]
pub trait StreamStore: Send + Sync {
    /// Claim keys in bulk (batched reads, conditional writes); returns for each claim whether it was granted.
    async fn claim_keys(&self, scope: &str, claims: &[KeyClaim]) -> Result<Vec<bool>>;

    async fn window_progress(&self, scope: &str) -> Result<WindowProgress>;

    /// Move the closed watermark from `expected` to `closed_ms`; `Error::Conflict` if it moved meanwhile.
    async fn set_closed(&self, scope: &str, expected: Option<i64>, closed_ms: i64) -> Result<()>;

    /// Record that windows through `emitted_ms` are committed (kept as a maximum).
    async fn set_emitted(&self, scope: &str, emitted_ms: i64) -> Result<()>;

    /// Cells by id (`None` where absent), in the order asked.
    async fn get_cells(&self, scope: &str, ids: &[String]) -> Result<Vec<Option<Cell>>>;

    /// All cells of an output, or those whose close time is at most `close_at_most`.
    async fn scan_cells(&self, scope: &str, close_at_most: Option<i64>) -> Result<Vec<Cell>>;

    /// Write cells, each conditional on its `expected_last_offset`, and every write conditional on the closed
    /// watermark still being `expected_closed`. Stores may apply the writes in several atomic groups; a lost
    /// condition yields `Error::Conflict` and the caller re-reads and decides again (what was applied is
    /// fenced by each cell's `last_offset`). Then raises the partition's clock.
    async fn put_cells(
        &self,
        scope: &str,
        expected_closed: Option<i64>,
        writes: &[CellWrite],
        clock: Option<&ClockWrite>,
    ) -> Result<()>;

    /// Delete cells; with `Some(offset)` only if the cell's `last_offset` is still that (else left alone).
    async fn delete_cells(&self, scope: &str, cells: &[(String, Option<i64>)]) -> Result<()>;

    /// Clocks of every source partition seen by the output: (partition, newest event ms, last record ms).
    async fn clocks(&self, scope: &str) -> Result<Vec<(SourcePartition, i64, i64)>>;
}
