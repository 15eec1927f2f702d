//! The pure parts of change planning: which change of a key wins, and which files can hold a key.

use std::collections::HashMap;
use std::sync::Arc;

use iceberg::spec::{DataContentType, DataFileBuilder, DataFileFormat};

use super::*;
use crate::pipeline::Pipeline;

fn set(topic: &str, partition: i32, first_offset: i64) -> ChangeSet {
    ChangeSet { source: SourcePartition { topic: topic.into(), partition }, first_offset, data: vec![], keys: None }
}

fn change(set: usize, offset: i64, timestamp: Option<i64>, order: Option<i128>) -> Change {
    Change { set, upsert: true, offset, timestamp, order }
}

#[test]
fn within_a_partition_kafka_order_wins_whatever_order_by_says() {
    let sets = [set("t", 0, 0), set("t", 0, 10)];
    let (early, late) = (change(0, 5, Some(9), Some(100)), change(1, 12, Some(1), Some(1)));
    assert!(wins(&late, &early, &sets));
    assert!(!wins(&early, &late, &sets));
}

#[test]
fn across_partitions_order_by_then_kafka_time_then_the_partition_decides() {
    let sets = [set("t", 0, 0), set("t", 1, 0)];
    assert!(wins(&change(0, 1, Some(1), Some(20)), &change(1, 1, Some(9), Some(10)), &sets), "order_by first");
    assert!(!wins(&change(0, 1, Some(9), Some(10)), &change(1, 1, Some(1), Some(20)), &sets));
    assert!(wins(&change(0, 1, Some(9), None), &change(1, 1, Some(1), None), &sets), "then the Kafka timestamp");
    assert!(wins(&change(1, 1, Some(5), None), &change(0, 1, Some(5), None), &sets), "then the greater partition");
    assert!(!wins(&change(0, 1, Some(5), None), &change(1, 1, Some(5), None), &sets));
}

fn data_file(lower: i64, upper: i64) -> DataFile {
    DataFileBuilder::default()
        .content(DataContentType::Data)
        .file_path(format!("f-{lower}-{upper}"))
        .file_format(DataFileFormat::Parquet)
        .partition(Struct::empty())
        .record_count(1)
        .file_size_in_bytes(1)
        .lower_bounds(HashMap::from([(1, Datum::long(lower))]))
        .upper_bounds(HashMap::from([(1, Datum::long(upper))]))
        .build()
        .unwrap()
}

#[test]
fn key_bounds_keep_exactly_the_files_whose_range_holds_a_key() {
    let p = Pipeline::parse(
        r#"
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
"#,
        "u.toml",
    )
    .unwrap();
    let layout = TableLayout::target(&p, "file:///wh").unwrap();
    let keys = KeyColumns::new(&layout).unwrap();
    let mut winners = HashMap::new();
    for k in [5i64, 17, 40] {
        let array: ArrayRef = Arc::new(arrow_array::Int64Array::from(vec![k]));
        let rows = keys.converter.convert_columns(&[array]).unwrap();
        winners.insert(rows.row(0).as_ref().into(), change(0, k, None, None));
    }
    let bounds = FirstKeyBounds::new(&keys, &winners).unwrap();
    let holds = |l, u| bounds.may_hold(&data_file(l, u));
    assert!(holds(0, 5) && holds(5, 5) && holds(6, 17) && holds(18, 100) && holds(-10, 1000));
    assert!(!holds(6, 16) && !holds(0, 4) && !holds(41, 90) && !holds(18, 39));
    let unbounded = DataFileBuilder::default()
        .content(DataContentType::Data)
        .file_path("f".into())
        .file_format(DataFileFormat::Parquet)
        .partition(Struct::empty())
        .record_count(1)
        .file_size_in_bytes(1)
        .build()
        .unwrap();
    assert!(bounds.may_hold(&unbounded), "a file without statistics is always read");
}
