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
    let handler = Handler::new(&[pipeline], &embedded.backends()).unwrap();
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

    let outcome = handler.run(NOW_MS, Duration::from_secs(60)).await;
    assert!(outcome.failures.is_empty(), "{:?}", outcome.failures);
    let raw = outcome.reports.iter().find(|r| r.table == "ns.clicks").unwrap();
    assert_eq!((raw.files, raw.rows), (1, 5));
    assert!(raw.snapshot_id.is_some());
    // A line per table, and the run's own (TablesBehind).
    assert_eq!(outcome.metrics_lines.len(), outcome.reports.len() + 1);
    let run: serde_json::Value = serde_json::from_str(outcome.metrics_lines.last().unwrap()).unwrap();
    assert_eq!(run["TablesBehind"].as_f64(), Some(0.0));
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
    let again = handler.run(NOW_MS + 1_000, Duration::from_secs(60)).await;
    assert!(again.reports.iter().all(|r| r.files == 0 && r.snapshot_id.is_none()), "{:?}", again.reports);
    assert_eq!(windows(&embedded).await, final_two);

    // An event at 41 s moves the watermark past 30 s: [20 s, 30 s) is emitted, once.
    ingestor.handle_at(&event(5, &[("c", 41_000)]), NOW_MS + 2_000).await.unwrap();
    assert!(handler.run(NOW_MS + 2_000, Duration::from_secs(60)).await.failures.is_empty());
    assert!(handler.run(NOW_MS + 3_000, Duration::from_secs(60)).await.failures.is_empty());
    let mut all = final_two.clone();
    all.push(vec![t("20"), "b".to_string(), "1".to_string()]);
    assert_eq!(windows(&embedded).await, all);
}

#[tokio::test]
async fn a_state_store_that_went_away_is_a_retryable_failure() {
    let (_dir, embedded, ingestor, handler) = setup().await;
    ingestor.handle_at(&event(0, &[("a", 1_000)]), NOW_MS).await.unwrap();
    embedded.state.close().await;
    let failure = handler.run(NOW_MS, Duration::from_secs(60)).await.failure().expect("the run fails");
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
    assert!(handler.run(NOW_MS, Duration::from_secs(60)).await.failures.is_empty());
    assert!(embedded.state.staged_files("ns.clicks").await.unwrap().is_empty());
}

#[tokio::test]
async fn one_failing_table_does_not_stop_the_others() {
    let (_dir, embedded, ingestor, handler) = setup().await;
    // One good record (for ns.clicks and the window output) and one that is not JSON (a dead letter).
    let mut bad = event(1, &[("x", 2_000)]);
    for records in bad.records.values_mut() {
        records[0].value = Some(base64::engine::general_purpose::STANDARD.encode("{not json"));
    }
    ingestor.handle_at(&event(0, &[("a", 1_000)]), NOW_MS).await.unwrap();
    ingestor.handle_at(&bad, NOW_MS).await.unwrap();

    // Someone replaced ns.clicks by hand with a table of another, required column: the pipeline file cannot be
    // evolved onto it, and the compactor must not commit into it.
    let schema = iceberg::spec::Schema::builder()
        .with_fields(vec![Arc::new(iceberg::spec::NestedField::required(
            1,
            "other",
            iceberg::spec::Type::Primitive(iceberg::spec::PrimitiveType::Long),
        ))])
        .build()
        .unwrap();
    let namespace = iceberg::NamespaceIdent::new("ns".into());
    let ident = iceberg::TableIdent::new(namespace.clone(), "clicks".into());
    embedded.catalog.drop_table(&ident).await.unwrap();
    let creation = iceberg::TableCreation::builder().name("clicks".into()).schema(schema).build();
    embedded.catalog.create_table(&namespace, creation).await.unwrap();

    let outcome = handler.run(NOW_MS, Duration::from_secs(60)).await;
    let failed: Vec<&str> = outcome.failures.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(failed, ["ns.clicks"]);
    assert!(!outcome.failures[0].1.retryable, "a schema mismatch is permanent");
    let dead = outcome.reports.iter().find(|r| r.table == "ns.clicks_dead_letters").expect("dead letters went on");
    assert_eq!((dead.rows, dead.snapshot_id.is_some()), (1, true));
    // Every table is accounted for: a report line for each that went through, an error line for the other.
    let lines: Vec<serde_json::Value> =
        outcome.metrics_lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    let errors: Vec<&serde_json::Value> = lines.iter().filter(|l| l.get("TableErrors").is_some()).collect();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0]["Table"], "ns.clicks");
    assert_eq!(lines.len(), outcome.reports.len() + 2);
    assert_eq!(lines.last().unwrap()["TablesBehind"].as_f64(), Some(1.0), "the failed table is behind");
    // The failed table's files wait, staged, for the next run.
    assert_eq!(embedded.state.staged_files("ns.clicks").await.unwrap().len(), 1);
}

#[tokio::test]
async fn small_staged_files_are_merged_before_their_first_commit() {
    let (dir, embedded, ingestor, handler) = setup().await;
    // Five invocations, five small staged files of the raw table.
    let users = ["a", "b", "c", "d", "e"];
    for (i, user) in users.iter().enumerate() {
        ingestor.handle_at(&event(i as i64, &[(user, 1_000 + i as i64)]), NOW_MS).await.unwrap();
    }
    let staged = embedded.state.staged_files("ns.clicks").await.unwrap();
    assert_eq!(staged.len(), 5);
    let on_disk = |path: &str| std::path::Path::new(path.strip_prefix("file://").unwrap_or(path)).exists();
    assert!(staged.iter().all(|f| on_disk(&f.path)));

    let outcome = handler.run(NOW_MS, Duration::from_secs(60)).await;
    assert!(outcome.failures.is_empty(), "{:?}", outcome.failures);
    let raw = outcome.reports.iter().find(|r| r.table == "ns.clicks").unwrap();
    assert_eq!((raw.staged, raw.files, raw.rows), (5, 1, 5), "{raw:?}");
    assert_eq!((raw.merged_inputs, raw.merged_outputs, raw.inputs_deleted), (5, 1, 5));
    assert!(raw.bytes_read > 0 && raw.bytes_written > 0 && raw.bytes == raw.bytes_written);

    // Readers only ever see the merged file, with every row.
    let table = embedded.catalog.load_table(&ident("clicks")).await.unwrap();
    let live = floe_core::live_data_files(&table).await.unwrap();
    assert_eq!(live.len(), 1);
    assert!(live[0].file_path().contains(floe_core::MERGED_PREFIX), "{}", live[0].file_path());
    let rows = floe_cli::readback::rows(&table, &["user"]).await.unwrap();
    assert_eq!(rows, users.iter().map(|u| vec![u.to_string()]).collect::<Vec<_>>());
    // The inputs are gone, from the ledger and from storage.
    assert!(embedded.state.staged_files("ns.clicks").await.unwrap().is_empty());
    assert!(staged.iter().all(|f| !on_disk(&f.path)), "merged inputs are deleted");
    drop(dir);
}

#[tokio::test]
async fn with_merging_off_staged_files_are_committed_as_they_are() {
    let dir = tempfile::tempdir().unwrap();
    let embedded = Embedded::open(dir.path()).await.unwrap();
    let planned = Arc::new(floe_core::parse_pipeline(PIPELINE, "windows.toml").unwrap());
    let ingestor = Ingestor::new(planned.clone(), &embedded.backends()).await.unwrap();
    for i in 0..3 {
        ingestor.handle_at(&event(i, &[("a", 1_000 + i)]), NOW_MS).await.unwrap();
    }
    let options = CompactorOptions { merge_budget: Duration::ZERO, ..Default::default() };
    let compactor = Compactor::new(planned, &embedded.backends(), options).unwrap();
    let reports = compactor.run().await.unwrap();
    let raw = reports.iter().find(|r| r.table == "ns.clicks").unwrap();
    assert_eq!((raw.staged, raw.files, raw.merged_inputs, raw.merge_deferred), (3, 3, 0, 3), "{raw:?}");
    let table = embedded.catalog.load_table(&ident("clicks")).await.unwrap();
    assert_eq!(floe_core::live_data_files(&table).await.unwrap().len(), 3);
}

#[tokio::test]
async fn a_table_fed_a_commit_a_minute_keeps_bounded_history_and_exact_rows() {
    let dir = tempfile::tempdir().unwrap();
    let embedded = Embedded::open(dir.path()).await.unwrap();
    // Snapshots expire as soon as they are replaced; three old metadata files are kept.
    let text = PIPELINE.replacen(
        "name = \"clicks\"\n",
        "name = \"clicks\"\nproperties = { \"history.expire.max-snapshot-age-ms\" = \"1\", \"write.metadata.previous-versions-max\" = \"3\" }\n",
        1,
    );
    let planned = Arc::new(floe_core::parse_pipeline(&text, "windows.toml").unwrap());
    let ingestor = Ingestor::new(planned.clone(), &embedded.backends()).await.unwrap();
    let options = CompactorOptions { expire_batch: 5, ..Default::default() };
    let compactor = Compactor::new(planned, &embedded.backends(), options).unwrap();
    let mut users = Vec::new();
    let mut expired = 0;
    let mut rewrites = 0;
    for i in 0..40 {
        let user = format!("u{i:02}");
        ingestor.handle_at(&event(i, &[(&user, 1_000 + i)]), NOW_MS).await.unwrap();
        users.push(vec![user]);
        let reports = compactor.run().await.unwrap();
        let report = reports.iter().find(|r| r.table == "ns.clicks").unwrap();
        expired += report.snapshots_expired;
        rewrites += usize::from(report.manifests_before > 0);
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let table = embedded.catalog.load_table(&ident("clicks")).await.unwrap();
    let snapshots = table.metadata().snapshots().count();
    assert!(snapshots <= 5, "{snapshots} snapshots after 40 commits");
    // One file a commit in one partition: every fifth run rewrites the small files (a replace snapshot).
    assert!(rewrites >= 5, "{rewrites} rewrites");
    assert!(floe_core::live_data_files(&table).await.unwrap().len() < 5, "the small files were rewritten");
    assert_eq!(expired as usize + snapshots, 40 + rewrites, "every snapshot is either kept or expired");
    // On disk: one manifest list per kept snapshot, and the current metadata file plus the three in its log.
    let metadata = dir.path().join("warehouse/ns/clicks/metadata");
    let names: Vec<String> =
        std::fs::read_dir(&metadata).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
    let lists = names.iter().filter(|n| n.starts_with("snap-")).count();
    let jsons = names.iter().filter(|n| n.ends_with(".metadata.json")).count();
    assert_eq!((lists, jsons), (snapshots, 4), "{names:?}");
    // Every row once, and recovery still reads the positions: a redelivered event stages nothing.
    assert_eq!(floe_cli::readback::rows(&table, &["user"]).await.unwrap(), users);
    let again = ingestor.handle_at(&event(0, &[("u00", 1_000)]), NOW_MS).await.unwrap();
    assert_eq!((again.duplicates, again.rows), (1, 0));
    let positions = floe_core::committed_positions(&table, "windows").unwrap();
    assert_eq!(positions.values().copied().collect::<Vec<_>>(), [40]);
}

#[test]
fn the_daily_event_asks_for_orphan_removal_and_a_tick_does_not() {
    let tick = serde_json::json!({"version": "0", "detail-type": "Scheduled Event", "source": "aws.events"});
    assert_eq!(Task::of(&tick), Task { remove_orphans: false });
    assert_eq!(Task::of(&serde_json::json!({"remove_orphans": true})), Task { remove_orphans: true });
    assert_eq!(Task::of(&serde_json::Value::Null), Task::default());
}

#[tokio::test]
async fn the_daily_run_commits_then_deletes_orphans_and_meters_them() {
    let (_dir, embedded, ingestor, handler) = setup().await;
    ingestor.handle_at(&event(0, &[("a", 1_000), ("b", 2_000)]), NOW_MS).await.unwrap();
    let table_dir = embedded.home.join("warehouse/ns/clicks");
    std::fs::create_dir_all(table_dir.join("data")).unwrap();
    let orphan = table_dir.join("data/never-staged.parquet");
    std::fs::write(&orphan, b"left by a crashed ingest").unwrap();

    // Four days on, the orphan is older than the default window; the staged file is committed first.
    let later = floe_backends::now_ms() + 4 * 86_400_000;
    let daily = Task { remove_orphans: true };
    let outcome = handler.run_task(daily, later, Duration::from_secs(60)).await;
    assert!(outcome.failures.is_empty(), "{:?}", outcome.failures);
    assert!(!orphan.exists());
    let raw = outcome.orphans.iter().find(|o| o.table == "ns.clicks").unwrap();
    assert_eq!((raw.deleted, raw.orphans), (1, 1), "{raw:?}");
    let line = outcome
        .metrics_lines
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|l| l["Table"] == "ns.clicks" && l.get("OrphanFilesDeleted").is_some())
        .expect("an orphan metrics line");
    assert_eq!(line["OrphanFilesDeleted"].as_f64(), Some(1.0));
    let table = embedded.catalog.load_table(&ident("clicks")).await.unwrap();
    assert_eq!(floe_cli::readback::count_rows(&table).await.unwrap(), 2, "what was staged is committed and kept");

    // A plain tick removes nothing and reports no orphans.
    std::fs::write(&orphan, b"again").unwrap();
    let tick = handler.run(later, Duration::from_secs(60)).await;
    assert!(tick.orphans.is_empty() && orphan.exists());
}
