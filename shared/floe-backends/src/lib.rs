//! The one place that turns [`FunctionSettings`] into storage backends, so the Lambda binaries stay thin and
//! backend choice (embedded today, AWS next) is made once.

use std::sync::Arc;

use floe_core::Result;
use floe_core::config::Pipeline;
use floe_core::settings::{Backend, FunctionSettings};
use floe_core::state::StateStore;
use iceberg::Catalog;
use iceberg::io::FileIO;

/// Everything a handler needs besides the pipeline.
#[derive(Clone)]
pub struct Backends {
    /// Warehouse root URL (tables live at `<warehouse>/<namespace>/<table>`).
    pub warehouse: String,
    pub file_io: FileIO,
    pub catalog: Arc<dyn Catalog>,
    pub state: Arc<dyn StateStore>,
}

/// Load the pipeline file and open the backends the settings name. Fails fast with a clear message.
pub async fn open(settings: &FunctionSettings) -> Result<(Arc<Pipeline>, Backends)> {
    let pipeline = Arc::new(Pipeline::load(&settings.pipeline_file)?);
    let backends = match &settings.backend {
        Backend::Embedded { home } => {
            let e = floe_embedded::Embedded::open(home).await?;
            Backends {
                warehouse: e.warehouse,
                file_io: e.file_io,
                catalog: e.catalog,
                state: e.state,
            }
        }
    };
    Ok((pipeline, backends))
}

/// JSON logs for CloudWatch (one object per line, span fields such as topic/partition included).
pub fn init_lambda_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(true)
        .without_time() // CloudWatch stamps every line
        .with_target(false)
        .init();
}
