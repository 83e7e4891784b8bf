//! What the leadership loop and the reconciler count, for `/metrics`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// What the leadership loop and the reconciler report, for `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    leader: AtomicBool,
    /// How many times this process became leader.
    pub terms: AtomicU64,
    /// Passes by duration: counts per bucket of [`PASS_BUCKETS`] (the last one is +Inf).
    pass_buckets: [AtomicU64; PASS_BUCKETS.len() + 1],
    pass_micros: AtomicU64,
}

/// Upper bounds (seconds) of the reconcile-duration histogram.
pub const PASS_BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

impl Metrics {
    pub fn leader(&self) -> bool {
        self.leader.load(Ordering::SeqCst)
    }

    pub(crate) fn set_leader(&self, leader: bool) {
        if leader && !self.leader.swap(true, Ordering::SeqCst) {
            self.terms.fetch_add(1, Ordering::SeqCst);
        }
        if !leader {
            self.leader.store(false, Ordering::SeqCst);
        }
    }

    pub fn observe_pass(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        let bucket = PASS_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(PASS_BUCKETS.len());
        if let Some(count) = self.pass_buckets.get(bucket) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        self.pass_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    /// Cumulative bucket counts (as Prometheus wants them), the count and the sum in seconds.
    pub fn passes(&self) -> (Vec<(f64, u64)>, u64, f64) {
        let mut total = 0;
        let mut cumulative = Vec::with_capacity(PASS_BUCKETS.len());
        for (i, bound) in PASS_BUCKETS.iter().enumerate() {
            total += self.pass_buckets[i].load(Ordering::Relaxed);
            cumulative.push((*bound, total));
        }
        total += self.pass_buckets[PASS_BUCKETS.len()].load(Ordering::Relaxed);
        let sum = self.pass_micros.load(Ordering::Relaxed) as f64 / 1e6;
        (cumulative, total, sum)
    }
}
