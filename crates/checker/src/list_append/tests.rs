use super::*;

fn append(key: u64, value: u64) -> Op {
    Op::Append { key, value }
}

fn read(key: u64, values: &[u64]) -> Op {
    Op::Read {
        key,
        values: Some(values.to_vec()),
    }
}

fn committed(id: u64, start: u64, end: u64, ops: Vec<Op>) -> Txn {
    Txn {
        id,
        start,
        end,
        outcome: Outcome::Committed,
        ops,
    }
}

const X: u64 = 1;
const Y: u64 = 2;

fn cycles_of(anomalies: &[Anomaly]) -> Vec<(Vec<u64>, Vec<Edge>)> {
    anomalies
        .iter()
        .filter_map(|a| match &a.kind {
            AnomalyKind::Cycle(edges) => Some((a.txns.clone(), edges.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_serial_history_has_no_anomaly() {
    let history = vec![
        committed(1, 0, 10, vec![append(X, 1)]),
        committed(2, 20, 30, vec![read(X, &[1]), append(X, 2)]),
        committed(3, 40, 50, vec![read(X, &[1, 2]), read(Y, &[])]),
    ];
    assert_eq!(check(&history), vec![]);
}

#[test]
fn a_lost_update_is_a_cycle() {
    // Both read the empty list and append; a later read shows both appends.
    let history = vec![
        committed(1, 0, 10, vec![read(X, &[]), append(X, 1)]),
        committed(2, 0, 10, vec![read(X, &[]), append(X, 2)]),
        committed(3, 20, 30, vec![read(X, &[1, 2])]),
    ];
    let cycles = cycles_of(&check(&history));
    assert_eq!(cycles.len(), 1, "{cycles:?}");
    let (txns, edges) = &cycles[0];
    assert_eq!(txns, &vec![1, 2]);
    assert_eq!(edges, &vec![Edge::WriteWrite, Edge::ReadWrite]);
}

#[test]
fn a_read_skew_is_a_cycle() {
    // T2 sees T1's write to x but not its write to y.
    let history = vec![
        committed(1, 0, 10, vec![append(X, 1), append(Y, 1)]),
        committed(2, 0, 10, vec![read(X, &[1]), read(Y, &[])]),
        committed(3, 20, 30, vec![read(Y, &[1])]),
    ];
    let cycles = cycles_of(&check(&history));
    assert_eq!(cycles.len(), 1, "{cycles:?}");
    assert_eq!(cycles[0].0, vec![1, 2]);
    assert_eq!(cycles[0].1, vec![Edge::WriteRead, Edge::ReadWrite]);
}

#[test]
fn a_stale_read_after_an_acknowledged_write_is_a_real_time_violation() {
    let history = vec![
        committed(1, 0, 10, vec![append(X, 1)]),
        committed(2, 20, 30, vec![read(X, &[])]), // began after T1 was acknowledged
        committed(3, 40, 50, vec![read(X, &[1])]),
    ];
    let cycles = cycles_of(&check(&history));
    assert_eq!(cycles.len(), 1, "{cycles:?}");
    assert_eq!(cycles[0].1, vec![Edge::RealTime, Edge::ReadWrite]);
    // Had they overlapped in time, the same reads would be serializable.
    let mut concurrent = history.clone();
    concurrent[1].start = 5;
    assert_eq!(check(&concurrent), vec![]);
}

#[test]
fn reads_no_single_order_explains_are_reported() {
    let history = vec![
        committed(1, 0, 10, vec![append(X, 1)]),
        committed(2, 0, 10, vec![append(X, 2)]),
        committed(3, 20, 30, vec![read(X, &[1, 2])]),
        committed(4, 20, 30, vec![read(X, &[2])]),
    ];
    let anomalies = check(&history);
    assert!(
        anomalies
            .iter()
            .any(|a| a.kind == AnomalyKind::IncompatibleOrder { key: X }),
        "{anomalies:?}"
    );
}

#[test]
fn reading_a_failed_write_or_an_unknown_value_is_reported() {
    let mut failed = committed(1, 0, 10, vec![append(X, 1)]);
    failed.outcome = Outcome::Failed;
    let history = vec![failed, committed(2, 20, 30, vec![read(X, &[1, 9])])];
    let anomalies = check(&history);
    assert!(
        anomalies
            .iter()
            .any(|a| a.kind == AnomalyKind::AbortedRead { key: X, value: 1 }),
        "{anomalies:?}"
    );
    assert!(
        anomalies
            .iter()
            .any(|a| a.kind == AnomalyKind::PhantomValue { key: X, value: 9 }),
        "{anomalies:?}"
    );
}

#[test]
fn an_unknown_outcome_counts_once_its_write_is_seen() {
    // T1 timed out, but its append was observed: it committed, and ordering still holds.
    let mut unknown = committed(1, 0, 10, vec![append(X, 1)]);
    unknown.outcome = Outcome::Unknown;
    let history = vec![
        unknown,
        committed(2, 20, 30, vec![read(X, &[1]), append(X, 2)]),
        committed(3, 40, 50, vec![read(X, &[1, 2])]),
    ];
    assert_eq!(check(&history), vec![]);
}

#[test]
fn duplicate_appends_are_reported() {
    let history = vec![
        committed(1, 0, 10, vec![append(X, 1)]),
        committed(2, 0, 10, vec![append(X, 1)]),
    ];
    let anomalies = check(&history);
    assert!(
        anomalies
            .iter()
            .any(|a| a.kind == AnomalyKind::DuplicateAppend { key: X, value: 1 }),
        "{anomalies:?}"
    );
}

#[test]
fn a_long_history_is_checked_without_quadratic_real_time_edges() {
    // 30,000 transactions one after another, each appending to a key and reading it back;
    // a key takes 8 appends and is retired (as the workload rotates keys). A quadratic
    // real-time graph would need ~450 million edges.
    let mut history = Vec::new();
    let mut list = Vec::new();
    for id in 0..30_000u64 {
        let key = id / 8;
        if id % 8 == 0 {
            list.clear();
        }
        list.push(id);
        history.push(Txn {
            id,
            start: id * 10,
            end: id * 10 + 5,
            outcome: Outcome::Committed,
            ops: vec![
                Op::Append { key, value: id },
                Op::Read {
                    key,
                    values: Some(list.clone()),
                },
            ],
        });
    }
    assert!(check(&history).is_empty());
}
