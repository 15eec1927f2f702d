//! The deployment side shared by the Lambda functions and the `floe` CLI: typed settings read once from the
//! environment ([`FunctionSettings`]), the one place that turns them into [`floe_core::Backends`] ([`open`]),
//! CloudWatch EMF metrics lines ([`metrics`]) and Lambda's JSON logging. What a binary links is chosen with cargo
//! features: `embedded` (SQLite, local warehouse), `aws` (DynamoDB, Glue, S3) and `sql` (SQL planning, for
//! ingest and the CLI).

#[cfg(feature = "kafka")]
pub mod backfill;
mod error;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod metrics;
mod registry;
mod settings;

use std::sync::Arc;

use floe_core::{Backends, Ingestor, Pipeline, Router};

pub use error::{Error, Failure, Result};
pub use registry::{ATTEMPTS, ConfluentRegistry, ENV_REGISTRY_AUTH, ENV_REGISTRY_AUTH_SECRET, open_registry};
pub use settings::*;

/// How a function completes the outputs of its pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Planning {
    /// Plan every output's SQL at load (ingest; needs the `sql` feature).
    #[cfg(feature = "sql")]
    Plan,
    /// Validate the file only; the outputs' columns come from the plan ingest records (the compactor).
    Recorded,
    /// Plan the SQL to reject a statement that cannot run, as ingest would, but leave the outputs to the
    /// recorded plan like [`Planning::Recorded`]: the CLI's compactor, which must behave as the function does.
    #[cfg(feature = "sql")]
    CheckThenRecorded,
}

/// Open the backends the settings name and load the pipeline files (local paths, or `s3://…` read through the
/// warehouse's FileIO), validating each and the set (see [`floe_core::check_routes`]). Fails fast with a clear
/// message.
pub async fn open(settings: &FunctionSettings, planning: Planning) -> Result<(Vec<Arc<Pipeline>>, Backends)> {
    let backends = open_backends(&settings.backend).await?;
    let mut pipelines = Vec::with_capacity(settings.pipeline_files.len());
    for file in &settings.pipeline_files {
        pipelines.push(load_pipeline(file, &backends, planning).await?);
    }
    floe_core::check_routes(&pipelines)?;
    Ok((pipelines.into_iter().map(Arc::new).collect(), backends))
}

/// The ingest side of a deployment: each pipeline's [`Ingestor`] (with its schema registry, credentials looked up
/// with `lookup`) behind one [`Router`].
pub async fn router(
    pipelines: &[Arc<Pipeline>],
    backends: &Backends,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Router> {
    let mut ingestors = Vec::with_capacity(pipelines.len());
    for pipeline in pipelines {
        let registry = open_registry(pipeline, &lookup).await?;
        ingestors.push(Ingestor::with_registry(pipeline.clone(), backends, registry).await?);
    }
    Ok(Router::new(ingestors)?)
}

/// Open one backend.
pub async fn open_backends(backend: &Backend) -> Result<Backends> {
    match backend {
        #[cfg(feature = "embedded")]
        Backend::Embedded { home } => Ok(floe_embedded::Embedded::open(home).await?.backends()),
        #[cfg(not(feature = "embedded"))]
        Backend::Embedded { .. } => Err(Error::Settings {
            var: ENV_BACKEND.into(),
            message: "this build has no `embedded` backend (built without the `embedded` feature)".into(),
        }),
        #[cfg(feature = "aws")]
        Backend::Aws(aws) => Ok(floe_aws::Aws::open(aws).await?.backends()),
    }
}

/// Read and validate a pipeline file, a local path or an `s3://` URL read through the backends' FileIO, and
/// plan its outputs if asked to.
pub async fn load_pipeline(path: &std::path::Path, backends: &Backends, planning: Planning) -> Result<Pipeline> {
    let name = path.to_string_lossy();
    #[cfg_attr(not(feature = "sql"), allow(unused_mut))]
    let mut pipeline = if name.starts_with("s3://") { read_s3(&name, backends).await? } else { Pipeline::load(path)? };
    match planning {
        #[cfg(feature = "sql")]
        Planning::Plan => floe_core::plan(&mut pipeline)?,
        Planning::Recorded => {}
        #[cfg(feature = "sql")]
        Planning::CheckThenRecorded => floe_core::plan(&mut pipeline.clone())?,
    }
    Ok(pipeline)
}

async fn read_s3(name: &str, backends: &Backends) -> Result<Pipeline> {
    let config_error = |message: String| floe_core::Error::Config { file: name.to_string(), message };
    let bytes = match backends.file_io.new_input(name) {
        Ok(input) => input.read().await.map_err(|e| config_error(format!("cannot read: {e}")))?,
        Err(e) => return Err(config_error(format!("cannot read: {e}")).into()),
    };
    let text = String::from_utf8(bytes.to_vec()).map_err(|_| config_error("is not UTF-8 text".into()))?;
    let mut pipeline = Pipeline::parse(&text, name)?;
    pipeline.base = name.rsplit_once('/').map(|(dir, _)| dir.to_string());
    Ok(pipeline)
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
