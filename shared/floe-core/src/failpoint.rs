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

/// Every named point, for the test drivers.
pub const ALL: [&str; 3] = [INGEST_AFTER_WRITE, COMPACTOR_BEFORE_COMMIT, COMPACTOR_AFTER_COMMIT];

#[cfg(feature = "failpoints")]
mod armed {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};

    fn points() -> &'static Mutex<HashSet<String>> {
        static POINTS: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
        POINTS.get_or_init(Default::default)
    }

    /// Arm a point for this process.
    pub fn arm(name: &str) {
        points().lock().expect("failpoint lock").insert(name.to_string());
    }

    /// Disarm every point.
    pub fn clear() {
        points().lock().expect("failpoint lock").clear();
    }

    pub(super) fn is_armed(name: &str) -> bool {
        points().lock().expect("failpoint lock").contains(name)
    }
}

#[cfg(feature = "failpoints")]
pub use armed::{arm, clear};

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
