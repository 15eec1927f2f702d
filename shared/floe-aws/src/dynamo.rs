//! The state store on DynamoDB (one table, on-demand capacity).
//!
//! | item | `pk` | `sk` | attributes |
//! |---|---|---|---|
//! | offset fence | `fence#<pipeline>` | `<topic>#<partition>` | `next_offset` (N), `start_offset` (N, set when created), `updated_at` (S) |
//! | staging step | `staged#<table>` | `<topic>#<partition:010>#<first offset:020>` | `pipeline`, `topic`, `partition`, `first_offset`, `last_offset`, `file_count` (N), `files` (B: zstd JSON of the staged files), `staged_at` |
//!
//! One staging step is one `TransactWriteItems`: the fence update is conditional on the value ingest read
//! (`attribute_not_exists(pk)` for the first step of a partition), and each table's ledger item is put with
//! `attribute_not_exists(pk)`. Either everything happens or nothing does. Fences and ledger items carry no TTL:
//! losing either would lose or duplicate data. Reads of the ledger are strongly consistent.

use std::collections::{BTreeMap, HashMap};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem, Update};
use floe_core::SourcePartition;
use floe_core::{Error, Result};
use floe_core::{Fence, StageRequest, StagedFile, StateStore};

/// Partition and sort key attribute names.
pub const PK: &str = "pk";
pub const SK: &str = "sk";

/// DynamoDB-backed [`StateStore`].
#[derive(Debug, Clone)]
pub struct DynamoStateStore {
    client: Client,
    table: String,
}

/// Map an SDK error: throttling, timeouts, 5xx and transport problems are retryable; the rest are not.
pub(crate) fn sdk_error<E>(what: &str, e: SdkError<E>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let code = e.code().unwrap_or_default().to_string();
    let retryable = match &e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => true,
        SdkError::ServiceError(s) => {
            s.raw().status().is_server_error()
                || matches!(
                    code.as_str(),
                    "ProvisionedThroughputExceededException"
                        | "ThrottlingException"
                        | "RequestLimitExceeded"
                        | "InternalServerError"
                        | "TransactionInProgressException"
                )
        }
        _ => false,
    };
    let message = e.message().map(str::to_string).unwrap_or_else(|| format!("{e:?}"));
    Error::state_caused_by(format!("dynamodb {what}: {code} {message}"), retryable, e)
}

fn now() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    secs.to_string()
}

pub(crate) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(crate) fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn fence_key(pipeline: &str, source: &SourcePartition) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (PK.to_string(), s(format!("fence#{pipeline}"))),
        (SK.to_string(), s(format!("{}#{}", source.topic, source.partition))),
    ])
}

fn staged_key(table: &str, source: &SourcePartition, first_offset: i64) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (PK.to_string(), s(format!("staged#{table}"))),
        (SK.to_string(), s(format!("{}#{:010}#{:020}", source.topic, source.partition, first_offset))),
    ])
}

pub(crate) fn num(item: &HashMap<String, AttributeValue>, name: &str) -> Option<i64> {
    item.get(name).and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok())
}

fn get_n(item: &HashMap<String, AttributeValue>, name: &str) -> Result<i64> {
    num(item, name).ok_or_else(|| Error::state(format!("dynamodb item lacks numeric `{name}`"), false))
}

/// Codes of a cancelled transaction, in item order (`None`: the call failed otherwise).
pub(crate) fn cancellation(e: &SdkError<TransactWriteItemsError>) -> Option<Vec<String>> {
    match e {
        SdkError::ServiceError(se) => match se.err() {
            TransactWriteItemsError::TransactionCanceledException(t) => {
                Some(t.cancellation_reasons().iter().map(|r| r.code().unwrap_or("None").to_string()).collect())
            }
            _ => None,
        },
        _ => None,
    }
}

fn encode_files(files: &[&StagedFile]) -> Result<Blob> {
    let json = serde_json::to_vec(files).map_err(|e| Error::state(format!("encoding staged files: {e}"), false))?;
    let packed = zstd::encode_all(json.as_slice(), 3).map_err(|e| Error::state(format!("zstd: {e}"), false))?;
    // DynamoDB items are limited to 400 KB; zstd keeps thousands of file descriptions well inside it.
    if packed.len() > 380_000 {
        return Err(Error::state(format!("{} staged files do not fit one DynamoDB item", files.len()), false));
    }
    Ok(Blob::new(packed))
}

fn decode_files(blob: &Blob) -> Result<Vec<StagedFile>> {
    let json = zstd::decode_all(blob.as_ref()).map_err(|e| Error::state(format!("zstd: {e}"), false))?;
    serde_json::from_slice(&json).map_err(|e| Error::state(format!("decoding staged files: {e}"), false))
}

impl DynamoStateStore {
    pub fn new(client: Client, table: impl Into<String>) -> DynamoStateStore {
        DynamoStateStore { client, table: table.into() }
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    pub(crate) fn client(&self) -> &Client {
        &self.client
    }
}

#[async_trait]
impl StateStore for DynamoStateStore {
    async fn fence_state(&self, pipeline: &str, source: &SourcePartition) -> Result<Option<Fence>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(fence_key(pipeline, source)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("GetItem", e))?;
        out.item
            .map(|item| Ok(Fence { next: get_n(&item, "next_offset")?, start: num(&item, "start_offset") }))
            .transpose()
    }

    async fn stage(&self, request: &StageRequest) -> Result<()> {
        let key = fence_key(&request.pipeline, &request.source);
        let mut fence = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key))
            .update_expression("SET next_offset = :next, updated_at = :now")
            .expression_attribute_values(":next", n(request.next_fence))
            .expression_attribute_values(":now", s(now()));
        fence = match request.expected_fence {
            None => fence
                .update_expression("SET next_offset = :next, updated_at = :now, start_offset = :start")
                .expression_attribute_values(":start", n(request.first_offset))
                .condition_expression("attribute_not_exists(pk)"),
            Some(expected) => fence
                .condition_expression("next_offset = :expected")
                .expression_attribute_values(":expected", n(expected)),
        };
        let mut items = vec![TransactWriteItem::builder().update(fence.build().map_err(build_error)?).build()];

        let mut by_table: BTreeMap<&str, Vec<&StagedFile>> = BTreeMap::new();
        for f in &request.files {
            by_table.entry(f.table.as_str()).or_default().push(f);
        }
        for (table, files) in by_table {
            let first = files.iter().map(|f| f.first_offset).min().unwrap_or_default();
            let last = files.iter().map(|f| f.last_offset).max().unwrap_or_default();
            let mut item = staged_key(table, &request.source, first);
            item.insert("pipeline".into(), s(&request.pipeline));
            item.insert("topic".into(), s(&request.source.topic));
            item.insert("partition".into(), n(request.source.partition));
            item.insert("first_offset".into(), n(first));
            item.insert("last_offset".into(), n(last));
            item.insert("file_count".into(), n(files.len()));
            item.insert("files".into(), AttributeValue::B(encode_files(&files)?));
            item.insert("staged_at".into(), s(now()));
            let put = Put::builder()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(pk)")
                .build()
                .map_err(build_error)?;
            items.push(TransactWriteItem::builder().put(put).build());
        }

        let result = self.client.transact_write_items().set_transact_items(Some(items)).send().await;
        match result {
            Ok(_) => Ok(()),
            Err(e) => {
                let Some(reasons) = cancellation(&e) else {
                    return Err(sdk_error("TransactWriteItems", e));
                };
                let fence_failed = reasons.first().is_some_and(|c| c == "ConditionalCheckFailed");
                let throttled = reasons.iter().any(|c| c.contains("Throttl") || c == "TransactionConflict");
                if fence_failed {
                    Err(Error::Conflict(format!(
                        "fence of {}/{} is no longer {:?}",
                        request.pipeline, request.source, request.expected_fence
                    )))
                } else {
                    Err(Error::state(format!("dynamodb TransactWriteItems cancelled: {reasons:?}"), throttled))
                }
            }
        }
    }

    async fn staged_files(&self, table: &str) -> Result<Vec<StagedFile>> {
        let mut files = Vec::new();
        let mut pages = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(format!("staged#{table}")))
            .consistent_read(true)
            .into_paginator()
            .items()
            .send();
        while let Some(item) = pages.next().await {
            let item = item.map_err(|e| sdk_error("Query", e))?;
            let blob = item
                .get("files")
                .and_then(|v| v.as_b().ok())
                .ok_or_else(|| Error::state("dynamodb staged item lacks `files`", false))?;
            files.extend(decode_files(blob)?);
        }
        files.sort_by(|a, b| (&a.source, a.first_offset, &a.path).cmp(&(&b.source, b.first_offset, &b.path)));
        Ok(files)
    }

    async fn remove_staged(&self, table: &str, files: &[StagedFile]) -> Result<()> {
        let mut keys: Vec<(SourcePartition, i64)> = files.iter().map(|f| (f.source.clone(), f.first_offset)).collect();
        keys.sort();
        keys.dedup();
        for (source, first) in keys {
            self.client
                .delete_item()
                .table_name(&self.table)
                .set_key(Some(staged_key(table, &source, first)))
                .send()
                .await
                .map_err(|e| sdk_error("DeleteItem", e))?;
        }
        Ok(())
    }
}

pub(crate) fn build_error(e: aws_sdk_dynamodb::error::BuildError) -> Error {
    Error::state_caused_by(format!("building a DynamoDB request: {e}"), false, e)
}
