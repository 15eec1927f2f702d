//! floe ingest Lambda: triggered by the MSK event source mapping. Reads settings and the pipeline file once at
//! cold start (failing fast on any mistake), opens the backends once, then hands every event to the shared
//! ingest handler. An `Err` makes the mapping redeliver the same records, which the offset fences make harmless;
//! errors are logged with whether a retry can help.

use std::time::Instant;

use floe_core::ingest::Ingestor;
use floe_core::metrics;
use floe_core::settings::FunctionSettings;
use floe_core::source::MskEvent;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use tracing::{error, info};

#[tokio::main]
async fn main() -> Result<(), Error> {
    floe_backends::init_lambda_tracing();
    let settings = FunctionSettings::from_env()?;
    let (pipeline, b) = floe_backends::open(&settings).await?;
    let ingestor = &Ingestor::new(pipeline, &b.warehouse, b.file_io.clone(), b.state.clone()).await?;
    info!(pipeline = %ingestor.pipeline().name, table = %ingestor.pipeline().table.name, "ready");
    lambda_runtime::run(service_fn(move |event: LambdaEvent<MskEvent>| async move {
        let started = Instant::now();
        match ingestor.handle(&event.payload).await {
            Ok(report) => {
                let elapsed = started.elapsed().as_millis() as u64;
                println!(
                    "{}",
                    metrics::ingest_line(floe_backends::now_ms(), &ingestor.pipeline().name, &report, elapsed)
                );
                Ok(serde_json::to_value(report)?)
            }
            Err(e) => {
                error!(error = %e, retryable = e.is_retryable(), "ingest failed; the batch will be redelivered");
                Err(Error::from(e))
            }
        }
    }))
    .await
}
