//! The SQL catalog's compare-and-swap for snapshots floe builds itself: the same `UPDATE … WHERE
//! metadata_location = <expected>` that iceberg-rust's `SqlCatalog::update_table` runs, on the same table
//! (`iceberg_tables`), through a connection of floe's own to `catalog.db`.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use floe_core::{Error, MetadataSwap, Result};
use iceberg::spec::TableMetadata;
use iceberg::{ErrorKind, TableIdent};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};

#[derive(Debug, Clone)]
pub struct SqlSwap {
    pool: SqlitePool,
    catalog: String,
}

impl SqlSwap {
    /// A connection to the catalog database at `path` (created by the SQL catalog), for catalog `catalog`.
    pub async fn open(path: &Path, catalog: &str) -> Result<SqlSwap> {
        let db = |e: sqlx::Error| Error::state(format!("{}: {e}", path.display()), false);
        let options = SqliteConnectOptions::from_str(&format!("sqlite:{}", path.display()))
            .map_err(db)?
            .busy_timeout(Duration::from_secs(30));
        let pool = SqlitePoolOptions::new().max_connections(1).connect_with(options).await.map_err(db)?;
        Ok(SqlSwap { pool, catalog: catalog.to_string() })
    }
}

#[async_trait]
impl MetadataSwap for SqlSwap {
    async fn swap(
        &self,
        ident: &TableIdent,
        expected: &str,
        new_location: &str,
        _metadata: &TableMetadata,
    ) -> iceberg::Result<()> {
        let result = sqlx::query(
            "UPDATE iceberg_tables SET metadata_location = ?, previous_metadata_location = ?
             WHERE catalog_name = ? AND table_name = ? AND table_namespace = ?
               AND (iceberg_type = 'TABLE' OR iceberg_type IS NULL) AND metadata_location = ?",
        )
        .bind(new_location)
        .bind(expected)
        .bind(&self.catalog)
        .bind(ident.name())
        .bind(ident.namespace().join("."))
        .bind(expected)
        .execute(&self.pool)
        .await
        .map_err(|e| iceberg::Error::new(ErrorKind::Unexpected, format!("catalog swap of {ident}")).with_source(e))?;
        if result.rows_affected() == 0 {
            let message = format!("{ident} no longer points at {expected}");
            return Err(iceberg::Error::new(ErrorKind::CatalogCommitConflicts, message).with_retryable(true));
        }
        Ok(())
    }
}
