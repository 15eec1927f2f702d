//! The backfill planner's pure part: offset ranges and archive objects → splits, each small enough for one
//! invocation and named deterministically (the same job gives the same splits and ids, so a re-submitted run
//! resumes instead of loading twice). Which ranges a job covers (timestamps to offsets, where the live stream
//! starts) is resolved before, against the sources and the state store.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::hash::hash64;

/// Offsets `[from, to)` of one topic-partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KafkaRange {
    pub topic: String,
    pub partition: i32,
    pub from: i64,
    pub to: i64,
}

/// An archive object as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectEntry {
    pub key: String,
    /// The object's version as listed (its size and modification time): a re-uploaded object is a new split.
    pub version: String,
    pub size: u64,
    /// When the object was last written (epoch milliseconds): its records' timestamp (`@timestamp`), as an
    /// archive keeps no per-record Kafka time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified_ms: Option<i64>,
}

impl ObjectEntry {
    /// A digest of the key and version: the object's identity.
    pub fn digest(&self) -> u64 {
        hash64(format!("{}\n{}", self.key, self.version).as_bytes())
    }
}

/// What one split reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SplitSource {
    Kafka(KafkaRange),
    Object(ObjectEntry),
}

/// One unit of a backfill: loaded by one invocation (resumed by the next if it runs out of time).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Split {
    /// Deterministic: the pipeline, the run and what the split reads.
    pub id: String,
    pub source: SplitSource,
    /// Per pipeline, the offset where its live stream starts (exclusive end of its backfill; records at or past
    /// it are the live stream's). Absent: the range's end.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ends: BTreeMap<String, i64>,
}

/// The identity of a run: a hash of its job spec (re-submitting the same spec is the same run).
pub fn run_id(spec: &serde_json::Value) -> String {
    // serde_json maps keep their keys sorted (no `preserve_order`), so equal specs serialize equally.
    format!("{:016x}", hash64(spec.to_string().as_bytes()))
}

/// Cut `ranges` into splits of at most `split_records` offsets, in (topic, partition, offset) order. Empty ranges
/// give no split; overlapping ranges of one partition are merged first, so no offset is read twice.
pub fn kafka_splits(pipeline: &str, run: &str, ranges: &[KafkaRange], split_records: u64) -> Vec<Split> {
    let step = split_records.max(1).min(i64::MAX as u64) as i64;
    let mut sorted: Vec<&KafkaRange> = ranges.iter().filter(|r| r.from < r.to).collect();
    sorted.sort_by(|a, b| (&a.topic, a.partition, a.from).cmp(&(&b.topic, b.partition, b.from)));
    let mut merged: Vec<KafkaRange> = Vec::new();
    for r in sorted {
        match merged.last_mut() {
            Some(last) if last.topic == r.topic && last.partition == r.partition && r.from <= last.to => {
                last.to = last.to.max(r.to);
            }
            _ => merged.push(r.clone()),
        }
    }
    let mut out = Vec::new();
    for r in merged {
        let mut from = r.from;
        while from < r.to {
            let to = from.saturating_add(step).min(r.to);
            let id = format!("bf:{pipeline}:{run}:{}:{}:{from}", r.topic, r.partition);
            let source = SplitSource::Kafka(KafkaRange { from, to, ..r.clone() });
            out.push(Split { id, source, ends: BTreeMap::new() });
            from = to;
        }
    }
    out
}

/// One split per object (in key order; a key listed twice once), named by its key and version.
pub fn object_splits(pipeline: &str, run: &str, objects: &[ObjectEntry]) -> Vec<Split> {
    let mut sorted: Vec<&ObjectEntry> = objects.iter().collect();
    sorted.sort_by(|a, b| a.key.cmp(&b.key));
    sorted.dedup_by(|a, b| a.key == b.key);
    sorted
        .into_iter()
        .map(|o| {
            let id = format!("bf:{pipeline}:{run}:s3:{:016x}", o.digest());
            Split { id, source: SplitSource::Object(o.clone()), ends: BTreeMap::new() }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet, HashSet};

    use super::*;

    /// A small deterministic generator (xorshift), so the property test needs no extra crate and repeats exactly.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self, below: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % below.max(1)
        }
    }

    #[test]
    fn splits_cover_every_offset_exactly_once_within_their_size() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for case in 0..500 {
            let split_records = 1 + rng.next(50);
            let mut ranges = Vec::new();
            for _ in 0..rng.next(8) {
                let from = rng.next(300) as i64;
                let to = from + rng.next(200) as i64 - 20; // sometimes empty or reversed
                let topic = ["a", "b"][rng.next(2) as usize].to_string();
                ranges.push(KafkaRange { topic, partition: rng.next(3) as i32, from, to });
            }
            let splits = kafka_splits("p", "r", &ranges, split_records);
            let mut want: BTreeMap<(String, i32), BTreeSet<i64>> = BTreeMap::new();
            for r in &ranges {
                want.entry((r.topic.clone(), r.partition)).or_default().extend(r.from..r.to.max(r.from));
            }
            want.retain(|_, offsets| !offsets.is_empty());
            let mut got: BTreeMap<(String, i32), BTreeSet<i64>> = BTreeMap::new();
            let mut ids = HashSet::new();
            for s in &splits {
                let SplitSource::Kafka(r) = &s.source else { panic!("a Kafka split") };
                assert!(r.from < r.to && (r.to - r.from) as u64 <= split_records, "case {case}: {r:?}");
                let offsets = got.entry((r.topic.clone(), r.partition)).or_default();
                for o in r.from..r.to {
                    assert!(offsets.insert(o), "case {case}: offset {o} of {}:{} twice", r.topic, r.partition);
                }
                assert!(ids.insert(s.id.clone()), "case {case}: id {} twice", s.id);
            }
            assert_eq!(got, want, "case {case}");
            assert_eq!(kafka_splits("p", "r", &ranges, split_records), splits, "deterministic");
        }
    }

    #[test]
    fn objects_are_one_split_each_named_by_key_and_version() {
        let o = |key: &str, version: &str| ObjectEntry {
            key: key.into(),
            version: version.into(),
            size: 10,
            modified_ms: None,
        };
        let splits = object_splits("p", "r", &[o("b", "1"), o("a", "1"), o("b", "1")]);
        assert_eq!(splits.len(), 2);
        assert!(matches!(&splits[0].source, SplitSource::Object(x) if x.key == "a"));
        let changed = object_splits("p", "r", &[o("a", "2")]);
        assert_ne!(changed[0].id, splits[0].id, "new content, new split");
        assert_eq!(object_splits("p", "r", &[o("a", "1")])[0].id, splits[0].id);
    }

    #[test]
    fn a_run_is_named_by_its_spec() {
        let a = serde_json::json!({"pipeline": "p", "source": {"kafka": {"from": 0, "to": "live"}}});
        let b = serde_json::json!({"source": {"kafka": {"to": "live", "from": 0}}, "pipeline": "p"});
        assert_eq!(run_id(&a), run_id(&b));
        assert_ne!(run_id(&a), run_id(&serde_json::json!({"pipeline": "q"})));
    }
}
