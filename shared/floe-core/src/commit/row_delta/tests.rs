//! Row-delta snapshots on a real table (iceberg's memory catalog over a temp dir), read back through iceberg's
//! own scan, which applies position deletes: rows deleted from old and from new files, summaries, names.

use std::collections::HashMap;

use arrow_array::{Array, Int64Array};
use futures::TryStreamExt;
use iceberg::spec::{DataContentType, Literal};

use super::*;
use crate::catalog::table_with;
use crate::commit::deletes::LiveDeletes;
use crate::commit::fixtures::{batch, empty_table};

async fn ids(table: &Table) -> Vec<i64> {
    let batches: Vec<RecordBatch> =
        table.scan().select(["id"]).build().unwrap().to_arrow().await.unwrap().try_collect().await.unwrap();
    let mut out: Vec<i64> = batches
        .iter()
        .flat_map(|b| {
            let a = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
            (0..a.len()).map(|i| a.value(i)).collect::<Vec<_>>()
        })
        .collect();
    out.sort_unstable();
    out
}

#[tokio::test]
async fn data_and_position_deletes_commit_together_and_every_reader_path_applies_them() {
    let dir = tempfile::tempdir().unwrap();
    let (_catalog, table, writer) = empty_table(dir.path(), &[]).await;
    let layout = writer.layout().clone();
    // First snapshot: ids 0..10 on day 1, 10..20 on day 2 (two partitions, two files).
    let mut files = writer.write(batch(&layout, 0..10, 1), "a").await.unwrap();
    files.extend(writer.write(batch(&layout, 10..20, 2), "b").await.unwrap());
    let first = RowDelta { data: files.clone(), deletes: vec![], properties: HashMap::new(), run: 1 };
    let table = table_with(&table, build(&table, &first).await.unwrap(), None).unwrap();
    assert_eq!(table.metadata().current_snapshot().unwrap().summary().operation, Operation::Append);
    assert_eq!(ids(&table).await, (0..20).collect::<Vec<_>>());

    // Second snapshot: new rows 20..25 on day 1; delete id 3 (old file) and id 22 (row 2 of the new file), and
    // ids 11, 12 on day 2.
    let new = writer.write(batch(&layout, 20..25, 1), "c").await.unwrap();
    let day = |d: i32| Struct::from_iter([Some(Literal::int(d))]);
    let (old1, old2, new1) = (files[0].file_path(), files[1].file_path(), new[0].file_path());
    let deletes = vec![
        PartitionDeletes { partition: day(1), positions: vec![(new1.into(), 2), (old1.into(), 3), (new1.into(), 2)] },
        PartitionDeletes { partition: day(2), positions: vec![(old2.into(), 2), (old2.into(), 1)] },
    ];
    let name = plan_name(&table, 1, new.iter().map(|f| f.file_path().to_string()));
    let written = write_position_deletes(&table, &name, deletes.clone()).await.unwrap();
    assert_eq!(written.len(), 2);
    assert!(written.iter().all(|f| f.content_type() == DataContentType::PositionDeletes));
    assert_eq!(written[0].record_count(), 2, "a position listed twice is written once");
    assert_eq!(written[0].lower_bounds()[&DELETE_FILE_PATH_ID], Datum::string(old1.min(new1)));
    assert_eq!(written[0].upper_bounds()[&DELETE_FILE_PATH_ID], Datum::string(old1.max(new1)));
    let properties = HashMap::from([("floe.positions.p".to_string(), "{\"t:0\":9}".to_string())]);
    let delta = RowDelta { data: new.clone(), deletes: written.clone(), properties, run: 1 };
    let metadata = build(&table, &delta).await.unwrap();
    let again = build(&table, &delta).await.unwrap();
    assert_eq!(metadata.current_snapshot_id(), again.current_snapshot_id(), "the same plan, the same snapshot");
    let committed = table_with(&table, metadata, None).unwrap();

    let mut expected: Vec<i64> = (0..25).filter(|i| ![3, 22, 11, 12].contains(i)).collect();
    expected.sort_unstable();
    assert_eq!(ids(&committed).await, expected);
    let snapshot = committed.metadata().current_snapshot().unwrap();
    let props = &snapshot.summary().additional_properties;
    assert_eq!(snapshot.summary().operation, Operation::Overwrite);
    assert_eq!(props["floe.positions.p"], "{\"t:0\":9}");
    assert_eq!(props["total-data-files"], "3");
    assert_eq!(props["total-records"], "25");
    assert_eq!(props["total-delete-files"], "2");
    assert_eq!(props["total-position-deletes"], "4");
    // Time travel to the first snapshot sees no deletes.
    let parent = table.metadata().current_snapshot_id().unwrap();
    let old: Vec<RecordBatch> =
        committed.scan().snapshot_id(parent).build().unwrap().to_arrow().await.unwrap().try_collect().await.unwrap();
    assert_eq!(old.iter().map(|b| b.num_rows()).sum::<usize>(), 20);

    // floe's own reading of the live deletes agrees.
    let list = committed.manifest_list_reader(snapshot).load().await.unwrap();
    let live = LiveDeletes::load(&committed, list.entries(), None).await.unwrap();
    assert!(live.is_deleted(old1, 3) && live.is_deleted(new1, 2) && live.is_deleted(old2, 1));
    assert!(!live.is_deleted(old1, 2));
    assert_eq!((live.deleted(old2), live.files.len(), live.equality), (2, 2, 0));
}

#[tokio::test]
async fn plan_names_differ_by_run_and_parent_snapshot_and_delete_only_commits_are_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let (_catalog, table, writer) = empty_table(dir.path(), &[]).await;
    let layout = writer.layout().clone();
    let files = writer.write(batch(&layout, 0..4, 1), "a").await.unwrap();
    let paths = || files.iter().map(|f| f.file_path().to_string());
    let empty_name = plan_name(&table, 1, paths());
    assert_ne!(plan_name(&table, 2, paths()), empty_name, "another compactor run writes other files");
    let table =
        table_with(&table, build(&table, &RowDelta { data: files.clone(), ..Default::default() }).await.unwrap(), None)
            .unwrap();
    assert_ne!(plan_name(&table, 1, paths()), empty_name, "a plan on another parent writes other files");

    let deletes = vec![PartitionDeletes {
        partition: files[0].partition().clone(),
        positions: vec![(files[0].file_path().to_string(), 0)],
    }];
    let written = write_position_deletes(&table, "d", deletes).await.unwrap();
    let delta = RowDelta { deletes: written, ..Default::default() };
    let committed = table_with(&table, build(&table, &delta).await.unwrap(), None).unwrap();
    assert_eq!(committed.metadata().current_snapshot().unwrap().summary().operation, Operation::Delete);
    assert_eq!(ids(&committed).await, vec![1, 2, 3]);
    assert_eq!(committed.metadata().next_sequence_number(), 3);
}
