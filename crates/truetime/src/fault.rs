//! Fault injection for the nemesis: a clock or an oscillator shifted by an offset that a
//! test harness changes at run time. A `meridian` node uses them only when started with
//! `--allow-faults`.
//!
//! Shifting the *oscillator* of a [`crate::SyncedClock`] models a local clock going wrong:
//! the next sync with the time masters notices (when the shift exceeds ε) and fences the
//! node. Shifting the *output* of a clock ([`OffsetClock`]) models skew that nothing can
//! notice: keep it within ε, or expect violations.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use crate::{Clock, ClockError, Oscillator, Timestamp, TtInterval};

/// An offset in nanoseconds, shared between a fault injector and the clocks it skews.
pub type SharedOffset = Arc<AtomicI64>;

/// An oscillator running `offset` ahead of (or behind) another.
#[derive(Debug)]
pub struct OffsetOscillator {
    inner: Arc<dyn Oscillator>,
    offset_ns: SharedOffset,
}

impl OffsetOscillator {
    /// `inner` shifted by whatever `offset_ns` holds at each reading.
    pub fn new(inner: Arc<dyn Oscillator>, offset_ns: SharedOffset) -> Self {
        OffsetOscillator { inner, offset_ns }
    }
}

impl Oscillator for OffsetOscillator {
    fn elapsed_nanos(&self) -> u64 {
        self.inner
            .elapsed_nanos()
            .saturating_add_signed(self.offset_ns.load(Ordering::SeqCst))
    }
}

/// A clock whose intervals are shifted by `offset`.
#[derive(Debug)]
pub struct OffsetClock {
    inner: Arc<dyn Clock>,
    offset_ns: SharedOffset,
}

impl OffsetClock {
    /// `inner` shifted by whatever `offset_ns` holds at each reading.
    pub fn new(inner: Arc<dyn Clock>, offset_ns: SharedOffset) -> Self {
        OffsetClock { inner, offset_ns }
    }
}

impl Clock for OffsetClock {
    fn now(&self) -> Result<TtInterval, ClockError> {
        let now = self.inner.now()?;
        let offset = self.offset_ns.load(Ordering::SeqCst);
        let shift =
            |t: Timestamp| Timestamp::from_nanos(t.as_nanos().saturating_add_signed(offset));
        TtInterval::new(shift(now.earliest), shift(now.latest)).ok_or(ClockError::NeverSynced)
    }

    fn fence(&self, reason: &str) {
        self.inner.fence(reason);
    }
}
