//! The compactor handler on the embedded backend in a temp dir: commits what ingest staged, emits final windows
//! exactly once, and classifies failures.

use std::time::Duration;

use base64::Engine;
use floe_core::{Ingestor, MskEvent, StateStore};
use floe_embedded::Embedded;

use super::*;

/// A raw table and a tumbling-window count per user over the records' event time.
const PIPELINE: &str = r#"
name = "windows"
[source]
topics = ["clicks"]
[table]
namespace = "ns"
name = "clicks"
[[table.columns]]
name = "user"
type = "string"
required = true
[[table.columns]]
name = "ts"
type = "timestamptz"
required = true
format = "epoch_millis"

[[output]]
name = "per_user"
sql = "SELECT ts, user FROM input"
[output.window]
kind = "tumbling"
size = "10s"
time_column = "ts"
group_by = ["user"]
aggregates = ["count(*) AS n"]
idle_timeout = "30s"
"#;

/// Processing time of ingest and of the compactor runs.
const NOW_MS: i64 = 1_700_000_000_000;

/// One MSK event of `clicks` partition 0 from `first_offset` on: `(user, event time in ms)` per record.
fn event(first_offset: i64, records: &[(&str, i64)]) -> MskEvent {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let records: Vec<serde_json::Value> = records
        .iter()
        .enumerate()
        .map(|(i, (user, ts))| {
            serde_json::json!({
                "topic": "clicks", "partition": 0, "offset": first_offset + i as i64, "timestamp": NOW_MS,
                "timestampType": "CREATE_TIME", "value": b64(&format!(r#"{{"user": "{user}", "ts": {ts}}}"#)),
                "headers": [],
            })
        })
        .collect();
    serde_json::from_value(serde_json::json!({"eventSource": "aws:kafka", "records": {"clicks-0": records}})).unwrap()
}

fn ident(name: &str) -> iceberg::TableIdent {
    iceberg::TableIdent::from_strs(["ns", name]).unwrap()
}

async fn setup() -> (tempfile::TempDir, Embedded, Ingestor, Handler) {
    let dir = tempfile::tempdir().unwrap();
    let embedded = Embedded::open(dir.path()).await.unwrap();
    let planned = Arc::new(floe_core::parse_pipeline(PIPELINE, "windows.toml").unwrap());
    let ingestor = Ingestor::new(planned, &embedded.backends()).await.unwrap();
    // As on Lambda: the compactor validates the file but plans no SQL; it reads what ingest recorded.
    let pipeline = Arc::new(Pipeline::parse(PIPELINE, "windows.toml").unwrap());
    assert!(!pipeline.is_resolved());
    let handler = Handler::new(pipeline, &embedded.backends()).unwrap();
    (dir, embedded, ingestor, handler)
}

/// (window_start in ms, user, count) of every emitted window.
async fn windows(embedded: &Embedded) -> Vec<Vec<String>> {
    let table = embedded.catalog.load_table(&ident("per_user")).await.unwrap();
    floe_cli::readback::rows(&table, &["window_start", "user", "n"]).await.unwrap()
}

#[tokio::test]
async fn commits_staged_files_and_emits_final_windows_exactly_once() {
    let (_dir, embedded, ingestor, handler) = setup().await;
    let first = [("a", 1_000), ("a", 5_000), ("b", 9_000), ("a", 12_000), ("b", 25_000)];
    ingestor.handle_at(&event(0, &first), NOW_MS).await.unwrap();

    let outcome = handler.run(NOW_MS, Duration::from_secs(60)).await.unwrap();
    let raw = outcome.reports.iter().find(|r| r.table == "ns.clicks").unwrap();
    assert_eq!((raw.files, raw.rows), (1, 5));
    assert!(raw.snapshot_id.is_some());
    assert_eq!(outcome.metrics_lines.len(), outcome.reports.len());
    let line: serde_json::Value = serde_json::from_str(&outcome.metrics_lines[0]).unwrap();
    assert_eq!((line["Table"].as_str(), line["RowsCommitted"].as_f64()), (Some("ns.clicks"), Some(5.0)));
    let table = embedded.catalog.load_table(&ident("clicks")).await.unwrap();
    assert_eq!(floe_cli::readback::count_rows(&table).await.unwrap(), 5);

    // The watermark is at 25 s: [0, 10 s) and [10 s, 20 s) are final, [20 s, 30 s) is not.
    let t = |s: &str| format!("1970-01-01T00:00:{s}Z");
    let final_two = vec![
        vec![t("00"), "a".to_string(), "2".to_string()],
        vec![t("00"), "b".to_string(), "1".to_string()],
        vec![t("10"), "a".to_string(), "1".to_string()],
    ];
    assert_eq!(windows(&embedded).await, final_two);

    // Nothing new: a second run emits nothing and commits nothing.
    let again = handler.run(NOW_MS + 1_000, Duration::from_secs(60)).await.unwrap();
    assert!(again.reports.iter().all(|r| r.files == 0 && r.snapshot_id.is_none()), "{:?}", again.reports);
    assert_eq!(windows(&embedded).await, final_two);

    // An event at 41 s moves the watermark past 30 s: [20 s, 30 s) is emitted, once.
    ingestor.handle_at(&event(5, &[("c", 41_000)]), NOW_MS + 2_000).await.unwrap();
    handler.run(NOW_MS + 2_000, Duration::from_secs(60)).await.unwrap();
    handler.run(NOW_MS + 3_000, Duration::from_secs(60)).await.unwrap();
    let mut all = final_two.clone();
    all.push(vec![t("20"), "b".to_string(), "1".to_string()]);
    assert_eq!(windows(&embedded).await, all);
}

#[tokio::test]
async fn a_state_store_that_went_away_is_a_retryable_failure() {
    let (_dir, embedded, ingestor, handler) = setup().await;
    ingestor.handle_at(&event(0, &[("a", 1_000)]), NOW_MS).await.unwrap();
    embedded.state.close().await;
    let failure = handler.run(NOW_MS, Duration::from_secs(60)).await.unwrap_err();
    assert!(failure.retryable, "{failure}");
    assert!(matches!(failure.source, floe_core::Error::State { retryable: true, .. }), "{failure:?}");
}

#[test]
fn the_budget_stops_commits_a_minute_before_the_deadline() {
    let now = 1_000_000;
    assert_eq!(budget(now + 300_000, now), Duration::from_secs(240));
    assert_eq!(budget(now + 61_500, now), Duration::from_millis(1_500));
    // Past the margin, or past the deadline itself: still one second, so a run can mark what it finds.
    assert_eq!(budget(now + 30_000, now), MIN_BUDGET);
    assert_eq!(budget(now - 5_000, now), MIN_BUDGET);
}

#[tokio::test]
async fn staged_files_are_forgotten_once_committed() {
    let (_dir, embedded, ingestor, handler) = setup().await;
    ingestor.handle_at(&event(0, &[("a", 1_000), ("b", 2_000)]), NOW_MS).await.unwrap();
    assert_eq!(embedded.state.staged_files("ns.clicks").await.unwrap().len(), 1);
    handler.run(NOW_MS, Duration::from_secs(60)).await.unwrap();
    assert!(embedded.state.staged_files("ns.clicks").await.unwrap().is_empty());
}
