//! A `replace` snapshot, built on iceberg-rust's spec APIs (0.10.1 has no rewrite action): the same rows in
//! other files. Used to rewrite committed small files into target-size ones and to merge small manifests.
//!
//! - **Manifests**: the current snapshot's data manifests that list no removed file are carried as they are,
//!   unless manifest merging is on for this snapshot: then the small ones (below `commit.manifest.target-size-bytes`)
//!   are bin-packed by size and each bin is rewritten into one manifest, once at least
//!   `commit.manifest.min-count-to-merge` manifests are small (Iceberg's properties and defaults). A manifest
//!   that lists a removed file is rewritten: its other live files as `existing` (their snapshot ids and
//!   sequence numbers kept), the removed ones as `deleted`. The added files go into one new manifest.
//! - **Summary**: `operation = replace`, iceberg's added/removed counts and totals, and the caller's properties
//!   (floe carries its `floe.*` summaries forward, so recovery still finds the committed positions in the
//!   current snapshot).
//! - **Commit**: the new metadata file is written next to the current one, and the catalog's compare-and-swap
//!   ([`MetadataSwap`]) points the table at it only if the table still points at the metadata the snapshot was
//!   planned on; a table that moved is a conflict, and the caller re-plans from fresh metadata.
//! - Names are derived from the new snapshot's id, itself a hash of what it replaces: a retry of the same plan
//!   writes the same manifest files, never a new set.

use std::collections::{HashMap, HashSet};

use iceberg::spec::{
    DataContentType, DataFile, MAIN_BRANCH, ManifestContentType, ManifestFile, ManifestListWriter, ManifestWriter,
    ManifestWriterBuilder, Operation, Snapshot, SnapshotReference, SnapshotRetention, SnapshotSummaryCollector,
    Summary, TableMetadata,
};
use iceberg::table::Table;

use crate::backends::MetadataSwap;
use crate::error::{Error, Result};
use crate::hash::hash64;

pub const MANIFEST_MERGE_ENABLED: &str = "commit.manifest-merge.enabled";
pub const MANIFEST_MIN_MERGE_COUNT: &str = "commit.manifest.min-count-to-merge";
pub const MANIFEST_TARGET_SIZE: &str = "commit.manifest.target-size-bytes";
/// Iceberg's defaults.
pub const DEFAULT_MANIFEST_MIN_MERGE_COUNT: usize = 100;
pub const DEFAULT_MANIFEST_TARGET_SIZE: u64 = 8 * 1024 * 1024;

/// When small manifests are merged, from a table's properties.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ManifestPolicy {
    pub enabled: bool,
    pub min_count: usize,
    pub target_size: u64,
}

impl ManifestPolicy {
    pub fn of(table: &str, properties: &HashMap<String, String>) -> Result<ManifestPolicy> {
        let bad = |key: &str, v: &str, want: &str| Error::TableMismatch {
            table: table.to_string(),
            message: format!("table property {key} = `{v}` is not {want}"),
        };
        let enabled = match properties.get(MANIFEST_MERGE_ENABLED).map(|v| v.to_ascii_lowercase()) {
            None => true,
            Some(v) if v == "true" => true,
            Some(v) if v == "false" => false,
            Some(v) => return Err(bad(MANIFEST_MERGE_ENABLED, &v, "true or false")),
        };
        let number = |key: &str, default: u64| match properties.get(key) {
            None => Ok(default),
            Some(v) => v.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| bad(key, v, "a positive number")),
        };
        let min_count = number(MANIFEST_MIN_MERGE_COUNT, DEFAULT_MANIFEST_MIN_MERGE_COUNT as u64)?.max(2) as usize;
        let target_size = number(MANIFEST_TARGET_SIZE, DEFAULT_MANIFEST_TARGET_SIZE)?;
        Ok(ManifestPolicy { enabled, min_count, target_size })
    }

    /// Whether the current snapshot's manifests are due for merging.
    pub fn due(&self, manifests: &[ManifestFile]) -> bool {
        self.enabled && mergeable(manifests, self).len() >= self.min_count
    }
}

/// The indices of the manifests a merge may combine: small data manifests.
fn mergeable(manifests: &[ManifestFile], policy: &ManifestPolicy) -> Vec<usize> {
    let small =
        |m: &ManifestFile| m.content == ManifestContentType::Data && (m.manifest_length as u64) < policy.target_size;
    (0..manifests.len()).filter(|&i| small(&manifests[i])).collect()
}

/// What a replace snapshot changes.
#[derive(Debug, Default)]
pub struct ReplacePlan {
    /// Live files of the current snapshot that the new one no longer lists: data files, and position-delete
    /// files none of whose targets stays live.
    pub removed: HashSet<String>,
    /// Their replacements (the same rows).
    pub added: Vec<DataFile>,
    /// Merge small manifests ([`ManifestPolicy`]) in the same snapshot.
    pub merge_manifests: Option<ManifestPolicy>,
    /// Added to the summary (floe's carried-forward `floe.*` keys).
    pub properties: HashMap<String, String>,
}

/// What the new snapshot looks like.
#[derive(Debug)]
pub struct Replacement {
    pub metadata: TableMetadata,
    pub snapshot_id: i64,
    pub manifests_before: usize,
    pub manifests_after: usize,
    /// The manifest and manifest-list files it wrote (garbage if the swap fails).
    pub written: Vec<String>,
}

/// Build (write the manifests and manifest list of) a replace snapshot on `table`'s current snapshot. Every
/// removed path must be live in it: the plan was made from this table.
pub async fn build(table: &Table, plan: &ReplacePlan) -> Result<Replacement> {
    let metadata = table.metadata();
    let current = metadata
        .current_snapshot()
        .ok_or_else(|| Error::Invariant(format!("{}: a replace needs a current snapshot", table.identifier())))?;
    let snapshot_id = snapshot_id(metadata, current.snapshot_id(), plan);
    let sequence_number = metadata.next_sequence_number();
    let schema = metadata.current_schema().clone();
    let spec = metadata.default_partition_spec().clone();
    let manifests: Vec<ManifestFile> = table.manifest_list_reader(current).load().await?.entries().to_vec();

    // Which manifests are rewritten: those listing a removed file, and the bins of small ones to merge.
    let mut bins: Vec<Vec<usize>> = Vec::new();
    let mut pooled = vec![false; manifests.len()];
    if let Some(policy) = plan.merge_manifests.filter(|p| p.due(&manifests)) {
        let mut bin = Vec::new();
        let mut size = 0u64;
        for i in mergeable(&manifests, &policy) {
            let length = manifests[i].manifest_length as u64;
            if !bin.is_empty() && size + length > policy.target_size {
                bins.push(std::mem::take(&mut bin));
                size = 0;
            }
            bin.push(i);
            size += length;
        }
        bins.push(bin);
        bins.retain(|b| b.len() > 1);
        for &i in bins.iter().flatten() {
            pooled[i] = true;
        }
    }
    let mut found: HashSet<&str> = HashSet::new();
    let mut loaded = HashMap::new();
    // Manifests that list a removed file and are in no merge bin: rewritten together into one (one per
    // content: data and delete manifests are never mixed).
    let mut touched = Vec::new();
    let mut touched_deletes = Vec::new();
    for (i, manifest) in manifests.iter().enumerate() {
        let data = manifest.content == ManifestContentType::Data;
        if plan.removed.is_empty() && !pooled[i] {
            continue;
        }
        let entries = manifest.load_manifest(table.file_io()).await?.entries().to_vec();
        let lists_removed = entries.iter().any(|e| e.is_alive() && plan.removed.contains(e.file_path()));
        if lists_removed && !pooled[i] {
            pooled[i] = true;
            if data { touched.push(i) } else { touched_deletes.push(i) }
        }
        if pooled[i] {
            if manifest.partition_spec_id != spec.spec_id() {
                return Err(Error::Invariant(format!(
                    "{}: manifest {} has partition spec {}, not the default {}",
                    table.identifier(),
                    manifest.manifest_path,
                    manifest.partition_spec_id,
                    spec.spec_id()
                )));
            }
            loaded.insert(i, entries);
        }
    }

    let mut bins: Vec<(Vec<usize>, ManifestContentType)> =
        bins.into_iter().map(|b| (b, ManifestContentType::Data)).collect();
    if !touched.is_empty() {
        bins.push((touched, ManifestContentType::Data));
    }
    if !touched_deletes.is_empty() {
        bins.push((touched_deletes, ManifestContentType::Deletes));
    }
    let location = metadata.location();
    let mut written = Vec::new();
    let mut counter = 0;
    let mut new_writer = |content: ManifestContentType| -> Result<ManifestWriter> {
        counter += 1;
        let path = format!("{location}/metadata/floe-replace-{snapshot_id}-m{counter}.avro");
        written.push(path.clone());
        let output = table.file_io().new_output(&path)?;
        let builder = ManifestWriterBuilder::new(output, Some(snapshot_id), schema.clone(), spec.as_ref().clone());
        Ok(match content {
            ManifestContentType::Data => builder.build_v2_data(),
            ManifestContentType::Deletes => builder.build_v2_deletes(),
        })
    };
    let mut summary = SnapshotSummaryCollector::default();
    // Carried as they are, except manifests left with no live file by an earlier replace.
    let dead = |m: &ManifestFile| m.added_files_count == Some(0) && m.existing_files_count == Some(0);
    let mut out: Vec<ManifestFile> =
        manifests.iter().enumerate().filter(|(i, m)| !pooled[*i] && !dead(m)).map(|(_, m)| m.clone()).collect();
    let mut removed_files = 0u64;
    for (bin, content) in &bins {
        let mut writer = new_writer(*content)?;
        for i in bin {
            for entry in &loaded[i] {
                if !entry.is_alive() {
                    continue; // deletions of earlier snapshots are not carried into a rewritten manifest
                }
                let seq = entry.sequence_number.ok_or_else(|| missing(table, entry.file_path()))?;
                let file_seq = entry.file_sequence_number.or(Some(seq));
                let file = entry.data_file().clone();
                if plan.removed.contains(entry.file_path()) {
                    found.insert(entry.file_path());
                    summary.remove_file(&file, schema.clone(), spec.clone());
                    removed_files += 1;
                    writer.add_delete_file(file, seq, file_seq)?;
                } else {
                    let added_by = entry.snapshot_id.ok_or_else(|| missing(table, entry.file_path()))?;
                    writer.add_existing_file(file, added_by, seq, file_seq)?;
                }
            }
        }
        out.push(writer.write_manifest_file().await?);
    }
    if removed_files as usize != plan.removed.len() || found.len() != plan.removed.len() {
        let gone: Vec<&String> = plan.removed.iter().filter(|p| !found.contains(p.as_str())).collect();
        return Err(Error::Invariant(format!(
            "{}: files to replace are not live in snapshot {}: {gone:?}",
            table.identifier(),
            current.snapshot_id()
        )));
    }
    if !plan.added.is_empty() {
        let mut writer = new_writer(ManifestContentType::Data)?;
        for file in &plan.added {
            if file.content_type() != DataContentType::Data {
                return Err(Error::Invariant(format!("{}: a replace adds data files only", file.file_path())));
            }
            summary.add_file(file, schema.clone(), spec.clone());
            writer.add_file(file.clone(), -1)?; // sequence number inherited from the new snapshot
        }
        out.push(writer.write_manifest_file().await?);
    }

    let list_path = format!("{location}/metadata/snap-{snapshot_id}-1-floe-replace.avro");
    written.push(list_path.clone());
    let file = table.file_io().new_output(&list_path)?.writer().await?;
    let mut list = ManifestListWriter::v2(file, snapshot_id, Some(current.snapshot_id()), sequence_number);
    let manifests_after = out.len();
    list.add_manifests(out.into_iter())?;
    list.close().await?;

    let mut properties = plan.properties.clone();
    properties.extend(totals(&current.summary().additional_properties, summary.build()));
    let timestamp = chrono::Utc::now().timestamp_millis().max(metadata.last_updated_ms());
    let snapshot = Snapshot::builder()
        .with_manifest_list(list_path)
        .with_snapshot_id(snapshot_id)
        .with_parent_snapshot_id(Some(current.snapshot_id()))
        .with_sequence_number(sequence_number)
        .with_summary(Summary { operation: Operation::Replace, additional_properties: properties })
        .with_schema_id(metadata.current_schema_id())
        .with_timestamp_ms(timestamp)
        .build();
    let reference = SnapshotReference::new(snapshot_id, SnapshotRetention::branch(None, None, None));
    let new_metadata = metadata
        .clone()
        .into_builder(table.metadata_location().map(str::to_string))
        .add_snapshot(snapshot)?
        .set_ref(MAIN_BRANCH, reference)?
        .build()?
        .metadata;
    Ok(Replacement { metadata: new_metadata, snapshot_id, manifests_before: manifests.len(), manifests_after, written })
}

fn missing(table: &Table, path: &str) -> Error {
    Error::Invariant(format!("{}: manifest entry {path} has no snapshot id or sequence number", table.identifier()))
}

/// A snapshot id from the parent and the plan (stable across retries of the same plan), positive and unused.
fn snapshot_id(metadata: &TableMetadata, parent: i64, plan: &ReplacePlan) -> i64 {
    let mut removed: Vec<&String> = plan.removed.iter().collect();
    removed.sort();
    let mut key = format!("replace\n{parent}\n");
    for p in removed.iter().map(|p| p.as_str()).chain(plan.added.iter().map(|f| f.file_path())) {
        key.push_str(p);
        key.push('\n');
    }
    unused_snapshot_id(metadata, key.as_bytes())
}

/// A positive snapshot id derived from `key` (stable across retries of the same plan) that `metadata` does not use.
pub(crate) fn unused_snapshot_id(metadata: &TableMetadata, key: &[u8]) -> i64 {
    let mut id = (hash64(key) & (i64::MAX as u64)) as i64;
    while id == 0 || metadata.snapshot_by_id(id).is_some() {
        id = (hash64(&id.to_le_bytes()) & (i64::MAX as u64)) as i64;
    }
    id
}

/// The summary totals after a snapshot floe builds (a replace or a row delta): the parent's, minus the removed and
/// plus the added files.
pub(crate) fn totals(parent: &HashMap<String, String>, changes: HashMap<String, String>) -> HashMap<String, String> {
    let get = |m: &HashMap<String, String>, k: &str| m.get(k).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
    let mut out = changes.clone();
    for (total, added, removed) in [
        ("total-data-files", "added-data-files", "deleted-data-files"),
        ("total-records", "added-records", "deleted-records"),
        ("total-files-size", "added-files-size", "removed-files-size"),
        ("total-delete-files", "added-delete-files", "removed-delete-files"),
        ("total-position-deletes", "added-position-deletes", "removed-position-deletes"),
        ("total-equality-deletes", "added-equality-deletes", "removed-equality-deletes"),
    ] {
        let value = get(parent, total) + get(&changes, added) - get(&changes, removed);
        out.insert(total.to_string(), value.max(0).to_string());
    }
    out
}

/// Commit `replacement` (built on `table`); see [`crate::catalog::commit_metadata`].
pub async fn commit(
    swap: &dyn MetadataSwap,
    table: &Table,
    replacement: Replacement,
) -> Result<std::result::Result<Table, iceberg::Error>> {
    crate::catalog::commit_metadata(swap, table, replacement.metadata).await
}

#[cfg(test)]
#[path = "replace/tests.rs"]
mod tests;
