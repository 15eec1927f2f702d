//! The lean workload (issue 21): ~800-byte click events with 18 top-level fields — three small structs, one
//! list of strings, an RFC 3339 timestamp — packed 5,000 to an MSK event, unpartitioned. Per-record overheads
//! weigh more here than on the ~1.2 KB commerce records of [`crate::generate::record`].

use std::sync::Arc;

use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use serde_json::{Value, json};

use crate::generate::{Rng, pipeline_file, rfc3339};

/// Records per event in this workload: the event source mapping's BatchSize a user tuning for lean records sets.
pub const RECORDS_PER_EVENT: usize = 5_000;

const ELEMENTS: &[&str] = &["button", "link", "image", "card", "tab", "menu_item", "checkbox", "video"];
const EVENTS: &[&str] = &["click", "tap", "hover", "scroll", "submit"];
const SCREENS: &[&str] = &["home", "search", "product", "cart", "checkout", "account", "help"];
const OSES: &[&str] = &["iOS", "Android", "Windows", "macOS", "Linux"];
const BROWSERS: &[&str] = &["Safari", "Chrome", "Edge", "Firefox", "Samsung Internet"];
const COUNTRIES: &[&str] = &["US", "DE", "GB", "FR", "IN", "BR", "JP", "CA", "ES", "IT"];
const REGIONS: &[&str] = &["CA", "BY", "ENG", "IDF", "MH", "SP", "13", "ON", "MD", "LAZ"];
const LABELS: &[&str] = &["ab_test", "beta", "returning", "mobile", "dark_mode", "logged_in", "promo", "accessibility"];
const LOCALES: &[&str] = &["en-US", "de-DE", "en-GB", "fr-FR", "hi-IN", "pt-BR", "ja-JP"];

/// One click event: about 800 bytes of JSON, 18 top-level fields.
pub fn record(rng: &mut Rng, seq: u64, ts_ms: i64) -> Value {
    let screen = rng.pick_skewed(SCREENS);
    let labels: Vec<&str> = (0..rng.below(4)).map(|_| rng.pick(LABELS)).collect();
    json!({
        "click_id": format!("{}-{}-4{}-{}-{}", rng.hex(8), rng.hex(4), rng.hex(3), rng.hex(4), rng.hex(12)),
        "ts": rfc3339(ts_ms),
        "seq": seq,
        "user_id": rng.skewed(2_000_000),
        "anonymous_id": format!("anon-{}", rng.hex(24)),
        "session_id": format!("s-{}", rng.hex(20)),
        "event": rng.pick_skewed(EVENTS),
        "element": {
            "kind": rng.pick(ELEMENTS),
            "id": format!("{screen}-{}-{}", rng.pick(ELEMENTS), rng.below(60)),
            "text": format!("{} {}", rng.pick(&["Add to", "Show", "Open", "Buy", "Save"]), rng.pick(&["cart", "details", "offers", "now", "list"])),
            "x": rng.below(1_400),
            "y": rng.below(3_000),
        },
        "page": {
            "screen": screen,
            "url": format!("https://shop.example.com/{screen}/{}?ref={}", rng.hex(10), rng.hex(6)),
            "referrer": if rng.below(3) == 0 { Value::Null } else { json!(format!("https://shop.example.com/{}", rng.pick(SCREENS))) },
        },
        "client": {
            "os": rng.pick_skewed(OSES),
            "browser": rng.pick_skewed(BROWSERS),
            "app_version": format!("{}.{}.{}", 4 + rng.below(3), rng.below(20), rng.below(40)),
            "viewport_w": 320 + rng.below(1_600),
            "viewport_h": 480 + rng.below(900),
        },
        "country": rng.pick_skewed(COUNTRIES),
        "region": rng.pick(REGIONS),
        "locale": rng.pick_skewed(LOCALES),
        "labels": labels,
        "duration_ms": rng.skewed(20_000),
        "is_bot": rng.below(50) == 0,
        "ip": format!("{}.{}.{}.{}", 1 + rng.below(223), rng.below(256), rng.below(256), 1 + rng.below(254)),
        "user_agent": format!("Mozilla/5.0 (Linux; Android {}) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{}.0.{}.{} Mobile Safari/537.36", 10 + rng.below(5), 100 + rng.below(30), rng.below(7000), rng.below(200)),
    })
}

/// The records' Arrow schema, as a user would declare it for arrow-json or `pyarrow.json.read_json`.
pub fn arrow_schema() -> SchemaRef {
    let utf8 = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
    let int = |name: &str| Field::new(name, DataType::Int32, true);
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into()));
    Arc::new(Schema::new(vec![
        utf8("click_id", false),
        Field::new("ts", ts, false),
        Field::new("seq", DataType::Int64, false),
        Field::new("user_id", DataType::Int64, true),
        utf8("anonymous_id", true),
        utf8("session_id", true),
        utf8("event", false),
        Field::new(
            "element",
            DataType::Struct(Fields::from(vec![
                utf8("kind", true),
                utf8("id", true),
                utf8("text", true),
                int("x"),
                int("y"),
            ])),
            true,
        ),
        Field::new(
            "page",
            DataType::Struct(Fields::from(vec![utf8("screen", true), utf8("url", true), utf8("referrer", true)])),
            true,
        ),
        Field::new(
            "client",
            DataType::Struct(Fields::from(vec![
                utf8("os", true),
                utf8("browser", true),
                utf8("app_version", true),
                int("viewport_w"),
                int("viewport_h"),
            ])),
            true,
        ),
        utf8("country", true),
        utf8("region", true),
        utf8("locale", true),
        Field::new("labels", DataType::List(Arc::new(Field::new("element", DataType::Utf8, false))), true),
        int("duration_ms"),
        Field::new("is_bot", DataType::Boolean, true),
        utf8("ip", true),
        utf8("user_agent", true),
    ]))
}

/// The same table as a floe pipeline file, unpartitioned.
pub fn pipeline_toml(name: &str) -> String {
    let columns: &[(&str, &str, bool)] = &[
        ("click_id", "string", true),
        ("ts", "timestamptz", true),
        ("seq", "long", true),
        ("user_id", "long", false),
        ("anonymous_id", "string", false),
        ("session_id", "string", false),
        ("event", "string", true),
        ("element", "struct<kind: string, id: string, text: string, x: int, y: int>", false),
        ("page", "struct<screen: string, url: string, referrer: string>", false),
        ("client", "struct<os: string, browser: string, app_version: string, viewport_w: int, viewport_h: int>", false),
        ("country", "string", false),
        ("region", "string", false),
        ("locale", "string", false),
        ("labels", "list<string>", false),
        ("duration_ms", "int", false),
        ("is_bot", "boolean", false),
        ("ip", "string", false),
        ("user_agent", "string", false),
    ];
    let written_by =
        "`floe-bench generate --workload clicks`: the lean workload's records as a floe table (see clicks.rs)";
    pipeline_file(name, written_by, columns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_about_800_bytes_with_eighteen_fields() {
        let mut rng = Rng::new(1);
        let sizes: Vec<usize> =
            (0..1_000).map(|i| serde_json::to_vec(&record(&mut rng, i, 1_795_000_000_000)).unwrap().len()).collect();
        let mean = sizes.iter().sum::<usize>() / sizes.len();
        assert!((700..=900).contains(&mean), "mean record size {mean}");
        let one = record(&mut Rng::new(2), 0, 0);
        assert_eq!(one.as_object().unwrap().len(), 18);
        assert_eq!(arrow_schema().fields().len(), 18);
        let pipeline = floe_core::parse_pipeline(&pipeline_toml("bench"), "clicks").unwrap();
        assert_eq!(pipeline.table.columns.len(), 18);
    }
}
