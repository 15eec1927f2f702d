//! The compactor: the only writer of Iceberg metadata. Commits every staged file of a table in one `fast_append`
//! snapshot that records the committed source positions, then forgets the staged files.
//!
//! Crash safety: if a run dies after the commit but before the state store is updated, the next run finds the
//! staged files covered by the committed positions and only marks them; if it dies before the commit, the next
//! run commits them. Concurrent compactors are serialised by the catalog's compare-and-swap (see
//! [`crate::pinned`]); the loser re-plans from the winner's snapshot.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use iceberg::{Catalog, ErrorKind, NamespaceIdent};
use serde::Serialize;
use tracing::{info, warn};

use crate::commit::{advance, committed_positions, encode_positions, limit, plan, positions_key};
use crate::config::{Output, Pipeline};
use crate::error::{Error, Result};
use crate::failpoint;
use crate::layout::TableLayout;
use crate::state::StateStore;
use crate::writer::TableWriter;

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

/// What a run did to one table.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct TableReport {
    pub table: String,
    /// Files committed in this run's snapshot and the rows/bytes they hold.
    pub files: u64,
    pub rows: u64,
    pub bytes: u64,
    /// Snapshot committed by this run, if any.
    pub snapshot_id: Option<i64>,
    /// Staged files found already committed by an earlier run that died before marking them.
    pub recovered: u64,
    /// Files left staged for the next run (over `max_files_per_commit`).
    pub remaining: u64,
    /// Commit attempts lost to concurrent committers.
    pub conflicts: u32,
    /// Time of the successful metadata commit.
    pub commit_ms: u64,
}

/// Compactor handler; build once per process.
pub struct Compactor {
    pipeline: Arc<Pipeline>,
    /// Tables that receive staged files.
    layouts: Vec<TableLayout>,
    /// Windowed outputs and their window tables (emitted by the compactor itself).
    windows: Vec<(Output, TableLayout)>,
    catalog: Arc<dyn Catalog>,
    state: Arc<dyn StateStore>,
    options: CompactorOptions,
}

impl Compactor {
    pub fn new(
        pipeline: Arc<Pipeline>,
        warehouse: &str,
        catalog: Arc<dyn Catalog>,
        state: Arc<dyn StateStore>,
        options: CompactorOptions,
    ) -> Result<Self> {
        let mut layouts =
            vec![TableLayout::target(&pipeline, warehouse)?, TableLayout::dead_letter(&pipeline, warehouse)?];
        let mut windows = Vec::new();
        for o in &pipeline.outputs {
            match &o.window {
                None => layouts.push(TableLayout::output(&pipeline, o, warehouse)?),
                Some(_) => {
                    layouts.push(TableLayout::late(&pipeline, o, warehouse)?);
                    windows.push((o.clone(), TableLayout::output(&pipeline, o, warehouse)?));
                }
            }
        }
        Ok(Compactor { pipeline, layouts, windows, catalog, state, options })
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
        for layout in &self.layouts {
            reports.push(self.compact_table(layout, deadline).await?);
        }
        // After the late tables: a record that ingest found late is staged before its window is emitted.
        for (output, layout) in &self.windows {
            let attempts = self.options.max_attempts;
            let report = crate::emit::emit_windows(
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

    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }
}

/// Load a table, creating its namespace and the table from the layout when missing.
pub(crate) async fn load_or_create(catalog: &dyn Catalog, layout: &TableLayout) -> Result<iceberg::table::Table> {
    let ident = layout.ident();
    match catalog.load_table(&ident).await {
        Ok(table) => return Ok(table),
        Err(e) if e.kind() == ErrorKind::TableNotFound || e.kind() == ErrorKind::NamespaceNotFound => {}
        Err(e) => return Err(e.into()),
    }
    let namespace = NamespaceIdent::new(layout.name.namespace.clone());
    // A failed create is fine if a concurrent compactor created the same thing first: check again rather than
    // match error kinds, because the SQL catalog reports that race as a unique-constraint violation, not as
    // `NamespaceAlreadyExists` / `TableAlreadyExists`.
    if !catalog.namespace_exists(&namespace).await? {
        match catalog.create_namespace(&namespace, HashMap::new()).await {
            Ok(_) => info!(namespace = %layout.name.namespace, "created namespace"),
            Err(e) if !catalog.namespace_exists(&namespace).await? => return Err(e.into()),
            Err(_) => {}
        }
    }
    match catalog.create_table(&namespace, layout.creation()).await {
        Ok(table) => {
            info!(table = %layout.name, location = %layout.location, "created table");
            Ok(table)
        }
        Err(e) => catalog.load_table(&ident).await.map_err(|_| e.into()),
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
            let result = crate::pinned::fast_append(self.catalog.as_ref(), &table, data_files, properties).await?;
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

pub(crate) fn is_conflict(e: &iceberg::Error) -> bool {
    e.kind() == ErrorKind::CatalogCommitConflicts || e.retryable()
}
