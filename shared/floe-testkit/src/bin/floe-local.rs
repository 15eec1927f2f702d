//! `floe-local`: run floe's real handlers on the embedded default (SQLite state and catalog, local warehouse).
//!
//! - `demo`: generate sample events, ingest them, commit, print a report and a few rows read back.
//! - `gen`: write sample MSK events as JSON files (one per event).
//! - `ingest`: run the ingest handler on MSK event JSON files (what the Lambda receives).
//! - `compact`: run one compactor pass.
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
use floe_testkit::{GeneratorOptions, generate, readback};

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
    /// Simulate a crash at this step.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(failpoint::ALL))]
    fail_at: Option<String>,
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
    },
    Compact {
        #[command(flatten)]
        common: Common,
    },
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
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

struct Runtime {
    pipeline: Arc<Pipeline>,
    backend: Backends,
    /// Where the data lives, for the report.
    place: String,
}

impl Runtime {
    async fn open(common: &Common) -> anyhow::Result<Runtime> {
        if let Some(point) = &common.fail_at {
            failpoint::arm(point);
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
        let (pipeline, backend) = floe_backends::open(&settings).await?;
        let place = match &settings.backend {
            Backend::Embedded { home } => format!("embedded, home {}", home.display()),
            Backend::Aws(aws) => format!("aws, warehouse {}, state table {}", aws.warehouse, aws.state_table),
        };
        Ok(Runtime { pipeline, backend, place })
    }

    fn ingestor(&self) -> anyhow::Result<Ingestor> {
        let b = &self.backend;
        Ok(Ingestor::new(self.pipeline.clone(), &b.warehouse, b.file_io.clone(), b.state.clone())?)
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
        Command::Ingest { common, events } => {
            init_tracing("warn");
            let rt = Runtime::open(&common).await?;
            let ingestor = rt.ingestor()?;
            let mut total = IngestReport::default();
            for path in &events {
                let report = ingestor
                    .handle(&read_event(path)?)
                    .await
                    .with_context(|| format!("ingesting {}", path.display()))?;
                total.add(&report);
            }
            println!("{}", serde_json::to_string(&total)?);
            Ok(())
        }
        Command::Compact { common } => {
            init_tracing("warn");
            let rt = Runtime::open(&common).await?;
            let reports = rt.compactor()?.run().await?;
            println!("{}", serde_json::to_string(&reports)?);
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
    let generated = generate(&GeneratorOptions { records, ..Default::default() });
    let bytes: usize = generated.events.iter().map(|e| serde_json::to_vec(e).map_or(0, |v| v.len())).sum();
    println!(
        "\n1. generated {} records ({} malformed) in {} MSK events, {:.1} MB of event JSON ({:.1} MB avg per event)",
        generated.records,
        generated.bad.len(),
        generated.events.len(),
        bytes as f64 / 1e6,
        bytes as f64 / 1e6 / generated.events.len() as f64
    );

    let ingestor = rt.ingestor()?;
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
    println!(
        "\ndone in {:.2}s. Run `make demo` again: every record is recognised as already staged, nothing is duplicated.",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
