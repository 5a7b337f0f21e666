//! [`TxnMetrics`]: counters of a node's transaction layer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::AbortReason;

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Total time and number of events, for averages.
#[derive(Debug, Default)]
pub struct Timer {
    /// Sum of durations, microseconds.
    pub total_us: Counter,
    /// Number of events.
    pub count: Counter,
}

impl Timer {
    fn record(&self, d: Duration) {
        self.total_us
            .add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        self.count.add(1);
    }

    /// The mean duration.
    pub fn mean(&self) -> Duration {
        Duration::from_micros(
            self.total_us
                .get()
                .checked_div(self.count.get())
                .unwrap_or(0),
        )
    }
}

/// Commit-wait time, lock waits, aborts by reason and 2PC phase latencies of one node.
#[derive(Debug, Default)]
pub struct TxnMetrics {
    /// Transactions committed by this node (single-tablet commits and coordinated ones).
    pub commits: Counter,
    /// Aborts because an older transaction wounded this one.
    pub aborts_wounded: Counter,
    /// Aborts because a tablet's leader changed under the transaction's locks.
    pub aborts_leader_changed: Counter,
    /// Aborts after a lock wait timed out.
    pub aborts_lock_timeout: Counter,
    /// Aborts because a participant could not prepare.
    pub aborts_prepare_failed: Counter,
    /// Aborts decided by a coordinator (including presumed aborts).
    pub aborts_decided: Counter,
    /// Aborts of transactions whose client went quiet.
    pub aborts_expired: Counter,
    /// Time spent in commit-wait.
    pub commit_wait: Timer,
    /// Time spent waiting for locks.
    pub lock_wait: Timer,
    /// 2PC phase one on a participant: locks and the PREPARE round.
    pub prepare: Timer,
    /// 2PC commit point on the coordinator: the COMMIT round overlapped with commit-wait.
    pub commit_round: Timer,
}

impl TxnMetrics {
    pub(crate) fn record_commit(&self) {
        self.commits.add(1);
    }

    pub(crate) fn record_abort(&self, reason: &AbortReason) {
        let counter = match reason {
            AbortReason::Wounded { .. } => &self.aborts_wounded,
            AbortReason::LeaderChanged => &self.aborts_leader_changed,
            AbortReason::LockTimeout => &self.aborts_lock_timeout,
            AbortReason::PrepareFailed(_) => &self.aborts_prepare_failed,
            AbortReason::Decided => &self.aborts_decided,
            AbortReason::Expired => &self.aborts_expired,
        };
        counter.add(1);
    }

    pub(crate) fn record_commit_wait(&self, d: Duration) {
        self.commit_wait.record(d);
    }

    pub(crate) fn record_lock_wait(&self, d: Duration) {
        self.lock_wait.record(d);
    }

    pub(crate) fn record_prepare(&self, d: Duration) {
        self.prepare.record(d);
    }

    pub(crate) fn record_commit_round(&self, d: Duration) {
        self.commit_round.record(d);
    }
}
