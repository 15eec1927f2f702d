//! floe's AWS backends, behind the same traits as the embedded ones:
//!
//! - state store: DynamoDB ([`DynamoStateStore`]; table design in `dynamo.rs` and the README);
//! - Iceberg catalog: Glue ([`GlueCatalog`]), readable by Athena;
//! - warehouse: S3 through iceberg's OpenDAL `FileIO` (endpoint override and path-style access for stand-ins),
//!   listed for orphan removal through the same OpenDAL S3 client ([`S3Lister`]).

mod dynamo;
mod dynamo_stream;
mod glue;
mod lister;
pub mod msk_iam;
mod schema_registry;

use std::collections::HashMap;
use std::sync::Arc;

use floe_core::Backends;
use iceberg::io::{FileIO, FileIOBuilder, S3_ENDPOINT, S3_PATH_STYLE_ACCESS, S3_REGION};
use iceberg_storage_opendal::OpenDalStorageFactory;

pub use dynamo::{DynamoStateStore, PK, SK};
pub use glue::GlueCatalog;
pub use lister::S3Lister;
pub use schema_registry::{GlueSchemaRegistry, secret_string};

/// Settings of the AWS backends (read from the function's environment by `floe-backends`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsSettings {
    /// Warehouse root, `s3://bucket/prefix`.
    pub warehouse: String,
    /// DynamoDB table of the state store.
    pub state_table: String,
    /// Glue catalog id (account id); `None` for the caller's account.
    pub glue_catalog_id: Option<String>,
    /// Path-style S3 addressing (local stand-ins).
    pub s3_path_style: bool,
    /// Endpoint override for every service, S3 data files included (local stand-ins).
    pub endpoint_url: Option<String>,
    /// Per-attempt timeout of DynamoDB and Glue calls: a call that hangs is abandoned and retried by the SDK
    /// instead of running into the function timeout.
    pub attempt_timeout_ms: u64,
}

/// The AWS configuration lacks something the backends need.
#[derive(Debug, thiserror::Error)]
#[error("{var} {message}")]
pub struct OpenError {
    /// The environment variable that would supply it.
    pub var: &'static str,
    pub message: String,
}

/// The AWS backends, opened once per cold start.
#[derive(Clone)]
pub struct Aws {
    pub warehouse: String,
    pub file_io: FileIO,
    pub catalog: Arc<GlueCatalog>,
    pub state: Arc<DynamoStateStore>,
    pub lister: Arc<S3Lister>,
}

impl Aws {
    /// Load AWS configuration from the environment (Lambda role credentials, `AWS_REGION`,
    /// `AWS_ENDPOINT_URL`) and build the clients.
    pub async fn open(settings: &AwsSettings) -> Result<Aws, OpenError> {
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .operation_attempt_timeout(std::time::Duration::from_millis(settings.attempt_timeout_ms))
            .build();
        let config = aws_config::from_env().timeout_config(timeouts).load().await;
        let region = config
            .region()
            .map(|r| r.to_string())
            .ok_or_else(|| OpenError { var: "AWS_REGION", message: "is not set".into() })?;
        let lister = Arc::new(S3Lister::new(region.clone(), settings.endpoint_url.clone(), settings.s3_path_style));
        let mut props = HashMap::from([(S3_REGION.to_string(), region)]);
        if let Some(endpoint) = &settings.endpoint_url {
            props.insert(S3_ENDPOINT.to_string(), endpoint.clone());
        }
        props.insert(S3_PATH_STYLE_ACCESS.to_string(), settings.s3_path_style.to_string());
        let file_io = FileIOBuilder::new(Arc::new(OpenDalStorageFactory::S3 { customized_credential_load: None }))
            .with_props(props)
            .build();
        let dynamo = aws_sdk_dynamodb::Client::new(&config);
        let glue = aws_sdk_glue::Client::new(&config);
        Ok(Aws {
            warehouse: settings.warehouse.trim_end_matches('/').to_string(),
            catalog: Arc::new(GlueCatalog::new(glue, file_io.clone(), settings.glue_catalog_id.clone())),
            state: Arc::new(DynamoStateStore::new(dynamo, &settings.state_table)),
            lister,
            file_io,
        })
    }
}

impl Aws {
    /// The backends as the handlers take them.
    pub fn backends(&self) -> Backends {
        Backends {
            warehouse: self.warehouse.clone(),
            file_io: self.file_io.clone(),
            catalog: self.catalog.clone(),
            swap: self.catalog.clone(),
            lister: self.lister.clone(),
            state: self.state.clone(),
        }
    }
}
