//! The live position deletes of a table's current snapshot: which rows of which data files they delete, and
//! which data files each delete file targets. What a change commit checks found rows against
//! ([`super::changes`]) and what a rewrite applies and retires ([`super::rewrite`]).
//!
//! Memory: 8 bytes per deleted position plus the paths; compaction rewrites data files with many deletes and
//! drops the delete files that only targeted them, which keeps this small.

use std::collections::{HashMap, HashSet};

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use futures::TryStreamExt;
use iceberg::io::FileIO;
use iceberg::spec::{DataContentType, DataFile, Datum, ManifestFile, ManifestStatus, PrimitiveLiteral};
use iceberg::table::Table;

use crate::error::{Error, Result};
use crate::table::reader::data_file_batches;

/// Field ids of a position-delete file's columns (Iceberg spec, reserved).
pub const DELETE_FILE_PATH_ID: i32 = 2147483546;
pub const DELETE_POS_ID: i32 = 2147483545;

/// Live delete files and the positions they delete.
#[derive(Debug, Default)]
pub struct LiveDeletes {
    /// Sorted, distinct deleted positions per data file path.
    pub positions: HashMap<String, Vec<i64>>,
    /// Each live position-delete file and the data file paths it targets.
    pub files: Vec<(DataFile, HashSet<String>)>,
    /// Live equality-delete files (another engine's): floe cannot apply them.
    pub equality: usize,
}

impl LiveDeletes {
    /// The deletes `manifests` (a snapshot's manifest list) list, reading only the delete files whose path
    /// bounds can target a path `wanted` accepts (all of them with `None`).
    pub async fn load(table: &Table, manifests: &[ManifestFile], wanted: Option<&HashSet<&str>>) -> Result<Self> {
        let mut out = LiveDeletes::default();
        for manifest in manifests.iter().filter(|m| m.content == iceberg::spec::ManifestContentType::Deletes) {
            let manifest = manifest.load_manifest(table.file_io()).await?;
            for entry in manifest.entries().iter().filter(|e| e.status() != ManifestStatus::Deleted) {
                match entry.content_type() {
                    DataContentType::PositionDeletes => {
                        let file = entry.data_file();
                        if wanted.is_some_and(|w| !may_target(file, w)) {
                            continue;
                        }
                        let targets = read_positions(table.file_io(), file, wanted, &mut out.positions).await?;
                        out.files.push((file.clone(), targets));
                    }
                    DataContentType::EqualityDeletes => out.equality += 1,
                    DataContentType::Data => {}
                }
            }
        }
        for positions in out.positions.values_mut() {
            positions.sort_unstable();
            positions.dedup();
        }
        Ok(out)
    }

    /// Whether row `pos` of `path` is deleted.
    pub fn is_deleted(&self, path: &str, pos: i64) -> bool {
        self.positions.get(path).is_some_and(|p| p.binary_search(&pos).is_ok())
    }

    /// How many rows of `path` are deleted.
    pub fn deleted(&self, path: &str) -> usize {
        self.positions.get(path).map_or(0, Vec::len)
    }
}

/// Whether a delete file's `file_path` bounds admit one of `paths`.
fn may_target(file: &DataFile, paths: &HashSet<&str>) -> bool {
    let bound = |b: &HashMap<i32, Datum>| match b.get(&DELETE_FILE_PATH_ID).map(Datum::literal) {
        Some(PrimitiveLiteral::String(s)) => Some(s.clone()),
        _ => None,
    };
    let (lower, upper) = (bound(file.lower_bounds()), bound(file.upper_bounds()));
    paths.iter().any(|p| lower.as_deref().is_none_or(|l| l <= *p) && upper.as_deref().is_none_or(|u| *p <= u))
}

/// Read a position-delete file into `out` (positions of the paths `wanted` accepts); the paths it targets.
async fn read_positions(
    file_io: &FileIO,
    file: &DataFile,
    wanted: Option<&HashSet<&str>>,
    out: &mut HashMap<String, Vec<i64>>,
) -> Result<HashSet<String>> {
    let mut stream = data_file_batches(file_io, file.file_path(), file.file_size_in_bytes()).await?;
    let mut targets = HashSet::new();
    while let Some(batch) = stream.try_next().await? {
        let (Some(path), Some(pos)) = (batch.column_by_name("file_path"), batch.column_by_name("pos")) else {
            return Err(Error::Invariant(format!("position-delete file {} lacks file_path/pos", file.file_path())));
        };
        let (path, pos) = (path.as_string::<i32>(), pos.as_primitive::<Int64Type>());
        for r in 0..batch.num_rows() {
            let p = path.value(r);
            if !targets.contains(p) {
                targets.insert(p.to_string());
            }
            if wanted.is_none_or(|w| w.contains(p)) {
                out.entry(p.to_string()).or_default().push(pos.value(r));
            }
        }
    }
    Ok(targets)
}
