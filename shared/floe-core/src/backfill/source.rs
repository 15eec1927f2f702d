//! What a split reads from: a Kafka partition (an adapter in `floe-backends`) or an archive object
//! ([`super::archive`]), behind one small trait so the split runner is the same for both.

use async_trait::async_trait;

use crate::error::Result;
use crate::input::event::SourceRecord;

/// Records read from a split's source, in offset order.
#[derive(Debug, Default)]
pub struct Chunk {
    pub records: Vec<SourceRecord>,
    /// The next offset to read after this chunk.
    pub next: i64,
    /// The source has nothing at or past `next` below the range's end: the split is read.
    pub end: bool,
}

/// Reads a split's records a chunk at a time; a chunk becomes one staging step.
#[async_trait]
pub trait SplitReader: Send {
    /// Records with offsets in `[from, to)`, from `from` on: a bounded chunk (a few MB), `end` set when
    /// nothing is left below `to`.
    async fn read(&mut self, from: i64, to: i64) -> Result<Chunk>;
}
