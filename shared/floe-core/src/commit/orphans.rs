//! Orphan removal: files under a table's location that nothing references — a crashed ingest's files that were
//! never staged, the merged files of a commit whose outcome was unknown, a metadata file written before a swap
//! that never happened, deletes that an interrupted expiry or rewrite did not finish. Expiry and the committers
//! delete what they know they made unreachable; this finds what they could not know about.
//!
//! A listed file is deleted only if all of these hold:
//! - **no metadata references it**: not the current `metadata.json` or one in its log, not a statistics file,
//!   and not a manifest list, a manifest or a live data/delete file of any snapshot the table still has (a
//!   `deleted` manifest entry is a tombstone, not a reference);
//! - **the ledger does not list it**: a staged file is referenced by the state store until its commit, however
//!   long the compactor is stalled. The ledger is read *before* the table, so a file committed (and then
//!   forgotten by the ledger) in between is in the metadata read afterwards;
//! - **it is older than the safety window** (`floe.orphans.older-than-ms`, default 3 days as in Iceberg, at least
//!   1 hour): a file being written now (an ingest between its write and its staging step, a compactor between
//!   its merge and its commit, another engine's job) is referenced later, never earlier than it was written.
//!   A file whose age the store does not report is never deleted.
//!
//! Only the table's own location (`<location>/`, so never a sibling such as `events_dead_letters`) is listed. Cost:
//! one read of every manifest of every kept snapshot (bounded by expiry) and one listing of the location,
//! streamed, so memory holds the referenced paths, not the listing. It runs once a day per table (the template's
//! `OrphanSchedule`) or on demand (`floe maintain --orphans`).

use std::collections::HashSet;
use std::time::Instant;

use futures::{StreamExt, TryStreamExt};
use iceberg::table::Table;
use iceberg::{Catalog, TableIdent};
use serde::Serialize;
use tracing::info;

use crate::backends::ObjectLister;
use crate::error::{Error, Result};
use crate::failpoint;
use crate::state::StateStore;

/// The table property of the safety window.
pub const OLDER_THAN_MS: &str = "floe.orphans.older-than-ms";
/// Iceberg's default for `remove_orphan_files`: 3 days.
pub const DEFAULT_OLDER_THAN_MS: i64 = 3 * 24 * 60 * 60 * 1000;
pub use crate::pipeline::MIN_ORPHAN_AGE_MS as MIN_OLDER_THAN_MS;

/// Manifest reads in flight at once.
const READ_CONCURRENCY: usize = 16;
/// Paths kept in a report (a dry run lists what it would delete; a real run logs each delete).
const REPORTED_PATHS: usize = 1_000;

/// The safety window of a table: its property, else [`DEFAULT_OLDER_THAN_MS`].
pub fn older_than_ms(table: &Table) -> Result<i64> {
    match table.metadata().properties().get(OLDER_THAN_MS) {
        None => Ok(DEFAULT_OLDER_THAN_MS),
        Some(v) => v.parse::<i64>().ok().filter(|ms| *ms >= MIN_OLDER_THAN_MS).ok_or_else(|| Error::TableMismatch {
            table: table.identifier().to_string(),
            message: format!(
                "table property {OLDER_THAN_MS} = `{v}` is not a number of milliseconds ≥ {MIN_OLDER_THAN_MS}"
            ),
        }),
    }
}

/// What orphan removal found and did in one table.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct Orphans {
    pub table: String,
    /// Files under the table's location.
    pub listed: u64,
    /// Of them, referenced by the table's metadata, and listed by the ledger (staged, not yet committed).
    pub referenced: u64,
    pub staged: u64,
    /// Unreferenced but younger than the safety window (kept).
    pub too_recent: u64,
    /// Unreferenced and older than the window: deleted (or, in a dry run, to be deleted), and their bytes.
    pub orphans: u64,
    pub orphan_bytes: u64,
    pub deleted: u64,
    /// The safety window applied.
    pub older_than_ms: i64,
    /// Whether the whole location was listed (false: the deadline stopped it; the next run goes on).
    pub complete: bool,
    /// The orphans' locations (at most the first 1,000).
    pub paths: Vec<String>,
}

/// How one removal runs.
#[derive(Clone, Copy)]
pub struct OrphanScan<'a> {
    pub catalog: &'a dyn Catalog,
    pub state: &'a dyn StateStore,
    pub lister: &'a dyn ObjectLister,
    /// Processing time: files last modified before `now_ms - window` are old enough.
    pub now_ms: i64,
    /// Overrides the table's window (the CLI's `--older-than`, checked against the minimum by the caller).
    pub older_than_ms: Option<i64>,
    /// Only report what would be deleted.
    pub dry_run: bool,
    /// Stop listing (and deleting) at this instant; what is left waits for the next run.
    pub deadline: Instant,
}

/// A location without its scheme (`s3://b/k`, `s3a://b/k` → `b/k`; `file:///p` → `/p`) and with single
/// slashes, so that the metadata's and the listing's spellings of one file compare equal.
fn normalised(location: &str) -> String {
    let rest = location.split_once("://").map_or(location, |(_, rest)| rest);
    let mut out = String::with_capacity(rest.len());
    for c in rest.chars() {
        if !(c == '/' && out.ends_with('/')) {
            out.push(c);
        }
    }
    out
}

/// Every location the table's metadata references: metadata files, statistics, and the manifest lists,
/// manifests and content files of every snapshot (each manifest read once, however many snapshots share it).
pub async fn referenced(table: &Table) -> Result<HashSet<String>> {
    let metadata = table.metadata();
    let mut refs: HashSet<String> = HashSet::new();
    refs.extend(table.metadata_location().map(normalised));
    refs.extend(metadata.metadata_log().iter().map(|m| normalised(&m.metadata_file)));
    refs.extend(metadata.statistics_iter().map(|s| normalised(&s.statistics_path)));
    refs.extend(metadata.partition_statistics_iter().map(|s| normalised(&s.statistics_path)));
    // Futures collected first: a lazy map over borrowed snapshots makes the caller's future not `Send`.
    let readers: Vec<_> = metadata.snapshots().map(|s| table.manifest_list_reader(s)).collect();
    refs.extend(metadata.snapshots().map(|s| normalised(s.manifest_list())));
    let loads: Vec<_> = readers.into_iter().map(|r| async move { r.load().await }).collect();
    let lists = futures::stream::iter(loads).buffer_unordered(READ_CONCURRENCY).try_collect::<Vec<_>>().await?;
    let mut manifests = Vec::new();
    for list in lists {
        for m in list.consume_entries() {
            if refs.insert(normalised(&m.manifest_path)) {
                manifests.push(m);
            }
        }
    }
    let io = table.file_io();
    let loads: Vec<_> = manifests.iter().map(|m| m.load_manifest(io)).collect();
    let mut loaded = futures::stream::iter(loads).buffer_unordered(READ_CONCURRENCY);
    while let Some(manifest) = loaded.try_next().await? {
        // Live entries only: a `deleted` entry is a tombstone (a rewrite's input, say). A kept snapshot from before
        // the delete still reads that file, but through its own manifests, where the entry is live.
        refs.extend(manifest.entries().iter().filter(|e| e.is_alive()).map(|e| normalised(e.file_path())));
    }
    Ok(refs)
}

/// Find and (unless a dry run) delete `ident`'s orphans. A table that does not exist has none.
pub async fn remove_orphans(scan: &OrphanScan<'_>, ident: &TableIdent) -> Result<Orphans> {
    let name = ident.to_string();
    let mut report = Orphans { table: name.clone(), ..Default::default() };
    // The ledger first (see the module docs): what it lists now is either still staged or committed by the
    // time the metadata is read.
    let staged: HashSet<String> = scan.state.staged_files(&name).await?.iter().map(|f| normalised(&f.path)).collect();
    failpoint::hit(failpoint::ORPHANS_AFTER_LEDGER).await?;
    if !scan.catalog.table_exists(ident).await? {
        report.complete = true;
        return Ok(report);
    }
    let table = scan.catalog.load_table(ident).await?;
    report.older_than_ms = match scan.older_than_ms {
        Some(ms) => ms,
        None => older_than_ms(&table)?,
    };
    let refs = referenced(&table).await?;
    let location = format!("{}/", table.metadata().location().trim_end_matches('/'));
    let within = normalised(&location);
    let cutoff = scan.now_ms.saturating_sub(report.older_than_ms);
    let mut listing = scan.lister.list(&location).await?;
    report.complete = true;
    while let Some(object) = listing.next().await {
        if Instant::now() >= scan.deadline {
            report.complete = false;
            break;
        }
        let object = object?;
        let key = normalised(&object.location);
        if !key.starts_with(&within) {
            // Never outside the table, whatever a store returns.
            continue;
        }
        report.listed += 1;
        if refs.contains(&key) {
            report.referenced += 1;
        } else if staged.contains(&key) {
            report.staged += 1;
        } else if object.last_modified_ms.is_none_or(|t| t >= cutoff) {
            report.too_recent += 1;
        } else {
            report.orphans += 1;
            report.orphan_bytes += object.size;
            if report.paths.len() < REPORTED_PATHS {
                report.paths.push(object.location.clone());
            }
            if !scan.dry_run {
                failpoint::check(failpoint::ORPHANS_DURING_DELETE)?;
                // The compactor's one delete helper: a failed delete is logged and left for the next run.
                let paths = std::slice::from_ref(&object.location);
                if crate::catalog::delete_files(table.file_io(), &name, paths, "orphan file").await == 1 {
                    info!(table = %name, path = %object.location, bytes = object.size, "deleted orphan file");
                    report.deleted += 1;
                }
            }
        }
    }
    info!(table = %name, listed = report.listed, orphans = report.orphans, deleted = report.deleted,
        too_recent = report.too_recent, complete = report.complete, dry_run = scan.dry_run, "orphan removal");
    Ok(report)
}

#[cfg(test)]
#[path = "orphans/tests.rs"]
mod tests;
