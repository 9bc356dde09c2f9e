//! How long a component took, as a histogram of power-of-two buckets in microseconds: one
//! relaxed add per timing, read back as a count and upper bounds of the median and the 99th
//! percentile. What the dashboard shows on a step that waits (an API call, a query) and on an
//! output; a step done in place is not timed (its clock reads would cost more than it does).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Bucket `i` counts durations under 2^i µs (the last, everything longer: ≥ 18 minutes).
const BUCKETS: usize = 32;

#[derive(Default)]
pub struct Timings {
    buckets: [AtomicU64; BUCKETS],
}

/// A component's timings at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub count: u64,
    /// Upper bound of the bucket holding the median, in milliseconds.
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl Timings {
    pub fn record(&self, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let bucket = ((u64::BITS - micros.leading_zeros()) as usize).min(BUCKETS - 1);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }

    /// `None` before the first timing.
    pub fn summary(&self) -> Option<Summary> {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let count: u64 = counts.iter().sum();
        if count == 0 {
            return None;
        }
        let bound = |q: f64| {
            let rank = (q * count as f64).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (i, n) in counts.iter().enumerate() {
                seen += n;
                if seen >= rank {
                    return (1u64 << i) as f64 / 1000.0;
                }
            }
            (1u64 << (BUCKETS - 1)) as f64 / 1000.0
        };
        Some(Summary {
            count,
            p50_ms: bound(0.5),
            p99_ms: bound(0.99),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_and_the_99th_percentile_are_bounded_by_their_bucket() {
        let timings = Timings::default();
        assert_eq!(timings.summary(), None);
        for _ in 0..98 {
            timings.record(Duration::from_micros(700));
        }
        timings.record(Duration::from_millis(30));
        timings.record(Duration::from_secs(100));
        let summary = timings.summary().unwrap();
        assert_eq!(summary.count, 100);
        assert_eq!(summary.p50_ms, 1.024, "700 µs is under 2^10 µs");
        assert_eq!(summary.p99_ms, 32.768, "30 ms is under 2^15 µs");
        timings.record(Duration::ZERO);
        assert_eq!(timings.summary().unwrap().count, 101);
    }
}
