//! Test-only crash points. With the `failpoints` feature, a test arms a named point and the handler stops there
//! with [`Error::Failpoint`], as if the process died at that step. Without the feature (release builds of the
//! functions) [`check`] compiles to nothing.

use crate::error::Result;

/// Ingest: data files are written, the staging transaction has not run.
pub const INGEST_AFTER_WRITE: &str = "ingest.after_write";
/// Compactor: about to swap the table metadata.
pub const COMPACTOR_BEFORE_COMMIT: &str = "compactor.before_commit";
/// Compactor: the snapshot is committed, the staged files are not yet marked.
pub const COMPACTOR_AFTER_COMMIT: &str = "compactor.after_commit";

/// Catalog: new metadata is written and checked against the current table; the pointer swap is next.
pub const CATALOG_BEFORE_SWAP: &str = "catalog.before_swap";

/// Every named point, for the test drivers.
pub const ALL: [&str; 4] = [
    INGEST_AFTER_WRITE,
    COMPACTOR_BEFORE_COMMIT,
    COMPACTOR_AFTER_COMMIT,
    CATALOG_BEFORE_SWAP,
];

#[cfg(feature = "failpoints")]
mod armed {
    use std::collections::{HashMap, HashSet};
    use std::sync::{Mutex, OnceLock};
    use std::time::Duration;

    fn points() -> &'static Mutex<HashSet<String>> {
        static POINTS: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
        POINTS.get_or_init(Default::default)
    }

    fn pauses() -> &'static Mutex<HashMap<String, Duration>> {
        static PAUSES: OnceLock<Mutex<HashMap<String, Duration>>> = OnceLock::new();
        PAUSES.get_or_init(Default::default)
    }

    /// Pause once, for `duration`, the first time `name` is reached (to open a race window on purpose).
    pub fn arm_pause(name: &str, duration: Duration) {
        pauses()
            .lock()
            .expect("failpoint lock")
            .insert(name.to_string(), duration);
    }

    pub(super) fn take_pause(name: &str) -> Option<Duration> {
        pauses().lock().expect("failpoint lock").remove(name)
    }

    /// Arm a point for this process.
    pub fn arm(name: &str) {
        points().lock().expect("failpoint lock").insert(name.to_string());
    }

    /// Disarm every point.
    pub fn clear() {
        points().lock().expect("failpoint lock").clear();
        pauses().lock().expect("failpoint lock").clear();
    }

    pub(super) fn is_armed(name: &str) -> bool {
        points().lock().expect("failpoint lock").contains(name)
    }
}

#[cfg(feature = "failpoints")]
pub use armed::{arm, arm_pause, clear};

/// Sleep here if a pause is armed for this point (announced on stderr so a test can act during it).
#[inline]
pub async fn pause(name: &'static str) {
    #[cfg(feature = "failpoints")]
    if let Some(duration) = armed::take_pause(name) {
        eprintln!("floe: paused at {name} for {} ms", duration.as_millis());
        tokio::time::sleep(duration).await;
    }
    let _ = name;
}

/// Stop here if this point is armed.
#[inline]
pub fn check(name: &'static str) -> Result<()> {
    #[cfg(feature = "failpoints")]
    if armed::is_armed(name) {
        tracing::warn!(failpoint = name, "failpoint fired");
        return Err(crate::error::Error::Failpoint(name));
    }
    let _ = name;
    Ok(())
}
