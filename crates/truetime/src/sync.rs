//! Turning time masters' answers into one interval: Cristian's round-trip bound for each
//! answer, then Marzullo's intersection across masters.
//!
//! A master reads its own interval `[e, l]` at some instant between the request leaving
//! this node (oscillator reading `sent`) and the reply arriving (`received`). At `received`
//! the true time is therefore in `[e, l + rtt·(1 + drift)]`, where `rtt = received - sent` as
//! the local oscillator measured it: the reply cannot be older than the round trip, and it is
//! at least zero old. Answers taken at different moments are carried forward to one
//! reference reading, widening by the drift bound, and then intersected: the region that a
//! quorum of masters agree on is kept; a master whose interval misses it (a "falseticker")
//! is outvoted.

use crate::{Timestamp, TtInterval};

/// One master's answer, stamped with this node's oscillator on the way out and back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MasterReading {
    /// Oscillator reading (ns) just before the request was sent.
    pub sent_nanos: u64,
    /// Oscillator reading (ns) just after the reply arrived.
    pub received_nanos: u64,
    /// The master's interval.
    pub master: TtInterval,
}

/// Why a set of master readings could not be turned into an interval.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// Too few masters answered.
    #[error("only {answered} time masters answered; {needed} must agree to sync")]
    NotEnoughMasters {
        /// How many answered.
        answered: usize,
        /// How many must agree.
        needed: usize,
    },
    /// The masters answered but no quorum of them agree on the time.
    #[error("time masters disagree: at most {agreeing} of them overlap, {needed} must agree")]
    MastersDisagree {
        /// The largest number of answers that overlap.
        agreeing: usize,
        /// How many must agree.
        needed: usize,
    },
    /// A reading came back before it was sent, by the local oscillator.
    #[error("a time master reading was received before it was sent")]
    InvalidReading,
}

/// `ceil(nanos · ppm / 10^6)`: the most a `ppm`-bounded oscillator can be off over `nanos`.
pub(crate) fn drift_nanos(nanos: u64, drift_ppm: u64) -> u64 {
    let drift = (u128::from(nanos) * u128::from(drift_ppm)).div_ceil(1_000_000);
    u64::try_from(drift).unwrap_or(u64::MAX)
}

/// The interval that certainly contains the true time at oscillator reading `at_nanos`, from
/// one reading (Cristian). `at_nanos` must not precede `reading.received_nanos`.
pub fn cristian_bound(
    reading: &MasterReading,
    at_nanos: u64,
    drift_ppm: u64,
) -> Result<TtInterval, SyncError> {
    let rtt = reading
        .received_nanos
        .checked_sub(reading.sent_nanos)
        .ok_or(SyncError::InvalidReading)?;
    let since = at_nanos
        .checked_sub(reading.received_nanos)
        .ok_or(SyncError::InvalidReading)?;
    let latest_at_receipt = reading
        .master
        .latest
        .as_nanos()
        .saturating_add(rtt + drift_nanos(rtt, drift_ppm));
    let earliest = reading
        .master
        .earliest
        .as_nanos()
        .saturating_add(since - drift_nanos(since, drift_ppm).min(since));
    let latest =
        latest_at_receipt.saturating_add(since.saturating_add(drift_nanos(since, drift_ppm)));
    TtInterval::new(
        Timestamp::from_nanos(earliest),
        Timestamp::from_nanos(latest),
    )
    .ok_or(SyncError::InvalidReading)
}

/// Marzullo's algorithm: the smallest interval contained in the largest number of `intervals`,
/// with that number. `None` when `intervals` is empty.
pub fn marzullo(intervals: &[TtInterval]) -> Option<(usize, TtInterval)> {
    // +1 opens an interval, -1 closes one; at equal times opens sort first (closed intervals).
    let mut edges: Vec<(Timestamp, i8)> = Vec::with_capacity(intervals.len() * 2);
    for interval in intervals {
        edges.push((interval.earliest, -1));
        edges.push((interval.latest, 1));
    }
    edges.sort_unstable();
    let (mut count, mut best) = (0usize, None);
    for (i, &(at, kind)) in edges.iter().enumerate() {
        if kind == -1 {
            count += 1;
            let better = best.is_none_or(|(best_count, _)| count > best_count);
            if better {
                // The next edge closes an interval: a further open would raise `count`.
                let end = edges.get(i + 1).map_or(at, |&(end, _)| end);
                best = TtInterval::new(at, end).map(|interval| (count, interval));
            }
        } else {
            count -= 1;
        }
    }
    best
}

/// Combines readings from several masters into the interval at oscillator reading
/// `at_nanos` (which must not precede any reading's receipt) agreed by at least `quorum`.
pub fn combine(
    readings: &[MasterReading],
    at_nanos: u64,
    drift_ppm: u64,
    quorum: usize,
) -> Result<TtInterval, SyncError> {
    let needed = quorum.max(1);
    if readings.len() < needed {
        return Err(SyncError::NotEnoughMasters {
            answered: readings.len(),
            needed,
        });
    }
    let bounds = readings
        .iter()
        .map(|r| cristian_bound(r, at_nanos, drift_ppm))
        .collect::<Result<Vec<_>, _>>()?;
    match marzullo(&bounds) {
        Some((agreeing, interval)) if agreeing >= needed => Ok(interval),
        Some((agreeing, _)) => Err(SyncError::MastersDisagree { agreeing, needed }),
        None => Err(SyncError::NotEnoughMasters {
            answered: 0,
            needed,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iv(e: u64, l: u64) -> TtInterval {
        TtInterval::new(Timestamp::from_nanos(e), Timestamp::from_nanos(l)).unwrap()
    }

    #[test]
    fn marzullo_finds_the_region_most_sources_share() {
        let (n, i) = marzullo(&[iv(8, 12), iv(11, 13), iv(10, 12)]).unwrap();
        assert_eq!((n, i), (3, iv(11, 12)));
        // A falseticker far away is outvoted.
        let (n, i) = marzullo(&[iv(8, 12), iv(100, 110), iv(10, 12)]).unwrap();
        assert_eq!((n, i), (2, iv(10, 12)));
        // Touching closed intervals overlap at one point.
        assert_eq!(marzullo(&[iv(1, 5), iv(5, 9)]).unwrap(), (2, iv(5, 5)));
        assert_eq!(marzullo(&[]), None);
    }

    #[test]
    fn cristian_bound_widens_by_round_trip_and_drift() {
        let r = MasterReading {
            sent_nanos: 100,
            received_nanos: 1_100,
            master: iv(5_000, 5_010),
        };
        // At receipt: [e, l + rtt + drift(rtt)] with rtt = 1000 ns, 1000 ppm -> 1 ns drift.
        assert_eq!(cristian_bound(&r, 1_100, 1_000).unwrap(), iv(5_000, 6_011));
        // 1000 ns later: both ends move by 1000 ns, widened by 1 ns each way.
        assert_eq!(cristian_bound(&r, 2_100, 1_000).unwrap(), iv(5_999, 7_012));
        let bad = MasterReading {
            sent_nanos: 2,
            received_nanos: 1,
            master: iv(1, 2),
        };
        assert_eq!(cristian_bound(&bad, 3, 0), Err(SyncError::InvalidReading));
    }

    #[test]
    fn combine_needs_a_quorum() {
        let at = |e, l| MasterReading {
            sent_nanos: 0,
            received_nanos: 0,
            master: iv(e, l),
        };
        let agreed = combine(&[at(10, 20), at(15, 25), at(90, 95)], 0, 0, 2).unwrap();
        assert_eq!(agreed, iv(15, 20));
        assert_eq!(
            combine(&[at(10, 20), at(30, 40), at(90, 95)], 0, 0, 2),
            Err(SyncError::MastersDisagree {
                agreeing: 1,
                needed: 2
            })
        );
        assert_eq!(
            combine(&[at(10, 20)], 0, 0, 2),
            Err(SyncError::NotEnoughMasters {
                answered: 1,
                needed: 2
            })
        );
    }
}
