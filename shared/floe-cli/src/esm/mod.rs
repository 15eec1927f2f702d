//! A local stand-in for the MSK event source mapping: reads a real Kafka-protocol broker and invokes the ingest
//! handler with the events AWS would send, keeping the mapping's semantics:
//!
//! - records of one partition are delivered in offset order, with at most one invocation in flight per partition
//!   (partitions run concurrently);
//! - a batch closes at `batch_size` records, at the 6 MB payload limit, or when the batching window (counted from
//!   the batch's first record) has passed;
//! - the starting position (`TRIM_HORIZON`, `LATEST`, `AT_TIMESTAMP`) applies only when the mapping has no stored
//!   position for a partition, and the resolved position is stored at once, as the mapping's consumer group does;
//! - a failed invocation is retried with the same payload; the stored position moves only after a success;
//! - with a retry limit, a batch that keeps failing (and a record too large for any payload) goes to an
//!   on-failure destination (a JSON-lines file standing in for SQS) with its topic, partition and offsets.
//!
//! Positions are kept in a file beside the invocation log, so a killed poller resumes where the last successful
//! invocation ended, and redelivers the batch that was in flight, as the mapping does.

mod batch;
mod invoke;
mod offsets;
mod poller;

pub use batch::{Batch, MAX_BATCH_SIZE, MAX_PAYLOAD_BYTES, Origin, Push};
pub use invoke::{InProcess, Invoke, LambdaApi};
pub use offsets::OffsetStore;
pub use poller::{Poller, msk_record};

use std::time::Duration;

/// Where a partition starts when the mapping has no stored position for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartingPosition {
    /// The oldest record still on the broker.
    TrimHorizon,
    /// Only records produced after the mapping first sees the partition.
    Latest,
    /// The first record whose timestamp is at or after this time (milliseconds since the epoch).
    AtTimestamp(i64),
}

impl StartingPosition {
    /// Parse the template's spelling: `TRIM_HORIZON`, `LATEST` or `AT_TIMESTAMP` (with `timestamp_ms`).
    pub fn parse(text: &str, timestamp_ms: Option<i64>) -> Result<StartingPosition, String> {
        match (text, timestamp_ms) {
            ("TRIM_HORIZON", None) => Ok(StartingPosition::TrimHorizon),
            ("LATEST", None) => Ok(StartingPosition::Latest),
            ("AT_TIMESTAMP", Some(ms)) => Ok(StartingPosition::AtTimestamp(ms)),
            ("AT_TIMESTAMP", None) => Err("AT_TIMESTAMP needs a starting timestamp".into()),
            ("TRIM_HORIZON" | "LATEST", Some(_)) => {
                Err(format!("a starting timestamp only goes with AT_TIMESTAMP, not {text}"))
            }
            _ => Err(format!("unknown starting position `{text}`: TRIM_HORIZON, LATEST or AT_TIMESTAMP")),
        }
    }
}

/// The event source mapping's settings, named as in the SAM template.
#[derive(Debug, Clone)]
pub struct Mapping {
    pub topics: Vec<String>,
    /// `BatchSize`: 1 to 10,000 records.
    pub batch_size: usize,
    /// `MaximumBatchingWindowInSeconds`, at millisecond resolution.
    pub batching_window: Duration,
    /// The invocation payload limit (6 MB; smaller only in tests).
    pub max_payload_bytes: usize,
    pub starting_position: StartingPosition,
    /// `MaximumRetryAttempts`: `None` retries until the records expire, as the mapping's default (-1) does.
    pub max_retry_attempts: Option<u32>,
    pub origin: Origin,
}

impl Mapping {
    /// Check the ranges AWS enforces when the mapping is created.
    pub fn validate(&self) -> Result<(), String> {
        if self.topics.is_empty() {
            return Err("the mapping needs at least one topic".into());
        }
        if !(1..=MAX_BATCH_SIZE).contains(&self.batch_size) {
            return Err(format!("BatchSize {} is outside 1..={MAX_BATCH_SIZE}", self.batch_size));
        }
        if self.batching_window > Duration::from_secs(300) {
            return Err(format!("MaximumBatchingWindowInSeconds {:?} is over 300 s", self.batching_window));
        }
        if self.max_payload_bytes == 0 || self.max_payload_bytes > MAX_PAYLOAD_BYTES {
            return Err(format!("payload limit {} is outside 1..={MAX_PAYLOAD_BYTES}", self.max_payload_bytes));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starting_positions_parse_like_the_template() {
        assert_eq!(StartingPosition::parse("LATEST", None), Ok(StartingPosition::Latest));
        assert_eq!(StartingPosition::parse("TRIM_HORIZON", None), Ok(StartingPosition::TrimHorizon));
        assert_eq!(StartingPosition::parse("AT_TIMESTAMP", Some(5)), Ok(StartingPosition::AtTimestamp(5)));
        assert!(StartingPosition::parse("AT_TIMESTAMP", None).unwrap_err().contains("needs a starting timestamp"));
        assert!(StartingPosition::parse("LATEST", Some(5)).is_err());
        assert!(StartingPosition::parse("EARLIEST", None).unwrap_err().contains("TRIM_HORIZON"));
    }

    #[test]
    fn mapping_ranges() {
        let mut m = Mapping {
            topics: vec!["clicks".into()],
            batch_size: 100,
            batching_window: Duration::from_millis(500),
            max_payload_bytes: MAX_PAYLOAD_BYTES,
            starting_position: StartingPosition::TrimHorizon,
            max_retry_attempts: None,
            origin: Origin { event_source_arn: "arn".into(), bootstrap_servers: "b".into() },
        };
        assert_eq!(m.validate(), Ok(()));
        m.batch_size = 10_001;
        assert!(m.validate().unwrap_err().contains("BatchSize"));
        m.batch_size = 10;
        m.batching_window = Duration::from_secs(301);
        assert!(m.validate().unwrap_err().contains("300"));
        m.batching_window = Duration::ZERO;
        m.max_payload_bytes = MAX_PAYLOAD_BYTES + 1;
        assert!(m.validate().is_err());
        m.max_payload_bytes = MAX_PAYLOAD_BYTES;
        m.topics.clear();
        assert!(m.validate().is_err());
    }
}
