//! One ingest invocation: the event goes to the shared [`Ingestor`]; success prints the invocation's EMF line
//! and returns the report; failure is logged with whether a retry can help and returned as an error, which
//! makes the event source mapping redeliver the same records (the offset fences make that harmless).

use std::sync::Arc;
use std::time::Instant;

use floe_backends::metrics;
use floe_core::{Backends, IngestReport, Ingestor, MskEvent, Pipeline, SchemaRegistry};
use lambda_runtime::Diagnostic;
use tracing::{error, info};

/// The ingest handler, built once per cold start.
pub struct Handler {
    ingestor: Ingestor,
}

/// What an invocation returns to Lambda: the report, and the EMF line printed for CloudWatch.
#[derive(Debug)]
pub struct Outcome {
    pub report: IngestReport,
    pub metrics_line: String,
}

pub use floe_backends::Failure;

/// What Lambda reports for a failure: its class as the error type, the error and its causes as the message.
pub fn diagnostic(failure: Failure) -> Diagnostic {
    Diagnostic { error_type: failure.error_type().into(), error_message: failure.message() }
}

impl Handler {
    pub async fn new(
        pipeline: Arc<Pipeline>,
        backends: &Backends,
        registry: Option<Arc<dyn SchemaRegistry>>,
    ) -> floe_core::Result<Handler> {
        let ingestor = Ingestor::with_registry(pipeline, backends, registry).await?;
        let p = ingestor.pipeline();
        info!(pipeline = %p.name, table = %p.table.name, "ready");
        Ok(Handler { ingestor })
    }

    /// Handle one event at processing time `now_ms` (window watermarks), without printing.
    pub async fn handle(&self, event: &MskEvent, now_ms: i64) -> Result<Outcome, Failure> {
        let started = Instant::now();
        let report = self.ingestor.handle_at(event, now_ms).await?;
        let elapsed = started.elapsed().as_millis() as u64;
        let pipeline = &self.ingestor.pipeline().name;
        let metrics_line = metrics::ingest_line(floe_backends::now_ms(), pipeline, &report, elapsed);
        Ok(Outcome { report, metrics_line })
    }

    /// The Lambda entry point: handle, print the metrics line, log a failure with its class.
    pub async fn invoke(&self, event: MskEvent) -> Result<serde_json::Value, Diagnostic> {
        match self.handle(&event, floe_backends::now_ms()).await {
            Ok(outcome) => {
                println!("{}", outcome.metrics_line);
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
