//! What every committer of the compactor shares: the per-table report of a run, and cleaning up the files of
//! commits that did not land.

use iceberg::io::FileIO;
use iceberg::{Catalog, TableIdent};
use serde::Serialize;
use tracing::warn;

use crate::catalog::delete_files;
use crate::error::{Error, Result};
use crate::table::files::live_paths;

/// What a run did to one table.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct TableReport {
    pub table: String,
    /// Files committed in this run's snapshot and the rows/bytes they hold.
    pub files: u64,
    pub rows: u64,
    pub bytes: u64,
    /// Staged files those committed files hold (more than `files` when small ones were merged), and their bytes.
    pub staged: u64,
    pub staged_bytes: u64,
    /// Small staged files merged before the commit, and the files they became.
    pub merged_inputs: u64,
    pub merged_outputs: u64,
    /// Bytes the merges read and wrote, and the time they took.
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub merge_ms: u64,
    /// Small files committed unmerged because the run's merge budget was spent (a rewrite merges them later).
    pub merge_deferred: u64,
    /// Merged inputs deleted after the commit.
    pub inputs_deleted: u64,
    /// Committed small files rewritten into target-size ones (a `replace` snapshot), and the files they became.
    pub rewritten_inputs: u64,
    pub rewritten_outputs: u64,
    /// Data manifests of the current snapshot before and after this run's maintenance.
    pub manifests_before: u64,
    pub manifests_after: u64,
    /// Snapshots expired by this run's maintenance, the files it deleted (manifest lists, manifests, data files
    /// no kept snapshot references), and its time.
    pub snapshots_expired: u64,
    pub files_deleted: u64,
    pub maintain_ms: u64,
    /// Snapshot committed by this run, if any.
    pub snapshot_id: Option<i64>,
    /// Staged files found already committed by an earlier run that died before marking them.
    pub recovered: u64,
    /// Files left staged for the next run (over `max_files_per_commit`).
    pub remaining: u64,
    /// Commit attempts lost to concurrent committers.
    pub conflicts: u32,
    /// Time of the successful metadata commit.
    pub commit_ms: u64,
    /// What committing change sets found (change streams only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change_stats: Option<super::changes::ChangeStats>,
}

impl TableReport {
    /// An empty report of `table`.
    pub fn named(table: &str) -> TableReport {
        TableReport { table: table.to_string(), ..Default::default() }
    }

    /// Reset what merging counts, before an attempt that merges (or reuses) again.
    pub(crate) fn clear_merge_counts(&mut self) {
        self.merged_inputs = 0;
        self.merged_outputs = 0;
        self.bytes_read = 0;
        self.bytes_written = 0;
        self.merge_deferred = 0;
    }
}

/// Those of `paths` that the table's current snapshot (loaded fresh) does not reference: what a committer may
/// delete of the files it wrote for a commit that seemed to fail. A lost race can be the committer's own
/// commit, applied and answered with a conflict after a retry of the same request.
pub(crate) async fn unreferenced(catalog: &dyn Catalog, ident: &TableIdent, paths: Vec<String>) -> Result<Vec<String>> {
    let table = catalog.load_table(ident).await?;
    let live = live_paths(&table).await?;
    Ok(paths.into_iter().filter(|p| !live.contains(p)).collect())
}

/// A test's simulated crash: it must end the run, not be handled like a failure.
pub(crate) fn simulated_crash(e: &Error) -> bool {
    #[cfg(feature = "failpoints")]
    if matches!(e, Error::Failpoint(_)) {
        return true;
    }
    let _ = e;
    false
}

/// Delete the files a committer wrote for commits that did not land (`what` names them in the logs): nothing if
/// a commit's outcome is unknown (a timeout, a crash mid-call: as Iceberg, leave them for orphan removal), else
/// those the table does not reference.
pub(crate) async fn delete_uncommitted(
    catalog: &dyn Catalog,
    file_io: &FileIO,
    ident: &TableIdent,
    paths: Vec<String>,
    outcome_unknown: bool,
    what: &str,
) {
    let table = ident.to_string();
    if paths.is_empty() {
        return;
    }
    if outcome_unknown {
        warn!(table, files = paths.len(), "a commit's outcome is unknown; each {what} is left for orphan removal");
        return;
    }
    match unreferenced(catalog, ident, paths).await {
        Ok(paths) => {
            delete_files(file_io, &table, &paths, what).await;
        }
        Err(e) => warn!(table, error = %e, "could not check which files are committed; each {what} is left"),
    }
}
