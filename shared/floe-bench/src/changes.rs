//! The change-stream benchmark (`floe-bench changes`): a table of `rows` keys loaded through the upsert path on
//! the embedded default and compacted, then change batches committed against it:
//!
//! - one batch of `batch_keys` keys spread over the whole key range (every file may hold one: the worst case
//!   for pruning by bounds) and one of the most recent keys (time-ordered ids: bounds prune to a file or two);
//! - `commits` more spread batches with rewrites off (delete files pile up), then the compactor's maintenance
//!   with rewrites on: delete files per data file before and after, and the snapshot ids of both states for a
//!   full-scan comparison (bench/run.py scans them with PyIceberg).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use floe_core::{Compactor, CompactorOptions, Ingestor, MskEvent, MskRecord, Pipeline, TableLayout, TableReport};
use floe_embedded::Embedded;
use serde_json::json;

/// Kafka partitions of the topic (a key stays in its partition).
const PARTITIONS: u64 = 4;
/// Records per MSK event per partition (the mapping's largest batch is 10,000 records).
const EVENT_RECORDS: u64 = 10_000;

fn pipeline(rewrites: bool) -> String {
    let min_input = if rewrites { "5" } else { "0" };
    format!(
        r#"
name = "changes"
[source]
topics = ["users"]
changes = "upsert"
[table]
namespace = "bench"
name = "users"
primary_key = ["id"]
target_file_size_mb = 16
properties = {{ "floe.rewrite.min-input-files" = "{min_input}" }}
[[table.columns]]
name = "id"
type = "long"
required = true
[[table.columns]]
name = "name"
type = "string"
[[table.columns]]
name = "score"
type = "long"
[[table.columns]]
name = "updated"
type = "long"
"#
    )
}

/// MSK events of `changes` ((key, version; `None` deletes)): per partition, slices of [`EVENT_RECORDS`], offsets
/// continuing from `offsets`. Built as structs: a million records in well under a second.
fn events(changes: &[(u64, Option<u64>)], offsets: &mut [i64; PARTITIONS as usize]) -> Vec<MskEvent> {
    let mut by_partition: Vec<Vec<MskRecord>> = vec![Vec::new(); PARTITIONS as usize];
    for &(key, version) in changes {
        let p = (key % PARTITIONS) as usize;
        let value = version.map(|v| {
            let row = json!({"id": key, "name": format!("user-{key}-v{v}"), "score": key * 7 % 1000, "updated": v});
            STANDARD.encode(row.to_string())
        });
        by_partition[p].push(MskRecord {
            topic: Some("users".into()),
            partition: p as i64,
            offset: offsets[p],
            timestamp: 1_795_000_000_000 + offsets[p],
            timestamp_type: Some("CREATE_TIME".into()),
            key: Some(STANDARD.encode(key.to_string())),
            value,
            ..Default::default()
        });
        offsets[p] += 1;
    }
    let mut out = Vec::new();
    for (p, records) in by_partition.into_iter().enumerate() {
        for chunk in records.chunks(EVENT_RECORDS as usize) {
            let records = BTreeMap::from([(format!("users-{p}"), chunk.to_vec())]);
            out.push(MskEvent { event_source: Some("aws:kafka".into()), records, ..Default::default() });
        }
    }
    out
}

/// A deterministic spread of `n` keys over `0..rows`.
fn spread(rows: u64, n: u64, salt: u64) -> Vec<u64> {
    let step = (rows / n).max(1);
    (0..n).map(|i| (i * step + (i * 7919 + salt * 104729) % step) % rows).collect()
}

struct Bench {
    embedded: Embedded,
    pipeline: Arc<Pipeline>,
    ingestor: Ingestor,
    offsets: [i64; PARTITIONS as usize],
}

impl Bench {
    /// Ingest `changes`; the seconds the handler took (building the events is not counted).
    async fn ingest(&mut self, changes: &[(u64, Option<u64>)]) -> anyhow::Result<f64> {
        let events = events(changes, &mut self.offsets);
        let started = Instant::now();
        for event in &events {
            self.ingestor.handle(event).await?;
        }
        Ok(started.elapsed().as_secs_f64())
    }

    fn compactor(&self, rewrites: bool) -> anyhow::Result<Compactor> {
        let pipeline = Arc::new(floe_core::parse_pipeline(&pipeline(rewrites), "changes bench")?);
        let budget = Duration::from_secs(900);
        let options = CompactorOptions { merge_budget: budget, time_budget: budget, ..Default::default() };
        Ok(Compactor::new(pipeline, &self.embedded.backends(), options)?)
    }

    /// One compactor run: its wall time and the target table's report.
    async fn commit(&self, compactor: &Compactor) -> anyhow::Result<(f64, TableReport)> {
        let started = Instant::now();
        let reports = compactor.run().await?;
        let wall = started.elapsed().as_secs_f64();
        let report =
            reports.into_iter().find(|r| r.table == "bench.users").ok_or_else(|| anyhow::anyhow!("no report"))?;
        Ok((wall, report))
    }

    /// Live data and delete files, and the delete files a reader opens per data file (those whose `file_path`
    /// bounds admit it, as scan planning matches them): mean and maximum over the data files.
    async fn files(&self) -> anyhow::Result<serde_json::Value> {
        let ident = TableLayout::target(&self.pipeline, &self.embedded.warehouse)?.ident();
        let table = iceberg::Catalog::load_table(self.embedded.catalog.as_ref(), &ident).await?;
        let snapshot = table.metadata().current_snapshot().ok_or_else(|| anyhow::anyhow!("no snapshot"))?;
        let summary = &snapshot.summary().additional_properties;
        let total = |k: &str| summary.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let (mut data, mut deletes) = (Vec::new(), Vec::new());
        for manifest in table.manifest_list_reader(snapshot).load().await?.entries() {
            for entry in manifest.load_manifest(table.file_io()).await?.entries() {
                if entry.status() == iceberg::spec::ManifestStatus::Deleted {
                    continue;
                }
                match entry.content_type() {
                    iceberg::spec::DataContentType::Data => data.push(entry.file_path().to_string()),
                    _ => {
                        let bound = |b: &std::collections::HashMap<i32, iceberg::spec::Datum>| {
                            b.get(&2147483546).map(|d| d.to_string().trim_matches('"').to_string())
                        };
                        let f = entry.data_file();
                        deletes.push((bound(f.lower_bounds()), bound(f.upper_bounds())));
                    }
                }
            }
        }
        let per_file: Vec<usize> = data
            .iter()
            .map(|path| {
                let admits = |(l, u): &&(Option<String>, Option<String>)| {
                    l.as_deref().is_none_or(|l| l <= path.as_str()) && u.as_deref().is_none_or(|u| path.as_str() <= u)
                };
                deletes.iter().filter(admits).count()
            })
            .collect();
        Ok(json!({"snapshot_id": snapshot.snapshot_id(), "data_files": data.len(), "delete_files": deletes.len(),
            "delete_files_per_data_file": per_file.iter().sum::<usize>() as f64 / data.len().max(1) as f64,
            "max_delete_files_per_data_file": per_file.iter().max().copied().unwrap_or(0),
            "rows": total("total-records") - total("total-position-deletes"),
            "position_deletes": total("total-position-deletes")}))
    }
}

fn stats(wall: f64, r: &TableReport) -> serde_json::Value {
    let s = r.change_stats.clone().unwrap_or_default();
    json!({"run_s": wall, "commit_ms": r.commit_ms, "keys": s.keys, "files_live": s.files_live,
        "files_read": s.files_read, "rows_read": s.rows_read, "row_groups_skipped": s.row_groups_skipped,
        "replaced": s.replaced})
}

/// See the module docs.
pub async fn run(home: &Path, rows: u64, batch_keys: u64, commits: u64) -> anyhow::Result<serde_json::Value> {
    if home.exists() {
        std::fs::remove_dir_all(home)?;
    }
    std::fs::create_dir_all(home)?;
    let embedded = Embedded::open(home).await?;
    let pipeline = Arc::new(floe_core::parse_pipeline(&pipeline(false), "changes bench")?);
    let ingestor = Ingestor::new(pipeline.clone(), &embedded.backends()).await?;
    let mut bench = Bench { embedded, pipeline, ingestor, offsets: [0; PARTITIONS as usize] };

    // The table: keys in ascending order (time-ordered ids), a million per commit, then compacted.
    let load_started = Instant::now();
    let mut load_ingest_s = 0.0;
    let loader = bench.compactor(true)?;
    for start in (0..rows).step_by(1_000_000) {
        let batch: Vec<(u64, Option<u64>)> = (start..(start + 1_000_000).min(rows)).map(|k| (k, Some(0))).collect();
        load_ingest_s += bench.ingest(&batch).await?;
        bench.commit(&loader).await?;
    }
    // Rewrites run within each run's budget: go on until none is due.
    while bench.commit(&loader).await?.1.rewritten_inputs > 0 {}
    let load_s = load_started.elapsed().as_secs_f64();
    let loaded = bench.files().await?;

    let compactor = bench.compactor(false)?;
    let spread_keys = spread(rows, batch_keys, 1);
    let batch: Vec<(u64, Option<u64>)> =
        spread_keys.iter().enumerate().map(|(i, k)| (*k, (i % 10 != 0).then_some(1))).collect();
    let spread_ingest_s = bench.ingest(&batch).await?;
    let (wall, report) = bench.commit(&compactor).await?;
    let spread_commit = stats(wall, &report);
    let recent: Vec<(u64, Option<u64>)> = (rows - batch_keys..rows).map(|k| (k, Some(1))).collect();
    bench.ingest(&recent).await?;
    let (wall, report) = bench.commit(&compactor).await?;
    let recent_commit = stats(wall, &report);

    // Delete files pile up without rewrites, then the compactor's maintenance applies them.
    let mut commit_s = Vec::new();
    for c in 0..commits {
        let keys = spread(rows, batch_keys, c + 2);
        let batch: Vec<(u64, Option<u64>)> = keys.iter().map(|k| (*k, Some(c + 2))).collect();
        bench.ingest(&batch).await?;
        commit_s.push(bench.commit(&compactor).await?.0);
    }
    let pending = bench.files().await?;
    // A new process, as a redeployment with rewrites on: its first run sets the table property back.
    let maintainer = bench.compactor(true)?;
    let maintain_started = Instant::now();
    let mut rewritten = 0;
    loop {
        let inputs = bench.commit(&maintainer).await?.1.rewritten_inputs;
        rewritten += inputs;
        if inputs == 0 {
            break;
        }
    }
    let maintain_s = maintain_started.elapsed().as_secs_f64();
    let compacted = bench.files().await?;
    Ok(json!({"rows": rows, "batch_keys": batch_keys, "load_s": load_s, "load_ingest_s": load_ingest_s,
        "loaded": loaded, "spread_ingest_s": spread_ingest_s, "spread": spread_commit, "recent": recent_commit,
        "commits": commits, "commit_s_median": median(&mut commit_s), "pending": pending,
        "maintain_s": maintain_s, "rewritten_files": rewritten, "compacted": compacted}))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}
