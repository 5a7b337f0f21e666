//! MVCC on RocksDB: writes (with and without fsync), point reads and scans at a timestamp.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use storage::{Engine, EngineOptions, KeyRange, Mvcc, ScanDirection, WriteBatch};
use truetime::Timestamp;

fn key(i: u64) -> Vec<u8> {
    format!("account/{i:08}").into_bytes()
}

fn loaded(rows: u64, versions: u64) -> (tempfile::TempDir, Mvcc) {
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = Arc::new(Engine::open(dir.path(), &EngineOptions::default()).expect("open"));
    let mvcc = Mvcc::open(engine, b"bench".to_vec()).expect("mvcc");
    for v in 1..=versions {
        let mut batch = WriteBatch::new();
        for i in 0..rows {
            mvcc.put(
                &mut batch,
                &key(i),
                Timestamp::from_nanos(v * 1000),
                &[0u8; 64],
            );
        }
        mvcc.engine().write(batch, false).expect("load");
    }
    (dir, mvcc)
}

fn writes(c: &mut Criterion) {
    let (_dir, mvcc) = loaded(0, 0);
    let mut ts = 1u64;
    for (name, sync) in [
        ("mvcc_put_2_rows_nosync", false),
        ("mvcc_put_2_rows_fsync", true),
    ] {
        c.bench_function(name, |b| {
            b.iter_batched(
                || {
                    ts += 1;
                    let mut batch = WriteBatch::new();
                    mvcc.put(
                        &mut batch,
                        &key(ts % 1000),
                        Timestamp::from_nanos(ts),
                        &[1u8; 64],
                    );
                    mvcc.put(
                        &mut batch,
                        &key(ts % 1000 + 1),
                        Timestamp::from_nanos(ts),
                        &[1u8; 64],
                    );
                    batch
                },
                |batch| mvcc.engine().write(batch, sync).expect("write"),
                BatchSize::SmallInput,
            )
        });
    }
}

fn reads(c: &mut Criterion) {
    let (_dir, mvcc) = loaded(10_000, 4);
    let mut i = 0u64;
    c.bench_function("mvcc_get_at_ts_4_versions", |b| {
        b.iter(|| {
            i = (i + 7919) % 10_000;
            black_box(
                mvcc.get(&key(i), Timestamp::from_nanos(2_500))
                    .expect("get"),
            )
        })
    });
    c.bench_function("mvcc_scan_100_rows", |b| {
        b.iter(|| {
            let range = KeyRange::from(key(5_000));
            black_box(
                mvcc.scan(
                    &range,
                    Timestamp::from_nanos(3_500),
                    100,
                    ScanDirection::Forward,
                )
                .expect("scan"),
            )
        })
    });
}

criterion_group!(benches, writes, reads);
criterion_main!(benches);
