//! Opening the embedded default under one home directory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use floe_core::{Backends, Error, Result};
use iceberg::io::{FileIO, FileIOBuilder, LocalFsStorageFactory};
use iceberg::{Catalog, CatalogBuilder};
use iceberg_catalog_sql::{
    SQL_CATALOG_PROP_BIND_STYLE, SQL_CATALOG_PROP_URI, SQL_CATALOG_PROP_WAREHOUSE, SqlBindStyle, SqlCatalogBuilder,
};

use crate::state::SqliteStateStore;
use crate::swap::SqlSwap;

/// Catalog name written into the SQL catalog tables (readers must use the same name).
pub const CATALOG_NAME: &str = "floe";

/// The embedded backends, opened under `home`.
#[derive(Clone)]
pub struct Embedded {
    pub home: PathBuf,
    /// `file://` URL of the warehouse directory.
    pub warehouse: String,
    pub file_io: FileIO,
    pub catalog: Arc<dyn Catalog>,
    pub swap: Arc<SqlSwap>,
    pub state: Arc<SqliteStateStore>,
}

impl Embedded {
    /// Open (creating if needed) the state store, catalog and warehouse under `home`.
    pub async fn open(home: &Path) -> Result<Embedded> {
        let io = |e: std::io::Error| Error::state(format!("{}: {e}", home.display()), false);
        std::fs::create_dir_all(home.join("warehouse")).map_err(io)?;
        let home = home.canonicalize().map_err(io)?;
        let warehouse = format!("file://{}", home.join("warehouse").display());
        let file_io = FileIOBuilder::new(Arc::new(LocalFsStorageFactory)).build();
        let props = HashMap::from([
            (SQL_CATALOG_PROP_URI.to_string(), format!("sqlite:{}?mode=rwc", home.join("catalog.db").display())),
            (SQL_CATALOG_PROP_WAREHOUSE.to_string(), warehouse.clone()),
            (SQL_CATALOG_PROP_BIND_STYLE.to_string(), SqlBindStyle::QMark.to_string()),
        ]);
        let catalog = SqlCatalogBuilder::default()
            .with_storage_factory(Arc::new(LocalFsStorageFactory))
            .load(CATALOG_NAME, props)
            .await?;
        let swap = Arc::new(SqlSwap::open(&home.join("catalog.db"), CATALOG_NAME).await?);
        let state = Arc::new(SqliteStateStore::open(&home.join("state.db")).await?);
        Ok(Embedded { home, warehouse, file_io, catalog: Arc::new(catalog), swap, state })
    }

    /// The backends as the handlers take them.
    pub fn backends(&self) -> Backends {
        Backends {
            warehouse: self.warehouse.clone(),
            file_io: self.file_io.clone(),
            catalog: self.catalog.clone(),
            swap: self.swap.clone(),
            lister: Arc::new(crate::lister::DirLister),
            state: self.state.clone(),
        }
    }

    /// Path of the SQL catalog database (for readers such as PyIceberg).
    pub fn catalog_db(&self) -> PathBuf {
        self.home.join("catalog.db")
    }
}
