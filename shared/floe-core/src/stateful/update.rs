//! What ingest does to an output's state, on top of [`StreamStore`]: key deduplication before the SQL and window
//! pre-aggregation after it. Built only with the SQL engine (the outputs run there); the window rules are in
//! [`super::stream`], which the compactor uses to emit final windows.

use std::collections::{BTreeMap, HashMap};

use crate::error::{Error, Result};
use crate::input::event::SourcePartition;
use crate::pipeline::WindowOutput;
use crate::pipeline::window::{Window, WindowSpec};
use crate::stateful::aggregate::{Acc, merge_all};
use crate::stateful::rows::WindowRows;
use crate::stateful::store::{Cell, CellWrite, ClockWrite, KeyClaim, Partial, StreamStore};
use crate::stateful::stream::final_at;

/// How many times a window step re-reads and retries after losing a race with the compactor or a duplicate
/// delivery, before failing the invocation (which the event source mapping retries).
const WINDOW_ATTEMPTS: u32 = 5;

/// Which rows survive deduplication. `keys[i]` is row i's key (`None`: never a duplicate), `positions[i]` its
/// (offset, Kafka timestamp ms). The first occurrence of a key in the batch claims it.
pub async fn dedup(
    store: &dyn StreamStore,
    scope: &str,
    source: &SourcePartition,
    horizon_ms: i64,
    keys: &[Option<String>],
    positions: &[(i64, i64)],
) -> Result<Vec<bool>> {
    let mut keep = vec![false; keys.len()];
    let mut first: HashMap<&str, usize> = HashMap::new();
    let mut claims = Vec::new();
    let mut claim_rows = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let Some(key) = key else {
            keep[i] = true;
            continue;
        };
        if first.contains_key(key.as_str()) {
            continue;
        }
        first.insert(key, i);
        let (offset, ts) = positions[i];
        claims.push(KeyClaim {
            key: key.clone(),
            owner: format!("{}/{}/{offset}", source.topic, source.partition),
            event_ms: ts,
            expires_ms: ts.saturating_add(horizon_ms),
        });
        claim_rows.push(i);
    }
    let granted = store.claim_keys(scope, &claims).await?;
    for (row, ok) in claim_rows.into_iter().zip(granted) {
        keep[row] = ok;
    }
    Ok(keep)
}

fn cell_id(window: Option<Window>, source: &SourcePartition, group: &str) -> String {
    match window {
        Some(w) => format!("w|{}|{}|{}|{}|{group}", w.start_ms, w.end_ms, source.topic, source.partition),
        None => format!("s|{}|{}|{group}", source.topic, source.partition),
    }
}
/// Add a session `[start, end)` to partial sessions, merging every partial it overlaps.
fn add_session(partials: &mut Vec<Partial>, mut new: Partial) -> std::result::Result<(), String> {
    while let Some(i) = partials.iter().position(|p| p.start_ms < new.end_ms && new.start_ms < p.end_ms) {
        let p = partials.remove(i);
        new.start_ms = new.start_ms.min(p.start_ms);
        new.end_ms = new.end_ms.max(p.end_ms);
        merge_all(&mut new.accs, &p.accs)?;
    }
    let at = partials.partition_point(|p| p.start_ms < new.start_ms);
    partials.insert(at, new);
    Ok(())
}
/// Apply one partition batch's rows to window state. `last_offset` is the batch's last record offset. Returns
/// the late rows (index into `rows`) with the reason.
pub async fn apply_windows(
    store: &dyn StreamStore,
    scope: &str,
    window: &WindowOutput,
    source: &SourcePartition,
    rows: &WindowRows,
    last_offset: i64,
    now_ms: i64,
) -> Result<Vec<(usize, String)>> {
    let lateness = window.watermark.allowed_lateness_ms;
    let n = rows.offsets.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|i| rows.offsets[*i]);
    let assigned: Vec<Vec<(String, Option<Window>)>> = (0..n)
        .map(|i| match (rows.time_ms[i], window.spec) {
            (None, _) => Vec::new(),
            (Some(_), WindowSpec::Session { .. }) => vec![(cell_id(None, source, &rows.group[i]), None)],
            (Some(t), spec) => {
                spec.assign(t).into_iter().map(|w| (cell_id(Some(w), source, &rows.group[i]), Some(w))).collect()
            }
        })
        .collect();
    let mut ids: Vec<String> = assigned.iter().flatten().map(|(id, _)| id.clone()).collect();
    ids.sort();
    ids.dedup();
    let max_event = rows.time_ms.iter().flatten().max().copied();

    for attempt in 1..=WINDOW_ATTEMPTS {
        let closed = store.window_progress(scope).await?.closed_ms;
        let existing: HashMap<String, Cell> =
            store.get_cells(scope, &ids).await?.into_iter().flatten().map(|c| (c.id.clone(), c)).collect();
        let mut late: Vec<(usize, String)> = Vec::new();
        let mut pending: BTreeMap<String, Cell> = BTreeMap::new();
        for &i in &order {
            let offset = rows.offsets[i];
            let Some(t) = rows.time_ms[i] else {
                late.push((i, format!("`{}` is null: the record has no event time", window.time_column)));
                continue;
            };
            let mut missed = Vec::new();
            for (id, w) in &assigned[i] {
                let old = existing.get(id);
                // Decided by an earlier attempt: replay that decision under the watermark it saw.
                let decided = old.filter(|c| offset <= c.last_offset);
                let seen = decided.map_or(closed, |c| c.closed_seen);
                let is_late = match w {
                    Some(w) => final_at(w.end_ms, lateness, seen),
                    None => final_at(t, lateness, seen),
                };
                if is_late {
                    missed.push(match w {
                        Some(w) => format!("[{}, {})", w.start_ms, w.end_ms),
                        None => format!("session at {t}"),
                    });
                    continue;
                }
                if decided.is_some() {
                    continue;
                }
                let cell = pending.entry(id.clone()).or_insert_with(|| match old {
                    Some(c) => c.clone(),
                    None => Cell {
                        id: id.clone(),
                        group: rows.group[i].clone(),
                        source: source.clone(),
                        last_offset: i64::MIN,
                        closed_seen: None,
                        partials: Vec::new(),
                    },
                });
                let mut accs: Vec<Acc> = window.aggregates.iter().map(Acc::new).collect();
                for (acc, inputs) in accs.iter_mut().zip(&rows.inputs) {
                    acc.add(inputs[i]).map_err(|m| window_error(window, &m))?;
                }
                let result = match (w, window.spec) {
                    (Some(w), _) => match cell.partials.first_mut() {
                        Some(p) => merge_all(&mut p.accs, &accs),
                        None => {
                            cell.partials.push(Partial { start_ms: w.start_ms, end_ms: w.end_ms, accs });
                            Ok(())
                        }
                    },
                    (None, WindowSpec::Session { gap_ms }) => {
                        add_session(&mut cell.partials, Partial { start_ms: t, end_ms: t.saturating_add(gap_ms), accs })
                    }
                    (None, _) => Err("internal: a session cell for a fixed window".to_string()),
                };
                result.map_err(|m| window_error(window, &m))?;
            }
            if !missed.is_empty() {
                let reason = match closed {
                    Some(c) => format!(
                        "late for {} of {} window(s) of `{}`: {} already final at watermark {c} (allowed lateness {lateness} ms)",
                        missed.len(),
                        assigned[i].len(),
                        window.late_table,
                        missed.join(", ")
                    ),
                    None => format!("late for window(s) {}", missed.join(", ")),
                };
                late.push((i, reason));
            }
        }
        let writes: Vec<CellWrite> = pending
            .into_values()
            .map(|mut cell| {
                let expected_last_offset = existing.get(&cell.id).map(|c| c.last_offset);
                cell.last_offset = last_offset;
                cell.closed_seen = closed;
                CellWrite { close_ms: cell.close_ms(lateness), cell, expected_last_offset }
            })
            .collect();
        let clock = max_event.map(|m| ClockWrite { source: source.clone(), max_event_ms: m, now_ms });
        match store.put_cells(scope, closed, &writes, clock.as_ref()).await {
            Ok(()) => return Ok(late),
            Err(Error::Conflict(m)) if attempt < WINDOW_ATTEMPTS => {
                tracing::info!(scope, attempt, reason = %m, "window state moved meanwhile; deciding again");
            }
            Err(e) => return Err(e),
        }
    }
    unreachable!("the last attempt returns")
}
fn window_error(window: &WindowOutput, message: &str) -> Error {
    Error::state(format!("window output {}: {message}", window.late_table), false)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sessions in window state merge exactly as session windows do: events less than `gap` apart share a
    /// session; exactly `gap` apart, their windows only touch and stay separate sessions.
    #[test]
    fn sessions_merge_within_the_gap_only() {
        use crate::pipeline::window::Window;
        let spec = WindowSpec::Session { gap_ms: 10 };
        let merged = |windows: Vec<Window>| {
            let mut partials = Vec::new();
            for w in windows {
                add_session(&mut partials, Partial { start_ms: w.start_ms, end_ms: w.end_ms, accs: vec![] }).unwrap();
            }
            partials.iter().map(|p| (p.start_ms, p.end_ms)).collect::<Vec<_>>()
        };
        let w = |start_ms, end_ms| Window { start_ms, end_ms };
        let windows: Vec<Window> = [30, 0, 5, 14, 50, 59].iter().flat_map(|t| spec.assign(*t)).collect();
        // 0, 5, 14 chain (each less than the gap after the previous); 30 is alone (16 after 14); 50 and 59 chain.
        assert_eq!(merged(windows), vec![(0, 24), (30, 40), (50, 69)]);
        // Exactly the gap apart: [0,10) and [10,20) touch but do not overlap; separate sessions.
        assert_eq!(merged(vec![w(10, 20), w(0, 10)]), vec![(0, 10), (10, 20)]);
        // A late event bridging two sessions merges them.
        assert_eq!(merged(vec![w(0, 10), w(15, 25), w(8, 18)]), vec![(0, 25)]);
    }

    fn p(start_ms: i64, end_ms: i64, n: i64) -> Partial {
        Partial { start_ms, end_ms, accs: vec![Acc::Count { n }] }
    }

    #[test]
    fn a_late_event_bridging_two_partial_sessions_merges_them() {
        let mut partials = vec![p(0, 10, 1), p(20, 30, 1)];
        add_session(&mut partials, p(8, 22, 1)).unwrap();
        assert_eq!(partials, vec![p(0, 30, 3)]);
        // Exactly one gap apart: the windows touch, sessions stay separate.
        add_session(&mut partials, p(30, 40, 1)).unwrap();
        assert_eq!(partials.len(), 2);
    }
}
