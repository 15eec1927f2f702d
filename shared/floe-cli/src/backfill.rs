//! `floe backfill`: plan a job and load its splits in this process, `--parallel` at a time, with a progress bar
//! (records, splits done, rate, ETA) and a JSON summary. Interrupted, it resumes on the next run from the
//! fences; the same command after a finished run loads nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use floe_backends::backfill::{Backfill, JobSpec, KafkaJob};
use floe_core::backfill::{Split, SplitReport};
use futures::StreamExt;
use serde::Serialize;

use crate::args::BackfillArgs;
use crate::runtime::Runtime;

/// The job `args` describe.
pub fn job(args: &BackfillArgs) -> JobSpec {
    let kafka = args.brokers.as_ref().map(|brokers| KafkaJob {
        brokers: Some(brokers.clone()),
        auth: Some(args.auth.clone()),
        topics: args.topics.clone(),
        from: Some(args.from.clone()),
        to: Some(args.to.clone()),
    });
    JobSpec {
        kafka,
        archive: args.archive.clone(),
        max_records: args.max_records,
        max_bytes: args.max_bytes,
        max_concurrency: None,
    }
}

/// Records read against the plan's estimate (Kafka offsets), or counted as they come (archives: unknown ahead),
/// with the splits done, the rate and the time left.
fn progress_bar(records: u64) -> indicatif::ProgressBar {
    let target = indicatif::ProgressDrawTarget::stderr();
    let (bar, template) = if records > 0 {
        let template = "{bar:40} {pos}/{len} records, {msg} ({per_sec}, {eta} left)";
        (indicatif::ProgressBar::with_draw_target(Some(records), target), template)
    } else {
        (indicatif::ProgressBar::with_draw_target(None, target), "{spinner} {pos} records, {msg} ({per_sec})")
    };
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar.enable_steady_tick(std::time::Duration::from_millis(250));
    bar
}

/// What a run did, printed as JSON.
#[derive(Debug, Default, Serialize)]
struct Summary {
    run: String,
    splits: usize,
    /// Splits an earlier run already loaded.
    already_loaded: usize,
    loaded: usize,
    failed: Vec<String>,
    records: u64,
    rows: u64,
    dead_letters: u64,
    files: u64,
    bytes: u64,
    seconds: f64,
    records_per_second: f64,
    /// The cost cap held work back: run the same command again to continue.
    capped: bool,
}

pub async fn run(rt: &Runtime, args: &BackfillArgs) -> anyhow::Result<()> {
    let spec = job(args);
    if args.print_job {
        println!("{}", serde_json::to_string_pretty(&spec)?);
        return Ok(());
    }
    let router = rt.router().await?;
    let backfill =
        Backfill::open(spec, std::sync::Arc::new(router), rt.backends.clone(), |k| std::env::var(k).ok()).await?;
    let plan = backfill.plan(args.dry_run).await?;
    for note in &plan.notes {
        eprintln!("floe: {note}");
    }
    if args.dry_run {
        println!("{}", serde_json::to_string_pretty(&plan)?);
        return Ok(());
    }
    let started = Instant::now();
    let bar = progress_bar(plan.records);
    let done = AtomicU64::new(0);
    let total = plan.splits.len();
    bar.set_message(format!("0/{total} splits"));
    let load = |split: Split| {
        let (backfill, bar, done) = (&backfill, bar.clone(), &done);
        async move {
            let mut last = 0;
            let mut progress = |records: u64| {
                bar.inc(records - last);
                last = records;
            };
            let result = backfill.run(&split, None, &mut progress).await;
            let finished = done.fetch_add(1, Ordering::Relaxed) + 1;
            bar.set_message(format!("{finished}/{total} splits"));
            (split.id, result)
        }
    };
    let results: Vec<(String, floe_backends::Result<SplitReport>)> =
        futures::stream::iter(plan.splits.clone()).map(load).buffer_unordered(args.parallel.max(1)).collect().await;
    bar.finish_and_clear();

    let mut summary = Summary {
        run: plan.run.clone(),
        splits: plan.splits.len() + plan.done,
        already_loaded: plan.done,
        capped: plan.capped,
        ..Default::default()
    };
    let mut first_error = None;
    for (id, result) in results {
        match result {
            Ok(r) => {
                summary.loaded += usize::from(r.done);
                summary.records += r.records;
                summary.rows += r.rows;
                summary.dead_letters += r.dead_letters;
                summary.files += r.files;
                summary.bytes += r.bytes;
            }
            Err(e) => {
                eprintln!("floe: split {id} failed: {e}");
                summary.failed.push(id);
                first_error.get_or_insert(e);
            }
        }
    }
    summary.seconds = started.elapsed().as_secs_f64();
    summary.records_per_second = summary.records as f64 / summary.seconds.max(1e-9);
    println!("{}", serde_json::to_string(&summary)?);
    match first_error {
        None => Ok(()),
        Some(e) => Err(anyhow::Error::new(e).context(format!("{} of {total} splits failed", summary.failed.len()))),
    }
}
