//! The derived outputs, run by ingest on each decoded batch: SQL transforms planned and run with DataFusion
//! (`sql`, `plan`), key deduplication and event-time window pre-aggregation (`update`, `rows`, [`aggregate`],
//! [`hll`] for approximate distinct counts), and the trait of the store that keeps their state ([`store`]).
//! `outputs` ties them together for one topic-partition batch. The compactor uses [`stream`] to merge and emit
//! final windows; it never plans SQL, and the ingest-only parts (`sql`, `plan`, `outputs`, `update`, `rows`) are
//! built only with the `sql` feature.

pub(crate) mod aggregate;
pub(crate) mod hll;
#[cfg(feature = "sql")]
pub(crate) mod outputs;
#[cfg(feature = "sql")]
pub(crate) mod plan;
#[cfg(feature = "sql")]
pub(crate) mod rows;
#[cfg(feature = "sql")]
pub(crate) mod sql;
pub(crate) mod store;
pub(crate) mod stream;
#[cfg(feature = "sql")]
pub(crate) mod update;

#[cfg(feature = "sql")]
pub use plan::plan;
pub use store::{Cell, CellWrite, ClockWrite, KeyClaim, Partial, StreamStore, WindowProgress};
