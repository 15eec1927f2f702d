//! The data files a table's current snapshot references, read from its manifests (what a scan would plan, without
//! reading any data): what is live, for tests and for maintenance.

use iceberg::spec::{DataContentType, DataFile, ManifestStatus};
use iceberg::table::Table;

use crate::error::Result;

/// Every live data file of the current snapshot (none for a table without snapshots).
pub async fn live_data_files(table: &Table) -> Result<Vec<DataFile>> {
    let Some(snapshot) = table.metadata().current_snapshot() else {
        return Ok(Vec::new());
    };
    let list = table.manifest_list_reader(snapshot).load().await?;
    let mut files = Vec::new();
    for manifest in list.entries() {
        for entry in manifest.load_manifest(table.file_io()).await?.entries() {
            if entry.status() != ManifestStatus::Deleted && entry.content_type() == DataContentType::Data {
                files.push(entry.data_file().clone());
            }
        }
    }
    Ok(files)
}
