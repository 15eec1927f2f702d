//! Bin-packing plans on hand-made file metadata, and real merges of Parquet files written by the table writer
//! into a temp dir, read back row by row.

use arrow_array::{Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use futures::TryStreamExt;
use iceberg::io::FileIO;

use super::*;
use crate::commit::fixtures::{PIPELINE, batch, file};
use crate::pipeline::Pipeline;
use crate::table::layout::TableLayout;

fn paths(files: &[DataFile], bins: &[Vec<usize>]) -> Vec<Vec<String>> {
    bins.iter().map(|b| b.iter().map(|&i| files[i].file_path().to_string()).collect()).collect()
}

#[test]
fn small_files_are_packed_per_partition_up_to_the_target() {
    let policy = MergePolicy { target_size: 100, small_below: 75 };
    let files = vec![
        file("a", 1, 40),
        file("b", 2, 10),
        file("c", 1, 40),
        file("d", 1, 30), // would make 110 with a and c: starts the next bin
        file("e", 1, 80), // near the target: left alone
        file("f", 2, 10),
        file("g", 1, 5),
        file("h", 3, 10), // alone in its partition: nothing to merge it with
    ];
    let bins = pack(&files, &policy);
    assert_eq!(paths(&files, &bins), [vec!["a", "c"], vec!["d", "g"], vec!["b", "f"]]);
}

#[test]
fn nothing_to_merge_gives_no_bins() {
    let policy = MergePolicy::for_target(100);
    assert_eq!(policy.small_below, 75);
    assert!(pack(&[], &policy).is_empty());
    assert!(pack(&[file("a", 1, 90), file("b", 1, 80)], &policy).is_empty());
    assert!(pack(&[file("a", 1, 10), file("b", 2, 10)], &policy).is_empty());
}

#[test]
fn the_merged_name_depends_on_the_inputs_only() {
    let (a, b, c) = (file("s3://w/t/data/a.parquet", 1, 1), file("s3://w/t/data/b.parquet", 1, 1), file("x", 1, 1));
    assert_eq!(merged_prefix(&[&a, &b], 7), merged_prefix(&[&a, &b], 7));
    assert_ne!(merged_prefix(&[&a, &b], 7), merged_prefix(&[&a, &c], 7));
    assert_ne!(merged_prefix(&[&a, &b], 7), merged_prefix(&[&b, &a], 7), "input order is row order");
    assert_ne!(merged_prefix(&[&a, &b], 7), merged_prefix(&[&a, &b], 8), "another run never writes the same object");
    assert!(merged_prefix(&[&a], 7).starts_with("floe-merged-"));
}

async fn rows(file_io: &FileIO, files: &[DataFile]) -> Vec<(i64, Option<String>, i64)> {
    let mut out = Vec::new();
    for f in files {
        let batches: Vec<RecordBatch> = data_file_batches(file_io, f.file_path(), f.file_size_in_bytes())
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        for b in batches {
            let id = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
            let user = b.column(1).as_any().downcast_ref::<StringArray>().unwrap();
            let ts = b.column(2).as_any().downcast_ref::<TimestampMicrosecondArray>().unwrap();
            for i in 0..b.num_rows() {
                out.push((id.value(i), user.is_valid(i).then(|| user.value(i).to_string()), ts.value(i)));
            }
        }
    }
    out
}

#[tokio::test]
async fn a_merge_keeps_every_row_of_its_partition_and_rewrites_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let warehouse = format!("file://{}", dir.path().display());
    let pipeline = Pipeline::parse(PIPELINE, "m.toml").unwrap();
    let layout = TableLayout::target(&pipeline, &warehouse).unwrap();
    let file_io = FileIO::new_with_fs();
    let writer = TableWriter::new(layout.clone(), file_io.clone()).unwrap();

    // Three "invocations" over day 20,000, each one small file.
    let mut inputs = Vec::new();
    for (n, ids) in [0..100, 100..150, 150..400].into_iter().enumerate() {
        inputs.extend(writer.write(batch(&layout, ids, 20_000), &format!("in-{n}")).await.unwrap());
    }
    assert_eq!(inputs.len(), 3);
    let refs: Vec<&DataFile> = inputs.iter().collect();
    let expected = rows(&file_io, &inputs).await;
    assert_eq!(expected.len(), 400);

    let merged = merge(&writer, &file_io, &refs, 1).await.unwrap();
    assert_eq!(merged.files.len(), 1);
    let out = &merged.files[0];
    assert_eq!(out.record_count(), 400);
    assert_eq!(out.partition(), inputs[0].partition());
    assert!(
        out.file_path().contains("/data/ts_day=") && out.file_path().contains("floe-merged-"),
        "{}",
        out.file_path()
    );
    assert_eq!(merged.bytes_read, inputs.iter().map(|f| f.file_size_in_bytes()).sum::<u64>());
    assert_eq!(merged.bytes_written, out.file_size_in_bytes());
    // Column statistics come from the merged file itself.
    assert_eq!(out.lower_bounds().get(&1), Some(&iceberg::spec::Datum::long(0)));
    assert_eq!(out.upper_bounds().get(&1), Some(&iceberg::spec::Datum::long(399)));
    assert_eq!(out.null_value_counts().get(&2), Some(&134));
    assert_eq!(rows(&file_io, &merged.files).await, expected, "same rows, in input order");

    // Merging again in the same run (a retry): the same object, byte for byte.
    let path = out.file_path().strip_prefix("file://").unwrap().to_string();
    let first = std::fs::read(&path).unwrap();
    let again = merge(&writer, &file_io, &refs, 1).await.unwrap();
    assert_eq!(again.files[0].file_path(), out.file_path());
    assert_eq!(std::fs::read(&path).unwrap(), first);
}

#[tokio::test]
async fn inputs_of_different_partitions_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let warehouse = format!("file://{}", dir.path().display());
    let layout = TableLayout::target(&Pipeline::parse(PIPELINE, "m.toml").unwrap(), &warehouse).unwrap();
    let file_io = FileIO::new_with_fs();
    let writer = TableWriter::new(layout.clone(), file_io.clone()).unwrap();
    let a = writer.write(batch(&layout, 0..10, 1), "a").await.unwrap();
    let b = writer.write(batch(&layout, 10..20, 2), "b").await.unwrap();
    let err = merge(&writer, &file_io, &[&a[0], &b[0]], 1).await.unwrap_err();
    assert!(matches!(err, Error::Invariant(_)), "{err}");
}

/// Every file under `dir` (recursively).
fn files_under(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path.display().to_string());
        }
    }
    out
}

#[tokio::test]
async fn a_merge_whose_input_vanishes_leaves_no_file_behind() {
    // A rival compactor committed these inputs and deleted them while this merge was reading them.
    let dir = tempfile::tempdir().unwrap();
    let warehouse = format!("file://{}", dir.path().display());
    let layout = TableLayout::target(&Pipeline::parse(PIPELINE, "m.toml").unwrap(), &warehouse).unwrap();
    let file_io = FileIO::new_with_fs();
    let writer = TableWriter::new(layout.clone(), file_io.clone()).unwrap();
    let a = writer.write(batch(&layout, 0..500, 3), "a").await.unwrap();
    let b = writer.write(batch(&layout, 500..600, 3), "b").await.unwrap();
    let before = files_under(dir.path());
    std::fs::remove_file(b[0].file_path().strip_prefix("file://").unwrap()).unwrap();

    let err = merge(&writer, &file_io, &[&a[0], &b[0]], 9).await.unwrap_err();
    assert!(!matches!(err, Error::Invariant(_)), "a read error, not a plan error: {err}");
    let mut left = files_under(dir.path());
    left.sort();
    let mut expected: Vec<String> = before.into_iter().filter(|p| !p.contains("/b-")).collect();
    expected.sort();
    assert_eq!(left, expected, "the merged file the failed merge started is gone");
}
