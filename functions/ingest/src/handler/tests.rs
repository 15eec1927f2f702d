//! The ingest handler on the embedded backend in a temp dir, driven with the MSK event of the Lambda docs.

use std::path::Path;
use std::sync::Arc;

use floe_core::{Compactor, CompactorOptions, Pipeline, StateStore};
use floe_embedded::Embedded;

use super::*;

/// The fixture's topic, every source column, and a value column per JSON field.
const PIPELINE: &str = r#"
name = "fixture"
[source]
topics = ["mytopic"]
[table]
namespace = "ns"
name = "events"
[[table.columns]]
name = "id"
type = "long"
required = true
[[table.columns]]
name = "name"
type = "string"
[[table.columns]]
name = "source_partition"
type = "int"
from = "@partition"
[[table.columns]]
name = "source_offset"
type = "long"
from = "@offset"
[[table.columns]]
name = "kafka_key"
type = "string"
from = "@key"
"#;

/// Processing time of the tests (no windows here, so it only stamps the report).
const NOW_MS: i64 = 1_700_000_000_000;

/// The MSK event example of the Lambda docs as the invocation body: two good records and one whose value is not
/// base64.
fn fixture() -> Vec<u8> {
    let path = Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR"))
        .join("../../shared/floe-core/tests/fixtures/msk_event.json");
    std::fs::read(path).unwrap()
}

/// An event as the invocation body carrying it.
fn body(event: &floe_core::MskEvent) -> Vec<u8> {
    serde_json::to_vec(event).unwrap()
}

fn ident(name: &str) -> iceberg::TableIdent {
    iceberg::TableIdent::from_strs(["ns", name]).unwrap()
}

async fn setup() -> (tempfile::TempDir, Embedded, Arc<Pipeline>, Handler) {
    let dir = tempfile::tempdir().unwrap();
    let embedded = Embedded::open(dir.path()).await.unwrap();
    let pipeline = Arc::new(Pipeline::parse(PIPELINE, "fixture.toml").unwrap());
    let ingestor = floe_core::Ingestor::new(pipeline.clone(), &embedded.backends()).await.unwrap();
    let handler = Handler::new(Router::new(vec![ingestor]).unwrap());
    (dir, embedded, pipeline, handler)
}

#[tokio::test]
async fn an_msk_event_is_staged_then_visible_after_a_compactor_run() {
    let (_dir, embedded, pipeline, handler) = setup().await;
    let outcome = handler.handle(&fixture(), NOW_MS).await.unwrap();
    let r = &outcome.report;
    assert_eq!((r.records, r.rows, r.dead_letters, r.duplicates), (3, 2, 1, 0));

    // Staged, not committed: one file per table per topic-partition with rows, each on disk.
    let staged = embedded.state.staged_files("ns.events").await.unwrap();
    assert_eq!(staged.iter().map(|f| f.record_count).sum::<u64>(), 2);
    let dead = embedded.state.staged_files("ns.events_dead_letters").await.unwrap();
    assert_eq!(dead.iter().map(|f| f.record_count).sum::<u64>(), 1);
    for f in staged.iter().chain(&dead) {
        assert!(Path::new(f.path.trim_start_matches("file://")).is_file(), "{} is not written", f.path);
    }
    assert_eq!(r.files, (staged.len() + dead.len()) as u64);

    // The invocation's EMF line.
    let line: serde_json::Value = serde_json::from_str(&outcome.metrics_lines[0]).unwrap();
    assert_eq!(line["_aws"]["CloudWatchMetrics"][0]["Namespace"], "floe");
    assert_eq!((line["Pipeline"].as_str(), line["Function"].as_str()), (Some("fixture"), Some("ingest")));
    assert_eq!((line["RecordsIn"].as_f64(), line["DeadLetters"].as_f64()), (Some(3.0), Some(1.0)));

    let compactor = Compactor::new(pipeline, &embedded.backends(), CompactorOptions::default()).unwrap();
    compactor.run().await.unwrap();
    let table = embedded.catalog.load_table(&ident("events")).await.unwrap();
    let rows =
        floe_cli::readback::rows(&table, &["source_partition", "source_offset", "id", "name", "kafka_key"]).await;
    assert_eq!(rows.unwrap(), [["0", "15", "1", "a", "k-1"], ["1", "7", "2", "b", "k-2"]]);
    let dead = embedded.catalog.load_table(&ident("events_dead_letters")).await.unwrap();
    let rows = floe_cli::readback::rows(&dead, &["topic", "partition", "offset", "error_kind"]).await.unwrap();
    assert_eq!(rows, [["mytopic", "1", "8", "base64"]]);
    assert!(embedded.state.staged_files("ns.events").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_redelivered_event_stages_nothing() {
    let (_dir, embedded, _pipeline, handler) = setup().await;
    handler.handle(&fixture(), NOW_MS).await.unwrap();
    let before = embedded.state.staged_files("ns.events").await.unwrap();
    let again = handler.handle(&fixture(), NOW_MS).await.unwrap().report;
    assert_eq!((again.records, again.duplicates, again.rows, again.files), (3, 3, 0, 0));
    assert_eq!(embedded.state.staged_files("ns.events").await.unwrap(), before);
}

#[tokio::test]
async fn a_state_store_that_went_away_is_a_retryable_failure() {
    let (_dir, embedded, _pipeline, handler) = setup().await;
    embedded.state.close().await;
    let failure = handler.handle(&fixture(), NOW_MS).await.unwrap_err();
    assert!(failure.retryable, "{failure}");
    assert!(matches!(failure.source, floe_core::Error::State { retryable: true, .. }), "{failure:?}");
    // The driver's own error is kept as the cause.
    let cause = std::error::Error::source(&failure.source).expect("the sqlx error is the source");
    assert!(cause.to_string().contains("closed"), "{cause}");
    // The Lambda entry point returns it as a function error (the mapping redelivers the records), typed by class.
    let diagnostic = handler.invoke(&fixture()).await.unwrap_err();
    assert_eq!(diagnostic.error_type, "floe.Retryable");
    assert!(diagnostic.error_message.contains("state store") && diagnostic.error_message.contains("closed"));
}

#[tokio::test]
async fn an_unusable_event_is_a_permanent_failure() {
    let (_dir, _embedded, _pipeline, handler) = setup().await;
    // A negative offset: no position to fence or dead-letter it by, so the whole event is refused.
    let mut event: floe_core::MskEvent = serde_json::from_slice(&fixture()).unwrap();
    event.records.get_mut("mytopic-0").unwrap()[0].offset = -5;
    let failure = handler.handle(&body(&event), NOW_MS).await.unwrap_err();
    assert!(!failure.retryable, "{failure}");
    assert!(matches!(failure.source, floe_core::Error::Event(_)), "{failure:?}");
    assert_eq!(diagnostic(failure).error_type, "floe.Permanent");
}

/// An event of six partitions of 40 records each, every seventh value not JSON.
fn six_partitions() -> Vec<u8> {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let mut records = std::collections::BTreeMap::new();
    for partition in 0..6i64 {
        let group = (0..40i64)
            .map(|offset| {
                let id = partition * 1_000 + offset;
                let value =
                    if offset % 7 == 3 { "{not json".to_string() } else { format!(r#"{{"id":{id},"name":"n{id}"}}"#) };
                floe_core::MskRecord {
                    topic: Some("mytopic".into()),
                    partition,
                    offset: 100 + offset,
                    timestamp: 1_700_000_000_000 + offset,
                    key: Some(b64(&format!("k{id}"))),
                    value: Some(b64(&value)),
                    ..Default::default()
                }
            })
            .collect();
        records.insert(format!("mytopic-{partition}"), group);
    }
    body(&floe_core::MskEvent { records, ..Default::default() })
}

/// The partitions of an event staged at once on a multi-thread runtime land exactly what one at a time does:
/// the same rows, the same dead letters, one staging step per partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn partitions_staged_concurrently_land_what_sequential_staging_lands() {
    let mut landed = Vec::new();
    for concurrency in [1, 4] {
        let dir = tempfile::tempdir().unwrap();
        let embedded = Embedded::open(dir.path()).await.unwrap();
        let pipeline = Arc::new(Pipeline::parse(PIPELINE, "fixture.toml").unwrap());
        let ingestor = floe_core::Ingestor::new(pipeline.clone(), &embedded.backends()).await.unwrap();
        let handler = Handler::new(Router::new(vec![ingestor]).unwrap().with_concurrency(concurrency));
        let r = handler.handle(&six_partitions(), NOW_MS).await.unwrap().report;
        assert_eq!((r.records, r.rows, r.dead_letters), (240, 204, 36), "concurrency {concurrency}");
        for partition in 0..6 {
            let source = floe_core::SourcePartition { topic: "mytopic".into(), partition };
            let fence = embedded.state.fence("fixture", &source).await.unwrap();
            assert_eq!(fence, Some(140), "partition {partition} at concurrency {concurrency}");
        }
        // A redelivery after a concurrent run is still a no-op.
        let again = handler.handle(&six_partitions(), NOW_MS).await.unwrap().report;
        assert_eq!((again.duplicates, again.files), (240, 0));
        let compactor = Compactor::new(pipeline, &embedded.backends(), CompactorOptions::default()).unwrap();
        compactor.run().await.unwrap();
        let table = embedded.catalog.load_table(&ident("events")).await.unwrap();
        let mut rows =
            floe_cli::readback::rows(&table, &["source_partition", "source_offset", "id", "kafka_key"]).await.unwrap();
        rows.sort();
        let dead = embedded.catalog.load_table(&ident("events_dead_letters")).await.unwrap();
        let mut dead = floe_cli::readback::rows(&dead, &["partition", "offset", "error_kind"]).await.unwrap();
        dead.sort();
        landed.push((rows, dead));
    }
    assert_eq!(landed[0].0.len(), 204);
    assert_eq!(landed[0].1.len(), 36);
    assert_eq!(landed[0], landed[1]);
}
