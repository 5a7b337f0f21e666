//! A time master and clients syncing TrueTime over real gRPC on 127.0.0.1.

#![allow(clippy::unwrap_used)] // a test fails by panicking

use std::sync::Arc;
use std::time::Duration;

use meridian_tests::{init_tracing, loopback_listener, wait_for};
use timemaster::{ClockSyncer, TimeMaster, TimeMasters};
use tokio::sync::oneshot;
use truetime::testing::DriftingOscillator;
use truetime::{
    Clock, ClockError, ReferenceTime, SyncConfig, SyncError, SyncedClock, TestClock, TtInterval,
};

/// A running master; stops when dropped.
struct Master {
    address: String,
    _stop: oneshot::Sender<()>,
}

async fn start_master(clock: Arc<dyn Clock>) -> Master {
    let (listener, address) = loopback_listener().await.unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(TimeMaster::new(clock).serve(listener, async {
        let _ = stopped.await;
    }));
    Master {
        address,
        _stop: stop,
    }
}

/// A master whose clock is true time (the system clock) ± `epsilon`, plus `offset_ns` error.
async fn master_with_offset(offset_ns: i64, epsilon: Duration) -> Master {
    start_master(Arc::new(TestClock::with_offset(
        ReferenceTime::system(),
        offset_ns,
        epsilon,
    )))
    .await
}

fn client_clock(drift_ppm: i64, quorum: usize) -> SyncedClock {
    let oscillator = DriftingOscillator::new(ReferenceTime::system(), drift_ppm);
    SyncedClock::new(
        Arc::new(oscillator),
        SyncConfig {
            quorum,
            ..SyncConfig::default()
        },
    )
}

/// Asserts the true time at the moment of the `now()` call lay inside its interval: the
/// call happened between the two readings of true time around it.
fn assert_contains_true_time(clock: &SyncedClock) -> TtInterval {
    let before = truetime::system_wall_time();
    let interval = clock.now().expect("a synced clock gives intervals");
    let after = truetime::system_wall_time();
    assert!(
        interval.earliest <= after && interval.latest >= before,
        "{interval:?} misses [{before}, {after}]"
    );
    interval
}

fn masters(addresses: &[&Master]) -> TimeMasters {
    let addresses: Vec<String> = addresses.iter().map(|m| m.address.clone()).collect();
    TimeMasters::new(&addresses, Duration::from_secs(2)).unwrap()
}

#[tokio::test]
async fn two_clients_sync_from_one_master() {
    init_tracing();
    let master = master_with_offset(0, Duration::from_micros(500)).await;
    let fast = client_clock(150, 1);
    let slow = client_clock(-150, 1);
    let syncers = [
        ClockSyncer::spawn(fast.clone(), masters(&[&master]), Duration::from_millis(20)),
        ClockSyncer::spawn(slow.clone(), masters(&[&master]), Duration::from_millis(20)),
    ];
    for clock in [&fast, &slow] {
        wait_for(
            "clock to sync over gRPC",
            Duration::from_secs(10),
            || async { clock.now().ok() },
        )
        .await
        .unwrap();
        let interval = assert_contains_true_time(clock);
        // Master ε (0.5 ms) plus a loopback round trip: well under 50 ms.
        assert!(
            interval.epsilon() < Duration::from_millis(50),
            "{interval:?}"
        );
    }
    for syncer in syncers {
        syncer.stop().await;
    }
}

#[tokio::test]
async fn a_falseticker_is_outvoted_by_the_majority() {
    init_tracing();
    let good_a = master_with_offset(0, Duration::from_millis(1)).await;
    let good_b = master_with_offset(300_000, Duration::from_millis(1)).await;
    let liar = master_with_offset(10_000_000_000, Duration::from_millis(1)).await;
    let set = masters(&[&good_a, &liar, &good_b]);

    let clock = client_clock(0, 2);
    let outcome = set.sync(&clock).await.expect("two of three agree");
    assert!(outcome.interval.epsilon() < Duration::from_millis(50));
    assert_contains_true_time(&clock);

    // Demanding all three fails, and the clock keeps refusing rather than guess.
    let strict = client_clock(0, 3);
    let err = set.sync(&strict).await.unwrap_err();
    assert!(
        matches!(
            err,
            timemaster::SyncFailure::Sync(SyncError::MastersDisagree {
                agreeing: 2,
                needed: 3
            })
        ),
        "{err}"
    );
    assert_eq!(strict.now(), Err(ClockError::NeverSynced));
}

#[tokio::test]
async fn unreachable_or_unsynced_masters_leave_the_clock_refusing() {
    init_tracing();
    // A master that is down: bind a port, then close it.
    let (listener, down_address) = loopback_listener().await.unwrap();
    drop(listener);
    // A master whose own clock refuses answers UNAVAILABLE.
    let unsynced: Arc<dyn Clock> = Arc::new(client_clock(0, 1));
    let refusing = start_master(unsynced).await;

    let set = TimeMasters::new(
        &[down_address, refusing.address.clone()],
        Duration::from_millis(500),
    )
    .unwrap();
    let clock = client_clock(0, 1);
    let err = set.sync(&clock).await.unwrap_err();
    assert!(
        matches!(
            err,
            timemaster::SyncFailure::Sync(SyncError::NotEnoughMasters { answered: 0, .. })
        ),
        "{err}"
    );
    assert_eq!(clock.now(), Err(ClockError::NeverSynced));
}

#[test]
fn a_bad_master_address_is_a_clear_error() {
    let err = TimeMasters::new(&["not a url".to_string()], Duration::from_secs(1)).unwrap_err();
    assert!(err.to_string().contains("bad time master address"), "{err}");
}

/// An oscillator that steps back by a second at every other reading.
#[derive(Debug)]
struct SteppingBack {
    inner: DriftingOscillator,
    readings: std::sync::atomic::AtomicU64,
}

impl truetime::Oscillator for SteppingBack {
    fn elapsed_nanos(&self) -> u64 {
        let n = self
            .readings
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let base = self.inner.elapsed_nanos() + 10_000_000_000;
        if n % 2 == 1 {
            base - 1_000_000_000
        } else {
            base
        }
    }
}

#[tokio::test]
async fn an_oscillator_going_back_mid_exchange_is_a_bad_reading_not_a_crash() {
    init_tracing();
    let master = master_with_offset(0, Duration::from_micros(500)).await;
    let clock = SyncedClock::new(
        Arc::new(SteppingBack {
            inner: DriftingOscillator::new(ReferenceTime::system(), 0),
            readings: 0.into(),
        }),
        SyncConfig::default(),
    );
    // Every exchange is stamped sent at one reading and received at a reading a second
    // earlier: no reading bounds anything, and the sync fails with an error.
    let synced = masters(&[&master]).sync(&clock).await;
    assert!(
        synced.is_err(),
        "a reading from a clock going back was used"
    );
}
