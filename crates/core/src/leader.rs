//! One leader among replicas. Every replica serves the API; only the one holding the
//! [`LeaderLock`] runs the reconciler, so exactly one process writes to the tailnet at a time.
//! A replica that loses the lock stops its reconciler at once, and the reconciler checks the
//! lock again right before each tailnet change (the fence in [`crate::reconciler::Reconciler`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::metrics::Metrics;
use crate::reconciler::Reconciler;
use crate::store::LeaderLock;

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
