//! A replace snapshot built on a real table (iceberg's memory catalog over a temp dir, Parquet files written by
//! the table writer), read back through iceberg's own scan: same rows, fewer files and manifests, summaries.

use std::collections::HashMap;

use arrow_array::{Array, Int64Array, RecordBatch};
use futures::TryStreamExt;
use iceberg::Catalog;
use iceberg::io::FileIO;
use iceberg::spec::ManifestStatus;

use super::*;
use crate::catalog::table_with;
use crate::commit::fixtures::{batch, empty_table};
use crate::commit::merge::merge;
use crate::commit::pinned::fast_append;
use crate::table::files::live_data_files;
use crate::table::writer::TableWriter;

async fn ids(table: &Table) -> Vec<i64> {
    let batches: Vec<RecordBatch> =
        table.scan().select(["id"]).build().unwrap().to_arrow().await.unwrap().try_collect().await.unwrap();
    let mut out: Vec<i64> = batches
        .iter()
        .flat_map(|b| {
            let a = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
            (0..a.len()).map(|i| a.value(i)).collect::<Vec<_>>()
        })
        .collect();
    out.sort_unstable();
    out
}

/// A table of six one-file appends: three files on day 1, three on day 2.
async fn six_appends(dir: &std::path::Path) -> (impl Catalog, Table, TableWriter, FileIO) {
    let (catalog, mut table, writer) = empty_table(dir, &[]).await;
    let (layout, file_io) = (writer.layout().clone(), table.file_io().clone());
    for n in 0..6i64 {
        let files = writer.write(batch(&layout, n * 10..n * 10 + 10, 1 + n % 2), &format!("f{n}")).await.unwrap();
        let summary = HashMap::from([("floe.positions.r".to_string(), format!("{{\"t:0\":{}}}", n + 1))]);
        table = fast_append(&catalog, &table, files, summary).await.unwrap().unwrap();
    }
    (catalog, table, writer, file_io)
}

#[tokio::test]
async fn a_replace_keeps_the_rows_and_merges_files_and_manifests() {
    let dir = tempfile::tempdir().unwrap();
    let (_catalog, table, writer, file_io) = six_appends(dir.path()).await;
    let before = ids(&table).await;
    assert_eq!(before, (0..60).collect::<Vec<_>>());
    let live = live_data_files(&table).await.unwrap();
    assert_eq!(live.len(), 6);
    let day1: Vec<&DataFile> = live.iter().filter(|f| f.partition() == live[0].partition()).collect();
    assert_eq!(day1.len(), 3);
    let merged = merge(&writer, &file_io, &day1, 9).await.unwrap();

    let plan = ReplacePlan {
        removed: day1.iter().map(|f| f.file_path().to_string()).collect(),
        added: merged.files.clone(),
        merge_manifests: Some(ManifestPolicy { enabled: true, min_count: 2, target_size: 8 << 20 }),
        properties: HashMap::from([("floe.positions.r".to_string(), "{\"t:0\":6}".to_string())]),
    };
    let replacement = build(&table, &plan).await.unwrap();
    assert_eq!((replacement.manifests_before, replacement.manifests_after), (6, 2));
    let id = replacement.snapshot_id;
    assert_eq!(build(&table, &plan).await.unwrap().snapshot_id, id, "the same plan, the same snapshot");
    let new = table_with(&table, replacement.metadata, None).unwrap();

    let snapshot = new.metadata().current_snapshot().unwrap();
    assert_eq!(snapshot.snapshot_id(), id);
    assert_eq!(snapshot.parent_snapshot_id(), table.metadata().current_snapshot_id());
    let summary = &snapshot.summary();
    assert_eq!(summary.operation, Operation::Replace);
    let props = &summary.additional_properties;
    assert_eq!(props["floe.positions.r"], "{\"t:0\":6}");
    assert_eq!(props["total-data-files"], "4");
    assert_eq!(props["total-records"], "60");
    assert_eq!(props["deleted-data-files"], "3");
    assert_eq!(props["added-data-files"], "1");

    assert_eq!(ids(&new).await, before, "every row, once");
    let after: Vec<String> = live_data_files(&new).await.unwrap().iter().map(|f| f.file_path().to_string()).collect();
    assert_eq!(after.len(), 4);
    assert!(after.contains(&merged.files[0].file_path().to_string()));
    assert!(day1.iter().all(|f| !after.contains(&f.file_path().to_string())));
    // Time travel to the parent still sees the six files.
    let parent = table.metadata().current_snapshot_id().unwrap();
    let old: Vec<RecordBatch> =
        new.scan().snapshot_id(parent).build().unwrap().to_arrow().await.unwrap().try_collect().await.unwrap();
    assert_eq!(old.iter().map(|b| b.num_rows()).sum::<usize>(), 60);

    // The rewritten manifest keeps the kept files' origin and records the removed ones as deleted.
    let list = new.manifest_list_reader(snapshot).load().await.unwrap();
    let mut statuses = HashMap::new();
    for m in list.entries() {
        for e in m.load_manifest(new.file_io()).await.unwrap().entries() {
            *statuses.entry(format!("{:?}", e.status())).or_insert(0) += 1;
            if e.status() == ManifestStatus::Existing {
                assert_ne!(e.snapshot_id(), Some(id), "an existing file keeps the snapshot that added it");
            }
        }
    }
    assert_eq!(statuses["Existing"], 3);
    assert_eq!(statuses["Deleted"], 3);
    assert_eq!(statuses["Added"], 1);
}

#[tokio::test]
async fn manifests_merge_alone_and_only_past_the_count() {
    let dir = tempfile::tempdir().unwrap();
    let (_catalog, table, _, _) = six_appends(dir.path()).await;
    let policy = ManifestPolicy { enabled: true, min_count: 7, target_size: 8 << 20 };
    let manifests = table.manifest_list_reader(table.metadata().current_snapshot().unwrap()).load().await.unwrap();
    assert!(!policy.due(manifests.entries()), "six manifests, seven needed");
    let policy = ManifestPolicy { min_count: 6, ..policy };
    assert!(policy.due(manifests.entries()));
    let plan = ReplacePlan { merge_manifests: Some(policy), ..Default::default() };
    let replacement = build(&table, &plan).await.unwrap();
    assert_eq!((replacement.manifests_before, replacement.manifests_after), (6, 1));
    let new = table_with(&table, replacement.metadata, None).unwrap();
    assert_eq!(ids(&new).await, (0..60).collect::<Vec<_>>());
    let props = &new.metadata().current_snapshot().unwrap().summary().additional_properties;
    assert_eq!(props["total-data-files"], "6");
}

#[tokio::test]
async fn a_file_that_is_not_live_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_catalog, table, _, _) = six_appends(dir.path()).await;
    let plan = ReplacePlan { removed: ["file:///nowhere.parquet".to_string()].into(), ..Default::default() };
    let err = build(&table, &plan).await.unwrap_err();
    assert!(matches!(err, Error::Invariant(_)), "{err}");
    assert!(err.to_string().contains("nowhere"), "{err}");
}

#[test]
fn the_manifest_policy_comes_from_the_standard_properties() {
    let p = ManifestPolicy::of("t", &HashMap::new()).unwrap();
    assert_eq!(p, ManifestPolicy { enabled: true, min_count: 100, target_size: 8 << 20 });
    let props = HashMap::from([
        (MANIFEST_MERGE_ENABLED.to_string(), "false".to_string()),
        (MANIFEST_MIN_MERGE_COUNT.to_string(), "10".to_string()),
    ]);
    let p = ManifestPolicy::of("t", &props).unwrap();
    assert!(!p.enabled && p.min_count == 10);
    let bad = HashMap::from([(MANIFEST_TARGET_SIZE.to_string(), "big".to_string())]);
    assert!(ManifestPolicy::of("t", &bad).unwrap_err().to_string().contains(MANIFEST_TARGET_SIZE));
}
