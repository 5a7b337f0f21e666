//! [`SyncedClock`]: an interval that starts narrow at each sync with the time masters and
//! widens with the local oscillator's worst-case drift until the next one.
//!
//! # Fencing
//!
//! At each sync the clock compares its own extrapolated interval with the masters'. If they
//! do not overlap, the local oscillator broke its drift model (or jumped) since the last sync:
//! for some time before this sync the intervals it gave may not have contained the true
//! time. The clock then *fences* itself for [`SyncConfig::fence_for`]: `now()` fails with
//! [`ClockError::Fenced`], so the node assigns no timestamps, commits nothing and serves no
//! reads, and operations begun with the bad intervals drain (lock waits, commit-waits and
//! in-flight Raft rounds all end within the fence) before the node serves again.
//!
//! Two more checks fence at once, without waiting for a sync:
//!
//! - *The clock went back.* True time never does, so an interval that ends before the
//!   `earliest` of one handed out earlier shows that one of them missed the true time (the
//!   oscillator stepped back, or it had stepped ahead and a sync pulled it back).
//! - *A peer says so* ([`Clock::fence`]): a Raft follower refused this node's timestamps as
//!   too far ahead of its own clock.
//!
//! HAZARD: fencing bounds the damage after detection; it cannot undo what happened between
//! the clock going wrong and the detection. A clock that leaps back is caught at its next
//! reading; one that leaps ahead is caught when a follower sees its next timestamp or at the
//! next sync, and its commits cannot complete meanwhile because followers refuse them (see
//! `tablet::Node`). Syncing often keeps the remaining window short, and the drift model
//! (`drift_ppm`) must hold for real oscillators.

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::sync::{combine, drift_nanos};
use crate::{Clock, ClockError, MasterReading, Oscillator, SyncError, Timestamp, TtInterval};

/// The error model of a [`SyncedClock`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncConfig {
    /// The most the local oscillator's rate may differ from true time, in parts per million.
    /// Spanner assumes 200 ppm (200 µs per second) for its servers' crystals.
    pub drift_ppm: u64,
    /// A clock whose last successful sync is older than this refuses to give intervals.
    pub max_sync_age: Duration,
    /// A clock whose ε exceeds this refuses to give intervals.
    pub epsilon_max: Duration,
    /// How many masters must agree for a sync to count.
    pub quorum: usize,
    /// How long the clock refuses after a sync found it outside its own bound.
    pub fence_for: Duration,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            drift_ppm: 200,
            max_sync_age: Duration::from_secs(60),
            epsilon_max: Duration::from_millis(50),
            quorum: 1,
            fence_for: Duration::from_secs(15),
        }
    }
}

/// What the clock learnt at its last sync: the true time lay in `interval` when the
/// oscillator read `oscillator_nanos`.
#[derive(Debug, Clone, Copy)]
struct SyncPoint {
    oscillator_nanos: u64,
    interval: TtInterval,
}

/// The result of a successful sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncOutcome {
    /// The interval right after the sync.
    pub interval: TtInterval,
    /// False when the clock's own extrapolated interval did not overlap the masters': its
    /// oscillator drifted beyond the model since the previous sync, and the masters won.
    pub agreed_with_previous: bool,
}

/// TrueTime from time masters: ε = (half the sync interval) + drift_ppm × time since sync.
///
/// Elapsed time is measured on a monotonic [`Oscillator`], so stepping the system's wall clock
/// cannot move the interval. Cheap to clone; clones share state.
#[derive(Debug, Clone)]
pub struct SyncedClock {
    oscillator: Arc<dyn Oscillator>,
    config: SyncConfig,
    last_sync: Arc<RwLock<Option<SyncPoint>>>,
    /// Refusing until the oscillator reads this, and why.
    fenced: Arc<RwLock<Option<(u64, String)>>>,
    /// The largest `earliest` handed out: no later interval may end before it.
    high_water: Arc<Mutex<u64>>,
}

impl SyncedClock {
    /// A clock that has not synced yet: [`Clock::now`] fails with
    /// [`ClockError::NeverSynced`] until [`SyncedClock::apply_readings`] succeeds.
    pub fn new(oscillator: Arc<dyn Oscillator>, config: SyncConfig) -> Self {
        SyncedClock {
            oscillator,
            config,
            last_sync: Arc::new(RwLock::new(None)),
            fenced: Arc::new(RwLock::new(None)),
            high_water: Arc::new(Mutex::new(0)),
        }
    }

    /// Refuses to give intervals for [`SyncConfig::fence_for`] from oscillator reading `at`.
    fn fence_from(&self, at: u64, reason: String) {
        let until =
            at.saturating_add(u64::try_from(self.config.fence_for.as_nanos()).unwrap_or(u64::MAX));
        let mut fenced = self.fenced.write().unwrap_or_else(|e| e.into_inner());
        if fenced.as_ref().is_some_and(|(old, _)| *old > at) {
            // Already fenced: extend it quietly (peers refuse every message meanwhile).
            tracing::debug!(%reason, "clock fenced again while fenced");
        } else {
            tracing::error!(
                %reason,
                fence_for = ?self.config.fence_for,
                "clock outside its bound: fencing this node"
            );
        }
        // A fence already in force is only ever extended.
        if fenced.as_ref().is_none_or(|(old, _)| *old < until) {
            *fenced = Some((until, reason));
        }
    }

    /// The error model.
    pub fn config(&self) -> &SyncConfig {
        &self.config
    }

    /// The oscillator reading to stamp a [`MasterReading`] with.
    pub fn oscillator_nanos(&self) -> u64 {
        self.oscillator.elapsed_nanos()
    }

    /// Syncs from masters' answers, which must have been stamped with
    /// [`SyncedClock::oscillator_nanos`]. On error the previous sync stays in force.
    pub fn apply_readings(&self, readings: &[MasterReading]) -> Result<SyncOutcome, SyncError> {
        let at = self.oscillator_nanos();
        let masters = combine(readings, at, self.config.drift_ppm, self.config.quorum)?;
        let mut last_sync = self.last_sync.write().unwrap_or_else(|e| e.into_inner());
        // Our own extrapolation is also a valid bound (if the model held): keep the overlap.
        let previous = last_sync.and_then(|p| self.extrapolate(&p, at));
        let (interval, agreed_with_previous) = match previous {
            None => (masters, true),
            Some(own) => match own.intersect(&masters) {
                Some(both) => (both, true),
                None => {
                    self.fence_from(
                        at,
                        format!(
                            "the local clock's interval {own} did not overlap the time masters' {masters}"
                        ),
                    );
                    (masters, false)
                }
            },
        };
        *last_sync = Some(SyncPoint {
            oscillator_nanos: at,
            interval,
        });
        Ok(SyncOutcome {
            interval,
            agreed_with_previous,
        })
    }

    /// The interval at oscillator reading `at`, from a sync point, without the age check. A
    /// reading before the sync point (the oscillator stepped back) extrapolates backwards;
    /// the clock's high-water check then decides whether that is plausible.
    fn extrapolate(&self, point: &SyncPoint, at: u64) -> Option<TtInterval> {
        let elapsed = i128::from(at) - i128::from(point.oscillator_nanos);
        let magnitude = u64::try_from(elapsed.unsigned_abs()).unwrap_or(u64::MAX);
        let drift = i128::from(drift_nanos(magnitude, self.config.drift_ppm));
        let shift = |t: Timestamp, by: i128| {
            let nanos = (i128::from(t.as_nanos()) + by).clamp(0, i128::from(u64::MAX));
            Timestamp::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
        };
        TtInterval::new(
            shift(point.interval.earliest, elapsed - drift),
            shift(point.interval.latest, elapsed + drift),
        )
    }

    /// Whether the clock is fenced now (see the module docs).
    pub fn is_fenced(&self) -> bool {
        self.fence_at(self.oscillator_nanos()).is_err()
    }

    fn fence_at(&self, at: u64) -> Result<(), ClockError> {
        match &*self.fenced.read().unwrap_or_else(|e| e.into_inner()) {
            Some((until, reason)) if at < *until => Err(ClockError::Fenced {
                reason: reason.clone(),
            }),
            _ => Ok(()),
        }
    }

    fn now_at(&self, at: u64) -> Result<TtInterval, ClockError> {
        self.fence_at(at)?;
        let point = self
            .last_sync
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .ok_or(ClockError::NeverSynced)?;
        let since = at.saturating_sub(point.oscillator_nanos);
        let limit = self.config.max_sync_age;
        if u128::from(since) > limit.as_nanos() {
            return Err(ClockError::SyncTooOld {
                since_sync_ms: since / 1_000_000,
                limit_ms: u64::try_from(limit.as_millis()).unwrap_or(u64::MAX),
            });
        }
        let interval = self
            .extrapolate(&point, at)
            .ok_or(ClockError::NeverSynced)?;
        if interval.epsilon() > self.config.epsilon_max {
            return Err(ClockError::UncertaintyTooLarge {
                epsilon_us: micros(interval.epsilon()),
                epsilon_max_us: micros(self.config.epsilon_max),
            });
        }
        Ok(interval)
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Clock for SyncedClock {
    fn now(&self) -> Result<TtInterval, ClockError> {
        // The oscillator is read under the high-water lock: a reading taken before another
        // thread's, checked after it, would look like the clock going back.
        let mut handed_out = self.high_water.lock().unwrap_or_else(|e| e.into_inner());
        let at = self.oscillator_nanos();
        let interval = self.now_at(at)?;
        if interval.latest.as_nanos() < *handed_out {
            let reason = format!(
                "the clock went back: {interval} ends before {}, the earliest of an interval it gave before",
                Timestamp::from_nanos(*handed_out)
            );
            self.fence_from(at, reason.clone());
            return Err(ClockError::Fenced { reason });
        }
        *handed_out = (*handed_out).max(interval.earliest.as_nanos());
        Ok(interval)
    }

    fn fence(&self, reason: &str) {
        self.fence_from(
            self.oscillator_nanos(),
            format!("a peer disagrees: {reason}"),
        );
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::testing::{DriftingOscillator, ReferenceTime};

    const MS: u64 = 1_000_000;

    /// One simulated exchange with a master whose interval contains the true time.
    fn exchange(
        truth: &ReferenceTime,
        clock: &SyncedClock,
        master_error_ns: i64,
        master_epsilon_ns: u64,
        delays_ns: (u64, u64),
    ) -> MasterReading {
        let sent_nanos = clock.oscillator_nanos();
        truth.advance(Duration::from_nanos(delays_ns.0));
        let mid = truth
            .now()
            .as_nanos()
            .saturating_add_signed(master_error_ns);
        let master = TtInterval::around(
            Timestamp::from_nanos(mid),
            Duration::from_nanos(master_epsilon_ns),
        );
        truth.advance(Duration::from_nanos(delays_ns.1));
        MasterReading {
            sent_nanos,
            received_nanos: clock.oscillator_nanos(),
            master,
        }
    }

    fn clock_on(truth: &ReferenceTime, drift_ppm: i64, config: SyncConfig) -> SyncedClock {
        SyncedClock::new(
            Arc::new(DriftingOscillator::new(truth.clone(), drift_ppm)),
            config,
        )
    }

    #[test]
    fn refuses_before_the_first_sync() {
        let truth = ReferenceTime::manual(Timestamp::from_nanos(1_000 * MS));
        let clock = clock_on(&truth, 0, SyncConfig::default());
        assert_eq!(clock.now(), Err(ClockError::NeverSynced));
        assert_eq!(clock.after(Timestamp::ZERO), Err(ClockError::NeverSynced));
    }

    #[test]
    fn refuses_once_the_sync_is_too_old() {
        let truth = ReferenceTime::manual(Timestamp::from_nanos(1_000 * MS));
        let config = SyncConfig {
            max_sync_age: Duration::from_secs(10),
            ..SyncConfig::default()
        };
        let clock = clock_on(&truth, 0, config);
        let reading = exchange(&truth, &clock, 0, MS, (MS, MS));
        clock.apply_readings(&[reading]).unwrap();
        truth.advance(Duration::from_secs(10));
        assert!(clock.now().is_ok());
        truth.advance(Duration::from_millis(1));
        assert!(matches!(
            clock.now(),
            Err(ClockError::SyncTooOld {
                limit_ms: 10_000,
                ..
            })
        ));
        // A new sync restores service.
        let reading = exchange(&truth, &clock, 0, MS, (MS, MS));
        clock.apply_readings(&[reading]).unwrap();
        assert!(clock.now().unwrap().contains(truth.now()));
    }

    #[test]
    fn refuses_when_epsilon_exceeds_the_maximum() {
        let truth = ReferenceTime::manual(Timestamp::from_nanos(1_000 * MS));
        let config = SyncConfig {
            epsilon_max: Duration::from_millis(5),
            ..SyncConfig::default()
        };
        let clock = clock_on(&truth, 0, config);
        let reading = exchange(&truth, &clock, 0, 10 * MS, (MS, MS));
        clock.apply_readings(&[reading]).unwrap();
        assert!(matches!(
            clock.now(),
            Err(ClockError::UncertaintyTooLarge { .. })
        ));
    }

    #[test]
    fn epsilon_grows_with_drift_between_syncs() {
        let truth = ReferenceTime::manual(Timestamp::from_nanos(1_000 * MS));
        let clock = clock_on(&truth, 0, SyncConfig::default());
        let reading = exchange(&truth, &clock, 0, MS, (0, 0));
        clock.apply_readings(&[reading]).unwrap();
        let first = clock.now().unwrap().epsilon();
        truth.advance(Duration::from_secs(10));
        // 10 s at 200 ppm adds 2 ms on each side.
        assert_eq!(
            clock.now().unwrap().epsilon(),
            first + Duration::from_millis(2)
        );
    }

    proptest! {
        /// Invariant 1: for any oscillator drift and any master answers within the model, the
        /// true time lies inside every interval the clock gives until its sync expires.
        #[test]
        fn true_time_is_inside_every_interval(
            drift_ppm in -200i64..=200,
            masters in proptest::collection::vec((-2_000_000i64..=2_000_000, 0u64..20 * MS, 0u64..20 * MS), 1..5),
            falseticker in proptest::bool::ANY,
            steps in proptest::collection::vec(0u64..5_000 * MS, 1..20),
        ) {
            let truth = ReferenceTime::manual(Timestamp::from_nanos(1_700_000_000 * 1_000 * MS));
            let honest = masters.len();
            let config = SyncConfig { quorum: honest / 2 + 1, ..SyncConfig::default() };
            let clock = clock_on(&truth, drift_ppm, config);
            let mut readings: Vec<MasterReading> = masters
                .iter()
                .map(|&(error, d1, d2)| exchange(&truth, &clock, error, 2 * MS, (d1, d2)))
                .collect();
            if falseticker && honest >= 2 {
                // One master far outside the model is outvoted by the honest majority.
                readings[0] = exchange(&truth, &clock, 3_600_000 * MS as i64, MS, (0, 0));
            }
            prop_assume!(clock.apply_readings(&readings).is_ok());
            for step in steps {
                truth.advance(Duration::from_nanos(step));
                match clock.now() {
                    Ok(interval) => prop_assert!(interval.contains(truth.now()), "{interval:?} misses {}", truth.now()),
                    Err(ClockError::SyncTooOld { .. } | ClockError::UncertaintyTooLarge { .. }) => break,
                    Err(e) => prop_assert!(false, "unexpected error {e}"),
                }
            }
        }

        /// The same holds across re-syncs, when the clock intersects its own bound with the
        /// masters'.
        #[test]
        fn resync_keeps_true_time_inside(
            drift_ppm in -200i64..=200,
            syncs in proptest::collection::vec((-1_000_000i64..=1_000_000, 0u64..5 * MS, 0u64..5 * MS, 0u64..30_000 * MS), 1..10),
        ) {
            let truth = ReferenceTime::manual(Timestamp::from_nanos(1_700_000_000 * 1_000 * MS));
            let clock = clock_on(&truth, drift_ppm, SyncConfig::default());
            for (error, d1, d2, gap) in syncs {
                let reading = exchange(&truth, &clock, error, MS, (d1, d2));
                let outcome = clock.apply_readings(&[reading]).unwrap();
                prop_assert!(outcome.agreed_with_previous);
                prop_assert!(clock.now().unwrap().contains(truth.now()));
                truth.advance(Duration::from_nanos(gap));
                prop_assert!(clock.now().unwrap().contains(truth.now()));
            }
        }
    }

    /// An oscillator that can leap: a clock going wrong outside its drift model.
    #[derive(Debug)]
    struct LeapingOscillator {
        inner: DriftingOscillator,
        leap_ns: std::sync::atomic::AtomicI64,
    }

    impl Oscillator for LeapingOscillator {
        fn elapsed_nanos(&self) -> u64 {
            self.inner
                .elapsed_nanos()
                .saturating_add_signed(self.leap_ns.load(std::sync::atomic::Ordering::SeqCst))
        }
    }

    /// A clock synced once at `truth`, on an oscillator that can leap.
    fn leaping_clock(
        truth: &ReferenceTime,
        config: SyncConfig,
    ) -> (SyncedClock, Arc<LeapingOscillator>) {
        let oscillator = Arc::new(LeapingOscillator {
            inner: DriftingOscillator::new(truth.clone(), 0),
            leap_ns: 0.into(),
        });
        let clock = SyncedClock::new(oscillator.clone(), config);
        let reading = exchange(truth, &clock, 0, MS, (MS, MS));
        clock.apply_readings(&[reading]).unwrap();
        (clock, oscillator)
    }

    #[test]
    fn a_clock_that_goes_back_fences_itself_at_its_next_reading() {
        let truth = ReferenceTime::manual(Timestamp::from_nanos(1_000_000 * MS));
        let config = SyncConfig {
            fence_for: Duration::from_secs(2),
            ..SyncConfig::default()
        };
        let (clock, oscillator) = leaping_clock(&truth, config);
        truth.advance(Duration::from_millis(100));
        let before = clock.now().unwrap();
        // Back by less than the interval's width: the truth may still be inside; no fence.
        oscillator
            .leap_ns
            .store(-(MS as i64) / 2, std::sync::atomic::Ordering::SeqCst);
        assert!(clock.now().is_ok());
        // Back by 50 ms, far beyond ε: the very next reading ends before `before` began.
        oscillator
            .leap_ns
            .store(-50 * MS as i64, std::sync::atomic::Ordering::SeqCst);
        assert!(matches!(clock.now(), Err(ClockError::Fenced { .. })));
        // Fenced for the fence period even once the oscillator recovers, then serving again.
        oscillator
            .leap_ns
            .store(0, std::sync::atomic::Ordering::SeqCst);
        truth.advance(Duration::from_millis(1900));
        assert!(clock.is_fenced());
        truth.advance(Duration::from_millis(200));
        let after = clock.now().unwrap();
        assert!(after.contains(truth.now()) && after.latest >= before.earliest);
    }

    #[test]
    fn a_peer_that_disagrees_fences_the_clock() {
        let truth = ReferenceTime::manual(Timestamp::from_nanos(1_000_000 * MS));
        let config = SyncConfig {
            fence_for: Duration::from_secs(2),
            ..SyncConfig::default()
        };
        let (clock, _) = leaping_clock(&truth, config);
        assert!(clock.now().is_ok());
        Clock::fence(&clock, "n2 refused a timestamp 200 ms ahead of its clock");
        match clock.now() {
            Err(ClockError::Fenced { reason }) => assert!(reason.contains("n2 refused")),
            other => panic!("not fenced: {other:?}"),
        }
        truth.advance(Duration::from_millis(2100));
        assert!(clock.now().is_ok());
    }

    #[test]
    fn a_clock_found_outside_its_bound_fences_itself_for_the_fence_period() {
        let truth = ReferenceTime::manual(Timestamp::from_nanos(1_000_000 * MS));
        let config = SyncConfig {
            fence_for: Duration::from_secs(2),
            ..SyncConfig::default()
        };
        let (clock, oscillator) = leaping_clock(&truth, config);
        assert!(clock.now().unwrap().contains(truth.now()));

        // The oscillator leaps 50 ms, far beyond ε: until the next sync nothing can tell.
        oscillator
            .leap_ns
            .store(50 * MS as i64, std::sync::atomic::Ordering::SeqCst);
        truth.advance(Duration::from_millis(100));
        assert!(
            !clock.now().unwrap().contains(truth.now()),
            "undetected so far"
        );

        // The next sync finds the clock outside its bound: no intervals for `fence_for`.
        let reading = exchange(&truth, &clock, 0, MS, (MS, MS));
        let outcome = clock.apply_readings(&[reading]).unwrap();
        assert!(!outcome.agreed_with_previous);
        assert!(matches!(clock.now(), Err(ClockError::Fenced { .. })));
        assert!(clock.is_fenced());
        assert!(matches!(
            clock.after(Timestamp::ZERO),
            Err(ClockError::Fenced { .. })
        ));
        truth.advance(Duration::from_millis(1900));
        assert!(matches!(clock.now(), Err(ClockError::Fenced { .. })));

        // Afterwards it serves again, from the masters' time, with the truth inside.
        truth.advance(Duration::from_millis(200));
        assert!(!clock.is_fenced());
        assert!(clock.now().unwrap().contains(truth.now()));
    }

    #[test]
    fn after_and_before_agree_with_the_interval() {
        let truth = ReferenceTime::manual(Timestamp::from_nanos(1_000 * MS));
        let clock = clock_on(&truth, 0, SyncConfig::default());
        let reading = exchange(&truth, &clock, 0, MS, (0, 0));
        clock.apply_readings(&[reading]).unwrap();
        let now = clock.now().unwrap();
        assert!(clock.after(now.earliest.prev()).unwrap());
        assert!(!clock.after(now.earliest).unwrap());
        assert!(clock.before(now.latest.next()).unwrap());
        assert!(!clock.before(now.latest).unwrap());
    }
}
