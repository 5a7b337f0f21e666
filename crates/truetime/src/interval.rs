//! [`TtInterval`]: the answer to "what time is it?".

use std::fmt;
use std::time::Duration;

use crate::Timestamp;

/// An interval `[earliest, latest]` that contains the true time at the moment it was read,
/// as long as the clock it came from is within its error model (see the crate docs).
#[derive(Copy, Clone, PartialEq, Eq, Hash)]
pub struct TtInterval {
    /// No earlier than this.
    pub earliest: Timestamp,
    /// No later than this.
    pub latest: Timestamp,
}

impl TtInterval {
    /// The interval `[earliest, latest]`, or `None` if `earliest > latest`.
    pub fn new(earliest: Timestamp, latest: Timestamp) -> Option<Self> {
        (earliest <= latest).then_some(TtInterval { earliest, latest })
    }

    /// The interval `[mid - epsilon, mid + epsilon]`, saturating at the ends of time.
    pub fn around(mid: Timestamp, epsilon: Duration) -> Self {
        TtInterval {
            earliest: mid.saturating_sub(epsilon),
            latest: mid.saturating_add(epsilon),
        }
    }

    /// Whether `t` lies inside the interval (ends included).
    pub fn contains(&self, t: Timestamp) -> bool {
        self.earliest <= t && t <= self.latest
    }

    /// `t` has certainly passed: the whole interval lies after it.
    pub fn after(&self, t: Timestamp) -> bool {
        self.earliest > t
    }

    /// `t` has certainly not arrived: the whole interval lies before it.
    pub fn before(&self, t: Timestamp) -> bool {
        self.latest < t
    }

    /// `latest - earliest`.
    pub fn width(&self) -> Duration {
        self.latest.saturating_duration_since(self.earliest)
    }

    /// Half the width: the uncertainty ε around the midpoint.
    pub fn epsilon(&self) -> Duration {
        self.width() / 2
    }

    /// The midpoint, the best single guess at the true time.
    pub fn midpoint(&self) -> Timestamp {
        let half = (self.latest.as_nanos() - self.earliest.as_nanos()) / 2;
        Timestamp::from_nanos(self.earliest.as_nanos() + half)
    }

    /// The intersection with `other`, or `None` if they do not overlap.
    pub fn intersect(&self, other: &TtInterval) -> Option<TtInterval> {
        TtInterval::new(
            self.earliest.max(other.earliest),
            self.latest.min(other.latest),
        )
    }
}

impl fmt::Debug for TtInterval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}, {}]", self.earliest, self.latest)
    }
}

impl fmt::Display for TtInterval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ± {:?}", self.midpoint(), self.epsilon())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(n: u64) -> Timestamp {
        Timestamp::from_nanos(n)
    }

    #[test]
    fn rejects_inverted_bounds() {
        assert!(TtInterval::new(ts(2), ts(1)).is_none());
        assert!(TtInterval::new(ts(1), ts(1)).is_some());
    }

    #[test]
    fn after_and_before_are_strict() {
        let i = TtInterval::new(ts(10), ts(20)).unwrap();
        assert!(i.after(ts(9)));
        assert!(!i.after(ts(10)));
        assert!(i.before(ts(21)));
        assert!(!i.before(ts(20)));
        assert!(i.contains(ts(10)) && i.contains(ts(20)) && !i.contains(ts(21)));
    }

    #[test]
    fn intersection_and_midpoint() {
        let a = TtInterval::new(ts(10), ts(20)).unwrap();
        let b = TtInterval::new(ts(15), ts(30)).unwrap();
        assert_eq!(a.intersect(&b), TtInterval::new(ts(15), ts(20)));
        assert_eq!(a.intersect(&TtInterval::new(ts(21), ts(22)).unwrap()), None);
        assert_eq!(a.midpoint(), ts(15));
        assert_eq!(a.epsilon(), Duration::from_nanos(5));
    }
}
