//! Process-wide store metrics: how long fsyncs take (every `fdatasync` of a store file and
//! every directory fsync through [`crate::fs::RealFs`]), as a histogram with fixed buckets, for
//! the server's Prometheus endpoint. Recording is a few relaxed atomic adds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the histogram buckets, in seconds (Prometheus `le`); a last, implicit
/// bucket is `+Inf`.
pub const FSYNC_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

struct Histogram {
    /// Count per bucket (not cumulative); the last is `+Inf`.
    buckets: [AtomicU64; FSYNC_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Histogram {
    const fn new() -> Histogram {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; FSYNC_BUCKETS.len() + 1],
            sum_nanos: AtomicU64::new(0),
        }
    }

    fn record(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let i = FSYNC_BUCKETS
            .iter()
            .position(|&le| secs <= le)
            .unwrap_or(FSYNC_BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos
            .fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
    }

    fn snapshot(&self) -> FsyncStats {
        let mut total = 0;
        let cumulative: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| {
                total += b.load(Ordering::Relaxed);
                total
            })
            .collect();
        FsyncStats {
            count: total,
            cumulative,
            sum_seconds: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

static FSYNC: Histogram = Histogram::new();

/// Records one fsync that took `took`.
pub(crate) fn record_fsync(took: Duration) {
    FSYNC.record(took);
}

/// A snapshot of the fsync histogram.
#[derive(Debug, Clone, PartialEq)]
pub struct FsyncStats {
    /// Cumulative counts for each bound of [`FSYNC_BUCKETS`], then for `+Inf` (= `count`).
    pub cumulative: Vec<u64>,
    /// Fsyncs recorded.
    pub count: u64,
    /// Total time spent in them, in seconds.
    pub sum_seconds: f64,
}

/// The fsync histogram so far.
pub fn fsync_stats() -> FsyncStats {
    FSYNC.snapshot()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative() {
        let h = Histogram::new();
        h.record(Duration::from_micros(50));
        h.record(Duration::from_millis(3));
        h.record(Duration::from_secs(2));
        let after = h.snapshot();
        assert_eq!(after.count, 3);
        let d = |i: usize| after.cumulative[i];
        assert_eq!(d(0), 1, "50 µs is under 100 µs");
        assert_eq!(d(4), 1, "2.5 ms bucket holds only the first");
        assert_eq!(d(5), 2, "3 ms is under 5 ms");
        assert_eq!(d(11), 2, "2 s is over every bound");
        assert_eq!(d(12), 3);
        assert!(after.sum_seconds > 2.0 && after.sum_seconds < 2.01);
    }
}
