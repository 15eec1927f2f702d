//! `floe demo`: the whole flow in one process on sample data — generate, ingest (and redeliver), commit, read
//! back and check exactly once — printing what each step did.

use std::time::Instant;

use anyhow::bail;
use floe_core::{IngestReport, TableLayout};

use crate::args::Common;
use crate::generator::{Generated, GeneratorOptions, generate};
use crate::readback;
use crate::runtime::Runtime;

pub async fn demo(common: &Common, records: usize) -> anyhow::Result<()> {
    let rt = Runtime::open(common, floe_backends::Planning::Plan).await?;
    let p = &rt.pipeline;
    println!("floe demo — the real ingest and compactor handlers, in process");
    println!("  backend:   {}", rt.place);
    println!("  pipeline:  {} ({}) → {} (dead letters → {})", p.name, rt.pipeline.file(), p.table.name, p.dead_letter);

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
    let progress = crate::progress(generated.events.len() as u64, "MSK events");
    for event in &generated.events {
        progress.inc(1);
        total.add(&ingestor.handle(event).await?);
    }
    progress.finish_and_clear();
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
            Some(id) if r.staged == 0 => println!(
                "3. compactor: {} ← {} rows in {} file(s), committed snapshot {id} in {:.2}s",
                r.table,
                r.rows,
                r.files,
                t.elapsed().as_secs_f64(),
            ),
            Some(id) => println!(
                "3. compactor: {} ← {} rows, committed snapshot {id} in {:.2}s; {} staged files (avg {:.1} KB) became {} (avg {:.1} KB)",
                r.table,
                r.rows,
                t.elapsed().as_secs_f64(),
                r.staged,
                kb(r.staged_bytes, r.staged),
                r.files,
                kb(r.bytes, r.files),
            ),
            None => println!("3. compactor: {} — nothing new to commit", r.table),
        }
    }

    let target = rt.backends.catalog.load_table(&TableLayout::target(p, &rt.backends.warehouse)?.ident()).await?;
    let dead = rt.backends.catalog.load_table(&TableLayout::dead_letter(p, &rt.backends.warehouse)?.ident()).await?;
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
async fn demo_outputs(rt: &Runtime, generated: &Generated) -> anyhow::Result<()> {
    let p = &rt.pipeline;
    for o in &p.outputs {
        let table = rt.backends.catalog.load_table(&TableLayout::output(p, o, &rt.backends.warehouse)?.ident()).await?;
        let rows = readback::count_rows(&table).await?;
        match (&o.window, &o.dedup) {
            (Some(w), _) => {
                println!(
                    "\n5. {}: {rows} final {} windows of `{}` (emitted once the watermark passed their end)",
                    o.table,
                    match w.spec {
                        floe_core::WindowSpec::Tumbling { .. } => "tumbling",
                        floe_core::WindowSpec::Hopping { .. } => "hopping",
                        floe_core::WindowSpec::Session { .. } => "session",
                    },
                    w.time_column
                );
                let mut columns = vec![floe_core::WINDOW_START, floe_core::WINDOW_END];
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

/// Average size in KB of `files` files holding `bytes`.
fn kb(bytes: u64, files: u64) -> f64 {
    if files == 0 { 0.0 } else { bytes as f64 / files as f64 / 1e3 }
}
