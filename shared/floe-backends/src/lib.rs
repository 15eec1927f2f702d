//! The one place that turns [`FunctionSettings`] into storage backends, so the Lambda binaries stay thin and
//! backend choice (embedded today, AWS next) is made once.

use std::sync::Arc;

use floe_core::config::Pipeline;
use floe_core::settings::{Backend, FunctionSettings};
use floe_core::state::StateStore;
use floe_core::{Error, Result};
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

/// Open the backends the settings name and load the pipeline file (a local path, or `s3://…` read through the
/// warehouse's FileIO). Fails fast with a clear message.
pub async fn open(settings: &FunctionSettings) -> Result<(Arc<Pipeline>, Backends)> {
    let backends = match &settings.backend {
        Backend::Embedded { home } => {
            let e = floe_embedded::Embedded::open(home).await?;
            Backends { warehouse: e.warehouse, file_io: e.file_io, catalog: e.catalog, state: e.state }
        }
        Backend::Aws(aws) => {
            let a = floe_aws::Aws::open(aws).await?;
            Backends { warehouse: a.warehouse, file_io: a.file_io, catalog: a.catalog, state: a.state }
        }
    };
    let path = settings.pipeline_file.to_string_lossy();
    let pipeline = if path.starts_with("s3://") {
        let config_error = |message: String| Error::Config { file: path.to_string(), message };
        let bytes = match backends.file_io.new_input(path.as_ref()) {
            Ok(input) => input.read().await.map_err(|e| config_error(format!("cannot read: {e}")))?,
            Err(e) => return Err(config_error(format!("cannot read: {e}"))),
        };
        let text = String::from_utf8(bytes.to_vec()).map_err(|_| config_error("is not UTF-8 text".into()))?;
        let mut pipeline = Pipeline::parse(&text, &path)?;
        pipeline.base = path.rsplit_once('/').map(|(dir, _)| dir.to_string());
        pipeline
    } else {
        Pipeline::load(&settings.pipeline_file)?
    };
    Ok((Arc::new(pipeline), backends))
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

/// Milliseconds since the epoch (for metric timestamps).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
