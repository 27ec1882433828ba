//! The process's own resource use for `/varz`: resident memory and CPU share, read from
//! `/proc/self` (zero where that is not available).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Bytes per page in `/proc/self/statm`.
const PAGE_SIZE: u64 = 4096;
/// Clock ticks per second in `/proc/self/stat` (`USER_HZ`, fixed at 100 by the Linux ABI).
const TICKS_PER_SEC: f64 = 100.0;

/// Resident set size in bytes.
pub fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * PAGE_SIZE)
}

/// User plus system CPU time consumed so far, in clock ticks.
fn cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces; fields after its `)` are plain.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11); // field 14 is utime
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Readings closer together than this repeat the previous figure rather than divide a tick
/// or two by a sliver of time.
const MIN_WINDOW: Duration = Duration::from_millis(500);

/// CPU use between successive readings, as a percentage of one core (as nats-server reports).
#[derive(Debug)]
pub struct CpuMeter {
    last: Mutex<Reading>,
}

#[derive(Debug, Clone, Copy)]
struct Reading {
    at: Instant,
    ticks: Option<u64>,
    percent: f64,
}

impl CpuMeter {
    /// A meter whose first reading covers the time since now.
    pub fn new() -> CpuMeter {
        CpuMeter {
            last: Mutex::new(Reading {
                at: Instant::now(),
                ticks: cpu_ticks(),
                percent: 0.0,
            }),
        }
    }

    /// Percent of one core used since the previous reading, to one decimal; 0 when unknown.
    pub fn percent(&self) -> f64 {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let elapsed = now - last.at;
        // A window shorter than this is a clock tick or two: noise, not a reading.
        if elapsed < MIN_WINDOW {
            return last.percent;
        }
        let ticks = cpu_ticks();
        let percent = match (last.ticks, ticks) {
            (Some(before), Some(after)) if !elapsed.is_zero() => {
                let busy = after.saturating_sub(before) as f64 / TICKS_PER_SEC;
                (busy / elapsed.as_secs_f64() * 1000.0).round() / 10.0
            }
            _ => 0.0,
        };
        *last = Reading {
            at: now,
            ticks,
            percent,
        };
        percent
    }
}

impl Default for CpuMeter {
    fn default() -> Self {
        CpuMeter::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        if std::path::Path::new("/proc/self/statm").exists() {
            assert!(resident_bytes() > 0);
            assert!(cpu_ticks().is_some());
        }
        let meter = CpuMeter::new();
        assert!(meter.percent() >= 0.0);
    }
}
