//! Kafka-side helpers for the local stack: connect, create topics, produce the generator's records to a real
//! broker, and read high watermarks.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use floe_core::MskRecord;
use rskafka::client::error::{Error as KafkaError, ProtocolError};
use rskafka::client::partition::{Compression, OffsetAt, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};
use rskafka::record::Record;

use crate::Generated;

pub async fn connect(brokers: &str) -> anyhow::Result<Client> {
    let brokers = brokers.split(',').map(|b| b.trim().to_string()).filter(|b| !b.is_empty()).collect();
    ClientBuilder::new(brokers).client_id("floe-local").build().await.with_context(|| "connecting to the Kafka broker")
}

/// Create topics that do not exist yet; an existing topic is left as it is.
pub async fn create_topics(client: &Client, topics: &[(String, i32)]) -> anyhow::Result<()> {
    let controller = client.controller_client()?;
    for (name, partitions) in topics {
        match controller.create_topic(name, *partitions, 1, 5_000).await {
            Ok(()) => {}
            Err(KafkaError::ServerError { protocol_error: ProtocolError::TopicAlreadyExists, .. }) => {}
            Err(e) => return Err(e).with_context(|| format!("creating topic {name}")),
        }
    }
    Ok(())
}

/// The Kafka record behind an MSK record: what a producer sent. A value that is not base64 (the generator's
/// "not base64" case, which only an event built by hand can carry) is produced as its raw text.
pub fn kafka_record(r: &MskRecord, timestamp_ms: i64) -> Record {
    let decode = |text: &String| BASE64.decode(text).unwrap_or_else(|_| text.as_bytes().to_vec());
    Record {
        key: r.key.as_ref().map(decode),
        value: r.value.as_ref().map(decode),
        headers: r
            .headers
            .iter()
            .flat_map(|h| h.iter().map(|(name, bytes)| (name.clone(), bytes.iter().map(|b| *b as u8).collect())))
            .collect(),
        timestamp: chrono::DateTime::from_timestamp_millis(timestamp_ms).unwrap_or_default(),
    }
}

#[derive(Debug, Clone, Copy)]
pub struct ProduceOptions {
    /// Records per second overall; 0 produces as fast as the broker takes them.
    pub rate: f64,
    /// Stamp records with the time they are produced (for freshness), instead of the generated time.
    pub stamp_now: bool,
}

/// Produce every generated record, partition by partition in offset order; `progress` sees the running total.
pub async fn produce(
    client: &Client,
    generated: &Generated,
    options: ProduceOptions,
    mut progress: impl FnMut(usize),
) -> anyhow::Result<usize> {
    let mut partitions = BTreeMap::new();
    let started = Instant::now();
    let mut sent = 0usize;
    for event in &generated.events {
        for records in event.records.values() {
            let Some(first) = records.first() else { continue };
            let (topic, partition) = (first.topic.clone().unwrap_or_default(), first.partition as i32);
            let pc = match partitions.entry((topic.clone(), partition)) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => e.insert(
                    client
                        .partition_client(topic.clone(), partition, UnknownTopicHandling::Retry)
                        .await
                        .with_context(|| format!("partition {topic}-{partition}"))?,
                ),
            };
            let now = chrono::Utc::now().timestamp_millis();
            let batch =
                records.iter().map(|r| kafka_record(r, if options.stamp_now { now } else { r.timestamp })).collect();
            pc.produce(batch, Compression::NoCompression)
                .await
                .with_context(|| format!("producing to {topic}-{partition}"))?;
            sent += records.len();
            progress(sent);
            if options.rate > 0.0 {
                let due = Duration::from_secs_f64(sent as f64 / options.rate);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
    Ok(sent)
}

/// The broker's next offset per `topic:partition` (its high watermark; a broker may report it a little late).
pub async fn high_watermarks(client: &Client, topics: &[String]) -> anyhow::Result<BTreeMap<String, i64>> {
    let mut out = BTreeMap::new();
    let read = |name: &str| topics.iter().any(|p| floe_core::topic_matches(p, name));
    for topic in client.list_topics().await?.into_iter().filter(|t| read(&t.name)) {
        for partition in topic.partitions {
            let pc = client.partition_client(topic.name.clone(), partition, UnknownTopicHandling::Retry).await?;
            out.insert(format!("{}:{partition}", topic.name), pc.get_offset(OffsetAt::Latest).await?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::esm::msk_record;
    use rskafka::record::RecordAndOffset;

    #[test]
    fn kafka_record_round_trips_through_the_mapping_shape() {
        let record = Record {
            key: Some(b"user-9".to_vec()),
            value: Some("{\"ü\":1}".as_bytes().to_vec()),
            headers: [("trace-id".to_string(), vec![0xff, 0x00, 0x41])].into(),
            timestamp: chrono::DateTime::from_timestamp_millis(1_700_000_000_001).unwrap(),
        };
        let msk = msk_record("orders", 1, &RecordAndOffset { record: record.clone(), offset: 3 });
        assert_eq!(kafka_record(&msk, msk.timestamp), record);
        let not_base64 = MskRecord { value: Some("%%% not base64".into()), ..msk };
        assert_eq!(kafka_record(&not_base64, 0).value.as_deref(), Some(&b"%%% not base64"[..]));
    }
}
