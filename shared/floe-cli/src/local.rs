//! The local-stack subcommands of floe: produce, poll (the event source mapping), compact on a schedule,
//! status.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::esm::{self, InProcess, Invoke, LambdaApi, Mapping, Origin, Poller, StartingPosition};
use crate::generator::Generated;
use crate::kafka;
use anyhow::Context;
use floe_core::Compactor;
use floe_core::TableLayout;
use floe_core::committed_positions;
use serde_json::json;
use tokio::sync::watch;
use tracing::{error, info};

use crate::args::EsmArgs;
use crate::runtime::Runtime;

/// Resolves on Ctrl-C or SIGTERM.
async fn interrupted() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

pub async fn produce(brokers: &str, generated: &Generated, options: kafka::ProduceOptions) -> anyhow::Result<()> {
    let client = kafka::connect(brokers).await?;
    let started = Instant::now();
    let mut last_report = Instant::now();
    let sent = kafka::produce(&client, generated, options, |sent| {
        if last_report.elapsed() >= Duration::from_secs(5) {
            last_report = Instant::now();
            eprintln!("produced {sent} records");
        }
    })
    .await?;
    println!(
        "{}",
        json!({"produced": sent, "malformed": generated.bad.len(), "seconds": started.elapsed().as_secs_f64()})
    );
    Ok(())
}

pub async fn poll(rt: &Runtime, args: &EsmArgs) -> anyhow::Result<()> {
    let starting_position =
        StartingPosition::parse(&args.starting_position, args.starting_timestamp_ms).map_err(anyhow::Error::msg)?;
    let mapping = Mapping {
        topics: topics(rt),
        batch_size: args.batch_size,
        batching_window: Duration::from_millis(args.batching_window_ms),
        max_payload_bytes: args.max_payload_bytes,
        starting_position,
        max_retry_attempts: u32::try_from(args.max_retry_attempts).ok(),
        origin: Origin {
            event_source_arn:
                "arn:aws:kafka:us-east-1:000000000000:cluster/floe-local/00000000-0000-0000-0000-000000000000-1".into(),
            bootstrap_servers: args.brokers.clone(),
        },
    };
    let invoker: Arc<dyn Invoke> = match &args.invoke_endpoint {
        Some(endpoint) => Arc::new(LambdaApi::new(endpoint, &args.function_name, Duration::from_secs(900))?),
        None => Arc::new(InProcess::new(Arc::new(rt.router().await?))),
    };
    let client = Arc::new(kafka::connect(&args.brokers).await?);
    let poller = Poller::new(client, mapping, invoker, &args.esm_dir)?;
    let (stop, stopped) = watch::channel(false);
    info!(brokers = %args.brokers, dir = %args.esm_dir.display(), "polling");
    let run = poller.run(stopped);
    tokio::pin!(run);
    tokio::select! {
        done = &mut run => done,
        _ = interrupted() => {
            info!("stopping: finishing in-flight invocations");
            stop.send_replace(true);
            run.await
        }
    }
}

/// The compactor on a fixed-rate schedule; a failed run is logged and the next tick tries again, as a scheduled
/// Lambda would.
pub async fn compact_every(compactors: Vec<Compactor>, seconds: f64) -> anyhow::Result<()> {
    let period = Duration::from_secs_f64(seconds.max(0.1));
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let schedule = async {
        loop {
            ticks.tick().await;
            // Like the Lambda: stop starting commits well before the "invocation" would time out.
            for compactor in &compactors {
                match compactor.run_within(period.max(Duration::from_secs(60))).await {
                    Ok(reports) => println!("{}", serde_json::to_string(&reports).unwrap_or_default()),
                    Err(e) => {
                        let pipeline = &compactor.pipeline().name;
                        error!(pipeline = %pipeline, error = %e, retryable = e.is_retryable(), "compactor run failed; next run retries");
                    }
                }
            }
        }
    };
    tokio::select! {
        _ = schedule => Ok(()),
        _ = interrupted() => Ok(()),
    }
}

/// Every pipeline's topics and patterns.
fn topics(rt: &Runtime) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for t in rt.pipelines.iter().flat_map(|p| &p.topics) {
        if !out.contains(t) {
            out.push(t.clone());
        }
    }
    out
}

fn sum(map: &BTreeMap<String, i64>) -> i64 {
    map.values().sum()
}

pub async fn status(rt: &Runtime, brokers: &str, esm_dir: &Path) -> anyhow::Result<serde_json::Value> {
    let client = kafka::connect(brokers).await?;
    let produced = kafka::high_watermarks(&client, &topics(rt)).await?;
    let delivered = esm::OffsetStore::open(&esm_dir.join("offsets.json"))?.all();
    // Committed: per partition, the furthest position either table's current snapshot records. The two tables
    // are staged in one step but committed one after the other, and a batch staged between the two commits of a
    // compactor run lands in the dead-letter table first; so "caught up" also needs `staged` to be 0, read
    // *after* the tables (a step staged and half-committed while they were read is then still counted).
    let mut committed: BTreeMap<String, i64> = BTreeMap::new();
    let mut tables = serde_json::Map::new();
    let b = &rt.backends;
    let mut layouts = Vec::new();
    for p in &rt.pipelines {
        layouts.push((p, TableLayout::target(p, &b.warehouse)?));
        layouts.push((p, TableLayout::dead_letter(p, &b.warehouse)?));
    }
    for (pipeline, layout) in &layouts {
        let ident = layout.ident();
        if !b.catalog.table_exists(&ident).await.context("checking the table")? {
            tables.insert(ident.to_string(), json!({"rows": 0, "snapshots": 0}));
            continue;
        }
        let table = b.catalog.load_table(&ident).await?;
        for (source, next) in committed_positions(&table, &pipeline.name)? {
            let slot = committed.entry(source.to_string()).or_default();
            *slot = (*slot).max(next);
        }
        let metadata = table.metadata();
        let rows = metadata
            .current_snapshot()
            .and_then(|s| s.summary().additional_properties.get("total-records").cloned())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        tables.insert(ident.to_string(), json!({"rows": rows, "snapshots": metadata.snapshots().count()}));
    }
    let mut staged = 0;
    for (_, layout) in &layouts {
        let files = b.state.staged_files(&layout.name.to_string()).await.context("listing staged files")?.len();
        staged += files;
        if let Some(serde_json::Value::Object(entry)) = tables.get_mut(&layout.ident().to_string()) {
            entry.insert("staged_files".into(), json!(files));
        }
    }
    let lag: BTreeMap<&String, i64> =
        produced.iter().map(|(k, hw)| (k, (hw - committed.get(k).copied().unwrap_or(0)).max(0))).collect();
    Ok(json!({
        "produced": sum(&produced),
        "delivered": sum(&delivered),
        "committed": sum(&committed),
        "lag": lag.values().sum::<i64>(),
        "staged": staged,
        "partitions": produced.keys().map(|k| (k.clone(), json!({
            "high_watermark": produced[k],
            "delivered": delivered.get(k),
            "committed": committed.get(k),
        }))).collect::<serde_json::Map<_, _>>(),
        "tables": tables,
    }))
}
