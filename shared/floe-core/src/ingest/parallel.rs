//! The topic-partitions of one event, staged at the same time.
//!
//! An MSK invocation carries several topic-partitions, and a Lambda function above 1,769 MB has more than one
//! vCPU. Each partition's step (decode, write, stage) is independent of the others — its own decoder, writer
//! and staging request, fenced on its own — so each runs on a task of its own: on a multi-thread runtime they
//! use the cores in parallel. At most `limit` run at once (memory holds that many partitions' rows and Parquet
//! buffers), and every one runs to its end even when another fails, so an invocation never returns while a
//! partition is half-way through writing (the Lambda sandbox would be frozen under it).

use std::num::NonZeroUsize;

use futures::StreamExt;
use tracing::{Instrument, Span};

use crate::error::{Error, Result};
use crate::ingest::{IngestReport, Ingestor};
use crate::input::event::PartitionRecords;

/// One topic-partition's records for one pipeline, staged under the fences and ledger key `key`.
pub(crate) struct Job {
    pub ingestor: Ingestor,
    pub group: PartitionRecords,
    pub key: String,
    /// The span the step logs in (topic, partition, pipeline).
    pub span: Span,
}

/// Partitions staged at once by default: the CPUs this process may run on (a Lambda function's vCPUs).
pub fn default_concurrency() -> usize {
    std::thread::available_parallelism().map_or(1, NonZeroUsize::get)
}

/// Run `jobs`, at most `limit` at a time, largest first (so a big partition does not start last and run
/// alone); the results are in the order of `jobs`.
pub(crate) async fn run(jobs: Vec<Job>, now_ms: i64, limit: usize) -> Vec<Result<IngestReport>> {
    if limit <= 1 || jobs.len() <= 1 {
        let mut out = Vec::with_capacity(jobs.len());
        for Job { ingestor, group, key, span } in jobs {
            out.push(ingestor.ingest_under(group, now_ms, &key).instrument(span).await);
        }
        return out;
    }
    let mut order: Vec<usize> = (0..jobs.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(jobs[i].group.records.len()));
    let mut slots: Vec<Option<Job>> = jobs.into_iter().map(Some).collect();
    let mut started = Vec::with_capacity(order.len());
    for i in order {
        let Job { ingestor, group, key, span } = slots[i].take().expect("each job once");
        // Spawned when the stream below first polls it: at most `limit` tasks exist at a time.
        started.push(async move {
            let step = async move { ingestor.ingest_under(group, now_ms, &key).await };
            let outcome = tokio::spawn(step.instrument(span)).await;
            (i, outcome.unwrap_or_else(|e| Err(joined(e))))
        });
    }
    let mut results: Vec<Option<Result<IngestReport>>> = (0..slots.len()).map(|_| None).collect();
    let mut finished = futures::stream::iter(started).buffer_unordered(limit);
    while let Some((i, result)) = finished.next().await {
        results[i] = Some(result);
    }
    results.into_iter().map(|r| r.expect("every job finished")).collect()
}

/// A partition's task that did not finish: a panic stays a panic (as it would have been without a task).
fn joined(e: tokio::task::JoinError) -> Error {
    match e.try_into_panic() {
        Ok(panic) => std::panic::resume_unwind(panic),
        Err(e) => Error::Invariant(format!("a partition's task was cancelled: {e}")),
    }
}
