//! The poller: one task per topic-partition, each fetching, batching and invoking strictly in order.

use std::collections::{BTreeSet, VecDeque};
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use floe_core::MskRecord;
use rskafka::client::Client;
use rskafka::client::error::{Error as KafkaError, ProtocolError};
use rskafka::client::partition::{OffsetAt, PartitionClient, UnknownTopicHandling};
use rskafka::record::RecordAndOffset;
use serde_json::json;
use tokio::sync::watch;
use tracing::{info, warn};

use super::batch::{Batch, Push};
use super::{Invoke, Mapping, OffsetStore, StartingPosition};

/// How long an empty batch waits on the broker per fetch (the window only starts with the first record).
const IDLE_FETCH_WAIT: Duration = Duration::from_millis(500);
/// How often new topics and partitions are looked for.
const DISCOVERY_INTERVAL: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Bytes per fetch. Independent of the payload limit: a broker may return nothing when its next record batch is
/// larger than the fetch size, and a record too large for any payload must still be read to be sent to the
/// on-failure destination. Above Kafka's largest common `message.max.bytes`.
const FETCH_MAX_BYTES: i32 = 16 * 1024 * 1024;

/// The record as the mapping puts it in the event: base64 key and value, signed header bytes, millisecond time.
/// The broker's record batches carry the timestamp type, which rskafka does not expose; records are reported
/// as `CREATE_TIME`, the producer default.
pub fn msk_record(topic: &str, partition: i32, record: &RecordAndOffset) -> MskRecord {
    let r = &record.record;
    MskRecord {
        topic: Some(topic.to_string()),
        partition: partition.into(),
        offset: record.offset,
        timestamp: r.timestamp.timestamp_millis(),
        timestamp_type: Some("CREATE_TIME".into()),
        key: r.key.as_ref().map(|k| BASE64.encode(k)),
        value: r.value.as_ref().map(|v| BASE64.encode(v)),
        headers: r
            .headers
            .iter()
            .map(|(name, value)| [(name.clone(), value.iter().map(|b| i16::from(*b as i8)).collect())].into())
            .collect(),
        malformed: None,
    }
}

struct Shared {
    mapping: Mapping,
    invoker: Arc<dyn Invoke>,
    offsets: Arc<OffsetStore>,
    invocations: Mutex<File>,
    on_failure: Mutex<File>,
}

pub struct Poller {
    client: Arc<Client>,
    shared: Arc<Shared>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn append(file: &Mutex<File>, line: serde_json::Value) {
    let mut f = file.lock().expect("log lock");
    if let Err(e) = writeln!(f, "{line}") {
        warn!(error = %e, "could not append to a poller log");
    }
}

impl Poller {
    /// A poller keeping its stored positions, invocation log (`invocations.jsonl`), on-failure destination
    /// (`on-failure.jsonl`) in `dir`.
    pub fn new(client: Arc<Client>, mapping: Mapping, invoker: Arc<dyn Invoke>, dir: &Path) -> anyhow::Result<Poller> {
        mapping.validate().map_err(anyhow::Error::msg)?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let open = |name: &str| -> anyhow::Result<Mutex<File>> {
            let path = dir.join(name);
            let file = File::options()
                .create(true)
                .append(true)
                .open(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            Ok(Mutex::new(file))
        };
        let shared = Shared {
            offsets: Arc::new(OffsetStore::open(&dir.join("offsets.json"))?),
            invocations: open("invocations.jsonl")?,
            on_failure: open("on-failure.jsonl")?,
            mapping,
            invoker,
        };
        Ok(Poller { client, shared: Arc::new(shared) })
    }

    /// Poll until `stop` turns true; every partition then finishes (or abandons retrying) its in-flight batch.
    pub async fn run(&self, stop: watch::Receiver<bool>) -> anyhow::Result<()> {
        let mut started: BTreeSet<(String, i32)> = BTreeSet::new();
        let mut tasks = tokio::task::JoinSet::new();
        let mut next_discovery = Instant::now();
        loop {
            if *stop.borrow() {
                break;
            }
            if Instant::now() >= next_discovery {
                next_discovery = Instant::now() + DISCOVERY_INTERVAL;
                match self.client.list_topics().await {
                    Ok(topics) => {
                        let mapped =
                            |name: &str| self.shared.mapping.topics.iter().any(|p| floe_core::topic_matches(p, name));
                        for topic in topics.iter().filter(|t| mapped(&t.name)) {
                            for &partition in &topic.partitions {
                                if started.insert((topic.name.clone(), partition)) {
                                    let pc = self
                                        .client
                                        .partition_client(&topic.name, partition, UnknownTopicHandling::Retry)
                                        .await?;
                                    info!(topic = %topic.name, partition, "polling partition");
                                    let shared = self.shared.clone();
                                    let stop = stop.clone();
                                    tasks.spawn(async move { shared.run_partition(pc, stop).await });
                                }
                            }
                        }
                    }
                    Err(e) => warn!(error = %e, "listing topics failed; retrying"),
                }
            }
            // A partition task only ends on stop or on a fatal error (e.g. the offsets file cannot be written).
            tokio::select! {
                Some(done) = tasks.join_next() => done??,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
        while let Some(done) = tasks.join_next().await {
            done??;
        }
        Ok(())
    }
}

fn is_offset_out_of_range(e: &KafkaError) -> bool {
    matches!(e, KafkaError::ServerError { protocol_error: ProtocolError::OffsetOutOfRange, .. })
}

fn backoff(attempt: u32) -> Duration {
    (Duration::from_millis(100) * 2u32.saturating_pow(attempt.min(10))).min(MAX_BACKOFF)
}

impl Shared {
    async fn resolve_start(&self, pc: &PartitionClient) -> anyhow::Result<i64> {
        let at = match self.mapping.starting_position {
            StartingPosition::TrimHorizon => OffsetAt::Earliest,
            StartingPosition::Latest => OffsetAt::Latest,
            StartingPosition::AtTimestamp(ms) => OffsetAt::Timestamp(
                chrono::DateTime::from_timestamp_millis(ms).context("starting timestamp out of range")?,
            ),
        };
        let offset = pc.get_offset(at).await?;
        // No record at or after the timestamp: start at the end, like LATEST.
        if offset < 0 { Ok(pc.get_offset(OffsetAt::Latest).await?) } else { Ok(offset) }
    }

    async fn run_partition(self: Arc<Self>, pc: PartitionClient, stop: watch::Receiver<bool>) -> anyhow::Result<()> {
        let (topic, partition) = (pc.topic().to_string(), pc.partition());
        let mut next = match self.offsets.get(&topic, partition) {
            Some(next) => next,
            None => {
                let start = loop {
                    match self.resolve_start(&pc).await {
                        Ok(start) => break start,
                        Err(e) if !*stop.borrow() => {
                            warn!(%topic, partition, error = %e, "resolving the starting position failed; retrying");
                            tokio::time::sleep(MAX_BACKOFF).await;
                        }
                        Err(_) => return Ok(()),
                    }
                };
                // Stored at once: a restart must not re-resolve LATEST and skip what arrived meanwhile.
                self.offsets.store(&topic, partition, start)?;
                info!(%topic, partition, offset = start, "starting position resolved");
                start
            }
        };
        let m = &self.mapping;
        let mut pending: VecDeque<MskRecord> = VecDeque::new();
        let mut fetch_at = next;
        let fetch_bytes = 1..FETCH_MAX_BYTES;
        loop {
            let mut batch = Batch::new(&m.origin, &topic, partition, m.batch_size, m.max_payload_bytes);
            let mut opened: Option<Instant> = None;
            let mut too_large: Option<MskRecord> = None;
            // Fill the batch: until full, too large, the window has passed, or stop.
            'fill: loop {
                while let Some(record) = pending.pop_front() {
                    match batch.push(record) {
                        Push::Added => {
                            opened.get_or_insert_with(Instant::now);
                        }
                        Push::Full(record) => {
                            pending.push_front(*record);
                            break 'fill;
                        }
                        Push::TooLarge(record) if batch.is_empty() => {
                            too_large = Some(*record);
                            break 'fill;
                        }
                        Push::TooLarge(record) => {
                            pending.push_front(*record);
                            break 'fill;
                        }
                    }
                    if batch.is_full() {
                        break 'fill;
                    }
                }
                let wait = match opened {
                    None => IDLE_FETCH_WAIT,
                    Some(t) => match m.batching_window.checked_sub(t.elapsed()) {
                        Some(left) if !left.is_zero() => left,
                        _ => break 'fill,
                    },
                };
                if *stop.borrow() {
                    if batch.is_empty() {
                        return Ok(());
                    }
                    break 'fill;
                }
                match pc
                    .fetch_records(fetch_at, fetch_bytes.clone(), wait.as_millis().min(i32::MAX as u128) as i32)
                    .await
                {
                    Ok((records, _high_watermark)) => {
                        for r in records.iter().filter(|r| r.offset >= fetch_at) {
                            pending.push_back(msk_record(&topic, partition, r));
                        }
                        if let Some(last) = records.last() {
                            fetch_at = fetch_at.max(last.offset + 1);
                        }
                    }
                    Err(e) if is_offset_out_of_range(&e) && batch.is_empty() && pending.is_empty() => {
                        // Retention removed records the mapping had not delivered; they are gone from the broker.
                        let earliest = pc.get_offset(OffsetAt::Earliest).await?;
                        if earliest > fetch_at {
                            warn!(%topic, partition, from = fetch_at, to = earliest, "records expired before delivery");
                            fetch_at = earliest;
                            next = earliest;
                            self.offsets.store(&topic, partition, next)?;
                        } else {
                            tokio::time::sleep(IDLE_FETCH_WAIT).await;
                        }
                    }
                    Err(e) => {
                        warn!(%topic, partition, offset = fetch_at, error = %e, "fetch failed; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
            if let Some(record) = too_large {
                self.fail_batch(
                    &topic,
                    partition,
                    record.offset,
                    record.offset,
                    "record exceeds the invocation payload limit",
                    0,
                );
                next = record.offset + 1;
                self.offsets.store(&topic, partition, next)?;
                continue;
            }
            if batch.is_empty() {
                continue;
            }
            let (first, last, count, bytes) = (
                batch.first_offset().unwrap_or(next),
                batch.last_offset().unwrap_or(next),
                batch.len(),
                batch.payload_bytes(),
            );
            let payload = batch.payload();
            if !self.deliver(&topic, partition, &payload, (first, last, count), &stop).await? {
                return Ok(()); // stopped while retrying: the position stays, the batch is redelivered on restart
            }
            floe_core::failpoint::hit(floe_core::failpoint::ESM_AFTER_INVOKE).await?;
            next = last + 1;
            self.offsets.store(&topic, partition, next)?;
            tracing::debug!(%topic, partition, first, last, count, bytes, "delivered");
        }
    }

    /// Invoke until success, or until the retry limit sends the batch to the on-failure destination. `Ok(false)`:
    /// stopped before success.
    async fn deliver(
        &self,
        topic: &str,
        partition: i32,
        payload: &[u8],
        (first, last, count): (i64, i64, usize),
        stop: &watch::Receiver<bool>,
    ) -> anyhow::Result<bool> {
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let started = now_ms();
            let clock = Instant::now();
            let result = self.invoker.invoke(payload).await;
            let mut line = json!({
                "topic": topic, "partition": partition, "first": first, "last": last, "records": count,
                "payload_bytes": payload.len(), "attempt": attempt, "started_ms": started,
                "ended_ms": now_ms(), "ms": clock.elapsed().as_millis() as u64, "ok": result.is_ok(),
            });
            match result {
                Ok(response) => {
                    line["response"] = response;
                    append(&self.invocations, line);
                    return Ok(true);
                }
                Err(e) => {
                    let error = format!("{e:#}");
                    line["error"] = json!(error);
                    append(&self.invocations, line);
                    warn!(
                        topic,
                        partition, first, last, attempt, error, "invocation failed; retrying the same records"
                    );
                    if let Some(max) = self.mapping.max_retry_attempts
                        && attempt > max
                    {
                        self.fail_batch(topic, partition, first, last, &error, attempt);
                        return Ok(true);
                    }
                    if *stop.borrow() {
                        return Ok(false);
                    }
                    tokio::time::sleep(backoff(attempt)).await;
                }
            }
        }
    }

    /// The on-failure destination: what the mapping sends to SQS when it gives up on a batch.
    fn fail_batch(&self, topic: &str, partition: i32, first: i64, last: i64, reason: &str, attempts: u32) {
        warn!(topic, partition, first, last, reason, "batch sent to the on-failure destination");
        append(
            &self.on_failure,
            json!({"topic": topic, "partition": partition, "first_offset": first, "last_offset": last,
                   "attempts": attempts, "reason": reason, "time_ms": now_ms()}),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rskafka::record::Record;

    #[test]
    fn records_look_like_the_mapping_sends_them() {
        let record = RecordAndOffset {
            record: Record {
                key: Some(b"user-1".to_vec()),
                value: Some(br#"{"a":1}"#.to_vec()),
                headers: [("trace-id".to_string(), vec![b'a', 0xc3])].into(),
                timestamp: chrono::DateTime::from_timestamp_millis(1_545_084_650_987).unwrap(),
            },
            offset: 17,
        };
        let msk = msk_record("clicks", 2, &record);
        let json = serde_json::to_value(&msk).unwrap();
        assert_eq!(
            json,
            json!({"topic": "clicks", "partition": 2, "offset": 17, "timestamp": 1_545_084_650_987_i64,
                   "timestampType": "CREATE_TIME", "key": "dXNlci0x", "value": "eyJhIjoxfQ==",
                   "headers": [{"trace-id": [97, -61]}]})
        );
        let tombstone = RecordAndOffset { record: Record { value: None, key: None, ..record.record }, offset: 18 };
        assert_eq!(msk_record("clicks", 2, &tombstone).value, None);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_millis(200));
        assert!(backoff(3) > backoff(2));
        assert_eq!(backoff(30), MAX_BACKOFF);
    }
}
