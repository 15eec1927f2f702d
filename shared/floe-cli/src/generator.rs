//! Deterministic sample data for `examples/pipeline.toml`: click and order events with nested objects, arrays,
//! decimals, maps and timestamps, spread over topics and partitions, with a small share of malformed records of
//! every kind floe must dead-letter, packed into MSK events the way the event source mapping delivers them.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use floe_core::{MskEvent, MskRecord};
use serde_json::json;

/// What to generate.
#[derive(Debug, Clone)]
pub struct GeneratorOptions {
    pub records: usize,
    /// (topic, partitions)
    pub topics: Vec<(String, i32)>,
    /// Records per topic-partition per event (the mapping's batch size, per partition).
    pub batch_size: usize,
    /// Topic-partitions per event.
    pub partitions_per_event: usize,
    /// One record in `bad_every` is malformed (0: none).
    pub bad_every: usize,
    /// One record in `duplicate_every` repeats the previous value of its partition, like a producer retry
    /// (0: none). Duplicates are good records: the raw table keeps them, a deduplicated output drops them.
    pub duplicate_every: usize,
    pub seed: u64,
    /// Event time of the first record, epoch milliseconds.
    pub start_ms: i64,
}

impl Default for GeneratorOptions {
    fn default() -> Self {
        GeneratorOptions {
            records: 100_000,
            topics: vec![("clicks".into(), 3), ("orders".into(), 2)],
            batch_size: 500,
            partitions_per_event: 2,
            bad_every: 1_000,
            duplicate_every: 0,
            seed: 42,
            start_ms: 1_763_683_200_000, // 2025-11-21T00:00:00Z
        }
    }
}

/// Generated events and what a correct ingest must make of them.
#[derive(Debug, Clone)]
pub struct Generated {
    pub events: Vec<MskEvent>,
    pub records: usize,
    /// (topic, partition, offset, kind) of every malformed record.
    pub bad: Vec<(String, i32, i64, &'static str)>,
    /// Records that repeat an earlier value (see [`GeneratorOptions::duplicate_every`]).
    pub duplicates: usize,
}

impl Generated {
    pub fn good(&self) -> usize {
        self.records - self.bad.len()
    }
}

/// splitmix64: tiny, deterministic, good enough for sample data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// Skewed pick in 0..n (small values much more likely), like real user/product popularity.
    fn skewed(&mut self, n: u64) -> u64 {
        let a = self.below(n);
        let b = self.below(n);
        a.min(b).min(self.below(n))
    }
}

const COUNTRIES: [&str; 8] = ["DE", "US", "IN", "BR", "FR", "JP", "GB", "NG"];
const PAGES: [&str; 6] = ["/", "/search", "/product", "/cart", "/checkout", "/account"];

const BAD_KINDS: [&str; 6] = ["truncated", "missing_user", "wrong_type", "not_object", "empty", "bad_base64"];

fn value(rng: &mut Rng, topic: &str, n: usize, ts_ms: i64) -> serde_json::Value {
    let ts = chrono::DateTime::from_timestamp_millis(ts_ms).expect("valid time");
    let user = rng.skewed(50_000) as i64 + 1;
    let mut v = json!({
        "event_id": format!("{topic}-{n:08}"),
        "type": if topic == "orders" { "order" } else { ["view", "click", "add_to_cart"][rng.below(3) as usize] },
        "ts": ts.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "user": {"id": user, "country": COUNTRIES[rng.skewed(8) as usize], "agent": "Mozilla/5.0 (X11; Linux x86_64)"},
        "page": {"url": format!("https://shop.example{}?p={}", PAGES[rng.below(6) as usize], rng.below(500)),
                 "referrer": if rng.below(3) == 0 { serde_json::Value::Null } else { json!("https://search.example/") }},
        "attrs": {"ab": format!("exp-{}", rng.below(4)), "app": "web"},
        "client_ts": ts_ms - rng.below(2_000) as i64,
    });
    if topic == "orders" {
        let items: Vec<serde_json::Value> = (0..1 + rng.below(4))
            .map(|_| {
                json!({"sku": format!("SKU-{:05}", rng.skewed(20_000)), "qty": 1 + rng.below(3),
                       "price": format!("{}.{:02}", 1 + rng.below(200), rng.below(100))})
            })
            .collect();
        v["items"] = json!(items);
        v["amount"] = json!(format!("{}.{:02}", 1 + rng.below(800), rng.below(100)));
    }
    v
}

/// Generate `options.records` records round-robin over the topic-partitions and pack them into events.
pub fn generate(options: &GeneratorOptions) -> Generated {
    let mut rng = Rng(options.seed);
    let tps: Vec<(String, i32)> =
        options.topics.iter().flat_map(|(t, n)| (0..*n).map(move |p| (t.clone(), p))).collect();
    let mut per_tp: Vec<Vec<MskRecord>> = vec![Vec::new(); tps.len()];
    let mut bad = Vec::new();
    let mut previous: Vec<Option<String>> = vec![None; tps.len()];
    let mut duplicates = 0;
    for n in 0..options.records {
        let i = n % tps.len();
        let (topic, partition) = &tps[i];
        let offset = per_tp[i].len() as i64;
        let ts_ms = options.start_ms + (n as i64) * 37; // ~1 day per 2.3M records: several day partitions
        let mut record = MskRecord {
            topic: Some(topic.clone()),
            partition: i64::from(*partition),
            offset,
            timestamp: ts_ms + 5,
            timestamp_type: Some("CREATE_TIME".into()),
            key: Some(STANDARD.encode(format!("user-{}", rng.below(50_000)))),
            value: None,
            headers: vec![BTreeMap::from([(
                "trace-id".to_string(),
                format!("{:016x}", rng.next()).bytes().map(i16::from).collect(),
            )])],
            malformed: None,
        };
        let mut text = value(&mut rng, topic, n, ts_ms).to_string();
        let is_bad = options.bad_every > 0 && n % options.bad_every == options.bad_every / 2;
        let repeat =
            !is_bad && options.duplicate_every > 0 && n % options.duplicate_every == options.duplicate_every / 3;
        if let Some(prev) = previous[i].as_ref().filter(|_| repeat) {
            text = prev.clone();
            duplicates += 1;
        } else if !is_bad {
            previous[i] = Some(text.clone());
        }
        if is_bad {
            let kind = BAD_KINDS[(n / options.bad_every) % BAD_KINDS.len()];
            text = match kind {
                "truncated" => text[..text.len() / 2].to_string(),
                "missing_user" => text.replacen("\"user\":", "\"usr\":", 1),
                "wrong_type" => {
                    let mut v: serde_json::Value = serde_json::from_str(&text).expect("generated JSON");
                    v["user"]["id"] = json!("abc");
                    v.to_string()
                }
                "not_object" => "[1,2,3]".to_string(),
                "empty" => String::new(),
                _ => text,
            };
            bad.push((topic.clone(), *partition, offset, kind));
            if kind == "bad_base64" {
                record.value = Some(format!("%%{}", STANDARD.encode(&text)));
            }
        }
        if record.value.is_none() {
            record.value = Some(STANDARD.encode(&text));
        }
        per_tp[i].push(record);
    }

    // Pack: each event carries `partitions_per_event` topic-partitions with up to `batch_size` records each.
    let mut events = Vec::new();
    let mut cursors = vec![0usize; tps.len()];
    loop {
        let mut progressed = false;
        for group in (0..tps.len()).collect::<Vec<_>>().chunks(options.partitions_per_event.max(1)) {
            let mut records = BTreeMap::new();
            for &i in group {
                let end = (cursors[i] + options.batch_size).min(per_tp[i].len());
                if cursors[i] < end {
                    let (t, p) = &tps[i];
                    records.insert(format!("{t}-{p}"), per_tp[i][cursors[i]..end].to_vec());
                    cursors[i] = end;
                }
            }
            if !records.is_empty() {
                progressed = true;
                events.push(MskEvent {
                    event_source: Some("aws:kafka".into()),
                    event_source_arn: Some(
                        "arn:aws:kafka:us-east-1:123456789012:cluster/demo/751d2973-a626-431c-9d4e-d7975eb44dd7-2"
                            .into(),
                    ),
                    bootstrap_servers: Some("b-1.demo.kafka.us-east-1.amazonaws.com:9098".into()),
                    records,
                });
            }
        }
        if !progressed {
            break;
        }
    }
    Generated { events, records: options.records, bad, duplicates }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_complete() {
        let o = GeneratorOptions { records: 3_000, ..Default::default() };
        let a = generate(&o);
        let b = generate(&o);
        assert_eq!(a.events, b.events);
        let total: usize = a.events.iter().flat_map(|e| e.records.values()).map(Vec::len).sum();
        assert_eq!(total, 3_000);
        assert_eq!(a.bad.len(), 3);
        // Offsets are contiguous per partition.
        let mut offsets: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        for e in &a.events {
            for (k, rs) in &e.records {
                offsets.entry(k.clone()).or_default().extend(rs.iter().map(|r| r.offset));
            }
        }
        for o in offsets.values() {
            assert!(o.iter().enumerate().all(|(i, x)| *x == i as i64));
        }
    }
}
