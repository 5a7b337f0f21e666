//! The [`Clock`] trait every timestamp in Meridian comes from, and commit-wait.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::{Timestamp, TtInterval};

/// Why a clock refused to say what time it is. Every variant means the same thing to the
/// caller: this node cannot bound the true time right now, so it must not assign timestamps
/// or serve reads that depend on them. It is never a reason to guess.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClockError {
    /// The clock has not yet synced with a time master.
    #[error("the clock has never synced with a time master; refusing to guess the time")]
    NeverSynced,
    /// The last sync is older than the configured limit, so drift may exceed the model.
    #[error(
        "the clock last synced {since_sync_ms} ms ago, beyond the {limit_ms} ms limit; \
         refusing to guess the time until a time master answers"
    )]
    SyncTooOld {
        /// Milliseconds since the last successful sync.
        since_sync_ms: u64,
        /// The configured limit.
        limit_ms: u64,
    },
    /// The uncertainty grew beyond what the node is configured to tolerate.
    #[error("the clock's uncertainty is {epsilon_us} us, above the {epsilon_max_us} us maximum")]
    UncertaintyTooLarge {
        /// The current ε, microseconds.
        epsilon_us: u64,
        /// The configured maximum ε, microseconds.
        epsilon_max_us: u64,
    },
    /// The clock was fenced off because it is known to be outside its bound.
    #[error("the clock is fenced: {reason}")]
    Fenced {
        /// What showed the clock to be wrong.
        reason: String,
    },
}

/// A boxed future, so that [`Clock`] stays usable as `dyn Clock`.
pub type WaitFuture<'a> = Pin<Box<dyn Future<Output = Result<TtInterval, ClockError>> + Send + 'a>>;

/// TrueTime: the current time as an interval certain to contain the true time.
///
/// Implementations: [`crate::SyncedClock`] (production), [`crate::FixedEpsilonClock`]
/// (development, benchmarks, time masters) and [`crate::TestClock`] (injected skew).
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current interval, or why the clock cannot bound the true time.
    fn now(&self) -> Result<TtInterval, ClockError>;

    /// `t` has certainly passed.
    fn after(&self, t: Timestamp) -> Result<bool, ClockError> {
        Ok(self.now()?.after(t))
    }

    /// `t` has certainly not arrived.
    fn before(&self, t: Timestamp) -> Result<bool, ClockError> {
        Ok(self.now()?.before(t))
    }

    /// Waits until `after(t)` holds and returns the interval that showed it: commit-wait.
    fn wait_until_after(&self, t: Timestamp) -> WaitFuture<'_> {
        Box::pin(wait_until_after(self, t))
    }

    /// Evidence from outside (a peer refusing this node's timestamps as too far ahead of its
    /// own clock) that this clock is outside its bound. A clock that can fence itself does
    /// so, as if its own check had failed; the default ignores the evidence.
    fn fence(&self, _reason: &str) {}
}

/// tokio's timer fires on millisecond ticks, so a sleep may overshoot by up to a
/// millisecond; the last stretch of a wait is spent yielding instead.
const TIMER_RESOLUTION: Duration = Duration::from_millis(1);

/// Waits until `clock.now().earliest > t`; see [`Clock::wait_until_after`].
pub async fn wait_until_after<C: Clock + ?Sized>(
    clock: &C,
    t: Timestamp,
) -> Result<TtInterval, ClockError> {
    loop {
        let now = clock.now()?;
        if now.after(t) {
            return Ok(now);
        }
        // At least this much true time must pass before `earliest` can exceed `t`.
        let remaining = t.next().saturating_duration_since(now.earliest);
        if remaining > TIMER_RESOLUTION {
            tokio::time::sleep(remaining - TIMER_RESOLUTION).await;
        } else {
            tokio::task::yield_now().await;
        }
    }
}

impl<C: Clock + ?Sized> Clock for std::sync::Arc<C> {
    fn now(&self) -> Result<TtInterval, ClockError> {
        (**self).now()
    }

    fn fence(&self, reason: &str) {
        (**self).fence(reason);
    }
}
