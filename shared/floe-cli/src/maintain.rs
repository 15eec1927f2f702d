//! `floe maintain`: compactor rounds until a round finds nothing to do, each with the whole run as its merge
//! budget and expiry on every due snapshot, so a backlog (a table built by `compact --no-merge`, or one whose
//! target file size was raised) is worked off in one command. `floe orphans`: orphan removal on every table.

use std::collections::BTreeMap;
use std::time::Duration;

use floe_core::{CompactorOptions, OrphanRun, TableReport};

use crate::runtime::Runtime;

/// Per-round budget: long rounds, but each ends with its commits (a Ctrl-C loses at most one round's merges).
const ROUND: Duration = Duration::from_secs(300);

/// Run rounds until one changes nothing (or `max_rounds`) at processing time `now_ms` (default: the clock); the
/// summed report of each table.
pub async fn until_done(rt: &Runtime, max_rounds: u32, now_ms: Option<i64>) -> anyhow::Result<Vec<TableReport>> {
    let options = CompactorOptions { merge_budget: ROUND, time_budget: ROUND, expire_batch: 1, ..Default::default() };
    let compactor = rt.compactor_with(options)?;
    let spinner = spinner();
    let mut totals: BTreeMap<String, TableReport> = BTreeMap::new();
    for round in 1..=max_rounds {
        let now = now_ms.unwrap_or_else(|| chrono::Utc::now().timestamp_millis());
        let reports = compactor.run_at(now, ROUND).await?;
        let changed: u64 = reports
            .iter()
            .map(|r| r.files + r.rewritten_inputs + r.snapshots_expired + r.remaining + r.merge_deferred)
            .sum();
        for r in &reports {
            let total = totals.entry(r.table.clone()).or_insert_with(|| TableReport::named(&r.table));
            add(total, r);
        }
        let rewritten: u64 = totals.values().map(|r| r.rewritten_inputs).sum();
        let expired: u64 = totals.values().map(|r| r.snapshots_expired).sum();
        spinner.set_message(format!(
            "round {round}: {rewritten} small files rewritten, {expired} snapshots expired so far"
        ));
        if changed == 0 {
            break;
        }
    }
    spinner.finish_and_clear();
    Ok(totals.into_values().collect())
}

/// Orphan removal over every table (no time limit but the listing's own), with a spinner while it lists.
pub async fn orphans(rt: &Runtime, older_than_ms: Option<i64>, dry_run: bool) -> anyhow::Result<OrphanRun> {
    let compactor = rt.compactor()?;
    let spinner = spinner();
    spinner.set_message(if dry_run { "looking for orphan files (dry run)" } else { "removing orphan files" });
    let now_ms = chrono::Utc::now().timestamp_millis();
    let run = compactor.remove_orphans(now_ms, older_than_ms, dry_run, Duration::from_secs(24 * 3600)).await;
    spinner.finish_and_clear();
    Ok(run)
}

/// A spinner on stderr for a command that runs longer than a few seconds.
fn spinner() -> indicatif::ProgressBar {
    let spinner = indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
    spinner.enable_steady_tick(Duration::from_millis(200));
    spinner
}

/// Add a round's counts to the running total.
fn add(total: &mut TableReport, r: &TableReport) {
    total.files += r.files;
    total.rows += r.rows;
    total.bytes += r.bytes;
    total.staged += r.staged;
    total.merged_inputs += r.merged_inputs;
    total.merged_outputs += r.merged_outputs;
    total.rewritten_inputs += r.rewritten_inputs;
    total.rewritten_outputs += r.rewritten_outputs;
    total.bytes_read += r.bytes_read;
    total.bytes_written += r.bytes_written;
    total.snapshots_expired += r.snapshots_expired;
    total.files_deleted += r.files_deleted;
    total.maintain_ms += r.maintain_ms;
    total.conflicts += r.conflicts;
    total.remaining = r.remaining;
    if r.manifests_before > 0 {
        total.manifests_before = total.manifests_before.max(r.manifests_before);
        total.manifests_after = r.manifests_after;
    }
    if r.snapshot_id.is_some() {
        total.snapshot_id = r.snapshot_id;
    }
}
