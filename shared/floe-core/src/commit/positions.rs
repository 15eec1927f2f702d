//! Commit planning: which staged files are already in the table, and the source positions a new snapshot
//! records.
//!
//! Every snapshot floe commits carries, in its summary, the cumulative source positions of the pipeline
//! (`floe.positions.<pipeline>` = `{"topic:partition": next_offset}`). Staging is monotone per topic-partition,
//! so a staged file whose last offset is below the committed position (of its ledger key, see [`plan_keyed`]) is already in the table: that is how the
//! compactor recognises a commit that succeeded but was never marked in the state store, and never commits the
//! same file twice.

use std::collections::BTreeMap;

use iceberg::table::Table;

use crate::error::{Error, Result};
use crate::input::event::SourcePartition;
use crate::state::{KEY_SEPARATOR, StagedFile};

/// Snapshot-summary key prefix for committed positions.
pub const POSITIONS_PREFIX: &str = "floe.positions.";

/// Next offset to commit per topic-partition.
pub type Positions = BTreeMap<SourcePartition, i64>;

/// Summary key of a pipeline.
pub fn positions_key(pipeline: &str) -> String {
    format!("{POSITIONS_PREFIX}{pipeline}")
}

/// The committed positions of `pipeline`: from the newest snapshot in the current ancestry that has them.
pub fn committed_positions(table: &Table, pipeline: &str) -> Result<Positions> {
    let key = positions_key(pipeline);
    match newest_summary_value(table, &key) {
        None => Ok(Positions::new()),
        Some((snapshot_id, text)) => decode_positions(&text).map_err(|message| Error::TableMismatch {
            table: table.identifier().to_string(),
            message: format!("snapshot {snapshot_id} has unreadable {key}: {message}"),
        }),
    }
}

/// The newest value of snapshot-summary property `key` in the current snapshot's ancestry, with the id of the
/// snapshot that carries it.
pub fn newest_summary_value(table: &Table, key: &str) -> Option<(i64, String)> {
    let metadata = table.metadata();
    let mut snapshot = metadata.current_snapshot().cloned();
    while let Some(s) = snapshot {
        if let Some(text) = s.summary().additional_properties.get(key) {
            return Some((s.snapshot_id(), text.clone()));
        }
        snapshot = s.parent_snapshot_id().and_then(|id| metadata.snapshot_by_id(id).cloned());
    }
    None
}

/// The snapshots of the current ancestry that record a pipeline's positions, newest first.
#[derive(Debug, Default)]
pub struct PositionHistory {
    pub snapshots: Vec<(i64, Positions)>,
    /// The ancestry reaches the table's first snapshot (none of it has expired).
    pub complete: bool,
}

/// The [`PositionHistory`] of `pipeline` in `table`.
pub fn position_history(table: &Table, pipeline: &str) -> Result<PositionHistory> {
    let key = positions_key(pipeline);
    let metadata = table.metadata();
    let mut history = PositionHistory::default();
    let mut snapshot = metadata.current_snapshot().cloned();
    while let Some(s) = snapshot {
        if let Some(text) = s.summary().additional_properties.get(&key) {
            let positions = decode_positions(text).map_err(|message| Error::TableMismatch {
                table: table.identifier().to_string(),
                message: format!("snapshot {} has unreadable {key}: {message}", s.snapshot_id()),
            })?;
            history.snapshots.push((s.snapshot_id(), positions));
        }
        history.complete = s.parent_snapshot_id().is_none();
        snapshot = s.parent_snapshot_id().and_then(|id| metadata.snapshot_by_id(id).cloned());
    }
    Ok(history)
}

impl PositionHistory {
    /// The snapshot that committed `file`: the oldest snapshot whose positions cover it, all newer ones covering
    /// it too (positions only grow). `None` if no snapshot covers it, or if the one that did may have expired.
    pub fn covering(&self, file: &StagedFile) -> Option<i64> {
        let covers = |p: &Positions| p.get(&file.source).is_some_and(|next| file.last_offset < *next);
        let newer = self.snapshots.iter().take_while(|(_, p)| covers(p)).count();
        match newer {
            0 => None,
            n if n < self.snapshots.len() || self.complete => Some(self.snapshots[n - 1].0),
            _ => None,
        }
    }
}

pub fn encode_positions(positions: &Positions) -> String {
    let map: BTreeMap<String, i64> = positions.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    serde_json::to_string(&map).expect("a map of strings to integers serializes")
}

pub fn decode_positions(text: &str) -> std::result::Result<Positions, String> {
    let map: BTreeMap<String, i64> = serde_json::from_str(text).map_err(|e| e.to_string())?;
    map.into_iter()
        .map(|(k, v)| {
            let (topic, partition) = k.rsplit_once(':').ok_or_else(|| format!("bad key `{k}`"))?;
            let partition = partition.parse().map_err(|_| format!("bad partition in `{k}`"))?;
            Ok((SourcePartition { topic: topic.to_string(), partition }, v))
        })
        .collect()
}

/// Whether ledger key `key` belongs to `pipeline`: its own, or one of its suffixed keys.
pub fn key_of_pipeline(key: &str, pipeline: &str) -> bool {
    key.strip_prefix(pipeline).is_some_and(|rest| rest.is_empty() || rest.starts_with(KEY_SEPARATOR))
}

/// Committed positions per ledger key.
pub type KeyedPositions = BTreeMap<String, Positions>;

/// The committed positions of `pipeline` and of every other key of its that `staged` names.
pub fn committed_keyed(table: &Table, pipeline: &str, staged: &[StagedFile]) -> Result<KeyedPositions> {
    let mut keys: Vec<&str> = staged.iter().map(|f| f.pipeline.as_str()).collect();
    keys.push(pipeline);
    keys.sort();
    keys.dedup();
    keys.into_iter().map(|k| Ok((k.to_string(), committed_positions(table, k)?))).collect()
}

/// Whether `table` still has `positions` for every key (no rival commit moved any of them).
pub fn positions_unchanged(table: &Table, positions: &KeyedPositions) -> Result<bool> {
    for (key, p) in positions {
        if committed_positions(table, key)? != *p {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Split staged files into (already committed, still to commit): a file is committed when the positions of its
/// ledger key are past its last offset.
pub fn plan_keyed(staged: Vec<StagedFile>, positions: &KeyedPositions) -> (Vec<StagedFile>, Vec<StagedFile>) {
    staged.into_iter().partition(|f| {
        positions.get(&f.pipeline).and_then(|p| p.get(&f.source)).is_some_and(|next| f.last_offset < *next)
    })
}

/// The summary entries a commit of `batch` writes: the pipeline's own positions always (carried forward), and
/// the positions of every other key `batch` has files of. Those keep only the sources `batch` commits: they
/// exist to recognise committed files that are still in the ledger, which after this commit are `batch`'s
/// alone (a backfill's sources are many, archive objects each one, and summaries must not grow with them).
pub fn advance_keyed(pipeline: &str, positions: &KeyedPositions, batch: &[StagedFile]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let own: Vec<StagedFile> = batch.iter().filter(|f| f.pipeline == pipeline).cloned().collect();
    let empty = Positions::new();
    out.insert(positions_key(pipeline), encode_positions(&advance(positions.get(pipeline).unwrap_or(&empty), &own)));
    let mut others: BTreeMap<&str, Vec<StagedFile>> = BTreeMap::new();
    for f in batch.iter().filter(|f| f.pipeline != pipeline) {
        others.entry(f.pipeline.as_str()).or_default().push(f.clone());
    }
    for (key, files) in others {
        let mut next = advance(positions.get(key).unwrap_or(&empty), &files);
        next.retain(|source, _| files.iter().any(|f| &f.source == source));
        out.insert(positions_key(key), encode_positions(&next));
    }
    out
}

/// Positions after committing `files` on top of `positions`.
pub fn advance(positions: &Positions, files: &[StagedFile]) -> Positions {
    let mut next = positions.clone();
    for f in files {
        let p = next.entry(f.source.clone()).or_insert(0);
        *p = (*p).max(f.last_offset + 1);
    }
    next
}

/// At most `max_files` files, taking a prefix (by offset) of every topic-partition so positions stay exact.
pub fn limit(mut pending: Vec<StagedFile>, max_files: usize) -> Vec<StagedFile> {
    if pending.len() <= max_files {
        return pending;
    }
    pending.sort_by(|a, b| (a.first_offset, &a.source, &a.path).cmp(&(b.first_offset, &b.source, &b.path)));
    // Files of one delivered range share its last offset: never split a range across commits.
    let mut cut = max_files;
    while cut > 0 && cut < pending.len() && same_range(&pending[cut - 1], &pending[cut]) {
        cut -= 1;
    }
    if cut == 0 {
        // One range alone exceeds the limit: commit that range whole.
        cut = 1;
        while cut < pending.len() && same_range(&pending[cut - 1], &pending[cut]) {
            cut += 1;
        }
    }
    pending.truncate(cut);
    pending
}

/// Keys one change commit takes at most (its key set is held in memory, ~100 bytes a key).
pub const MAX_CHANGE_KEYS: u64 = 2_000_000;

/// For a change stream: the oldest whole staging steps of `batch` whose key files list at most `max_keys` keys
/// (at least one step), so a commit's key set stays bounded however far the compactor fell behind.
pub fn limit_keys(mut batch: Vec<StagedFile>, max_keys: u64) -> Vec<StagedFile> {
    let keys = |files: &[StagedFile]| files.iter().filter(|f| !f.content.is_data()).map(|f| f.record_count).sum();
    if keys(&batch) <= max_keys {
        return batch;
    }
    batch.sort_by(|a, b| (a.first_offset, &a.source, &a.path).cmp(&(b.first_offset, &b.source, &b.path)));
    let (mut cut, mut total) = (0, 0u64);
    while cut < batch.len() {
        let mut end = cut + 1;
        while end < batch.len() && same_range(&batch[end - 1], &batch[end]) {
            end += 1;
        }
        let step: u64 = keys(&batch[cut..end]);
        if cut > 0 && total + step > max_keys {
            break;
        }
        total += step;
        cut = end;
    }
    batch.truncate(cut);
    batch
}

fn same_range(a: &StagedFile, b: &StagedFile) -> bool {
    a.source == b.source && a.first_offset == b.first_offset && a.pipeline == b.pipeline
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(topic: &str, partition: i32, first: i64, last: i64, path: &str) -> StagedFile {
        StagedFile {
            table: "ns.t".into(),
            path: path.into(),
            pipeline: "p".into(),
            source: SourcePartition { topic: topic.into(), partition },
            first_offset: first,
            last_offset: last,
            record_count: 1,
            file_size: 1,
            data_file: String::new(),
            schema_id: None,
            table_uuid: None,
            content: Default::default(),
        }
    }

    #[test]
    fn change_steps_are_cut_by_their_keys_and_never_split() {
        let keys = |topic: &str, first: i64, n: u64| StagedFile {
            record_count: n,
            content: crate::state::StagedContent::ChangeKeys,
            ..file(topic, 0, first, first + 9, &format!("{topic}-{first}-keys"))
        };
        let batch = vec![
            file("a", 0, 0, 9, "a-0-data"),
            keys("a", 0, 600),
            keys("a", 10, 600),
            file("a", 0, 10, 19, "a-10-data"),
            keys("b", 0, 500),
            keys("a", 20, 10),
        ];
        let cut = limit_keys(batch.clone(), 1_200);
        let paths: Vec<&str> = cut.iter().map(|f| f.path.as_str()).collect();
        // By offset: a@0 (600) and b@0 (500) fit; a@10 would pass the limit; a@20 must wait for a@10.
        assert_eq!(paths, ["a-0-data", "a-0-keys", "b-0-keys"]);
        assert_eq!(limit_keys(batch.clone(), 100).len(), 2, "one step, however many keys it has");
        assert_eq!(limit_keys(batch.clone(), 10_000).len(), 6);
    }

    #[test]
    fn plan_splits_committed_from_pending() {
        let positions: Positions = [(SourcePartition { topic: "a".into(), partition: 0 }, 100)].into();
        let staged = vec![file("a", 0, 0, 99, "x"), file("a", 0, 100, 150, "y"), file("a", 1, 0, 10, "z")];
        let keyed: KeyedPositions = [("p".to_string(), positions.clone())].into();
        let (done, pending) = plan_keyed(staged, &keyed);
        assert_eq!(done.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(), ["x"]);
        assert_eq!(pending.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(), ["y", "z"]);
        let next = advance(&positions, &pending);
        assert_eq!(next[&SourcePartition { topic: "a".into(), partition: 0 }], 151);
        assert_eq!(next[&SourcePartition { topic: "a".into(), partition: 1 }], 11);
    }

    #[test]
    fn the_covering_snapshot_is_the_oldest_whose_positions_cover_the_file() {
        let a = SourcePartition { topic: "a".into(), partition: 0 };
        let at = |next: i64| -> Positions { [(a.clone(), next)].into() };
        let mut history = PositionHistory { snapshots: vec![(3, at(30)), (2, at(20)), (1, at(10))], complete: true };
        let f = |last: i64| file("a", 0, last - 5, last, "x");
        assert_eq!(history.covering(&f(25)), Some(3));
        assert_eq!(history.covering(&f(15)), Some(2));
        assert_eq!(history.covering(&f(5)), Some(1));
        assert_eq!(history.covering(&f(35)), None, "not committed yet");
        assert_eq!(history.covering(&file("b", 0, 0, 1, "y")), None, "another partition");
        // Older snapshots expired: whatever covers the file, its commit may be one of them.
        history.complete = false;
        assert_eq!(history.covering(&f(5)), None);
        assert_eq!(history.covering(&f(15)), Some(2));
    }

    #[test]
    fn backfill_keys_are_planned_and_advanced_on_their_own_positions() {
        let tp = SourcePartition { topic: "a".into(), partition: 0 };
        let bf = |first: i64, last: i64, path: &str, topic: &str| StagedFile {
            pipeline: "p~bf".into(),
            ..file(topic, 0, first, last, path)
        };
        // Live has committed up to 100; the backfill up to 40 of the same partition.
        let positions: KeyedPositions = [
            ("p".to_string(), [(tp.clone(), 100)].into()),
            ("p~bf".to_string(), [(tp.clone(), 40), (SourcePartition { topic: "old".into(), partition: 0 }, 9)].into()),
        ]
        .into();
        let staged = vec![file("a", 0, 100, 109, "live"), bf(0, 39, "bf-done", "a"), bf(40, 59, "bf-new", "a")];
        let (done, pending) = plan_keyed(staged, &positions);
        assert_eq!(done.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(), ["bf-done"]);
        assert_eq!(pending.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(), ["live", "bf-new"]);
        let summary = advance_keyed("p", &positions, &pending[1..]);
        assert_eq!(decode_positions(&summary[&positions_key("p")]).unwrap()[&tp], 100, "live carried as it was");
        let bf_next = decode_positions(&summary[&positions_key("p~bf")]).unwrap();
        assert_eq!(bf_next, [(tp.clone(), 60)].into(), "only the sources the commit has");
        assert!(key_of_pipeline("p~bf", "p") && key_of_pipeline("p", "p"));
        assert!(!key_of_pipeline("p2", "p") && !key_of_pipeline("p~bf", "q"));
    }

    #[test]
    fn positions_round_trip_with_dashes_and_colons_in_topics() {
        let positions: Positions = [
            (SourcePartition { topic: "a-b.c".into(), partition: 12 }, 7),
            (SourcePartition { topic: "x:y".into(), partition: 0 }, 1),
        ]
        .into();
        assert_eq!(decode_positions(&encode_positions(&positions)).unwrap(), positions);
        assert!(decode_positions("{\"nocolon\": 1}").is_err());
    }

    #[test]
    fn limit_keeps_ranges_whole_and_prefixes_per_partition() {
        let files = vec![
            file("a", 0, 0, 9, "a0"),
            file("a", 0, 0, 9, "a1"),
            file("a", 0, 10, 19, "a2"),
            file("b", 0, 0, 5, "b0"),
        ];
        let picked: Vec<String> = limit(files.clone(), 2).into_iter().map(|f| f.path).collect();
        assert_eq!(picked, ["a0", "a1"]);
        let picked: Vec<String> = limit(files.clone(), 3).into_iter().map(|f| f.path).collect();
        assert_eq!(picked, ["a0", "a1", "b0"]);
        let picked: Vec<String> = limit(files.clone(), 1).into_iter().map(|f| f.path).collect();
        assert_eq!(picked, ["a0", "a1"], "a range is never split");
        assert_eq!(limit(files, 10).len(), 4);
    }
}
