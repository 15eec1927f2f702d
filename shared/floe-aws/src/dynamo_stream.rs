//! Dedup claims and window state on DynamoDB, in the state store's table.
//!
//! | item | `pk` | `sk` | attributes |
//! |---|---|---|---|
//! | dedup claim | `dedup#<scope>#<key>` | `k` | `owner` (S), `expires_ms` (N, record time), `expires_at` (N, epoch seconds: the table's TTL attribute) |
//! | window progress | `winprog#<scope>` | `-` | `closed_ms`, `emitted_ms` (N) |
//! | window cell | `cell#<scope>#<shard 0..15>` | cell id | `close_ms`, `last_offset` (N), `body` (S, JSON) |
//! | partition clock | `clock#<scope>` | `<topic>#<partition>` | `max_event_ms`, `last_seen_ms` (N) |
//!
//! Access is batched: keys and cells are read with `BatchGetItem` (100 per call, strongly consistent) and written
//! with `TransactWriteItems` (up to 100 conditional items per call), so a batch costs round trips per hundred
//! distinct keys or cells, never per record. Dedup claims carry the TTL attribute `expires_at`; the
//! claim check itself compares record times, so a claim DynamoDB has not yet deleted is still judged correctly.
//! Cells are spread over 16 partition keys per output so one busy output does not hit a single-partition limit.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::{AttributeValue, ConditionCheck, KeysAndAttributes, Put, TransactWriteItem};
use floe_core::SourcePartition;
use floe_core::{Cell, CellWrite, ClockWrite, KeyClaim, StreamStore, WindowProgress};
use floe_core::{Error, Result};
use futures::{StreamExt, TryStreamExt};

use crate::dynamo::{DynamoStateStore, PK, SK, build_error, cancellation, n, num, s, sdk_error};

const SHARDS: u64 = 16;
/// Items per `TransactWriteItems` (DynamoDB's limit is 100; one slot is kept for the watermark check).
const TRANSACT_MAX: usize = 99;
const BATCH_GET_MAX: usize = 100;
const CLAIM_ATTEMPTS: u32 = 5;

fn key(pk: String, sk: impl Into<String>) -> HashMap<String, AttributeValue> {
    HashMap::from([(PK.to_string(), s(pk)), (SK.to_string(), s(sk))])
}

/// Partition key of a claim. Keys longer than 1 KiB are replaced by a 64-bit hash and their length (DynamoDB
/// caps a partition key at 2 KiB): two such keys collide with probability about 2^-64.
fn dedup_pk(scope: &str, k: &str) -> String {
    if k.len() > 1024 {
        format!("dedup#{scope}##{:016x}:{}", floe_core::hash64(k.as_bytes()), k.len())
    } else {
        format!("dedup#{scope}#{k}")
    }
}

fn dedup_key(scope: &str, k: &str) -> HashMap<String, AttributeValue> {
    key(dedup_pk(scope, k), "k")
}

fn progress_key(scope: &str) -> HashMap<String, AttributeValue> {
    key(format!("winprog#{scope}"), "-")
}

fn cell_key(scope: &str, id: &str) -> HashMap<String, AttributeValue> {
    let shard = floe_core::hash64(id.as_bytes()) % SHARDS;
    key(format!("cell#{scope}#{shard}"), id)
}

fn text<'a>(item: &'a HashMap<String, AttributeValue>, name: &str) -> Option<&'a str> {
    item.get(name).and_then(|v| v.as_s().ok()).map(String::as_str)
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn cell_from(item: &HashMap<String, AttributeValue>) -> Result<Cell> {
    let body = text(item, "body").ok_or_else(|| Error::state("dynamodb window cell lacks `body`", false))?;
    serde_json::from_str(body).map_err(|e| Error::state(format!("unreadable window cell: {e}"), false))
}

impl DynamoStateStore {
    /// Strongly consistent `BatchGetItem` of any number of keys; items come back keyed by `(pk, sk)`.
    async fn batch_get(
        &self,
        keys: Vec<HashMap<String, AttributeValue>>,
    ) -> Result<HashMap<(String, String), HashMap<String, AttributeValue>>> {
        let mut found = HashMap::new();
        for chunk in keys.chunks(BATCH_GET_MAX) {
            let mut pending = Some(
                KeysAndAttributes::builder()
                    .set_keys(Some(chunk.to_vec()))
                    .consistent_read(true)
                    .build()
                    .map_err(build_error)?,
            );
            while let Some(request) = pending.take() {
                let out = self
                    .client()
                    .batch_get_item()
                    .request_items(self.table(), request)
                    .send()
                    .await
                    .map_err(|e| sdk_error("BatchGetItem", e))?;
                for item in out.responses.unwrap_or_default().remove(self.table()).unwrap_or_default() {
                    let pk = text(&item, PK).unwrap_or_default().to_string();
                    let sk = text(&item, SK).unwrap_or_default().to_string();
                    found.insert((pk, sk), item);
                }
                // Throttled keys come back unprocessed; ask again (the SDK already backs off per call).
                pending = out.unprocessed_keys.and_then(|mut u| u.remove(self.table())).filter(|k| !k.keys.is_empty());
            }
        }
        Ok(found)
    }

    async fn transact(&self, items: Vec<TransactWriteItem>, what: &str) -> Result<()> {
        match self.client().transact_write_items().set_transact_items(Some(items)).send().await {
            Ok(_) => Ok(()),
            Err(e) => match cancellation(&e) {
                Some(codes) if codes.iter().any(|c| c == "ConditionalCheckFailed") => {
                    Err(Error::Conflict(format!("{what}: a condition failed ({codes:?})")))
                }
                Some(codes) => {
                    let retryable = codes.iter().any(|c| c.contains("Throttl") || c == "TransactionConflict");
                    Err(Error::state(format!("dynamodb {what} cancelled: {codes:?}"), retryable))
                }
                None => Err(sdk_error("TransactWriteItems", e)),
            },
        }
    }
}

#[async_trait]
impl StreamStore for DynamoStateStore {
    async fn claim_keys(&self, scope: &str, claims: &[KeyClaim]) -> Result<Vec<bool>> {
        let mut granted = vec![false; claims.len()];
        let mut todo: Vec<usize> = (0..claims.len()).collect();
        for attempt in 1..=CLAIM_ATTEMPTS {
            let keys = todo.iter().map(|i| dedup_key(scope, &claims[*i].key)).collect();
            let items = self.batch_get(keys).await?;
            let mut to_write = Vec::new();
            for &i in &todo {
                let c = &claims[i];
                let item = items.get(&(dedup_pk(scope, &c.key), "k".to_string()));
                granted[i] = match item {
                    None => true,
                    Some(it) => {
                        text(it, "owner") == Some(c.owner.as_str()) || num(it, "expires_ms").unwrap_or(0) <= c.event_ms
                    }
                };
                if granted[i] {
                    to_write.push(i);
                }
            }
            let mut lost = Vec::new();
            for chunk in to_write.chunks(TRANSACT_MAX) {
                let mut items = Vec::with_capacity(chunk.len());
                for &i in chunk {
                    let c = &claims[i];
                    let mut item = dedup_key(scope, &c.key);
                    item.insert("owner".into(), s(&c.owner));
                    item.insert("expires_ms".into(), n(c.expires_ms));
                    // Keep the claim at least one horizon past processing time, whatever the record time.
                    let horizon = c.expires_ms.saturating_sub(c.event_ms);
                    let ttl = c.expires_ms.max(now_ms().saturating_add(horizon)) / 1000 + 3600;
                    item.insert("expires_at".into(), n(ttl));
                    let put = Put::builder()
                        .table_name(self.table())
                        .set_item(Some(item))
                        .condition_expression("attribute_not_exists(pk) OR #owner = :owner OR expires_ms <= :event")
                        .expression_attribute_names("#owner", "owner")
                        .expression_attribute_values(":owner", s(&c.owner))
                        .expression_attribute_values(":event", n(c.event_ms))
                        .build()
                        .map_err(build_error)?;
                    items.push(TransactWriteItem::builder().put(put).build());
                }
                match self.transact(items, "claiming dedup keys").await {
                    Ok(()) => {}
                    // Another partition claimed one of these keys meanwhile: decide the chunk again.
                    Err(Error::Conflict(_)) => lost.extend_from_slice(chunk),
                    Err(e) => return Err(e),
                }
            }
            if lost.is_empty() {
                return Ok(granted);
            }
            if attempt == CLAIM_ATTEMPTS {
                return Err(Error::Conflict(format!("{scope}: dedup claims kept conflicting")));
            }
            todo = lost;
        }
        Ok(granted)
    }

    async fn window_progress(&self, scope: &str) -> Result<WindowProgress> {
        let out = self
            .client()
            .get_item()
            .table_name(self.table())
            .set_key(Some(progress_key(scope)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("GetItem", e))?;
        Ok(out.item.map_or_else(WindowProgress::default, |it| WindowProgress {
            closed_ms: num(&it, "closed_ms"),
            emitted_ms: num(&it, "emitted_ms"),
        }))
    }

    async fn set_closed(&self, scope: &str, expected: Option<i64>, closed_ms: i64) -> Result<()> {
        let mut update = self
            .client()
            .update_item()
            .table_name(self.table())
            .set_key(Some(progress_key(scope)))
            .update_expression("SET closed_ms = :c")
            .expression_attribute_values(":c", n(closed_ms));
        update = match expected {
            None => update.condition_expression("attribute_not_exists(closed_ms)"),
            Some(e) => update.condition_expression("closed_ms = :e").expression_attribute_values(":e", n(e)),
        };
        match update.send().await {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => {
                Err(Error::Conflict(format!("{scope}: closed watermark moved")))
            }
            Err(e) => Err(sdk_error("UpdateItem", e)),
        }
    }

    async fn set_emitted(&self, scope: &str, emitted_ms: i64) -> Result<()> {
        let result = self
            .client()
            .update_item()
            .table_name(self.table())
            .set_key(Some(progress_key(scope)))
            .update_expression("SET emitted_ms = :e")
            .condition_expression("attribute_not_exists(emitted_ms) OR emitted_ms < :e")
            .expression_attribute_values(":e", n(emitted_ms))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => Ok(()),
            Err(e) => Err(sdk_error("UpdateItem", e)),
        }
    }

    async fn get_cells(&self, scope: &str, ids: &[String]) -> Result<Vec<Option<Cell>>> {
        let keys: Vec<_> = ids.iter().map(|id| cell_key(scope, id)).collect();
        let lookup: Vec<(String, String)> = keys
            .iter()
            .map(|k| (text(k, PK).unwrap_or_default().to_string(), text(k, SK).unwrap_or_default().to_string()))
            .collect();
        let items = self.batch_get(keys).await?;
        lookup.iter().map(|k| items.get(k).map(cell_from).transpose()).collect()
    }

    async fn scan_cells(&self, scope: &str, close_at_most: Option<i64>) -> Result<Vec<Cell>> {
        let mut cells = Vec::new();
        for shard in 0..SHARDS {
            let mut query = self
                .client()
                .query()
                .table_name(self.table())
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(format!("cell#{scope}#{shard}")))
                .consistent_read(true);
            if let Some(c) = close_at_most {
                query = query.filter_expression("close_ms <= :c").expression_attribute_values(":c", n(c));
            }
            let items: Vec<_> =
                query.into_paginator().items().send().try_collect().await.map_err(|e| sdk_error("Query", e))?;
            for item in &items {
                cells.push(cell_from(item)?);
            }
        }
        cells.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(cells)
    }

    async fn put_cells(
        &self,
        scope: &str,
        expected_closed: Option<i64>,
        writes: &[CellWrite],
        clock: Option<&ClockWrite>,
    ) -> Result<()> {
        for chunk in writes.chunks(TRANSACT_MAX) {
            let mut check = ConditionCheck::builder().table_name(self.table()).set_key(Some(progress_key(scope)));
            check = match expected_closed {
                None => check.condition_expression("attribute_not_exists(closed_ms)"),
                Some(c) => check.condition_expression("closed_ms = :c").expression_attribute_values(":c", n(c)),
            };
            let mut items =
                vec![TransactWriteItem::builder().condition_check(check.build().map_err(build_error)?).build()];
            for w in chunk {
                let mut item = cell_key(scope, &w.cell.id);
                item.insert("close_ms".into(), n(w.close_ms));
                item.insert("last_offset".into(), n(w.cell.last_offset));
                item.insert("body".into(), s(serde_json::to_string(&w.cell).expect("cells serialize")));
                let mut put = Put::builder().table_name(self.table()).set_item(Some(item));
                put = match w.expected_last_offset {
                    None => put.condition_expression("attribute_not_exists(pk)"),
                    Some(o) => put.condition_expression("last_offset = :o").expression_attribute_values(":o", n(o)),
                };
                items.push(TransactWriteItem::builder().put(put.build().map_err(build_error)?).build());
            }
            self.transact(items, "writing window cells").await?;
        }
        if let Some(c) = clock {
            let clock_key = key(format!("clock#{scope}"), format!("{}#{}", c.source.topic, c.source.partition));
            let raised = self
                .client()
                .update_item()
                .table_name(self.table())
                .set_key(Some(clock_key.clone()))
                .update_expression("SET max_event_ms = :m, topic = :t, part = :p")
                .condition_expression("attribute_not_exists(max_event_ms) OR max_event_ms < :m")
                .expression_attribute_values(":m", n(c.max_event_ms))
                .expression_attribute_values(":t", s(&c.source.topic))
                .expression_attribute_values(":p", n(c.source.partition))
                .send()
                .await;
            match raised {
                Ok(_) => {}
                Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => {}
                Err(e) => return Err(sdk_error("UpdateItem", e)),
            }
            let seen = self
                .client()
                .update_item()
                .table_name(self.table())
                .set_key(Some(clock_key))
                .update_expression("SET last_seen_ms = :now")
                .condition_expression("attribute_not_exists(last_seen_ms) OR last_seen_ms < :now")
                .expression_attribute_values(":now", n(c.now_ms))
                .send()
                .await;
            match seen {
                Ok(_) => {}
                Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => {}
                Err(e) => return Err(sdk_error("UpdateItem", e)),
            }
        }
        Ok(())
    }

    async fn delete_cells(&self, scope: &str, cells: &[(String, Option<i64>)]) -> Result<()> {
        futures::stream::iter(cells.iter().cloned())
            .map(|(id, expected)| async move {
                let mut delete =
                    self.client().delete_item().table_name(self.table()).set_key(Some(cell_key(scope, &id)));
                if let Some(o) = expected {
                    delete = delete.condition_expression("last_offset = :o").expression_attribute_values(":o", n(o));
                }
                match delete.send().await {
                    Ok(_) => Ok(()),
                    // Written again since it was read: it is no longer done, leave it.
                    Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => Ok(()),
                    Err(e) => Err(sdk_error("DeleteItem", e)),
                }
            })
            .buffer_unordered(16)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    async fn clocks(&self, scope: &str) -> Result<Vec<(SourcePartition, i64, i64)>> {
        let items: Vec<_> = self
            .client()
            .query()
            .table_name(self.table())
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(format!("clock#{scope}")))
            .consistent_read(true)
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| sdk_error("Query", e))?;
        let mut out = Vec::new();
        for it in &items {
            let (Some(topic), Some(partition)) = (text(it, "topic"), num(it, "part")) else { continue };
            let source = SourcePartition { topic: topic.to_string(), partition: partition as i32 };
            out.push((
                source,
                num(it, "max_event_ms").unwrap_or(i64::MIN),
                num(it, "last_seen_ms").unwrap_or(i64::MIN),
            ));
        }
        Ok(out)
    }
}
