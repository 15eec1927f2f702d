//! A row-delta snapshot, built on iceberg-rust's spec APIs (0.10.1 has neither a row-delta action nor a
//! position-delete writer): new data files and position-delete files committed together.
//!
//! - **Position-delete files** ([`write_position_deletes`]): Parquet with the spec's `file_path` (field id
//!   2147483546) and `pos` (2147483545) columns, sorted by path then position, one file per partition of the
//!   data files they delete from, carrying that partition and `file_path` bounds (readers such as PyIceberg
//!   and Athena match a delete file to data files by partition and those bounds). A position delete applies to
//!   data files whose data sequence number is at most its own, so rows added by the same snapshot can be
//!   deleted by it (a change replaced within one commit).
//! - **Manifests**: every manifest of the current snapshot carried as it is, one new data manifest and one new
//!   delete manifest, entries inheriting the new sequence number.
//! - **Summary**: Iceberg's operation (`append` without deletes, `delete` without data, else `overwrite`), its
//!   added counts and totals, and the caller's properties (floe's positions).
//! - **Names** derive from the compactor run, the parent snapshot and the plan: a retry of the same plan writes
//!   the same files with the same bytes, and no two compactors, nor two plans on different parents, share a name.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use iceberg::spec::{
    DataContentType, DataFile, DataFileBuilder, DataFileFormat, Datum, MAIN_BRANCH, ManifestListWriter,
    ManifestWriterBuilder, Operation, Snapshot, SnapshotReference, SnapshotRetention, SnapshotSummaryCollector, Struct,
    Summary, TableMetadata,
};
use iceberg::table::Table;
use parquet::arrow::PARQUET_FIELD_ID_META_KEY;

use super::deletes::{DELETE_FILE_PATH_ID, DELETE_POS_ID};
use super::replace::{totals, unused_snapshot_id};
use crate::error::{Error, Result};
use crate::hash::hash64;
use crate::table::writer::write_parquet_file;

/// Positions to delete from the data files of one partition.
#[derive(Debug, Clone)]
pub struct PartitionDeletes {
    pub partition: Struct,
    /// (data file path, row position); sorted and written once each by [`write_position_deletes`].
    pub positions: Vec<(String, i64)>,
}

/// Write one position-delete file per partition under `location/data`, named after `name` (unique per plan and
/// parent snapshot). Returns their Iceberg records.
pub async fn write_position_deletes(
    table: &Table,
    name: &str,
    deletes: Vec<PartitionDeletes>,
) -> Result<Vec<DataFile>> {
    let metadata = table.metadata();
    let spec_id = metadata.default_partition_spec_id();
    let schema = Arc::new(Schema::new(vec![
        Field::new("file_path", DataType::Utf8, false).with_metadata(field_id(DELETE_FILE_PATH_ID)),
        Field::new("pos", DataType::Int64, false).with_metadata(field_id(DELETE_POS_ID)),
    ]));
    let mut files = Vec::new();
    for (n, mut part) in deletes.into_iter().filter(|d| !d.positions.is_empty()).enumerate() {
        part.positions.sort();
        part.positions.dedup();
        let paths: ArrayRef = Arc::new(StringArray::from_iter_values(part.positions.iter().map(|(p, _)| p.as_str())));
        let positions: ArrayRef = Arc::new(Int64Array::from_iter_values(part.positions.iter().map(|(_, p)| *p)));
        let batch = RecordBatch::try_new(schema.clone(), vec![paths, positions])?;
        let location = format!("{}/data/{name}-{n:05}-deletes.parquet", metadata.location());
        let size = write_parquet_file(table.file_io(), &location, &batch).await?;
        let (first, last) = (&part.positions[0], &part.positions[part.positions.len() - 1]);
        let mut file = DataFileBuilder::default();
        file.content(DataContentType::PositionDeletes)
            .file_path(location)
            .file_format(DataFileFormat::Parquet)
            .partition(part.partition)
            .partition_spec_id(spec_id)
            .record_count(part.positions.len() as u64)
            .file_size_in_bytes(size)
            .lower_bounds(HashMap::from([
                (DELETE_FILE_PATH_ID, Datum::string(&first.0)),
                (DELETE_POS_ID, Datum::long(part.positions.iter().map(|(_, p)| *p).min().unwrap_or(0))),
            ]))
            .upper_bounds(HashMap::from([
                (DELETE_FILE_PATH_ID, Datum::string(&last.0)),
                (DELETE_POS_ID, Datum::long(part.positions.iter().map(|(_, p)| *p).max().unwrap_or(0))),
            ]));
        files.push(file.build().map_err(|e| Error::Invariant(format!("position-delete file record: {e}")))?);
    }
    Ok(files)
}

fn field_id(id: i32) -> HashMap<String, String> {
    HashMap::from([(PARQUET_FIELD_ID_META_KEY.to_string(), id.to_string())])
}

/// What a row-delta snapshot adds.
#[derive(Debug, Default)]
pub struct RowDelta {
    pub data: Vec<DataFile>,
    /// Position-delete files ([`write_position_deletes`]).
    pub deletes: Vec<DataFile>,
    /// Added to the summary (floe's positions).
    pub properties: HashMap<String, String>,
    /// The compactor run (part of every name the snapshot writes, see [`plan_name`]).
    pub run: u64,
}

/// A name for what a plan writes: the compactor run, the parent snapshot and the paths it adds. Two compactors
/// planning the same commit on the same parent write different objects (one may already have committed its own
/// when the other, losing the race, deletes what it wrote).
pub fn plan_name(table: &Table, run: u64, paths: impl Iterator<Item = String>) -> String {
    let mut key = format!("rowdelta\n{run}\n{:?}\n", table.metadata().current_snapshot_id());
    for p in paths {
        key.push_str(&p);
        key.push('\n');
    }
    format!("floe-rowdelta-{:016x}", hash64(key.as_bytes()))
}

/// The table's metadata with a snapshot adding `delta` on its current snapshot (manifests and the manifest
/// list written; nothing committed).
pub async fn build(table: &Table, delta: &RowDelta) -> Result<TableMetadata> {
    let metadata = table.metadata();
    let parent = metadata.current_snapshot();
    let parent_id = parent.map(|s| s.snapshot_id());
    let name = plan_name(table, delta.run, delta.data.iter().chain(&delta.deletes).map(|f| f.file_path().to_string()));
    let snapshot_id = unused_snapshot_id(metadata, name.as_bytes());
    let sequence_number = metadata.next_sequence_number();
    let schema = metadata.current_schema().clone();
    let spec = metadata.default_partition_spec().clone();
    let mut manifests = match parent {
        Some(s) => table.manifest_list_reader(s).load().await?.entries().to_vec(),
        None => Vec::new(),
    };
    let location = metadata.location();
    let mut summary = SnapshotSummaryCollector::default();
    for (files, content) in [(&delta.data, DataContentType::Data), (&delta.deletes, DataContentType::PositionDeletes)] {
        if files.is_empty() {
            continue;
        }
        let kind = if content == DataContentType::Data { "data" } else { "deletes" };
        let path = format!("{location}/metadata/{name}-{snapshot_id}-{kind}.avro");
        let output = table.file_io().new_output(&path)?;
        let builder = ManifestWriterBuilder::new(output, Some(snapshot_id), schema.clone(), spec.as_ref().clone());
        let mut writer =
            if content == DataContentType::Data { builder.build_v2_data() } else { builder.build_v2_deletes() };
        for file in files {
            if file.content_type() != content {
                return Err(Error::Invariant(format!("{}: expected {content:?} content", file.file_path())));
            }
            summary.add_file(file, schema.clone(), spec.clone());
            writer.add_file(file.clone(), -1)?; // sequence number inherited from the new snapshot
        }
        manifests.push(writer.write_manifest_file().await?);
    }
    let list_path = format!("{location}/metadata/snap-{snapshot_id}-1-{name}.avro");
    let file = table.file_io().new_output(&list_path)?.writer().await?;
    let mut list = ManifestListWriter::v2(file, snapshot_id, parent_id, sequence_number);
    list.add_manifests(manifests.into_iter())?;
    list.close().await?;

    let operation = match (delta.data.is_empty(), delta.deletes.is_empty()) {
        (_, true) => Operation::Append,
        (true, false) => Operation::Delete,
        (false, false) => Operation::Overwrite,
    };
    let mut properties = delta.properties.clone();
    let parent_summary = parent.map(|s| s.summary().additional_properties.clone()).unwrap_or_default();
    properties.extend(totals(&parent_summary, summary.build()));
    let timestamp = chrono::Utc::now().timestamp_millis().max(metadata.last_updated_ms());
    let snapshot = Snapshot::builder()
        .with_manifest_list(list_path)
        .with_snapshot_id(snapshot_id)
        .with_parent_snapshot_id(parent_id)
        .with_sequence_number(sequence_number)
        .with_summary(Summary { operation, additional_properties: properties })
        .with_schema_id(metadata.current_schema_id())
        .with_timestamp_ms(timestamp)
        .build();
    let reference = SnapshotReference::new(snapshot_id, SnapshotRetention::branch(None, None, None));
    Ok(metadata
        .clone()
        .into_builder(table.metadata_location().map(str::to_string))
        .add_snapshot(snapshot)?
        .set_ref(MAIN_BRANCH, reference)?
        .build()?
        .metadata)
}

#[cfg(test)]
#[path = "row_delta/tests.rs"]
mod tests;
