//! The compactor: the only writer of Iceberg metadata. Commits the staged files of a table in one `fast_append`
//! snapshot that records the committed source positions, the small ones first merged into target-size files
//! ([`super::merge`]), then forgets the staged files and deletes the merged inputs. A table that fails is
//! logged and reported, and the run goes on with the others.
//!
//! Crash safety: if a run dies after the commit but before the state store is updated, the next run finds the
//! staged files covered by the committed positions and only marks them; if it dies before the commit, the next
//! run commits them. Concurrent compactors are serialised by the catalog's compare-and-swap (see
//! [`crate::commit::pinned`]); the loser re-plans from the winner's snapshot.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use iceberg::Catalog;
use iceberg::io::FileIO;
use iceberg::spec::DataFile;
use iceberg::table::Table;
use tracing::{error, info, warn};

use super::merge::{MergePolicy, Merged, merged_prefix, pack};
use super::options::CompactorOptions;
use super::orphans::OrphanScan;
use super::positions::{
    MAX_CHANGE_KEYS, advance_keyed, committed_keyed, key_of_pipeline, limit, limit_keys, plan_keyed,
    positions_unchanged,
};
use super::report::{OrphanRun, RunReport, TableFailure};
use super::rewrite::Rewriter;
use super::tables::{TableReport, delete_uncommitted, simulated_crash};
use crate::backends::{Backends, MetadataSwap, ObjectLister};
use crate::catalog::{delete_files, is_conflict, load_or_create};
use crate::error::{Error, Result};
use crate::failpoint;
use crate::pipeline::{Output, Pipeline};
use crate::state::StagedFile;
use crate::state::StateStore;
use crate::table::layout::TableLayout;
use crate::table::writer::TableWriter;

/// When a run stops merging and when it stops starting commit attempts.
#[derive(Debug, Clone, Copy)]
struct Deadlines {
    merge: Instant,
    commit: Instant,
    /// This run's id, part of the merged files' names (see [`merged_prefix`]).
    run: u64,
}

/// A random run id (std's randomly keyed hasher: no extra dependency).
fn run_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new().build_hasher().finish()
}

/// What a table's commit attempts left behind, for cleaning up merged files.
#[derive(Debug, Default)]
struct Attempts {
    /// Merged-file prefixes of the commit that succeeded: referenced from then on.
    committed: Vec<String>,
    /// A commit failed other than by a rejected swap: whether it applied is unknown.
    outcome_unknown: bool,
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
    swap: Arc<dyn MetadataSwap>,
    lister: Arc<dyn ObjectLister>,
    state: Arc<dyn StateStore>,
    options: CompactorOptions,
    /// Tables this process has evolved to take its pipeline file (once per process, see [`Compactor::ready`]).
    evolved: Mutex<HashSet<String>>,
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
            swap: backends.swap.clone(),
            lister: backends.lister.clone(),
            state: backends.state.clone(),
            options,
            evolved: Mutex::default(),
        })
    }

    /// `layout`'s table as it is now and the layout on it: created if missing, and on this process's first run
    /// evolved to take the pipeline file ([`crate::catalog::prepare`]). Only the first: the pipeline file is
    /// read at cold start, and a later run of an old container must not undo what a newer deployment changed
    /// (a doc, say); everything else a pipeline file can ask for only ever grows the table.
    async fn ready(&self, layout: &TableLayout) -> Result<(Table, TableLayout)> {
        let name = layout.name.to_string();
        if self.evolved.lock().expect("not poisoned").contains(&name) {
            let table = load_or_create(self.catalog.as_ref(), layout).await?;
            let on_table = layout.on_table(table.metadata())?;
            return Ok((table, on_table));
        }
        let prepared = crate::catalog::prepare(self.catalog.as_ref(), self.swap.as_ref(), layout).await?;
        if !prepared.changes.is_empty() {
            info!(table = %name, changes = ?prepared.changes, "the compactor evolved the table");
        }
        self.evolved.lock().expect("not poisoned").insert(name);
        Ok((prepared.table, prepared.layout))
    }

    /// One scheduled run over the pipeline's tables, retrying conflicts within `options.time_budget`.
    pub async fn run(&self) -> Result<Vec<TableReport>> {
        self.run_within(self.options.time_budget).await
    }

    /// One run that starts no commit attempt after `budget` (e.g. the Lambda deadline minus a margin).
    pub async fn run_within(&self, budget: Duration) -> Result<Vec<TableReport>> {
        self.run_at(chrono::Utc::now().timestamp_millis(), budget).await
    }

    /// A run at processing time `now_ms` (decides which source partitions are idle for window watermarks): the
    /// table reports, or the first table's failure once every table was tried.
    pub async fn run_at(&self, now_ms: i64, budget: Duration) -> Result<Vec<TableReport>> {
        self.run_all_at(now_ms, budget).await.into_result()
    }

    /// A run over every table: a failing table is logged and reported, and the run goes on with the others.
    pub async fn run_all_at(&self, now_ms: i64, budget: Duration) -> RunReport {
        let start = Instant::now();
        let deadlines =
            Deadlines { merge: start + self.options.merge_budget.min(budget), commit: start + budget, run: run_id() };
        let mut run = RunReport::default();
        for layout in &self.base {
            run.record(&layout.name.to_string(), self.table_run(layout, deadlines).await);
            if run.crashed() {
                return run;
            }
        }
        let outputs = match self.output_tables().await {
            Ok(Some(outputs)) => outputs,
            Ok(None) => return run,
            Err(e) => {
                run.record("outputs", Err(e));
                return run;
            }
        };
        for layout in &outputs.layouts {
            run.record(&layout.name.to_string(), self.table_run(layout, deadlines).await);
            if run.crashed() {
                return run;
            }
        }
        // After the late tables: a record that ingest found late is staged before its window is emitted.
        for (output, layout) in &outputs.windows {
            let attempts = self.options.max_attempts;
            let report = match self.ready(layout).await {
                Ok((table, on_table)) => {
                    let state = self.state.as_ref();
                    let pipeline = &self.pipeline.name;
                    super::emit::emit_windows(
                        &self.catalog,
                        state,
                        pipeline,
                        output,
                        &on_table,
                        table,
                        now_ms,
                        attempts,
                    )
                    .await
                }
                Err(e) => Err(e),
            };
            let report = match report {
                Ok((mut report, table)) => self.maintain(&mut report, table, layout, deadlines).await.map(|()| report),
                Err(e) => Err(e),
            };
            run.record(&layout.name.to_string(), report);
            if run.crashed() {
                return run;
            }
        }
        run
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

    /// Orphan removal over every table of the pipeline ([`super::orphans`]) until `budget` is spent: a table
    /// that fails is reported and the others go on. `older_than_ms` overrides the tables' safety window.
    pub async fn remove_orphans(
        &self,
        now_ms: i64,
        older_than_ms: Option<i64>,
        dry_run: bool,
        budget: Duration,
    ) -> OrphanRun {
        let scan = OrphanScan {
            catalog: self.catalog.as_ref(),
            state: self.state.as_ref(),
            lister: self.lister.as_ref(),
            now_ms,
            older_than_ms,
            dry_run,
            deadline: Instant::now() + budget,
        };
        let mut run = OrphanRun::default();
        let mut layouts: Vec<&TableLayout> = self.base.iter().collect();
        match self.output_tables().await {
            Ok(Some(outputs)) => {
                layouts.extend(&outputs.layouts);
                layouts.extend(outputs.windows.iter().map(|(_, layout)| layout));
            }
            Ok(None) => {}
            Err(error) => run.failures.push(TableFailure { table: "outputs".into(), error }),
        }
        for layout in layouts {
            match super::orphans::remove_orphans(&scan, &layout.ident()).await {
                Ok(report) => run.tables.push(report),
                Err(error) if simulated_crash(&error) => {
                    run.failures.push(TableFailure { table: layout.name.to_string(), error });
                    return run;
                }
                Err(error) => {
                    error!(table = %layout.name, error = %error, "orphan removal failed; the other tables go on");
                    run.failures.push(TableFailure { table: layout.name.to_string(), error });
                }
            }
        }
        run
    }
}

impl Compactor {
    /// Commit a table's staged files, then maintain it.
    async fn table_run(&self, layout: &TableLayout, deadlines: Deadlines) -> Result<TableReport> {
        let (mut report, table) = self.compact_table(layout, deadlines).await?;
        self.maintain(&mut report, table, layout, deadlines).await?;
        Ok(report)
    }

    /// Maintenance after the commits, while the run's budgets last: small committed files rewritten (and small
    /// manifests merged) until the merge deadline, then snapshot expiry and the files only expired snapshots
    /// referenced. (Each commit already deleted the metadata files it dropped from the log, see
    /// [`super::pinned`].)
    async fn maintain(
        &self,
        report: &mut TableReport,
        mut table: Table,
        layout: &TableLayout,
        deadlines: Deadlines,
    ) -> Result<()> {
        let started = Instant::now();
        let layout = &layout.on_table(table.metadata())?;
        if started < deadlines.merge {
            let rewriter = Rewriter {
                catalog: self.catalog.as_ref(),
                swap: self.swap.as_ref(),
                file_io: &self.file_io,
                layout,
                run: deadlines.run,
                merge_deadline: deadlines.merge,
                max_attempts: self.options.max_attempts,
            };
            let (rewritten, done) = rewriter.run(table).await?;
            table = rewritten;
            report.rewritten_inputs = done.inputs;
            report.rewritten_outputs = done.outputs;
            report.bytes_read += done.bytes_read;
            report.bytes_written += done.bytes_written;
            report.manifests_before = done.manifests_before;
            report.manifests_after = done.manifests_after;
            report.conflicts += done.conflicts;
        }
        if self.options.expire_batch > 0 && Instant::now() < deadlines.commit {
            let now_ms = chrono::Utc::now().timestamp_millis();
            let (_, expired) =
                super::expire::expire(self.catalog.as_ref(), table, now_ms, self.options.expire_batch).await?;
            report.snapshots_expired = expired.snapshots;
            report.files_deleted += expired.files_deleted;
        }
        report.maintain_ms = started.elapsed().as_millis() as u64;
        Ok(())
    }

    /// Commit the staged files of a table; the report and the table as last loaded or committed. Merged files
    /// this run wrote and that the table does not reference (it lost a race, or failed) are deleted, unless a
    /// commit's outcome is unknown: then they are left for orphan removal, as Iceberg leaves the files of a
    /// commit in an unknown state.
    async fn compact_table(&self, layout: &TableLayout, deadlines: Deadlines) -> Result<(TableReport, Table)> {
        let mut merged: HashMap<String, Merged> = HashMap::new();
        let mut attempts = Attempts::default();
        let result = self.commit_staged(layout, deadlines, &mut merged, &mut attempts).await;
        if matches!(&result, Err(e) if simulated_crash(e)) {
            return result;
        }
        let candidates: Vec<String> = merged
            .iter()
            .filter(|(prefix, _)| !attempts.committed.contains(prefix))
            .flat_map(|(_, m)| m.files.iter().map(|f| f.file_path().to_string()))
            .collect();
        let (catalog, ident) = (self.catalog.as_ref(), layout.ident());
        delete_uncommitted(catalog, &self.file_io, &ident, candidates, attempts.outcome_unknown, "merged file").await;
        result
    }

    async fn commit_staged(
        &self,
        layout: &TableLayout,
        deadlines: Deadlines,
        merged: &mut HashMap<String, Merged>,
        attempts: &mut Attempts,
    ) -> Result<(TableReport, Table)> {
        let table_name = layout.name.to_string();
        let mut report = TableReport { table: table_name.clone(), ..Default::default() };
        let mut staged = self.state.staged_files(&table_name).await?;
        staged.retain(|f| key_of_pipeline(&f.pipeline, &self.pipeline.name));
        let (mut table, _) = self.ready(layout).await?;
        if staged.is_empty() {
            return Ok((report, table));
        }
        let pipeline = &self.pipeline.name;
        let declared = layout;

        for attempt in 1..=self.options.max_attempts {
            // On the table as loaded: ingest may have evolved it since the last attempt.
            let layout = &declared.on_table(table.metadata())?;
            // Per ledger key: the pipeline's own positions, and its backfills' (`<pipeline>~bf`).
            let positions = committed_keyed(&table, pipeline, &staged)?;
            let (done, pending) = plan_keyed(staged, &positions);
            if !done.is_empty() {
                // Committed by an earlier run that stopped before marking them; those it merged are deleted first.
                warn!(table = %table_name, files = done.len(), "staged files already committed; marking them");
                report.recovered += done.len() as u64;
                let mut away = Vec::new();
                for key in positions.keys() {
                    let of_key: Vec<StagedFile> = done.iter().filter(|f| &f.pipeline == key).cloned().collect();
                    if !of_key.is_empty() {
                        away.extend(super::merge::merged_away(&table, key, &of_key).await?);
                    }
                }
                report.inputs_deleted += self.delete_inputs(&table_name, &away).await?;
                self.state.remove_staged(&table_name, &done).await?;
            }
            if pending.is_empty() {
                return Ok((report, table));
            }
            let total = pending.len();
            let mut batch = limit(pending, self.options.max_files_per_commit);
            if !layout.primary_key.is_empty() {
                batch = limit_keys(batch, MAX_CHANGE_KEYS);
            }
            report.remaining = (total - batch.len()) as u64;

            let staged_files = batch
                .iter()
                .filter(|f| f.content.is_data())
                .map(|f| super::staged::data_file(table.metadata(), layout, f))
                .collect::<Result<Vec<_>>>()?;
            // Counted for the attempt that commits (a retry reuses merged files; it does not merge them again).
            report.clear_merge_counts();
            let changes = !layout.primary_key.is_empty();
            let merging = if changes {
                // A change set's rows are found by position in the files ingest wrote: they are committed as
                // they are (rewrites compact them later), and the key files are deleted after the commit.
                let keys = batch.iter().filter(|f| !f.content.is_data()).map(|f| f.path.clone()).collect();
                Ok((staged_files, keys, Vec::new()))
            } else {
                self.merge_small(layout, &staged_files, deadlines, merged, &mut report).await
            };
            let (data_files, replaced, prefixes) = match merging {
                Ok(planned) => planned,
                Err(e) if !simulated_crash(&e) && attempt < self.options.max_attempts => {
                    // A rival compactor may have committed these files and deleted their inputs meanwhile.
                    let fresh = self.catalog.load_table(&layout.ident()).await?;
                    if positions_unchanged(&fresh, &positions)? {
                        return Err(e);
                    }
                    warn!(table = %table_name, attempt, error = %e, "merge failed and the table moved; re-planning");
                    report.conflicts += 1;
                    table = fresh;
                    staged = batch;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let mut properties: HashMap<String, String> =
                advance_keyed(pipeline, &positions, &batch).into_iter().collect();
            properties.insert("floe.pipeline".to_string(), pipeline.clone());

            failpoint::hit(failpoint::COMPACTOR_BEFORE_COMMIT).await?;
            let commit_started = Instant::now();
            let committed_files = data_files.len() as u64;
            let committed_bytes = data_files.iter().map(|f| f.file_size_in_bytes()).sum();
            let mut delete_files = Vec::new();
            let result = if changes {
                let delta = super::changes::commit_batch(
                    self.swap.as_ref(),
                    &table,
                    layout,
                    &batch,
                    data_files,
                    properties,
                    deadlines.run,
                );
                let (result, written, stats) = delta.await?;
                delete_files = written;
                report.change_stats = Some(stats);
                result
            } else {
                super::pinned::fast_append(self.catalog.as_ref(), &table, data_files, properties).await?
            };
            match result {
                Ok(committed) => {
                    // Referenced from now on, whatever fails next: never cleaned up as uncommitted.
                    attempts.committed.extend(prefixes);
                    let snapshot_id = committed.metadata().current_snapshot_id();
                    let millis = commit_started.elapsed().as_millis() as u64;
                    info!(table = %table_name, snapshot_id, files = committed_files, staged = batch.len(),
                        commit_ms = millis, "committed");
                    failpoint::hit(failpoint::COMPACTOR_AFTER_COMMIT).await?;
                    // Durable: nothing references the merged inputs. Deleted before the ledger forgets them, so
                    // a run that stops in between leaves them listed, and the next run finishes the cleanup.
                    report.inputs_deleted += self.delete_inputs(&table_name, &replaced).await?;
                    failpoint::hit(failpoint::COMPACTOR_BEFORE_MARK).await?;
                    self.state.remove_staged(&table_name, &batch).await?;
                    report.files = committed_files;
                    report.staged = batch.len() as u64;
                    report.staged_bytes = batch.iter().map(|f| f.file_size).sum();
                    report.rows = batch.iter().filter(|f| f.content.is_data()).map(|f| f.record_count).sum();
                    report.bytes = committed_bytes;
                    report.snapshot_id = snapshot_id;
                    report.commit_ms = millis;
                    return Ok((report, committed));
                }
                Err(e)
                    if is_conflict(&e) && attempt < self.options.max_attempts && Instant::now() < deadlines.commit =>
                {
                    warn!(table = %table_name, attempt, error = %e, "commit conflict; re-planning");
                    report.conflicts += 1;
                    // The re-plan writes its own (named after the snapshot it plans on); these are deleted unless the
                    // table references them (a retried swap can be answered with a conflict although it applied).
                    let (catalog, ident) = (self.catalog.as_ref(), layout.ident());
                    delete_uncommitted(catalog, &self.file_io, &ident, delete_files, false, "position-delete file")
                        .await;
                    table = self.catalog.load_table(&layout.ident()).await?;
                    staged = batch;
                }
                Err(e) => {
                    // Not a rejected swap: the catalog may have applied it (a lost answer, a crash mid-call).
                    attempts.outcome_unknown = !is_conflict(&e);
                    return Err(Error::Iceberg(e));
                }
            }
        }
        Err(Error::Conflict(format!(
            "{table_name}: gave up after {} conflicting commit attempts",
            self.options.max_attempts
        )))
    }

    /// The files to commit for `staged`: the small ones of each partition merged (until `deadline`), the rest as
    /// they are; and the paths of the staged files the merged ones replace.
    async fn merge_small(
        &self,
        layout: &TableLayout,
        staged: &[DataFile],
        deadlines: Deadlines,
        merged: &mut HashMap<String, Merged>,
        report: &mut TableReport,
    ) -> Result<(Vec<DataFile>, Vec<String>, Vec<String>)> {
        let bins = pack(staged, &MergePolicy::for_target(layout.target_file_size as u64));
        let mut in_bin = vec![false; staged.len()];
        let mut files = Vec::new();
        let mut replaced = Vec::new();
        let mut prefixes = Vec::new();
        let mut writer = None;
        for bin in bins {
            let inputs: Vec<&DataFile> = bin.iter().map(|&i| &staged[i]).collect();
            let prefix = merged_prefix(&inputs, deadlines.run);
            if !merged.contains_key(&prefix) {
                if Instant::now() >= deadlines.merge {
                    // Freshness first: the rest of the bins are committed unmerged; rewrites pick them up later.
                    report.merge_deferred += inputs.len() as u64;
                    continue;
                }
                let writer = match &writer {
                    Some(w) => w,
                    None => writer.insert(TableWriter::new(layout.clone(), self.file_io.clone())?),
                };
                let started = Instant::now();
                let result = super::merge::merge(writer, &self.file_io, &inputs, deadlines.run).await?;
                info!(table = %layout.name, inputs = inputs.len(), outputs = result.files.len(),
                    bytes_read = result.bytes_read, bytes_written = result.bytes_written,
                    merge_ms = started.elapsed().as_millis() as u64, "merged staged files");
                report.merge_ms += started.elapsed().as_millis() as u64;
                merged.insert(prefix.clone(), result);
            }
            let result = &merged[&prefix];
            report.merged_inputs += inputs.len() as u64;
            report.merged_outputs += result.files.len() as u64;
            report.bytes_read += result.bytes_read;
            report.bytes_written += result.bytes_written;
            files.extend(result.files.iter().cloned());
            replaced.extend(inputs.iter().map(|f| f.file_path().to_string()));
            prefixes.push(prefix.clone());
            for i in bin {
                in_bin[i] = true;
            }
        }
        if !replaced.is_empty() {
            failpoint::hit(failpoint::COMPACTOR_AFTER_MERGE).await?;
        }
        files.extend(staged.iter().zip(&in_bin).filter(|(_, merged)| !**merged).map(|(f, _)| f.clone()));
        Ok((files, replaced, prefixes))
    }

    /// Delete staged files that merged files replaced (a file already gone counts as deleted), one at a time so
    /// a test can crash between two deletes.
    async fn delete_inputs(&self, table: &str, paths: &[String]) -> Result<u64> {
        let mut deleted = 0;
        for path in paths {
            failpoint::check(failpoint::COMPACTOR_DURING_DELETE)?;
            deleted += delete_files(&self.file_io, table, std::slice::from_ref(path), "merged input").await;
        }
        Ok(deleted)
    }
}
