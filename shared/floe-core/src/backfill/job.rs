//! Planning a backfill against the state store: where each partition's backfill ends (the meeting point with
//! the live stream), what earlier backfills already loaded, and the run's cost cap. The pure cutting and naming
//! is [`super::plan`].
//!
//! **Meeting point.** A pipeline's live stream starts a partition at the first offset it ever staged there (the
//! fence's start). A backfill of the partition ends there: it loads `[from, start)` and live ingest loads
//! `[start, ∞)`. If the live stream has not started yet, the planner creates the live fence at the partition's
//! high watermark `H` (a conditional create: if live ingest wins the race, its start is used instead); live
//! ingest then skips everything below `H`, which the backfill loads. No gap, no overlap.
//!
//! **Never twice.** A pipeline's backfills of a partition share one fence (`<pipeline>~bf`), so together they load
//! one growing range `[start, next)`: a re-run of a finished backfill finds nothing left, a crashed one resumes
//! at `next`, and a backfill that would start before what earlier ones loaded is refused (it would load part of
//! it twice). Archive objects have a fence each, keyed by location and version.

use std::collections::BTreeMap;

use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use super::archive::object_source;
use super::plan::{KafkaRange, ObjectEntry, Split, kafka_splits, object_splits};
use crate::error::{Error, Result};
use crate::input::event::SourcePartition;
use crate::pipeline::Pipeline;
use crate::state::{Fence, StageRequest, StateStore, backfill_key};

/// A partition's range as the job asks for it, its offsets already resolved (timestamps looked up).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionSpan {
    pub topic: String,
    pub partition: i32,
    /// First offset to load (the partition's earliest retained offset for "earliest").
    pub from: i64,
    /// End (exclusive); `None`: where the live stream starts.
    pub to: Option<i64>,
    /// The partition's high watermark now (the live fence's start if the planner creates it).
    pub high: i64,
}

/// What a run may spend: records (Kafka offsets) and bytes (archive objects). Splits are scheduled in order
/// until the next would pass a cap; a Kafka range is cut at the cap. Running the same job again continues.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Cap {
    pub max_records: Option<u64>,
    pub max_bytes: Option<u64>,
}

/// A planned run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Plan {
    pub run: String,
    /// Splits with work left, in order.
    pub splits: Vec<Split>,
    /// Splits already loaded by earlier runs (not scheduled).
    pub done: usize,
    /// The work scheduled: Kafka offsets still to read (an upper bound on records) and archive bytes.
    pub records: u64,
    pub bytes: u64,
    /// The cap held some work back: run the same job again to continue.
    pub capped: bool,
    /// What the planner decided and why (meeting points, skipped objects), for the report.
    pub notes: Vec<String>,
}

/// Backfills load appends: refuse what their history cannot be replayed into.
pub fn check_backfill(pipelines: &[&Pipeline]) -> Result<()> {
    for p in pipelines {
        if p.changes.is_some() {
            return Err(Error::Backfill(format!(
                "pipeline {} reads a change stream (source.changes): a backfill would commit older changes after \
                 newer ones; load the history with a snapshot of the source table instead",
                p.name
            )));
        }
        if let Some(o) = p.outputs.iter().find(|o| o.dedup.is_some() || o.window.is_some()) {
            return Err(Error::Backfill(format!(
                "pipeline {}: output {} keeps state over time (dedup or window), which a backfill of older \
                 records would disturb; backfill a pipeline file without that output",
                p.name, o.table
            )));
        }
    }
    Ok(())
}

/// The offset where `pipeline`'s live stream starts reading `tp`, creating the live fence at `high` if it has not
/// started (not in a dry run). `None` only in a dry run of a partition with no live fence.
async fn live_start(
    state: &dyn StateStore,
    pipeline: &str,
    tp: &SourcePartition,
    high: i64,
    dry_run: bool,
    notes: &mut Vec<String>,
) -> Result<Option<i64>> {
    let predates = || {
        Error::Backfill(format!(
            "the live stream of {pipeline} on {tp} started before floe recorded where fences start; give the \
             backfill an explicit end (--to OFFSET or TIME) at or below the first offset live ingest staged"
        ))
    };
    match state.fence_state(pipeline, tp).await? {
        Some(Fence { start: Some(start), .. }) => Ok(Some(start)),
        Some(Fence { start: None, .. }) => Err(predates()),
        None if dry_run => {
            notes.push(format!("{pipeline} {tp}: no live stream yet; a run creates its fence at {high}"));
            Ok(None)
        }
        None => {
            let create = StageRequest {
                pipeline: pipeline.to_string(),
                source: tp.clone(),
                expected_fence: None,
                next_fence: high,
                first_offset: high,
                files: Vec::new(),
            };
            match state.stage(&create).await {
                Ok(()) => {
                    notes.push(format!("{pipeline} {tp}: live stream fenced to start at {high}"));
                    Ok(Some(high))
                }
                Err(Error::Conflict(_)) => match state.fence_state(pipeline, tp).await? {
                    Some(Fence { start: Some(start), .. }) => Ok(Some(start)),
                    _ => Err(predates()),
                },
                Err(e) => Err(e),
            }
        }
    }
}

/// Plan a Kafka backfill of `spans` for the pipelines of one deployment (each reads the topics it reads).
pub async fn plan_kafka(
    state: &dyn StateStore,
    pipelines: &[&Pipeline],
    run: &str,
    spans: &[PartitionSpan],
    cap: Cap,
    dry_run: bool,
) -> Result<Plan> {
    check_backfill(pipelines)?;
    let name = pipelines.first().map(|p| p.name.as_str()).unwrap_or_default();
    let mut plan = Plan { run: run.to_string(), ..Default::default() };
    for span in spans {
        let tp = SourcePartition { topic: span.topic.clone(), partition: span.partition };
        let readers: Vec<&&Pipeline> = pipelines.iter().filter(|p| p.reads_topic(&span.topic)).collect();
        let (mut ends, mut resume) = (BTreeMap::new(), i64::MAX);
        for p in readers {
            let live = live_start(state, &p.name, &tp, span.high, dry_run, &mut plan.notes).await?;
            let end = match (span.to, live) {
                (Some(to), Some(start)) => to.min(start),
                (Some(to), None) => to,
                (None, Some(start)) => start,
                (None, None) => span.high,
            };
            let mut position = span.from;
            if let Some(loaded) = state.fence_state(&backfill_key(&p.name), &tp).await? {
                let start = loaded.start.unwrap_or(loaded.next);
                if span.from < start && start < loaded.next {
                    return Err(Error::Backfill(format!(
                        "backfills of {} already loaded offsets {start}..{} of {tp}; a backfill continues that \
                         range and cannot start before it (from {} would load part of it twice): start at {start} \
                         or later",
                        p.name, loaded.next, span.from
                    )));
                }
                position = position.max(loaded.next);
            }
            if position < end {
                resume = resume.min(position);
            }
            ends.insert(p.name.clone(), end);
        }
        let to = ends.values().copied().max().unwrap_or(span.from);
        if span.from >= to {
            continue; // nothing to load (the live stream starts at or before `from`)
        }
        if resume >= to {
            plan.done += 1;
            continue;
        }
        let mut records = (to - resume) as u64;
        let mut to = to;
        if let Some(max) = cap.max_records {
            let left = max.saturating_sub(plan.records);
            if left == 0 {
                plan.capped = true;
                break;
            }
            if records > left {
                records = left;
                to = resume + left as i64;
                plan.capped = true;
                for end in ends.values_mut() {
                    *end = (*end).min(to);
                }
            }
        }
        let range = KafkaRange { topic: span.topic.clone(), partition: span.partition, from: span.from, to };
        let mut split = kafka_splits(name, run, &[range], u64::MAX).remove(0);
        split.ends = ends;
        plan.records += records;
        plan.splits.push(split);
        if plan.capped {
            break;
        }
    }
    Ok(plan)
}

/// Whether an object's backfill finished: its fence is at [`OBJECT_DONE`].
pub const OBJECT_DONE: i64 = i64::MAX;

/// Plan an archive backfill of `objects` into `pipeline`: one split per object not loaded yet.
pub async fn plan_objects(
    state: &dyn StateStore,
    pipeline: &Pipeline,
    run: &str,
    objects: &[ObjectEntry],
    cap: Cap,
) -> Result<Plan> {
    check_backfill(&[pipeline])?;
    let key = backfill_key(&pipeline.name);
    let mut plan = Plan { run: run.to_string(), ..Default::default() };
    // Fences are read 16 at a time: an archive may have many thousands of objects.
    let fences: Vec<Option<i64>> = futures::stream::iter(objects)
        .map(|o| {
            let key = key.clone();
            async move { state.fence(&key, &object_source(o)).await }
        })
        .buffered(16)
        .try_collect()
        .await?;
    let done: std::collections::HashSet<&str> =
        objects.iter().zip(&fences).filter(|(_, f)| **f == Some(OBJECT_DONE)).map(|(o, _)| o.key.as_str()).collect();
    for split in object_splits(&pipeline.name, run, objects) {
        let super::plan::SplitSource::Object(o) = &split.source else { unreachable!("object splits") };
        if done.contains(o.key.as_str()) {
            plan.done += 1;
            continue;
        }
        if let Some(max) = cap.max_bytes
            && plan.bytes + o.size > max
            && !plan.splits.is_empty()
        {
            plan.capped = true;
            break;
        }
        plan.bytes += o.size;
        plan.splits.push(split);
    }
    Ok(plan)
}
