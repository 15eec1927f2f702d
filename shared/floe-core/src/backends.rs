//! What a handler runs against: the warehouse, its file IO, the Iceberg catalog and the state store, opened once
//! per process by the adapters (`floe-embedded`, `floe-aws`) and handed to [`crate::Ingestor`] and
//! [`crate::Compactor`] as one value.

use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::BoxStream;
use iceberg::io::FileIO;
use iceberg::spec::TableMetadata;
use iceberg::{Catalog, TableIdent};

use crate::state::StateStore;

/// The storage a pipeline runs on.
#[derive(Clone)]
pub struct Backends {
    /// Warehouse root URL; tables live at `<warehouse>/<namespace>/<table>`.
    pub warehouse: String,
    pub file_io: FileIO,
    pub catalog: Arc<dyn Catalog>,
    /// The same catalog's compare-and-swap, for snapshots floe builds itself (rewrites, manifest merges).
    pub swap: Arc<dyn MetadataSwap>,
    /// Listing of the warehouse, for orphan removal (iceberg's FileIO reads, writes and deletes, but cannot list).
    pub lister: Arc<dyn ObjectLister>,
    pub state: Arc<dyn StateStore>,
}

/// A catalog's metadata pointer swap. iceberg-rust 0.10.1 builds a catalog commit only from its own transaction
/// actions, which cannot replace files; floe writes a `replace` snapshot on the spec APIs and swaps the table's
/// pointer to it through this, the same compare-and-swap the catalog's own commits use.
#[async_trait]
pub trait MetadataSwap: Send + Sync {
    /// Point `ident` at `new_location` (already written, holding `metadata`) if it still points at `expected`.
    /// A table that moved meanwhile is an `ErrorKind::CatalogCommitConflicts` error.
    async fn swap(
        &self,
        ident: &TableIdent,
        expected: &str,
        new_location: &str,
        metadata: &TableMetadata,
    ) -> iceberg::Result<()>;
}

/// One object of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedObject {
    /// Full location, in the scheme of the listed prefix (`s3://bucket/key`, `file:///path`).
    pub location: String,
    pub size: u64,
    /// Last modification, epoch milliseconds; `None` if the store did not say (never old enough to delete).
    pub last_modified_ms: Option<i64>,
}

/// The objects under a prefix of the warehouse: a directory walk on the embedded default, S3 `ListObjectsV2` on
/// AWS. Only orphan removal lists, once a day per table; everything else knows its paths.
#[async_trait]
pub trait ObjectLister: Send + Sync {
    /// Every object (no directory markers) under `prefix`, a location ending in `/`, streamed page by page so
    /// that a table of millions of files is never held in memory. A prefix that does not exist lists nothing.
    async fn list(&self, prefix: &str) -> iceberg::Result<BoxStream<'static, iceberg::Result<ListedObject>>>;
}

impl std::fmt::Debug for Backends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backends").field("warehouse", &self.warehouse).finish_non_exhaustive()
    }
}
