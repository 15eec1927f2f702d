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
use tracing::{Instrument, Span, info_span};

use crate::error::{Error, Result};
use crate::ingest::{IngestReport, Ingestor};
use crate::input::event::PartitionRecords;

/// One topic-partition's records for one pipeline, staged under the pipeline's fences.
pub(crate) struct Job {
    ingestor: Ingestor,
    group: PartitionRecords,
    /// The span the step logs in (pipeline, topic, partition).
    span: Span,
}

impl Job {
    pub(crate) fn new(ingestor: &Ingestor, group: PartitionRecords) -> Job {
        let (pipeline, source) = (&ingestor.pipeline().name, &group.source);
        let span = info_span!("partition", pipeline = %pipeline, topic = %source.topic, partition = source.partition);
        Job { ingestor: ingestor.clone(), group, span }
    }

    /// Stage the records under the ledger key of the live stream (the pipeline's name).
    async fn stage(self, now_ms: i64) -> Result<IngestReport> {
        let Job { ingestor, group, span } = self;
        let key = ingestor.pipeline().name.clone();
        ingestor.ingest_under(group, now_ms, &key).instrument(span).await
    }
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
        for job in jobs {
            out.push(job.stage(now_ms).await);
        }
        return out;
    }
    let mut jobs: Vec<(usize, Job)> = jobs.into_iter().enumerate().collect();
    jobs.sort_by_key(|(_, job)| std::cmp::Reverse(job.group.records.len()));
    let mut results: Vec<Option<Result<IngestReport>>> = (0..jobs.len()).map(|_| None).collect();
    // Each task is spawned when the stream first polls its future: at most `limit` tasks exist at a time.
    let started = jobs.into_iter().map(|(i, job)| async move {
        let outcome = tokio::spawn(job.stage(now_ms)).await;
        (i, outcome.unwrap_or_else(|e| Err(joined(e))))
    });
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
