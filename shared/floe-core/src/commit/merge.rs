//! Compact on commit: before staged files are first committed, the small ones of each Iceberg partition are
//! bin-packed into files near the table's target size, and the merged files are committed in their place, so
//! readers never see invocation-sized files.
//!
//! - **Planning** ([`pack`]) is pure: files are grouped by partition value; files below
//!   [`MergePolicy::small_below`] are packed greedily, in ledger order (oldest first), into bins of at most the
//!   target size. A bin of one file is left alone, as are files already near the target.
//! - **Merging** ([`merge`]) streams every input's record batches, one row group at a time, through one rolling
//!   writer, so memory holds a row group, never a partition. The outputs are named after the inputs
//!   and the run (`floe-merged-<hash of the input paths>-<run>-NNNNN.parquet`), so concurrent compactors never
//!   write the same object; a run that lost a commit race deletes the merged files it will not commit.
//! - **Exactly once** is unchanged: the merged files are committed in the same snapshot, with the same advanced
//!   source positions, as the staged files would have been. The inputs were never committed (they are still
//!   pending by the positions), so once the commit is durable nothing can reference them: the compactor deletes
//!   them, then forgets them in the ledger. A run that stopped in between finds them covered by the positions
//!   but not added by the commit that covers them ([`merged_away`]), and finishes the cleanup.

use std::collections::{BTreeMap, HashMap, HashSet};

use futures::TryStreamExt;
use iceberg::io::FileIO;
use iceberg::spec::{DataFile, ManifestStatus, Struct};
use iceberg::table::Table;

use arrow_array::BooleanArray;
use arrow_select::filter::filter_record_batch;

use super::deletes::LiveDeletes;
use super::positions::position_history;
use crate::error::{Error, Result};
use crate::hash::hash64;
use crate::state::StagedFile;
use crate::table::reader::data_file_batches;
use crate::table::writer::{PartitionWriter, TableWriter};

/// File-name prefix of merged files.
pub const MERGED_PREFIX: &str = "floe-merged";

/// When staged files are merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MergePolicy {
    /// Bins are filled up to this many input bytes (the table's target file size).
    pub target_size: u64,
    /// Only files smaller than this are merged; larger ones are committed as they are.
    pub small_below: u64,
}

impl MergePolicy {
    /// Merge files under three quarters of `target_size` into bins of `target_size`: a file that is already
    /// that large gains little from a rewrite.
    pub fn for_target(target_size: u64) -> MergePolicy {
        MergePolicy { target_size, small_below: target_size / 4 * 3 }
    }
}

/// Bins of files to merge, as indices into `files`: each bin has at least two files of one partition, in the
/// order of `files`. Files in no bin are committed as they are.
pub fn pack(files: &[DataFile], policy: &MergePolicy) -> Vec<Vec<usize>> {
    // Partitions in order of first appearance, so the plan follows the ledger's (oldest first) order.
    let mut groups: Vec<(&Struct, Vec<usize>)> = Vec::new();
    let mut index: HashMap<&Struct, usize> = HashMap::new();
    for (i, f) in files.iter().enumerate() {
        if f.file_size_in_bytes() >= policy.small_below {
            continue;
        }
        let g = *index.entry(f.partition()).or_insert_with(|| {
            groups.push((f.partition(), Vec::new()));
            groups.len() - 1
        });
        groups[g].1.push(i);
    }
    let mut bins = Vec::new();
    for (_, members) in groups {
        let mut bin: Vec<usize> = Vec::new();
        let mut size = 0u64;
        for i in members {
            let s = files[i].file_size_in_bytes();
            if !bin.is_empty() && size + s > policy.target_size {
                bins.push(std::mem::take(&mut bin));
                size = 0;
            }
            bin.push(i);
            size += s;
        }
        bins.push(bin);
    }
    bins.retain(|b| b.len() > 1);
    bins
}

/// The name prefix of the files merged from `inputs` by compactor run `run`: the input paths and the run.
///
/// The run is part of the name so that two compactors merging the same files never write the same object: one
/// of them may already have committed it while the other is still writing (on a local file system that would
/// truncate a committed file). Within a run, a retry after a lost commit race reuses its merged files.
pub fn merged_prefix(inputs: &[&DataFile], run: u64) -> String {
    let mut key = String::new();
    for f in inputs {
        key.push_str(f.file_path());
        key.push('\n');
    }
    format!("{MERGED_PREFIX}-{:016x}-{run:016x}", hash64(key.as_bytes()))
}

/// What merging one bin produced.
#[derive(Debug)]
pub struct Merged {
    /// The new data files (usually one; more when the inputs exceed the target size after all).
    pub files: Vec<DataFile>,
    pub bytes_read: u64,
    pub bytes_written: u64,
}

/// Merge `inputs` (one partition's data files, written for `writer`'s table) into new files near the target size.
pub async fn merge(writer: &TableWriter, file_io: &FileIO, inputs: &[&DataFile], run: u64) -> Result<Merged> {
    merge_applying(writer, file_io, inputs, run, &LiveDeletes::default()).await
}

/// [`merge`] without the rows `deletes` deletes from the inputs (a rewrite of a table with position deletes).
pub async fn merge_applying(
    writer: &TableWriter,
    file_io: &FileIO,
    inputs: &[&DataFile],
    run: u64,
    deletes: &LiveDeletes,
) -> Result<Merged> {
    let first = inputs.first().ok_or_else(|| Error::Invariant("a merge needs at least one input".into()))?;
    if let Some(other) = inputs.iter().find(|f| f.partition() != first.partition()) {
        return Err(Error::Invariant(format!(
            "merge inputs {} and {} are in different partitions",
            first.file_path(),
            other.file_path()
        )));
    }
    let mut out = writer.partition_writer(first.partition(), &merged_prefix(inputs, run)).await?;
    if let Err(e) = copy(&mut out, file_io, inputs, deletes).await {
        // E.g. a rival compactor committed these inputs and deleted them while this run read them: what this
        // merge started writing is deleted now, not left for orphan removal.
        let left = out.abandon().await;
        if !left.is_empty() {
            tracing::warn!(files = ?left, "could not delete the files of a failed merge; orphan removal will");
        }
        return Err(e);
    }
    let files = out.close().await?;
    let rows_in: u64 = inputs.iter().map(|f| f.record_count() - deletes.deleted(f.file_path()) as u64).sum();
    let rows_out: u64 = files.iter().map(|f| f.record_count()).sum();
    if rows_in != rows_out {
        return Err(Error::Invariant(format!(
            "merging {} files read {rows_in} rows but wrote {rows_out}",
            inputs.len()
        )));
    }
    Ok(Merged {
        bytes_read: inputs.iter().map(|f| f.file_size_in_bytes()).sum(),
        bytes_written: files.iter().map(|f| f.file_size_in_bytes()).sum(),
        files,
    })
}

/// Stream every input's batches into `out`, without the rows `deletes` deletes.
async fn copy(out: &mut PartitionWriter, file_io: &FileIO, inputs: &[&DataFile], deletes: &LiveDeletes) -> Result<()> {
    for input in inputs {
        let mut batches = data_file_batches(file_io, input.file_path(), input.file_size_in_bytes()).await?;
        let deleted = deletes.positions.get(input.file_path());
        let mut pos = 0i64;
        while let Some(batch) = batches.try_next().await? {
            let rows = batch.num_rows() as i64;
            let batch = match deleted {
                Some(d) if d.partition_point(|p| *p < pos) < d.partition_point(|p| *p < pos + rows) => {
                    let keep: BooleanArray = (pos..pos + rows).map(|p| Some(d.binary_search(&p).is_err())).collect();
                    filter_record_batch(&batch, &keep)?
                }
                _ => batch,
            };
            pos += rows;
            if batch.num_rows() > 0 {
                out.write(batch).await?;
            }
        }
    }
    Ok(())
}

/// Of `done` staged files (already covered by the committed positions), the paths that the commit covering them
/// did not add: inputs of a merge whose commit is durable but whose cleanup (delete, then mark) did not finish.
/// Only the manifests that commit added are read. A file whose commit has expired from the history is left
/// alone (orphan removal decides about it).
pub async fn merged_away(table: &Table, pipeline: &str, done: &[StagedFile]) -> Result<Vec<String>> {
    let history = position_history(table, pipeline)?;
    let mut by_commit: BTreeMap<i64, Vec<&StagedFile>> = BTreeMap::new();
    for f in done {
        if let Some(id) = history.covering(f) {
            by_commit.entry(id).or_default().push(f);
        }
    }
    let mut away = Vec::new();
    for (id, files) in by_commit {
        let added = added_paths(table, id).await?;
        away.extend(files.into_iter().filter(|f| !added.contains(f.path.as_str())).map(|f| f.path.clone()));
    }
    Ok(away)
}

/// The data files snapshot `snapshot_id` added.
async fn added_paths(table: &Table, snapshot_id: i64) -> Result<HashSet<String>> {
    let metadata = table.metadata();
    let Some(snapshot) = metadata.snapshot_by_id(snapshot_id) else {
        return Ok(HashSet::new());
    };
    let list = table.manifest_list_reader(snapshot).load().await?;
    let mut added = HashSet::new();
    for manifest in list.entries().iter().filter(|m| m.added_snapshot_id == snapshot_id) {
        for entry in manifest.load_manifest(table.file_io()).await?.entries() {
            if entry.status() == ManifestStatus::Added && entry.snapshot_id() == Some(snapshot_id) {
                added.insert(entry.file_path().to_string());
            }
        }
    }
    Ok(added)
}

#[cfg(test)]
#[path = "merge/tests.rs"]
mod tests;
