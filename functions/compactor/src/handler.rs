//! One compactor run: commit attempts stop well inside the invocation's deadline (a run that runs out of time
//! leaves the rest staged for the next schedule tick), each table's report is printed as an EMF line, and a
//! failure is logged with whether a retry can help; the next tick repeats a failed run.

use std::sync::Arc;
use std::time::Duration;

use floe_backends::metrics;
use floe_core::{Backends, Compactor, CompactorOptions, Pipeline, TableReport};
use lambda_runtime::Diagnostic;
use tracing::{error, info};

/// Stop starting commit attempts this long before the function times out.
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(60);
/// The least time a run is given, even when the deadline is closer than the margin.
pub const MIN_BUDGET: Duration = Duration::from_secs(1);

/// The compactor handler, built once per cold start.
pub struct Handler {
    compactor: Compactor,
}

/// What a run returns to Lambda: each table's report, and the EMF lines printed for CloudWatch.
#[derive(Debug)]
pub struct Outcome {
    pub reports: Vec<TableReport>,
    pub metrics_lines: Vec<String>,
}

pub use floe_backends::Failure;

/// What Lambda reports for a failure: its class as the error type, the error and its causes as the message.
pub fn diagnostic(failure: Failure) -> Diagnostic {
    Diagnostic { error_type: failure.error_type().into(), error_message: failure.message() }
}

/// The time a run may spend starting commits: what is left before the deadline, less the margin.
pub fn budget(deadline_ms: u64, now_ms: u64) -> Duration {
    let left = Duration::from_millis(deadline_ms.saturating_sub(now_ms));
    left.saturating_sub(DEADLINE_MARGIN).max(MIN_BUDGET)
}

impl Handler {
    pub fn new(pipeline: Arc<Pipeline>, backends: &Backends) -> floe_core::Result<Handler> {
        let compactor = Compactor::new(pipeline, backends, CompactorOptions::default())?;
        info!(pipeline = %compactor.pipeline().name, "ready");
        Ok(Handler { compactor })
    }

    /// One run at processing time `now_ms` with `budget` for commit attempts, without printing.
    pub async fn run(&self, now_ms: i64, budget: Duration) -> Result<Outcome, Failure> {
        let reports = self.compactor.run_at(now_ms, budget).await?;
        let pipeline = &self.compactor.pipeline().name;
        let stamp = floe_backends::now_ms();
        let metrics_lines = reports.iter().map(|r| metrics::compactor_line(stamp, pipeline, r)).collect();
        Ok(Outcome { reports, metrics_lines })
    }

    /// The Lambda entry point for an invocation that must finish by `deadline_ms` (epoch milliseconds).
    pub async fn invoke(&self, deadline_ms: u64) -> Result<serde_json::Value, Diagnostic> {
        let now = floe_backends::now_ms();
        match self.run(now, budget(deadline_ms, now as u64)).await {
            Ok(outcome) => {
                for line in &outcome.metrics_lines {
                    println!("{line}");
                }
                Ok(serde_json::to_value(outcome.reports).expect("reports serialize"))
            }
            Err(failure) => {
                let retryable = failure.retryable;
                error!(error = %failure.message(), retryable, "compaction failed; the next run retries");
                Err(diagnostic(failure))
            }
        }
    }
}

#[cfg(test)]
mod tests;
