//! One leader among replicas. Every replica serves the API; only the one holding the
//! [`LeaderLock`] runs the reconciler, so exactly one process writes to the tailnet at a time.
//! A replica that loses the lock stops its reconciler at once, and the reconciler checks the
//! lock again right before each tailnet change (the fence in [`crate::reconciler::Reconciler`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

use crate::reconciler::Reconciler;
use crate::store::StoreError;

/// Leadership, as the store provides it.
#[async_trait::async_trait]
pub trait LeaderLock: Send + Sync {
    /// Takes leadership if nobody holds it; `Ok(true)` if this process now holds it.
    async fn try_acquire(&self) -> Result<bool, StoreError>;
    /// Whether this process still holds it, checked against the database now.
    async fn held(&self) -> bool;
    /// Gives it up.
    async fn release(&self);
}

/// The lock of a store only one process uses (SQLite): always held.
pub struct SoleProcess;

#[async_trait::async_trait]
impl LeaderLock for SoleProcess {
    async fn try_acquire(&self) -> Result<bool, StoreError> {
        Ok(true)
    }
    async fn held(&self) -> bool {
        true
    }
    async fn release(&self) {}
}

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

    fn set_leader(&self, leader: bool) {
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

/// How often a follower tries to take the lock, and a leader checks it still holds it.
pub const LEADER_CHECK: Duration = Duration::from_secs(1);

/// Runs until `stop`: waits for leadership, runs the reconciler while it is held (each pass
/// every `tick` at the latest), and stops it the moment the lock is lost.
pub async fn run(
    reconciler: Arc<Reconciler>,
    lock: Arc<dyn LeaderLock>,
    metrics: Arc<Metrics>,
    tick: Duration,
    stop: Arc<Notify>,
) {
    loop {
        metrics.set_leader(false);
        loop {
            if let Ok(true) = lock.try_acquire().await {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(LEADER_CHECK) => {}
                _ = stop.notified() => return,
            }
        }
        metrics.set_leader(true);
        tracing::info!("became the leader: running the reconciler");
        let run_stop = Arc::new(Notify::new());
        let running = reconciler.clone();
        let stop_run = run_stop.clone();
        let mut task = tokio::spawn(async move { running.run(tick, stop_run).await });
        loop {
            tokio::select! {
                _ = tokio::time::sleep(LEADER_CHECK) => {}
                _ = &mut task => break,
                _ = stop.notified() => {
                    run_stop.notify_waiters();
                    task.abort();
                    let _ = task.await;
                    lock.release().await;
                    metrics.set_leader(false);
                    return;
                }
            }
            if !lock.held().await {
                // Lost (connection cut, database restarted): stop writing now.
                tracing::warn!("lost leadership: the reconciler stops");
                task.abort();
                let _ = task.await;
                break;
            }
        }
        lock.release().await;
    }
}
