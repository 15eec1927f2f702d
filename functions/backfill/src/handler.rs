//! The backfill function's three tasks, one per state of the backfill state machine (template.yaml):
//!
//! - `{"plan": JOB}`: plan the run and write its splits to the warehouse bucket as a JSON array, where the
//!   Distributed Map's `ItemReader` reads them (a run may have more splits than a state's 256 KB payload holds);
//! - `{"split": SPLIT, "job": JOB}`: load one split until the invocation's deadline less a margin; the answer
//!   says whether it is done, and the state machine invokes the same split again until it is (each invocation
//!   resumes from the fences);
//! - `{"summarize": {"Bucket", "Key"}, "run", "pipeline"}`: sum the split reports the Map state wrote to S3
//!   (`ResultWriter`'s manifest), print the run's metrics, and fail the execution if a split failed.
//!
//! Errors are Lambda errors typed `floe.Retryable` (the state machine retries them) or `floe.Permanent`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use floe_backends::backfill::{Backfill, JobSpec};
use floe_backends::{Failure, metrics};
use floe_core::backfill::{Split, SplitReport};
use floe_core::{Backends, Router};
use iceberg::io::FileIO;
use lambda_runtime::Diagnostic;
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::{error, info};

/// Stop starting chunks this long before the function times out (a chunk is read, decoded, written, staged).
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(90);

/// Splits loaded at the same time when neither the job nor the deployment says.
pub const DEFAULT_CONCURRENCY: u32 = 10;

/// What an invocation asks for.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Request {
    Plan { plan: JobSpec },
    Split { split: Split, job: JobSpec },
    Summarize { summarize: ResultWriterDetails, run: String },
}

/// Where a Distributed Map's `ResultWriter` put its manifest (`$.ResultWriterDetails` of the Map's output).
#[derive(Debug, Deserialize)]
pub struct ResultWriterDetails {
    #[serde(rename = "Bucket")]
    pub bucket: String,
    #[serde(rename = "Key")]
    pub key: String,
}

pub struct Handler {
    router: Arc<Router>,
    backends: Backends,
}

fn diagnostic(failure: Failure) -> Diagnostic {
    Diagnostic { error_type: failure.error_type().into(), error_message: failure.message() }
}

fn failed(e: impl Into<Failure>) -> Diagnostic {
    let failure = e.into();
    error!(error = %failure.message(), retryable = failure.retryable, "backfill task failed");
    diagnostic(failure)
}

/// The splits file of a run: under the warehouse, so the function's role can write it and the state machine's
/// read it. Returns (bucket, key) for `s3://` warehouses and ("", location) otherwise.
pub fn splits_location(warehouse: &str, run: &str) -> (String, String, String) {
    let location = format!("{}/_floe/backfill/{run}/splits.json", warehouse.trim_end_matches('/'));
    match location.strip_prefix("s3://").and_then(|rest| rest.split_once('/')) {
        Some((bucket, key)) => (bucket.to_string(), key.to_string(), location.clone()),
        None => (String::new(), location.clone(), location),
    }
}

impl Handler {
    pub fn new(router: Router, backends: Backends) -> Handler {
        Handler { router: Arc::new(router), backends }
    }

    /// The Lambda entry point: one request, to finish by `deadline_ms` (epoch milliseconds).
    pub async fn invoke(&self, event: Value, deadline_ms: u64) -> Result<Value, Diagnostic> {
        let request: Request = serde_json::from_value(event).map_err(|e| Diagnostic {
            error_type: "floe.Permanent".into(),
            error_message: format!(
                "not a backfill request ({e}): expected {{\"plan\": JOB}}, {{\"split\": SPLIT, \"job\": JOB}} or \
                 {{\"summarize\": {{\"Bucket\", \"Key\"}}, \"run\": RUN}}"
            ),
        })?;
        let left = Duration::from_millis(deadline_ms.saturating_sub(floe_backends::now_ms() as u64));
        let deadline = Instant::now() + left.saturating_sub(DEADLINE_MARGIN).max(Duration::from_secs(1));
        match request {
            Request::Plan { plan } => self.plan(plan).await,
            Request::Split { split, job } => self.split(job, &split, deadline).await,
            Request::Summarize { summarize, run } => self.summarize(&summarize, &run).await,
        }
    }

    async fn open(&self, job: JobSpec) -> Result<Backfill, Diagnostic> {
        Backfill::open(job, self.router.clone(), self.backends.clone(), |k| std::env::var(k).ok()).await.map_err(failed)
    }

    async fn plan(&self, job: JobSpec) -> Result<Value, Diagnostic> {
        let backfill = self.open(job.clone()).await?;
        let plan = backfill.plan(false).await.map_err(failed)?;
        let (bucket, key, location) = splits_location(&self.backends.warehouse, &plan.run);
        let body = serde_json::to_vec(&plan.splits).expect("splits serialize");
        let output = self.backends.file_io.new_output(&location).map_err(|e| failed(floe_core::Error::from(e)))?;
        output.write(body.into()).await.map_err(|e| failed(floe_core::Error::from(e)))?;
        info!(run = %plan.run, splits = plan.splits.len(), done = plan.done, records = plan.records,
            bytes = plan.bytes, capped = plan.capped, notes = ?plan.notes, "planned");
        let concurrency = job
            .max_concurrency
            .or_else(|| std::env::var("FLOE_BACKFILL_MAX_CONCURRENCY").ok().and_then(|v| v.parse().ok()));
        Ok(json!({
            "max_concurrency": concurrency.unwrap_or(DEFAULT_CONCURRENCY),
            "run": plan.run, "pipeline": backfill.pipeline(), "job": job, "bucket": bucket, "key": key,
            "splits": plan.splits.len(), "done": plan.done, "records": plan.records, "bytes": plan.bytes,
            "capped": plan.capped, "notes": plan.notes,
        }))
    }

    async fn split(&self, job: JobSpec, split: &Split, deadline: Instant) -> Result<Value, Diagnostic> {
        let backfill = self.open(job).await?;
        let mut progress = |_: u64| {};
        let report = backfill.run(split, Some(deadline), &mut progress).await.map_err(failed)?;
        println!(
            "{}",
            metrics::backfill_split_line(floe_backends::now_ms(), backfill.pipeline(), &backfill.run, &report)
        );
        Ok(serde_json::to_value(&report).expect("reports serialize"))
    }

    async fn summarize(&self, details: &ResultWriterDetails, run: &str) -> Result<Value, Diagnostic> {
        let (total, splits, failed_ids) = read_results(&self.backends.file_io, details).await.map_err(failed)?;
        let pipeline = self.router.routes().first().map(|r| r.pipeline().name.clone()).unwrap_or_default();
        let failed_count = failed_ids.len() as u64;
        println!(
            "{}",
            metrics::backfill_run_line(floe_backends::now_ms(), &pipeline, run, &total, splits, failed_count)
        );
        let summary = json!({
            "run": run, "splits": splits, "failed": failed_ids, "records": total.records, "rows": total.rows,
            "dead_letters": total.dead_letters, "files": total.files, "bytes": total.bytes,
        });
        if failed_count > 0 {
            return Err(Diagnostic {
                error_type: "floe.Permanent".into(),
                error_message: format!("{failed_count} of {splits} splits failed: {summary}"),
            });
        }
        Ok(summary)
    }
}

/// Sum the split reports of a Map run's results: the manifest's `SUCCEEDED` files hold each item's final
/// output (the item's state, its report under `report`), the `FAILED` files the items that failed.
pub async fn read_results(
    file_io: &FileIO,
    details: &ResultWriterDetails,
) -> floe_core::Result<(SplitReport, u64, Vec<String>)> {
    let read = |key: String| {
        // An empty bucket: a local warehouse (the tests), whose keys are locations.
        let location = if details.bucket.is_empty() { key } else { format!("s3://{}/{key}", details.bucket) };
        async move {
            let bytes = file_io.new_input(&location)?.read().await?;
            serde_json::from_slice::<Value>(&bytes)
                .map_err(|e| floe_core::Error::Source { message: format!("{location}: {e}"), retryable: false })
        }
    };
    let manifest = read(details.key.clone()).await?;
    let files = |status: &str| -> Vec<String> {
        manifest["ResultFiles"][status]
            .as_array()
            .map(|a| a.iter().filter_map(|f| f["Key"].as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    };
    let (mut total, mut splits, mut failed) = (SplitReport::default(), 0u64, Vec::new());
    for key in files("SUCCEEDED") {
        for item in read(key).await?.as_array().into_iter().flatten() {
            splits += 1;
            let output: Value =
                item["Output"].as_str().and_then(|o| serde_json::from_str(o).ok()).unwrap_or(Value::Null);
            if let Ok(r) = serde_json::from_value::<SplitReport>(output["report"].clone()) {
                total.add_split(&r);
            }
        }
    }
    for key in files("FAILED") {
        for item in read(key).await?.as_array().into_iter().flatten() {
            splits += 1;
            let input: Value = item["Input"].as_str().and_then(|i| serde_json::from_str(i).ok()).unwrap_or(Value::Null);
            failed.push(input["split"]["id"].as_str().unwrap_or("?").to_string());
        }
    }
    Ok((total, splits, failed))
}

#[cfg(test)]
mod tests;
