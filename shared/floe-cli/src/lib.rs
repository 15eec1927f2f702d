//! `floe`, the user's command-line tool: validate a pipeline file, run the demo, run the ingest and compactor
//! handlers on event files or on a schedule, and run floe without AWS — the local MSK event source mapping
//! ([`esm`]) polling a Kafka broker ([`kafka`]), with sample data ([`generator`]) and table read-back
//! ([`readback`]). The `floe-faults` binary is the same tool built with the `failpoints` feature for the
//! integration tests; `floe` itself has no fault hooks.

mod args;
mod backfill;
mod demo;
pub mod esm;
mod exit;
#[cfg(feature = "failpoints")]
mod faults;
pub mod generator;
pub mod kafka;
mod local;
mod maintain;
pub mod readback;
mod runtime;
mod validate;

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use floe_backends::Planning;
use floe_core::{CompactorOptions, IngestReport};

use args::{Cli, Command, Common};
pub use generator::{Generated, GeneratorOptions, generate};
use runtime::Runtime;

/// Run the command line of this process; the exit code follows `floe --help`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return exit::report(anyhow::Error::new(e).context("starting the async runtime")),
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(e) => exit::report(e),
    }
}

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).init();
}

/// A progress bar on stderr for work over `len` items; hidden when stderr is not a terminal (scripts, tests).
pub(crate) fn progress(len: u64, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::with_draw_target(Some(len), indicatif::ProgressDrawTarget::stderr());
    let template = format!("{{bar:40}} {{pos}}/{{len}} {what} ({{per_sec}}, {{eta}} left)");
    if let Ok(style) = indicatif::ProgressStyle::with_template(&template) {
        bar.set_style(style);
    }
    bar
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Validate { pipeline: files, json, backend, home } => {
            init_tracing("error");
            let catalog = match (backend, home) {
                (None, None) => None,
                (backend, home) => {
                    let common = Common {
                        pipeline: files.clone(),
                        backend: backend.unwrap_or_else(|| "embedded".into()),
                        home: home.unwrap_or_else(|| ".floe/local".into()),
                        #[cfg(feature = "failpoints")]
                        faults: Default::default(),
                    };
                    Some(Runtime::open(&common, Planning::Plan).await?.backends)
                }
            };
            let mut refused = None;
            for path in &files {
                let (summary, problems) = validate::run(path, json, catalog.as_ref()).await?;
                print!("{summary}");
                if !json || files.len() > 1 {
                    println!();
                }
                refused = refused.or(problems);
            }
            if files.len() > 1 {
                let pipelines = files.iter().map(|f| floe_core::load_pipeline(f)).collect::<Result<Vec<_>, _>>()?;
                floe_core::check_routes(&pipelines)?;
                if !json {
                    println!(
                        "the {} pipelines make one deployment: names, tables and topics do not overlap",
                        files.len()
                    );
                }
            }
            refused.map_or(Ok(()), |e| Err(e.into()))
        }
        Command::Demo { common, records } => {
            init_tracing("error");
            demo::demo(&common, records).await
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
            let rt = Runtime::open(&common, Planning::Plan).await?;
            let router = rt.router().await?;
            let mut total = IngestReport::default();
            let progress = progress(events.len() as u64, "events");
            for path in &events {
                progress.inc(1);
                // Read as the function reads its invocation body.
                let body = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
                let now = now_ms.unwrap_or_else(|| chrono::Utc::now().timestamp_millis());
                let reports =
                    router.handle_body_at(&body, now).await.with_context(|| format!("ingesting {}", path.display()))?;
                for (_, report) in &reports {
                    total.add(report);
                }
            }
            progress.finish_and_clear();
            println!("{}", serde_json::to_string(&total)?);
            Ok(())
        }
        Command::Compact { common, every: None, now_ms, no_merge } => {
            init_tracing("warn");
            let rt = Runtime::open(&common, Planning::CheckThenRecorded).await?;
            let options = if no_merge {
                CompactorOptions { merge_budget: std::time::Duration::ZERO, ..Default::default() }
            } else {
                CompactorOptions::default()
            };
            let mut reports = Vec::new();
            for compactor in rt.compactors(&options)? {
                reports.extend(match now_ms {
                    Some(now) => compactor.run_at(now, CompactorOptions::default().time_budget).await?,
                    None => compactor.run().await?,
                });
            }
            println!("{}", serde_json::to_string(&reports)?);
            Ok(())
        }
        Command::Maintain { common, max_rounds, now_ms } => {
            init_tracing("warn");
            let rt = Runtime::open(&common, Planning::CheckThenRecorded).await?;
            rt.single("maintain")?;
            let reports = maintain::until_done(&rt, max_rounds, now_ms).await?;
            println!("{}", serde_json::to_string(&reports)?);
            Ok(())
        }
        Command::Orphans { common, older_than, dry_run } => {
            init_tracing("warn");
            let rt = Runtime::open(&common, Planning::CheckThenRecorded).await?;
            rt.single("orphans")?;
            let run = maintain::orphans(&rt, older_than, dry_run).await?;
            println!("{}", serde_json::to_string(&run.tables)?);
            match run.failures.into_iter().next() {
                Some(failure) => Err(failure.error.into()),
                None => Ok(()),
            }
        }
        Command::Compact { common, every: Some(seconds), .. } => {
            init_tracing("info");
            let rt = Runtime::open(&common, Planning::CheckThenRecorded).await?;
            local::compact_every(rt.compactors(&CompactorOptions::default())?, seconds).await
        }
        Command::Backfill { common, job } => {
            init_tracing("warn");
            let rt = Runtime::open(&common, Planning::Plan).await?;
            backfill::run(&rt, &job).await
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
            let rt = Runtime::open(&common, Planning::Plan).await?;
            local::poll(&rt, &esm).await
        }
        Command::Status { common, brokers, esm_dir } => {
            init_tracing("error");
            let rt = Runtime::open(&common, Planning::Recorded).await?;
            println!("{}", local::status(&rt, &brokers, &esm_dir).await?);
            Ok(())
        }
    }
}
