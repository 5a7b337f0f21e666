//! TrueTime: the current time as an interval `[earliest, latest]` that contains the true time.
//!
//! # The problem
//!
//! Meridian orders transactions by timestamp and promises external consistency: if T1
//! commits before T2 starts, in real time, then `commit_ts(T1) < commit_ts(T2)`, whichever
//! nodes served them. Clocks on different machines disagree, so no single reading can be
//! trusted as "now".
//!
//! # The key idea
//!
//! Think in intervals, not points. [`Clock::now`] returns a [`TtInterval`] that certainly
//! contains the true time, and a node waits out the uncertainty instead of ignoring it:
//! a transaction picks `commit_ts >= now().latest` and does not acknowledge the commit until
//! `now().earliest > commit_ts` ([`Clock::wait_until_after`], "commit-wait"). By then the
//! true time has certainly passed `commit_ts`, so any transaction that starts afterwards,
//! anywhere, reads a `now().latest` above it.
//!
//! # The bound
//!
//! A [`SyncedClock`] asks time masters for their interval (the `timemaster` crate carries
//! this over gRPC). A master's answer is at most one round trip old when it arrives, so each
//! answer bounds the true time (Cristian); answers from several masters are intersected and
//! a minority that disagrees is outvoted (Marzullo; see [`sync`]). Between syncs the interval
//! widens by the oscillator's worst-case drift:
//!
//! ```text
//! ε(t) = ε_sync + drift_ppm × (t − t_sync) / 10^6
//! ```
//!
//! where `ε_sync` is half the agreed interval at the last sync (master uncertainty plus half
//! the round trip). The model holds while (a) a quorum of masters is within its own stated
//! uncertainty and (b) the local oscillator drifts by no more than `drift_ppm`. A clock whose
//! last sync is older than [`SyncConfig::max_sync_age`], or whose ε exceeds
//! [`SyncConfig::epsilon_max`], refuses with a [`ClockError`] rather than guess: a node that
//! cannot bound its time stops assigning timestamps.
//!
//! # What breaks if the true time leaves the interval
//!
//! - HAZARD (external consistency): commit-wait ends early, a later transaction elsewhere can
//!   receive a smaller commit timestamp, and a reader can see T2's effects without T1's.
//! - HAZARD (timestamp monotonicity across leaders): a new tablet leader whose clock runs slow
//!   still never assigns at or below its predecessors' timestamps, because that floor travels
//!   in the Raft log; but its timestamps no longer approximate real time, so reads at
//!   `now().latest` elsewhere may miss its commits.
//! - HAZARD (snapshot reads): a read-only transaction at `s_read = now().latest` on a clock
//!   that is behind may pick a timestamp below a commit that was already acknowledged, and
//!   miss it: a stale read that claims to be strong.
//! - HAZARD (closed timestamps / safe time): a leader whose clock is ahead promises
//!   `t_paxos_safe` too far into the future; commits it then makes are forced above that
//!   promise, so they are correct but wait longer, and followers of a slow leader serve
//!   reads with more lag.
//! - HAZARD (stale reads): "exact staleness 10 s" is relative to the local reading; with the
//!   true time outside the interval it is relative to the wrong instant.
//!
//! The rule that protects all of these: never produce an interval the model cannot vouch for.
//! [`TestClock`] exists to break the model on purpose and show that the checkers notice.
//!
//! # Clock sources
//!
//! - [`SyncedClock`]: production, synced from time masters; elapsed time from a monotonic
//!   [`Oscillator`] so wall-clock steps cannot move it.
//! - [`FixedEpsilonClock`]: the system clock ± a declared ε, for development, benchmarks and
//!   the masters themselves.
//! - [`TestClock`]: a shared [`ReferenceTime`] with per-node injected offset and drift.

mod clock;
pub mod fault;
mod fixed;
mod interval;
mod physical;
pub mod sync;
mod synced;
pub mod testing;
mod timestamp;

pub use clock::{Clock, ClockError, WaitFuture, wait_until_after};
pub use fixed::FixedEpsilonClock;
pub use interval::TtInterval;
pub use physical::{Oscillator, SystemOscillator, system_wall_time};
pub use sync::{MasterReading, SyncError};
pub use synced::{SyncConfig, SyncOutcome, SyncedClock};
pub use testing::{ReferenceTime, Skew, TestClock};
pub use timestamp::Timestamp;

#[cfg(test)]
mod wait_tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn wait_returns_only_once_after_holds() {
        let clock = FixedEpsilonClock::new(Duration::from_millis(2));
        let target = clock.now().unwrap().latest;
        let shown = clock.wait_until_after(target).await.unwrap();
        assert!(shown.after(target));
        assert!(clock.after(target).unwrap());
    }

    #[tokio::test]
    async fn wait_tracks_a_manual_clock() {
        let truth = ReferenceTime::manual(Timestamp::from_nanos(1_000_000_000));
        let clock = Arc::new(TestClock::new(truth.clone(), Duration::from_millis(1)));
        let target = Timestamp::from_nanos(1_000_500_000);
        let waiter = tokio::spawn({
            let clock = Arc::clone(&clock);
            async move { clock.wait_until_after(target).await }
        });
        // Step true time up to exactly the point where `earliest == target`: not yet after.
        for _ in 0..15 {
            truth.advance(Duration::from_micros(100));
            tokio::task::yield_now().await;
            assert!(!waiter.is_finished() || clock.after(target).unwrap());
        }
        truth.advance(Duration::from_micros(1));
        let shown = tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("wait did not return once after(t) held")
            .unwrap()
            .unwrap();
        assert!(shown.after(target));
    }

    #[tokio::test]
    async fn wait_fails_rather_than_guess() {
        let clock = SyncedClock::new(Arc::new(SystemOscillator::new()), SyncConfig::default());
        let err = clock.wait_until_after(Timestamp::ZERO).await.unwrap_err();
        assert_eq!(err, ClockError::NeverSynced);
    }
}
