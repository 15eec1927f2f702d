//! floe compactor Lambda: runs on a schedule and is the only writer of Iceberg metadata. Commits the staged
//! files of the pipeline's tables; a failed run is simply repeated by the next schedule tick.

use std::sync::Arc;

use floe_core::compactor::{Compactor, CompactorOptions};
use floe_core::config::Pipeline;
use floe_core::settings::{Backend, FunctionSettings};
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
    let compactor = match &settings.backend {
        Backend::Embedded { home } => {
            let b = Embedded::open(home).await?;
            Compactor::new(
                pipeline,
                &b.warehouse,
                b.catalog.clone(),
                b.state.clone(),
                CompactorOptions::default(),
            )?
        }
    };
    let compactor = &compactor;
    lambda_runtime::run(service_fn(
        move |_event: LambdaEvent<serde_json::Value>| async move {
            match compactor.run().await {
                Ok(reports) => Ok(serde_json::to_value(reports)?),
                Err(e) => {
                    error!(error = %e, retryable = e.is_retryable(), "compaction failed");
                    Err(Error::from(e))
                }
            }
        },
    ))
    .await
}
