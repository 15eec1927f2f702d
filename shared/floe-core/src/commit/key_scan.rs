//! Reading the key columns of a data file for the change planner ([`super::changes`]): only the wanted columns
//! (matched by field id, named as the table names them now), one row group at a time with its first row's
//! position, and — when probing for keys — only the row groups whose Parquet bloom filter on the first key
//! column may hold one of them (floe writes those filters for primary-key tables; a file without one is read
//! whole).

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::RecordBatch;
use futures::Stream;
use iceberg::arrow::ArrowFileReader;
use iceberg::io::{FileIO, FileMetadata, InputFile};
use iceberg::spec::DataFile;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use parquet::arrow::{PARQUET_FIELD_ID_META_KEY, ParquetRecordBatchStreamBuilder, ProjectionMask};
use parquet::basic::Type as PhysicalType;
use parquet::bloom_filter::Sbbf;

use crate::error::Result;
use crate::table::reader::READ_BATCH_ROWS;

/// A key value as the bloom filter hashes it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Probe {
    Int(i128),
    Bytes(Vec<u8>),
}

/// The key columns of one data file, ready to be read row group by row group.
pub struct KeyScan {
    input: InputFile,
    size: u64,
    metadata: ArrowReaderMetadata,
    mask: ProjectionMask,
    /// (name in the file, name in the table) of each projected column.
    renames: Arc<Vec<(String, String)>>,
    /// The row groups to read and the position of their first row.
    pub groups: Vec<(usize, i64)>,
    /// Row groups the bloom filter ruled out.
    pub skipped: usize,
}

impl KeyScan {
    /// Open `file` for the columns with field ids `wanted` (named by `name_of`); with `probe` (the first key
    /// column's field id and sorted values), keep only row groups whose bloom filter may hold a value.
    pub async fn open(
        file_io: &FileIO,
        file: &DataFile,
        wanted: &[i32],
        name_of: impl Fn(i32) -> String,
        probe: Option<(i32, &[Probe])>,
    ) -> Result<KeyScan> {
        let input = file_io.new_input(file.file_path())?;
        let size = file.file_size_in_bytes();
        let reader = ArrowFileReader::new(FileMetadata { size }, input.reader().await?);
        let mut builder = ParquetRecordBatchStreamBuilder::new_with_options(reader, ArrowReaderOptions::new()).await?;
        let mut roots = Vec::new();
        let mut renames = Vec::new();
        for (i, field) in builder.schema().fields().iter().enumerate() {
            let id = field.metadata().get(PARQUET_FIELD_ID_META_KEY).and_then(|v| v.parse::<i32>().ok());
            if let Some(id) = id.filter(|id| wanted.contains(id)) {
                roots.push(i);
                renames.push((field.name().clone(), name_of(id)));
            }
        }
        let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
        let parquet = builder.metadata().clone();
        let mut groups = Vec::with_capacity(parquet.num_row_groups());
        let mut start = 0i64;
        for rg in 0..parquet.num_row_groups() {
            groups.push((rg, start));
            start += parquet.row_group(rg).num_rows();
        }
        let mut skipped = 0;
        if let Some((id, values)) = probe {
            // The leaf column of the first key (a top-level primitive: its own leaf).
            let schema = builder.parquet_schema();
            let leaf = (0..schema.num_columns()).find(|&c| {
                let info = schema.column(c).self_type().get_basic_info().clone();
                info.has_id() && info.id() == id && schema.column(c).path().parts().len() == 1
            });
            if let Some(leaf) = leaf {
                let physical = schema.column(leaf).physical_type();
                let mut kept = Vec::with_capacity(groups.len());
                for (rg, start) in groups {
                    let keep = match builder.get_row_group_column_bloom_filter(rg, leaf).await? {
                        Some(filter) => may_contain(&filter, physical, values),
                        None => true,
                    };
                    if keep { kept.push((rg, start)) } else { skipped += 1 }
                }
                groups = kept;
            }
        }
        let metadata = ArrowReaderMetadata::try_new(parquet, ArrowReaderOptions::new())?;
        Ok(KeyScan { input, size, metadata, mask, renames: Arc::new(renames), groups, skipped })
    }

    /// The batches of row group `rg`, in row order, columns named as the table names them.
    pub async fn row_group(&self, rg: usize) -> Result<impl Stream<Item = Result<RecordBatch>> + Unpin + use<>> {
        let reader = ArrowFileReader::new(FileMetadata { size: self.size }, self.input.reader().await?);
        let stream = ParquetRecordBatchStreamBuilder::new_with_metadata(reader, self.metadata.clone())
            .with_projection(self.mask.clone())
            .with_row_groups(vec![rg])
            .with_batch_size(READ_BATCH_ROWS)
            .build()?;
        let renames = self.renames.clone();
        Ok(futures::StreamExt::map(stream, move |batch| rename(batch?, &renames)))
    }
}

/// Whether a bloom filter may hold one of `values` (a type it cannot be probed with: always).
fn may_contain(filter: &Sbbf, physical: PhysicalType, values: &[Probe]) -> bool {
    values.iter().any(|v| match (physical, v) {
        (PhysicalType::INT32, Probe::Int(i)) => i32::try_from(*i).is_ok_and(|i| filter.check(&i)),
        (PhysicalType::INT64, Probe::Int(i)) => i64::try_from(*i).is_ok_and(|i| filter.check(&i)),
        (PhysicalType::BYTE_ARRAY, Probe::Bytes(b)) => filter.check(b.as_slice()),
        _ => true,
    })
}

fn rename(batch: RecordBatch, renames: &[(String, String)]) -> Result<RecordBatch> {
    if renames.iter().all(|(from, to)| from == to) {
        return Ok(batch);
    }
    let by_name: HashMap<&str, &str> = renames.iter().map(|(f, t)| (f.as_str(), t.as_str())).collect();
    let fields: Vec<arrow_schema::Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| match by_name.get(f.name().as_str()) {
            Some(to) => f.as_ref().clone().with_name(*to),
            None => f.as_ref().clone(),
        })
        .collect();
    Ok(RecordBatch::try_new(Arc::new(arrow_schema::Schema::new(fields)), batch.columns().to_vec())?)
}

#[cfg(test)]
mod tests {
    use arrow_array::{Int64Array, StringArray};

    use super::*;
    use crate::pipeline::Pipeline;
    use crate::table::layout::TableLayout;
    use crate::table::writer::TableWriter;

    #[tokio::test]
    async fn the_key_bloom_filter_rules_out_row_groups_without_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let text = r#"
name = "u"
[source]
topics = ["t"]
changes = "upsert"
[table]
namespace = "ns"
name = "t"
primary_key = ["id"]
[[table.columns]]
name = "id"
type = "long"
required = true
[[table.columns]]
name = "v"
type = "string"
"#;
        let layout =
            TableLayout::target(&Pipeline::parse(text, "u.toml").unwrap(), &format!("file://{}", dir.path().display()))
                .unwrap();
        let writer = TableWriter::new(layout.clone(), FileIO::new_with_fs()).unwrap();
        let ids: Vec<i64> = (0..2000).map(|i| i * 2).collect();
        let batch = RecordBatch::try_new(
            layout.arrow_schema.clone(),
            vec![
                Arc::new(Int64Array::from(ids.clone())),
                Arc::new(StringArray::from_iter_values(ids.iter().map(|i| format!("v{i}")))),
            ],
        )
        .unwrap();
        let file = writer.write(batch, "f").await.unwrap().remove(0);
        let io = FileIO::new_with_fs();
        let open = |probe: Vec<Probe>| {
            let (io, file) = (io.clone(), file.clone());
            async move { KeyScan::open(&io, &file, &[1], |_| "id".into(), Some((1, &probe))).await.unwrap() }
        };
        let hit = open(vec![Probe::Int(500)]).await;
        assert_eq!((hit.groups.clone(), hit.skipped), (vec![(0, 0)], 0));
        let miss = open(vec![Probe::Int(501), Probe::Int(1001)]).await;
        assert_eq!((miss.groups.len(), miss.skipped), (0, 1), "odd keys are not in the file");
        // Without a probe every row group is read, projected to the wanted column.
        let all = KeyScan::open(&io, &file, &[1], |_| "id".into(), None).await.unwrap();
        let batches: Vec<RecordBatch> =
            futures::TryStreamExt::try_collect(all.row_group(0).await.unwrap()).await.unwrap();
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 2000);
        assert_eq!(batches[0].num_columns(), 1);
    }
}
