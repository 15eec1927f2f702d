//! The compactor: the only writer of Iceberg metadata. Commits every staged file of a table in one `fast_append`
//! snapshot that records the committed source positions, then forgets the staged files.
//!
//! Crash safety: if a run dies after the commit but before the state store is updated, the next run finds the
//! staged files covered by the committed positions and only marks them; if it dies before the commit, the next
//! run commits them. Concurrent compactors are serialised by the catalog's compare-and-swap (see
//! [`crate::commit::pinned`]); the loser re-plans from the winner's snapshot.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use iceberg::Catalog;
use iceberg::io::FileIO;
use tracing::{info, warn};

use super::positions::{advance, committed_positions, encode_positions, limit, plan, positions_key};
use super::tables::{TableReport, is_conflict, load_or_create};
use crate::backends::Backends;
use crate::error::{Error, Result};
use crate::failpoint;
use crate::pipeline::{Output, Pipeline};
use crate::state::StateStore;
use crate::table::layout::TableLayout;
use crate::table::writer::TableWriter;

/// Compactor settings.
#[derive(Debug, Clone)]
pub struct CompactorOptions {
    /// Most files committed in one snapshot (bounds commit time and manifest size).
    pub max_files_per_commit: usize,
    /// Commit attempts per table per run before giving up (conflicts with concurrent committers).
    pub max_attempts: u32,
    /// Stop starting new attempts after this long (keep well inside the function timeout).
    pub time_budget: Duration,
}

impl Default for CompactorOptions {
    fn default() -> Self {
        CompactorOptions { max_files_per_commit: 5_000, max_attempts: 5, time_budget: Duration::from_secs(240) }
    }
}

/// Compactor handler; build once per process.
pub struct Compactor {
    pipeline: Arc<Pipeline>,
    /// The target and dead-letter tables: known from the pipeline file alone.
    base: Vec<TableLayout>,
    /// The outputs' tables, once their columns are known (see [`Compactor::output_tables`]).
    outputs: OnceLock<OutputTables>,
    warehouse: String,
    file_io: FileIO,
    catalog: Arc<dyn Catalog>,
    state: Arc<dyn StateStore>,
    options: CompactorOptions,
}

/// The tables of the derived outputs.
#[derive(Default)]
struct OutputTables {
    /// Tables that receive staged files: SQL outputs and late-records tables.
    layouts: Vec<TableLayout>,
    /// Windowed outputs and their window tables (emitted by the compactor itself).
    windows: Vec<(Output, TableLayout)>,
}

impl Compactor {
    /// The compactor of `pipeline`. Its outputs may be unplanned (the compactor links no SQL engine): their
    /// columns are then read from the plan ingest records at cold start ([`crate::record_plan`]).
    pub fn new(pipeline: Arc<Pipeline>, backends: &Backends, options: CompactorOptions) -> Result<Self> {
        let warehouse = backends.warehouse.clone();
        let base = vec![TableLayout::target(&pipeline, &warehouse)?, TableLayout::dead_letter(&pipeline, &warehouse)?];
        Ok(Compactor {
            pipeline,
            base,
            outputs: OnceLock::new(),
            warehouse,
            file_io: backends.file_io.clone(),
            catalog: backends.catalog.clone(),
            state: backends.state.clone(),
            options,
        })
    }

    /// One scheduled run over the pipeline's tables, retrying conflicts within `options.time_budget`.
    pub async fn run(&self) -> Result<Vec<TableReport>> {
        self.run_within(self.options.time_budget).await
    }

    /// One run that starts no commit attempt after `budget` (e.g. the Lambda deadline minus a margin).
    pub async fn run_within(&self, budget: Duration) -> Result<Vec<TableReport>> {
        self.run_at(chrono::Utc::now().timestamp_millis(), budget).await
    }

    /// A run at processing time `now_ms` (decides which source partitions are idle for window watermarks).
    pub async fn run_at(&self, now_ms: i64, budget: Duration) -> Result<Vec<TableReport>> {
        let deadline = Instant::now() + budget;
        let mut reports = Vec::new();
        for layout in &self.base {
            reports.push(self.compact_table(layout, deadline).await?);
        }
        let Some(outputs) = self.output_tables().await? else {
            return Ok(reports);
        };
        for layout in &outputs.layouts {
            reports.push(self.compact_table(layout, deadline).await?);
        }
        // After the late tables: a record that ingest found late is staged before its window is emitted.
        for (output, layout) in &outputs.windows {
            let attempts = self.options.max_attempts;
            let report = super::emit::emit_windows(
                &self.catalog,
                self.state.as_ref(),
                &self.pipeline.name,
                output,
                layout,
                now_ms,
                attempts,
            )
            .await?;
            reports.push(report);
        }
        Ok(reports)
    }

    /// The outputs' tables: from the pipeline if its outputs are planned, else from the recorded plan. `None`
    /// while no ingest with this pipeline has recorded its plan; nothing can be staged for the outputs before
    /// then, so the outputs simply wait for a later run.
    async fn output_tables(&self) -> Result<Option<&OutputTables>> {
        if let Some(tables) = self.outputs.get() {
            return Ok(Some(tables));
        }
        let resolved = if self.pipeline.is_resolved() {
            self.pipeline.clone()
        } else {
            let Some(planned) = crate::state::recorded_plan(&self.file_io, &self.warehouse, &self.pipeline).await?
            else {
                let location = crate::state::plan_location(&self.warehouse, &self.pipeline);
                info!(pipeline = %self.pipeline.name, %location, "outputs wait for ingest to record their plan");
                return Ok(None);
            };
            let mut pipeline = self.pipeline.as_ref().clone();
            pipeline.resolve(planned)?;
            Arc::new(pipeline)
        };
        let mut tables = OutputTables::default();
        for o in &resolved.outputs {
            match &o.window {
                None => tables.layouts.push(TableLayout::output(&resolved, o, &self.warehouse)?),
                Some(_) => {
                    tables.layouts.push(TableLayout::late(&resolved, o, &self.warehouse)?);
                    tables.windows.push((o.clone(), TableLayout::output(&resolved, o, &self.warehouse)?));
                }
            }
        }
        let _ = self.outputs.set(tables);
        Ok(self.outputs.get())
    }

    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }
}

impl Compactor {
    async fn compact_table(&self, layout: &TableLayout, deadline: Instant) -> Result<TableReport> {
        let table_name = layout.name.to_string();
        let mut report = TableReport { table: table_name.clone(), ..Default::default() };
        let mut staged = self.state.staged_files(&table_name).await?;
        let mut table = load_or_create(self.catalog.as_ref(), layout).await?;
        layout.check_matches(&table)?;
        if staged.is_empty() {
            return Ok(report);
        }
        let pipeline = &self.pipeline.name;

        for attempt in 1..=self.options.max_attempts {
            let positions = committed_positions(&table, pipeline)?;
            let (done, pending) = plan(staged, &positions);
            if !done.is_empty() {
                // Committed by an earlier run that stopped before marking them.
                warn!(table = %table_name, files = done.len(), "staged files already committed; marking them");
                report.recovered += done.len() as u64;
                self.state.remove_staged(&table_name, &done).await?;
            }
            if pending.is_empty() {
                return Ok(report);
            }
            let total = pending.len();
            let batch = limit(pending, self.options.max_files_per_commit);
            report.remaining = (total - batch.len()) as u64;

            let data_files = batch
                .iter()
                .map(|f| TableWriter::data_file_from_json(layout, &f.data_file))
                .collect::<Result<Vec<_>>>()?;
            let mut properties = HashMap::new();
            properties.insert(positions_key(pipeline), encode_positions(&advance(&positions, &batch)));
            properties.insert("floe.pipeline".to_string(), pipeline.clone());

            failpoint::hit(failpoint::COMPACTOR_BEFORE_COMMIT).await?;
            let commit_started = Instant::now();
            let result = super::pinned::fast_append(self.catalog.as_ref(), &table, data_files, properties).await?;
            match result {
                Ok(committed) => {
                    let snapshot_id = committed.metadata().current_snapshot_id();
                    let millis = commit_started.elapsed().as_millis() as u64;
                    info!(table = %table_name, snapshot_id, files = batch.len(), commit_ms = millis, "committed");
                    failpoint::hit(failpoint::COMPACTOR_AFTER_COMMIT).await?;
                    self.state.remove_staged(&table_name, &batch).await?;
                    report.files = batch.len() as u64;
                    report.rows = batch.iter().map(|f| f.record_count).sum();
                    report.bytes = batch.iter().map(|f| f.file_size).sum();
                    report.snapshot_id = snapshot_id;
                    report.commit_ms = millis;
                    return Ok(report);
                }
                Err(e) if is_conflict(&e) && attempt < self.options.max_attempts && Instant::now() < deadline => {
                    warn!(table = %table_name, attempt, error = %e, "commit conflict; re-planning");
                    report.conflicts += 1;
                    table = self.catalog.load_table(&layout.ident()).await?;
                    staged = batch;
                }
                Err(e) => return Err(Error::Iceberg(e)),
            }
        }
        Err(Error::Conflict(format!(
            "{table_name}: gave up after {} conflicting commit attempts",
            self.options.max_attempts
        )))
    }
}
