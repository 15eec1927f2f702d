//! Backfills on the embedded default, against the real state store, ingest path and compactor: where a backfill
//! meets the live stream (live fence absent, present, or created by live ingest in the middle of planning), a
//! split that crashes and resumes, a re-run that loads nothing, and what earlier backfills loaded.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use floe_cli::{GeneratorOptions, generate, readback};
use floe_core::backfill::{Cap, Chunk, PartitionSpan, SplitReader, plan_kafka, run_split};
use floe_core::{Cell, CellWrite, ClockWrite, KeyClaim, StreamStore, WindowProgress};
use floe_core::{
    Compactor, CompactorOptions, Error, Fence, Ingestor, MskEvent, Pipeline, Router, SourcePartition, SourceRecord,
    StageRequest, StagedFile, StateStore, TableLayout, group_records,
};
use floe_embedded::Embedded;

/// The example pipeline without its derived outputs (dedup and windows keep state a backfill would disturb).
fn raw_pipeline(dir: &Path) -> Arc<Pipeline> {
    let examples = Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("../../examples/pipeline.toml");
    let text = std::fs::read_to_string(examples).unwrap();
    let raw = &text[..text.find("# ---- Derived outputs").expect("the example's outputs marker")];
    std::fs::write(dir.join("raw.toml"), raw).unwrap();
    Arc::new(floe_core::load_pipeline(&dir.join("raw.toml")).unwrap())
}

/// Every record of clicks:0 (offsets 0..n), as ingest and a backfill would read them, and the malformed ones.
fn history(n: usize) -> (Vec<SourceRecord>, BTreeSet<i64>) {
    let options = GeneratorOptions {
        records: n,
        topics: vec![("clicks".into(), 1)],
        partitions_per_event: 1,
        bad_every: 50,
        ..Default::default()
    };
    let generated = generate(&options);
    let bad = generated.bad.iter().map(|(_, _, offset, _)| *offset).collect();
    let mut records = Vec::new();
    for event in &generated.events {
        for group in group_records(event, &["clicks".to_string()]).unwrap() {
            records.extend(group.records);
        }
    }
    assert_eq!(records.len(), n);
    (records, bad)
}

fn event_of(records: &[SourceRecord]) -> MskEvent {
    let values: Vec<serde_json::Value> = records
        .iter()
        .map(|r| {
            use base64::Engine;
            let b64 = |v: &Vec<u8>| base64::engine::general_purpose::STANDARD.encode(v);
            serde_json::json!({"topic": "clicks", "partition": 0, "offset": r.offset, "timestamp": 0,
                "timestampType": "CREATE_TIME", "value": r.value.as_ref().map(b64), "headers": []})
        })
        .collect();
    serde_json::from_value(serde_json::json!({"eventSource": "aws:kafka", "records": {"clicks-0": values}})).unwrap()
}

/// Serves a partition's records a few at a time; fails once after `fail_after` chunks (a crashed invocation).
struct VecReader {
    records: Vec<SourceRecord>,
    chunk: usize,
    reads: usize,
    fail_after: Option<usize>,
}

#[async_trait]
impl SplitReader for VecReader {
    async fn read(&mut self, from: i64, to: i64) -> floe_core::Result<Chunk> {
        if self.fail_after == Some(self.reads) {
            self.fail_after = None;
            return Err(Error::Source { message: "the invocation died".into(), retryable: true });
        }
        self.reads += 1;
        let records: Vec<SourceRecord> =
            self.records.iter().filter(|r| r.offset >= from && r.offset < to).take(self.chunk).cloned().collect();
        let next = records.last().map_or(from, |r| r.offset + 1);
        let end = !self.records.iter().any(|r| r.offset >= next && r.offset < to);
        Ok(Chunk { records, next, end })
    }
}

fn span(from: i64, to: Option<i64>, high: i64) -> PartitionSpan {
    PartitionSpan { topic: "clicks".into(), partition: 0, from, to, high }
}

fn tp() -> SourcePartition {
    SourcePartition { topic: "clicks".into(), partition: 0 }
}

async fn event_ids(p: &Pipeline, b: &Embedded) -> (Vec<String>, BTreeSet<i64>) {
    let target = b.catalog.load_table(&TableLayout::target(p, &b.warehouse).unwrap().ident()).await.unwrap();
    let mut ids: Vec<String> =
        readback::rows(&target, &["event_id"]).await.unwrap().into_iter().map(|r| r[0].clone()).collect();
    ids.sort();
    let dead = b.catalog.load_table(&TableLayout::dead_letter(p, &b.warehouse).unwrap().ident()).await.unwrap();
    let offsets = readback::rows(&dead, &["offset"]).await.unwrap().into_iter().map(|r| r[0].parse().unwrap());
    (ids, offsets.collect())
}

#[tokio::test]
async fn a_backfill_meets_the_live_stream_resumes_after_a_crash_and_loads_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let b = Embedded::open(&dir.path().join("home")).await.unwrap();
    let p = raw_pipeline(dir.path());
    let backends = b.backends();
    let (all, bad) = history(400);

    // The live stream starts at 250 (the mapping's LATEST when it was created).
    let live = Ingestor::new(p.clone(), &backends).await.unwrap();
    live.handle(&event_of(&all[250..300])).await.unwrap();
    assert_eq!(b.state.fence_state("clickstream", &tp()).await.unwrap(), Some(Fence { next: 300, start: Some(250) }));

    let router = Router::new(vec![Ingestor::new(p.clone(), &backends).await.unwrap()]).unwrap();
    let state: &dyn StateStore = b.state.as_ref();
    // `to = live` and an explicit end past the live start both end where live started.
    for to in [None, Some(400)] {
        let plan = plan_kafka(state, &[&p], "r1", &[span(0, to, 300)], Cap::default(), false).await.unwrap();
        assert_eq!(plan.splits.len(), 1);
        assert_eq!(plan.splits[0].ends, BTreeMap::from([("clickstream".to_string(), 250)]));
        assert_eq!(plan.records, 250);
    }
    let plan = plan_kafka(state, &[&p], "r1", &[span(0, None, 300)], Cap::default(), false).await.unwrap();
    let split = &plan.splits[0];

    // An invocation out of time reads nothing and says the split is not done.
    let mut reader = VecReader { records: all.clone(), chunk: 40, reads: 0, fail_after: None };
    let mut progress = |_: u64| {};
    let late = run_split(&router, state, split, &mut reader, Some(std::time::Instant::now()), &mut progress).await;
    let late = late.unwrap();
    assert_eq!((late.done, late.records, late.next, reader.reads), (false, 0, 0, 0));
    // An invocation dies after two chunks; the next one resumes from the fence.
    let mut reader = VecReader { records: all.clone(), chunk: 40, reads: 0, fail_after: Some(2) };
    let mut progress = |_: u64| {};
    assert!(run_split(&router, state, split, &mut reader, None, &mut progress).await.is_err());
    assert_eq!(b.state.fence("clickstream~bf", &tp()).await.unwrap(), Some(80));
    let report = run_split(&router, state, split, &mut reader, None, &mut progress).await.unwrap();
    assert!(report.done);
    assert_eq!((report.records, report.next), (170, 250), "resumed at 80, ended at the live start");
    let fresh = plan_kafka(state, &[&p], "r2", &[span(0, Some(260), 300)], Cap::default(), false).await.unwrap();
    assert_eq!(fresh.done, 1, "what earlier backfills loaded is not planned again");

    // The live stream goes on; the compactor commits both under their own positions.
    live.handle(&event_of(&all[300..400])).await.unwrap();
    let compactor = Compactor::new(p.clone(), &backends, CompactorOptions::default()).unwrap();
    compactor.run().await.unwrap();
    let (ids, dead) = event_ids(&p, &b).await;
    assert_eq!(dead, bad, "every malformed record a dead letter, once");
    let want: Vec<String> = (0..400).filter(|o| !bad.contains(o)).map(|o| event_id(&all[o as usize])).collect();
    let mut want = want;
    want.sort();
    assert_eq!(ids, want, "every good record exactly once, backfilled below 250 and live from 250");

    // Running the split again, or planning the job again, loads nothing.
    let again = run_split(&router, state, split, &mut reader, None, &mut progress).await.unwrap();
    assert_eq!((again.done, again.records), (true, 0));
    let replan = plan_kafka(state, &[&p], "r1", &[span(0, None, 400)], Cap::default(), false).await.unwrap();
    assert_eq!((replan.splits.len(), replan.done), (0, 1));
}

fn event_id(r: &SourceRecord) -> String {
    let json: serde_json::Value = serde_json::from_slice(r.value.as_ref().unwrap()).unwrap();
    json["event_id"].as_str().unwrap().to_string()
}

/// A first, empty staging step of `pipeline` on clicks:0 covering `[first, next)`.
fn first_step(pipeline: &str, first: i64, next: i64) -> StageRequest {
    StageRequest {
        pipeline: pipeline.into(),
        source: tp(),
        expected_fence: None,
        next_fence: next,
        first_offset: first,
        files: vec![],
    }
}

/// A state store where live ingest stages its first step on clicks:0 (offsets 120..130) right before the
/// planner's conditional create of the live fence: the planner loses the race.
struct LiveWinsTheRace {
    inner: Arc<dyn StateStore>,
    raced: AtomicBool,
}

#[async_trait]
impl StateStore for LiveWinsTheRace {
    async fn fence_state(&self, pipeline: &str, source: &SourcePartition) -> floe_core::Result<Option<Fence>> {
        self.inner.fence_state(pipeline, source).await
    }
    async fn stage(&self, request: &StageRequest) -> floe_core::Result<()> {
        if request.pipeline == "clickstream" && !self.raced.swap(true, Ordering::SeqCst) {
            self.inner.stage(&first_step("clickstream", 120, 130)).await?;
        }
        self.inner.stage(request).await
    }
    async fn staged_files(&self, table: &str) -> floe_core::Result<Vec<StagedFile>> {
        self.inner.staged_files(table).await
    }
    async fn remove_staged(&self, table: &str, files: &[StagedFile]) -> floe_core::Result<()> {
        self.inner.remove_staged(table, files).await
    }
}

#[async_trait]
impl StreamStore for LiveWinsTheRace {
    async fn claim_keys(&self, scope: &str, claims: &[KeyClaim]) -> floe_core::Result<Vec<bool>> {
        self.inner.claim_keys(scope, claims).await
    }
    async fn window_progress(&self, scope: &str) -> floe_core::Result<WindowProgress> {
        self.inner.window_progress(scope).await
    }
    async fn set_closed(&self, scope: &str, expected: Option<i64>, closed_ms: i64) -> floe_core::Result<()> {
        self.inner.set_closed(scope, expected, closed_ms).await
    }
    async fn set_emitted(&self, scope: &str, emitted_ms: i64) -> floe_core::Result<()> {
        self.inner.set_emitted(scope, emitted_ms).await
    }
    async fn get_cells(&self, scope: &str, ids: &[String]) -> floe_core::Result<Vec<Option<Cell>>> {
        self.inner.get_cells(scope, ids).await
    }
    async fn scan_cells(&self, scope: &str, close_at_most: Option<i64>) -> floe_core::Result<Vec<Cell>> {
        self.inner.scan_cells(scope, close_at_most).await
    }
    async fn put_cells(
        &self,
        scope: &str,
        expected_closed: Option<i64>,
        writes: &[CellWrite],
        clock: Option<&ClockWrite>,
    ) -> floe_core::Result<()> {
        self.inner.put_cells(scope, expected_closed, writes, clock).await
    }
    async fn delete_cells(&self, scope: &str, cells: &[(String, Option<i64>)]) -> floe_core::Result<()> {
        self.inner.delete_cells(scope, cells).await
    }
    async fn clocks(&self, scope: &str) -> floe_core::Result<Vec<(SourcePartition, i64, i64)>> {
        self.inner.clocks(scope).await
    }
}

#[tokio::test]
async fn without_a_live_stream_the_planner_fences_it_at_the_high_watermark_or_takes_the_one_that_won() {
    let dir = tempfile::tempdir().unwrap();
    let b = Embedded::open(&dir.path().join("home")).await.unwrap();
    let p = raw_pipeline(dir.path());
    let (all, _) = history(200);

    // A dry run changes nothing; a run creates the live fence at the high watermark.
    let dry = plan_kafka(b.state.as_ref(), &[&p], "r", &[span(0, None, 100)], Cap::default(), true).await.unwrap();
    assert_eq!(dry.splits[0].ends["clickstream"], 100);
    assert_eq!(b.state.fence_state("clickstream", &tp()).await.unwrap(), None);
    let plan = plan_kafka(b.state.as_ref(), &[&p], "r", &[span(0, None, 100)], Cap::default(), false).await.unwrap();
    assert_eq!(plan.splits[0].ends["clickstream"], 100);
    assert_eq!(b.state.fence_state("clickstream", &tp()).await.unwrap(), Some(Fence { next: 100, start: Some(100) }));
    // Live ingest then skips what the backfill loads.
    let live = Ingestor::new(p.clone(), &b.backends()).await.unwrap();
    let report = live.handle(&event_of(&all[90..120])).await.unwrap();
    assert_eq!((report.duplicates, report.records), (10, 30));

    // Live ingest creates its fence (at 120) between the planner's read and its create: the planner uses it.
    let other = tempfile::tempdir().unwrap();
    let b2 = Embedded::open(other.path()).await.unwrap();
    let racing = LiveWinsTheRace { inner: b2.state.clone(), raced: AtomicBool::new(false) };
    let plan = plan_kafka(&racing, &[&p], "r", &[span(0, None, 110)], Cap::default(), false).await.unwrap();
    assert_eq!(plan.splits[0].ends["clickstream"], 120, "the live stream's start, not the high watermark");
    assert_eq!(b2.state.fence_state("clickstream", &tp()).await.unwrap(), Some(Fence { next: 130, start: Some(120) }));
}

#[tokio::test]
async fn earlier_backfills_bound_where_a_new_one_starts_and_the_cap_cuts_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let b = Embedded::open(&dir.path().join("home")).await.unwrap();
    let p = raw_pipeline(dir.path());
    let state: &dyn StateStore = b.state.as_ref();
    // Backfills loaded [100, 200) before; the live stream has not started; the job ends at 300.
    state.stage(&first_step("clickstream~bf", 100, 200)).await.unwrap();
    let refused = plan_kafka(state, &[&p], "r", &[span(50, Some(300), 300)], Cap::default(), false).await;
    let message = refused.unwrap_err().to_string();
    assert!(message.contains("100..200") && message.contains("start at 100"), "{message}");
    let plan = plan_kafka(state, &[&p], "r", &[span(100, Some(300), 300)], Cap::default(), false).await.unwrap();
    assert_eq!((plan.records, plan.splits[0].ends["clickstream"]), (100, 300), "continues at 200");
    let cap = Cap { max_records: Some(30), max_bytes: None };
    let capped = plan_kafka(state, &[&p], "r", &[span(100, Some(300), 300)], cap, false).await.unwrap();
    assert!(capped.capped);
    assert_eq!((capped.records, capped.splits[0].ends["clickstream"]), (30, 230));
    // Backfills that ask for change streams or stateful outputs are refused.
    let examples = Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("../../examples/pipeline.toml");
    let stateful = floe_core::load_pipeline(&examples).unwrap();
    let refused = plan_kafka(state, &[&stateful], "r", &[span(0, Some(10), 10)], Cap::default(), false).await;
    assert!(matches!(refused, Err(Error::Backfill(m)) if m.contains("dedup or window")));
}
