//! A catalog view that pins one table to the exact metadata a commit was planned against.
//!
//! iceberg-rust's `Transaction::commit` reloads the table and re-applies its actions when the table moved. For a
//! plain append that is right, but floe plans *which* files to commit from the snapshot it read (committed
//! positions): re-applying that plan on a newer snapshot, e.g. one a concurrent compactor just committed with the
//! same files, would duplicate rows. Through this view the reload returns the pinned table, so the commit's
//! requirements assert the planned snapshot, and the real catalog's compare-and-swap rejects it if anything
//! moved; the compactor then re-plans from fresh metadata.
//!
//! A successful swap through the view also deletes the metadata files the commit dropped from the table's
//! metadata log (`write.metadata.delete-after-commit.enabled`, on by default in floe), as Iceberg's Java
//! `TableOperations` do (see [`crate::catalog::delete_trimmed_metadata`]).

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use iceberg::spec::DataFile;
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use iceberg::{Catalog, Namespace, NamespaceIdent, Result, TableCommit, TableCreation, TableIdent};

use crate::catalog::{metadata_files, table_with};

/// Table property that bounds iceberg-rust's own commit retries; 0 on the pinned copy (retries are floe's).
const NUM_RETRIES: &str = "commit.retry.num-retries";

#[derive(Debug)]
pub struct PinnedCatalog<'a> {
    inner: &'a dyn Catalog,
    pinned: Table,
    /// The metadata files the table referenced as loaded (current and log): what a commit may trim.
    metadata_files: HashSet<String>,
}

impl<'a> PinnedCatalog<'a> {
    /// Pin `table` (as loaded from `inner`). Returns the view and the table to build the transaction on.
    pub fn new(inner: &'a dyn Catalog, table: &Table) -> Result<(PinnedCatalog<'a>, Table)> {
        let metadata_files = metadata_files(table);
        let mut properties = table.metadata().properties().clone();
        properties.insert(NUM_RETRIES.to_string(), "0".to_string());
        // In-memory only: commits send snapshot updates, never these properties.
        let metadata = table
            .metadata()
            .clone()
            .into_builder(table.metadata_location().map(str::to_string))
            .set_properties(properties)?
            .build()?
            .metadata;
        let pinned = table_with(table, metadata, table.metadata_location().map(str::to_string))?;
        Ok((PinnedCatalog { inner, pinned: pinned.clone(), metadata_files }, pinned))
    }
}

/// Append `files` to `table` in one snapshot whose summary carries `properties`, committed through a view pinned
/// to `table`. The outer error: the pinned copy could not be built; the inner one is the commit's (a conflict
/// means the table moved since it was loaded).
pub async fn fast_append(
    catalog: &dyn Catalog,
    table: &Table,
    files: Vec<DataFile>,
    properties: HashMap<String, String>,
) -> Result<Result<Table>> {
    let (view, pinned) = PinnedCatalog::new(catalog, table)?;
    let tx = Transaction::new(&pinned);
    let action = tx
        .fast_append()
        // Duplicates are excluded by the positions / closed watermark in the summary; the library check would
        // read every manifest.
        .with_check_duplicate(false)
        .add_data_files(files)
        .set_snapshot_properties(properties);
    Ok(match action.apply(tx) {
        Ok(tx) => tx.commit(&view).await,
        Err(e) => Err(e),
    })
}

#[async_trait]
impl Catalog for PinnedCatalog<'_> {
    async fn list_namespaces(&self, parent: Option<&NamespaceIdent>) -> Result<Vec<NamespaceIdent>> {
        self.inner.list_namespaces(parent).await
    }
    async fn create_namespace(&self, ns: &NamespaceIdent, props: HashMap<String, String>) -> Result<Namespace> {
        self.inner.create_namespace(ns, props).await
    }
    async fn get_namespace(&self, ns: &NamespaceIdent) -> Result<Namespace> {
        self.inner.get_namespace(ns).await
    }
    async fn namespace_exists(&self, ns: &NamespaceIdent) -> Result<bool> {
        self.inner.namespace_exists(ns).await
    }
    async fn update_namespace(&self, ns: &NamespaceIdent, props: HashMap<String, String>) -> Result<()> {
        self.inner.update_namespace(ns, props).await
    }
    async fn drop_namespace(&self, ns: &NamespaceIdent) -> Result<()> {
        self.inner.drop_namespace(ns).await
    }
    async fn list_tables(&self, ns: &NamespaceIdent) -> Result<Vec<TableIdent>> {
        self.inner.list_tables(ns).await
    }
    async fn create_table(&self, ns: &NamespaceIdent, creation: TableCreation) -> Result<Table> {
        self.inner.create_table(ns, creation).await
    }
    async fn load_table(&self, table: &TableIdent) -> Result<Table> {
        if table == self.pinned.identifier() {
            return Ok(self.pinned.clone());
        }
        self.inner.load_table(table).await
    }
    async fn drop_table(&self, table: &TableIdent) -> Result<()> {
        self.inner.drop_table(table).await
    }
    async fn purge_table(&self, table: &TableIdent) -> Result<()> {
        self.inner.purge_table(table).await
    }
    async fn table_exists(&self, table: &TableIdent) -> Result<bool> {
        self.inner.table_exists(table).await
    }
    async fn rename_table(&self, src: &TableIdent, dest: &TableIdent) -> Result<()> {
        self.inner.rename_table(src, dest).await
    }
    async fn register_table(&self, table: &TableIdent, metadata_location: String) -> Result<Table> {
        self.inner.register_table(table, metadata_location).await
    }
    async fn update_table(&self, commit: TableCommit) -> Result<Table> {
        if let Some(conflict) = crate::catalog::injected_conflict() {
            return Err(conflict);
        }
        let table = self.inner.update_table(commit).await?;
        crate::catalog::delete_trimmed_metadata(&self.metadata_files, &table).await;
        Ok(table)
    }
}
