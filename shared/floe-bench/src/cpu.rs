//! Process CPU time (all threads, user + system) from `/proc/self/stat`, so that a per-core rate counts work
//! done on helper threads (e.g. tokio's blocking pool for file I/O) and not just the wall clock.

use std::time::Duration;

/// Linux's USER_HZ, fixed at 100 on every mainstream architecture (the kernel scales to it for /proc).
const TICKS_PER_SECOND: u64 = 100;

/// CPU time used by this process so far; `None` off Linux.
pub fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may contain spaces) start at state; utime and stime are 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 1000 / TICKS_PER_SECOND))
}

#[cfg(test)]
mod tests {
    #[test]
    fn cpu_time_grows_with_work() {
        // Spin until the process has used 100 ms of CPU; a reader that never advances fails by the deadline.
        let before = super::process_cpu().expect("Linux");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut x = 0u64;
        while super::process_cpu().expect("Linux") - before < std::time::Duration::from_millis(100) {
            for _ in 0..100_000 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(std::hint::black_box(1));
            }
            assert!(std::time::Instant::now() < deadline, "CPU time did not advance: {before:?}");
        }
        std::hint::black_box(x);
    }
}
