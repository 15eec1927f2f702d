//! One compactor run: commit attempts stop well inside the invocation's deadline (a run that runs out of time
//! leaves the rest staged for the next schedule tick), each table's report is printed as an EMF line, and a
//! table that fails is logged and metered (`TableErrors`) while the run goes on with the others. The invocation
//! still fails when a table did, so the errors alarm fires; the next tick repeats the failed tables' work.

use std::sync::Arc;
use std::time::Duration;

use floe_backends::metrics;
use floe_core::{Backends, Compactor, CompactorOptions, Orphans, Pipeline, TableReport};
use lambda_runtime::Diagnostic;
use tracing::{error, info};

/// Stop starting commit attempts this long before the function times out.
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(60);
/// The least time a run is given, even when the deadline is closer than the margin.
pub const MIN_BUDGET: Duration = Duration::from_secs(1);

/// The compactor handler, built once per cold start: a compactor per pipeline of the deployment, each the only
/// writer of its own tables' metadata.
pub struct Handler {
    compactors: Vec<Compactor>,
}

/// What a scheduled event asks for. Every tick commits and maintains; the daily `OrphanSchedule` event of the
/// template (input `{"remove_orphans": true}`) also removes orphan files afterwards, in the same invocation so
/// that it never competes with a tick for the function's single concurrent execution.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub struct Task {
    #[serde(default)]
    pub remove_orphans: bool,
}

impl Task {
    /// The task of an event: an EventBridge scheduled event (or anything else) is a plain tick.
    pub fn of(event: &serde_json::Value) -> Task {
        serde_json::from_value(event.clone()).unwrap_or_default()
    }
}

/// What a run returns to Lambda: each table's report, each failed table's failure, and the EMF lines printed
/// for CloudWatch (one per report and one per failure).
#[derive(Debug)]
pub struct Outcome {
    pub reports: Vec<TableReport>,
    /// Orphan removal's report per table, when the task asked for it.
    pub orphans: Vec<Orphans>,
    pub failures: Vec<(String, Failure)>,
    pub metrics_lines: Vec<String>,
}

impl Outcome {
    /// The first failed table's failure, if any table failed.
    pub fn failure(self) -> Option<Failure> {
        self.failures.into_iter().next().map(|(_, f)| f)
    }
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
    pub fn new(pipelines: &[Arc<Pipeline>], backends: &Backends) -> floe_core::Result<Handler> {
        let mut compactors = Vec::with_capacity(pipelines.len());
        for pipeline in pipelines {
            let compactor = Compactor::new(pipeline.clone(), backends, CompactorOptions::default())?;
            info!(pipeline = %compactor.pipeline().name, "ready");
            compactors.push(compactor);
        }
        Ok(Handler { compactors })
    }

    /// One plain tick at processing time `now_ms` with `budget` for commit attempts, without printing.
    #[cfg(test)]
    pub async fn run(&self, now_ms: i64, budget: Duration) -> Outcome {
        self.run_task(Task::default(), now_ms, budget).await
    }

    /// One run of `task`: the commits and maintenance, then (if asked) orphan removal with what is left of
    /// `budget`.
    pub async fn run_task(&self, task: Task, now_ms: i64, budget: Duration) -> Outcome {
        let started = std::time::Instant::now();
        let mut outcome =
            Outcome { reports: Vec::new(), orphans: Vec::new(), failures: Vec::new(), metrics_lines: Vec::new() };
        // Pipelines one after the other, each with what is left of the budget: a table that fails does not stop
        // the others, and the next tick repeats what a run left undone.
        for compactor in &self.compactors {
            let left = budget.saturating_sub(started.elapsed()).max(MIN_BUDGET);
            self.run_one(compactor, task, now_ms, left, &mut outcome).await;
        }
        outcome
    }

    async fn run_one(&self, compactor: &Compactor, task: Task, now_ms: i64, budget: Duration, out: &mut Outcome) {
        let started = std::time::Instant::now();
        let run = compactor.run_all_at(now_ms, budget).await;
        let pipeline = &compactor.pipeline().name;
        let stamp = floe_backends::now_ms();
        let mut metrics_lines: Vec<String> =
            run.tables.iter().map(|r| metrics::compactor_line(stamp, pipeline, r)).collect();
        let mut failures: Vec<(String, Failure)> =
            run.failures.into_iter().map(|f| (f.table, Failure::from(f.error))).collect();
        if task.remove_orphans {
            let left = budget.saturating_sub(started.elapsed()).max(MIN_BUDGET);
            let removal = compactor.remove_orphans(now_ms, None, false, left).await;
            metrics_lines.extend(removal.tables.iter().map(|o| metrics::orphans_line(stamp, pipeline, o)));
            failures.extend(removal.failures.into_iter().map(|f| (f.table, Failure::from(f.error))));
            out.orphans.extend(removal.tables);
        }
        for (table, f) in &failures {
            metrics_lines.push(metrics::table_error_line(stamp, pipeline, table, &f.message(), f.retryable));
        }
        metrics_lines.push(metrics::compactor_run_line(stamp, pipeline, &run.tables, failures.len()));
        out.reports.extend(run.tables);
        out.failures.extend(failures);
        out.metrics_lines.extend(metrics_lines);
    }

    /// The Lambda entry point for an invocation of `task` that must finish by `deadline_ms` (epoch milliseconds).
    pub async fn invoke(&self, task: Task, deadline_ms: u64) -> Result<serde_json::Value, Diagnostic> {
        let now = floe_backends::now_ms();
        let outcome = self.run_task(task, now, budget(deadline_ms, now as u64)).await;
        for line in &outcome.metrics_lines {
            println!("{line}");
        }
        if outcome.failures.is_empty() {
            // A tick returns its table reports; the daily run also what orphan removal did.
            let value = if task.remove_orphans {
                serde_json::json!({"tables": outcome.reports, "orphans": outcome.orphans})
            } else {
                serde_json::to_value(outcome.reports).expect("reports serialize")
            };
            return Ok(value);
        }
        let tables: Vec<&str> = outcome.failures.iter().map(|(t, _)| t.as_str()).collect();
        error!(failed = ?tables, committed = outcome.reports.len(), "compaction failed for some tables; the next run retries them");
        Err(diagnostic(outcome.failure().expect("a failure")))
    }
}

#[cfg(test)]
mod tests;
