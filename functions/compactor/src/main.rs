//! floe compactor Lambda: runs on a schedule and is the only writer of Iceberg metadata. Commits the staged
//! files of the pipeline's tables; a failed run is simply repeated by the next schedule tick.

use floe_core::compactor::{Compactor, CompactorOptions};
use floe_core::settings::FunctionSettings;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use tracing::error;

#[tokio::main]
async fn main() -> Result<(), Error> {
    floe_backends::init_lambda_tracing();
    let settings = FunctionSettings::from_env()?;
    let (pipeline, b) = floe_backends::open(&settings).await?;
    let options = CompactorOptions::default();
    let compactor = &Compactor::new(pipeline, &b.warehouse, b.catalog.clone(), b.state.clone(), options)?;
    lambda_runtime::run(service_fn(move |_event: LambdaEvent<serde_json::Value>| async move {
        match compactor.run().await {
            Ok(reports) => Ok(serde_json::to_value(reports)?),
            Err(e) => {
                error!(error = %e, retryable = e.is_retryable(), "compaction failed");
                Err(Error::from(e))
            }
        }
    }))
    .await
}
