//! The AWS Glue Schema Registry as a [`SchemaRegistry`]: a Glue-framed value names its schema version by UUID,
//! fetched with `GetSchemaVersion` (IAM: `glue:GetSchemaVersion` on the registry and its schemas). A version of
//! another registry counts as missing, so a pipeline reads only the registry it names.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_glue::error::ProvideErrorMetadata;
use aws_sdk_glue::types::DataFormat;
use floe_core::{RegisteredSchema, SchemaId, SchemaKind, SchemaRegistry, uuid_text};

/// A Glue Schema Registry, by name.
pub struct GlueSchemaRegistry {
    client: aws_sdk_glue::Client,
    registry: String,
}

impl GlueSchemaRegistry {
    /// A client from the environment (Lambda role credentials, `AWS_REGION`, `AWS_ENDPOINT_URL`), with each call
    /// bounded (the SDK retries throttling and transient errors itself).
    pub async fn open(registry: &str) -> GlueSchemaRegistry {
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .operation_attempt_timeout(Duration::from_secs(5))
            .operation_timeout(Duration::from_secs(20))
            .build();
        let config = aws_config::from_env().timeout_config(timeouts).load().await;
        GlueSchemaRegistry { client: aws_sdk_glue::Client::new(&config), registry: registry.to_string() }
    }

    fn error(&self, message: String, retryable: bool) -> floe_core::Error {
        floe_core::Error::Registry { registry: self.describe(), message, retryable }
    }
}

/// The text of a Secrets Manager secret (a registry's `user:secret`), read once at cold start so that it never
/// sits in the function's environment. IAM: `secretsmanager:GetSecretValue` on that secret.
pub async fn secret_string(secret_id: &str) -> Result<String, String> {
    let config = aws_config::from_env().load().await;
    let client = aws_sdk_secretsmanager::Client::new(&config);
    let out = client.get_secret_value().secret_id(secret_id).send().await.map_err(|e| {
        let code = e.code().unwrap_or_default().to_string();
        let message = e.message().map(str::to_string).unwrap_or_else(|| format!("{e:?}"));
        format!("GetSecretValue {secret_id}: {code} {message}")
    })?;
    out.secret_string().map(str::to_string).ok_or_else(|| format!("secret {secret_id} holds no string"))
}

#[async_trait]
impl SchemaRegistry for GlueSchemaRegistry {
    async fn schema(&self, id: SchemaId) -> floe_core::Result<Option<RegisteredSchema>> {
        let SchemaId::Glue(uuid) = id else { return Ok(None) };
        let version = uuid_text(&uuid);
        let out = match self.client.get_schema_version().schema_version_id(&version).send().await {
            Ok(out) => out,
            Err(e) => {
                let code = e.code().unwrap_or_default().to_string();
                return match code.as_str() {
                    "EntityNotFoundException" => Ok(None),
                    "AccessDeniedException" => Err(self.error(
                        format!("GetSchemaVersion {version}: access denied (the function's role needs glue:GetSchemaVersion)"),
                        false,
                    )),
                    _ => {
                        let message = e.message().map(str::to_string).unwrap_or_else(|| format!("{e:?}"));
                        Err(self.error(format!("GetSchemaVersion {version}: {code} {message}"), true))
                    }
                };
            }
        };
        // arn:aws:glue:<region>:<account>:schema/<registry>/<schema>
        let in_registry = out.schema_arn().and_then(|a| a.split(":schema/").nth(1)).and_then(|p| p.split('/').next());
        if in_registry != Some(self.registry.as_str()) {
            return Ok(None);
        }
        let kind = match out.data_format() {
            Some(DataFormat::Avro) => SchemaKind::Avro,
            Some(DataFormat::Protobuf) => SchemaKind::Protobuf,
            Some(DataFormat::Json) => SchemaKind::JsonSchema,
            other => return Err(self.error(format!("schema version {version} has data format {other:?}"), false)),
        };
        let text = out.schema_definition().unwrap_or_default().to_string();
        Ok(Some(RegisteredSchema::new(kind, text)))
    }

    fn describe(&self) -> String {
        format!("glue:{}", self.registry)
    }
}
