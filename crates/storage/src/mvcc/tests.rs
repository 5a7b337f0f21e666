use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::engine::EngineOptions;

type Model = BTreeMap<Vec<u8>, BTreeMap<Timestamp, Option<Vec<u8>>>>;

#[derive(Debug, Clone)]
enum Op {
    Write(Vec<(Vec<u8>, Timestamp, Option<Vec<u8>>)>),
    Gc(Timestamp),
    Get(Vec<u8>, Timestamp),
    Scan {
        range: KeyRange,
        ts: Timestamp,
        limit: usize,
        direction: ScanDirection,
    },
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        prop_oneof![Just(0u8), Just(1), Just(0xFF), Just(b'a'), Just(b'b')],
        0..4,
    )
}

fn ts() -> impl Strategy<Value = Timestamp> {
    prop_oneof![8 => (0u64..40).prop_map(Timestamp::from_nanos), 1 => Just(Timestamp::MAX)]
}

fn op() -> impl Strategy<Value = Op> {
    let write = (
        key(),
        ts(),
        proptest::option::weighted(0.75, proptest::collection::vec(any::<u8>(), 0..3)),
    );
    prop_oneof![
        6 => proptest::collection::vec(write, 1..4).prop_map(Op::Write),
        1 => (0u64..40).prop_map(|w| Op::Gc(Timestamp::from_nanos(w))),
        3 => (key(), ts()).prop_map(|(k, t)| Op::Get(k, t)),
        3 => (key(), proptest::option::of(key()), ts(), 1usize..4, any::<bool>()).prop_map(|(s, e, ts, limit, rev)| Op::Scan {
            range: KeyRange { start: s, end: e },
            ts,
            limit,
            direction: if rev { ScanDirection::Reverse } else { ScanDirection::Forward },
        }),
    ]
}

fn model_get(model: &Model, key: &[u8], ts: Timestamp) -> Option<Vec<u8>> {
    let versions = model.get(key)?;
    versions
        .range(..=ts)
        .next_back()
        .and_then(|(_, v)| v.clone())
}

fn model_scan(
    model: &Model,
    range: &KeyRange,
    ts: Timestamp,
    direction: ScanDirection,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut rows: Vec<_> = model
        .keys()
        .filter(|k| range.contains(k))
        .filter_map(|k| model_get(model, k, ts).map(|v| (k.clone(), v)))
        .collect();
    if direction == ScanDirection::Reverse {
        rows.reverse();
    }
    rows
}

fn model_gc(model: &mut Model, watermark: Timestamp) {
    for versions in model.values_mut() {
        let Some((&newest, value)) = versions.range(..=watermark).next_back() else {
            continue;
        };
        let drop_newest = value.is_none();
        versions.retain(|&t, _| t > newest || (t == newest && !drop_newest));
    }
    model.retain(|_, versions| !versions.is_empty());
}

/// Scans page by page, following resume keys, until the range is exhausted.
fn scan_all(
    mvcc: &Mvcc,
    range: &KeyRange,
    ts: Timestamp,
    limit: usize,
    direction: ScanDirection,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut range = range.clone();
    let mut rows = Vec::new();
    for _ in 0..1000 {
        let page = mvcc.scan(&range, ts, limit, direction).unwrap();
        assert!(page.rows.len() <= limit);
        rows.extend(page.rows);
        match (page.resume_key, direction) {
            (None, _) => return rows,
            (Some(resume), ScanDirection::Forward) => range.start = resume,
            (Some(resume), ScanDirection::Reverse) => range.end = Some(resume),
        }
    }
    panic!("scan did not finish");
}

fn open(dir: &tempfile::TempDir) -> Mvcc {
    let engine = Arc::new(Engine::open(dir.path(), &EngineOptions::default()).unwrap());
    Mvcc::open(engine, b"ks1".to_vec()).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Reads at random timestamps after random writes, deletes and GC agree with a BTreeMap.
    #[test]
    fn mvcc_matches_model(ops in proptest::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let mvcc = open(&dir);
        // A neighbouring keyspace that must never leak into ks1's reads.
        let neighbour = Mvcc::open(Arc::clone(mvcc.engine()), b"ks2".to_vec()).unwrap();
        let mut model = Model::new();
        let mut watermark = Timestamp::ZERO;
        for op in ops {
            match op {
                Op::Write(writes) => {
                    let mut batch = WriteBatch::new();
                    for (key, ts, value) in writes {
                        match &value {
                            Some(v) => { mvcc.put(&mut batch, &key, ts, v); neighbour.put(&mut batch, &key, ts, b"x"); }
                            None => mvcc.delete(&mut batch, &key, ts),
                        }
                        model.entry(key).or_default().insert(ts, value);
                    }
                    mvcc.engine().write(batch, false).unwrap();
                }
                Op::Gc(w) => {
                    mvcc.gc(w, false).unwrap();
                    watermark = watermark.max(w);
                    model_gc(&mut model, watermark);
                }
                Op::Get(key, ts) => {
                    let got = mvcc.get(&key, ts);
                    if ts < watermark {
                        prop_assert!(matches!(got, Err(StorageError::BelowGcWatermark { .. })), "{got:?}");
                    } else {
                        prop_assert_eq!(got.unwrap(), model_get(&model, &key, ts), "get {:?} at {:?}", key, ts);
                    }
                }
                Op::Scan { range, ts, limit, direction } => {
                    if ts < watermark {
                        prop_assert!(mvcc.scan(&range, ts, limit, direction).is_err());
                    } else {
                        let got = scan_all(&mvcc, &range, ts, limit, direction);
                        prop_assert_eq!(got, model_scan(&model, &range, ts, direction), "scan {:?} at {:?} {:?}", range, ts, direction);
                    }
                }
            }
        }
    }
}

#[test]
fn gc_keeps_the_newest_version_at_or_below_the_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let mvcc = open(&dir);
    let t = Timestamp::from_nanos;
    let mut batch = WriteBatch::new();
    for n in [10, 20, 30] {
        mvcc.put(&mut batch, b"k", t(n), format!("v{n}").as_bytes());
    }
    mvcc.put(&mut batch, b"gone", t(5), b"old");
    mvcc.delete(&mut batch, b"gone", t(15));
    mvcc.engine().write(batch, false).unwrap();

    let stats = mvcc.gc(t(25), false).unwrap();
    assert_eq!(
        stats.versions_removed, 3,
        "v10 of k, and both versions of the deleted key"
    );
    assert_eq!(mvcc.get(b"k", t(25)).unwrap(), Some(b"v20".to_vec()));
    assert_eq!(mvcc.get(b"k", t(30)).unwrap(), Some(b"v30".to_vec()));
    assert_eq!(mvcc.get(b"gone", t(25)).unwrap(), None);
    assert!(matches!(
        mvcc.get(b"k", t(24)),
        Err(StorageError::BelowGcWatermark { .. })
    ));
    // The watermark never falls.
    mvcc.gc(t(1), false).unwrap();
    assert_eq!(mvcc.gc_watermark(), t(25));
}

#[test]
fn synced_writes_and_watermark_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let t = Timestamp::from_nanos;
    {
        let mvcc = open(&dir);
        let mut batch = WriteBatch::new();
        mvcc.put(&mut batch, b"a", t(1), b"one");
        mvcc.put(&mut batch, b"a", t(2), b"two");
        mvcc.delete(&mut batch, b"b", t(3));
        mvcc.engine().write(batch, true).unwrap();
        mvcc.gc(t(2), true).unwrap();
    }
    let mvcc = open(&dir);
    assert_eq!(mvcc.get(b"a", t(2)).unwrap(), Some(b"two".to_vec()));
    assert_eq!(mvcc.gc_watermark(), t(2));
    assert!(mvcc.get(b"a", t(1)).is_err());
}

#[test]
fn zero_limit_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let mvcc = open(&dir);
    let err = mvcc
        .scan(&KeyRange::all(), Timestamp::MAX, 0, ScanDirection::Forward)
        .unwrap_err();
    assert!(matches!(err, StorageError::InvalidArgument(_)));
}
