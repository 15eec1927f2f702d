//! Expiry on a real table (iceberg's memory catalog over a temp dir, files on disk): what is due, what recovery
//! keeps, what the commit removes and which manifest lists are deleted.

use std::collections::HashMap;
use std::sync::Arc;

use iceberg::io::LocalFsStorageFactory;
use iceberg::memory::{MEMORY_CATALOG_WAREHOUSE, MemoryCatalogBuilder};
use iceberg::spec::{NestedField, PrimitiveType, Schema, Type};
use iceberg::{CatalogBuilder, NamespaceIdent, TableCreation};

use super::*;
use crate::commit::pinned::fast_append;

async fn table(dir: &std::path::Path, properties: HashMap<String, String>) -> (impl Catalog, Table) {
    let warehouse = format!("file://{}", dir.display());
    let catalog = MemoryCatalogBuilder::default()
        .with_storage_factory(Arc::new(LocalFsStorageFactory))
        .load("t", HashMap::from([(MEMORY_CATALOG_WAREHOUSE.to_string(), warehouse)]))
        .await
        .unwrap();
    let ns = NamespaceIdent::new("ns".into());
    catalog.create_namespace(&ns, HashMap::new()).await.unwrap();
    let schema = Schema::builder()
        .with_fields(vec![Arc::new(NestedField::optional(1, "x", Type::Primitive(PrimitiveType::Long)))])
        .build()
        .unwrap();
    let creation = TableCreation::builder().name("t".into()).schema(schema).properties(properties).build();
    let table = catalog.create_table(&ns, creation).await.unwrap();
    (catalog, table)
}

/// `n` empty appends, each carrying `summary` (an append of no files with summary properties still makes a
/// snapshot).
async fn commits(catalog: &impl Catalog, mut table: Table, n: usize, summary: &[(&str, &str)]) -> Table {
    for i in 0..n {
        let mut properties: HashMap<String, String> =
            summary.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        properties.insert("test.commit".into(), i.to_string());
        // Distinct millisecond timestamps, as commits a schedule tick apart have (expiry compares them).
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
        table = fast_append(catalog, &table, vec![], properties).await.unwrap().unwrap();
    }
    table
}

fn short_lived() -> HashMap<String, String> {
    HashMap::from([(MAX_SNAPSHOT_AGE_MS.to_string(), "1".to_string())])
}

fn on_disk(path: &str) -> bool {
    std::path::Path::new(path.strip_prefix("file://").unwrap_or(path)).exists()
}

#[test]
fn the_policy_comes_from_the_standard_properties_with_floe_defaults() {
    let none = ExpiryPolicy::of("t", &HashMap::new()).unwrap();
    assert_eq!(none, ExpiryPolicy { max_age_ms: DEFAULT_MAX_SNAPSHOT_AGE_MS, min_keep: DEFAULT_MIN_SNAPSHOTS_TO_KEEP });
    let set = HashMap::from([
        (MAX_SNAPSHOT_AGE_MS.to_string(), "60000".to_string()),
        (MIN_SNAPSHOTS_TO_KEEP.to_string(), "3".to_string()),
    ]);
    assert_eq!(ExpiryPolicy::of("t", &set).unwrap(), ExpiryPolicy { max_age_ms: 60_000, min_keep: 3 });
    let bad = HashMap::from([(MIN_SNAPSHOTS_TO_KEEP.to_string(), "0".to_string())]);
    assert!(ExpiryPolicy::of("t", &bad).unwrap_err().to_string().contains("min-snapshots-to-keep"));
}

#[tokio::test]
async fn old_snapshots_expire_and_their_manifest_lists_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let (catalog, table) = table(dir.path(), short_lived()).await;
    let table = commits(&catalog, table, 6, &[("floe.positions.p", r#"{"t:0":1}"#)]).await;
    let lists: Vec<String> = table.metadata().snapshots().map(|s| s.manifest_list().to_string()).collect();
    assert_eq!(lists.len(), 6);
    assert!(lists.iter().all(|l| on_disk(l)));
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let now = chrono::Utc::now().timestamp_millis();

    // Under the batch size nothing happens.
    assert_eq!(due(table.metadata(), &ExpiryPolicy::of("t", table.metadata().properties()).unwrap(), now).len(), 5);
    let (table, nothing) = expire(&catalog, table, now, 6).await.unwrap();
    assert_eq!((nothing.snapshots, table.metadata().snapshots().count()), (0, 6));

    let current = table.metadata().current_snapshot_id().unwrap();
    let (table, expired) = expire(&catalog, table, now, 1).await.unwrap();
    assert_eq!((expired.snapshots, expired.files_deleted), (5, 5));
    let kept: Vec<i64> = table.metadata().snapshots().map(|s| s.snapshot_id()).collect();
    assert_eq!(kept, [current], "the current snapshot, which carries the positions, is kept");
    let reloaded = catalog.load_table(table.identifier()).await.unwrap();
    assert_eq!(reloaded.metadata().snapshots().count(), 1, "the expiry is committed");
    let gone: Vec<&String> = lists.iter().filter(|l| !on_disk(l)).collect();
    assert_eq!(gone.len(), 5);
    assert!(on_disk(reloaded.metadata().current_snapshot().unwrap().manifest_list()));
}

#[tokio::test]
async fn what_recovery_needs_is_kept_even_after_other_writers_commits() {
    let dir = tempfile::tempdir().unwrap();
    let (catalog, table) = table(dir.path(), short_lived()).await;
    let table = commits(&catalog, table, 3, &[("floe.positions.p", r#"{"t:0":1}"#)]).await;
    let floe_newest = table.metadata().current_snapshot_id().unwrap();
    let table = commits(&catalog, table, 2, &[("floe.closed.p", "100")]).await;
    let closed_newest = table.metadata().current_snapshot_id().unwrap();
    // Another writer, carrying nothing of floe's.
    let table = commits(&catalog, table, 3, &[("writer", "spark")]).await;
    assert_eq!(oldest_needed(table.metadata()), Some(floe_newest));
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let now = chrono::Utc::now().timestamp_millis();

    let (table, expired) = expire(&catalog, table, now, 1).await.unwrap();
    assert_eq!(expired.snapshots, 2, "only the two floe snapshots older than the newest with positions");
    let kept: std::collections::HashSet<i64> = table.metadata().snapshots().map(|s| s.snapshot_id()).collect();
    assert!(kept.contains(&floe_newest) && kept.contains(&closed_newest));
    assert_eq!(kept.len(), 6);
    // The positions are still found where recovery looks for them.
    assert!(crate::commit::positions::committed_positions(&table, "p").unwrap().values().all(|v| *v == 1));
    assert_eq!(crate::commit::positions::committed_positions(&table, "p").unwrap().len(), 1);
}

#[tokio::test]
async fn min_snapshots_to_keep_holds_back_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let mut properties = short_lived();
    properties.insert(MIN_SNAPSHOTS_TO_KEEP.to_string(), "4".to_string());
    let (catalog, table) = table(dir.path(), properties).await;
    let table = commits(&catalog, table, 6, &[]).await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let now = chrono::Utc::now().timestamp_millis();
    let (table, expired) = expire(&catalog, table, now, 1).await.unwrap();
    assert_eq!((expired.snapshots, table.metadata().snapshots().count()), (2, 4));
}

#[tokio::test]
async fn young_snapshots_are_not_due() {
    let dir = tempfile::tempdir().unwrap();
    let (catalog, table) = table(dir.path(), HashMap::new()).await;
    let table = commits(&catalog, table, 4, &[]).await;
    let now = chrono::Utc::now().timestamp_millis();
    let (table, expired) = expire(&catalog, table, now, 1).await.unwrap();
    assert_eq!((expired.snapshots, table.metadata().snapshots().count()), (0, 4));
}

#[tokio::test]
async fn commits_delete_the_metadata_files_they_drop_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let properties = HashMap::from([("write.metadata.previous-versions-max".to_string(), "2".to_string())]);
    let (catalog, table) = table(dir.path(), properties).await;
    let table = commits(&catalog, table, 6, &[]).await;
    let metadata_dir = dir.path().join("ns").join("t").join("metadata");
    let files: Vec<_> = std::fs::read_dir(&metadata_dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".metadata.json"))
        .collect();
    // The current file and the two in the log; the four older ones were deleted by the commits that dropped them.
    assert_eq!(files.len(), 3, "{files:?}");
    assert_eq!(table.metadata().metadata_log().len(), 2);
    for log in table.metadata().metadata_log() {
        assert!(on_disk(&log.metadata_file), "{} is in the log and must stay", log.metadata_file);
    }
}
