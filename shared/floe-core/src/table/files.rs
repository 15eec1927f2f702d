//! The files a table's current snapshot references, read from its manifests (what a scan would plan, without
//! reading any data): what is live, for tests and for maintenance.

use std::collections::HashSet;

use futures::{StreamExt, TryStreamExt};
use iceberg::spec::{DataContentType, DataFile, Manifest, ManifestFile, ManifestStatus};
use iceberg::table::Table;

use crate::error::Result;

/// Every live data file of the current snapshot (none for a table without snapshots).
pub async fn live_data_files(table: &Table) -> Result<Vec<DataFile>> {
    let Some(snapshot) = table.metadata().current_snapshot() else {
        return Ok(Vec::new());
    };
    let list = table.manifest_list_reader(snapshot).load().await?;
    live_files_in(table, list.entries()).await
}

/// The live data files that `manifests` (a snapshot's manifest list, already read) list.
pub async fn live_files_in(table: &Table, manifests: &[ManifestFile]) -> Result<Vec<DataFile>> {
    let mut files = Vec::new();
    for manifest in &load(table, manifests).await? {
        for entry in manifest.entries() {
            if entry.status() != ManifestStatus::Deleted && entry.content_type() == DataContentType::Data {
                files.push(entry.data_file().clone());
            }
        }
    }
    Ok(files)
}

/// The paths of every live file of the current snapshot: data files and delete files.
pub async fn live_paths(table: &Table) -> Result<HashSet<String>> {
    let Some(snapshot) = table.metadata().current_snapshot() else {
        return Ok(HashSet::new());
    };
    let list = table.manifest_list_reader(snapshot).load().await?;
    let manifests = load(table, list.entries()).await?;
    Ok(manifests
        .iter()
        .flat_map(|m| m.entries())
        .filter(|e| e.status() != ManifestStatus::Deleted)
        .map(|e| e.file_path().to_string())
        .collect())
}

/// `manifests` read, several in flight (the compactor lists a table's files every run), in manifest-list order.
async fn load(table: &Table, manifests: &[ManifestFile]) -> Result<Vec<Manifest>> {
    // Futures collected first: a lazy map over borrowed entries makes the caller's future not `Send`.
    let loads: Vec<_> = manifests.iter().map(|m| m.load_manifest(table.file_io())).collect();
    Ok(futures::stream::iter(loads).buffered(16).try_collect().await?)
}
