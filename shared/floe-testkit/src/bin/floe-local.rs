//! `floe-local`: run floe's real handlers on the embedded default (SQLite state and catalog, local warehouse).
//!
//! - `demo`: generate sample events, ingest them, commit, print a report and a few rows read back.
//! - `gen`: write sample MSK events as JSON files (one per event).
//! - `ingest`: run the ingest handler on MSK event JSON files (what the Lambda receives).
//! - `compact`: run one compactor pass.
//!
//! - `topics`, `produce`: create topics on a Kafka broker and produce generated records to it.
//! - `poll`: the local MSK event source mapping (see `floe_testkit::esm`), invoking the ingest handler in
//!   process or a function under `cargo lambda watch` through the Lambda invoke API.
//! - `compact --every <seconds>`: the compactor on a fixed-rate schedule, like its EventBridge rule.
//! - `status`: produced, delivered and committed positions, lag, and table row counts, as one JSON line.
//!
//! `--fail-at <point>` simulates a crash at a named step (see `floe_core::failpoint`). `--backend aws` runs on
//! DynamoDB, Glue and S3 configured exactly as the Lambda functions are (`FLOE_WAREHOUSE`, `FLOE_STATE_TABLE`,
//! `AWS_ENDPOINT_URL`, … in the environment), e.g. against moto.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use floe_backends::Backends;
use floe_core::compactor::{Compactor, CompactorOptions};
use floe_core::config::Pipeline;
use floe_core::failpoint;
use floe_core::ingest::{IngestReport, Ingestor};
use floe_core::layout::TableLayout;
use floe_core::settings::{Backend, FunctionSettings};
use floe_core::source::MskEvent;
use floe_testkit::{GeneratorOptions, generate, kafka, readback};

#[path = "floe-local/local.rs"]
mod local;

#[derive(Parser)]
#[command(about = "Run floe on the embedded default (no cloud)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct Common {
    /// Directory holding catalog.db, state.db and warehouse/ (embedded backend).
    #[arg(long, default_value = ".floe/local")]
    home: PathBuf,
    /// `embedded`, or `aws` configured from the environment like the Lambda functions.
    #[arg(long, default_value = "embedded", value_parser = ["embedded", "aws"])]
    backend: String,
    /// Pipeline file.
    #[arg(long, default_value = "examples/pipeline.toml")]
    pipeline: PathBuf,
    /// Simulate a crash at this step, or fail this state-store call as throttled (`state.<method>`).
    #[arg(long, value_parser = parse_point)]
    fail_at: Option<String>,
    /// With `--fail-at`: fail this many times, then let the step pass (a transient failure).
    #[arg(long, requires = "fail_at")]
    fail_times: Option<u32>,
    /// Pause once at a step: `<point>=<milliseconds>` or `<point>=@<file>` (until the file exists).
    #[arg(long, value_parser = parse_pause)]
    pause_at: Option<(String, failpoint::Pause)>,
}

#[derive(Subcommand)]
enum Command {
    Demo {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 100_000)]
        records: usize,
    },
    Gen {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 10_000)]
        records: usize,
        #[arg(long, default_value_t = 500)]
        batch_size: usize,
        #[arg(long, default_value_t = 1_000)]
        bad_every: usize,
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    Ingest {
        #[command(flatten)]
        common: Common,
        /// MSK event JSON files, processed in order.
        events: Vec<PathBuf>,
        /// Processing time to record for window watermarks (milliseconds; default: the clock).
        #[arg(long)]
        now_ms: Option<i64>,
    },
    Compact {
        #[command(flatten)]
        common: Common,
        /// Run on a fixed-rate schedule, every this many seconds, until interrupted.
        #[arg(long)]
        every: Option<f64>,
        /// Processing time for idle-partition detection (milliseconds; default: the clock).
        #[arg(long, conflicts_with = "every")]
        now_ms: Option<i64>,
    },
    /// Create topics (`name:partitions`) on a Kafka broker; existing ones are left alone.
    Topics {
        #[arg(long)]
        brokers: String,
        #[arg(required = true, value_parser = parse_topic)]
        topics: Vec<(String, i32)>,
    },
    /// Produce generated sample records (the demo's data) to a Kafka broker.
    Produce {
        #[arg(long)]
        brokers: String,
        #[arg(long, default_value_t = 10_000)]
        records: usize,
        #[arg(long, default_value_t = 1_000)]
        bad_every: usize,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Records per second (0: as fast as possible).
        #[arg(long, default_value_t = 0.0)]
        rate: f64,
        /// Records per produce request and partition.
        #[arg(long, default_value_t = 100)]
        chunk: usize,
        /// Stamp records with the time they are produced (for freshness), not the generated event time.
        #[arg(long)]
        stamp_now: bool,
    },
    /// The local MSK event source mapping: poll the broker, invoke the ingest handler.
    Poll {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        esm: EsmArgs,
    },
    /// Positions and row counts of the local stack, as JSON.
    Status {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        brokers: String,
        /// The poller's directory (its stored positions).
        #[arg(long, default_value = ".floe/local/esm")]
        esm_dir: PathBuf,
    },
}

/// The event source mapping's settings, named as in the SAM template.
#[derive(clap::Args)]
struct EsmArgs {
    #[arg(long)]
    brokers: String,
    /// Stored positions, invocation log, on-failure destination and status.
    #[arg(long, default_value = ".floe/local/esm")]
    esm_dir: PathBuf,
    #[arg(long, default_value_t = 100)]
    batch_size: usize,
    #[arg(long, default_value_t = 500)]
    batching_window_ms: u64,
    #[arg(long, default_value = "TRIM_HORIZON", value_parser = ["TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"])]
    starting_position: String,
    /// Milliseconds since the epoch, with AT_TIMESTAMP.
    #[arg(long)]
    starting_timestamp_ms: Option<i64>,
    /// -1: retry until success (the mapping's default).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    max_retry_attempts: i64,
    #[arg(long, default_value_t = floe_testkit::esm::MAX_PAYLOAD_BYTES)]
    max_payload_bytes: usize,
    /// Invoke a function through the Lambda invoke API at this endpoint (e.g. `cargo lambda watch`'s
    /// http://127.0.0.1:9000) instead of the handler in this process.
    #[arg(long)]
    invoke_endpoint: Option<String>,
    #[arg(long, default_value = "floe-ingest")]
    function_name: String,
}

fn parse_topic(text: &str) -> Result<(String, i32), String> {
    let (name, partitions) = text.split_once(':').ok_or("expected <name>:<partitions>")?;
    let partitions = partitions.parse().map_err(|_| format!("`{partitions}` is not a number of partitions"))?;
    if name.is_empty() || partitions < 1 {
        return Err(format!("`{text}`: a topic needs a name and at least one partition"));
    }
    Ok((name.to_string(), partitions))
}

fn parse_point(text: &str) -> Result<String, String> {
    if failpoint::ALL.contains(&text) || failpoint::STATE_CALLS.contains(&text) {
        Ok(text.to_string())
    } else {
        Err(format!("unknown point `{text}`; one of {:?} or {:?}", failpoint::ALL, failpoint::STATE_CALLS))
    }
}

fn parse_pause(text: &str) -> Result<(String, failpoint::Pause), String> {
    let (point, how) = text.split_once('=').ok_or("expected <point>=<milliseconds> or <point>=@<file>")?;
    if !failpoint::ALL.contains(&point) {
        return Err(format!("unknown point `{point}`; one of {:?}", failpoint::ALL));
    }
    let pause = match how.strip_prefix('@') {
        Some(file) => failpoint::Pause::UntilFile(PathBuf::from(file)),
        None => {
            let millis = how.parse().map_err(|_| format!("`{how}` is not a number of milliseconds"))?;
            failpoint::Pause::For(std::time::Duration::from_millis(millis))
        }
    };
    Ok((point.to_string(), pause))
}

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).init();
}

struct Runtime {
    pipeline: Arc<Pipeline>,
    backend: Backends,
    /// Where the data lives, for the report.
    place: String,
}

impl Runtime {
    async fn open(common: &Common) -> anyhow::Result<Runtime> {
        match (&common.fail_at, common.fail_times) {
            (Some(point), Some(times)) => failpoint::arm_times(point, times),
            (Some(point), None) => failpoint::arm(point),
            _ => {}
        }
        if let Some((point, pause)) = &common.pause_at {
            failpoint::arm_pause(point, pause.clone());
        }
        let settings = match common.backend.as_str() {
            "aws" => FunctionSettings { pipeline_file: common.pipeline.clone(), ..FunctionSettings::from_env()? },
            _ => FunctionSettings {
                pipeline_file: common.pipeline.clone(),
                backend: Backend::Embedded { home: common.home.clone() },
            },
        };
        let (pipeline, mut backend) = floe_backends::open(&settings).await?;
        // Every state-store call can be failed on demand (`--fail-at state.<method>`).
        backend.state = Arc::new(floe_core::faults::FaultyState(backend.state));
        let place = match &settings.backend {
            Backend::Embedded { home } => format!("embedded, home {}", home.display()),
            Backend::Aws(aws) => format!("aws, warehouse {}, state table {}", aws.warehouse, aws.state_table),
        };
        Ok(Runtime { pipeline, backend, place })
    }

    async fn ingestor(&self) -> anyhow::Result<Ingestor> {
        let b = &self.backend;
        Ok(Ingestor::new(self.pipeline.clone(), &b.warehouse, b.file_io.clone(), b.state.clone()).await?)
    }

    fn compactor(&self) -> anyhow::Result<Compactor> {
        let b = &self.backend;
        let options = CompactorOptions::default();
        Ok(Compactor::new(self.pipeline.clone(), &b.warehouse, b.catalog.clone(), b.state.clone(), options)?)
    }
}

fn read_event(path: &Path) -> anyhow::Result<MskEvent> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("{} is not an MSK event", path.display()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Demo { common, records } => {
            init_tracing("error");
            demo(&common, records).await
        }
        Command::Gen { out, records, batch_size, bad_every, seed } => {
            let options = GeneratorOptions { records, batch_size, bad_every, seed, ..Default::default() };
            let generated = generate(&options);
            std::fs::create_dir_all(&out)?;
            for (i, event) in generated.events.iter().enumerate() {
                std::fs::write(out.join(format!("event-{i:05}.json")), serde_json::to_vec(event)?)?;
            }
            println!(
                "{}",
                serde_json::json!({"events": generated.events.len(), "records": records, "bad": generated.bad.len()})
            );
            Ok(())
        }
        Command::Ingest { common, events, now_ms } => {
            init_tracing("warn");
            let rt = Runtime::open(&common).await?;
            let ingestor = rt.ingestor().await?;
            let mut total = IngestReport::default();
            for path in &events {
                let event = read_event(path)?;
                let now = now_ms.unwrap_or_else(|| chrono::Utc::now().timestamp_millis());
                let report =
                    ingestor.handle_at(&event, now).await.with_context(|| format!("ingesting {}", path.display()))?;
                total.add(&report);
            }
            println!("{}", serde_json::to_string(&total)?);
            Ok(())
        }
        Command::Compact { common, every: None, now_ms } => {
            init_tracing("warn");
            let rt = Runtime::open(&common).await?;
            let compactor = rt.compactor()?;
            let reports = match now_ms {
                Some(now) => compactor.run_at(now, CompactorOptions::default().time_budget).await?,
                None => compactor.run().await?,
            };
            println!("{}", serde_json::to_string(&reports)?);
            Ok(())
        }
        Command::Compact { common, every: Some(seconds), .. } => {
            init_tracing("info");
            let rt = Runtime::open(&common).await?;
            local::compact_every(rt.compactor()?, seconds).await
        }
        Command::Topics { brokers, topics } => {
            init_tracing("warn");
            let client = kafka::connect(&brokers).await?;
            kafka::create_topics(&client, &topics).await?;
            println!(
                "{}",
                serde_json::json!({"created": topics.iter().map(|(t, p)| format!("{t}:{p}")).collect::<Vec<_>>()})
            );
            Ok(())
        }
        Command::Produce { brokers, records, bad_every, seed, rate, chunk, stamp_now } => {
            init_tracing("warn");
            let options = GeneratorOptions {
                records,
                bad_every,
                seed,
                batch_size: chunk.max(1),
                partitions_per_event: 1,
                ..Default::default()
            };
            local::produce(&brokers, &generate(&options), kafka::ProduceOptions { rate, stamp_now }).await
        }
        Command::Poll { common, esm } => {
            init_tracing("info");
            let rt = Runtime::open(&common).await?;
            local::poll(&rt, &esm).await
        }
        Command::Status { common, brokers, esm_dir } => {
            init_tracing("error");
            let rt = Runtime::open(&common).await?;
            println!("{}", local::status(&rt, &brokers, &esm_dir).await?);
            Ok(())
        }
    }
}

async fn demo(common: &Common, records: usize) -> anyhow::Result<()> {
    let rt = Runtime::open(common).await?;
    let p = &rt.pipeline;
    println!("floe demo — the real ingest and compactor handlers, in process");
    println!("  backend:   {}", rt.place);
    println!(
        "  pipeline:  {} ({}) → {} (dead letters → {})",
        p.name,
        common.pipeline.display(),
        p.table.name,
        p.dead_letter
    );

    let started = Instant::now();
    // One record in 40 repeats the previous value of its partition, like a producer retry.
    let generated = generate(&GeneratorOptions { records, duplicate_every: 40, ..Default::default() });
    let bytes: usize = generated.events.iter().map(|e| serde_json::to_vec(e).map_or(0, |v| v.len())).sum();
    println!(
        "\n1. generated {} records ({} malformed, {} producer retries) in {} MSK events, {:.1} MB of event JSON ({:.1} MB avg per event)",
        generated.records,
        generated.bad.len(),
        generated.duplicates,
        generated.events.len(),
        bytes as f64 / 1e6,
        bytes as f64 / 1e6 / generated.events.len() as f64
    );

    let ingestor = rt.ingestor().await?;
    let t = Instant::now();
    let mut total = IngestReport::default();
    for event in &generated.events {
        total.add(&ingestor.handle(event).await?);
    }
    let ingest_secs = t.elapsed().as_secs_f64();
    println!(
        "2. ingest:    {} records in → {} rows staged, {} dead letters, {} skipped as already staged; {} data files, {:.1} MB, {:.2}s ({:.0} records/s)",
        total.records,
        total.rows,
        total.dead_letters,
        total.duplicates,
        total.files,
        total.bytes as f64 / 1e6,
        ingest_secs,
        total.records as f64 / ingest_secs
    );

    // Redeliver an event, as the event source mapping does after a failed invocation: a no-op.
    let again = ingestor.handle(&generated.events[0]).await?;
    println!(
        "   redelivered event #0 ({} records): {} rows staged, {} skipped as duplicates",
        again.records, again.rows, again.duplicates
    );
    if !p.outputs.is_empty() {
        println!(
            "   outputs:   {} retried records dropped by deduplication, {} records too late for their window",
            total.deduplicated, total.late
        );
    }

    let t = Instant::now();
    let reports = rt.compactor()?.run().await?;
    for r in &reports {
        match r.snapshot_id {
            Some(id) => println!(
                "3. compactor: {} ← {} files, {} rows, committed snapshot {id} in {:.2}s",
                r.table,
                r.files,
                r.rows,
                t.elapsed().as_secs_f64()
            ),
            None => println!("3. compactor: {} — nothing new to commit", r.table),
        }
    }

    let target = rt.backend.catalog.load_table(&TableLayout::target(p, &rt.backend.warehouse)?.ident()).await?;
    let dead = rt.backend.catalog.load_table(&TableLayout::dead_letter(p, &rt.backend.warehouse)?.ident()).await?;
    let rows = readback::count_rows(&target).await?;
    let dead_rows = readback::count_rows(&dead).await?;
    let snapshots = target.metadata().snapshots().count();
    println!(
        "\n4. read back: {} has {rows} rows in {snapshots} snapshot(s); {} has {dead_rows} rows",
        p.table.name, p.dead_letter
    );
    if rows != generated.good() || dead_rows != generated.bad.len() {
        bail!("expected {} rows and {} dead letters", generated.good(), generated.bad.len());
    }
    println!(
        "   exactly the {} valid records once each, and the {} malformed ones kept with reasons",
        generated.good(),
        generated.bad.len()
    );
    println!(
        "{}",
        readback::preview(
            &target,
            &[
                "event_id",
                "event_type",
                "event_time",
                "user_id",
                "country",
                "amount",
                "source_partition",
                "source_offset"
            ],
            5
        )
        .await?
    );
    println!("{}", readback::preview(&dead, &["topic", "partition", "offset", "error_kind", "reason"], 6).await?);
    demo_outputs(&rt, &generated).await?;
    println!(
        "\ndone in {:.2}s. Run `make demo` again: every record is recognised as already staged, nothing is duplicated.",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The derived outputs next to the raw table: the deduplicated stream and the window aggregates.
async fn demo_outputs(rt: &Runtime, generated: &floe_testkit::Generated) -> anyhow::Result<()> {
    let p = &rt.pipeline;
    for o in &p.outputs {
        let table = rt.backend.catalog.load_table(&TableLayout::output(p, o, &rt.backend.warehouse)?.ident()).await?;
        let rows = readback::count_rows(&table).await?;
        match (&o.window, &o.dedup) {
            (Some(w), _) => {
                println!(
                    "\n5. {}: {rows} final {} windows of `{}` (emitted once the watermark passed their end)",
                    o.table,
                    match w.spec {
                        floe_core::window::WindowSpec::Tumbling { .. } => "tumbling",
                        floe_core::window::WindowSpec::Hopping { .. } => "hopping",
                        floe_core::window::WindowSpec::Session { .. } => "session",
                    },
                    w.time_column
                );
                let mut columns = vec![floe_core::config::WINDOW_START, floe_core::config::WINDOW_END];
                columns.extend(w.group_by.iter().map(|(n, _)| n.as_str()));
                columns.extend(w.aggregates.iter().map(|a| a.name.as_str()));
                println!("{}", readback::preview(&table, &columns, 8).await?);
            }
            (None, Some(d)) => {
                println!(
                    "\n5. {}: {rows} rows = {} valid records - {} producer retries (dedup by `{}` within {} ms)",
                    o.table,
                    generated.good(),
                    generated.duplicates,
                    d.key,
                    d.horizon_ms
                );
                if rows != generated.good() - generated.duplicates {
                    bail!("expected {} deduplicated rows", generated.good() - generated.duplicates);
                }
                let columns: Vec<&str> = o.sql_columns.iter().map(|(n, _)| n.as_str()).take(7).collect();
                println!("{}", readback::preview(&table, &columns, 5).await?);
            }
            (None, None) => println!("\n5. {}: {rows} rows", o.table),
        }
    }
    Ok(())
}
