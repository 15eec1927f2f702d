//! Table maintenance on the embedded default: committed small files are rewritten in a `replace` snapshot that
//! keeps every row and floe's positions, small manifests are merged, time travel to the snapshot before still
//! works, and once it expires its files are deleted, leaving on disk exactly the files the table references.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{pipeline, target};
use floe_cli::{GeneratorOptions, generate, readback};
use floe_core::{Compactor, CompactorOptions, Ingestor, live_data_files, positions_key};
use floe_embedded::Embedded;
use iceberg::spec::Operation;
use iceberg::table::Table;

const COLUMNS: [&str; 5] = ["event_id", "event_type", "event_time", "user_id", "country"];

fn options(merge: bool, expire_batch: usize) -> CompactorOptions {
    let merge_budget = if merge { Duration::from_secs(60) } else { Duration::ZERO };
    CompactorOptions { merge_budget, expire_batch, ..CompactorOptions::default() }
}

async fn rows_at(table: &Table, snapshot: Option<i64>) -> Vec<Vec<String>> {
    readback::rows_at(table, snapshot, &COLUMNS).await.unwrap()
}

async fn live(table: &Table) -> BTreeSet<String> {
    live_data_files(table).await.unwrap().iter().map(|f| f.file_path().to_string()).collect()
}

/// Every Parquet file under the table's data directory.
fn on_disk(table: &Table) -> BTreeSet<String> {
    common::files_under(&format!("{}/data", table.metadata().location()), ".parquet")
}

/// Avro files (manifest lists and manifests) under the table's metadata directory.
fn avro_files(table: &Table) -> usize {
    let dir = format!("{}/metadata", table.metadata().location());
    let entries = std::fs::read_dir(dir.strip_prefix("file://").unwrap()).unwrap().flatten();
    entries.filter(|e| e.path().extension().is_some_and(|x| x == "avro")).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_commits_are_rewritten_kept_exact_and_collected_after_expiry() {
    let config = tempfile::tempdir().unwrap();
    let p = pipeline(
        config.path(),
        r#""commit.manifest.min-count-to-merge" = "4", "history.expire.max-snapshot-age-ms" = "1", "floe.rewrite.min-input-files" = "3""#,
    );
    let dir = tempfile::tempdir().unwrap();
    let b = Embedded::open(dir.path()).await.unwrap();
    let generated = generate(&GeneratorOptions { records: 1_200, batch_size: 25, ..Default::default() });
    assert!(generated.events.len() >= 8, "{} events", generated.events.len());
    let ingestor = Ingestor::new(p.clone(), &b.backends()).await.unwrap();
    // One small commit per delivery, nothing merged or expired: the table a low-volume stream builds up.
    let appender = Compactor::new(p.clone(), &b.backends(), options(false, 0)).unwrap();
    for event in &generated.events {
        ingestor.handle(event).await.unwrap();
        appender.run().await.unwrap();
    }
    let before = target(&p, &b).await;
    let before_id = before.metadata().current_snapshot_id().unwrap();
    let rows = rows_at(&before, None).await;
    assert_eq!(rows.len(), generated.good());
    let files_before = live(&before).await;
    let positions =
        before.metadata().current_snapshot().unwrap().summary().additional_properties[&positions_key(&p.name)].clone();

    // A maintaining run: nothing is staged, so all it does is rewrite (no expiry yet).
    let maintainer = Compactor::new(p.clone(), &b.backends(), options(true, 0)).unwrap();
    let reports = maintainer.run().await.unwrap();
    let report = reports.iter().find(|r| r.table == "analytics.events").unwrap();
    assert!(report.rewritten_inputs >= 3, "{report:?}");
    assert!(report.rewritten_outputs < report.rewritten_inputs, "{report:?}");
    assert!(report.manifests_after < report.manifests_before, "{report:?}");

    let after = target(&p, &b).await;
    let current = after.metadata().current_snapshot().unwrap();
    assert_eq!(current.summary().operation, Operation::Replace);
    assert_eq!(current.parent_snapshot_id(), Some(before_id));
    assert_eq!(current.summary().additional_properties[&positions_key(&p.name)], positions, "positions carried");
    let files_after = live(&after).await;
    assert_eq!(
        files_after.len() as u64,
        files_before.len() as u64 - report.rewritten_inputs + report.rewritten_outputs
    );
    assert_eq!(rows_at(&after, None).await, rows, "the rewrite keeps every row exactly once");
    assert_eq!(rows_at(&after, Some(before_id)).await, rows, "time travel to the snapshot before");
    let list = after.manifest_list_reader(current).load().await.unwrap();
    assert_eq!(list.entries().len() as u64, report.manifests_after);
    // The rewritten inputs are still on disk: the snapshot before lists them.
    assert!(files_before.is_subset(&on_disk(&after)));

    // Exactly once still holds after the replace: new deliveries commit on top, redeliveries add nothing.
    let more = generate(&GeneratorOptions { records: 1_500, batch_size: 25, ..Default::default() });
    for event in &more.events {
        ingestor.handle(event).await.unwrap();
    }
    ingestor.handle(&generated.events[0]).await.unwrap();
    appender.run().await.unwrap();
    let grown = target(&p, &b).await;
    assert_eq!(readback::count_rows(&grown).await.unwrap(), more.good());

    // Expiry: every snapshot but the current one goes, and with them the files only they listed.
    let expirer = Compactor::new(p.clone(), &b.backends(), options(true, 1)).unwrap();
    let reports = expirer.run().await.unwrap();
    let report = reports.iter().find(|r| r.table == "analytics.events").unwrap();
    assert!(report.snapshots_expired > 0 && report.files_deleted > 0, "{report:?}");
    let last = target(&p, &b).await;
    assert_eq!(last.metadata().snapshots().count(), 1);
    assert_eq!(on_disk(&last), live(&last).await, "on disk: exactly the live files");
    assert_eq!(readback::count_rows(&last).await.unwrap(), more.good());
    let list = last.manifest_list_reader(last.metadata().current_snapshot().unwrap()).load().await.unwrap();
    assert_eq!(avro_files(&last), 1 + list.entries().len(), "metadata holds only the current list and manifests");
}
