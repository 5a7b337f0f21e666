//! The cost of asking TrueTime for the time.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use truetime::{
    Clock, FixedEpsilonClock, MasterReading, SyncConfig, SyncedClock, SystemOscillator,
};

fn now(c: &mut Criterion) {
    let fixed = FixedEpsilonClock::new(Duration::from_millis(1));
    c.bench_function("fixed_epsilon_now", |b| b.iter(|| black_box(fixed.now())));

    let synced = SyncedClock::new(Arc::new(SystemOscillator::new()), SyncConfig::default());
    let at = synced.oscillator_nanos();
    let master = fixed.now().expect("fixed clock");
    let reading = MasterReading {
        sent_nanos: at,
        received_nanos: at,
        master,
    };
    synced.apply_readings(&[reading]).expect("sync");
    c.bench_function("synced_now", |b| b.iter(|| black_box(synced.now())));
}

criterion_group!(benches, now);
criterion_main!(benches);
