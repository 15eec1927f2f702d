//! The named steps where a test can crash or pause a handler. With the `failpoints` feature (only the
//! `floe-faults` test binary), a test arms a point (see `crate::testing`) and the handler stops there with
//! [`Error::Failpoint`](crate::Error::Failpoint), as if the process died at that step, or pauses there once to
//! open a race window on purpose. Without the feature (`floe` and the Lambda functions, debug and release)
//! [`check`] and [`pause`] compile to nothing and nothing can arm a point.

use crate::error::Result;

/// Ingest: data files are written, the staging transaction has not run.
pub const INGEST_AFTER_WRITE: &str = "ingest.after_write";
/// Compactor: the commit is planned; the metadata swap is next.
pub const COMPACTOR_BEFORE_COMMIT: &str = "compactor.before_commit";
/// Compactor: the snapshot is committed, the staged files are not yet marked.
pub const COMPACTOR_AFTER_COMMIT: &str = "compactor.after_commit";
/// Compactor: small staged files are merged into new files; the commit that references them is next.
pub const COMPACTOR_AFTER_MERGE: &str = "compactor.after_merge";
/// Compactor: deleting the merged inputs after the commit (fires before each delete).
pub const COMPACTOR_DURING_DELETE: &str = "compactor.during_delete";
/// Compactor: the merged inputs are deleted; the staged files are not yet marked.
pub const COMPACTOR_BEFORE_MARK: &str = "compactor.before_mark";
/// Compactor maintenance: committed small files are rewritten into new files; the replace snapshot is next.
pub const REWRITE_BEFORE_COMMIT: &str = "rewrite.before_commit";
/// Compactor maintenance: the replace snapshot is committed; expiry has not run.
pub const REWRITE_AFTER_COMMIT: &str = "rewrite.after_commit";
/// Compactor maintenance: snapshots are due for expiry; the expiry commit is next.
pub const EXPIRE_BEFORE_COMMIT: &str = "expire.before_commit";
/// Compactor maintenance: the expiry is committed; the expired snapshots' manifest lists are not deleted yet.
pub const EXPIRE_AFTER_COMMIT: &str = "expire.after_commit";
/// Ingest: dedup and window state are updated for a partition batch; its files are not written yet.
pub const INGEST_AFTER_STATE: &str = "ingest.after_state";
/// Compactor: the closed watermark has moved and the window file is written; its commit is next.
pub const EMIT_BEFORE_COMMIT: &str = "emit.before_commit";
/// Compactor: final windows are committed; their state is not cleaned up yet.
pub const EMIT_AFTER_COMMIT: &str = "emit.after_commit";
/// Orphan removal: the ledger is read; the table's metadata is next (a commit here must not lose its files).
pub const ORPHANS_AFTER_LEDGER: &str = "orphans.after_ledger";
/// Orphan removal: deleting the orphans (fires before each delete).
pub const ORPHANS_DURING_DELETE: &str = "orphans.during_delete";
/// Catalog: new metadata is written and checked against the current table; the pointer swap is next.
pub const CATALOG_BEFORE_SWAP: &str = "catalog.before_swap";

/// Ingest: the staging transaction committed; the invocation has not returned (a Lambda timeout or crash here
/// makes the mapping redeliver records that are already staged).
pub const INGEST_AFTER_STAGE: &str = "ingest.after_stage";
/// Catalog: the metadata swap is rejected as a concurrent modification (a transient fault, not a crash).
pub const CATALOG_CONFLICT: &str = "catalog.conflict";

/// Local event source mapping (`floe poll`): the invocation succeeded; the stored position has not moved.
pub const ESM_AFTER_INVOKE: &str = "esm.after_invoke";

/// State-store calls that a `FaultyState` wrapper (see `crate::testing`) can fail as throttled.
pub const STATE_CALLS: [&str; 13] = [
    "state.fence",
    "state.stage",
    "state.staged_files",
    "state.remove_staged",
    "state.claim_keys",
    "state.window_progress",
    "state.set_closed",
    "state.set_emitted",
    "state.get_cells",
    "state.scan_cells",
    "state.put_cells",
    "state.delete_cells",
    "state.clocks",
];

/// Every named step, for the test drivers.
pub const ALL: [&str; 19] = [
    INGEST_AFTER_STATE,
    INGEST_AFTER_WRITE,
    INGEST_AFTER_STAGE,
    CATALOG_CONFLICT,
    COMPACTOR_AFTER_MERGE,
    COMPACTOR_BEFORE_COMMIT,
    COMPACTOR_AFTER_COMMIT,
    COMPACTOR_DURING_DELETE,
    COMPACTOR_BEFORE_MARK,
    REWRITE_BEFORE_COMMIT,
    REWRITE_AFTER_COMMIT,
    EXPIRE_BEFORE_COMMIT,
    EXPIRE_AFTER_COMMIT,
    EMIT_BEFORE_COMMIT,
    EMIT_AFTER_COMMIT,
    ORPHANS_AFTER_LEDGER,
    ORPHANS_DURING_DELETE,
    CATALOG_BEFORE_SWAP,
    ESM_AFTER_INVOKE,
];

#[cfg(feature = "failpoints")]
mod armed {
    use std::collections::HashMap;
    use std::path::PathBuf;
    use std::sync::{Mutex, OnceLock};
    use std::time::Duration;

    /// How long an armed pause lasts.
    #[derive(Debug, Clone)]
    pub enum Pause {
        For(Duration),
        /// Until this file exists (the test creates it once it has done its part of the race); at most 2 minutes.
        UntilFile(PathBuf),
    }

    /// Armed crash points and how many more times each fires (`None`: every time).
    fn points() -> &'static Mutex<HashMap<String, Option<u32>>> {
        static POINTS: OnceLock<Mutex<HashMap<String, Option<u32>>>> = OnceLock::new();
        POINTS.get_or_init(Default::default)
    }

    fn pauses() -> &'static Mutex<HashMap<String, Pause>> {
        static PAUSES: OnceLock<Mutex<HashMap<String, Pause>>> = OnceLock::new();
        PAUSES.get_or_init(Default::default)
    }

    /// Arm a crash point for this process.
    pub fn arm(name: &str) {
        points().lock().expect("failpoint lock").insert(name.to_string(), None);
    }

    /// Arm a crash point that fires `times` times, then lets the step pass (a transient failure).
    pub fn arm_times(name: &str, times: u32) {
        points().lock().expect("failpoint lock").insert(name.to_string(), Some(times));
    }

    /// Pause once, the first time `name` is reached.
    pub fn arm_pause(name: &str, pause: Pause) {
        pauses().lock().expect("failpoint lock").insert(name.to_string(), pause);
    }

    /// Whether the point fires now (counting down a limited one).
    pub(super) fn fires(name: &str) -> bool {
        let mut points = points().lock().expect("failpoint lock");
        match points.get_mut(name) {
            None => false,
            Some(None) => true,
            Some(Some(0)) => false,
            Some(Some(left)) => {
                *left -= 1;
                true
            }
        }
    }

    pub(super) fn take_pause(name: &str) -> Option<Pause> {
        pauses().lock().expect("failpoint lock").remove(name)
    }
}

#[cfg(feature = "failpoints")]
pub use armed::{Pause, arm, arm_pause, arm_times};

/// Stop here if this point is armed.
#[inline]
pub fn check(name: &'static str) -> Result<()> {
    #[cfg(feature = "failpoints")]
    if fires(name) {
        return Err(crate::error::Error::Failpoint(name));
    }
    let _ = name;
    Ok(())
}

/// A transient fault: if this point is armed, fail as a throttled state store would (retryable), without
/// simulating a crash.
#[cfg(feature = "failpoints")]
pub fn throttle(name: &'static str) -> Result<()> {
    if fires(name) {
        return Err(crate::error::Error::state(format!("injected fault at {name}: throttled, retry later"), true));
    }
    Ok(())
}

/// Whether a point is armed (counting one firing). Every kind of fault goes through here.
#[cfg(feature = "failpoints")]
pub fn fires(name: &'static str) -> bool {
    if armed::fires(name) {
        tracing::warn!(failpoint = name, "failpoint fired");
        return true;
    }
    false
}

/// A named step: pause here if a pause is armed, then stop here if the point is armed. Every step calls this,
/// so each point can both open a race window and simulate a crash.
pub async fn hit(name: &'static str) -> Result<()> {
    pause(name).await;
    check(name)
}

/// Wait here once if a pause is armed for this point (announced on stderr so a test can act during it).
#[inline]
pub async fn pause(name: &'static str) {
    #[cfg(feature = "failpoints")]
    match armed::take_pause(name) {
        Some(Pause::For(duration)) => {
            eprintln!("floe: paused at {name} for {} ms", duration.as_millis());
            tokio::time::sleep(duration).await;
        }
        Some(Pause::UntilFile(path)) => {
            eprintln!("floe: paused at {name} until {} exists", path.display());
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
            while !path.exists() && std::time::Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
        None => {}
    }
    let _ = name;
}

#[cfg(all(test, feature = "failpoints"))]
mod tests {
    use super::*;

    #[test]
    fn a_counted_point_fires_that_many_times_then_passes() {
        const POINT: &str = "test.counted";
        assert!(check(POINT).is_ok());
        arm_times(POINT, 2);
        assert!(check(POINT).is_err());
        assert!(check(POINT).is_err());
        assert!(check(POINT).is_ok());
        assert!(check(POINT).is_ok());
        arm(POINT);
        assert!((0..5).all(|_| check(POINT).is_err()));
    }
}
