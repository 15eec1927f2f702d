//! A compactor's settings: how much one run commits, retries, merges and expires, within its time budget.

use std::time::Duration;

/// Compactor settings.
#[derive(Debug, Clone)]
pub struct CompactorOptions {
    /// Most files committed in one snapshot (bounds commit time and manifest size).
    pub max_files_per_commit: usize,
    /// Commit attempts per table per run before giving up (conflicts with concurrent committers).
    pub max_attempts: u32,
    /// Stop starting new attempts after this long (keep well inside the function timeout).
    pub time_budget: Duration,
    /// How long a run may spend merging small staged files before it commits them (from the start of the run,
    /// across its tables). Freshness wins over file size: files not merged by then are committed as they are.
    /// Keep it below the schedule period so a run still commits every tick; `Duration::ZERO` turns merging off.
    pub merge_budget: Duration,
    /// Expire snapshots once this many are due (see [`super::expire`]); 0 never expires.
    pub expire_batch: usize,
}

impl Default for CompactorOptions {
    fn default() -> Self {
        CompactorOptions {
            max_files_per_commit: 5_000,
            max_attempts: 5,
            time_budget: Duration::from_secs(240),
            merge_budget: Duration::from_secs(30),
            expire_batch: super::expire::EXPIRE_BATCH,
        }
    }
}
