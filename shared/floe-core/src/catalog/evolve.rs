//! A table made ready for a layout: loaded (or created), evolved to take the pipeline file as it is now (see
//! [`crate::table::evolve`] for what is allowed), and the layout bound to it. Ingest does this at cold start for
//! every table it writes, the compactor on its first run for every table it commits or emits into: both with the
//! same plan, so whichever comes first evolves the table and the other finds nothing left to do. A plan that
//! Iceberg does not allow fails with the columns and types named, before anything is written.

use iceberg::Catalog;
use iceberg::spec::TableMetadata;
use iceberg::table::Table;
use tracing::{info, warn};

use super::{commit_metadata, is_conflict, load_or_create};
use crate::backends::MetadataSwap;
use crate::error::{Error, Result};
use crate::table::evolve::{Evolution, plan};
use crate::table::layout::TableLayout;

/// A table ready for a layout's files.
#[derive(Debug)]
pub struct Prepared {
    pub table: Table,
    /// The layout bound to the table: its current schema and ids (see [`TableLayout::bind`]).
    pub layout: TableLayout,
    /// What this call changed in the table (empty if it already took the pipeline file).
    pub changes: Vec<String>,
}

/// Evolution commits lost to concurrent ones before giving up (each loss re-plans from the winner's metadata).
const ATTEMPTS: u32 = 5;

/// Load or create `layout`'s table, evolve it to take the pipeline file, and bind the layout to it.
pub async fn prepare(catalog: &dyn Catalog, swap: &dyn MetadataSwap, layout: &TableLayout) -> Result<Prepared> {
    Ok(prepare_with(catalog, swap, layout, |_| Ok((layout.clone(), ()))).await?.0)
}

/// [`prepare`] for a layout that depends on what the table already has (automatic evolution: the columns other
/// containers added). `desired` is asked again on the winner's metadata after every lost race, and may return a
/// value to go with the layout it chose. `create` is the layout a missing table is created from.
pub async fn prepare_with<T>(
    catalog: &dyn Catalog,
    swap: &dyn MetadataSwap,
    create: &TableLayout,
    desired: impl Fn(&TableMetadata) -> Result<(TableLayout, T)>,
) -> Result<(Prepared, T)> {
    let mut table = load_or_create(catalog, create).await?;
    let mut changes = Vec::new();
    let mut conflicts = 0;
    loop {
        let (layout, value) = desired(table.metadata())?;
        let evolution = plan(&layout.name.to_string(), table.metadata(), layout.desired())?;
        if evolution.is_empty() {
            let layout = layout.bind(table.metadata())?;
            return Ok((Prepared { table, layout, changes }, value));
        }
        let metadata = evolved(&table, &evolution)?;
        match commit_metadata(swap, &table, metadata).await? {
            Ok(evolved) => {
                info!(table = %layout.name, changes = ?evolution.changes, "evolved the table");
                changes.extend(evolution.changes);
                table = evolved;
            }
            Err(e) if is_conflict(&e) && conflicts + 1 < ATTEMPTS => {
                // Another container evolving the same table, or a compactor commit: plan again on fresh metadata.
                conflicts += 1;
                warn!(table = %layout.name, error = %e, "the table moved while evolving it; planning again");
                table = catalog.load_table(&layout.ident()).await?;
            }
            Err(e) => return Err(Error::Iceberg(e)),
        }
    }
}

/// `table`'s metadata with the evolution applied (the old schema stays in the metadata for older files).
fn evolved(table: &Table, evolution: &Evolution) -> Result<TableMetadata> {
    let mut builder = table.metadata().clone().into_builder(table.metadata_location().map(str::to_string));
    if let Some(schema) = &evolution.schema {
        builder = builder.add_current_schema(schema.clone())?;
    }
    if !evolution.properties.is_empty() {
        builder = builder.set_properties(evolution.properties.clone())?;
    }
    Ok(builder.build()?.metadata)
}
