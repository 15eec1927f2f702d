//! Orphan removal on the embedded default. Every file under the warehouse is aged past the safety window, so only
//! references protect them: the files a crash leaves (data never staged, a metadata file of a swap that never
//! happened, merged files of a lost answer) are deleted; committed, staged, young and out-of-table files stay;
//! and the tables then hold exactly the rows of a control run that never had orphans.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, SystemTime};

use common::{files_under, pipeline, target};
use floe_cli::{GeneratorOptions, generate, readback};
use floe_core::{Compactor, CompactorOptions, Ingestor, MskEvent, Orphans, Pipeline, StateStore};
use floe_embedded::Embedded;

const COLUMNS: [&str; 5] = ["event_id", "event_type", "event_time", "user_id", "country"];
/// The pipeline's window: two hours (`floe.orphans.older-than-ms`).
const WINDOW_MS: u64 = 2 * 3_600_000;

fn path(location: &str) -> &Path {
    Path::new(location.strip_prefix("file://").unwrap_or(location))
}

/// Set a file's modification time `ago` into the past.
fn age(location: &str, ago: Duration) {
    let file = std::fs::File::options().write(true).open(path(location)).unwrap();
    file.set_modified(SystemTime::now() - ago).unwrap();
}

fn write(location: &str, bytes: &[u8]) {
    std::fs::create_dir_all(path(location).parent().unwrap()).unwrap();
    std::fs::write(path(location), bytes).unwrap();
}

/// Ingest every event, committing after each of the first `committed` ones (the rest stay staged).
async fn load(p: &std::sync::Arc<Pipeline>, b: &Embedded, events: &[MskEvent], committed: usize) {
    let ingestor = Ingestor::new(p.clone(), &b.backends()).await.unwrap();
    let compactor = Compactor::new(p.clone(), &b.backends(), CompactorOptions::default()).unwrap();
    for (i, event) in events.iter().enumerate() {
        ingestor.handle(event).await.unwrap();
        if i < committed {
            compactor.run().await.unwrap();
        }
    }
}

async fn orphans(c: &Compactor, dry_run: bool) -> Vec<Orphans> {
    let run = c.remove_orphans(chrono::Utc::now().timestamp_millis(), None, dry_run, Duration::from_secs(60)).await;
    assert!(run.failures.is_empty(), "{:?}", run.failures);
    run.tables
}

fn of<'a>(reports: &'a [Orphans], table: &str) -> &'a Orphans {
    reports.iter().find(|r| r.table == table).unwrap_or_else(|| panic!("no report for {table}: {reports:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_unreferenced_unstaged_old_files_are_deleted() {
    let config = tempfile::tempdir().unwrap();
    let p = pipeline(config.path(), &format!(r#""floe.orphans.older-than-ms" = "{WINDOW_MS}""#));
    let generated = generate(&GeneratorOptions { records: 900, batch_size: 30, bad_every: 50, ..Default::default() });
    assert!(generated.events.len() >= 10 && !generated.bad.is_empty());
    let committed = generated.events.len() / 2;

    let dir = tempfile::tempdir().unwrap();
    let b = Embedded::open(dir.path()).await.unwrap();
    load(&p, &b, &generated.events, committed).await;
    let table = target(&p, &b).await;
    let location = table.metadata().location().to_string();
    let staged: BTreeSet<String> =
        b.state.staged_files("analytics.events").await.unwrap().into_iter().map(|f| f.path).collect();
    assert!(!staged.is_empty(), "the second half is staged, not committed");

    // What crashes leave behind, next to the table's own files.
    let a_data_file = files_under(&location, ".parquet").into_iter().next().unwrap();
    let data = std::fs::read(path(&a_data_file)).unwrap();
    let metadata = std::fs::read(path(table.metadata_location().unwrap())).unwrap();
    let planted = BTreeSet::from([
        format!("{location}/data/never-staged-00000.parquet"),
        format!("{location}/data/event_date=2026-01-01/lost-answer-merged-00000.parquet"),
        format!("{location}/metadata/99999-crashed-before-swap.metadata.json"),
    ]);
    for orphan in &planted {
        write(orphan, if orphan.ends_with(".json") { &metadata } else { &data });
    }
    let warehouse = b.warehouse.clone();
    let outside = format!("{warehouse}/analytics/events_old/kept.parquet");
    write(&outside, &data);
    // Every file is older than the window; then one orphan is written "now" (an ingest on its way to staging).
    for file in files_under(&warehouse, "") {
        age(&file, Duration::from_millis(WINDOW_MS + 3_600_000));
    }
    let young = format!("{location}/data/being-written-00000.parquet");
    write(&young, &data);
    let before = files_under(&warehouse, "");

    let compactor = Compactor::new(p.clone(), &b.backends(), CompactorOptions::default()).unwrap();
    let dry = orphans(&compactor, true).await;
    let report = of(&dry, "analytics.events");
    assert_eq!(report.paths.iter().cloned().collect::<BTreeSet<_>>(), planted, "{report:?}");
    assert_eq!((report.orphans, report.deleted, report.too_recent), (3, 0, 1), "{report:?}");
    assert_eq!(report.older_than_ms, WINDOW_MS as i64);
    assert_eq!(report.staged, staged.len() as u64, "{report:?}");
    assert_eq!(report.listed, report.referenced + report.staged + report.too_recent + report.orphans);
    assert_eq!(report.listed as usize, files_under(&location, "").len());
    assert_eq!(files_under(&warehouse, ""), before, "a dry run deletes nothing");
    let dead = of(&dry, "analytics.events_dead_letters");
    assert!(dead.listed > 0 && dead.orphans == 0, "{dead:?}");

    let done = orphans(&compactor, false).await;
    assert_eq!(of(&done, "analytics.events").deleted, 3);
    let after = files_under(&warehouse, "");
    assert_eq!(before.difference(&after).cloned().collect::<BTreeSet<_>>(), planted, "exactly the orphans went");
    assert!(after.contains(&young) && after.contains(&outside));
    assert!(staged.is_subset(&after), "staged files stay");

    let again = orphans(&compactor, false).await;
    assert!(again.iter().all(|r| r.orphans == 0), "{again:?}");

    // The staged half commits, and the tables hold what a run that never had orphans holds.
    compactor.run().await.unwrap();
    let control_dir = tempfile::tempdir().unwrap();
    let control = Embedded::open(control_dir.path()).await.unwrap();
    load(&p, &control, &generated.events, generated.events.len()).await;
    let rows = readback::rows(&target(&p, &b).await, &COLUMNS).await.unwrap();
    assert_eq!(rows.len(), generated.good());
    assert_eq!(rows, readback::rows(&target(&p, &control).await, &COLUMNS).await.unwrap());
}
