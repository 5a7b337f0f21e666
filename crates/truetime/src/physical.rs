//! Physical clocks: the only place Meridian reads the operating system's time.

use std::fmt;
use std::time::Instant;

use crate::Timestamp;

/// A local oscillator: nanoseconds elapsed since some fixed, arbitrary origin. It never goes
/// backwards and is not stepped by NTP, but it drifts: its rate may differ from true time by
/// up to the configured drift bound. [`crate::SyncedClock`] measures time since the last sync
/// with it.
pub trait Oscillator: Send + Sync + fmt::Debug {
    /// Nanoseconds since this oscillator's origin.
    fn elapsed_nanos(&self) -> u64;
}

/// The operating system's monotonic clock.
#[derive(Debug, Clone, Copy)]
pub struct SystemOscillator {
    origin: Instant,
}

impl SystemOscillator {
    /// An oscillator whose origin is now.
    pub fn new() -> Self {
        SystemOscillator {
            origin: Instant::now(),
        }
    }
}

impl Default for SystemOscillator {
    fn default() -> Self {
        Self::new()
    }
}

impl Oscillator for SystemOscillator {
    fn elapsed_nanos(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// The operating system's wall clock, as a [`Timestamp`]. Only clocks that are told their
/// error bound from outside ([`crate::FixedEpsilonClock`]) and test clocks read it.
#[allow(clippy::disallowed_methods)] // the one sanctioned reading of the wall clock
pub fn system_wall_time() -> Timestamp {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp::from_nanos(u64::try_from(since_epoch.as_nanos()).unwrap_or(u64::MAX))
}
