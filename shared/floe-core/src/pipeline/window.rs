//! Event-time windows and watermarks (groundwork for stateful processing): which windows an event belongs to,
//! how session windows merge, and when a window is complete.
//!
//! Times are milliseconds since the epoch; a window is the half-open interval `[start, end)`. Bucketing uses
//! Euclidean division so events before 1970 fall into the right window.

/// The kinds of windows a pipeline can declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowSpec {
    /// Fixed, non-overlapping windows of `size_ms`, aligned to the epoch.
    Tumbling { size_ms: i64 },
    /// Windows of `size_ms` starting every `hop_ms` (aligned to the epoch); an event is in `ceil(size/hop)` of them.
    Hopping { size_ms: i64, hop_ms: i64 },
    /// Activity windows: events less than `gap_ms` apart share a session.
    Session { gap_ms: i64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Window {
    pub start_ms: i64,
    pub end_ms: i64,
}

impl Window {
    pub fn contains(&self, t: i64) -> bool {
        self.start_ms <= t && t < self.end_ms
    }
}

impl WindowSpec {
    /// Reject windows that cannot work (checked at config load).
    pub fn validate(&self) -> Result<(), String> {
        match *self {
            WindowSpec::Tumbling { size_ms } if size_ms <= 0 => Err("a tumbling window needs a positive size".into()),
            WindowSpec::Hopping { size_ms, hop_ms } if size_ms <= 0 || hop_ms <= 0 => {
                Err("a hopping window needs a positive size and hop".into())
            }
            WindowSpec::Hopping { size_ms, hop_ms } if hop_ms > size_ms => Err(format!(
                "hop {hop_ms} ms is larger than the window size {size_ms} ms: events between windows would be lost"
            )),
            WindowSpec::Session { gap_ms } if gap_ms <= 0 => Err("a session window needs a positive gap".into()),
            _ => Ok(()),
        }
    }

    /// The windows an event at `t` belongs to, in start order. A session event gets its own `[t, t + gap)`,
    /// merged with the overlapping sessions of its group when it is applied to window state.
    pub fn assign(&self, t: i64) -> Vec<Window> {
        match *self {
            WindowSpec::Tumbling { size_ms } => {
                let start = t - t.rem_euclid(size_ms);
                vec![Window { start_ms: start, end_ms: start + size_ms }]
            }
            WindowSpec::Hopping { size_ms, hop_ms } => {
                let last = t - t.rem_euclid(hop_ms);
                let mut windows = Vec::new();
                let mut start = last;
                while start > t - size_ms {
                    windows.push(Window { start_ms: start, end_ms: start + size_ms });
                    start -= hop_ms;
                }
                windows.reverse();
                windows
            }
            WindowSpec::Session { gap_ms } => vec![Window { start_ms: t, end_ms: t + gap_ms }],
        }
    }
}

/// Watermark settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatermarkSpec {
    /// Bounded out-of-orderness: events up to this much older than the newest seen are still on time.
    pub max_out_of_orderness_ms: i64,
    /// A partition without records for this long (processing time) stops holding the watermark back.
    pub idle_timeout_ms: i64,
    /// How long after the watermark passes a window's end it still accepts late events before it is emitted.
    pub allowed_lateness_ms: i64,
}

/// What one source partition has shown so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionClock {
    /// Newest event time seen.
    pub max_event_ms: i64,
    /// Processing time of the last record.
    pub last_record_ms: i64,
}

impl WatermarkSpec {
    /// The watermark of one partition: every event older than this is late.
    pub fn partition_watermark(&self, clock: &PartitionClock) -> i64 {
        clock.max_event_ms.saturating_sub(self.max_out_of_orderness_ms)
    }

    /// The pipeline's watermark: the minimum over active partitions. Idle partitions are ignored; when every
    /// partition is idle, the furthest partition watermark is used so the last windows still close. `None`
    /// before any record.
    pub fn watermark(&self, partitions: &[PartitionClock], now_ms: i64) -> Option<i64> {
        let active = partitions
            .iter()
            .filter(|p| now_ms.saturating_sub(p.last_record_ms) < self.idle_timeout_ms)
            .map(|p| self.partition_watermark(p))
            .min();
        active.or_else(|| partitions.iter().map(|p| self.partition_watermark(p)).max())
    }

    /// A window can be emitted once the watermark has passed its end plus the allowed lateness.
    pub fn is_final(&self, window: &Window, watermark: i64) -> bool {
        watermark >= window.end_ms.saturating_add(self.allowed_lateness_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(start_ms: i64, end_ms: i64) -> Window {
        Window { start_ms, end_ms }
    }

    #[test]
    fn tumbling_boundaries_belong_to_the_next_window() {
        let spec = WindowSpec::Tumbling { size_ms: 1_000 };
        assert_eq!(spec.assign(0), vec![w(0, 1_000)]);
        assert_eq!(spec.assign(999), vec![w(0, 1_000)]);
        assert_eq!(spec.assign(1_000), vec![w(1_000, 2_000)]);
        // Before the epoch: floor, not truncation toward zero.
        assert_eq!(spec.assign(-1), vec![w(-1_000, 0)]);
        assert_eq!(spec.assign(-1_000), vec![w(-1_000, 0)]);
    }

    #[test]
    fn hopping_windows_overlap() {
        let spec = WindowSpec::Hopping { size_ms: 10, hop_ms: 5 };
        assert_eq!(spec.assign(7), vec![w(0, 10), w(5, 15)]);
        assert_eq!(spec.assign(5), vec![w(0, 10), w(5, 15)]);
        assert_eq!(spec.assign(10), vec![w(5, 15), w(10, 20)]);
        assert_eq!(spec.assign(-3), vec![w(-10, 0), w(-5, 5)]);
        // Size not a multiple of the hop: an event is in 2 or 3 windows, each containing it.
        let spec = WindowSpec::Hopping { size_ms: 10, hop_ms: 4 };
        for t in -20..40 {
            let windows = spec.assign(t);
            assert!(windows.iter().all(|x| x.contains(t) && x.start_ms.rem_euclid(4) == 0), "{t}: {windows:?}");
            let expected = (t - 9..=t).filter(|s| s.rem_euclid(4) == 0).count();
            assert_eq!(windows.len(), expected, "{t}");
        }
        // hop == size is tumbling.
        assert_eq!(WindowSpec::Hopping { size_ms: 10, hop_ms: 10 }.assign(13), vec![w(10, 20)]);
    }

    #[test]
    fn invalid_windows_are_rejected() {
        assert!(WindowSpec::Tumbling { size_ms: 0 }.validate().is_err());
        assert!(WindowSpec::Hopping { size_ms: 10, hop_ms: 0 }.validate().is_err());
        assert!(WindowSpec::Hopping { size_ms: 10, hop_ms: 11 }.validate().unwrap_err().contains("lost"));
        assert!(WindowSpec::Session { gap_ms: -1 }.validate().is_err());
        assert_eq!(WindowSpec::Hopping { size_ms: 10, hop_ms: 10 }.validate(), Ok(()));
    }

    #[test]
    fn watermark_is_the_minimum_over_active_partitions() {
        let spec = WatermarkSpec { max_out_of_orderness_ms: 100, idle_timeout_ms: 60_000, allowed_lateness_ms: 50 };
        assert_eq!(spec.watermark(&[], 0), None);
        let fast = PartitionClock { max_event_ms: 10_000, last_record_ms: 1_000 };
        let slow = PartitionClock { max_event_ms: 2_000, last_record_ms: 1_000 };
        assert_eq!(spec.watermark(&[fast, slow], 1_000), Some(1_900));
        // The slow partition goes idle: it stops holding the watermark back.
        let slow_idle = PartitionClock { last_record_ms: -70_000, ..slow };
        assert_eq!(spec.watermark(&[fast, slow_idle], 1_000), Some(9_900));
        // Everything idle: the furthest partition's watermark, so the last windows still close.
        let fast_idle = PartitionClock { last_record_ms: -70_000, ..fast };
        assert_eq!(spec.watermark(&[fast_idle, slow_idle], 1_000), Some(9_900));
    }

    #[test]
    fn a_window_is_final_after_its_end_plus_lateness() {
        let spec = WatermarkSpec { max_out_of_orderness_ms: 0, idle_timeout_ms: 1, allowed_lateness_ms: 50 };
        let window = w(0, 1_000);
        assert!(!spec.is_final(&window, 999));
        assert!(!spec.is_final(&window, 1_049));
        assert!(spec.is_final(&window, 1_050));
        assert!(!spec.is_final(&w(0, i64::MAX), i64::MAX - 1));
    }
}
