//! Clocks with injected error, for tests and the nemesis: a shared reference ("true") time,
//! an oscillator that drifts against it, and a [`TestClock`] whose reading is off by an
//! offset and a drift that tests choose and change while it runs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::physical::system_wall_time;
use crate::{Clock, ClockError, Oscillator, Timestamp, TtInterval};

/// The true time of a test: either the system's wall clock or a manual clock that only moves
/// when the test advances it. Clones share the same time.
#[derive(Debug, Clone)]
pub struct ReferenceTime {
    manual: Option<Arc<AtomicU64>>,
}

impl ReferenceTime {
    /// True time is the system's wall clock.
    pub fn system() -> Self {
        ReferenceTime { manual: None }
    }

    /// True time starts at `start` and moves only through [`ReferenceTime::advance`].
    pub fn manual(start: Timestamp) -> Self {
        ReferenceTime {
            manual: Some(Arc::new(AtomicU64::new(start.as_nanos()))),
        }
    }

    /// The true time now.
    pub fn now(&self) -> Timestamp {
        match &self.manual {
            Some(nanos) => Timestamp::from_nanos(nanos.load(Ordering::SeqCst)),
            None => system_wall_time(),
        }
    }

    /// Moves a manual time forward; returns false (and does nothing) for system time.
    pub fn advance(&self, d: Duration) -> bool {
        match &self.manual {
            Some(nanos) => {
                let d = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
                nanos.fetch_add(d, Ordering::SeqCst);
                true
            }
            None => false,
        }
    }
}

/// `base · ppm / 10^6`, signed, rounded toward zero.
fn scaled(base: u64, ppm: i64) -> i64 {
    i64::try_from(i128::from(base) * i128::from(ppm) / 1_000_000).unwrap_or(0)
}

/// An oscillator that runs `drift_ppm` parts per million fast (positive) or slow (negative)
/// against a [`ReferenceTime`].
#[derive(Debug)]
pub struct DriftingOscillator {
    truth: ReferenceTime,
    origin: Timestamp,
    drift_ppm: i64,
}

impl DriftingOscillator {
    /// An oscillator whose origin is the reference's current time.
    pub fn new(truth: ReferenceTime, drift_ppm: i64) -> Self {
        let origin = truth.now();
        DriftingOscillator {
            truth,
            origin,
            drift_ppm,
        }
    }
}

impl Oscillator for DriftingOscillator {
    fn elapsed_nanos(&self) -> u64 {
        let elapsed = self
            .truth
            .now()
            .as_nanos()
            .saturating_sub(self.origin.as_nanos());
        elapsed.saturating_add_signed(scaled(elapsed, self.drift_ppm))
    }
}

/// How a [`TestClock`] is wrong: its reading is
/// `true + offset + drift_ppm · (true − since) / 10^6`, and it claims an uncertainty of
/// `epsilon` around that reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Skew {
    /// Constant error, nanoseconds (negative: the clock is behind).
    pub offset_ns: i64,
    /// Rate error in parts per million, accumulating from `since`.
    pub drift_ppm: i64,
    /// When the drift started to accumulate.
    pub since: Timestamp,
    /// The uncertainty the clock claims.
    pub epsilon: Duration,
}

/// A node's clock in a test: reads the shared [`ReferenceTime`] with an injected [`Skew`]. It
/// is healthy (true time inside every interval) while `|error| <= epsilon`; tests break that
/// on purpose to show what notices.
#[derive(Debug, Clone)]
pub struct TestClock {
    truth: ReferenceTime,
    skew: Arc<Mutex<Skew>>,
    fenced: Arc<std::sync::atomic::AtomicBool>,
}

impl TestClock {
    /// A clock with no error and uncertainty `epsilon`.
    pub fn new(truth: ReferenceTime, epsilon: Duration) -> Self {
        let skew = Skew {
            offset_ns: 0,
            drift_ppm: 0,
            since: truth.now(),
            epsilon,
        };
        TestClock {
            truth,
            skew: Arc::new(Mutex::new(skew)),
            fenced: Arc::default(),
        }
    }

    /// A clock offset from true time by `offset_ns`, claiming uncertainty `epsilon`.
    pub fn with_offset(truth: ReferenceTime, offset_ns: i64, epsilon: Duration) -> Self {
        let clock = TestClock::new(truth, epsilon);
        clock.set_offset(offset_ns);
        clock
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Skew> {
        self.skew.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current skew.
    pub fn skew(&self) -> Skew {
        *self.lock()
    }

    /// Sets the constant error.
    pub fn set_offset(&self, offset_ns: i64) {
        self.lock().offset_ns = offset_ns;
    }

    /// Sets the rate error, accumulating from now (the error so far folds into the offset).
    pub fn set_drift(&self, drift_ppm: i64) {
        let error = self.error_ns();
        let now = self.truth.now();
        let mut skew = self.lock();
        *skew = Skew {
            offset_ns: error,
            drift_ppm,
            since: now,
            epsilon: skew.epsilon,
        };
    }

    /// Sets the claimed uncertainty.
    pub fn set_epsilon(&self, epsilon: Duration) {
        self.lock().epsilon = epsilon;
    }

    /// How far the clock's reading is from true time now, nanoseconds.
    pub fn error_ns(&self) -> i64 {
        let skew = self.skew();
        let elapsed = self
            .truth
            .now()
            .as_nanos()
            .saturating_sub(skew.since.as_nanos());
        skew.offset_ns
            .saturating_add(scaled(elapsed, skew.drift_ppm))
    }

    /// Whether the true time lies inside the intervals this clock gives now.
    pub fn is_healthy(&self) -> bool {
        u128::from(self.error_ns().unsigned_abs()) <= self.skew().epsilon.as_nanos()
    }

    /// Fences the clock (as a synced clock does when the masters find it outside its bound)
    /// or lifts the fence.
    pub fn set_fenced(&self, fenced: bool) {
        self.fenced
            .store(fenced, std::sync::atomic::Ordering::SeqCst);
    }

    /// The reference time this clock is skewed against.
    pub fn truth(&self) -> &ReferenceTime {
        &self.truth
    }
}

impl Clock for TestClock {
    fn now(&self) -> Result<TtInterval, ClockError> {
        if self.fenced.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(ClockError::Fenced {
                reason: "fenced by the test".into(),
            });
        }
        let reading = self
            .truth
            .now()
            .as_nanos()
            .saturating_add_signed(self.error_ns());
        Ok(TtInterval::around(
            Timestamp::from_nanos(reading),
            self.skew().epsilon,
        ))
    }

    fn fence(&self, _reason: &str) {
        self.set_fenced(true);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// A test clock contains the true time exactly when its injected error is within ε.
        #[test]
        fn test_clock_contains_truth_iff_healthy(
            offset_ns in -5_000_000i64..5_000_000,
            drift_ppm in -500i64..500,
            epsilon_ns in 0u64..4_000_000,
            advance_ns in 0u64..10_000_000_000,
        ) {
            let truth = ReferenceTime::manual(Timestamp::from_nanos(1_000_000_000_000));
            let clock = TestClock::with_offset(truth.clone(), offset_ns, Duration::from_nanos(epsilon_ns));
            clock.set_drift(drift_ppm);
            truth.advance(Duration::from_nanos(advance_ns));
            let interval = clock.now().unwrap();
            prop_assert_eq!(interval.contains(truth.now()), clock.is_healthy());
        }
    }

    #[test]
    fn drifting_oscillator_runs_fast_or_slow() {
        let truth = ReferenceTime::manual(Timestamp::from_nanos(1_000));
        let fast = DriftingOscillator::new(truth.clone(), 100);
        let slow = DriftingOscillator::new(truth.clone(), -100);
        truth.advance(Duration::from_secs(1));
        assert_eq!(fast.elapsed_nanos(), 1_000_100_000);
        assert_eq!(slow.elapsed_nanos(), 999_900_000);
    }
}
