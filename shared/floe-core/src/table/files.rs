//! The data files a table's current snapshot references, read from its manifests (what a scan would plan, without
//! reading any data): for file counts and sizes, and for maintenance that needs to know what is live.

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

/// Count and total size in bytes of a table's live data files.
pub async fn file_stats(table: &Table) -> Result<FileStats> {
    let files = live_data_files(table).await?;
    Ok(FileStats { files: files.len() as u64, bytes: files.iter().map(DataFile::file_size_in_bytes).sum() })
}

/// How many live data files a table has and how large they are.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct FileStats {
    pub files: u64,
    pub bytes: u64,
}

impl FileStats {
    /// Average file size in bytes (0 without files).
    pub fn average(&self) -> u64 {
        self.bytes.checked_div(self.files).unwrap_or(0)
    }
}
