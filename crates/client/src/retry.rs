//! How long and how often transactions are retried.
//!
//! Backoff doubles from `initial_backoff` up to `max_backoff`, with no jitter: the server
//! orders conflicting retries by the first attempt's priority, so an old transaction wins
//! without needing randomness to break the tie. A retry is not started if its backoff would
//! end past `max_elapsed`; the caller then gets [`crate::Error::RetriesExhausted`].

use std::time::{Duration, Instant};

/// When to retry a transaction that failed with a retryable error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total time after which no new attempt starts (default 30 s).
    pub max_elapsed: Duration,
    /// The wait before the first retry (default 10 ms).
    pub initial_backoff: Duration,
    /// The longest wait between attempts (default 1 s).
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            max_elapsed: Duration::from_secs(30),
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_secs(1),
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries.
    pub fn never() -> RetryPolicy {
        RetryPolicy {
            max_elapsed: Duration::ZERO,
            ..RetryPolicy::default()
        }
    }

    /// The same policy with a different total time.
    pub fn with_max_elapsed(self, max_elapsed: Duration) -> RetryPolicy {
        RetryPolicy {
            max_elapsed,
            ..self
        }
    }
}

/// The retry state of one transaction.
#[derive(Debug)]
pub(crate) struct Backoff {
    policy: RetryPolicy,
    started: Instant,
    next: Duration,
    pub(crate) attempts: u32,
}

impl Backoff {
    pub(crate) fn start(policy: RetryPolicy) -> Backoff {
        Backoff {
            policy,
            started: Instant::now(),
            next: policy.initial_backoff,
            attempts: 0,
        }
    }

    pub(crate) fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The wait before the next attempt, or `None` once the time is spent.
    pub(crate) fn next_delay(&mut self) -> Option<Duration> {
        let delay = self.next;
        if self.elapsed() + delay >= self.policy.max_elapsed {
            return None;
        }
        self.next = (self.next * 2).min(self.policy.max_backoff);
        Some(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap() {
        let policy = RetryPolicy {
            max_elapsed: Duration::from_secs(60),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(300),
        };
        let mut backoff = Backoff::start(policy);
        let delays: Vec<_> = (0..4).filter_map(|_| backoff.next_delay()).collect();
        let ms = |n| Duration::from_millis(n);
        assert_eq!(delays, [ms(100), ms(200), ms(300), ms(300)]);
    }

    #[test]
    fn never_means_no_retry() {
        assert_eq!(Backoff::start(RetryPolicy::never()).next_delay(), None);
    }
}
