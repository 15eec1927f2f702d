//! Stateful steps of an output, on top of [`StreamStore`]: the choice of final windows and the cleanup of their
//! state (compactor). What ingest does to the state (key deduplication before the SQL, window pre-aggregation
//! after it) is in [`super::update`], built only with the SQL engine.
//!
//! Window rules (all times are event time, in milliseconds):
//! - A window is *final* at watermark `C` when `end + allowed_lateness <= C`. The closed watermark `C` is moved by
//!   the compactor only; ingest decides lateness against the value it read and writes conditionally on it.
//! - Tumbling and hopping: a record is added to each of its windows that is not final; if any of them is final,
//!   the record also goes to the late table (naming the windows it missed).
//! - Session: a record at `t` is late when `t + allowed_lateness <= C`. This is exactly the condition under which
//!   it could touch a session that may already be emitted (its end is at most `C - lateness`), so an emitted
//!   session never changes.

use std::collections::BTreeMap;

use crate::pipeline::WindowOutput;
use crate::pipeline::window::{Window, WindowSpec};
use crate::stateful::aggregate::{Acc, merge_all};
use crate::stateful::store::{Cell, CellWrite, Partial};

/// Whether a window ending at `end_ms` is final once the closed watermark is `closed`.
pub(super) fn final_at(end_ms: i64, lateness_ms: i64, closed: Option<i64>) -> bool {
    closed.is_some_and(|c| end_ms.saturating_add(lateness_ms) <= c)
}
/// One final window of a group, with its merged aggregates.
#[derive(Debug, Clone, PartialEq)]
pub struct FinalWindow {
    pub window: Window,
    pub group: String,
    pub accs: Vec<Acc>,
    /// The (cell id, partial start) pairs it was merged from (for cleanup).
    pub parts: Vec<(String, i64)>,
}

/// The windows final at `through` and not at `after` (already emitted), merged across source partitions, in
/// (start, end, group) order.
pub fn final_windows(
    window: &WindowOutput,
    cells: &[Cell],
    after: Option<i64>,
    through: i64,
) -> std::result::Result<Vec<FinalWindow>, String> {
    let lateness = window.watermark.allowed_lateness_ms;
    let mut merged: BTreeMap<(String, i64, i64), FinalWindow> = BTreeMap::new();
    let mut sessions: BTreeMap<&str, Vec<(&Cell, &Partial)>> = BTreeMap::new();
    for cell in cells {
        for p in &cell.partials {
            match window.spec {
                WindowSpec::Session { .. } => sessions.entry(cell.group.as_str()).or_default().push((cell, p)),
                _ => {
                    let key = (cell.group.clone(), p.start_ms, p.end_ms);
                    let entry = merged.entry(key).or_insert_with(|| FinalWindow {
                        window: Window { start_ms: p.start_ms, end_ms: p.end_ms },
                        group: cell.group.clone(),
                        accs: window.aggregates.iter().map(Acc::new).collect(),
                        parts: Vec::new(),
                    });
                    merge_all(&mut entry.accs, &p.accs)?;
                    entry.parts.push((cell.id.clone(), p.start_ms));
                }
            }
        }
    }
    for (group, mut parts) in sessions {
        parts.sort_by_key(|(c, p)| (p.start_ms, p.end_ms, c.id.clone()));
        let mut current: Option<FinalWindow> = None;
        for (cell, p) in parts {
            match &mut current {
                Some(s) if p.start_ms < s.window.end_ms => {
                    s.window.end_ms = s.window.end_ms.max(p.end_ms);
                    merge_all(&mut s.accs, &p.accs)?;
                    s.parts.push((cell.id.clone(), p.start_ms));
                }
                _ => {
                    if let Some(s) = current.take() {
                        merged.insert((s.group.clone(), s.window.start_ms, s.window.end_ms), s);
                    }
                    current = Some(FinalWindow {
                        window: Window { start_ms: p.start_ms, end_ms: p.end_ms },
                        group: group.to_string(),
                        accs: p.accs.clone(),
                        parts: vec![(cell.id.clone(), p.start_ms)],
                    });
                }
            }
        }
        if let Some(s) = current.take() {
            merged.insert((s.group.clone(), s.window.start_ms, s.window.end_ms), s);
        }
    }
    let mut out: Vec<FinalWindow> = merged
        .into_values()
        .filter(|w| final_at(w.window.end_ms, lateness, Some(through)) && !final_at(w.window.end_ms, lateness, after))
        .collect();
    out.sort_by(|a, b| (a.window, &a.group).cmp(&(b.window, &b.group)));
    Ok(out)
}

/// Cells to delete (each with the `last_offset` it must still have, or `None`: unconditionally) and session
/// cells to rewrite without their emitted partial sessions.
pub type Cleanup = (Vec<(String, Option<i64>)>, Vec<CellWrite>);

/// After windows through `emitted` are committed: the cells to delete, and session cells to rewrite without the
/// emitted partial sessions (each with the `last_offset` it must still have).
pub fn cleanup(window: &WindowOutput, cells: &[Cell], emitted: i64) -> std::result::Result<Cleanup, String> {
    let lateness = window.watermark.allowed_lateness_ms;
    if !matches!(window.spec, WindowSpec::Session { .. }) {
        let delete = cells.iter().filter(|c| c.close_ms(lateness) <= emitted).map(|c| (c.id.clone(), None)).collect();
        return Ok((delete, Vec::new()));
    }
    let done: std::collections::HashSet<(String, i64)> =
        final_windows(window, cells, None, emitted)?.into_iter().flat_map(|w| w.parts).collect();
    let mut delete = Vec::new();
    let mut rewrite = Vec::new();
    for cell in cells {
        let keep: Vec<Partial> =
            cell.partials.iter().filter(|p| !done.contains(&(cell.id.clone(), p.start_ms))).cloned().collect();
        if keep.len() == cell.partials.len() {
            continue;
        }
        if keep.is_empty() {
            delete.push((cell.id.clone(), Some(cell.last_offset)));
        } else {
            let mut c = cell.clone();
            c.partials = keep;
            rewrite.push(CellWrite {
                close_ms: c.close_ms(lateness),
                cell: c,
                expected_last_offset: Some(cell.last_offset),
            });
        }
    }
    Ok((delete, rewrite))
}
