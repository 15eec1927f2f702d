//! One ingest invocation: the event (the invocation body, see [`crate::body`]) goes to the deployment's
//! [`Router`] (each pipeline file a route into its own table); success prints an EMF line per pipeline and
//! returns the total report; failure is logged with whether a retry can help and returned as an error, which
//! makes the event source mapping redeliver the same records (the offset fences make that harmless).

use std::time::Instant;

use floe_backends::metrics;
use floe_core::{IngestReport, Router};
use lambda_runtime::Diagnostic;
use tracing::{error, info};

/// The ingest handler, built once per cold start.
pub struct Handler {
    router: Router,
}

/// What an invocation returns to Lambda: the total report, and the EMF lines printed for CloudWatch (one per
/// pipeline, with its own report).
#[derive(Debug)]
pub struct Outcome {
    pub report: IngestReport,
    pub metrics_lines: Vec<String>,
}

pub use floe_backends::Failure;

/// What Lambda reports for a failure: its class as the error type, the error and its causes as the message.
pub fn diagnostic(failure: Failure) -> Diagnostic {
    Diagnostic { error_type: failure.error_type().into(), error_message: failure.message() }
}

impl Handler {
    pub fn new(router: Router) -> Handler {
        for route in router.routes() {
            let p = route.pipeline();
            info!(pipeline = %p.name, table = %p.table.name, "ready");
        }
        Handler { router }
    }

    /// Handle one event, the invocation body as the mapping sent it, at processing time `now_ms` (window
    /// watermarks), without printing.
    pub async fn handle(&self, body: &[u8], now_ms: i64) -> Result<Outcome, Failure> {
        let started = Instant::now();
        let reports = self.router.handle_body_at(body, now_ms).await?;
        let elapsed = started.elapsed().as_millis() as u64;
        let stamp = floe_backends::now_ms();
        let mut report = IngestReport::default();
        let mut metrics_lines = Vec::with_capacity(reports.len());
        for (pipeline, r) in &reports {
            report.add(r);
            metrics_lines.push(metrics::ingest_line(stamp, pipeline, r, elapsed));
        }
        Ok(Outcome { report, metrics_lines })
    }

    /// The Lambda entry point: handle, print the metrics line, log a failure with its class.
    pub async fn invoke(&self, body: &[u8]) -> Result<serde_json::Value, Diagnostic> {
        match self.handle(body, floe_backends::now_ms()).await {
            Ok(outcome) => {
                for line in &outcome.metrics_lines {
                    println!("{line}");
                }
                Ok(serde_json::to_value(outcome.report).expect("the report serializes"))
            }
            Err(failure) => {
                let retryable = failure.retryable;
                error!(error = %failure.message(), retryable, "ingest failed; the batch will be redelivered");
                Err(diagnostic(failure))
            }
        }
    }
}

#[cfg(test)]
mod tests;
