//! [`FixedEpsilonClock`]: the system wall clock with a declared, constant uncertainty.

use std::time::Duration;

use crate::physical::system_wall_time;
use crate::{Clock, ClockError, TtInterval};

/// The system wall clock ± a fixed ε. Correct only if something outside Meridian (NTP,
/// chrony, PTP) keeps the wall clock within ε of true time; nothing here checks that. For
/// development, benchmarks (where ε is the experiment's variable) and time masters, whose
/// reference clock is trusted by definition.
#[derive(Debug, Clone, Copy)]
pub struct FixedEpsilonClock {
    epsilon: Duration,
}

impl FixedEpsilonClock {
    /// A clock claiming uncertainty `epsilon`.
    pub fn new(epsilon: Duration) -> Self {
        FixedEpsilonClock { epsilon }
    }

    /// The declared uncertainty.
    pub fn epsilon(&self) -> Duration {
        self.epsilon
    }
}

impl Clock for FixedEpsilonClock {
    fn now(&self) -> Result<TtInterval, ClockError> {
        Ok(TtInterval::around(system_wall_time(), self.epsilon))
    }
}
