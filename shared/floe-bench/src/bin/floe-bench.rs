//! floe-bench: the Rust side of `make bench` (driven by `bench/run.py`).
//!
//! - `generate`: the deterministic events, the pipeline file and the Arrow schema (for the Python peer).
//! - `floe`: floe's ingest handler on the embedded default, single-threaded (or `--threads N`), timed from
//!   serialized event to Parquet files on disk and staged in the state store.
//! - `baseline`: the arrow-rs baseline on the same events.
//! - `commit`: stage N small files through the ingest handler, then time one compactor run committing them.
//! - `compaction`: stage N small files, then time one compactor run that merges them before committing.
//! - `changes`: change batches committed against a table of 1 M or 10 M keys (see `floe_bench::changes`).
//! - `history`: N commits of one small file each with floe's maintenance on; commit time as history grows.
//!
//! Every command prints one JSON line of figures.

// The functions' allocator, for floe and the baseline alike (one binary, one allocator).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use floe_bench::avro::StaticRegistry;
use floe_bench::{baseline, cpu, generate};
use floe_core::{Compactor, CompactorOptions, IngestReport, Ingestor, MskEvent, Pipeline, Router, SchemaKind};
use floe_embedded::Embedded;
use serde_json::json;

#[derive(Parser)]
#[command(about = "floe benchmarks (see bench/run.py)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write `<out>/events/*.json`, `<out>/pipeline.toml` and `<out>/schema.arrow`.
    Generate {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 100_000)]
        records: usize,
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Which records: the ~1.2 KB commerce records, or the lean ~800-byte click events (5,000 an event).
        #[arg(long, value_enum, default_value_t = generate::Workload::Commerce)]
        workload: generate::Workload,
    },
    /// Write `<out>/events/*.json` with the records of `--data` as Confluent-framed Avro values, and
    /// `<out>/pipeline.toml` (`format = "avro"`), `<out>/schema.avsc`, `<out>/schema.arrow`.
    Avro {
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Write `<out>/events/*.json` with the records of `--data` as Confluent-framed Protobuf values, and
    /// `<out>/pipeline.toml` (`format = "protobuf"`), `<out>/schema.proto`, `<out>/schema.arrow`.
    Protobuf {
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// floe's ingest handler over every event of `--data`, `--repeat` times, each into a fresh home under `--work`.
    /// With Avro or Protobuf data (`floe-bench avro`, `floe-bench protobuf`), the schema comes from an in-process
    /// registry.
    Floe(RunArgs),
    /// The arrow-rs baseline over every event of `--data`, `--repeat` times, writing under `--work`.
    Baseline(RunArgs),
    /// The records of `--data` as an archive of JSON-lines objects (50,000 records each), loaded by floe's
    /// backfill (planner, split runner, the ingest path under backfill fences) into a fresh home, `--repeat` times.
    Backfill(RunArgs),
    /// Stage `--files` data files (one small event each) under `--home`, then time one compactor run.
    Commit {
        #[arg(long)]
        home: PathBuf,
        #[arg(long, default_value_t = 1_000)]
        files: usize,
        #[arg(long, default_value_t = 20)]
        records_per_file: usize,
    },
    /// Stage `--files` data files under `--home`, then time one compactor run that merges them (one thread).
    Compaction {
        #[arg(long)]
        home: PathBuf,
        #[arg(long, default_value_t = 1_000)]
        files: usize,
        #[arg(long, default_value_t = 200)]
        records_per_file: usize,
        /// Partition the table by event type and a 4-way bucket of the event id (28 partitions), as a
        /// realistic pipeline is, instead of leaving it unpartitioned.
        #[arg(long)]
        partitioned: bool,
        /// Commit the staged files as they are (the table without floe's merging, for comparison).
        #[arg(long)]
        no_merge: bool,
    },
    /// A table of `--rows` keys loaded through the upsert path, then change batches of `--batch-keys` keys
    /// committed against it (see floe_bench::changes).
    Changes {
        #[arg(long)]
        home: PathBuf,
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
        #[arg(long, default_value_t = 10_000)]
        batch_keys: u64,
        #[arg(long, default_value_t = 10)]
        commits: u64,
    },
    /// `--commits` compactor runs of one small staged file each (maintenance on), sampling commit time.
    History {
        #[arg(long)]
        home: PathBuf,
        #[arg(long, default_value_t = 10_000)]
        commits: usize,
        /// Report the commits around these counts of prior commits.
        #[arg(long, value_delimiter = ',', default_value = "100,10000")]
        at: Vec<usize>,
    },
}

/// What a timed implementation runs on, and how often.
#[derive(Args)]
struct RunArgs {
    #[arg(long)]
    data: PathBuf,
    #[arg(long)]
    work: PathBuf,
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// floe only: the same records as a change stream (`changes = "upsert"`, primary key `event_id`).
    #[arg(long)]
    upsert: bool,
    /// floe only: runtime worker threads, and topic-partitions of an event staged at once (as a Lambda function
    /// with that many vCPUs runs). 1: one thread, the per-core figure.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn read_events(data: &Path) -> anyhow::Result<Vec<Vec<u8>>> {
    let dir = data.join("events");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {} (run `floe-bench generate` first)", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    paths.sort();
    paths.iter().map(|p| std::fs::read(p).with_context(|| format!("reading {}", p.display()))).collect()
}

/// Wall and CPU time of one timed section.
struct Timer(Instant, Option<Duration>);

impl Timer {
    fn start() -> Timer {
        Timer(Instant::now(), cpu::process_cpu())
    }

    fn stop(&self) -> (f64, f64) {
        let wall = self.0.elapsed().as_secs_f64();
        let cpu = match (self.1, cpu::process_cpu()) {
            (Some(a), Some(b)) => (b - a).as_secs_f64(),
            _ => wall,
        };
        (wall, cpu)
    }
}

/// One timed run's figures.
fn run_figures((wall, cpu): (f64, f64), records: u64, written: baseline::Written) -> serde_json::Value {
    json!({"wall_s": wall, "cpu_s": cpu, "records": records, "rows": written.rows, "files": written.files,
        "parquet_bytes": written.bytes})
}

/// An implementation's figures over every run.
fn results(name: &str, events: &[Vec<u8>], runs: Vec<serde_json::Value>) -> serde_json::Value {
    json!({"impl": name, "events": events.len(), "event_bytes": events.iter().map(Vec::len).sum::<usize>(),
        "runs": runs})
}

fn fresh(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    Ok(())
}

async fn ingestor(home: &Path, pipeline: Arc<Pipeline>) -> anyhow::Result<(Embedded, Ingestor)> {
    let e = Embedded::open(home).await?;
    let registry: Option<Arc<dyn floe_core::SchemaRegistry>> = match pipeline.format.registry {
        Some(_) => Some(Arc::new(match pipeline.format.value {
            floe_core::ValueFormat::Protobuf => {
                StaticRegistry(SchemaKind::Protobuf, floe_bench::protobuf::PROTO.to_string())
            }
            _ => StaticRegistry(SchemaKind::Avro, floe_bench::avro::avro_schema()?),
        })),
        None => None,
    };
    let ingestor = Ingestor::with_registry(pipeline, &e.backends(), registry).await?;
    Ok((e, ingestor))
}

async fn run_floe(RunArgs { data, work, repeat, upsert, threads }: &RunArgs) -> anyhow::Result<serde_json::Value> {
    let events = read_events(data)?;
    let mut toml = std::fs::read_to_string(data.join("pipeline.toml"))?;
    if *upsert {
        toml = toml
            .replace("format = \"json\"\n", "format = \"json\"\nchanges = \"upsert\"\n")
            .replace("name = \"events\"\n", "name = \"events\"\nprimary_key = [\"event_id\"]\n");
    }
    let pipeline = Arc::new(floe_core::parse_pipeline(&toml, "bench pipeline")?);
    let mut runs = Vec::new();
    for i in 0..*repeat {
        let home = work.join(format!("floe-{i}"));
        fresh(&home)?;
        let (_e, ingestor) = ingestor(&home, pipeline.clone()).await?;
        // The function's path: the router, staging an event's partitions `threads` at a time.
        let router = Router::new(vec![ingestor])?.with_concurrency(*threads);
        let timer = Timer::start();
        let mut total = IngestReport::default();
        for bytes in &events {
            // The function's handler reads the invocation body itself: reading it is part of the work.
            for (_, report) in router.handle_body_at(bytes, chrono::Utc::now().timestamp_millis()).await? {
                total.add(&report);
            }
        }
        let times = timer.stop();
        // Upserts collapse a key's changes within a batch (none repeat a key in the bench data).
        let landed = total.rows + total.collapsed == total.records;
        anyhow::ensure!(landed && total.dead_letters == 0, "not every record landed: {total:?}");
        let written = baseline::Written { rows: total.rows, files: total.files, bytes: total.bytes };
        runs.push(run_figures(times, total.records, written));
    }
    let name = match (*upsert, pipeline.format.value) {
        (true, _) => "floe-upsert",
        (false, floe_core::ValueFormat::Avro) => "floe-avro",
        (false, floe_core::ValueFormat::Protobuf) => "floe-protobuf",
        (false, _) => "floe",
    };
    let mut out = results(name, &events, runs);
    out["threads"] = json!(threads);
    Ok(out)
}

/// Records per archive object in the backfill bench: a typical export's part size (a few tens of MB).
const ARCHIVE_OBJECT_RECORDS: usize = 50_000;

async fn run_backfill(RunArgs { data, work, repeat, .. }: &RunArgs) -> anyhow::Result<serde_json::Value> {
    use floe_core::backfill::{Cap, ObjectReader, SplitSource, list_objects, plan_objects, run_split};
    let events = read_events(data)?;
    // The events' values, as an export would hold them: one JSON document per line.
    let archive = work.join("archive");
    fresh(&archive)?;
    let mut lines: Vec<Vec<u8>> = Vec::new();
    for bytes in &events {
        let event: MskEvent = serde_json::from_slice(bytes)?;
        for group in floe_core::group_records(&event, &["*".to_string()])? {
            lines.extend(group.records.into_iter().filter_map(|r| r.value));
        }
    }
    for (i, chunk) in lines.chunks(ARCHIVE_OBJECT_RECORDS).enumerate() {
        std::fs::write(archive.join(format!("part-{i:05}.jsonl")), chunk.join(&b'\n'))?;
    }
    let toml = std::fs::read_to_string(data.join("pipeline.toml"))?;
    let pipeline = Arc::new(floe_core::parse_pipeline(&toml, "bench pipeline")?);
    let mut runs = Vec::new();
    for i in 0..*repeat {
        let home = work.join(format!("backfill-{i}"));
        fresh(&home)?;
        let (e, ingestor) = ingestor(&home, pipeline.clone()).await?;
        let router = floe_core::Router::new(vec![ingestor])?;
        let backends = e.backends();
        let timer = Timer::start();
        let location = format!("file://{}/", std::fs::canonicalize(&archive)?.display());
        let (objects, _) = list_objects(backends.lister.as_ref(), &location).await?;
        let plan = plan_objects(backends.state.as_ref(), &pipeline, "bench", &objects, Cap::default()).await?;
        let mut total = floe_core::backfill::SplitReport::default();
        for split in &plan.splits {
            let SplitSource::Object(object) = &split.source else { anyhow::bail!("an object split") };
            let mut reader = ObjectReader::new(backends.file_io.clone(), object.clone());
            let r = run_split(&router, backends.state.as_ref(), split, &mut reader, None, &mut |_| {}).await?;
            anyhow::ensure!(r.done, "split {} not done", r.id);
            total.add_split(&r);
        }
        let times = timer.stop();
        anyhow::ensure!(
            total.rows == lines.len() as u64 && total.dead_letters == 0,
            "not every record landed: {total:?}"
        );
        let written = baseline::Written { rows: total.rows, files: total.files, bytes: total.bytes };
        runs.push(run_figures(times, total.records, written));
    }
    Ok(results("floe-backfill", &events, runs))
}

/// The Arrow schema `floe-bench generate` wrote beside the events (each workload's own).
fn data_schema(data: &Path) -> anyhow::Result<arrow_schema::SchemaRef> {
    let file = std::fs::File::open(data.join("schema.arrow")).context("reading schema.arrow")?;
    Ok(arrow_ipc::reader::FileReader::try_new(file, None)?.schema())
}

fn run_baseline(RunArgs { data, work, repeat, .. }: &RunArgs) -> anyhow::Result<serde_json::Value> {
    let events = read_events(data)?;
    let schema = data_schema(data)?;
    let properties = baseline::writer_properties();
    let mut runs = Vec::new();
    for i in 0..*repeat {
        let out = work.join(format!("baseline-{i}"));
        fresh(&out)?;
        let timer = Timer::start();
        let mut total = baseline::Written::default();
        for (n, event) in events.iter().enumerate() {
            total.add(baseline::handle(event, &schema, &properties, &out, &format!("{n:05}"))?);
        }
        runs.push(run_figures(timer.stop(), total.rows, total));
    }
    Ok(results("arrow-rs", &events, runs))
}

fn write_generated(
    out: &Path,
    records: usize,
    seed: u64,
    workload: generate::Workload,
) -> anyhow::Result<serde_json::Value> {
    let options = workload.options(records, seed);
    let generated = generate::generate(&options);
    fresh(&out.join("events"))?;
    for (i, event) in generated.events.iter().enumerate() {
        std::fs::write(out.join("events").join(format!("event-{i:05}.json")), event)?;
    }
    std::fs::write(out.join("pipeline.toml"), workload.pipeline_toml("bench"))?;
    let schema = workload.arrow_schema();
    let mut writer = arrow_ipc::writer::FileWriter::try_new(std::fs::File::create(out.join("schema.arrow"))?, &schema)?;
    writer.finish()?;
    let largest = generated.events.iter().map(Vec::len).max().unwrap_or(0);
    let summary = json!({"events": generated.events.len(), "records": generated.records,
        "value_bytes": generated.value_bytes, "event_bytes": generated.events.iter().map(Vec::len).sum::<usize>(),
        "largest_event_bytes": largest, "seed": seed, "workload": workload.name(),
        "partitions_per_event": options.partitions_per_event});
    std::fs::write(out.join("summary.json"), summary.to_string())?;
    Ok(summary)
}

async fn run_commit(home: &Path, files: usize, records_per_file: usize) -> anyhow::Result<serde_json::Value> {
    fresh(home)?;
    // One partition per event and events of about `records_per_file` records: one staged data file each.
    let options = generate::Options {
        records: files * records_per_file,
        partitions: 1,
        partitions_per_event: 1,
        batch_size: Some(records_per_file),
        ..Default::default()
    };
    let generated = generate::generate(&options);
    let pipeline = Arc::new(floe_core::parse_pipeline(&generate::pipeline_toml("bench"), "bench pipeline")?);
    let (e, ingestor) = ingestor(home, pipeline.clone()).await?;
    let mut staged = IngestReport::default();
    for bytes in &generated.events {
        staged.add(&ingestor.handle(&serde_json::from_slice(bytes)?).await?);
    }
    // The metadata commit alone: merging is off (measured by the compaction row).
    let options = CompactorOptions { merge_budget: std::time::Duration::ZERO, ..Default::default() };
    let compactor = Compactor::new(pipeline, &e.backends(), options)?;
    let timer = Timer::start();
    let reports = compactor.run().await?;
    let (wall, cpu) = timer.stop();
    let committed: u64 = reports.iter().map(|r| r.staged).sum();
    let commit_ms: u64 = reports.iter().map(|r| r.commit_ms).sum();
    anyhow::ensure!(committed == staged.files, "staged {} files, committed {committed}", staged.files);
    Ok(json!({"staged_files": staged.files, "committed_files": committed, "rows": staged.rows, "run_s": wall,
        "cpu_s": cpu, "metadata_commit_ms": commit_ms}))
}

/// Events of one Kafka partition with about `records_per_file` records each: one staged data file per event
/// in the unpartitioned bench table.
fn small_events(files: usize, records_per_file: usize) -> anyhow::Result<Vec<MskEvent>> {
    let options = generate::Options {
        records: files * records_per_file,
        partitions: 1,
        partitions_per_event: 1,
        batch_size: Some(records_per_file),
        ..Default::default()
    };
    generate::generate(&options).events.iter().map(|b| Ok(serde_json::from_slice(b)?)).collect()
}

const PARTITIONED: &str = "\n[[table.partition]]\ncolumn = \"event_type\"\ntransform = \"identity\"\n\n\
    [[table.partition]]\ncolumn = \"event_id\"\ntransform = \"bucket[4]\"\n";

async fn run_compaction(
    home: &Path,
    files: usize,
    records_per_file: usize,
    partitioned: bool,
    no_merge: bool,
) -> anyhow::Result<serde_json::Value> {
    fresh(home)?;
    let mut toml = generate::pipeline_toml("bench");
    if partitioned {
        toml.push_str(PARTITIONED);
    }
    let pipeline = Arc::new(floe_core::parse_pipeline(&toml, "bench pipeline")?);
    let (e, ingestor) = ingestor(home, pipeline.clone()).await?;
    let mut staged = IngestReport::default();
    for event in small_events(files, records_per_file)? {
        staged.add(&ingestor.handle(&event).await?);
    }
    let budget = Duration::from_secs(600);
    let merge_budget = if no_merge { Duration::ZERO } else { budget };
    let options = CompactorOptions { merge_budget, time_budget: budget, ..Default::default() };
    let compactor = Compactor::new(pipeline, &e.backends(), options)?;
    let timer = Timer::start();
    let reports = compactor.run().await?;
    let (wall, cpu) = timer.stop();
    let r = reports.iter().find(|r| r.table == "bench.events").context("no report for bench.events")?;
    anyhow::ensure!(r.staged == staged.files, "staged {} files, committed {}", staged.files, r.staged);
    let table =
        e.catalog.load_table(&floe_core::TableLayout::target(compactor.pipeline(), &e.warehouse)?.ident()).await?;
    let live = floe_core::live_data_files(&table).await?;
    let partitions: std::collections::HashSet<_> = live.iter().map(|f| f.partition().clone()).collect();
    Ok(json!({"staged_files": r.staged, "merged_inputs": r.merged_inputs, "committed_files": r.files,
        "partitions": partitions.len(), "live_files": live.len(),
        "bytes_read": r.bytes_read, "bytes_written": r.bytes_written, "merge_ms": r.merge_ms, "run_s": wall,
        "cpu_s": cpu, "mb_per_s_cpu": r.bytes_read as f64 / 1e6 / cpu, "avg_file_before": r.staged_bytes / r.staged.max(1),
        "avg_file_after": r.bytes / r.files.max(1)}))
}

async fn run_history(home: &Path, commits: usize, at: &[usize]) -> anyhow::Result<serde_json::Value> {
    fresh(home)?;
    // Snapshots older than a minute expire: at this bench's pace that keeps the last ~1,000-2,000 commits, as a
    // day of one commit a minute does with floe's default of 24 hours.
    let toml = generate::pipeline_toml("bench").replace(
        r#"properties = { "write.parquet.compression-codec" = "zstd" }"#,
        r#"properties = { "write.parquet.compression-codec" = "zstd", "history.expire.max-snapshot-age-ms" = "60000" }"#,
    );
    let pipeline = Arc::new(floe_core::parse_pipeline(&toml, "bench pipeline")?);
    let (e, ingestor) = ingestor(home, pipeline.clone()).await?;
    let compactor = Compactor::new(pipeline, &e.backends(), CompactorOptions::default())?;
    let events = small_events(commits, 5)?;
    let mut samples: Vec<serde_json::Value> = Vec::new();
    let mut window: Vec<(u64, u64)> = Vec::new();
    let started = Instant::now();
    for (n, event) in events.iter().enumerate() {
        ingestor.handle(event).await?;
        let t = Instant::now();
        let reports = compactor.run().await?;
        let run_ms = t.elapsed().as_millis() as u64;
        let r = reports.iter().find(|r| r.table == "bench.events").context("no report for bench.events")?;
        window.push((r.commit_ms, run_ms));
        if window.len() > 21 {
            window.remove(0);
        }
        if at.contains(&(n + 1)) || n + 1 == events.len() {
            let table = e
                .catalog
                .load_table(&floe_core::TableLayout::target(compactor.pipeline(), &e.warehouse)?.ident())
                .await?;
            let manifests = match table.metadata().current_snapshot() {
                Some(s) => table.manifest_list_reader(s).load().await?.entries().len(),
                None => 0,
            };
            let mut commit: Vec<u64> = window.iter().map(|w| w.0).collect();
            let mut run: Vec<u64> = window.iter().map(|w| w.1).collect();
            commit.sort_unstable();
            run.sort_unstable();
            samples.push(json!({"prior_commits": n + 1, "commit_ms_median": commit[commit.len() / 2],
                "run_ms_median": run[run.len() / 2], "snapshots": table.metadata().snapshots().count(),
                "manifests": manifests, "live_files": floe_core::live_data_files(&table).await?.len()}));
        }
    }
    Ok(json!({"commits": events.len(), "wall_s": started.elapsed().as_secs_f64(), "samples": samples}))
}

fn main() -> anyhow::Result<()> {
    // One thread: the figures are per core, as a Lambda function with 1,769 MB or less gets one vCPU.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let out = match Cli::parse().command {
        Command::Generate { out, records, seed, workload } => write_generated(&out, records, seed, workload)?,
        Command::Avro { data, out } => {
            let records = floe_bench::avro::convert(&data, &out)?;
            json!({"records": records, "out": out})
        }
        Command::Protobuf { data, out } => {
            let records = floe_bench::protobuf::convert(&data, &out)?;
            json!({"records": records, "out": out})
        }
        Command::Floe(args) if args.threads > 1 => {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(args.threads).enable_all().build()?;
            rt.block_on(run_floe(&args))?
        }
        Command::Floe(args) => rt.block_on(run_floe(&args))?,
        Command::Baseline(args) => run_baseline(&args)?,
        Command::Backfill(args) => rt.block_on(run_backfill(&args))?,
        Command::Commit { home, files, records_per_file } => rt.block_on(run_commit(&home, files, records_per_file))?,
        Command::Compaction { home, files, records_per_file, partitioned, no_merge } => {
            rt.block_on(run_compaction(&home, files, records_per_file, partitioned, no_merge))?
        }
        Command::Changes { home, rows, batch_keys, commits } => {
            rt.block_on(floe_bench::changes::run(&home, rows, batch_keys, commits))?
        }
        Command::History { home, commits, at } => rt.block_on(run_history(&home, commits, &at))?,
    };
    println!("{out}");
    Ok(())
}
