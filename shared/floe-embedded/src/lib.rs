//! floe's embedded default: everything on one machine, no cloud.
//!
//! - state store: SQLite (`<home>/state.db`), see [`SqliteStateStore`];
//! - Iceberg catalog: iceberg-rust's SQL catalog on SQLite (`<home>/catalog.db`), the same tables PyIceberg's
//!   `SqlCatalog` and Java's `JdbcCatalog` use, so other engines can read what floe commits;
//! - warehouse: a local directory (`<home>/warehouse`), listed by a directory walk ([`DirLister`]).

mod backend;
mod lister;
mod state;
mod stream;
mod swap;

pub use backend::{CATALOG_NAME, Embedded};
pub use lister::DirLister;
pub use state::SqliteStateStore;
pub use swap::SqlSwap;
