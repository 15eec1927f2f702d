//! The ingest handler: MSK event → Parquet data files (target and dead-letter tables) → one atomic staging step
//! per topic-partition. It never commits a snapshot; the compactor commits what is staged. At cold start it
//! creates the tables it writes, or evolves them to take the pipeline file ([`crate::catalog::prepare`]): files
//! carry the table's field ids, so the table must know a column before any file holds it.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, RwLock};

use iceberg::spec::{DataFile, TableMetadata};
use serde::Serialize;
use tracing::{info, warn};

use crate::backends::Backends;
use crate::error::{Error, Result};
use crate::failpoint;
use crate::input::changes::ChangeDecoder;
use crate::input::dead_letter::dead_letter_batch;
use crate::input::decode::{Decoded, RecordDecoder};
use crate::input::discover::{apply, column_count, discover, from_table, merged};
#[cfg(feature = "sql")]
use crate::input::event::Problem;
use crate::input::event::{MskEvent, PartitionRecords, SourcePartition, SourceRecord, group_records_on};
use crate::input::framing::schema_of;
use crate::input::registry::{Resolved, SchemaId, SchemaRegistry, Schemas};
use crate::input::writer_columns::WriterColumns;
use crate::pipeline::{Evolve, Pipeline};
use crate::state::{StageRequest, StagedContent, StagedFile};
#[cfg(feature = "sql")]
use crate::stateful::outputs::Outputs;
use crate::table::change_keys::write_key_file;
use crate::table::layout::TableLayout;
use crate::table::writer::{TableWriter, file_prefix};

pub(crate) mod parallel;

/// What one invocation did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct IngestReport {
    /// Records in the event.
    pub records: u64,
    /// Bytes of record keys and values (decoded), a proxy for the event's payload size.
    pub input_bytes: u64,
    /// Records skipped because an earlier delivery already staged them.
    pub duplicates: u64,
    /// Rows written to the target table.
    pub rows: u64,
    /// Records written to the dead-letter table.
    pub dead_letters: u64,
    /// Rows dropped by output deduplication (records already seen within the horizon).
    pub deduplicated: u64,
    /// Rows that missed their window (written to late-records tables).
    pub late: u64,
    /// Data files staged (both tables) and their bytes.
    pub files: u64,
    pub bytes: u64,
    /// Keys deleted (change streams: their last change in the batch is a delete).
    pub deletes: u64,
    /// Changes replaced by a later change of the same key within the batch (change streams).
    pub collapsed: u64,
    /// Columns (at any depth) this invocation's evolution added to the target table for fields of its records
    /// (`evolve = "add-fields"`; 0 when another container added them first).
    pub columns_added: u64,
}

impl IngestReport {
    /// Accumulate another report (several events, or several partitions of one).
    pub fn add(&mut self, other: &IngestReport) {
        self.records += other.records;
        self.input_bytes += other.input_bytes;
        self.duplicates += other.duplicates;
        self.rows += other.rows;
        self.dead_letters += other.dead_letters;
        self.deduplicated += other.deduplicated;
        self.late += other.late;
        self.files += other.files;
        self.bytes += other.bytes;
        self.columns_added += other.columns_added;
        self.deletes += other.deletes;
        self.collapsed += other.collapsed;
    }
}

/// Ingest handler; build once per process and reuse across invocations. A cheap handle: clones share one
/// handler, which is how the partitions of an event run on tasks of their own ([`parallel`]).
#[derive(Clone)]
pub struct Ingestor(Arc<Shared>);

/// What the handles of one [`Ingestor`] share.
struct Shared {
    pipeline: Arc<Pipeline>,
    /// How records become target rows; replaced when automatic evolution adds columns.
    target: RwLock<Arc<Target>>,
    /// The target layout of the pipeline file as it is (a missing table is created from it).
    declared: TableLayout,
    /// Serialises automatic evolutions within this process.
    evolving: tokio::sync::Mutex<()>,
    /// Fields already reported as not addable (each is logged once per process).
    reported: Mutex<HashSet<String>>,
    backends: Backends,
    /// The registry's schemas, cached for the process (registry formats only).
    schemas: Option<Schemas>,
    /// The writer schemas whose fields the table has (`evolve = "registry"`).
    writer_columns: WriterColumns,
    dead_letter: TableWriter,
    /// The derived outputs (SQL, dedup, windows): only in builds with the `sql` feature.
    #[cfg(feature = "sql")]
    outputs: Outputs,
}

/// The target table's side of ingest: the pipeline's columns as they are now (the file's, plus what automatic
/// evolution added), their decoder and the writer bound to the table.
struct Target {
    pipeline: Pipeline,
    decoder: RecordDecoder,
    /// A change stream's decoder (`source.changes`); `None` for appends.
    changes: Option<ChangeDecoder>,
    writer: TableWriter,
}

impl Target {
    fn new(pipeline: Pipeline, layout: TableLayout, backends: &Backends) -> Result<Target> {
        let decoder = RecordDecoder::new(&pipeline, &layout)?;
        let changes = match &pipeline.changes {
            Some(c) => Some(ChangeDecoder::new(c, &pipeline.table.columns, layout.input.clone())?),
            None => None,
        };
        Ok(Target { pipeline, decoder, changes, writer: TableWriter::new(layout, backends.file_io.clone())? })
    }
}

/// Rows decoded from one partition's records: the rows and their records, the rejects, and for a change stream
/// the keys it touched.
struct Rows {
    decoded: Decoded,
    /// The record index of each row.
    records: Vec<usize>,
    keys: Option<arrow_array::RecordBatch>,
}

impl Target {
    fn decode(
        &self,
        source: &SourcePartition,
        records: &[SourceRecord],
        schemas: Option<(&Resolved, &str)>,
        report: &mut IngestReport,
    ) -> Result<Rows> {
        let Some(changes) = &self.changes else {
            let decoded = self.decoder.decode_with(source, records, schemas)?;
            let rejected: HashSet<usize> = decoded.rejects.iter().map(|(i, _)| *i).collect();
            let rows = (0..records.len()).filter(|i| !rejected.contains(i)).collect();
            return Ok(Rows { decoded, records: rows, keys: None });
        };
        let c = changes.decode(source, records)?;
        report.deletes = c.deletes;
        report.collapsed = c.collapsed;
        report.duplicates += c.skipped;
        let decoded = Decoded { batch: c.upserts, rejects: c.rejects };
        Ok(Rows { decoded, records: c.upsert_records, keys: c.keys })
    }
}

/// The columns a table with automatic evolution takes: the file's, what `table` has beyond them (added by other
/// containers or earlier runs), and `wanted`'s new fields unless the table took others meanwhile that leave no
/// room for them within `table.max_new_columns` (their records are then looked at again on the next batch).
fn effective(file: &Pipeline, table: &TableMetadata, wanted: Option<&Pipeline>) -> Pipeline {
    let Some(max_new_columns) = file.table.evolve.max_new_columns() else { return file.clone() };
    // Table columns that are declared ones under another name are not new: the column a file renames
    // (`renamed_from`), and, for an older file that names a renamed column by its former name, its new name.
    let former = crate::table::evolve::former_names(table);
    let schema = table.current_schema();
    let claimed: Vec<String> = (file.table.columns.iter())
        .filter(|c| schema.field_by_name(&c.name).is_none())
        .filter_map(|c| match &c.renamed_from {
            Some(from) => Some(from.clone()),
            None => schema.field_by_id(*former.get(&c.name)?).map(|f| f.name.clone()),
        })
        .collect();
    let known = apply(file, &from_table(&file.table.columns, schema, &claimed));
    let Some(wanted) = wanted else { return known };
    let theirs: Vec<_> = wanted.table.columns.iter().map(|c| (c.name.clone(), c.ty.clone())).collect();
    let with = apply(&known, &merged(&known.table.columns, &theirs));
    let room = column_count(&file.table.columns) + max_new_columns;
    if column_count(&with.table.columns) <= room { with } else { known }
}

/// The target table made ready for the columns [`effective`] chooses (re-chosen on the winner's metadata after a
/// lost race), and those columns.
async fn prepare_target(
    backends: &Backends,
    declared: &TableLayout,
    file: &Pipeline,
    wanted: Option<&Pipeline>,
) -> Result<(crate::catalog::Prepared, Pipeline)> {
    let warehouse = backends.warehouse.as_str();
    crate::catalog::prepare_with(backends.catalog.as_ref(), backends.swap.as_ref(), declared, |table| {
        let effective = effective(file, table, wanted);
        Ok((TableLayout::target(&effective, warehouse)?, effective))
    })
    .await
}

impl Ingestor {
    /// Build the handler: the tables created or evolved and their layouts bound to them, the JSON decoder, and
    /// the outputs' SQL plans with their reference tables loaded. A pipeline of a registry format needs
    /// [`Ingestor::with_registry`].
    pub async fn new(pipeline: Arc<Pipeline>, backends: &Backends) -> Result<Self> {
        Self::with_registry(pipeline, backends, None).await
    }

    /// [`Ingestor::new`] with the schema registry a registry format (`source.registry`) reads from.
    pub async fn with_registry(
        pipeline: Arc<Pipeline>,
        backends: &Backends,
        registry: Option<Arc<dyn SchemaRegistry>>,
    ) -> Result<Self> {
        pipeline.check_resolved()?;
        if pipeline.format.registry.is_some() && registry.is_none() {
            return Err(Error::Config {
                file: pipeline.file().to_string(),
                message: format!(
                    "format = \"{}\" reads schemas from a registry, and none was opened for this pipeline",
                    pipeline.format.value.name()
                ),
            });
        }
        #[cfg(not(feature = "sql"))]
        if let Some(o) = pipeline.outputs.first() {
            return Err(Error::Config {
                file: pipeline.file().to_string(),
                message: format!(
                    "output {} needs SQL, and this build has no SQL engine: deploy floe-ingest-sql \
                     (template parameter IngestBuild=sql)",
                    o.table
                ),
            });
        }
        let (warehouse, file_io) = (backends.warehouse.as_str(), backends.file_io.clone());
        let ready = |layout: TableLayout| async move {
            let prepared = crate::catalog::prepare(backends.catalog.as_ref(), backends.swap.as_ref(), &layout).await?;
            Ok::<_, Error>(prepared.layout)
        };
        let declared = TableLayout::target(&pipeline, warehouse)?;
        // With automatic evolution, the table's columns beyond the file's (other containers added them) are read too.
        let (prepared, effective) = prepare_target(backends, &declared, &pipeline, None).await?;
        let dead_letter = ready(TableLayout::dead_letter(&pipeline, warehouse)?).await?;
        #[cfg(feature = "sql")]
        let outputs = {
            let mut layouts = Vec::new();
            for o in &pipeline.outputs {
                layouts.push(ready(TableLayout::staged_for(&pipeline, o, warehouse)?).await?);
            }
            // The outputs' SQL reads the file's columns, whatever automatic evolution adds.
            let rows = declared.bind(prepared.table.metadata())?;
            Outputs::new(&pipeline, warehouse, &file_io, &rows, layouts).await?
        };
        // The compactor reads the outputs' columns from this record: it plans no SQL itself.
        crate::state::record_plan(&file_io, warehouse, &pipeline).await?;
        Ok(Ingestor(Arc::new(Shared {
            #[cfg(feature = "sql")]
            outputs,
            target: RwLock::new(Arc::new(Target::new(effective, prepared.layout, backends)?)),
            declared,
            evolving: tokio::sync::Mutex::new(()),
            reported: Mutex::new(HashSet::new()),
            backends: backends.clone(),
            schemas: registry.map(Schemas::new),
            writer_columns: WriterColumns::default(),
            dead_letter: TableWriter::new(dead_letter, file_io)?,
            pipeline,
        })))
    }

    pub fn pipeline(&self) -> &Pipeline {
        &self.0.pipeline
    }

    /// Handle one MSK event. An error means the whole event should be redelivered (it is then a no-op for
    /// every topic-partition already staged).
    pub async fn handle(&self, event: &MskEvent) -> Result<IngestReport> {
        self.handle_at(event, chrono::Utc::now().timestamp_millis()).await
    }

    /// [`Ingestor::handle`] at processing time `now_ms` (recorded for window watermarks' idle detection). The
    /// event's topic-partitions are staged concurrently, as many at a time as the process has CPUs
    /// ([`parallel::default_concurrency`]).
    pub async fn handle_at(&self, event: &MskEvent, now_ms: i64) -> Result<IngestReport> {
        let concurrency = parallel::default_concurrency();
        let groups = group_records_on(event, &self.0.pipeline.topics, concurrency)?;
        let jobs = groups.into_iter().map(|group| parallel::Job::new(self, group)).collect();
        let mut report = IngestReport::default();
        for part in parallel::run(jobs, now_ms, concurrency).await {
            report.add(&part?);
        }
        Ok(report)
    }

    /// Ingest one partition's records under the fences and ledger key `key` (see [`Shared::ingest_under`]).
    pub(crate) async fn ingest_under(&self, group: PartitionRecords, now_ms: i64, key: &str) -> Result<IngestReport> {
        self.0.ingest_under(group, now_ms, key).await
    }
}

impl Shared {
    async fn ingest_under(&self, mut group: PartitionRecords, now_ms: i64, key: &str) -> Result<IngestReport> {
        let pipeline = key;
        let input_bytes = SourceRecord::payload_bytes(&group.records);
        let mut report = IngestReport { records: group.records.len() as u64, input_bytes, ..Default::default() };
        let fence = self.backends.state.fence(pipeline, &group.source).await?;
        if let Some(next) = fence {
            report.duplicates = group.skip_below(next) as u64;
        }
        let (Some(first), Some(last)) = (group.records.first(), group.records.last()) else {
            info!(duplicates = report.duplicates, "all records already staged");
            return Ok(report);
        };
        let (first, last) = (first.offset, last.offset);

        let resolved = self.resolve_schemas(&group.records).await?;
        let (target, columns_added) = self.target_for(&group.records, resolved.as_ref()).await?;
        report.columns_added = columns_added;
        if target.pipeline.table.columns.is_empty() {
            // `evolve = "registry"` without declared columns, and no writer schema gave one: nothing to write.
            for r in group.records.iter_mut().filter(|r| r.problem.is_none()) {
                let reason = "the table has no columns yet: no field of the writer schema maps to a column (the \
                              skipped fields are logged)";
                r.problem = Some(crate::input::event::Problem { kind: "schema", reason: reason.into() });
            }
        }
        let schemas = resolved.as_ref().zip(self.schemas.as_ref()).map(|(r, s)| (r, s.describe()));
        // Mutable for the outputs' transform failures, which become dead letters (builds with `sql`).
        #[cfg_attr(not(feature = "sql"), allow(unused_mut))]
        let Rows { mut decoded, records: rows_records, keys } = target.decode(
            &group.source,
            &group.records,
            schemas.as_ref().map(|(r, d)| (*r, d.as_str())),
            &mut report,
        )?;
        let prefix = file_prefix(pipeline, &group.source.topic, group.source.partition, first, last);
        let mut staged = Vec::new();
        if let Some(batch) = decoded.batch {
            report.rows = batch.num_rows() as u64;
            #[cfg(feature = "sql")]
            if !self.outputs.runners.is_empty() {
                // Dedup and window state are updated here, before staging; a crash in between is harmless
                // because every state item is fenced by source position (see `stream_state`).
                let result = self
                    .outputs
                    .run(
                        self.backends.state.as_ref(),
                        &group.source,
                        &group.records,
                        &batch,
                        &rows_records,
                        last,
                        now_ms,
                    )
                    .await?;
                failpoint::hit(failpoint::INGEST_AFTER_STATE).await?;
                report.deduplicated = result.duplicates;
                report.late = result.late;
                for (index, rows) in result.batches {
                    let writer = &self.outputs.runners[index].writer;
                    let files = writer.write(rows, &prefix).await?;
                    staged.extend(self.staged(writer, key, &group.source, first, last, files)?);
                }
                let index_of: std::collections::HashMap<i64, usize> =
                    group.records.iter().enumerate().map(|(i, r)| (r.offset, i)).collect();
                for (offset, reason) in result.failures {
                    if let Some(i) = index_of.get(&offset) {
                        decoded.rejects.push((*i, Problem { kind: "transform", reason }));
                    }
                }
                decoded.rejects.sort_by_key(|(i, _)| *i);
            }
            let files = target.writer.write(batch, &prefix).await?;
            staged.extend(self.staged(&target.writer, key, &group.source, first, last, files)?);
        }
        #[cfg(not(feature = "sql"))]
        let _ = (rows_records, now_ms);
        if let Some(keys) = keys {
            // The keys this step touched, staged with its rows: the compactor deletes what they replace.
            let layout = target.writer.layout();
            let (path, file_size) = write_key_file(&self.backends.file_io, layout, &prefix, &keys).await?;
            staged.push(StagedFile {
                table: layout.name.to_string(),
                path,
                pipeline: pipeline.to_string(),
                source: group.source.clone(),
                first_offset: first,
                last_offset: last,
                record_count: keys.num_rows() as u64,
                file_size,
                data_file: String::new(),
                schema_id: Some(layout.schema.schema_id()),
                table_uuid: layout.table_uuid.clone(),
                content: StagedContent::ChangeKeys,
            });
        }
        if !decoded.rejects.is_empty() {
            report.dead_letters = decoded.rejects.len() as u64;
            for (i, p) in &decoded.rejects {
                warn!(offset = group.records[*i].offset, kind = p.kind, reason = %p.reason, "dead letter");
            }
            let layout = self.dead_letter.layout();
            let batch =
                dead_letter_batch(layout, &self.pipeline.name, &group.source, &group.records, &decoded.rejects)?;
            let files = self.dead_letter.write(batch, &prefix).await?;
            staged.extend(self.staged(&self.dead_letter, key, &group.source, first, last, files)?);
        }
        report.files = staged.len() as u64;
        report.bytes = staged.iter().map(|f| f.file_size).sum();
        failpoint::hit(failpoint::INGEST_AFTER_WRITE).await?;

        let request = StageRequest {
            pipeline: pipeline.to_string(),
            source: group.source.clone(),
            expected_fence: fence,
            next_fence: last + 1,
            first_offset: first,
            files: staged,
        };
        match self.backends.state.stage(&request).await {
            Ok(()) => {
                failpoint::hit(failpoint::INGEST_AFTER_STAGE).await?;
                info!(
                    first,
                    last,
                    rows = report.rows,
                    dead_letters = report.dead_letters,
                    files = report.files,
                    "staged"
                );
                Ok(report)
            }
            Err(Error::Conflict(message)) => {
                // A concurrent delivery of the same records won the race; if it covered ours, we are done.
                let now = self.backends.state.fence(pipeline, &group.source).await?;
                if now.is_some_and(|n| n > last) {
                    info!(first, last, "a concurrent delivery staged these records");
                    let (records, input_bytes) = (report.records, report.input_bytes);
                    Ok(IngestReport { records, input_bytes, duplicates: records, ..Default::default() })
                } else {
                    Err(Error::Conflict(message))
                }
            }
            Err(e) => Err(e),
        }
    }

    /// The writer schemas `records` name (registry formats; `None` for JSON), fetched once per process.
    async fn resolve_schemas(&self, records: &[SourceRecord]) -> Result<Option<Resolved>> {
        let (Some(schemas), Some(framing)) = (&self.schemas, self.pipeline.format.framing) else { return Ok(None) };
        let format = &self.pipeline.format;
        let keys = format.key.is_some_and(|k| k != crate::pipeline::ValueFormat::Json);
        let values = format.value != crate::pipeline::ValueFormat::Json;
        let named = |r: &SourceRecord| {
            let value = values.then(|| r.value.as_deref().and_then(|v| schema_of(framing, v))).flatten();
            let key = keys.then(|| r.key.as_deref().and_then(|k| schema_of(framing, k))).flatten();
            value.into_iter().chain(key)
        };
        let ids: std::collections::BTreeSet<SchemaId> = records.iter().flat_map(named).collect();
        Ok(Some(schemas.resolve(ids).await?))
    }

    /// The target side for `records`: as it is, or, with automatic evolution and fields in the records that the
    /// table lacks, after evolving the table to take them (how many columns that added, at any depth).
    async fn target_for(&self, records: &[SourceRecord], resolved: Option<&Resolved>) -> Result<(Arc<Target>, u64)> {
        let current = self.target.read().expect("target lock").clone();
        let used = |current: &Target| {
            column_count(&current.pipeline.table.columns) - column_count(&self.pipeline.table.columns)
        };
        let (found, merged_keys) = match (self.pipeline.table.evolve, resolved, self.pipeline.format.framing) {
            (Evolve::AddFields { max_new_columns }, _, _) => (
                discover(&current.pipeline.table.columns, records, max_new_columns.saturating_sub(used(&current))),
                vec![],
            ),
            (Evolve::Registry { .. }, Some(resolved), Some(framing)) => {
                let format = self.pipeline.format.value;
                let ((theirs, skipped), keys) = self.writer_columns.unmerged(format, framing, records, resolved);
                let mut found = merged(&current.pipeline.table.columns, &theirs);
                found.skipped = skipped;
                (found, keys)
            }
            _ => return Ok((current, 0)),
        };
        self.report_skipped(&found.skipped);
        if found.is_empty() {
            self.writer_columns.merged(merged_keys);
            return Ok((current, 0));
        }
        let _one_at_a_time = self.evolving.lock().await;
        let wanted = apply(&current.pipeline, &found);
        let (prepared, effective) =
            prepare_target(&self.backends, &self.declared, &self.pipeline, Some(&wanted)).await?;
        // Counted only when this invocation committed the evolution (else another container did).
        let grown =
            column_count(&effective.table.columns).saturating_sub(column_count(&current.pipeline.table.columns));
        let added = if prepared.changes.is_empty() { 0 } else { grown };
        info!(table = %self.declared.name, columns_added = added, changes = ?prepared.changes, "added the records' new fields");
        let target = Arc::new(Target::new(effective, prepared.layout, &self.backends)?);
        *self.target.write().expect("target lock") = target.clone();
        // Fields beyond table.max_new_columns are not added (logged once per writer schema): the schema counts as
        // merged either way, so later batches do not try the evolution again.
        if column_count(&target.pipeline.table.columns) < column_count(&wanted.table.columns) && !merged_keys.is_empty()
        {
            warn!(table = %self.declared.name, "the writer schema's new fields exceed table.max_new_columns; not added");
        }
        self.writer_columns.merged(merged_keys);
        Ok((target, added as u64))
    }

    /// Log each field that cannot become a column once per process (they recur in every batch).
    fn report_skipped(&self, skipped: &[String]) {
        if skipped.is_empty() {
            return;
        }
        let mut reported = self.reported.lock().expect("reported lock");
        for field in skipped {
            if reported.len() < 1000 && reported.insert(field.clone()) {
                warn!(table = %self.declared.name, field = %field, "a field of the records was not added as a column");
            }
        }
    }

    fn staged(
        &self,
        writer: &TableWriter,
        key: &str,
        source: &SourcePartition,
        first: i64,
        last: i64,
        files: Vec<DataFile>,
    ) -> Result<Vec<StagedFile>> {
        files
            .into_iter()
            .map(|f| {
                Ok(StagedFile {
                    table: writer.layout().name.to_string(),
                    path: f.file_path().to_string(),
                    pipeline: key.to_string(),
                    source: source.clone(),
                    first_offset: first,
                    last_offset: last,
                    record_count: f.record_count(),
                    file_size: f.file_size_in_bytes(),
                    data_file: writer.data_file_json(&f)?,
                    schema_id: Some(writer.layout().schema.schema_id()),
                    table_uuid: writer.layout().table_uuid.clone(),
                    content: Default::default(),
                })
            })
            .collect()
    }
}
