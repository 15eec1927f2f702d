//! How the poller calls the function: in this process through the real ingest handler (reading the payload
//! exactly as the function does), or through the Lambda invoke API of a function served by
//! `cargo lambda watch`, so the deployed binary itself runs.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use async_trait::async_trait;
use floe_core::{IngestReport, Router};

#[async_trait]
pub trait Invoke: Send + Sync {
    /// Invoke the function with an MSK event payload; `Err` is a function error (the batch is retried).
    async fn invoke(&self, payload: &[u8]) -> anyhow::Result<serde_json::Value>;
}

pub struct InProcess {
    router: Arc<Router>,
}

impl InProcess {
    pub fn new(router: Arc<Router>) -> InProcess {
        InProcess { router }
    }
}

#[async_trait]
impl Invoke for InProcess {
    async fn invoke(&self, payload: &[u8]) -> anyhow::Result<serde_json::Value> {
        let reports = self.router.handle_body_at(payload, chrono::Utc::now().timestamp_millis()).await?;
        let mut total = IngestReport::default();
        for (_, r) in &reports {
            total.add(r);
        }
        Ok(serde_json::to_value(total)?)
    }
}

/// `POST {endpoint}/2015-03-31/functions/{name}/invocations`, the Lambda Invoke API (RequestResponse).
pub struct LambdaApi {
    client: reqwest::Client,
    url: String,
}

impl LambdaApi {
    pub fn new(endpoint: &str, function: &str, timeout: Duration) -> anyhow::Result<LambdaApi> {
        let client = reqwest::Client::builder().timeout(timeout).build()?;
        let url = format!("{}/2015-03-31/functions/{function}/invocations", endpoint.trim_end_matches('/'));
        Ok(LambdaApi { client, url })
    }
}

#[async_trait]
impl Invoke for LambdaApi {
    async fn invoke(&self, payload: &[u8]) -> anyhow::Result<serde_json::Value> {
        let response = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .body(payload.to_vec())
            .send()
            .await
            .with_context(|| format!("invoking {}", self.url))?;
        let status = response.status();
        // A function error is HTTP 200 with this header, as in Lambda's Invoke API.
        let function_error =
            response.headers().get("x-amz-function-error").map(|v| v.to_str().unwrap_or("?").to_string());
        let body = response.bytes().await.context("reading the invoke response")?;
        let text = String::from_utf8_lossy(&body);
        if let Some(kind) = function_error {
            bail!("function error ({kind}): {text}");
        }
        if !status.is_success() {
            bail!("invoke returned HTTP {status}: {text}");
        }
        Ok(serde_json::from_slice(&body).unwrap_or(serde_json::Value::String(text.into_owned())))
    }
}
