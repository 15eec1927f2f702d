//! Snapshot expiry: the compactor writes a snapshot per table per minute, so old ones are removed from the
//! metadata by the standard table properties, and the manifest lists only they referenced are deleted.
//!
//! - `history.expire.max-snapshot-age-ms`: snapshots older than this are expired; floe's default is 24 hours
//!   ([`DEFAULT_MAX_SNAPSHOT_AGE_MS`]; Iceberg's is 5 days, which at a commit a minute keeps 7,200 snapshots in
//!   every `metadata.json` the compactor rewrites).
//! - `history.expire.min-snapshots-to-keep`: the newest snapshots of the current ancestry kept whatever their
//!   age (Iceberg's default, 1).
//! - **Never what recovery needs**: the newest snapshot of the current ancestry carrying each `floe.*` summary
//!   key (the committed positions, the closed window watermark) is kept, as is everything newer, even if
//!   another writer committed after floe without carrying floe's summaries.
//! - Expiry commits through iceberg-rust's `expire_snapshots` action (which keeps the heads of branches and tags
//!   and their retention rules) on the pinned view, so a concurrent commit makes it re-plan on the next run.
//!   It runs once [`EXPIRE_BATCH`] snapshots are due, so it costs one extra metadata write per half hour per
//!   table, not one per run.
//!
//! After the expiry commit, the files only expired snapshots referenced are deleted ([`unreachable`]): their
//! manifest lists, and after rewrites and manifest merges the manifests and data files they replaced.

use std::collections::{HashMap, HashSet};

use futures::{StreamExt, TryStreamExt};
use iceberg::Catalog;
use iceberg::spec::{ManifestFile, TableMetadata};
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use tracing::{info, warn};

use super::pinned::PinnedCatalog;
use crate::error::{Error, Result};
use crate::failpoint;

pub const MAX_SNAPSHOT_AGE_MS: &str = "history.expire.max-snapshot-age-ms";
pub const MIN_SNAPSHOTS_TO_KEEP: &str = "history.expire.min-snapshots-to-keep";
/// floe's default snapshot age limit: a day of time travel.
pub const DEFAULT_MAX_SNAPSHOT_AGE_MS: i64 = 24 * 60 * 60 * 1000;
/// Iceberg's default.
pub const DEFAULT_MIN_SNAPSHOTS_TO_KEEP: usize = 1;
/// Expire once this many snapshots are due.
pub const EXPIRE_BATCH: usize = 30;

/// A table's expiry settings, from its properties.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpiryPolicy {
    pub max_age_ms: i64,
    pub min_keep: usize,
}

impl ExpiryPolicy {
    /// The policy of a table's properties (floe's defaults where a property is absent).
    pub fn of(table: &str, properties: &HashMap<String, String>) -> Result<ExpiryPolicy> {
        let positive = |key: &str, default: i64, want: &str| match properties.get(key) {
            None => Ok(default),
            Some(v) => v.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| Error::TableMismatch {
                table: table.to_string(),
                message: format!("table property {key} = `{v}` is not {want}"),
            }),
        };
        let max_age_ms =
            positive(MAX_SNAPSHOT_AGE_MS, DEFAULT_MAX_SNAPSHOT_AGE_MS, "a positive number of milliseconds")?;
        let min_keep =
            positive(MIN_SNAPSHOTS_TO_KEEP, DEFAULT_MIN_SNAPSHOTS_TO_KEEP as i64, "a positive count")? as usize;
        Ok(ExpiryPolicy { max_age_ms, min_keep })
    }
}

/// The current snapshot's ancestry, newest first.
fn ancestry(metadata: &TableMetadata) -> Vec<i64> {
    let mut ids = Vec::new();
    let mut next = metadata.current_snapshot_id();
    while let Some(id) = next {
        let Some(s) = metadata.snapshot_by_id(id) else { break };
        ids.push(id);
        next = s.parent_snapshot_id();
    }
    ids
}

/// The oldest snapshot expiry must keep for floe's recovery: of the newest carrier in the current ancestry of
/// each `floe.*` summary key, the oldest. Everything from it to the current snapshot is kept.
pub fn oldest_needed(metadata: &TableMetadata) -> Option<i64> {
    let mut seen: HashSet<&str> = HashSet::new();
    let mut oldest = None;
    for id in ancestry(metadata) {
        let snapshot = metadata.snapshot_by_id(id).expect("in the ancestry");
        for key in snapshot.summary().additional_properties.keys() {
            if key.starts_with("floe.") && key != "floe.pipeline" && seen.insert(key.as_str()) {
                oldest = Some(id);
            }
        }
    }
    oldest
}

/// The snapshots due for expiry at `now_ms`: older than the age limit, not the current one, not among the
/// `min_keep` newest of the current ancestry, and not needed for recovery ([`oldest_needed`] and newer).
pub fn due(metadata: &TableMetadata, policy: &ExpiryPolicy, now_ms: i64) -> Vec<i64> {
    let cutoff = now_ms.saturating_sub(policy.max_age_ms);
    let line = ancestry(metadata);
    let needed = oldest_needed(metadata).and_then(|id| line.iter().position(|x| *x == id));
    // Kept from the ancestry: the newest `min_keep`, and everything up to the oldest needed one.
    let keep_upto = needed.map_or(0, |i| i + 1).max(policy.min_keep);
    let kept: HashSet<i64> = line.iter().take(keep_upto).copied().collect();
    let mut ids: Vec<i64> = metadata
        .snapshots()
        .filter(|s| !kept.contains(&s.snapshot_id()) && s.timestamp_ms() < cutoff)
        .map(|s| s.snapshot_id())
        .collect();
    ids.sort_unstable();
    ids
}

/// What an expiry did.
#[derive(Debug, Default)]
pub struct Expired {
    pub snapshots: u64,
    pub files_deleted: u64,
}

/// Expire `table`'s due snapshots if at least `batch` are due, then delete their manifest lists. Returns the
/// table as committed (or as given, when nothing was due).
pub async fn expire(catalog: &dyn Catalog, table: Table, now_ms: i64, batch: usize) -> Result<(Table, Expired)> {
    let name = table.identifier().to_string();
    let policy = ExpiryPolicy::of(&name, table.metadata().properties())?;
    let due = due(table.metadata(), &policy, now_ms);
    if due.is_empty() || due.len() < batch {
        return Ok((table, Expired::default()));
    }
    // The action's own age rule, bounded so that it cannot reach what recovery needs.
    let mut older_than = now_ms.saturating_sub(policy.max_age_ms);
    if let Some(id) = oldest_needed(table.metadata()) {
        let needed_ts = table.metadata().snapshot_by_id(id).map_or(i64::MAX, |s| s.timestamp_ms());
        older_than = older_than.min(needed_ts);
    }
    failpoint::hit(failpoint::EXPIRE_BEFORE_COMMIT).await?;
    let (view, pinned) = PinnedCatalog::new(catalog, &table)?;
    let tx = Transaction::new(&pinned);
    let action = tx.expire_snapshots().expire_older_than_ms(older_than).retain_last(policy.min_keep);
    let committed = match action.apply(tx) {
        Ok(tx) => tx.commit(&view).await,
        Err(e) => Err(e),
    };
    let committed = match committed {
        Ok(t) => t,
        Err(e) if crate::catalog::is_conflict(&e) => {
            // Another commit won the race; the next run expires from the new metadata.
            warn!(table = %name, error = %e, "expiry lost a commit race; the next run retries");
            return Ok((catalog.load_table(table.identifier()).await?, Expired::default()));
        }
        Err(e) => return Err(e.into()),
    };
    let kept: HashSet<i64> = committed.metadata().snapshots().map(|s| s.snapshot_id()).collect();
    let expired: Vec<_> = table.metadata().snapshots().filter(|s| !kept.contains(&s.snapshot_id())).collect();
    failpoint::hit(failpoint::EXPIRE_AFTER_COMMIT).await?;
    let mut report = Expired { snapshots: expired.len() as u64, files_deleted: 0 };
    let garbage = unreachable(&table, &committed).await?;
    let delete = |paths: Vec<String>, what: &'static str| {
        let (file_io, name) = (committed.file_io(), name.clone());
        async move { crate::catalog::delete_files(file_io, &name, &paths, what).await }
    };
    // Data files first, then the manifests listing them, then the lists: a run stopped midway leaves only
    // files that nothing kept references.
    report.files_deleted += delete(garbage.data_files, "unreferenced data file").await;
    report.files_deleted += delete(garbage.manifests, "unreferenced manifest").await;
    report.files_deleted += delete(garbage.manifest_lists, "manifest list").await;
    info!(table = %name, expired = report.snapshots, files_deleted = report.files_deleted, "expired snapshots");
    Ok((committed, report))
}

/// Files only expired snapshots referenced.
#[derive(Debug, Default)]
pub struct Garbage {
    pub manifest_lists: Vec<String>,
    pub manifests: Vec<String>,
    pub data_files: Vec<String>,
}

/// What expiring from `before` to `after` made unreachable: the expired snapshots' manifest lists, the
/// manifests no kept snapshot lists, and of the files those manifests list, the ones no kept snapshot has live.
/// Appends carry every manifest forward, so after appends only manifest lists go; after a rewrite, the
/// rewritten inputs and their old manifests go once every snapshot that still listed them has expired.
///
/// Reads are bounded: the expired snapshots' lists; the kept ones only if a manifest is missing from the
/// current snapshot (after a rewrite or merge); and of the kept manifests only those with `existing` entries,
/// the only ones that can list a file an expired snapshot added (an append manifest lists its own files).
pub async fn unreachable(before: &Table, after: &Table) -> Result<Garbage> {
    let kept_ids: HashSet<i64> = after.metadata().snapshots().map(|s| s.snapshot_id()).collect();
    let kept_lists: HashSet<&str> = after.metadata().snapshots().map(|s| s.manifest_list()).collect();
    let mut garbage = Garbage::default();
    let mut dropped: HashMap<String, ManifestFile> = HashMap::new();
    for snapshot in before.metadata().snapshots().filter(|s| !kept_ids.contains(&s.snapshot_id())) {
        if !kept_lists.contains(snapshot.manifest_list()) {
            garbage.manifest_lists.push(snapshot.manifest_list().to_string());
        }
        for m in before.manifest_list_reader(snapshot).load().await?.consume_entries() {
            dropped.entry(m.manifest_path.clone()).or_insert(m);
        }
    }
    let mut kept: HashMap<String, ManifestFile> = HashMap::new();
    if let Some(current) = after.metadata().current_snapshot() {
        kept.extend(
            after
                .manifest_list_reader(current)
                .load()
                .await?
                .consume_entries()
                .into_iter()
                .map(|m| (m.manifest_path.clone(), m)),
        );
    }
    dropped.retain(|path, _| !kept.contains_key(path));
    if dropped.is_empty() {
        return Ok(garbage);
    }
    // Futures collected first: a lazy map over borrowed snapshots makes the caller's future not `Send`.
    let readers: Vec<_> = after.metadata().snapshots().map(|s| after.manifest_list_reader(s)).collect();
    let loads: Vec<_> = readers.into_iter().map(|r| async move { r.load().await }).collect();
    let lists = futures::stream::iter(loads).buffer_unordered(READ_CONCURRENCY).try_collect::<Vec<_>>().await?;
    for list in lists {
        kept.extend(list.consume_entries().into_iter().map(|m| (m.manifest_path.clone(), m)));
    }
    dropped.retain(|path, _| !kept.contains_key(path));
    if dropped.is_empty() {
        return Ok(garbage);
    }
    let io = after.file_io();
    let rewritten: Vec<_> =
        kept.values().filter(|m| m.existing_files_count.is_none_or(|n| n > 0)).map(|m| m.load_manifest(io)).collect();
    let manifests = futures::stream::iter(rewritten).buffer_unordered(READ_CONCURRENCY).try_collect::<Vec<_>>().await?;
    let live: HashSet<&str> =
        manifests.iter().flat_map(|m| m.entries()).filter(|e| e.is_alive()).map(|e| e.file_path()).collect();
    let mut files: HashSet<String> = HashSet::new();
    for m in dropped.values() {
        for entry in m.load_manifest(before.file_io()).await?.entries() {
            // Data and delete files alike: a position-delete file a rewrite retired goes with its snapshots.
            if !live.contains(entry.file_path()) {
                files.insert(entry.file_path().to_string());
            }
        }
    }
    garbage.manifests = dropped.into_keys().collect();
    garbage.data_files = files.into_iter().collect();
    garbage.manifests.sort();
    garbage.data_files.sort();
    Ok(garbage)
}

/// Manifest reads in flight at once.
const READ_CONCURRENCY: usize = 16;

#[cfg(test)]
#[path = "expire/tests.rs"]
mod tests;
