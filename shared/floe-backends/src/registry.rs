//! The schema registry a pipeline names (`source.registry`), opened once per process: a Confluent-compatible
//! REST client here; the AWS Glue Schema Registry in `floe-aws`.
//!
//! Every call is bounded: a connect timeout, a request timeout and at most [`ATTEMPTS`] attempts with backoff
//! for what can pass (unreachable, timed out, 429, 5xx), after which the invocation fails retryably and the event
//! source mapping redelivers its records. 401/403 fail permanently with what to fix; 404 means the schema does
//! not exist (its records become dead letters).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use floe_core::{Pipeline, RegisteredSchema, RegistrySpec, SchemaId, SchemaKind, SchemaReference, SchemaRegistry};
use serde::Deserialize;

use crate::error::{Error, Result};

/// `user:secret` for a Confluent-compatible registry's HTTP basic auth (Confluent Cloud: API key and secret), for
/// local runs; deployed functions use [`ENV_REGISTRY_AUTH_SECRET`].
pub const ENV_REGISTRY_AUTH: &str = "FLOE_REGISTRY_AUTH";
/// The ARN of a Secrets Manager secret holding `user:secret`, read at cold start (`template.yaml` parameter
/// `RegistryAuthSecretArn`), so the credentials never sit in the function's environment.
pub const ENV_REGISTRY_AUTH_SECRET: &str = "FLOE_REGISTRY_AUTH_SECRET";
/// Attempts per registry call.
pub const ATTEMPTS: u32 = 3;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const BACKOFF: Duration = Duration::from_millis(200);

/// The registry `pipeline` reads from (`None` for JSON), with credentials from `lookup` ([`ENV_REGISTRY_AUTH`]).
pub async fn open_registry(
    pipeline: &Pipeline,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Option<Arc<dyn SchemaRegistry>>> {
    match &pipeline.format.registry {
        None => Ok(None),
        Some(RegistrySpec::Confluent { url }) => {
            let set = |var: &str| lookup(var).filter(|v| !v.is_empty());
            let (var, text) = match (set(ENV_REGISTRY_AUTH), set(ENV_REGISTRY_AUTH_SECRET)) {
                (Some(v), _) => (ENV_REGISTRY_AUTH, Some(v)),
                (None, Some(arn)) => (ENV_REGISTRY_AUTH_SECRET, Some(secret(&arn).await?)),
                (None, None) => (ENV_REGISTRY_AUTH, None),
            };
            let auth = match text {
                None => None,
                Some(v) => match v.trim().split_once(':') {
                    Some((user, secret)) => Some((user.to_string(), secret.to_string())),
                    None => {
                        return Err(Error::Settings {
                            var: var.into(),
                            message: "must be `user:secret` (an API key and its secret)".into(),
                        });
                    }
                },
            };
            Ok(Some(Arc::new(ConfluentRegistry::new(url, auth)?)))
        }
        Some(RegistrySpec::Glue { registry }) => glue(registry).await,
    }
}

#[cfg(feature = "aws")]
async fn secret(arn: &str) -> Result<String> {
    floe_aws::secret_string(arn)
        .await
        .map_err(|message| Error::Settings { var: ENV_REGISTRY_AUTH_SECRET.into(), message })
}

#[cfg(not(feature = "aws"))]
async fn secret(_: &str) -> Result<String> {
    Err(Error::Settings {
        var: ENV_REGISTRY_AUTH_SECRET.into(),
        message: "this build has no AWS support (built without the `aws` feature): set FLOE_REGISTRY_AUTH".into(),
    })
}

#[cfg(feature = "aws")]
async fn glue(registry: &str) -> Result<Option<Arc<dyn SchemaRegistry>>> {
    Ok(Some(Arc::new(floe_aws::GlueSchemaRegistry::open(registry).await)))
}

#[cfg(not(feature = "aws"))]
async fn glue(_: &str) -> Result<Option<Arc<dyn SchemaRegistry>>> {
    Err(Error::Settings {
        var: "source.registry.glue".into(),
        message: "this build has no AWS support (built without the `aws` feature)".into(),
    })
}

/// A Confluent-compatible registry (Confluent Platform or Cloud, Redpanda, Karapace, Apicurio's ccompat API).
pub struct ConfluentRegistry {
    base: String,
    client: reqwest::Client,
    auth: Option<(String, String)>,
}

/// `GET /schemas/ids/{id}` and `GET /subjects/{subject}/versions/{version}` (the fields floe reads).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SchemaById {
    schema: String,
    #[serde(default)]
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<ReferenceEntry>,
}

#[derive(Deserialize)]
struct ReferenceEntry {
    name: String,
    subject: String,
    version: i64,
}

/// References deeper than this are a cycle or a mistake, not a schema.
const MAX_REFERENCE_DEPTH: usize = 16;

impl ConfluentRegistry {
    pub fn new(base: &str, auth: Option<(String, String)>) -> Result<ConfluentRegistry> {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| Error::Settings { var: "source.registry.url".into(), message: e.to_string() })?;
        Ok(ConfluentRegistry { base: base.trim_end_matches('/').to_string(), client, auth })
    }

    /// A registry answer as a schema, with its references fetched (by subject and version) and resolved.
    fn parse<'a>(
        &'a self,
        body: &'a str,
        what: &'a str,
        depth: usize,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = floe_core::Result<RegisteredSchema>> + Send + 'a>> {
        Box::pin(async move {
            let parsed: SchemaById = serde_json::from_str(body)
                .map_err(|e| self.error(format!("{what}: unexpected answer ({e})"), false))?;
            let kind = match parsed.schema_type.as_deref().unwrap_or("AVRO") {
                "AVRO" => SchemaKind::Avro,
                "PROTOBUF" => SchemaKind::Protobuf,
                "JSON" => SchemaKind::JsonSchema,
                other => return Err(self.error(format!("{what} has unknown schemaType {other}"), false)),
            };
            let mut schema = RegisteredSchema::new(kind, parsed.schema);
            for r in parsed.references {
                if depth >= MAX_REFERENCE_DEPTH {
                    return Err(self.error(format!("{what}: references nest deeper than {MAX_REFERENCE_DEPTH}"), false));
                }
                // Subjects may hold `/`, `:` and other characters a path segment cannot carry as they are.
                let subject = percent_encoding::utf8_percent_encode(&r.subject, percent_encoding::NON_ALPHANUMERIC);
                let path = format!("subjects/{subject}/versions/{}", r.version);
                let referenced = format!("{what}'s reference {} (subject {} version {})", r.name, r.subject, r.version);
                let inner = match self.get(&path).await? {
                    Some(body) => self.parse(&body, &referenced, depth + 1).await?,
                    // A referenced version the registry lost: the schema cannot be read, so its records become
                    // dead letters saying so (an empty text is a missing reference to the decoders).
                    None => {
                        tracing::warn!(reference = %referenced, "a referenced schema is not in the registry");
                        RegisteredSchema::new(kind, String::new())
                    }
                };
                schema.references.push(SchemaReference { name: r.name, schema: inner });
            }
            Ok(schema)
        })
    }

    fn error(&self, message: String, retryable: bool) -> floe_core::Error {
        floe_core::Error::Registry { registry: self.base.clone(), message, retryable }
    }

    async fn get(&self, path: &str) -> floe_core::Result<Option<String>> {
        let url = format!("{}/{path}", self.base);
        let mut last = String::new();
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(BACKOFF * 4u32.pow(attempt - 1)).await;
            }
            let mut request = self.client.get(&url).header("Accept", "application/vnd.schemaregistry.v1+json");
            if let Some((user, secret)) = &self.auth {
                request = request.basic_auth(user, Some(secret));
            }
            let response = match request.send().await {
                Ok(r) => r,
                Err(e) => {
                    last = format!("GET {path}: {e}");
                    continue;
                }
            };
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            match status.as_u16() {
                200 => return Ok(Some(body)),
                404 => return Ok(None),
                401 | 403 => {
                    return Err(self.error(
                        format!(
                            "GET {path}: HTTP {status}: the registry refused floe's credentials ({ENV_REGISTRY_AUTH})"
                        ),
                        false,
                    ));
                }
                429 | 500..=599 => {
                    last = format!("GET {path}: HTTP {status}: {}", body.chars().take(200).collect::<String>())
                }
                _ => {
                    let body: String = body.chars().take(200).collect();
                    return Err(self.error(format!("GET {path}: HTTP {status}: {body}"), false));
                }
            }
        }
        Err(self.error(format!("{last} (after {ATTEMPTS} attempts)"), true))
    }
}

#[async_trait]
impl SchemaRegistry for ConfluentRegistry {
    async fn schema(&self, id: SchemaId) -> floe_core::Result<Option<RegisteredSchema>> {
        let SchemaId::Confluent(n) = id else { return Ok(None) };
        let Some(body) = self.get(&format!("schemas/ids/{n}")).await? else { return Ok(None) };
        Ok(Some(self.parse(&body, &format!("schema id {n}"), 0).await?))
    }

    fn describe(&self) -> String {
        self.base.clone()
    }
}
