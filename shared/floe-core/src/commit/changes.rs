//! Change sets → the positions their changes delete: what the compactor commits, with the sets' new rows, as
//! one row delta ([`super::row_delta`]). Never equality deletes: every delete names a data file and a row.
//!
//! A *change set* is one staging step of a change stream: its data files (one new row per upserted key) and its
//! key file (every key it touched, with the operation, offset, Kafka timestamp and `order_by` value; see
//! [`crate::input::changes`]). For the change sets of one commit, in (source, offset) order:
//!
//! 1. **Collapse**: the last change of each key wins. Within a topic-partition that is Kafka order; between
//!    topic-partitions the greater `order_by` value, then the later Kafka timestamp, then the greater
//!    (topic, partition). Memory: one entry per distinct key of the commit (~100 bytes each).
//! 2. **New rows**: a row of the sets' data files whose key's winner is not that row (a later change in another
//!    set replaced or deleted it) is deleted by position in its new file, in the same snapshot.
//! 3. **Live rows**: every winning key deletes the row the table holds for it. Candidate files are the live data
//!    files whose key bounds (Iceberg column statistics) can hold one of the keys; only their key (and
//!    `order_by`) columns are read, a batch at a time. Rows already deleted by a live position-delete file are
//!    not counted. With `order_by`, a change older than the stored row (a smaller value) is dropped instead.
//!
//! Cost: proportional to the key columns of the candidate files. Keys spread over the whole key range make
//! every file a candidate (a full key-column scan per commit); keys that grow with time (sequences, time-ordered
//! ids) touch few files. Compaction keeps files and delete files few (see the README).

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};

use arrow_array::cast::AsArray;
use arrow_array::types::{Decimal128Type, Int32Type, Int64Type};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_row::{RowConverter, Rows, SortField};
use arrow_schema::DataType;
use futures::TryStreamExt;
use iceberg::io::FileIO;
use iceberg::spec::{DataFile, Datum, PrimitiveLiteral, Struct};
use iceberg::table::Table;

use super::deletes::LiveDeletes;
use super::key_scan::{KeyScan, Probe};
use super::row_delta::PartitionDeletes;
use crate::backends::MetadataSwap;
use crate::error::{Error, Result};
use crate::input::changes::{OP_UPSERT, key_columns};
use crate::input::event::SourcePartition;
use crate::state::{StagedContent, StagedFile};
use crate::table::change_keys::read_key_file;
use crate::table::files::live_files_in;
use crate::table::layout::TableLayout;

/// One staging step of a change stream.
#[derive(Debug, Clone)]
pub struct ChangeSet {
    pub source: SourcePartition,
    pub first_offset: i64,
    pub data: Vec<DataFile>,
    /// The key file's location (`None`: the step touched no key, e.g. all its records were dead letters).
    pub keys: Option<String>,
}

/// What planning a commit of change sets found.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ChangeStats {
    /// Distinct keys the sets touched.
    pub keys: u64,
    /// Live data files whose key columns were read, of all live data files.
    pub files_read: u64,
    pub files_live: u64,
    /// Key-column rows read from them.
    pub rows_read: u64,
    /// Row groups of candidate files that the key column's bloom filter ruled out.
    pub row_groups_skipped: u64,
    /// Rows of the table the changes replace or delete.
    pub replaced: u64,
    /// New rows deleted in the same commit (a later change of their key in another set).
    pub superseded: u64,
    /// Changes dropped because the table's row has a greater `order_by` value.
    pub stale: u64,
}

/// The positions to delete, per partition, and what finding them cost.
#[derive(Debug, Default)]
pub struct ChangePlan {
    pub deletes: Vec<PartitionDeletes>,
    pub stats: ChangeStats,
}

/// The winning change of a key.
#[derive(Debug, Clone)]
struct Change {
    set: usize,
    upsert: bool,
    offset: i64,
    timestamp: Option<i64>,
    order: Option<i128>,
}

/// Commit a batch of staged change sets (data and key files of whole staging steps) into `table` as one row
/// delta whose summary carries `properties`: the swap's outcome (a conflict means the table moved; re-plan), the
/// position-delete files written for it (garbage unless it committed), and what planning found.
pub async fn commit_batch(
    swap: &dyn MetadataSwap,
    table: &Table,
    layout: &TableLayout,
    batch: &[StagedFile],
    data: Vec<DataFile>,
    properties: HashMap<String, String>,
    run: u64,
) -> Result<(std::result::Result<Table, iceberg::Error>, Vec<String>, ChangeStats)> {
    let mut sets: Vec<ChangeSet> = Vec::new();
    let mut data_files = data.into_iter();
    for f in batch {
        let same = sets.last().is_some_and(|s| s.source == f.source && s.first_offset == f.first_offset);
        if !same {
            sets.push(ChangeSet {
                source: f.source.clone(),
                first_offset: f.first_offset,
                data: Vec::new(),
                keys: None,
            });
        }
        let set = sets.last_mut().expect("pushed");
        match f.content {
            StagedContent::ChangeKeys => set.keys = Some(f.path.clone()),
            StagedContent::Data => {
                let file = data_files.next().ok_or_else(|| Error::Invariant("fewer data files than staged".into()))?;
                if file.file_path() != f.path {
                    return Err(Error::Invariant(format!(
                        "data file {} is not staged file {}",
                        file.file_path(),
                        f.path
                    )));
                }
                set.data.push(file);
            }
        }
    }
    sets.sort_by(|a, b| (&a.source, a.first_offset).cmp(&(&b.source, b.first_offset)));
    let planned = plan(table, layout, &sets).await?;
    let name = super::row_delta::plan_name(table, run, batch.iter().map(|f| f.path.clone()));
    let deletes = super::row_delta::write_position_deletes(table, &name, planned.deletes).await?;
    let written: Vec<String> = deletes.iter().map(|f| f.file_path().to_string()).collect();
    let data = sets.into_iter().flat_map(|s| s.data).collect();
    let delta = super::row_delta::RowDelta { data, deletes, properties, run };
    let metadata = super::row_delta::build(table, &delta).await?;
    let result = crate::catalog::commit_metadata(swap, table, metadata).await?;
    Ok((result, written, planned.stats))
}

/// Plan the deletes of committing `sets` (sorted by source and offset) into `table` (`layout` bound to it).
pub async fn plan(table: &Table, layout: &TableLayout, sets: &[ChangeSet]) -> Result<ChangePlan> {
    let keys = KeyColumns::new(layout)?;
    let file_io = table.file_io();
    let mut stats = ChangeStats::default();

    // 1. The winner of every key.
    let mut winners: HashMap<Box<[u8]>, Change> = HashMap::new();
    for (s, set) in sets.iter().enumerate() {
        let Some(location) = &set.keys else { continue };
        for batch in read_key_file(file_io, location).await? {
            let rows = keys.rows(&batch, |name| batch.column_by_name(name).cloned())?;
            let op = batch.column_by_name(key_columns::OP).map(|c| c.as_primitive::<Int32Type>().clone());
            let offset = batch.column_by_name(key_columns::OFFSET).map(|c| c.as_primitive::<Int64Type>().clone());
            let ts = batch.column_by_name(key_columns::TIMESTAMP).map(|c| c.as_primitive::<Int64Type>().clone());
            let (Some(op), Some(offset), Some(ts)) = (op, offset, ts) else {
                return Err(Error::Invariant(format!("key file {location} lacks floe's columns")));
            };
            let order = keys.order_values(&batch)?;
            for r in 0..batch.num_rows() {
                let change = Change {
                    set: s,
                    upsert: op.value(r) == OP_UPSERT,
                    offset: offset.value(r),
                    timestamp: ts.is_valid(r).then(|| ts.value(r)),
                    order: order.as_ref().and_then(|o| o[r]),
                };
                match winners.get_mut(rows.row(r).as_ref()) {
                    Some(current) => {
                        if wins(&change, current, sets) {
                            *current = change;
                        }
                    }
                    None => {
                        winners.insert(rows.row(r).as_ref().into(), change);
                    }
                }
            }
        }
    }
    stats.keys = winners.len() as u64;
    let mut deletes: HashMap<Struct, Vec<(String, i64)>> = HashMap::new();
    if winners.is_empty() {
        return Ok(ChangePlan { deletes: Vec::new(), stats });
    }

    // 2. New rows that lost to a later change; where each winning row is.
    let mut placed: HashMap<Box<[u8]>, (String, i64, Struct)> = HashMap::new();
    for (s, set) in sets.iter().enumerate() {
        for file in &set.data {
            let scan = keys.scan(file_io, file, None).await?;
            for &(rg, start) in &scan.groups {
                let mut pos = start;
                let mut batches = scan.row_group(rg).await?;
                while let Some(batch) = batches.try_next().await? {
                    let rows = keys.rows(&batch, |name| batch.column_by_name(name).cloned())?;
                    for r in 0..batch.num_rows() {
                        let key = rows.row(r);
                        let winner = winners.get(key.as_ref()).ok_or_else(|| {
                            let path = file.file_path();
                            Error::Invariant(format!("{path}: a row's key is not in its change set's key file"))
                        })?;
                        let path = file.file_path().to_string();
                        if winner.set == s && winner.upsert {
                            placed.insert(key.as_ref().into(), (path, pos, file.partition().clone()));
                        } else {
                            stats.superseded += 1;
                            deletes.entry(file.partition().clone()).or_default().push((path, pos));
                        }
                        pos += 1;
                    }
                }
            }
        }
    }

    // 3. The table's rows of the winning keys.
    let manifests = match table.metadata().current_snapshot() {
        Some(s) => table.manifest_list_reader(s).load().await?.entries().to_vec(),
        None => Vec::new(),
    };
    let live = live_files_in(table, &manifests).await?;
    stats.files_live = live.len() as u64;
    let bounds = FirstKeyBounds::new(&keys, &winners)?;
    let mut found: Vec<Found> = Vec::new();
    for (f, file) in live.iter().enumerate() {
        if !bounds.may_hold(file) {
            continue;
        }
        let scan = keys.scan(file_io, file, bounds.values.as_deref()).await?;
        stats.row_groups_skipped += scan.skipped as u64;
        if scan.groups.is_empty() {
            continue;
        }
        stats.files_read += 1;
        for &(rg, start) in &scan.groups {
            let mut pos = start;
            let mut batches = scan.row_group(rg).await?;
            while let Some(batch) = batches.try_next().await? {
                stats.rows_read += batch.num_rows() as u64;
                let rows = keys.rows(&batch, |name| batch.column_by_name(name).cloned())?;
                let order = keys.order_values(&batch)?;
                for r in 0..batch.num_rows() {
                    if winners.contains_key(rows.row(r).as_ref()) {
                        let order = order.as_ref().and_then(|o| o[r]);
                        found.push(Found { file: f, pos: pos + r as i64, key: rows.row(r).as_ref().into(), order });
                    }
                }
                pos += batch.num_rows() as i64;
            }
        }
    }
    if !found.is_empty() {
        let touched: HashSet<&str> = found.iter().map(|f| live[f.file].file_path()).collect();
        let deleted = LiveDeletes::load(table, &manifests, Some(&touched)).await?;
        if deleted.equality > 0 {
            return Err(Error::TableMismatch {
                table: table.identifier().to_string(),
                message: format!(
                    "{} equality-delete files (another engine's): floe writes and applies position deletes only",
                    deleted.equality
                ),
            });
        }
        for Found { file: f, pos, key, order: stored_order } in found {
            let file = &live[f];
            if deleted.is_deleted(file.file_path(), pos) {
                continue; // an earlier commit deleted this row already
            }
            let winner = winners.get_mut(&key).expect("found by key");
            if keys.order.is_some() && stored_order > winner.order {
                // The table's row is newer than the change: the change is dropped (its new row deleted).
                stats.stale += 1;
                if let Some((path, new_pos, partition)) = placed.remove(&key) {
                    deletes.entry(partition).or_default().push((path, new_pos));
                }
                continue;
            }
            stats.replaced += 1;
            deletes.entry(file.partition().clone()).or_default().push((file.file_path().to_string(), pos));
        }
    }
    let deletes = deletes.into_iter().map(|(partition, positions)| PartitionDeletes { partition, positions }).collect();
    Ok(ChangePlan { deletes, stats })
}

/// A table row holding one of the winning keys: its file (index into the live files), position, key and
/// `order_by` value.
struct Found {
    file: usize,
    pos: i64,
    key: Box<[u8]>,
    order: Option<i128>,
}

/// Whether `new` beats `current` for the same key (see the module docs).
fn wins(new: &Change, current: &Change, sets: &[ChangeSet]) -> bool {
    let (a, b) = (&sets[new.set].source, &sets[current.set].source);
    if a == b {
        return (new.set, new.offset) > (current.set, current.offset);
    }
    let by_order = new.order.cmp(&current.order);
    let by_time = new.timestamp.cmp(&current.timestamp);
    let by_source = (&a.topic, a.partition).cmp(&(&b.topic, b.partition));
    by_order.then(by_time).then(by_source) == Ordering::Greater
}

/// The key columns of a table: their field ids and types, and the row encoding that compares keys.
struct KeyColumns {
    names: Vec<String>,
    ids: Vec<i32>,
    types: Vec<DataType>,
    converter: RowConverter,
    /// `order_by`: name, field id, type.
    order: Option<(String, i32, DataType)>,
}

impl KeyColumns {
    fn new(layout: &TableLayout) -> Result<KeyColumns> {
        let column = |name: &str| -> Result<(i32, DataType)> {
            let field = layout.schema.field_by_name(name).ok_or_else(|| Error::TableMismatch {
                table: layout.name.to_string(),
                message: format!("the table has no column `{name}` (a primary-key or order_by column)"),
            })?;
            let arrow = layout.arrow_schema.field_with_name(name)?;
            Ok((field.id, arrow.data_type().clone()))
        };
        let (mut ids, mut types) = (Vec::new(), Vec::new());
        for k in &layout.primary_key {
            let (id, ty) = column(k)?;
            ids.push(id);
            types.push(ty);
        }
        let order = match &layout.order_by {
            Some(o) => {
                let (id, ty) = column(o)?;
                Some((o.clone(), id, ty))
            }
            None => None,
        };
        let converter = RowConverter::new(types.iter().map(|t| SortField::new(t.clone())).collect())?;
        Ok(KeyColumns { names: layout.primary_key.clone(), ids, types, converter, order })
    }

    /// The encoded keys of a batch (columns looked up by name, cast to the table's types).
    fn rows(&self, batch: &RecordBatch, column: impl Fn(&str) -> Option<ArrayRef>) -> Result<Rows> {
        let mut arrays = Vec::with_capacity(self.names.len());
        for (name, ty) in self.names.iter().zip(&self.types) {
            let array = column(name).ok_or_else(|| {
                Error::Invariant(format!("a change file has no key column `{name}` ({} columns)", batch.num_columns()))
            })?;
            arrays.push(if array.data_type() == ty { array } else { arrow_cast::cast(&array, ty)? });
        }
        Ok(self.converter.convert_columns(&arrays)?)
    }

    /// The `order_by` values of a batch as i128 (integers, dates, timestamps, decimals' unscaled values).
    fn order_values(&self, batch: &RecordBatch) -> Result<Option<Vec<Option<i128>>>> {
        let Some((name, _, ty)) = &self.order else { return Ok(None) };
        let Some(array) = batch.column_by_name(name) else { return Ok(None) };
        Ok(Some(match ty {
            DataType::Decimal128(..) => {
                let a = arrow_cast::cast(array, ty)?;
                a.as_primitive::<Decimal128Type>().iter().collect()
            }
            _ => {
                let a = arrow_cast::cast(array, &DataType::Int64)?;
                a.as_primitive::<Int64Type>().iter().map(|v| v.map(i128::from)).collect()
            }
        }))
    }

    /// The key (and order) columns of a data file, row group by row group; with `probe`, only the row groups
    /// whose bloom filter may hold one of the first key column's values.
    async fn scan(&self, file_io: &FileIO, file: &DataFile, probe: Option<&[Probe]>) -> Result<KeyScan> {
        let wanted: Vec<i32> = self.ids.iter().copied().chain(self.order.as_ref().map(|o| o.1)).collect();
        let probe = probe.map(|values| (self.ids[0], values));
        KeyScan::open(file_io, file, &wanted, |id| self.name_of(id).to_string(), probe).await
    }

    fn name_of(&self, id: i32) -> &str {
        match self.ids.iter().position(|i| *i == id) {
            Some(i) => &self.names[i],
            None => self.order.as_ref().map_or("", |o| o.0.as_str()),
        }
    }
}

/// The first key column's values of the winning keys, sorted: a live file whose bounds for that column hold
/// none of them holds none of the keys.
struct FirstKeyBounds {
    id: i32,
    /// `None`: the key type has no comparable bound here; every file is a candidate.
    values: Option<Vec<Probe>>,
}

impl FirstKeyBounds {
    fn new(keys: &KeyColumns, winners: &HashMap<Box<[u8]>, Change>) -> Result<FirstKeyBounds> {
        let rows =
            keys.converter.from_binary(arrow_array::BinaryArray::from_iter_values(winners.keys().map(|k| &k[..])));
        let columns = keys.converter.convert_rows(&rows)?;
        let values: Option<Vec<Probe>> = (0..columns[0].len()).map(|r| array_bound(&columns[0], r)).collect();
        let values = values.map(|mut v| {
            v.sort();
            v.dedup();
            v
        });
        Ok(FirstKeyBounds { id: keys.ids[0], values })
    }

    fn may_hold(&self, file: &DataFile) -> bool {
        let Some(values) = &self.values else { return true };
        let lower = file.lower_bounds().get(&self.id).and_then(datum_bound);
        let upper = file.upper_bounds().get(&self.id).and_then(datum_bound);
        let start = match &lower {
            Some(l) => values.partition_point(|v| v < l),
            None => 0,
        };
        match (values.get(start), &upper) {
            (None, _) => false,
            (Some(v), Some(u)) => v <= u,
            (Some(_), None) => true,
        }
    }
}

fn datum_bound(d: &Datum) -> Option<Probe> {
    Some(match d.literal() {
        PrimitiveLiteral::Int(v) => Probe::Int(i128::from(*v)),
        PrimitiveLiteral::Long(v) => Probe::Int(i128::from(*v)),
        PrimitiveLiteral::Int128(v) => Probe::Int(*v),
        PrimitiveLiteral::String(s) => Probe::Bytes(s.as_bytes().to_vec()),
        PrimitiveLiteral::Binary(b) => Probe::Bytes(b.clone()),
        _ => return None,
    })
}

/// A key value as a [`Bound`] (key values are never null).
fn array_bound(array: &ArrayRef, r: usize) -> Option<Probe> {
    Some(match array.data_type() {
        DataType::Int32 | DataType::Date32 => Probe::Int(i128::from(array.as_primitive::<Int32Type>().value(r))),
        DataType::Int64 | DataType::Timestamp(..) => {
            let a = arrow_cast::cast(&array.slice(r, 1), &DataType::Int64).ok()?;
            Probe::Int(i128::from(a.as_primitive::<Int64Type>().value(0)))
        }
        DataType::Decimal128(..) => Probe::Int(array.as_primitive::<Decimal128Type>().value(r)),
        DataType::Utf8 => Probe::Bytes(array.as_string::<i32>().value(r).as_bytes().to_vec()),
        DataType::LargeUtf8 => Probe::Bytes(array.as_string::<i64>().value(r).as_bytes().to_vec()),
        DataType::LargeBinary => Probe::Bytes(array.as_binary::<i64>().value(r).to_vec()),
        DataType::Binary => Probe::Bytes(array.as_binary::<i32>().value(r).to_vec()),
        _ => return None,
    })
}

#[cfg(test)]
#[path = "changes/tests.rs"]
mod tests;
