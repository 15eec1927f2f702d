//! The last step of the flow, the compactor: the only writer of Iceberg metadata. It commits the files ingest
//! staged ([`compactor`]), the small ones merged into target-size files first ([`merge`]), knowing from the source positions in the snapshot summaries what is already committed
//! ([`positions`]); it emits final windows from window state ([`emit`]); and every metadata swap goes through a
//! catalog pinned to the snapshot the commit was planned on ([`pinned`]), so a concurrent committer makes the
//! swap fail instead of being overwritten. After the commits it maintains each table: old snapshots expire and
//! the files only they referenced are deleted ([`expire`]), small files are rewritten ([`rewrite`], in a
//! `replace` snapshot built on the spec APIs, [`replace`]); once a day, files nothing references are removed
//! ([`orphans`]).

pub(crate) mod changes;
pub(crate) mod compactor;
pub(crate) mod deletes;
pub(crate) mod emit;
pub(crate) mod expire;
#[cfg(test)]
mod fixtures;
pub(crate) mod key_scan;
pub(crate) mod merge;
pub(crate) mod options;
pub(crate) mod orphans;
pub(crate) mod pinned;
pub(crate) mod positions;
pub(crate) mod replace;
pub(crate) mod report;
pub(crate) mod rewrite;
pub(crate) mod row_delta;
pub(crate) mod staged;
pub(crate) mod tables;

pub use changes::ChangeStats;
pub use compactor::Compactor;
pub use expire::{DEFAULT_MAX_SNAPSHOT_AGE_MS, DEFAULT_MIN_SNAPSHOTS_TO_KEEP, EXPIRE_BATCH, ExpiryPolicy};
pub use merge::MERGED_PREFIX;
pub use options::CompactorOptions;
pub use orphans::{DEFAULT_OLDER_THAN_MS, MIN_OLDER_THAN_MS, OLDER_THAN_MS, Orphans};
pub use positions::{POSITIONS_PREFIX, Positions, committed_positions, positions_key};
pub use report::{OrphanRun, RunReport, TableFailure};
pub use tables::TableReport;
