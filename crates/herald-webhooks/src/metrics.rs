//! The dispatcher's counters, kept in atomics and read as a [`MetricsSnapshot`] for the
//! server's Prometheus endpoint.

use std::{
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    time::Duration,
};

use herald_core::webhook::Next;

/// Upper bounds (seconds) of the attempt latency histogram; `+Inf` follows.
const BOUNDS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The dispatcher's counters at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricsSnapshot {
    /// Attempts that delivered (2xx).
    pub succeeded: u64,
    /// Attempts that failed and left the delivery to be retried.
    pub retried: u64,
    /// Attempts that failed and ended the delivery (schedule exhausted, aborted, `410`).
    pub failed: u64,
    /// Attempt duration histogram: `(le, cumulative count)` in seconds, Prometheus style,
    /// ending with `(f64::INFINITY, attempt_count)`.
    pub attempt_seconds_buckets: Vec<(f64, u64)>,
    /// Sum of all attempt durations, seconds.
    pub attempt_seconds_sum: f64,
    /// Attempts made (finished, whatever the outcome).
    pub attempt_count: u64,
    /// Attempts in progress right now.
    pub in_flight: u64,
}

/// The live counters.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    succeeded: AtomicU64,
    retried: AtomicU64,
    failed: AtomicU64,
    /// Per-bucket (not cumulative) counts; the last one is `+Inf`.
    buckets: [AtomicU64; BOUNDS.len() + 1],
    sum_micros: AtomicU64,
    count: AtomicU64,
    in_flight: AtomicU64,
}

impl Metrics {
    /// Counts one finished attempt.
    pub(crate) fn observe(&self, took: Duration, next: Next) {
        match next {
            Next::Succeeded => &self.succeeded,
            Next::RetryAt(_) => &self.retried,
            Next::Failed => &self.failed,
        }
        .fetch_add(1, Relaxed);
        let secs = took.as_secs_f64();
        let slot = BOUNDS
            .iter()
            .position(|le| secs <= *le)
            .unwrap_or(BOUNDS.len());
        self.buckets[slot].fetch_add(1, Relaxed);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    /// An attempt started; the guard counts it finished (or abandoned) when dropped.
    pub(crate) fn in_flight(&self) -> InFlightGuard<'_> {
        self.in_flight.fetch_add(1, Relaxed);
        InFlightGuard(&self.in_flight)
    }

    /// The counters now.
    pub(crate) fn snapshot(&self) -> MetricsSnapshot {
        let mut cumulative = 0;
        let mut buckets: Vec<(f64, u64)> = BOUNDS
            .iter()
            .zip(&self.buckets)
            .map(|(le, n)| {
                cumulative += n.load(Relaxed);
                (*le, cumulative)
            })
            .collect();
        cumulative += self.buckets[BOUNDS.len()].load(Relaxed);
        buckets.push((f64::INFINITY, cumulative));
        MetricsSnapshot {
            succeeded: self.succeeded.load(Relaxed),
            retried: self.retried.load(Relaxed),
            failed: self.failed.load(Relaxed),
            attempt_seconds_buckets: buckets,
            attempt_seconds_sum: self.sum_micros.load(Relaxed) as f64 / 1e6,
            // The `+Inf` bucket, so that the two always agree in one snapshot.
            attempt_count: cumulative,
            in_flight: self.in_flight.load(Relaxed),
        }
    }
}

/// Decrements the in-flight gauge when an attempt ends, however it ends.
#[derive(Debug)]
pub(crate) struct InFlightGuard<'a>(&'a AtomicU64);

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let m = Metrics::default();
        m.observe(Duration::from_millis(3), Next::Succeeded);
        m.observe(Duration::from_millis(70), Next::RetryAt(1));
        m.observe(Duration::from_secs(11), Next::Failed);
        {
            let _g = m.in_flight();
            assert_eq!(m.snapshot().in_flight, 1);
        }
        let s = m.snapshot();
        assert_eq!((s.succeeded, s.retried, s.failed), (1, 1, 1));
        assert_eq!(s.attempt_count, 3);
        assert_eq!(s.in_flight, 0);
        assert!((s.attempt_seconds_sum - 11.073).abs() < 1e-9);
        let b = &s.attempt_seconds_buckets;
        assert_eq!(b.len(), 12);
        assert_eq!(b[0], (0.005, 1));
        assert_eq!(b[3], (0.05, 1));
        assert_eq!(b[4], (0.1, 2));
        assert_eq!(b[10], (10.0, 2));
        assert_eq!(b[11], (f64::INFINITY, 3));
    }
}
