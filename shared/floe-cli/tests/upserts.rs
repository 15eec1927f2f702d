//! Change streams on the embedded default, read back through iceberg-rust's scan (which applies position
//! deletes): the table equals a brute-force reference (a map by primary key with the changes applied in order)
//! after seeded streams of inserts, updates, deletes and re-inserts over several partitions, with redeliveries,
//! overlapping batches and commits in between.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use floe_cli::readback;
use floe_core::{Compactor, CompactorOptions, Ingestor, MskEvent, Pipeline, TableLayout};
use floe_embedded::Embedded;

const PIPELINE: &str = r#"
name = "cdc"
[source]
topics = ["users"]
changes = "upsert"
[table]
namespace = "ns"
name = "users"
primary_key = ["id"]
[[table.columns]]
name = "id"
type = "long"
required = true
[[table.columns]]
name = "v"
type = "string"
"#;

/// One Kafka record: (partition, offset, key, value; `None` is a tombstone).
type Change = (i32, i64, String, Option<String>);

fn event(changes: &[Change]) -> MskEvent {
    let mut records: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    for (partition, offset, key, value) in changes {
        records.entry(format!("users-{partition}")).or_default().push(serde_json::json!({
            "topic": "users", "partition": partition, "offset": offset, "timestamp": 1_700_000_000_000i64 + offset,
            "timestampType": "CREATE_TIME", "key": STANDARD.encode(key),
            "value": value.as_ref().map(|v| STANDARD.encode(v)), "headers": [],
        }));
    }
    serde_json::from_value(serde_json::json!({"eventSource": "aws:kafka", "records": records})).unwrap()
}

/// A small deterministic generator (no extra dependency).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

async fn setup(text: &str) -> (tempfile::TempDir, Embedded, Arc<Pipeline>, Ingestor, Compactor) {
    let dir = tempfile::tempdir().unwrap();
    let b = Embedded::open(dir.path()).await.unwrap();
    let p = Arc::new(floe_core::parse_pipeline(text, "cdc.toml").unwrap());
    let ingestor = Ingestor::new(p.clone(), &b.backends()).await.unwrap();
    let compactor = Compactor::new(p.clone(), &b.backends(), CompactorOptions::default()).unwrap();
    (dir, b, p, ingestor, compactor)
}

async fn table_rows(b: &Embedded, p: &Pipeline) -> Vec<Vec<String>> {
    let table = b.catalog.load_table(&TableLayout::target(p, &b.warehouse).unwrap().ident()).await.unwrap();
    readback::rows(&table, &["id", "v"]).await.unwrap()
}

fn expected(reference: &BTreeMap<i64, String>) -> Vec<Vec<String>> {
    let mut rows: Vec<Vec<String>> = reference.iter().map(|(k, v)| vec![k.to_string(), v.clone()]).collect();
    rows.sort();
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeded_change_stream_equals_the_reference_with_redeliveries_and_overlaps() {
    let (_dir, b, p, ingestor, compactor) = setup(PIPELINE).await;
    let mut rng = Lcg(7);
    let mut reference: BTreeMap<i64, String> = BTreeMap::new();
    let mut next_offset = [0i64; 3];
    let mut log: Vec<Change> = Vec::new();
    let (mut replaced, mut superseded) = (0, 0);
    for round in 0..13 {
        let mut batch = Vec::new();
        for _ in 0..120 {
            let key = rng.next(150) as i64;
            let partition = (key % 3) as i32; // a key stays in its partition, as Kafka's partitioner keeps it
            let offset = next_offset[partition as usize];
            next_offset[partition as usize] += 1;
            let value = if rng.next(5) == 0 {
                reference.remove(&key);
                None
            } else {
                let v = format!("r{round}-o{offset}");
                reference.insert(key, v.clone());
                Some(format!(r#"{{"id":{key},"v":"{v}"}}"#))
            };
            batch.push((partition, offset, key.to_string(), value));
        }
        log.extend(batch.iter().cloned());
        ingestor.handle(&event(&batch)).await.unwrap();
        if round % 3 == 1 {
            // The mapping redelivers a batch, and an overlapping one (the tail of the log plus the last batch).
            ingestor.handle(&event(&batch)).await.unwrap();
            let overlap: Vec<Change> = log[log.len().saturating_sub(200)..].to_vec();
            ingestor.handle(&event(&overlap)).await.unwrap();
        }
        if round % 4 == 3 {
            let reports = compactor.run().await.unwrap();
            let stats = reports[0].change_stats.clone().expect("a change commit");
            (replaced, superseded) = (replaced + stats.replaced, superseded + stats.superseded);
            assert_eq!(table_rows(&b, &p).await, expected(&reference), "after round {round}");
        }
    }
    compactor.run().await.unwrap();
    assert!(replaced > 0 && superseded > 0, "live rows replaced and new rows superseded: {replaced}, {superseded}");
    assert_eq!(table_rows(&b, &p).await, expected(&reference));
    // A second run with nothing staged changes nothing.
    compactor.run().await.unwrap();
    assert_eq!(table_rows(&b, &p).await, expected(&reference));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_and_reinsert_in_one_commit_and_a_key_updated_every_commit() {
    let (_dir, b, p, ingestor, compactor) = setup(PIPELINE).await;
    let row = |k: i64, v: &str| Some(format!(r#"{{"id":{k},"v":"{v}"}}"#));
    // Committed first: keys 1..=3.
    ingestor
        .handle(&event(&[
            (0, 0, "1".into(), row(1, "a")),
            (0, 1, "2".into(), row(2, "b")),
            (0, 2, "3".into(), row(3, "c")),
        ]))
        .await
        .unwrap();
    compactor.run().await.unwrap();
    // One commit: key 1 deleted then re-inserted (two staging steps), key 2 deleted, key 3 updated twice.
    ingestor.handle(&event(&[(0, 3, "1".into(), None), (0, 4, "3".into(), row(3, "c2"))])).await.unwrap();
    ingestor
        .handle(&event(&[(0, 5, "1".into(), row(1, "a2")), (0, 6, "2".into(), None), (0, 7, "3".into(), row(3, "c3"))]))
        .await
        .unwrap();
    let reports = compactor.run().await.unwrap();
    let stats = reports[0].change_stats.clone().unwrap();
    assert_eq!((stats.keys, stats.replaced, stats.superseded), (3, 3, 1), "{stats:?}");
    let mut reference = BTreeMap::from([(1, "a2".to_string()), (3, "c3".to_string())]);
    assert_eq!(table_rows(&b, &p).await, expected(&reference));

    // Key 3 updated in every commit: one live row at the end, and the table stays exact after each commit.
    for i in 0..15 {
        let v = format!("c{}", i + 4);
        ingestor.handle(&event(&[(0, 8 + i, "3".into(), row(3, &v))])).await.unwrap();
        compactor.run().await.unwrap();
        reference.insert(3, v);
        assert_eq!(table_rows(&b, &p).await, expected(&reference));
    }
}

const ORDERED: &str = r#"
name = "cdc"
[source]
topics = ["users"]
changes = "upsert"
[table]
namespace = "ns"
name = "users"
primary_key = ["id"]
order_by = "version"
[[table.columns]]
name = "id"
type = "long"
required = true
[[table.columns]]
name = "v"
type = "string"
[[table.columns]]
name = "version"
type = "long"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn across_partitions_the_greater_order_by_wins_within_and_across_commits() {
    let (_dir, b, p, ingestor, compactor) = setup(ORDERED).await;
    let row = |k: i64, v: &str, version: i64| Some(format!(r#"{{"id":{k},"v":"{v}","version":{version}}}"#));
    // Key 1 moves between partitions; partition 1 carries the newer version although it arrives first.
    ingestor
        .handle(&event(&[(1, 0, "1".into(), row(1, "new", 20)), (0, 0, "1".into(), row(1, "old", 10))]))
        .await
        .unwrap();
    compactor.run().await.unwrap();
    let table = b.catalog.load_table(&TableLayout::target(&p, &b.warehouse).unwrap().ident()).await.unwrap();
    assert_eq!(readback::rows(&table, &["id", "v"]).await.unwrap(), vec![vec!["1".to_string(), "new".into()]]);
    // A later commit with an older version is dropped; a newer one wins.
    ingestor.handle(&event(&[(0, 1, "1".into(), row(1, "stale", 15))])).await.unwrap();
    let reports = compactor.run().await.unwrap();
    assert_eq!(reports[0].change_stats.as_ref().unwrap().stale, 1);
    assert_eq!(table_rows(&b, &p).await, vec![vec!["1".to_string(), "new".into()]]);
    ingestor.handle(&event(&[(0, 2, "1".into(), row(1, "newest", 30))])).await.unwrap();
    compactor.run().await.unwrap();
    assert_eq!(table_rows(&b, &p).await, vec![vec!["1".to_string(), "newest".into()]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_between_change_commits_applies_the_deletes_and_retires_delete_files() {
    let text = PIPELINE.replace(
        "primary_key = [\"id\"]",
        "primary_key = [\"id\"]\nproperties = { \"floe.rewrite.min-input-files\" = \"2\" }",
    );
    let (_dir, b, p, ingestor, compactor) = setup(&text).await;
    let mut reference: BTreeMap<i64, String> = BTreeMap::new();
    let mut offset = 0;
    let mut rewritten = 0;
    for round in 0..8 {
        let mut batch = Vec::new();
        for key in 0..40i64 {
            if (key + round) % 4 == 0 {
                reference.remove(&key);
                batch.push((0, offset, key.to_string(), None));
            } else {
                let v = format!("r{round}");
                reference.insert(key, v.clone());
                batch.push((0, offset, key.to_string(), Some(format!(r#"{{"id":{key},"v":"{v}"}}"#))));
            }
            offset += 1;
        }
        ingestor.handle(&event(&batch)).await.unwrap();
        let reports = compactor.run().await.unwrap();
        rewritten += reports[0].rewritten_inputs;
        assert_eq!(table_rows(&b, &p).await, expected(&reference), "after round {round}");
    }
    assert!(rewritten > 0, "rewrites ran between the change commits");
    let table = b.catalog.load_table(&TableLayout::target(&p, &b.warehouse).unwrap().ident()).await.unwrap();
    let summary = &table.metadata().current_snapshot().unwrap().summary().additional_properties;
    let total = |k: &str| summary.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // Rewrites dropped the delete files of the files they replaced: far fewer than one per commit remain.
    assert!(total("total-delete-files") < 4, "{summary:?}");
    assert_eq!(total("total-records") - total("total-position-deletes"), reference.len() as u64, "{summary:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sql_output_of_a_change_stream_sees_each_new_row_image() {
    let text =
        format!("{PIPELINE}\n[[output]]\nname = \"images\"\nsql = \"SELECT id, v FROM input WHERE v IS NOT NULL\"\n");
    let (_dir, b, p, ingestor, compactor) = setup(&text).await;
    let row = |k: i64, v: &str| Some(format!(r#"{{"id":{k},"v":"{v}"}}"#));
    ingestor.handle(&event(&[(0, 0, "1".into(), row(1, "a")), (0, 1, "2".into(), row(2, "b"))])).await.unwrap();
    // In one batch: key 1 updated twice (collapsed to the last), key 2 deleted.
    ingestor
        .handle(&event(&[(0, 2, "1".into(), row(1, "a2")), (0, 3, "1".into(), row(1, "a3")), (0, 4, "2".into(), None)]))
        .await
        .unwrap();
    compactor.run().await.unwrap();
    assert_eq!(table_rows(&b, &p).await, vec![vec!["1".to_string(), "a3".into()]]);
    let ident = iceberg::TableIdent::from_strs(["ns", "images"]).unwrap();
    let images = iceberg::Catalog::load_table(b.catalog.as_ref(), &ident).await.unwrap();
    let got = readback::rows(&images, &["id", "v"]).await.unwrap();
    let want: Vec<Vec<String>> =
        [("1", "a"), ("1", "a3"), ("2", "b")].iter().map(|(k, v)| vec![k.to_string(), v.to_string()]).collect();
    assert_eq!(got, want, "an append-only stream of the images each batch kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_compactors_at_once_apply_every_change_once() {
    let (_dir, b, p, ingestor, first) = setup(PIPELINE).await;
    let second = Compactor::new(p.clone(), &b.backends(), CompactorOptions::default()).unwrap();
    let mut rng = Lcg(11);
    let mut reference: BTreeMap<i64, String> = BTreeMap::new();
    let mut offset = 0;
    let mut conflicts = 0;
    for round in 0..10 {
        let mut batch = Vec::new();
        for _ in 0..80 {
            let key = rng.next(60) as i64;
            let value = if rng.next(4) == 0 {
                reference.remove(&key);
                None
            } else {
                let v = format!("r{round}-{offset}");
                reference.insert(key, v.clone());
                Some(format!(r#"{{"id":{key},"v":"{v}"}}"#))
            };
            batch.push((0, offset, key.to_string(), value));
            offset += 1;
        }
        ingestor.handle(&event(&batch)).await.unwrap();
        let (a, c) = tokio::join!(first.run(), second.run());
        conflicts += a.unwrap()[0].conflicts + c.unwrap()[0].conflicts;
        assert_eq!(table_rows(&b, &p).await, expected(&reference), "after round {round}");
    }
    assert!(conflicts > 0, "the two compactors raced at least once");
}
