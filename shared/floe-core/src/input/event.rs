//! MSK event → source records, grouped per topic-partition in offset order.
//!
//! [`MskEvent`] is the event source mapping's JSON: records grouped under `"<topic>-<partition>"`, base64 key
//! and value, headers as arrays of bytes. floe deserializes it with its own type rather than
//! `aws_lambda_events`' `KafkaEvent`, whose timestamp deserializer goes through `f64` and truncates (e.g.
//! `1545084650987` becomes `…986`) and panics on a fractional value. A record whose key or value is not valid
//! base64, or whose topic is not in the pipeline, is kept with the problem noted so that it becomes a dead letter
//! instead of failing the batch. So is a record whose JSON does not have the mapping's shape (a fractional
//! timestamp, a value that is not a string…) as long as its partition and offset can be read: one malformed
//! record never fails, and so never blocks, its batch.
//!
//! The function does not build an [`MskEvent`]: it reads its invocation body in place ([`group_body`], `body`),
//! falling back to [`MskEvent`]'s lenient reader (`lenient`) for a body with a malformed record. Both readers
//! yield borrowed [`RecordRef`]s, and one grouping ([`group`]) turns them into [`PartitionRecords`].

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

mod body;
mod lenient;

use body::Text;

/// The MSK / self-managed Kafka event as the event source mapping sends it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MskEvent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_source_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_servers: Option<String>,
    #[serde(default, deserialize_with = "lenient::lenient_records")]
    pub records: BTreeMap<String, Vec<MskRecord>>,
}

/// A record whose JSON did not have the mapping's shape: why, and the record's JSON as it arrived.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Malformed {
    pub reason: String,
    pub raw: String,
}

/// One record of an [`MskEvent`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MskRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    pub partition: i64,
    pub offset: i64,
    /// Milliseconds since the epoch, exactly as sent.
    pub timestamp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp_type: Option<String>,
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub value: Option<String>,
    /// `[{"name": [bytes…]}, …]`; the mapping sends signed bytes (-128..=127), some producers unsigned.
    #[serde(default)]
    pub headers: Vec<BTreeMap<String, Vec<i16>>>,
    /// Set when the record's JSON did not have this shape (only `partition` and `offset` were read).
    #[serde(skip)]
    pub malformed: Option<Malformed>,
}

/// A Kafka topic-partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SourcePartition {
    pub topic: String,
    pub partition: i32,
}

impl fmt::Display for SourcePartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.topic, self.partition)
    }
}

/// One record of an event as grouping reads it, borrowed from where it arrived: the invocation body
/// ([`body::read`]) or an [`MskEvent`]. Key and value are their base64 text.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RecordRef<'a> {
    #[serde(default, borrow)]
    topic: Option<body::Str<'a>>,
    partition: i64,
    offset: i64,
    timestamp: i64,
    /// Not used, but read so that the body's reader takes exactly what [`MskRecord`] takes.
    #[serde(default, borrow, rename = "timestampType")]
    _timestamp_type: Option<body::Str<'a>>,
    #[serde(default, borrow)]
    key: Option<Text<'a>>,
    #[serde(default, borrow)]
    value: Option<Text<'a>>,
    #[serde(default)]
    headers: Cow<'a, [BTreeMap<String, Vec<i16>>]>,
    #[serde(skip)]
    malformed: Option<&'a Malformed>,
}

impl<'a> From<&'a MskRecord> for RecordRef<'a> {
    fn from(r: &'a MskRecord) -> RecordRef<'a> {
        let text = |t: &'a Option<String>| t.as_deref().map(|t| Text(Cow::Borrowed(t.as_bytes())));
        RecordRef {
            topic: r.topic.as_deref().map(|t| body::Str(Cow::Borrowed(t))),
            partition: r.partition,
            offset: r.offset,
            timestamp: r.timestamp,
            _timestamp_type: None,
            key: text(&r.key),
            value: text(&r.value),
            headers: Cow::Borrowed(&r.headers),
            malformed: r.malformed.as_ref(),
        }
    }
}

/// Why a record cannot be decoded at all (it goes to the dead-letter table with this reason).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub kind: &'static str,
    pub reason: String,
}

/// One Kafka record with its payload decoded from base64.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRecord {
    pub offset: i64,
    pub timestamp_ms: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
    /// Set when the record cannot be processed (bad base64, unknown topic).
    pub problem: Option<Problem>,
}

impl SourceRecord {
    /// Bytes of the record's key and value (decoded): what reports count as input.
    pub fn payload_bytes(records: &[SourceRecord]) -> u64 {
        records.iter().map(|r| r.key.as_ref().map_or(0, Vec::len) + r.value.as_ref().map_or(0, Vec::len)).sum::<usize>()
            as u64
    }
}

/// The records of one topic-partition in one event, in offset order, each offset once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionRecords {
    pub source: SourcePartition,
    pub records: Vec<SourceRecord>,
}

impl PartitionRecords {
    /// Drop records below `next_offset` (already staged by an earlier delivery).
    pub fn skip_below(&mut self, next_offset: i64) -> usize {
        let before = self.records.len();
        self.records.retain(|r| r.offset >= next_offset);
        before - self.records.len()
    }
}

/// Group an event's records by topic-partition (sorted), each group in offset order.
pub fn group_records(event: &MskEvent, topics: &[String]) -> Result<Vec<PartitionRecords>> {
    group_records_on(event, topics, 1)
}

/// [`group_records`] on up to `threads` threads (see [`group`]).
pub(crate) fn group_records_on(event: &MskEvent, topics: &[String], threads: usize) -> Result<Vec<PartitionRecords>> {
    let groups: Vec<(&str, Vec<RecordRef>)> = event
        .records
        .iter()
        .map(|(key, records)| (key.as_str(), records.iter().map(RecordRef::from).collect()))
        .collect();
    group(groups.iter().map(|(key, records)| (*key, records.as_slice())), topics, threads)
}

/// [`group_records`] of an event as the function receives it, the event source mapping's JSON, read in place
/// without building an [`MskEvent`] (see `input/event/body.rs`). It groups exactly as [`group_records`] does
/// whenever the body deserializes as an [`MskEvent`], and it also takes a body whose base64 text is not UTF-8
/// (that record becomes a `base64` dead letter).
pub fn group_body(body: &[u8], topics: &[String]) -> Result<Vec<PartitionRecords>> {
    group_body_on(body, topics, 1)
}

/// [`group_body`] on up to `threads` threads (see [`group`]).
pub(crate) fn group_body_on(body: &[u8], topics: &[String], threads: usize) -> Result<Vec<PartitionRecords>> {
    match body::read(body) {
        Ok(groups) => group(groups.iter().map(|(key, records)| (key.as_ref(), records.as_slice())), topics, threads),
        Err(fast) => {
            // Somewhere not of the mapping's exact shape: read record by record, keeping malformed ones.
            tracing::debug!(reason = %fast, "event read record by record");
            let event: MskEvent = serde_json::from_slice(body)
                .map_err(|e| Error::Event(format!("the invocation body is not an MSK event: {e}")))?;
            group_records_on(&event, topics, threads)
        }
    }
}

/// Group records (`(group key, records)` in event order), decoding them (base64) on up to `threads` threads:
/// this runs before an event's partitions are handed out, so on one thread it would be the serial part of a
/// concurrent invocation.
///
/// The mapping sends each topic-partition's records together and in offset order, so records are collected in
/// runs (same topic-partition, rising offsets) without a map operation per record; only a topic-partition that
/// arrives in several runs (out of order, or repeated offsets) is merged through an ordered map.
fn group<'g, 'r: 'g>(
    groups: impl Iterator<Item = (&'g str, &'g [RecordRef<'r>])>,
    topics: &[String],
    threads: usize,
) -> Result<Vec<PartitionRecords>> {
    let mut sources = Vec::new();
    let mut all: Vec<&RecordRef> = Vec::new();
    for (group_key, records) in groups {
        sources.reserve(records.len());
        all.reserve(records.len());
        for record in records {
            // In event order: the first record without a usable position fails the event.
            sources.push(source_of(group_key, record)?);
            all.push(record);
        }
    }
    let mut runs: BTreeMap<SourcePartition, Vec<Vec<SourceRecord>>> = BTreeMap::new();
    let mut run: Option<(SourcePartition, Vec<SourceRecord>)> = None;
    // Whether the last topic seen is in the pipeline (records of one topic arrive together).
    let mut known: Option<(&str, bool)> = None;
    for ((topic, partition), mut decoded) in sources.into_iter().zip(decode_records(&all, threads)) {
        let in_pipeline = match known {
            Some((t, known)) if t == topic => known,
            _ => {
                let found = topics.iter().any(|p| crate::pipeline::topic_matches(p, topic));
                known = Some((topic, found));
                found
            }
        };
        if decoded.problem.is_none() && !in_pipeline {
            decoded.problem = Some(Problem {
                kind: "topic",
                reason: format!("topic `{topic}` is not in the pipeline's source.topics {topics:?}"),
            });
        }
        let continues = run.as_ref().is_some_and(|(source, records)| {
            source.partition == partition
                && source.topic == topic
                && records.last().is_some_and(|last| last.offset < decoded.offset)
        });
        if !continues {
            if let Some((source, records)) = run.take() {
                runs.entry(source).or_default().push(records);
            }
            run = Some((SourcePartition { topic: topic.to_string(), partition }, Vec::new()));
        }
        run.as_mut().expect("a run is open").1.push(decoded);
    }
    if let Some((source, records)) = run.take() {
        runs.entry(source).or_default().push(records);
    }
    Ok(runs
        .into_iter()
        .map(|(source, runs)| {
            let records = match <[Vec<SourceRecord>; 1]>::try_from(runs) {
                Ok([records]) => records,
                Err(runs) => {
                    // A redelivered offset inside one event is the same Kafka record: keep the first.
                    let mut merged: BTreeMap<i64, SourceRecord> = BTreeMap::new();
                    for record in runs.into_iter().flatten() {
                        merged.entry(record.offset).or_insert(record);
                    }
                    merged.into_values().collect()
                }
            };
            PartitionRecords { source, records }
        })
        .collect())
}

/// Base64 text below this many bytes a thread is decoded on the calling thread: starting a thread costs tens of
/// microseconds, decoding 512 KiB about a quarter of a millisecond. Counted in bytes, not records, so that an
/// event of fewer, larger records (1,600 records of 1.2 KB) is still split.
const BYTES_PER_DECODING_THREAD: usize = 512 * 1024;

/// How many of up to `threads` threads decode `records`: one per [`BYTES_PER_DECODING_THREAD`] of their text.
fn decoding_threads(records: &[&RecordRef], threads: usize) -> usize {
    let text = |t: &Option<Text>| t.as_ref().map_or(0, |t| t.0.len());
    let bytes: usize = records.iter().map(|r| text(&r.key) + text(&r.value)).sum();
    threads.min(bytes / BYTES_PER_DECODING_THREAD).min(records.len()).max(1)
}

/// [`decode_record`] of every record, in order, on up to `threads` scoped threads.
fn decode_records(records: &[&RecordRef], threads: usize) -> Vec<SourceRecord> {
    let threads = decoding_threads(records, threads);
    if threads == 1 {
        return records.iter().map(|r| decode_record(r)).collect();
    }
    let chunk = records.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let parts: Vec<_> = records
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(|r| decode_record(r)).collect::<Vec<_>>()))
            .collect();
        let mut out = Vec::with_capacity(records.len());
        for part in parts {
            out.extend(part.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)));
        }
        out
    })
}

/// A record's topic and partition (the record's own, else its group key's, `"<topic>-<partition>"`).
fn source_of<'a>(group_key: &'a str, record: &'a RecordRef) -> Result<(&'a str, i32)> {
    let topic = match &record.topic {
        Some(t) if !t.0.is_empty() => t.0.as_ref(),
        // The group key is "<topic>-<partition>"; topics may themselves contain '-'.
        _ => group_key
            .rsplit_once('-')
            .map(|(t, _)| t)
            .ok_or_else(|| Error::Event(format!("record group `{group_key}` is not `<topic>-<partition>`")))?,
    };
    if let Some(m) = record.malformed
        && (record.partition < 0 || record.offset < 0)
    {
        let reason = &m.reason;
        return Err(Error::Event(format!("a record of `{group_key}` has no usable partition and offset: {reason}")));
    }
    let partition = i32::try_from(record.partition)
        .ok()
        .filter(|p| *p >= 0)
        .ok_or_else(|| Error::Event(format!("partition {} of topic {topic} is out of range", record.partition)))?;
    if record.offset < 0 {
        return Err(Error::Event(format!("negative offset {} in {topic}:{partition}", record.offset)));
    }
    Ok((topic, partition))
}

fn decode_record(record: &RecordRef) -> SourceRecord {
    if let Some(m) = record.malformed {
        return SourceRecord {
            offset: record.offset,
            timestamp_ms: (record.timestamp != 0).then_some(record.timestamp),
            key: None,
            value: Some(m.raw.as_bytes().to_vec()),
            headers: vec![],
            problem: Some(Problem { kind: "record", reason: format!("record is not an MSK record: {}", m.reason) }),
        };
    }
    let mut problem = None;
    let mut b64 = |field: &str, text: &Option<Text>| -> Option<Vec<u8>> {
        let text: &[u8] = text.as_ref()?.0.as_ref();
        match STANDARD.decode(text) {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                problem.get_or_insert(Problem {
                    kind: "base64",
                    reason: format!("record {field} is not valid base64: {e}"),
                });
                // Keep the undecodable text itself so the dead letter still holds what arrived.
                Some(text.to_vec())
            }
        }
    };
    let key = b64("key", &record.key);
    let value = b64("value", &record.value);
    let mut headers = Vec::new();
    for (name, bytes) in record.headers.iter().flat_map(|h| h.iter()) {
        match bytes.iter().map(|b| u8::try_from(*b).or_else(|_| i8::try_from(*b).map(|s| s as u8))).collect() {
            Ok(bytes) => headers.push((name.clone(), bytes)),
            Err(_) => {
                problem.get_or_insert(Problem {
                    kind: "header",
                    reason: format!("header `{name}` has a value outside -128..=255"),
                });
            }
        }
    }
    SourceRecord { offset: record.offset, timestamp_ms: Some(record.timestamp), key, value, headers, problem }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENT: &str = include_str!("../../tests/fixtures/msk_event.json");

    #[test]
    fn groups_real_msk_event() {
        let event: MskEvent = serde_json::from_str(EVENT).unwrap();
        let groups = group_records(&event, &["mytopic".to_string()]).unwrap();
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].source, SourcePartition { topic: "mytopic".into(), partition: 0 });
        let r = &groups[0].records[0];
        assert_eq!(r.offset, 15);
        assert_eq!(r.timestamp_ms, Some(1545084650987));
        assert_eq!(r.value.as_deref(), Some(&b"{\"id\": 1, \"name\": \"a\"}"[..]));
        assert_eq!(r.key.as_deref(), Some(&b"k-1"[..]));
        assert_eq!(r.headers, vec![("headerKey".to_string(), b"headerValue".to_vec())]);
        assert!(r.problem.is_none());
        // Offsets are sorted within the partition even if the event lists them out of order.
        let offsets: Vec<i64> = groups[1].records.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, [7, 8]);
        assert_eq!(groups[1].records[1].problem.as_ref().unwrap().kind, "base64");
    }

    #[test]
    fn unknown_topic_becomes_a_problem_not_an_error() {
        let event: MskEvent = serde_json::from_str(EVENT).unwrap();
        let groups = group_records(&event, &["other".to_string()]).unwrap();
        // Every record is flagged (the bad-base64 one keeps its first problem).
        assert!(groups.iter().flat_map(|g| &g.records).all(|r| r.problem.is_some()));
        assert_eq!(groups[0].records[0].problem.as_ref().unwrap().kind, "topic");
    }

    #[test]
    fn a_malformed_record_is_kept_as_a_problem_and_its_neighbours_load() {
        let event = r#"{"records":{"clicks-0":[
            {"topic":"clicks","partition":0,"offset":5,"timestamp":1.5,"value":"e30="},
            {"topic":"clicks","partition":0,"offset":6,"timestamp":1763719200000,"value":12},
            {"topic":"clicks","partition":0,"offset":7,"timestamp":1763719200000,"value":"e30="}]}}"#;
        let event: MskEvent = serde_json::from_str(event).unwrap();
        let [group] = &group_records(&event, &["clicks".to_string()]).unwrap()[..] else { panic!("one group") };
        let problems: Vec<_> = group.records.iter().map(|r| r.problem.as_ref().map(|p| p.kind)).collect();
        assert_eq!(problems, [Some("record"), Some("record"), None]);
        let first = &group.records[0];
        assert!(first.problem.as_ref().unwrap().reason.contains("invalid type: floating point"), "{first:?}");
        assert_eq!(first.timestamp_ms, None, "a timestamp that cannot be read is not invented");
        assert!(String::from_utf8_lossy(first.value.as_ref().unwrap()).contains(r#""timestamp":1.5"#));
        assert_eq!(group.records[1].timestamp_ms, Some(1763719200000));
    }

    #[test]
    fn a_record_without_a_position_fails_the_event_with_a_clear_error() {
        let event = r#"{"records":{"clicks-0":[{"topic":"clicks","partition":0,"timestamp":1,"value":"e30="}]}}"#;
        let event: MskEvent = serde_json::from_str(event).unwrap();
        let err = group_records(&event, &["clicks".to_string()]).unwrap_err().to_string();
        assert!(err.contains("`clicks-0` has no usable partition and offset: missing field `offset`"), "{err}");
    }

    #[test]
    fn records_out_of_order_or_repeated_are_grouped_sorted_first_kept() {
        // Partition 0 arrives in three runs (one under another group key), with offset 5 twice.
        let event = r#"{"records":{"t-0":[
            {"topic":"t","partition":0,"offset":5,"timestamp":1,"value":"MQ=="},
            {"topic":"t","partition":0,"offset":3,"timestamp":1,"value":"Mg=="},
            {"topic":"t","partition":1,"offset":9,"timestamp":1,"value":"Mw=="},
            {"topic":"t","partition":0,"offset":4,"timestamp":1,"value":"NA=="}],
          "t-1":[{"topic":"t","partition":0,"offset":5,"timestamp":1,"value":"NQ=="},
            {"topic":"t","partition":1,"offset":10,"timestamp":1,"value":"Ng=="}]}}"#;
        let event: MskEvent = serde_json::from_str(event).unwrap();
        let groups = group_records(&event, &["t".to_string()]).unwrap();
        let seen: Vec<(i32, Vec<(i64, String)>)> = groups
            .iter()
            .map(|g| {
                let records =
                    g.records.iter().map(|r| (r.offset, String::from_utf8_lossy(r.value.as_deref().unwrap())));
                (g.source.partition, records.map(|(o, v)| (o, v.into_owned())).collect())
            })
            .collect();
        let expected = [(0, [(3, "2"), (4, "4"), (5, "1")].to_vec()), (1, [(9, "3"), (10, "6")].to_vec())]
            .map(|(p, records)| (p, records.into_iter().map(|(o, v)| (o, v.to_string())).collect::<Vec<_>>()));
        assert_eq!(seen, expected);
    }

    #[test]
    fn decoding_on_several_threads_groups_exactly_as_on_one() {
        let mut event = MskEvent::default();
        for partition in 0..3i64 {
            let records = (0..3_000i64)
                .map(|offset| MskRecord {
                    topic: Some("t".into()),
                    partition,
                    offset: offset * 2,
                    timestamp: offset,
                    // ~230 bytes of base64 a record: 9,000 records are enough text for four threads.
                    value: Some(match offset % 997 {
                        5 => "not base64!".to_string(),
                        _ => STANDARD.encode(format!("{{\"n\":{offset},\"pad\":\"{}\"}}", "x".repeat(160))),
                    }),
                    ..Default::default()
                })
                .collect();
            event.records.insert(format!("t-{partition}"), records);
        }
        let refs: Vec<RecordRef> = event.records.values().flatten().map(RecordRef::from).collect();
        let refs: Vec<&RecordRef> = refs.iter().collect();
        assert_eq!(decoding_threads(&refs, 4), 4, "about 2 MB of base64 text");
        assert_eq!(decoding_threads(&refs[..1_000], 4), 1, "about 230 KB");
        let one = group_records_on(&event, &["t".to_string()], 1).unwrap();
        let four = group_records_on(&event, &["t".to_string()], 4).unwrap();
        assert_eq!(one, four);
        assert_eq!(one.iter().map(|g| g.records.len()).sum::<usize>(), 9_000);
        let bad = one.iter().flat_map(|g| &g.records).filter(|r| r.problem.is_some()).count();
        assert_eq!(bad, 3 * 4, "every 997th record of each partition");
    }

    #[test]
    fn skip_below_fence() {
        let event: MskEvent = serde_json::from_str(EVENT).unwrap();
        let mut groups = group_records(&event, &["mytopic".to_string()]).unwrap();
        assert_eq!(groups[1].skip_below(8), 1);
        assert_eq!(groups[1].records[0].offset, 8);
    }
}
