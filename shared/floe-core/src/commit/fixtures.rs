//! Test fixtures of the commit folder: hand-made file metadata, and a day-partitioned table (in iceberg's memory
//! catalog, files on disk) with record batches for it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arrow_array::{Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use iceberg::io::LocalFsStorageFactory;
use iceberg::memory::{MEMORY_CATALOG_WAREHOUSE, MemoryCatalog, MemoryCatalogBuilder};
use iceberg::spec::{DataContentType, DataFile, DataFileBuilder, DataFileFormat, Literal, Struct};
use iceberg::table::Table;
use iceberg::{Catalog, CatalogBuilder, NamespaceIdent};

use crate::pipeline::Pipeline;
use crate::table::layout::TableLayout;
use crate::table::writer::TableWriter;

/// A data file of `size` bytes and one row in partition `day`, with no file behind it.
pub fn file(path: &str, day: i32, size: u64) -> DataFile {
    DataFileBuilder::default()
        .content(DataContentType::Data)
        .file_path(path.to_string())
        .file_format(DataFileFormat::Parquet)
        .partition(Struct::from_iter([Some(Literal::int(day))]))
        .record_count(1)
        .file_size_in_bytes(size)
        .build()
        .unwrap()
}

pub const PIPELINE: &str = r#"
name = "m"
[source]
topics = ["t"]
[table]
namespace = "ns"
name = "events"
[[table.columns]]
name = "id"
type = "long"
required = true
[[table.columns]]
name = "user"
type = "string"
[[table.columns]]
name = "ts"
type = "timestamptz"
required = true
[[table.partition]]
column = "ts"
transform = "day"
"#;

pub const DAY_US: i64 = 86_400_000_000;

pub fn batch(layout: &TableLayout, ids: std::ops::Range<i64>, day: i64) -> RecordBatch {
    let users: Vec<Option<String>> = ids.clone().map(|i| (i % 3 != 0).then(|| format!("u{i}"))).collect();
    let ts: Vec<i64> = ids.clone().map(|i| day * DAY_US + i).collect();
    RecordBatch::try_new(
        layout.arrow_schema.clone(),
        vec![
            Arc::new(Int64Array::from_iter_values(ids)),
            Arc::new(StringArray::from(users)),
            Arc::new(TimestampMicrosecondArray::from(ts).with_timezone("+00:00")),
        ],
    )
    .unwrap()
}

/// The [`PIPELINE`]'s target table, created with extra `properties` in a memory catalog over `dir`, and a writer
/// for it.
pub async fn empty_table(dir: &Path, properties: &[(&str, &str)]) -> (MemoryCatalog, Table, TableWriter) {
    let warehouse = format!("file://{}", dir.display());
    let catalog = MemoryCatalogBuilder::default()
        .with_storage_factory(Arc::new(LocalFsStorageFactory))
        .load("t", HashMap::from([(MEMORY_CATALOG_WAREHOUSE.to_string(), warehouse.clone())]))
        .await
        .unwrap();
    let layout = TableLayout::target(&Pipeline::parse(PIPELINE, "m.toml").unwrap(), &warehouse).unwrap();
    let mut creation = layout.creation();
    creation.properties.extend(properties.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let namespace = NamespaceIdent::new("ns".into());
    catalog.create_namespace(&namespace, HashMap::new()).await.unwrap();
    let table = catalog.create_table(&namespace, creation).await.unwrap();
    let writer = TableWriter::new(layout, table.file_io().clone()).unwrap();
    (catalog, table, writer)
}
