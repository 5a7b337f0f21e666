//! Scripted lock-table scenarios with expected traces, and a property test of the table's
//! invariants under random requests.
//!
//! Script commands: `t<N> S|X <key>` or `t<N> S|X [<start>,<end>)` acquires (transaction
//! `N` has priority `N`: smaller is older); `release t<N>`; `prepare t<N>`. Each command's
//! trace lists the request's outcome and every event, in order.

use std::collections::{BTreeSet, HashMap};

use proptest::prelude::*;
use truetime::Timestamp;

use super::*;

fn priority(txn: u64) -> Priority {
    Priority {
        first_start: Timestamp::from_nanos(txn),
        tiebreak: txn,
    }
}

fn parse_txn(word: &str) -> TxnId {
    TxnId(word.trim_start_matches('t').parse().expect("t<N>"))
}

fn parse_target(word: &str) -> LockTarget {
    match word.strip_prefix('[').and_then(|w| w.strip_suffix(')')) {
        Some(range) => {
            let (start, end) = range.split_once(',').expect("[start,end)");
            LockTarget::range(start.trim(), end.trim())
        }
        None => LockTarget::key(word),
    }
}

fn describe(events: &[Event], requests: &HashMap<RequestId, TxnId>) -> Vec<String> {
    events
        .iter()
        .map(|e| match e {
            Event::Granted { txn, request } => {
                assert_eq!(requests.get(request), Some(txn));
                format!("granted t{}", txn.0)
            }
            Event::Wounded { txn, by } => format!("wound t{} by t{}", txn.0, by.0),
            Event::AskToAbort { txn, by } => format!("ask t{} to abort for t{}", txn.0, by.0),
        })
        .collect()
}

/// Runs `steps` of `(command, expected trace)` and checks each trace.
fn check(steps: &[(&str, &str)]) {
    let mut table = LockTable::new();
    let mut requests = HashMap::new();
    for (command, expected) in steps {
        let words: Vec<&str> = command.split_whitespace().collect();
        let trace = match words.as_slice() {
            ["release", txn] => describe(&table.release(parse_txn(txn)), &requests),
            ["prepare", txn] => {
                table.set_prepared(parse_txn(txn));
                vec![]
            }
            [txn, mode, target] => {
                let txn = parse_txn(txn);
                let mode = if *mode == "X" {
                    LockMode::Exclusive
                } else {
                    LockMode::Shared
                };
                let (outcome, events) =
                    table.acquire(txn, priority(txn.0), parse_target(target), mode);
                let mut trace = vec![match outcome {
                    Acquire::Granted(r) => {
                        requests.insert(r, txn);
                        "granted".to_string()
                    }
                    Acquire::Waiting(r) => {
                        requests.insert(r, txn);
                        "waiting".to_string()
                    }
                    Acquire::Wounded { by } => format!("refused: wounded by t{}", by.0),
                }];
                trace.extend(describe(&events, &requests));
                trace
            }
            _ => panic!("bad command {command:?}"),
        };
        assert_eq!(trace.join("; "), *expected, "after {command:?}");
    }
}

#[test]
fn shared_locks_share_and_exclusive_ones_wait() {
    check(&[
        ("t1 S a", "granted"),
        ("t2 S a", "granted"),
        ("t3 X a", "waiting"),
        ("release t1", ""),
        ("release t2", "granted t3"),
    ]);
}

#[test]
fn a_three_transaction_cycle_is_resolved_by_wounding() {
    // t1 -> t2 -> t3 -> t1 would be a deadlock; wound-wait breaks it before it forms.
    check(&[
        ("t1 X a", "granted"),
        ("t2 X b", "granted"),
        ("t3 X c", "granted"),
        ("t1 X b", "waiting; wound t2 by t1"),
        ("t2 X c", "refused: wounded by t1"),
        ("t3 X a", "waiting"), // younger waits for older: no wound
        ("release t2", "granted t1"),
        ("release t1", "granted t3"),
    ]);
}

#[test]
fn an_old_transaction_does_not_starve_under_a_stream_of_young_ones() {
    check(&[
        ("t5 S a", "granted"),
        ("t1 X a", "waiting; wound t5 by t1"),
        // Young readers would be compatible with the shared holder, but must not overtake
        // the older writer waiting ahead of them.
        ("t6 S a", "waiting"),
        ("t7 S a", "waiting"),
        ("release t5", "granted t1"),
        ("t8 S a", "waiting"),
        ("release t1", "granted t6; granted t7; granted t8"),
    ]);
}

#[test]
fn a_wounded_waiter_is_told_at_once() {
    // t3 is itself waiting (for t2's lock) when the older t1 needs what t3 holds.
    check(&[
        ("t3 X a", "granted"),
        ("t2 X b", "granted"),
        ("t3 X b", "waiting"),
        ("t1 X a", "waiting; wound t3 by t1"),
        ("release t3", "granted t1"),
        ("release t2", ""), // t3's cancelled request is not granted
    ]);
}

#[test]
fn range_locks_conflict_with_point_writes_inside_the_range() {
    check(&[
        ("t1 S [b,d)", "granted"),
        ("t2 X c", "waiting"),
        ("t3 X d", "granted"), // the range's end is excluded
        ("t4 X a", "granted"),
        ("release t1", "granted t2"),
        ("t0 S [a,c)", "waiting; wound t4 by t0"), // c is outside: t2 is not in the way
        ("release t4", "granted t0"),
    ]);
}

#[test]
fn a_prepared_holder_keeps_its_locks_and_is_asked_to_abort() {
    check(&[
        ("t2 X a", "granted"),
        ("prepare t2", ""),
        ("t1 X a", "waiting; ask t2 to abort for t1"),
        ("t0 X a", "waiting"), // asked once
        ("release t2", "granted t0"),
        ("release t0", "granted t1"),
    ]);
}

#[test]
fn a_sole_shared_holder_upgrades_to_exclusive() {
    check(&[
        ("t1 S a", "granted"),
        ("t1 X a", "granted"),
        ("t1 S a", "granted"), // already covered
        ("t2 S a", "waiting"),
        ("release t1", "granted t2"),
    ]);
}

#[test]
fn request_ids_of_different_tables_never_collide() {
    // A node replaces a tablet's table on a leader change; a grant from the old table that
    // is still being delivered must not match a waiter of the new one.
    let (mut old, mut new) = (LockTable::new(), LockTable::new());
    let mut ids = BTreeSet::new();
    for table in [&mut old, &mut new] {
        for txn in 1..=3 {
            let (decision, _) = table.acquire(
                TxnId(txn),
                priority(txn),
                parse_target("a"),
                LockMode::Exclusive,
            );
            let request = match decision {
                Acquire::Granted(r) | Acquire::Waiting(r) => r,
                other => panic!("unexpected {other:?}"),
            };
            assert!(ids.insert(request), "{request:?} handed out twice");
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Acquire {
        txn: u64,
        key: u8,
        end: Option<u8>,
        exclusive: bool,
    },
    Release(u64),
    Prepare(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1u64..6, 0u8..6, proptest::option::weighted(0.2, 1u8..4), any::<bool>()).prop_map(|(txn, key, span, exclusive)| Op::Acquire {
            txn,
            key,
            end: span.map(|s| key + s),
            exclusive,
        }),
        2 => (1u64..6).prop_map(Op::Release),
        1 => (1u64..6).prop_map(Op::Prepare),
    ]
}

fn target(key: u8, end: Option<u8>) -> LockTarget {
    match end {
        Some(end) => LockTarget::range([key], [end]),
        None => LockTarget::key([key]),
    }
}

proptest! {
    /// Under any sequence of requests: no two transactions hold conflicting locks; every wait
    /// is for an older, a prepared or an already wounded holder (so no deadlock can form);
    /// and releasing everyone lets every waiter through.
    #[test]
    fn the_table_is_safe_and_deadlock_free(ops in proptest::collection::vec(op(), 1..80)) {
        let mut table = LockTable::new();
        let mut wounded = BTreeSet::new();
        let mut prepared = BTreeSet::new();
        let mut live = BTreeSet::new();
        for op in ops {
            let events = match op {
                Op::Acquire { txn, key, end, exclusive } => {
                    // A transaction with a request in flight does not issue another.
                    if table.waiting.values().any(|w| w.txn == TxnId(txn)) || prepared.contains(&txn) {
                        continue;
                    }
                    live.insert(txn);
                    let mode = if exclusive { LockMode::Exclusive } else { LockMode::Shared };
                    table.acquire(TxnId(txn), priority(txn), target(key, end), mode).1
                }
                Op::Release(txn) => {
                    live.remove(&txn);
                    wounded.remove(&txn);
                    prepared.remove(&txn);
                    table.release(TxnId(txn))
                }
                Op::Prepare(txn) => {
                    if table.waiting.values().any(|w| w.txn == TxnId(txn)) || wounded.contains(&txn) {
                        continue;
                    }
                    prepared.insert(txn);
                    table.set_prepared(TxnId(txn));
                    vec![]
                }
            };
            for event in events {
                match event {
                    Event::Wounded { txn, by } => {
                        prop_assert!(txn.0 > by.0, "only younger transactions are wounded");
                        prop_assert!(!prepared.contains(&txn.0), "a prepared transaction lost its locks");
                        wounded.insert(txn.0);
                    }
                    Event::AskToAbort { txn, by } => {
                        prop_assert!(txn.0 > by.0, "only younger transactions are asked to abort");
                        prop_assert!(prepared.contains(&txn.0), "only prepared transactions are asked");
                    }
                    Event::Granted { .. } => {}
                }
            }
            // Safety: held locks of different transactions never conflict.
            let held: Vec<(u64, LockTarget, LockMode)> = live
                .iter()
                .flat_map(|t| table.held_by(TxnId(*t)).into_iter().map(move |(l, m)| (*t, l, m)))
                .collect();
            for (a, la, ma) in &held {
                for (b, lb, mb) in &held {
                    prop_assert!(a == b || !(ma.conflicts_with(*mb) && la.overlaps(lb)), "t{a} and t{b} hold conflicting locks");
                }
            }
            // No deadlock: a waiter only waits on older, prepared or wounded holders.
            for w in table.waiting.values() {
                for holder in table.conflicting_holders(w.txn, &w.target, w.mode) {
                    prop_assert!(holder.0 < w.txn.0 || prepared.contains(&holder.0) || wounded.contains(&holder.0),
                        "t{} waits on younger healthy t{}", w.txn.0, holder.0);
                }
            }
        }
        // Liveness: releasing every transaction leaves nothing waiting.
        for txn in 1..6 {
            table.release(TxnId(txn));
        }
        prop_assert_eq!(table.waiting_len(), 0);
    }
}
