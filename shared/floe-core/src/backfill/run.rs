//! Running one split: read its source a chunk at a time and stage each chunk through the deployment's
//! [`Router`] under the pipelines' backfill fences, exactly as ingest stages an MSK event (decode, transforms,
//! dead letters, deterministic file names). Stops at a deadline having staged what it read; the next run of the
//! same split resumes from the fences.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tracing::info;

use super::archive::object_source;
use super::job::OBJECT_DONE;
use super::plan::{Split, SplitSource};
use super::source::SplitReader;
use crate::error::{Error, Result};
use crate::ingest::IngestReport;
use crate::input::event::{PartitionRecords, SourceRecord};
use crate::router::Router;
use crate::state::{StageRequest, StateStore, backfill_key};

/// What one run of a split did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SplitReport {
    pub id: String,
    /// Records read, their key and value bytes, and what became of them (summed over the pipelines).
    pub records: u64,
    pub input_bytes: u64,
    pub rows: u64,
    pub dead_letters: u64,
    pub duplicates: u64,
    pub files: u64,
    pub bytes: u64,
    pub seconds: f64,
    /// The split is loaded; `false`: the deadline came first, run it again to continue.
    pub done: bool,
    /// The next offset to read (the split's end once done).
    pub next: i64,
}

impl SplitReport {
    /// Add another split's counts (a run's total: records, bytes, rows, dead letters, files, seconds).
    pub fn add_split(&mut self, r: &SplitReport) {
        self.records += r.records;
        self.input_bytes += r.input_bytes;
        self.rows += r.rows;
        self.dead_letters += r.dead_letters;
        self.duplicates += r.duplicates;
        self.files += r.files;
        self.bytes += r.bytes;
        self.seconds += r.seconds;
    }

    fn add(&mut self, r: &IngestReport) {
        self.rows += r.rows;
        self.dead_letters += r.dead_letters;
        self.duplicates += r.duplicates;
        self.files += r.files;
        self.bytes += r.bytes;
    }
}

/// Load `split` (or as much as fits before `deadline`) from `reader` through `router`; `progress` sees the
/// records read so far after every staged chunk.
pub async fn run_split(
    router: &Router,
    state: &dyn StateStore,
    split: &Split,
    reader: &mut dyn SplitReader,
    deadline: Option<Instant>,
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<SplitReport> {
    let started = Instant::now();
    let (source, from, to) = match &split.source {
        SplitSource::Kafka(r) => {
            (crate::SourcePartition { topic: r.topic.clone(), partition: r.partition }, r.from, r.to)
        }
        // Lines count from 1; offset 0 is where an unreadable object's one dead letter goes.
        SplitSource::Object(o) => (object_source(o), 0, OBJECT_DONE),
    };
    let object = matches!(split.source, SplitSource::Object(_));
    let readers: Vec<String> = match object {
        true => router.routes().iter().take(1).map(|r| r.pipeline().name.clone()).collect(),
        false => (router.routes().iter())
            .filter(|r| r.pipeline().reads_topic(&source.topic))
            .map(|r| r.pipeline().name.clone())
            .collect(),
    };
    let ends: BTreeMap<String, i64> =
        readers.iter().map(|p| (p.clone(), split.ends.get(p).copied().unwrap_or(to))).collect();
    // Each pipeline resumes at its own fence; the source is read from the earliest of them.
    let mut position = i64::MAX;
    for (pipeline, end) in &ends {
        let fence = state.fence(&backfill_key(pipeline), &source).await?;
        let at = fence.map_or(from, |f| f.max(from));
        if at < *end {
            position = position.min(at);
        }
    }
    let mut report = SplitReport { id: split.id.clone(), next: position.min(to), ..Default::default() };
    if position == i64::MAX {
        report.done = true;
        report.next = to;
        return Ok(report);
    }
    let to = to.min(ends.values().copied().max().unwrap_or(to));
    loop {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let chunk = reader.read(position, to).await?;
        if !chunk.records.is_empty() {
            report.records += chunk.records.len() as u64;
            report.input_bytes += SourceRecord::payload_bytes(&chunk.records);
            let group = PartitionRecords { source: source.clone(), records: chunk.records };
            let now_ms = chrono::Utc::now().timestamp_millis();
            for (_, r) in router.backfill_partition(group, now_ms, &ends).await? {
                report.add(&r);
            }
            progress(report.records);
        }
        if chunk.next <= position && !chunk.end {
            return Err(Error::Invariant(format!("split {}: a read at {position} did not move", split.id)));
        }
        position = chunk.next;
        report.next = position;
        if chunk.end || position >= to {
            report.done = true;
            break;
        }
    }
    if report.done && object {
        // An object is read whole: mark it loaded, so later runs skip it without reading it again.
        for pipeline in &readers {
            let key = backfill_key(pipeline);
            let fence = state.fence(&key, &source).await?;
            if fence == Some(OBJECT_DONE) {
                continue;
            }
            let request = StageRequest {
                pipeline: key.clone(),
                source: source.clone(),
                expected_fence: fence,
                next_fence: OBJECT_DONE,
                first_offset: fence.unwrap_or(from),
                files: Vec::new(),
            };
            match state.stage(&request).await {
                Ok(()) => {}
                Err(Error::Conflict(_)) if state.fence(&key, &source).await? == Some(OBJECT_DONE) => {}
                Err(e) => return Err(e),
            }
        }
        report.next = OBJECT_DONE;
    }
    report.seconds = started.elapsed().as_secs_f64();
    info!(split = %split.id, records = report.records, rows = report.rows, dead_letters = report.dead_letters,
        done = report.done, next = report.next, seconds = report.seconds, "split run");
    Ok(report)
}
