//! Emitting final windows (compactor side). One run per windowed output:
//!
//! 1. If an earlier run committed windows but died before cleaning up, finish the cleanup.
//! 2. If everything closed is emitted, move the closed watermark to the current watermark (compare-and-set; from
//!    then on ingest treats those windows as final and sends their records to the late table).
//! 3. Emit the windows final in `(emitted, closed]`: merge the cells of every source partition, write one data
//!    file with a deterministic name, and commit it with `floe.closed.<pipeline>` in the snapshot summary. Cells
//!    of closed windows no longer change, so a rerun after a crash writes the same rows; the summary tells a
//!    rerun the commit already happened. Exactly once, like staged files.
//! 4. Delete the emitted cells and record the emitted watermark in the state store.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use arrow_json::ReaderBuilder;
use iceberg::Catalog;
use iceberg::table::Table;
use serde_json::{Map, Value};
use tracing::{info, warn};

use super::positions::newest_summary_value;
use super::tables::TableReport;
use crate::catalog::is_conflict;
use crate::error::{Error, Result};
use crate::failpoint;
use crate::pipeline::window::{PartitionClock, WindowSpec};
use crate::pipeline::{Output, WINDOW_END, WINDOW_START, WindowOutput};
use crate::state::StateStore;
use crate::stateful::stream::{FinalWindow, cleanup, final_windows};
use crate::table::layout::TableLayout;
use crate::table::writer::TableWriter;

/// Snapshot summary key: windows final at this watermark are in the table.
pub fn closed_key(pipeline: &str) -> String {
    format!("floe.closed.{pipeline}")
}

/// The closed watermark recorded by the newest snapshot in the current ancestry that has one.
pub fn committed_closed(table: &Table, pipeline: &str) -> Result<Option<i64>> {
    let key = closed_key(pipeline);
    match newest_summary_value(table, &key) {
        None => Ok(None),
        Some((snapshot_id, text)) => text.parse().map(Some).map_err(|_| Error::TableMismatch {
            table: table.identifier().to_string(),
            message: format!("snapshot {snapshot_id} has unreadable {key}: {text}"),
        }),
    }
}

/// Emit the final windows of one output into its window `table` (`layout` on it). `now_ms` is processing time
/// (for idle partitions). Returns the report and the window table as last loaded or committed.
#[allow(clippy::too_many_arguments)]
pub async fn emit_windows(
    catalog: &Arc<dyn Catalog>,
    state: &dyn StateStore,
    pipeline: &str,
    output: &Output,
    layout: &TableLayout,
    mut table: Table,
    now_ms: i64,
    max_attempts: u32,
) -> Result<(TableReport, Table)> {
    let window = output.window.as_ref().expect("emit_windows is called for windowed outputs");
    let scope = format!("{pipeline}/{}", output.table);
    let table_name = layout.name.to_string();
    let mut report = TableReport { table: table_name.clone(), ..Default::default() };

    let progress = state.window_progress(&scope).await?;
    let committed = committed_closed(&table, pipeline)?;
    let emitted = max_opt(committed, progress.emitted_ms);
    if emitted > progress.emitted_ms
        && let Some(e) = emitted
    {
        finish(state, &scope, window, e).await?;
    }

    let mut closed = progress.closed_ms;
    if closed <= emitted {
        let clocks: Vec<PartitionClock> = state
            .clocks(&scope)
            .await?
            .into_iter()
            .map(|(_, max_event_ms, last_record_ms)| PartitionClock { max_event_ms, last_record_ms })
            .collect();
        if let Some(wm) = window.watermark.watermark(&clocks, now_ms)
            && closed.is_none_or(|c| wm > c)
        {
            match state.set_closed(&scope, closed, wm).await {
                Ok(()) => closed = Some(wm),
                Err(Error::Conflict(_)) => closed = state.window_progress(&scope).await?.closed_ms,
                Err(e) => return Err(e),
            }
        }
    }
    let Some(through) = closed.filter(|c| Some(*c) > emitted) else {
        return Ok((report, table));
    };

    let close_at_most = match window.spec {
        WindowSpec::Session { .. } => None,
        _ => Some(through),
    };
    let cells = state.scan_cells(&scope, close_at_most).await?;
    let finals = final_windows(window, &cells, emitted, through).map_err(|m| state_error(&scope, &m))?;
    if finals.is_empty() {
        finish(state, &scope, window, through).await?;
        return Ok((report, table));
    }
    let batch = window_batch(window, layout, &finals)?;
    let writer = TableWriter::new(layout.clone(), table.file_io().clone())?;
    let from = emitted.map_or_else(|| "start".to_string(), |e| e.to_string());
    let prefix = format!("{pipeline}-{}-windows-{from}-{through}", output.table.name);
    let files = writer.write(batch, &prefix).await?;
    let rows: u64 = files.iter().map(|f| f.record_count()).sum();
    let bytes: u64 = files.iter().map(|f| f.file_size_in_bytes()).sum();
    let file_count = files.len() as u64;

    failpoint::hit(failpoint::EMIT_BEFORE_COMMIT).await?;
    for attempt in 1..=max_attempts {
        let mut properties = HashMap::new();
        properties.insert(closed_key(pipeline), through.to_string());
        properties.insert("floe.pipeline".to_string(), pipeline.to_string());
        let started = Instant::now();
        let result = super::pinned::fast_append(catalog.as_ref(), &table, files.clone(), properties).await?;
        match result {
            Ok(done) => {
                report.snapshot_id = done.metadata().current_snapshot_id();
                report.commit_ms = started.elapsed().as_millis() as u64;
                report.files = file_count;
                report.rows = rows;
                report.bytes = bytes;
                info!(table = %table_name, windows = finals.len(), through, "emitted final windows");
                failpoint::hit(failpoint::EMIT_AFTER_COMMIT).await?;
                finish(state, &scope, window, through).await?;
                return Ok((report, done));
            }
            Err(e) if is_conflict(&e) && attempt < max_attempts => {
                warn!(table = %table_name, attempt, error = %e, "window commit conflict; re-checking");
                report.conflicts += 1;
                table = catalog.load_table(&layout.ident()).await?;
                if committed_closed(&table, pipeline)? >= Some(through) {
                    // A concurrent compactor emitted the same windows.
                    finish(state, &scope, window, through).await?;
                    return Ok((report, table));
                }
            }
            Err(e) => return Err(Error::Iceberg(e)),
        }
    }
    Err(Error::Conflict(format!("{table_name}: gave up emitting windows after {max_attempts} attempts")))
}

fn max_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

fn state_error(scope: &str, m: &str) -> Error {
    Error::state(format!("{scope}: {m}"), false)
}

/// Delete what is emitted through `emitted` and record it.
async fn finish(state: &dyn StateStore, scope: &str, window: &WindowOutput, emitted: i64) -> Result<()> {
    let close_at_most = match window.spec {
        WindowSpec::Session { .. } => None,
        _ => Some(emitted),
    };
    let cells = state.scan_cells(scope, close_at_most).await?;
    let (delete, rewrite) = cleanup(window, &cells, emitted).map_err(|m| state_error(scope, &m))?;
    state.delete_cells(scope, &delete).await?;
    if !rewrite.is_empty() {
        let closed = state.window_progress(scope).await?.closed_ms;
        match state.put_cells(scope, closed, &rewrite, None).await {
            // Ingest wrote to these cells meanwhile; the emitted sessions in them are skipped until next time.
            Ok(()) | Err(Error::Conflict(_)) => {}
            Err(e) => return Err(e),
        }
    }
    state.set_emitted(scope, emitted).await
}

/// Rows of the window table, decoded by arrow-json from one JSON object per window.
fn window_batch(
    window: &WindowOutput,
    layout: &TableLayout,
    finals: &[FinalWindow],
) -> Result<arrow_array::RecordBatch> {
    let mut decoder = ReaderBuilder::new(layout.input.clone()).with_batch_size(finals.len().max(1)).build_decoder()?;
    let mut rows = Vec::with_capacity(finals.len());
    for f in finals {
        let group: Vec<Value> = serde_json::from_str(&f.group)
            .map_err(|e| Error::state_caused_by(format!("unreadable group key {}", f.group), false, e))?;
        let mut row = Map::new();
        row.insert(WINDOW_START.into(), Value::from(f.window.start_ms.saturating_mul(1000)));
        row.insert(WINDOW_END.into(), Value::from(f.window.end_ms.saturating_mul(1000)));
        for ((name, _), v) in window.group_by.iter().zip(group) {
            row.insert(name.clone(), v);
        }
        for (a, acc) in window.aggregates.iter().zip(&f.accs) {
            row.insert(a.name.clone(), acc.value());
        }
        rows.push(Value::Object(row));
    }
    decoder.serialize(&rows)?;
    decoder.flush()?.ok_or_else(|| Error::state("no window rows decoded", false))
}
