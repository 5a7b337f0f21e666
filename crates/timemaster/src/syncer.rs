//! A background task that keeps a [`SyncedClock`] synced.

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use truetime::SyncedClock;

use crate::TimeMasters;

/// Re-syncs a clock every `interval` until dropped or stopped. A failed sync leaves the clock
/// on its previous sync, which widens until the clock refuses (see [`truetime::SyncConfig`]).
#[derive(Debug)]
pub struct ClockSyncer {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl ClockSyncer {
    /// Starts syncing `clock` from `masters`, first at once, then every `interval`.
    pub fn spawn(clock: SyncedClock, masters: TimeMasters, interval: Duration) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                match masters.sync(&clock).await {
                    Ok(outcome) => tracing::debug!(interval = %outcome.interval, "clock synced"),
                    Err(e) => tracing::warn!(error = %e, "clock sync failed"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = stopped.changed() => return,
                }
            }
        });
        ClockSyncer {
            stop,
            task: Some(task),
        }
    }

    /// Stops the task and waits for it to end.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for ClockSyncer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}
