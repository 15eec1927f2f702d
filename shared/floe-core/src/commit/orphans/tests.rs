//! What counts as referenced, on a real table (iceberg's memory catalog over a temp dir, Parquet files written by
//! the table writer), and the safety window's property. The whole removal, with the ledger and the listing, is
//! tested on the embedded backends in `floe-cli/tests/orphans.rs`.

use std::collections::HashMap;

use iceberg::spec::{DataFile, TableMetadataBuilder};

use super::*;
use crate::catalog::table_with;
use crate::commit::fixtures::{batch, empty_table};
use crate::commit::merge::merge;
use crate::commit::pinned::fast_append;
use crate::commit::replace::{ReplacePlan, build};
use crate::table::files::live_data_files;
use crate::table::writer::TableWriter;

/// Every file under `dir`, as `file://` locations.
fn files_under(dir: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![std::path::PathBuf::from(dir.strip_prefix("file://").unwrap())];
    while let Some(next) = stack.pop() {
        for entry in std::fs::read_dir(&next).unwrap().flatten() {
            if entry.path().is_dir() {
                stack.push(entry.path());
            } else {
                out.push(format!("file://{}", entry.path().display()));
            }
        }
    }
    out.sort();
    out
}

async fn three_appends(dir: &std::path::Path, properties: &[(&str, &str)]) -> Table {
    three_appends_with_writer(dir, properties).await.0
}

async fn three_appends_with_writer(dir: &std::path::Path, properties: &[(&str, &str)]) -> (Table, TableWriter) {
    let (catalog, mut table, writer) = empty_table(dir, properties).await;
    let layout = writer.layout().clone();
    for n in 0..3i64 {
        let files = writer.write(batch(&layout, n * 10..n * 10 + 10, 1 + n % 2), &format!("f{n}")).await.unwrap();
        table = fast_append(&catalog, &table, files, HashMap::new()).await.unwrap().unwrap();
    }
    (table, writer)
}

#[test]
fn spellings_of_one_location_compare_equal() {
    assert_eq!(normalised("s3://b/wh/ns/t/data/x.parquet"), "b/wh/ns/t/data/x.parquet");
    assert_eq!(normalised("s3a://b/wh//ns/t/data/x.parquet"), "b/wh/ns/t/data/x.parquet");
    assert_eq!(normalised("file:///tmp/wh/t/x"), "/tmp/wh/t/x");
    assert_eq!(normalised("/tmp/wh/t/x"), "/tmp/wh/t/x");
    assert_ne!(normalised("s3://b/wh/ns/t/x"), normalised("s3://c/wh/ns/t/x"));
}

#[tokio::test]
async fn every_file_a_table_wrote_is_referenced_and_a_stray_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let table = three_appends(dir.path(), &[]).await;
    let refs = referenced(&table).await.unwrap();
    let on_disk = files_under(table.metadata().location());
    // Data files, manifests, manifest lists, the current metadata and the ones in its log: nothing else.
    assert_eq!(on_disk.len(), 3 + 3 + 3 + 4, "{on_disk:#?}");
    for path in &on_disk {
        assert!(refs.contains(&normalised(path)), "{path} is not referenced");
    }
    assert_eq!(refs.len(), on_disk.len(), "no reference to a file that does not exist");

    let stray = format!("{}/data/day=1/stray.parquet", table.metadata().location());
    assert!(!refs.contains(&normalised(&stray)));
}

#[tokio::test]
async fn a_rewrites_inputs_stop_being_referenced_once_the_snapshots_before_it_expire() {
    let dir = tempfile::tempdir().unwrap();
    let (table, writer) = three_appends_with_writer(dir.path(), &[]).await;
    let live = live_data_files(&table).await.unwrap();
    let day1: Vec<&DataFile> = live.iter().filter(|f| f.partition() == live[0].partition()).collect();
    assert_eq!(day1.len(), 2);
    let merged = merge(&writer, table.file_io(), &day1, 7).await.unwrap();
    let plan = ReplacePlan {
        removed: day1.iter().map(|f| f.file_path().to_string()).collect(),
        added: merged.files.clone(),
        merge_manifests: None,
        properties: HashMap::new(),
    };
    let replaced = table_with(&table, build(&table, &plan).await.unwrap().metadata, None).unwrap();
    let inputs: Vec<String> = day1.iter().map(|f| normalised(f.file_path())).collect();
    let output = normalised(merged.files[0].file_path());
    // Time travel to before the rewrite still reads the inputs.
    let refs = referenced(&replaced).await.unwrap();
    assert!(inputs.iter().all(|p| refs.contains(p)) && refs.contains(&output));

    // Once only the replace snapshot is left, its manifests list the inputs as deleted: tombstones, not references.
    let older: Vec<i64> = replaced
        .metadata()
        .snapshots()
        .map(|s| s.snapshot_id())
        .filter(|id| Some(*id) != replaced.metadata().current_snapshot_id())
        .collect();
    let builder = TableMetadataBuilder::new_from_metadata(replaced.metadata().clone(), None);
    let expired = table_with(&replaced, builder.remove_snapshots(&older).build().unwrap().metadata, None).unwrap();
    let refs = referenced(&expired).await.unwrap();
    assert!(inputs.iter().all(|p| !refs.contains(p)), "a rewritten input is still referenced");
    assert!(refs.contains(&output));
    for kept in live.iter().filter(|f| f.partition() != live[0].partition()) {
        assert!(refs.contains(&normalised(kept.file_path())), "a file the rewrite kept is not referenced");
    }
}

#[tokio::test]
async fn the_safety_window_is_a_table_property_with_a_floor() {
    let dir = tempfile::tempdir().unwrap();
    let default = three_appends(&dir.path().join("a"), &[]).await;
    assert_eq!(older_than_ms(&default).unwrap(), DEFAULT_OLDER_THAN_MS);
    let six_hours = three_appends(&dir.path().join("b"), &[(OLDER_THAN_MS, "21600000")]).await;
    assert_eq!(older_than_ms(&six_hours).unwrap(), 21_600_000);
    let short = three_appends(&dir.path().join("c"), &[(OLDER_THAN_MS, "60000")]).await;
    let error = older_than_ms(&short).unwrap_err().to_string();
    assert!(error.contains(OLDER_THAN_MS) && error.contains("60000"), "{error}");
}
