//! The benchmark's deterministic data: realistic ~1 KB clickstream/commerce records (21 top-level fields with
//! nested objects, arrays, timestamps and skewed keys) packed into MSK events the way the event source mapping
//! delivers them — several partitions per event, base64 values, each event as large as a cycle of payload sizes
//! allows, never above the 6 MB invocation cap. The same seed always gives the same bytes.

use std::fmt::Write as _;
use std::sync::Arc;

use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

/// Lambda's synchronous invocation payload cap (6 MB), which bounds every event the mapping sends.
pub const PAYLOAD_CAP: usize = 6_291_456;
/// The topic every generated record comes from.
pub const TOPIC: &str = "bench";

/// Which records to generate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// ~1.2 KB commerce records, 21 fields, nested objects and arrays ([`record`]).
    #[default]
    Commerce,
    /// ~800-byte click events, 18 fields, shallow nesting, 5,000 to an event ([`crate::clicks`]).
    Clicks,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Commerce => "commerce",
            Workload::Clicks => "clicks",
        }
    }

    fn record(self, rng: &mut Rng, seq: u64, ts_ms: i64) -> Value {
        match self {
            Workload::Commerce => record(rng, seq, ts_ms),
            Workload::Clicks => crate::clicks::record(rng, seq, ts_ms),
        }
    }

    pub fn arrow_schema(self) -> SchemaRef {
        match self {
            Workload::Commerce => arrow_schema(),
            Workload::Clicks => crate::clicks::arrow_schema(),
        }
    }

    pub fn pipeline_toml(self, name: &str) -> String {
        match self {
            Workload::Commerce => pipeline_toml(name),
            Workload::Clicks => crate::clicks::pipeline_toml(name),
        }
    }

    /// The generator's options for `records` records of this workload.
    pub fn options(self, records: usize, seed: u64) -> Options {
        match self {
            Workload::Commerce => Options { records, seed, ..Default::default() },
            Workload::Clicks => Options {
                records,
                seed,
                workload: self,
                batch_size: Some(crate::clicks::RECORDS_PER_EVENT),
                event_bytes: vec![PAYLOAD_CAP],
                // Four of the topic's partitions an event, so two cores can share an event's partitions evenly
                // (the commerce workload's three cannot: see BENCHMARKS.md).
                partitions_per_event: 4,
                partitions: 8,
                ..Default::default()
            },
        }
    }
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct Options {
    pub workload: Workload,
    pub records: usize,
    /// Partitions of the topic; each event carries records of up to `partitions_per_event` of them.
    pub partitions: i32,
    pub partitions_per_event: usize,
    /// Payload sizes of successive events, in bytes, cycled (each capped at [`PAYLOAD_CAP`]).
    pub event_bytes: Vec<usize>,
    /// At most this many records per event (the mapping's BatchSize); `None`: only the size bounds an event.
    pub batch_size: Option<usize>,
    pub seed: u64,
    /// Event time of the first record, epoch milliseconds.
    pub start_ms: i64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            workload: Workload::Commerce,
            records: 100_000,
            partitions: 6,
            partitions_per_event: 3,
            event_bytes: vec![PAYLOAD_CAP, 1_000_000, 3_000_000, 500_000],
            batch_size: None,
            seed: 7,
            start_ms: 1_795_000_000_000,
        }
    }
}

/// Generated events (serialized, as the function receives them) and what they hold.
#[derive(Debug, Clone, Default)]
pub struct Generated {
    pub events: Vec<Vec<u8>>,
    pub records: usize,
    /// Bytes of record values (the JSON documents, decoded).
    pub value_bytes: usize,
}

/// splitmix64: tiny, fast and good enough for test data; deterministic across platforms.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Heavily skewed towards 0 (a few hot keys, a long tail), like user ids on a real site.
    pub fn skewed(&mut self, n: u64) -> u64 {
        (n as f64 * self.unit().powi(4)) as u64
    }

    pub fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }

    /// The first items are much more likely than the last.
    pub fn pick_skewed<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.skewed(items.len() as u64) as usize]
    }

    pub(crate) fn hex(&mut self, digits: usize) -> String {
        let mut s = String::with_capacity(digits);
        while s.len() < digits {
            let _ = write!(s, "{:016x}", self.next_u64());
        }
        s.truncate(digits);
        s
    }
}

const EVENT_TYPES: &[&str] = &["page_view", "click", "search", "add_to_cart", "checkout", "purchase", "refund"];
const COUNTRIES: &[&str] = &["US", "DE", "GB", "FR", "IN", "BR", "JP", "CA", "ES", "IT", "NL", "SE", "PL", "MX"];
const CITIES: &[&str] = &["Berlin", "London", "Paris", "Mumbai", "São Paulo", "Tokyo", "Toronto", "Madrid", "Zürich"];
const SEGMENTS: &[&str] = &["new", "returning", "loyal", "churn_risk", "vip"];
const OSES: &[(&str, &str, &str)] = &[
    ("iOS", "Safari", "iPhone15,2"),
    ("Android", "Chrome", "Pixel 8"),
    ("Windows", "Edge", "Surface Laptop 5"),
    ("macOS", "Safari", "MacBookPro18,3"),
    ("Linux", "Firefox", "ThinkPad X1"),
];
const CATEGORIES: &[&str] = &["shoes", "outerwear", "electronics", "books", "kitchen", "toys", "garden", "beauty"];
const TAGS: &[&str] = &["promo", "mobile", "first_visit", "newsletter", "retargeted", "gift", "express", "eco"];
const SOURCES: &[&str] = &["google", "newsletter", "facebook", "bing", "affiliate", "tiktok"];
const MEDIUMS: &[&str] = &["cpc", "email", "social", "display", "referral"];
const WORDS: &[&str] = &[
    "winter",
    "sale",
    "running",
    "jacket",
    "wireless",
    "headphones",
    "organic",
    "coffee",
    "linen",
    "sneakers",
    "desk",
    "lamp",
    "wool",
    "scarf",
    "cast",
    "iron",
    "pan",
    "kids",
    "lego",
    "garden",
    "hose",
    "serum",
    "vitamin",
    "backpack",
];

pub(crate) fn rfc3339(ms: i64) -> String {
    let time = chrono::DateTime::from_timestamp_millis(ms).expect("generated times are in range");
    time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn words(rng: &mut Rng, n: usize, sep: &str) -> String {
    (0..n).map(|_| rng.pick(WORDS)).collect::<Vec<_>>().join(sep)
}

/// One record: about 1 KB of JSON.
pub fn record(rng: &mut Rng, seq: u64, ts_ms: i64) -> Value {
    let event_type = rng.pick_skewed(EVENT_TYPES);
    let (os, browser, model) = OSES[rng.skewed(OSES.len() as u64) as usize];
    let items: Vec<Value> = (0..rng.below(5))
        .map(|_| {
            json!({
                "sku": format!("SKU-{:06}", rng.skewed(200_000)),
                "qty": 1 + rng.skewed(6),
                "price": (rng.below(50_000) as f64) / 100.0,
                "category": rng.pick(CATEGORIES),
            })
        })
        .collect();
    let amount: f64 = items.iter().map(|i| i["price"].as_f64().unwrap_or(0.0) * i["qty"].as_f64().unwrap_or(0.0)).sum();
    let tags: Vec<&str> = (0..rng.below(4)).map(|_| rng.pick(TAGS)).collect();
    let path = words(rng, 3, "/");
    json!({
        "event_id": format!("{}-{}-4{}-{}-{}", rng.hex(8), rng.hex(4), rng.hex(3), rng.hex(4), rng.hex(12)),
        "event_type": event_type,
        "ts": rfc3339(ts_ms),
        "received_at": rfc3339(ts_ms + 20 + rng.skewed(5_000) as i64),
        "seq": seq,
        "user": {
            "id": rng.skewed(5_000_000),
            "country": rng.pick_skewed(COUNTRIES),
            "segment": rng.pick_skewed(SEGMENTS),
            "logged_in": rng.below(3) > 0,
            "email_hash": rng.hex(40),
        },
        "session_id": format!("s-{}", rng.hex(20)),
        "device": {
            "os": os,
            "os_version": format!("{}.{}.{}", 10 + rng.below(8), rng.below(10), rng.below(20)),
            "browser": browser,
            "model": model,
            "screen": { "w": 360 + rng.below(3_000), "h": 640 + rng.below(1_600) },
        },
        "page": {
            "url": format!("https://shop.example.com/{path}?ref={}&utm_id={}", rng.hex(6), rng.below(100_000)),
            "referrer": if rng.below(3) == 0 { Value::Null } else { json!(format!("https://www.{}.com/search?q={}", rng.pick(SOURCES), words(rng, 2, "+"))) },
            "title": words(rng, 5, " "),
        },
        "geo": {
            "lat": (rng.unit() * 180.0 - 90.0 ) ,
            "lon": (rng.unit() * 360.0 - 180.0),
            "city": rng.pick_skewed(CITIES),
        },
        "items": items,
        "tags": tags,
        "amount": (amount * 100.0).round() / 100.0,
        "currency": rng.pick_skewed(&["EUR", "USD", "GBP", "JPY", "INR"]),
        "latency_ms": rng.skewed(3_000),
        "is_bot": rng.below(50) == 0,
        "experiment": if rng.below(2) == 0 { Value::Null } else { json!({"id": format!("exp-{}", rng.below(40)), "variant": rng.pick(&["A", "B", "C"])}) },
        "user_agent": format!("Mozilla/5.0 ({os}; {model}) AppleWebKit/537.36 (KHTML, like Gecko) {browser}/{}.0.{}.{} Mobile Safari/537.36", 100 + rng.below(30), rng.below(7000), rng.below(200)),
        "ip": format!("{}.{}.{}.{}", 1 + rng.below(223), rng.below(256), rng.below(256), 1 + rng.below(254)),
        "campaign": if rng.below(3) == 0 { Value::Null } else { json!({"source": rng.pick_skewed(SOURCES), "medium": rng.pick(MEDIUMS), "name": format!("{}_{}_2026", rng.pick(WORDS), rng.pick(WORDS))}) },
        "payload_version": 3,
    })
}

/// Generate `options.records` records, packed into events.
pub fn generate(options: &Options) -> Generated {
    let mut rng = Rng::new(options.seed);
    let mut out = Generated { records: options.records, ..Default::default() };
    let mut offsets = vec![0i64; options.partitions as usize];
    let mut next_partition = 0i32;
    let mut seq = 0u64;
    let mut sizes = options.event_bytes.iter().copied().cycle();
    while (seq as usize) < options.records {
        let budget = sizes.next().unwrap_or(PAYLOAD_CAP).min(PAYLOAD_CAP);
        // Envelope and per-partition overhead, generously.
        let mut size = 256usize;
        let mut groups: Vec<(String, Vec<Value>)> = Vec::new();
        let mut turn = 0usize;
        let per_event = options.partitions_per_event.max(1);
        for p in 0..per_event {
            let partition = (next_partition + p as i32) % options.partitions;
            groups.push((format!("{TOPIC}-{partition}"), Vec::new()));
        }
        next_partition = (next_partition + per_event as i32) % options.partitions;
        loop {
            if seq as usize >= options.records || options.batch_size.is_some_and(|n| turn >= n) {
                break;
            }
            let ts = options.start_ms + seq as i64 * 3 + rng.below(2_000) as i64;
            let value = serde_json::to_vec(&options.workload.record(&mut rng, seq, ts)).expect("serializable");
            let (key, records) = &mut groups[turn % per_event];
            let partition: i32 = key.rsplit_once('-').and_then(|(_, p)| p.parse().ok()).unwrap_or(0);
            let offset = &mut offsets[partition as usize];
            let rec = json!({
                "topic": TOPIC,
                "partition": partition,
                "offset": *offset,
                "timestamp": ts + 5,
                "timestampType": "CREATE_TIME",
                "key": STANDARD.encode(format!("user-{}", seq % 9_973)),
                "value": STANDARD.encode(&value),
                "headers": [],
            });
            let rec_size = serde_json::to_vec(&rec).expect("serializable").len() + 1;
            if size + rec_size > budget && records.len() + turn > 0 {
                break;
            }
            size += rec_size;
            *offset += 1;
            out.value_bytes += value.len();
            records.push(rec);
            seq += 1;
            turn += 1;
        }
        let records: serde_json::Map<String, Value> =
            groups.into_iter().filter(|(_, r)| !r.is_empty()).map(|(k, r)| (k, Value::Array(r))).collect();
        let event = json!({
            "eventSource": "aws:kafka",
            "eventSourceArn": "arn:aws:kafka:us-east-1:123456789012:cluster/bench/abcd1234-0123-4567-89ab-cdef01234567-1",
            "bootstrapServers": "b-1.bench.abcd12.c2.kafka.us-east-1.amazonaws.com:9098",
            "records": records,
        });
        out.events.push(serde_json::to_vec(&event).expect("serializable"));
    }
    out
}

/// The records' Arrow schema, as a user would declare it for arrow-json or `pyarrow.json.read_json`.
pub fn arrow_schema() -> SchemaRef {
    let utf8 = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
    let ts = |name: &str, nullable: bool| {
        Field::new(name, DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())), nullable)
    };
    let item = Fields::from(vec![
        utf8("sku", false),
        Field::new("qty", DataType::Int32, true),
        Field::new("price", DataType::Float64, true),
        utf8("category", true),
    ]);
    Arc::new(Schema::new(vec![
        utf8("event_id", false),
        utf8("event_type", false),
        ts("ts", false),
        ts("received_at", true),
        Field::new("seq", DataType::Int64, false),
        Field::new(
            "user",
            DataType::Struct(Fields::from(vec![
                Field::new("id", DataType::Int64, false),
                utf8("country", true),
                utf8("segment", true),
                Field::new("logged_in", DataType::Boolean, true),
                utf8("email_hash", true),
            ])),
            false,
        ),
        utf8("session_id", true),
        Field::new(
            "device",
            DataType::Struct(Fields::from(vec![
                utf8("os", true),
                utf8("os_version", true),
                utf8("browser", true),
                utf8("model", true),
                Field::new(
                    "screen",
                    DataType::Struct(Fields::from(vec![
                        Field::new("w", DataType::Int32, true),
                        Field::new("h", DataType::Int32, true),
                    ])),
                    true,
                ),
            ])),
            true,
        ),
        Field::new(
            "page",
            DataType::Struct(Fields::from(vec![utf8("url", false), utf8("referrer", true), utf8("title", true)])),
            true,
        ),
        Field::new(
            "geo",
            DataType::Struct(Fields::from(vec![
                Field::new("lat", DataType::Float64, true),
                Field::new("lon", DataType::Float64, true),
                utf8("city", true),
            ])),
            true,
        ),
        Field::new("items", DataType::List(Arc::new(Field::new("element", DataType::Struct(item), false))), true),
        Field::new("tags", DataType::List(Arc::new(Field::new("element", DataType::Utf8, false))), true),
        Field::new("amount", DataType::Float64, true),
        utf8("currency", true),
        Field::new("latency_ms", DataType::Int32, true),
        Field::new("is_bot", DataType::Boolean, true),
        Field::new("experiment", DataType::Struct(Fields::from(vec![utf8("id", true), utf8("variant", true)])), true),
        utf8("user_agent", true),
        utf8("ip", true),
        Field::new(
            "campaign",
            DataType::Struct(Fields::from(vec![utf8("source", true), utf8("medium", true), utf8("name", true)])),
            true,
        ),
        Field::new("payload_version", DataType::Int32, true),
    ]))
}

/// The same table as a floe pipeline file (columns in the same order with the same types), unpartitioned so
/// that floe, the baseline and the peer do the same work.
pub fn pipeline_toml(name: &str) -> String {
    let columns: &[(&str, &str, bool)] = &[
        ("event_id", "string", true),
        ("event_type", "string", true),
        ("ts", "timestamptz", true),
        ("received_at", "timestamptz", false),
        ("seq", "long", true),
        (
            "user",
            "struct<id: long not null, country: string, segment: string, logged_in: boolean, email_hash: string>",
            true,
        ),
        ("session_id", "string", false),
        (
            "device",
            "struct<os: string, os_version: string, browser: string, model: string, screen: struct<w: int, h: int>>",
            false,
        ),
        ("page", "struct<url: string not null, referrer: string, title: string>", false),
        ("geo", "struct<lat: double, lon: double, city: string>", false),
        ("items", "list<struct<sku: string not null, qty: int, price: double, category: string>>", false),
        ("tags", "list<string>", false),
        ("amount", "double", false),
        ("currency", "string", false),
        ("latency_ms", "int", false),
        ("is_bot", "boolean", false),
        ("experiment", "struct<id: string, variant: string>", false),
        ("user_agent", "string", false),
        ("ip", "string", false),
        ("campaign", "struct<source: string, medium: string, name: string>", false),
        ("payload_version", "int", false),
    ];
    pipeline_file(name, "`floe-bench generate`: the benchmark's records as a floe table (see generate.rs)", columns)
}

/// A pipeline file of the generated topic into the unpartitioned table `bench.events` with `columns` (name, floe
/// type, required), written by `written_by` (a comment at its top).
pub(crate) fn pipeline_file(name: &str, written_by: &str, columns: &[(&str, &str, bool)]) -> String {
    let mut toml = format!(
        "# Written by {written_by}.\nname = \"{name}\"\n\n[source]\ntopics = [\"{TOPIC}\"]\nformat = \"json\"\n\n\
         [table]\nnamespace = \"bench\"\nname = \"events\"\n\
         properties = {{ \"write.parquet.compression-codec\" = \"zstd\" }}\n"
    );
    for (column, ty, required) in columns {
        let _ = write!(toml, "\n[[table.columns]]\nname = \"{column}\"\ntype = \"{ty}\"\n");
        if *required {
            toml.push_str("required = true\n");
        }
    }
    toml
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_about_a_kilobyte_with_twenty_one_fields() {
        let mut rng = Rng::new(1);
        let sizes: Vec<usize> =
            (0..1_000).map(|i| serde_json::to_vec(&record(&mut rng, i, 1_795_000_000_000)).unwrap().len()).collect();
        let mean = sizes.iter().sum::<usize>() / sizes.len();
        assert!((850..=1_250).contains(&mean), "mean record size {mean}");
        let one = record(&mut Rng::new(2), 0, 0);
        assert_eq!(one.as_object().unwrap().len(), 21);
        assert_eq!(arrow_schema().fields().len(), 21);
    }

    #[test]
    fn generation_is_deterministic_and_respects_the_payload_cap() {
        let options = Options { records: 12_000, ..Default::default() };
        let a = generate(&options);
        let b = generate(&options);
        assert_eq!(a.events, b.events);
        assert!(a.events.iter().all(|e| e.len() <= PAYLOAD_CAP));
        // The first event is packed up to the cap (within one record).
        assert!(a.events[0].len() > PAYLOAD_CAP - 3_000, "{}", a.events[0].len());
        let counted: usize = a
            .events
            .iter()
            .map(|e| {
                let v: Value = serde_json::from_slice(e).unwrap();
                v["records"].as_object().unwrap().values().map(|r| r.as_array().unwrap().len()).sum::<usize>()
            })
            .sum();
        assert_eq!(counted, 12_000);
    }

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_000_000_123), "2026-11-18T11:06:40.123Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
