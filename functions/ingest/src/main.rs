//! floe ingest Lambda: triggered by the MSK event source mapping. Reads settings and the pipeline file once at
//! cold start (failing fast on any mistake), opens the backends once, then hands every event to the shared
//! ingest handler. An `Err` makes the mapping redeliver the same records, which the offset fences make harmless.

use std::sync::Arc;

use floe_core::config::Pipeline;
use floe_core::ingest::Ingestor;
use floe_core::settings::{Backend, FunctionSettings};
use floe_core::source::MskEvent;
use floe_embedded::Embedded;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use tracing::error;

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing_subscriber::fmt()
        .json()
        .with_current_span(true)
        .without_time()
        .with_target(false)
        .init();
    let settings = FunctionSettings::from_env()?;
    let pipeline = Arc::new(Pipeline::load(&settings.pipeline_file)?);
    let ingestor = match &settings.backend {
        Backend::Embedded { home } => {
            let b = Embedded::open(home).await?;
            Ingestor::new(
                pipeline.clone(),
                &b.warehouse,
                b.file_io.clone(),
                b.state.clone(),
            )?
        }
    };
    let ingestor = &ingestor;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<MskEvent>| async move {
        match ingestor.handle(&event.payload).await {
            Ok(report) => Ok(serde_json::to_value(report)?),
            Err(e) => {
                error!(error = %e, retryable = e.is_retryable(), "ingest failed; the batch will be redelivered");
                Err(Error::from(e))
            }
        }
    }))
    .await
}
