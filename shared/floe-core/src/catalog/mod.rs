//! The catalog side shared by ingest and the compactor: tables loaded or created from their layouts, evolved to
//! take the pipeline file as it is now ([`evolve`]), and metadata written by floe itself swapped in through the
//! catalog's compare-and-swap ([`commit_metadata`]), deleting the metadata files a commit drops from the log.
//!
//! Ingest creates and evolves the tables it writes at cold start: field ids are the table's to assign, so the
//! table must have its new columns before any file carries them. Snapshots stay the compactor's alone.

pub(crate) mod evolve;

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use iceberg::io::FileIO;
use iceberg::spec::TableMetadata;
use iceberg::table::Table;
use iceberg::{Catalog, ErrorKind, MetadataLocation, NamespaceIdent};
use tracing::{info, warn};

use crate::backends::MetadataSwap;
use crate::error::{Error, Result};
use crate::failpoint;
use crate::table::layout::TableLayout;

pub use evolve::{Prepared, prepare, prepare_with};

/// Load a table, creating its namespace and the table from the layout when missing.
pub(crate) async fn load_or_create(catalog: &dyn Catalog, layout: &TableLayout) -> Result<Table> {
    let ident = layout.ident();
    match catalog.load_table(&ident).await {
        Ok(table) => return Ok(table),
        Err(e) if e.kind() == ErrorKind::TableNotFound || e.kind() == ErrorKind::NamespaceNotFound => {}
        Err(e) => return Err(e.into()),
    }
    let namespace = NamespaceIdent::new(layout.name.namespace.clone());
    // A failed create is fine if a concurrent compactor created the same thing first: check again rather than
    // match error kinds, because the SQL catalog reports that race as a unique-constraint violation, not as
    // `NamespaceAlreadyExists` / `TableAlreadyExists`.
    if !catalog.namespace_exists(&namespace).await? {
        match catalog.create_namespace(&namespace, HashMap::new()).await {
            Ok(_) => info!(namespace = %layout.name.namespace, "created namespace"),
            Err(e) if !catalog.namespace_exists(&namespace).await? => return Err(e.into()),
            Err(_) => {}
        }
    }
    match catalog.create_table(&namespace, layout.creation()).await {
        Ok(table) => {
            info!(table = %layout.name, location = %layout.location, "created table");
            Ok(table)
        }
        Err(e) => catalog.load_table(&ident).await.map_err(|_| e.into()),
    }
}

/// Delete files the compactor no longer needs (a file already gone counts as deleted); how many went. A failed
/// delete only leaves an unreferenced file behind (orphan removal's), so it is logged as `what`, not raised.
pub(crate) async fn delete_files(file_io: &FileIO, table: &str, paths: &[String], what: &str) -> u64 {
    let mut deleted = 0;
    for path in paths {
        match file_io.delete(path).await {
            Ok(()) => deleted += 1,
            Err(e) => warn!(table, path, error = %e, "could not delete a {what}; orphan removal will"),
        }
    }
    deleted
}

/// A `catalog.conflict` fault armed by a test: the swap is rejected as a concurrent modification.
pub(crate) fn injected_conflict() -> Option<iceberg::Error> {
    #[cfg(feature = "failpoints")]
    if crate::failpoint::fires(crate::failpoint::CATALOG_CONFLICT) {
        let message = "injected fault at catalog.conflict: the table was modified concurrently";
        return Some(iceberg::Error::new(ErrorKind::CatalogCommitConflicts, message));
    }
    None
}

pub(crate) fn is_conflict(e: &iceberg::Error) -> bool {
    e.kind() == ErrorKind::CatalogCommitConflicts || e.retryable()
}

/// `table` (its identifier and file IO) with other metadata.
pub(crate) fn table_with(table: &Table, metadata: TableMetadata, location: Option<String>) -> iceberg::Result<Table> {
    let mut builder = Table::builder()
        .metadata(metadata)
        .identifier(table.identifier().clone())
        .file_io(table.file_io().clone())
        .runtime(iceberg::Runtime::current());
    if let Some(location) = location {
        builder = builder.metadata_location(location);
    }
    builder.build()
}

/// Table property: delete the metadata files a commit drops from the metadata log (Iceberg's default is off;
/// floe's is on, see [`DELETE_AFTER_COMMIT_DEFAULT`]).
pub const DELETE_AFTER_COMMIT: &str = "write.metadata.delete-after-commit.enabled";
/// floe writes a metadata file per commit, a commit a minute per table: without deleting the ones that fell out
/// of the log (`write.metadata.previous-versions-max`, 100 by default), they would pile up forever.
pub const DELETE_AFTER_COMMIT_DEFAULT: bool = true;

/// The current metadata file of a table and those in its metadata log.
pub(crate) fn metadata_files(table: &Table) -> HashSet<String> {
    let log = table.metadata().metadata_log().iter().map(|l| l.metadata_file.clone());
    log.chain(table.metadata_location().map(str::to_string)).collect()
}

/// After a commit from `before` to `after`: delete the metadata files that `after` no longer references, if
/// the table's policy says so. A failed delete leaves an unreferenced file (orphan removal's), so it is logged.
pub(crate) async fn delete_trimmed_metadata(before: &HashSet<String>, after: &Table) -> u64 {
    let enabled = after
        .metadata()
        .properties()
        .get(DELETE_AFTER_COMMIT)
        .map_or(DELETE_AFTER_COMMIT_DEFAULT, |v| v.eq_ignore_ascii_case("true"));
    if !enabled {
        return 0;
    }
    let kept = metadata_files(after);
    let dropped: Vec<String> = before.difference(&kept).cloned().collect();
    delete_files(after.file_io(), &after.identifier().to_string(), &dropped, "old metadata file").await
}

/// Commit `metadata` (built on `table`'s): write it next to the current metadata file, swap the catalog pointer,
/// delete the metadata files the new log dropped. The inner error is the swap's (a conflict: the table moved).
pub(crate) async fn commit_metadata(
    swap: &dyn MetadataSwap,
    table: &Table,
    metadata: TableMetadata,
) -> Result<std::result::Result<Table, iceberg::Error>> {
    let current = table
        .metadata_location()
        .ok_or_else(|| Error::Invariant(format!("{}: table has no metadata location", table.identifier())))?;
    let location = MetadataLocation::from_str(current)?.with_next_version().with_new_metadata(&metadata);
    metadata.write_to(table.file_io(), &location).await?;
    failpoint::hit(failpoint::CATALOG_BEFORE_SWAP).await?;
    if let Some(conflict) = injected_conflict() {
        return Ok(Err(conflict));
    }
    let new_location = location.to_string();
    if let Err(e) = swap.swap(table.identifier(), current, &new_location, &metadata).await {
        return Ok(Err(e));
    }
    let before = metadata_files(table);
    let committed = table_with(table, metadata, Some(new_location))?;
    delete_trimmed_metadata(&before, &committed).await;
    Ok(Ok(committed))
}
