//! What a compactor run reports: a report per table that went through and the failure of each one that did not
//! (one table's failure never stops the others), for commits ([`RunReport`]) and orphan removal ([`OrphanRun`]).

use tracing::error;

use super::orphans::Orphans;
use super::tables::{TableReport, simulated_crash};
use crate::error::{Error, Result};

/// What one run did: a report per table that went through, and the failure of each table that did not. One
/// table's failure never stops the others.
#[derive(Debug, Default)]
pub struct RunReport {
    pub tables: Vec<TableReport>,
    pub failures: Vec<TableFailure>,
}

/// A table whose step of the run failed.
#[derive(Debug)]
pub struct TableFailure {
    pub table: String,
    pub error: Error,
}

impl RunReport {
    /// The reports, or the first failure (after every table was tried).
    pub fn into_result(self) -> Result<Vec<TableReport>> {
        match self.failures.into_iter().next() {
            Some(failure) => Err(failure.error),
            None => Ok(self.tables),
        }
    }

    /// Whether a simulated crash (a test's failpoint) stopped the run: a crash ends the process, not a table.
    pub(super) fn crashed(&self) -> bool {
        self.failures.last().is_some_and(|f| simulated_crash(&f.error))
    }

    pub(super) fn record(&mut self, table: &str, result: Result<TableReport>) {
        match result {
            Ok(report) => self.tables.push(report),
            Err(error) => {
                let retryable = error.is_retryable();
                error!(table, error = %error, retryable, "table failed this run; the other tables go on");
                self.failures.push(TableFailure { table: table.to_string(), error });
            }
        }
    }
}

/// What one orphan removal did: a report per table, and each table that failed.
#[derive(Debug, Default)]
pub struct OrphanRun {
    pub tables: Vec<Orphans>,
    pub failures: Vec<TableFailure>,
}
