//! floe compactor Lambda: runs on a schedule and is the only writer of Iceberg metadata. Commits the staged
//! files of the pipeline's tables, retrying commit conflicts only while well inside the invocation's deadline;
//! a failed run is simply repeated by the next schedule tick.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use floe_core::compactor::{Compactor, CompactorOptions};
use floe_core::metrics;
use floe_core::settings::FunctionSettings;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use tracing::{error, info};

/// Stop starting commit attempts this long before the function times out.
const DEADLINE_MARGIN: Duration = Duration::from_secs(60);

#[tokio::main]
async fn main() -> Result<(), Error> {
    floe_backends::init_lambda_tracing();
    let settings = FunctionSettings::from_env()?;
    let (pipeline, b) = floe_backends::open(&settings).await?;
    let options = CompactorOptions::default();
    let compactor = &Compactor::new(pipeline, &b.warehouse, b.catalog.clone(), b.state.clone(), options)?;
    info!(pipeline = %compactor.pipeline().name, "ready");
    lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| async move {
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let left = Duration::from_millis(event.context.deadline.saturating_sub(now_ms));
        let budget = left.saturating_sub(DEADLINE_MARGIN).max(Duration::from_secs(1));
        match compactor.run_within(budget).await {
            Ok(reports) => {
                for r in &reports {
                    println!("{}", metrics::compactor_line(floe_backends::now_ms(), &compactor.pipeline().name, r));
                }
                Ok(serde_json::to_value(reports)?)
            }
            Err(e) => {
                error!(error = %e, retryable = e.is_retryable(), "compaction failed; the next run retries");
                Err(Error::from(e))
            }
        }
    }))
    .await
}
