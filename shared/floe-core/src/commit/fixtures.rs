//! Test fixtures of the commit folder: hand-made file metadata, and a day-partitioned table with record
//! batches for it.

use std::sync::Arc;

use arrow_array::{Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use iceberg::spec::{DataContentType, DataFile, DataFileBuilder, DataFileFormat, Literal, Struct};

use crate::table::layout::TableLayout;

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
