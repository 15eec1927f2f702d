//! Rewriting committed small files: partitions that keep receiving small commits (low volume, late data, a
//! file a minute) are rewritten into target-size files in a `replace` snapshot ([`super::replace`]), which
//! also merges small manifests.
//!
//! - **Policy** ([`RewritePolicy`]): a partition's live files below ¾ of `target_file_size_mb` are bin-packed
//!   as on commit ([`super::merge::pack`]); a bin is rewritten once it holds at least
//!   `floe.rewrite.min-input-files` files (default [`DEFAULT_MIN_INPUT_FILES`], Iceberg's `min-input-files`).
//!   A partition that gets a file a minute is thus rewritten every few runs, and its small files stay below
//!   that count between rewrites. Set the property to `0` to turn rewrites off for a table.
//! - **Position deletes** (change streams, or another engine's `DELETE`) are applied: rewritten files leave the
//!   deleted rows out, a file with many deletes ([`DELETE_RATIO`], [`DELETE_FILES_PER_DATA_FILE`]) is rewritten
//!   on its own, and a delete file is dropped once no data file it targets is live. A rival's row delta
//!   committed meanwhile makes the swap fail, and the re-plan applies its deletes too (merged files are named
//!   after the deletes they applied, so none is reused). Tables with equality deletes are not rewritten.
//! - **Bounded**: bins are merged oldest first until the run's merge deadline; the rest wait for the next run.
//! - **Concurrency**: the snapshot is planned on the table as loaded and swapped only if the table still points
//!   at it. A lost race reloads and re-plans: bins whose inputs a rival rewrote are dropped, appends committed
//!   meanwhile stay (they are in the new snapshot's manifests), and merged files already written for a bin that
//!   is still valid are reused.
//! - **Exactly once**: the replace snapshot carries the newest value of every `floe.*` summary key forward, so
//!   the committed positions and closed-window watermarks are read from the current snapshot as before.
//! - **The inputs stay** until the snapshots that list them expire (time travel), then expiry deletes them
//!   ([`super::expire`]). Merged files of a rewrite that did not commit are deleted, unless the swap's outcome
//!   is unknown (then orphan removal's).

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use iceberg::Catalog;
use iceberg::io::FileIO;
use iceberg::spec::{DataFile, ManifestContentType, ManifestFile, TableMetadata};
use iceberg::table::Table;
use tracing::{info, warn};

use super::deletes::LiveDeletes;
use super::merge::{MergePolicy, Merged, merged_prefix, pack};
use super::replace::{ManifestPolicy, ReplacePlan};
use super::tables::{delete_uncommitted, simulated_crash};
use crate::backends::MetadataSwap;
use crate::catalog::{delete_files, is_conflict};
use crate::error::{Error, Result};
use crate::failpoint;
use crate::table::files::live_files_in;
use crate::table::layout::TableLayout;
use crate::table::writer::TableWriter;

pub const MIN_INPUT_FILES: &str = "floe.rewrite.min-input-files";
/// Iceberg's `rewrite_data_files` default.
pub const DEFAULT_MIN_INPUT_FILES: usize = 5;
/// A data file with this share of its rows deleted is rewritten without them (Iceberg's
/// `delete-ratio-threshold` default).
pub const DELETE_RATIO: f64 = 0.3;
/// A data file that this many delete files target is rewritten (each is read by every scan of it).
pub const DELETE_FILES_PER_DATA_FILE: usize = 5;

/// When committed files are rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RewritePolicy {
    pub merge: MergePolicy,
    /// A bin is rewritten once it has this many files; 0 turns rewrites off.
    pub min_input_files: usize,
}

impl RewritePolicy {
    pub fn of(table: &str, target_size: u64, properties: &HashMap<String, String>) -> Result<RewritePolicy> {
        let min_input_files = match properties.get(MIN_INPUT_FILES) {
            None => DEFAULT_MIN_INPUT_FILES,
            Some(v) => v.parse::<usize>().map_err(|_| Error::TableMismatch {
                table: table.to_string(),
                message: format!("table property {MIN_INPUT_FILES} = `{v}` is not a count"),
            })?,
        };
        Ok(RewritePolicy { merge: MergePolicy::for_target(target_size), min_input_files })
    }

    /// [`RewritePolicy::bins`], and each other file whose position deletes are due to be applied: at least
    /// [`DELETE_RATIO`] of its rows deleted, or [`DELETE_FILES_PER_DATA_FILE`] delete files targeting it (each
    /// one a file every reader opens for it).
    pub fn bins_with_deletes(&self, live: &[DataFile], deletes: &LiveDeletes) -> Vec<Vec<usize>> {
        let mut bins = self.bins(live);
        if deletes.files.is_empty() || self.min_input_files == 0 {
            return bins;
        }
        let in_bin: HashSet<usize> = bins.iter().flatten().copied().collect();
        let mut targeted: HashMap<&str, usize> = HashMap::new();
        for target in deletes.files.iter().flat_map(|(_, t)| t) {
            *targeted.entry(target.as_str()).or_default() += 1;
        }
        for (i, f) in live.iter().enumerate().filter(|(i, _)| !in_bin.contains(i)) {
            let deleted = deletes.deleted(f.file_path()) as f64;
            let files = targeted.get(f.file_path()).copied().unwrap_or(0);
            if deleted > 0.0
                && (deleted >= f.record_count() as f64 * DELETE_RATIO || files >= DELETE_FILES_PER_DATA_FILE)
            {
                bins.push(vec![i]);
            }
        }
        bins
    }

    /// The bins of `live` files to rewrite (indices), oldest files first.
    pub fn bins(&self, live: &[DataFile]) -> Vec<Vec<usize>> {
        if self.min_input_files == 0 {
            return Vec::new();
        }
        let mut bins = pack(live, &self.merge);
        bins.retain(|b| b.len() >= self.min_input_files.max(2));
        bins
    }
}

/// What a rewrite did.
#[derive(Debug, Default)]
pub struct Rewritten {
    pub inputs: u64,
    pub outputs: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub manifests_before: u64,
    pub manifests_after: u64,
    pub conflicts: u32,
}

/// Delete manifests that list live delete files (a manifest whose counts are unknown counts as listing some).
pub(crate) fn row_delete_manifests(manifests: &[ManifestFile]) -> usize {
    let live = |m: &&ManifestFile| m.added_files_count.unwrap_or(1) + m.existing_files_count.unwrap_or(1) > 0;
    manifests.iter().filter(|m| m.content == ManifestContentType::Deletes).filter(live).count()
}

/// The newest value of every `floe.*` summary key in the current snapshot's ancestry: what a snapshot floe
/// writes carries forward.
pub fn carried_summaries(metadata: &TableMetadata) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut next = metadata.current_snapshot_id();
    while let Some(s) = next.and_then(|id| metadata.snapshot_by_id(id)) {
        for (k, v) in &s.summary().additional_properties {
            if k.starts_with("floe.") {
                out.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        next = s.parent_snapshot_id();
    }
    out
}

/// A hash of the positions `deletes` deletes from `files`.
fn deletes_signature(deletes: &LiveDeletes, files: &[&DataFile]) -> u64 {
    let mut key = Vec::new();
    for f in files {
        if let Some(positions) = deletes.positions.get(f.file_path()) {
            key.extend_from_slice(f.file_path().as_bytes());
            positions.iter().for_each(|p| key.extend_from_slice(&p.to_le_bytes()));
        }
    }
    if key.is_empty() { 0 } else { crate::hash::hash64(&key) }
}

/// The compactor's view of one table for a rewrite.
pub struct Rewriter<'a> {
    pub catalog: &'a dyn Catalog,
    pub swap: &'a dyn MetadataSwap,
    pub file_io: &'a FileIO,
    pub layout: &'a TableLayout,
    pub run: u64,
    pub merge_deadline: Instant,
    pub max_attempts: u32,
}

impl Rewriter<'_> {
    /// Rewrite `table`'s small committed files and merge its small manifests, if due. Returns the table as
    /// committed (or as given).
    pub async fn run(&self, table: Table) -> Result<(Table, Rewritten)> {
        let mut merged: HashMap<String, Merged> = HashMap::new();
        let mut outcome_unknown = false;
        let mut committed: HashSet<String> = HashSet::new();
        let result = self.attempts(table, &mut merged, &mut committed, &mut outcome_unknown).await;
        let leftovers: Vec<String> = merged
            .values()
            .flat_map(|m| m.files.iter().map(|f| f.file_path().to_string()))
            .filter(|p| !committed.contains(p))
            .collect();
        if !matches!(&result, Err(e) if simulated_crash(e)) {
            let ident = self.layout.ident();
            delete_uncommitted(self.catalog, self.file_io, &ident, leftovers, outcome_unknown, "rewritten file").await;
        }
        result
    }

    async fn attempts(
        &self,
        mut table: Table,
        merged: &mut HashMap<String, Merged>,
        committed_files: &mut HashSet<String>,
        outcome_unknown: &mut bool,
    ) -> Result<(Table, Rewritten)> {
        let name = self.layout.name.to_string();
        let properties = table.metadata().properties().clone();
        let policy = RewritePolicy::of(&name, self.layout.target_file_size as u64, &properties)?;
        let manifests = ManifestPolicy::of(&name, &properties)?;
        let mut report = Rewritten::default();
        let mut writer = None;
        for attempt in 1..=self.max_attempts {
            let Some(current) = table.metadata().current_snapshot() else {
                return Ok((table, report));
            };
            let list = table.manifest_list_reader(current).load().await?;
            let live = live_files_in(&table, list.entries()).await?;
            // Position deletes (floe's change streams, or another engine's `DELETE`) are applied by the rewrite:
            // the new files leave those rows out, and delete files whose every target is gone are dropped.
            // Equality deletes cannot be applied by position: such a table's data files are not rewritten (its
            // data manifests are still merged).
            let deletes = match row_delete_manifests(list.entries()) {
                0 => LiveDeletes::default(),
                _ => LiveDeletes::load(&table, list.entries(), None).await?,
            };
            if deletes.equality > 0 && attempt == 1 {
                warn!(table = %name, files = deletes.equality, "the table has equality-delete files; its data files \
                       are not rewritten (floe applies position deletes only)");
            }
            let bins = if deletes.equality > 0 { Vec::new() } else { policy.bins_with_deletes(&live, &deletes) };
            let live_paths: HashSet<&str> = live.iter().map(|f| f.file_path()).collect();
            let dangling = deletes.files.iter().any(|(_, t)| t.iter().all(|p| !live_paths.contains(p.as_str())));
            let merge_manifests = manifests.due(list.entries());
            if bins.is_empty() && !merge_manifests && !dangling {
                return Ok((table, report));
            }
            let mut plan = ReplacePlan {
                merge_manifests: manifests.enabled.then_some(manifests),
                properties: carried_summaries(table.metadata()),
                ..Default::default()
            };
            let (mut inputs, mut outputs, mut read, mut wrote) = (0u64, 0u64, 0u64, 0u64);
            for bin in bins {
                let files: Vec<&DataFile> = bin.iter().map(|&i| &live[i]).collect();
                // The deletes applied are part of the name: a re-plan after a rival added deletes to these
                // inputs must not reuse files merged without them.
                let salt = self.run ^ deletes_signature(&deletes, &files);
                let prefix = merged_prefix(&files, salt);
                if !merged.contains_key(&prefix) {
                    if Instant::now() >= self.merge_deadline {
                        break;
                    }
                    let writer = match &writer {
                        Some(w) => w,
                        None => writer.insert(TableWriter::new(self.layout.clone(), self.file_io.clone())?),
                    };
                    let result = super::merge::merge_applying(writer, self.file_io, &files, salt, &deletes).await?;
                    merged.insert(prefix.clone(), result);
                }
                let result = &merged[&prefix];
                inputs += files.len() as u64;
                outputs += result.files.len() as u64;
                read += result.bytes_read;
                wrote += result.bytes_written;
                plan.removed.extend(files.iter().map(|f| f.file_path().to_string()));
                plan.added.extend(result.files.iter().cloned());
            }
            // A delete file is retired once no data file it targets is live after this snapshot.
            let retired: Vec<String> = deletes
                .files
                .iter()
                .filter(|(_, targets)| {
                    targets.iter().all(|t| plan.removed.contains(t) || !live_paths.contains(t.as_str()))
                })
                .map(|(file, _)| file.file_path().to_string())
                .collect();
            plan.removed.extend(retired);
            if plan.removed.is_empty() && !merge_manifests {
                return Ok((table, report));
            }
            failpoint::hit(failpoint::REWRITE_BEFORE_COMMIT).await?;
            let started = Instant::now();
            let replacement = super::replace::build(&table, &plan).await?;
            let (snapshot_id, before, after) =
                (replacement.snapshot_id, replacement.manifests_before, replacement.manifests_after);
            let written = replacement.written.clone();
            match super::replace::commit(self.swap, &table, replacement).await {
                Ok(Ok(committed)) => {
                    committed_files.extend(plan.added.iter().map(|f| f.file_path().to_string()));
                    info!(table = %name, snapshot_id, inputs, outputs, bytes_read = read, bytes_written = wrote,
                        manifests_before = before, manifests_after = after,
                        commit_ms = started.elapsed().as_millis() as u64, "rewrote small files");
                    report = Rewritten {
                        inputs,
                        outputs,
                        bytes_read: read,
                        bytes_written: wrote,
                        manifests_before: before as u64,
                        manifests_after: after as u64,
                        conflicts: report.conflicts,
                    };
                    failpoint::hit(failpoint::REWRITE_AFTER_COMMIT).await?;
                    return Ok((committed, report));
                }
                Ok(Err(e)) if is_conflict(&e) && attempt < self.max_attempts => {
                    warn!(table = %name, attempt, error = %e, "rewrite lost a commit race; re-planning");
                    report.conflicts += 1;
                    table = self.catalog.load_table(&self.layout.ident()).await?;
                    // This attempt's manifests and list are referenced by nothing unless the swap applied.
                    if table.metadata().snapshot_by_id(snapshot_id).is_none() {
                        delete_files(self.file_io, &name, &written, "unused rewrite manifest").await;
                    }
                }
                Ok(Err(e)) => {
                    *outcome_unknown = !is_conflict(&e);
                    return Err(Error::Iceberg(e));
                }
                // Failed before the swap was sent: nothing points at this attempt's files.
                Err(e) => return Err(e),
            }
        }
        Err(Error::Conflict(format!("{name}: rewrite gave up after {} conflicting attempts", self.max_attempts)))
    }
}

#[cfg(test)]
#[path = "rewrite/tests.rs"]
mod tests;
