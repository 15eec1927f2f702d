//! What a handler runs against: the warehouse, its file IO, the Iceberg catalog and the state store, opened once
//! per process by the adapters (`floe-embedded`, `floe-aws`) and handed to [`crate::Ingestor`] and
//! [`crate::Compactor`] as one value.

use std::sync::Arc;

use iceberg::Catalog;
use iceberg::io::FileIO;

use crate::state::StateStore;

/// The storage a pipeline runs on.
#[derive(Clone)]
pub struct Backends {
    /// Warehouse root URL; tables live at `<warehouse>/<namespace>/<table>`.
    pub warehouse: String,
    pub file_io: FileIO,
    pub catalog: Arc<dyn Catalog>,
    pub state: Arc<dyn StateStore>,
}

impl std::fmt::Debug for Backends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backends").field("warehouse", &self.warehouse).finish_non_exhaustive()
    }
}
