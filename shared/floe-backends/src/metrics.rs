//! CloudWatch Embedded Metric Format (EMF): one JSON log line per invocation that CloudWatch turns into metrics.
//! Pure formatting; the Lambda functions print the lines to stdout.

use serde_json::{Map, Value, json};

use floe_core::backfill::SplitReport;
use floe_core::{IngestReport, Orphans, TableReport};

/// CloudWatch namespace of floe's metrics.
pub const NAMESPACE: &str = "floe";

/// A metric value with its CloudWatch unit.
pub struct Metric<'a> {
    pub name: &'a str,
    pub unit: &'a str,
    pub value: f64,
}

/// One EMF line: `dimensions` are (name, value) pairs; `properties` are searchable but not metrics.
pub fn emf_line(
    timestamp_ms: i64,
    dimensions: &[(&str, &str)],
    metrics: &[Metric],
    properties: &[(&str, Value)],
) -> String {
    let mut root = Map::new();
    root.insert(
        "_aws".into(),
        json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [dimensions.iter().map(|(k, _)| *k).collect::<Vec<_>>()],
                "Metrics": metrics.iter().map(|m| json!({"Name": m.name, "Unit": m.unit})).collect::<Vec<_>>(),
            }],
        }),
    );
    for (k, v) in dimensions {
        root.insert((*k).into(), json!(v));
    }
    for m in metrics {
        root.insert(m.name.into(), json!(m.value));
    }
    for (k, v) in properties {
        root.insert((*k).into(), v.clone());
    }
    Value::Object(root).to_string()
}

fn m<'a>(name: &'a str, unit: &'a str, value: u64) -> Metric<'a> {
    Metric { name, unit, value: value as f64 }
}

/// The ingest function's metrics for one invocation.
pub fn ingest_line(timestamp_ms: i64, pipeline: &str, report: &IngestReport, elapsed_ms: u64) -> String {
    emf_line(
        timestamp_ms,
        &[("Pipeline", pipeline), ("Function", "ingest")],
        &[
            m("RecordsIn", "Count", report.records),
            m("InputBytes", "Bytes", report.input_bytes),
            m("DuplicatesSkipped", "Count", report.duplicates),
            m("RowsWritten", "Count", report.rows),
            m("DeadLetters", "Count", report.dead_letters),
            m("Deduplicated", "Count", report.deduplicated),
            m("LateRecords", "Count", report.late),
            m("FilesWritten", "Count", report.files),
            m("BytesWritten", "Bytes", report.bytes),
            m("ColumnsAdded", "Count", report.columns_added),
            m("KeysDeleted", "Count", report.deletes),
            m("ChangesCollapsed", "Count", report.collapsed),
            m("IngestLatency", "Milliseconds", elapsed_ms),
        ],
        &[],
    )
}

/// The compactor's metrics for one table of one run.
pub fn compactor_line(timestamp_ms: i64, pipeline: &str, report: &TableReport) -> String {
    emf_line(
        timestamp_ms,
        &[("Pipeline", pipeline), ("Function", "compactor"), ("Table", &report.table)],
        &[
            m("FilesCommitted", "Count", report.files),
            m("RowsCommitted", "Count", report.rows),
            m("BytesCommitted", "Bytes", report.bytes),
            m("CommitLatency", "Milliseconds", report.commit_ms),
            m("RecoveredFiles", "Count", report.recovered),
            m("FilesRemaining", "Count", report.remaining),
            m("CommitConflicts", "Count", u64::from(report.conflicts)),
            m("StagedFilesCommitted", "Count", report.staged),
            m("FilesMerged", "Count", report.merged_inputs),
            m("MergedFilesWritten", "Count", report.merged_outputs),
            m("MergeBytesRead", "Bytes", report.bytes_read),
            m("MergeBytesWritten", "Bytes", report.bytes_written),
            m("MergeTime", "Milliseconds", report.merge_ms),
            m("MergeDeferred", "Count", report.merge_deferred),
            m("MergedInputsDeleted", "Count", report.inputs_deleted),
            m("FilesRewritten", "Count", report.rewritten_inputs),
            m("RewrittenFilesWritten", "Count", report.rewritten_outputs),
            m("SnapshotsExpired", "Count", report.snapshots_expired),
            m("FilesDeleted", "Count", report.files_deleted),
            m("MaintenanceTime", "Milliseconds", report.maintain_ms),
            // Change streams: what the row delta's lookup read and deleted.
            m("ChangeKeys", "Count", report.change_stats.as_ref().map_or(0, |s| s.keys)),
            m("ChangeFilesRead", "Count", report.change_stats.as_ref().map_or(0, |s| s.files_read)),
            m("RowsReplaced", "Count", report.change_stats.as_ref().map_or(0, |s| s.replaced)),
            m("StaleChanges", "Count", report.change_stats.as_ref().map_or(0, |s| s.stale)),
        ],
        &[("CommittedSnapshot", json!(report.snapshot_id.map(|id| id.to_string())))],
    )
}

/// Orphan removal's metrics for one table: files deleted and their bytes, and unreferenced files kept for the
/// safety window (a count that keeps growing run after run points at a writer floe does not know about).
pub fn orphans_line(timestamp_ms: i64, pipeline: &str, report: &Orphans) -> String {
    emf_line(
        timestamp_ms,
        &[("Pipeline", pipeline), ("Function", "compactor"), ("Table", &report.table)],
        &[
            m("OrphanFilesDeleted", "Count", report.deleted),
            m("OrphanBytesFound", "Bytes", report.orphan_bytes),
            m("OrphanFilesTooRecent", "Count", report.too_recent),
            m("FilesListed", "Count", report.listed),
        ],
        &[("OrphanRemovalComplete", json!(report.complete))],
    )
}

/// A table the compactor could not process this run: `TableErrors` = 1 (the alarm on compactor errors sums it
/// across tables), with the error as a searchable property.
pub fn table_error_line(timestamp_ms: i64, pipeline: &str, table: &str, error: &str, retryable: bool) -> String {
    emf_line(
        timestamp_ms,
        &[("Pipeline", pipeline), ("Function", "compactor"), ("Table", table)],
        &[m("TableErrors", "Count", 1)],
        &[("Error", json!(error)), ("Retryable", json!(retryable))],
    )
}

/// The compactor's pipeline-level metrics for one run: tables that still have staged files after it (the
/// commit budget or `max_files_per_commit` was not enough) or that failed. Emitted every run, so the
/// staleness alarm also fires when the compactor stops running (missing data is breaching).
pub fn compactor_run_line(timestamp_ms: i64, pipeline: &str, reports: &[TableReport], failed: usize) -> String {
    let behind = reports.iter().filter(|r| r.remaining > 0).count() + failed;
    let remaining: u64 = reports.iter().map(|r| r.remaining).sum();
    emf_line(
        timestamp_ms,
        &[("Pipeline", pipeline), ("Function", "compactor")],
        &[m("TablesBehind", "Count", behind as u64), m("StagedFilesWaiting", "Count", remaining)],
        &[],
    )
}

/// One run of a backfill split: what it read and staged, and whether the split is done (`SplitsUnfinished` = 1
/// when the invocation's time ran out first and the state machine runs it again).
pub fn backfill_split_line(timestamp_ms: i64, pipeline: &str, run: &str, report: &SplitReport) -> String {
    emf_line(
        timestamp_ms,
        &[("Pipeline", pipeline), ("Function", "backfill")],
        &[
            m("BackfillRecords", "Count", report.records),
            m("BackfillInputBytes", "Bytes", report.input_bytes),
            m("BackfillRows", "Count", report.rows),
            m("BackfillDeadLetters", "Count", report.dead_letters),
            m("BackfillFiles", "Count", report.files),
            m("SplitsUnfinished", "Count", u64::from(!report.done)),
            Metric { name: "BackfillSplitSeconds", unit: "Seconds", value: report.seconds },
        ],
        &[("Run", json!(run)), ("Split", json!(report.id)), ("Next", json!(report.next))],
    )
}

/// A whole backfill run, summed by the state machine's last step.
pub fn backfill_run_line(
    timestamp_ms: i64,
    pipeline: &str,
    run: &str,
    total: &SplitReport,
    splits: u64,
    failed: u64,
) -> String {
    emf_line(
        timestamp_ms,
        &[("Pipeline", pipeline), ("Function", "backfill")],
        &[
            m("BackfillRunRecords", "Count", total.records),
            m("BackfillRunRows", "Count", total.rows),
            m("BackfillRunDeadLetters", "Count", total.dead_letters),
            m("BackfillRunBytes", "Bytes", total.input_bytes),
            m("BackfillRunSplits", "Count", splits),
            m("BackfillRunSplitsFailed", "Count", failed),
        ],
        &[("Run", json!(run))],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_line_counts_tables_behind() {
        let reports = [
            TableReport { table: "a.b".into(), remaining: 3, ..Default::default() },
            TableReport { table: "a.c".into(), ..Default::default() },
        ];
        let line: Value = serde_json::from_str(&compactor_run_line(1, "p", &reports, 1)).unwrap();
        assert_eq!(line["TablesBehind"], 2.0);
        assert_eq!(line["StagedFilesWaiting"], 3.0);
        assert_eq!(line["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0], json!(["Pipeline", "Function"]));
    }

    #[test]
    fn emf_line_has_the_documented_shape() {
        let report = IngestReport { records: 10, rows: 8, dead_letters: 2, input_bytes: 1234, ..Default::default() };
        let line: Value = serde_json::from_str(&ingest_line(1_700_000_000_000, "clicks", &report, 42)).unwrap();
        let spec = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(spec["Namespace"], "floe");
        assert_eq!(spec["Dimensions"][0], json!(["Pipeline", "Function"]));
        let names: Vec<&str> =
            spec["Metrics"].as_array().unwrap().iter().map(|m| m["Name"].as_str().unwrap()).collect();
        // Every declared metric has a value at the root (EMF drops the line otherwise).
        for name in &names {
            assert!(line[name].is_number(), "{name}");
        }
        assert_eq!(line["RowsWritten"], 8.0);
        assert_eq!(line["InputBytes"], 1234.0);
        assert_eq!(line["Pipeline"], "clicks");
        assert_eq!(line["_aws"]["Timestamp"], 1_700_000_000_000_i64);

        let t = TableReport { table: "a.b".into(), snapshot_id: Some(7), commit_ms: 12, ..Default::default() };
        let line: Value = serde_json::from_str(&compactor_line(1, "clicks", &t)).unwrap();
        assert_eq!(line["Table"], "a.b");
        let names: Vec<&str> = line["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["Name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"FilesMerged") && names.contains(&"MergeBytesWritten"), "{names:?}");
        let failed: Value = serde_json::from_str(&table_error_line(1, "clicks", "a.b", "iceberg: boom", true)).unwrap();
        assert_eq!((failed["TableErrors"].as_f64(), failed["Table"].as_str()), (Some(1.0), Some("a.b")));
        assert_eq!(failed["Error"], "iceberg: boom");
        assert_eq!(line["CommittedSnapshot"], "7");
        assert_eq!(line["CommitLatency"], 12.0);
    }
}
