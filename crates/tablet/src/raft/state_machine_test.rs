//! The state machine's timestamp floor: every replica rejects, alike, a command whose
//! timestamp is not above everything applied or closed before it.

use std::sync::Arc;
use std::time::Duration;

use futures_util::stream;
use openraft::alias::EntryOf;
use openraft::storage::RaftStateMachine;
use openraft::vote::RaftLeaderId;
use openraft::{Entry, EntryPayload, LogId};
use storage::{Engine, EngineOptions, Mvcc};
use tokio::sync::watch;
use truetime::Timestamp;

use super::TypeConfig;
use super::state_machine::StateMachine;
use crate::{Mutation, Progress, TabletCommand, TabletId};

fn entry(index: u64, command: TabletCommand) -> EntryOf<TypeConfig> {
    let leader = openraft::impls::leader_id_adv::LeaderId::new(1, crate::NodeId(1));
    Entry {
        log_id: LogId::new(leader, index),
        payload: EntryPayload::Normal(command),
    }
}

/// A tablet's engine and rows in a temporary directory; opens its state machine as often
/// as a test restarts it.
struct Fixture {
    _dir: tempfile::TempDir,
    engine: Arc<Engine>,
    mvcc: Arc<Mvcc>,
    tablet: TabletId,
}

impl Fixture {
    fn new(tablet: TabletId) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let engine = Arc::new(Engine::open(dir.path(), &EngineOptions::default()).unwrap());
        let mvcc = Arc::new(Mvcc::open(Arc::clone(&engine), tablet.keyspace()).unwrap());
        Fixture {
            _dir: dir,
            engine,
            mvcc,
            tablet,
        }
    }

    fn open(&self) -> (StateMachine, watch::Receiver<Progress>) {
        let (tx, progress) = watch::channel(Progress::default());
        let engine = Arc::clone(&self.engine);
        let machine = StateMachine::open(
            engine,
            Arc::clone(&self.mvcc),
            self.tablet,
            tx,
            Default::default(),
            None,
        )
        .unwrap();
        (machine, progress)
    }
}

fn write(ts: u64) -> TabletCommand {
    let mutation = Mutation::put(b"k".to_vec(), ts.to_be_bytes().to_vec());
    TabletCommand::Write {
        ts: Timestamp::from_nanos(ts),
        mutations: vec![mutation],
    }
}

#[tokio::test]
async fn commands_at_or_below_the_floor_are_rejected_and_change_nothing() {
    let fixture = Fixture::new(TabletId(1));
    let (mut machine, progress) = fixture.open();
    let mvcc = &fixture.mvcc;
    let close = |ts| TabletCommand::Close {
        ts: Timestamp::from_nanos(ts),
    };
    let entries = vec![
        entry(1, write(10)),
        entry(2, write(10)), // equal: rejected
        entry(3, write(5)),  // below: rejected
        entry(4, close(20)),
        entry(5, write(15)), // below a closed timestamp: rejected
        entry(6, write(21)),
    ];
    machine
        .apply(stream::iter(entries.into_iter().map(|e| Ok((e, None)))))
        .await
        .unwrap();
    let progress = *progress.borrow();
    assert_eq!(progress.stale_rejections, 3);
    assert_eq!(progress.safe_ts, Timestamp::from_nanos(21));
    assert_eq!(progress.applied_index, Some(6));
    let value = |ts| mvcc.get(b"k", Timestamp::from_nanos(ts)).unwrap();
    assert_eq!(value(9), None);
    assert_eq!(
        value(19),
        Some(10u64.to_be_bytes().to_vec()),
        "rejected writes left no version"
    );
    assert_eq!(value(21), Some(21u64.to_be_bytes().to_vec()));
}

/// Applies one command outside Raft and returns the state machine's response.
fn apply_one(machine: &mut StateMachine, command: TabletCommand) -> crate::TabletResponse {
    let mut batch = storage::WriteBatch::new();
    let response = machine.apply_command(command, &mut batch).unwrap();
    machine.write_applied(batch).unwrap();
    machine.publish();
    response
}

#[tokio::test]
async fn a_prepared_transaction_holds_safe_time_below_it_until_its_outcome() {
    use crate::TabletResponse::{AlreadyDecided, Applied, NotPrepared};
    let fixture = Fixture::new(TabletId(3));
    let tablet = fixture.tablet;
    let (mut machine, progress) = fixture.open();
    let mvcc = &fixture.mvcc;
    let ts = Timestamp::from_nanos;
    let (t1, t2) = (locks::TxnId(1), locks::TxnId(2));
    let mutation = |v: &[u8]| vec![Mutation::put(b"k".to_vec(), v.to_vec())];

    let prepare = TabletCommand::Prepare {
        txn: t1,
        coordinator: tablet,
        prepare_ts: ts(100),
        mutations: mutation(b"one"),
    };
    assert_eq!(apply_one(&mut machine, prepare.clone()), Applied);
    assert_eq!(
        apply_one(&mut machine, prepare),
        Applied,
        "a duplicate prepare is harmless"
    );
    apply_one(&mut machine, TabletCommand::Close { ts: ts(500) });
    let p = *progress.borrow();
    assert_eq!(p.paxos_safe_ts, ts(500));
    assert_eq!(
        p.safe_ts,
        ts(99),
        "t_safe = min(t_paxos_safe, prepare_ts - 1)"
    );
    assert_eq!(p.prepared, 1);
    assert_eq!(
        mvcc.get(b"k", ts(500)).unwrap(),
        None,
        "prepared writes are not visible"
    );

    // The prepared record survives a restart.
    drop(machine);
    let (mut machine, progress) = fixture.open();
    assert_eq!(progress.borrow().safe_ts, ts(99));

    assert_eq!(
        apply_one(
            &mut machine,
            TabletCommand::Commit {
                txn: t1,
                commit_ts: ts(50)
            }
        ),
        NotPrepared,
        "below the prepare timestamp"
    );
    assert_eq!(
        apply_one(
            &mut machine,
            TabletCommand::Commit {
                txn: t1,
                commit_ts: ts(300)
            }
        ),
        Applied
    );
    assert_eq!(
        apply_one(
            &mut machine,
            TabletCommand::Commit {
                txn: t1,
                commit_ts: ts(300)
            }
        ),
        AlreadyDecided {
            commit_ts: Some(ts(300))
        }
    );
    assert_eq!(
        apply_one(&mut machine, TabletCommand::Abort { txn: t1 }),
        AlreadyDecided {
            commit_ts: Some(ts(300))
        }
    );
    assert_eq!(progress.borrow().safe_ts, ts(500));
    assert_eq!(mvcc.get(b"k", ts(299)).unwrap(), None);
    assert_eq!(
        mvcc.get(b"k", ts(300)).unwrap(),
        Some(b"one".to_vec()),
        "committed at commit_ts"
    );

    // Presumed abort: an abort recorded first keeps a late commit out.
    assert_eq!(
        apply_one(&mut machine, TabletCommand::Abort { txn: t2 }),
        Applied
    );
    assert_eq!(
        apply_one(
            &mut machine,
            TabletCommand::Commit {
                txn: t2,
                commit_ts: ts(600)
            }
        ),
        AlreadyDecided { commit_ts: None }
    );
    let late = TabletCommand::Prepare {
        txn: t2,
        coordinator: tablet,
        prepare_ts: ts(700),
        mutations: mutation(b"two"),
    };
    assert_eq!(
        apply_one(&mut machine, late),
        AlreadyDecided { commit_ts: None }
    );
    assert_eq!(progress.borrow().prepared, 0);
}

#[tokio::test]
async fn outcomes_are_forgotten_after_the_retention_period() {
    use crate::TabletResponse::{AlreadyDecided, Applied};
    let fixture = Fixture::new(TabletId(4));
    let (mut machine, _progress) = fixture.open();
    let txn = locks::TxnId(9);
    let start = Timestamp::from_nanos(1_000_000_000_000);
    apply_one(&mut machine, TabletCommand::Close { ts: start });
    assert_eq!(
        apply_one(&mut machine, TabletCommand::Abort { txn }),
        Applied
    );
    let retention = super::state_machine::DECIDED_RETENTION;
    apply_one(
        &mut machine,
        TabletCommand::Close {
            ts: start.saturating_add(retention),
        },
    );
    assert_eq!(
        apply_one(&mut machine, TabletCommand::Abort { txn }),
        AlreadyDecided { commit_ts: None },
        "remembered for the whole retention period"
    );
    let later = start
        .saturating_add(retention)
        .saturating_add(Duration::from_secs(1));
    apply_one(&mut machine, TabletCommand::Close { ts: later });
    assert_eq!(machine.decided(txn), None, "forgotten after it");
    // ... and gone from disk too.
    drop(machine);
    let (machine, _progress) = fixture.open();
    assert_eq!(machine.decided(txn), None);
}

#[tokio::test]
async fn a_split_moves_the_upper_keys_with_their_history_and_refuses_them_afterwards() {
    use crate::TabletResponse::{Applied, OutOfRange, Split, SplitRefused};
    let fixture = Fixture::new(TabletId(5));
    let (mut machine, _progress) = fixture.open();
    let ts = Timestamp::from_nanos;
    let put = |key: &[u8], at: u64| TabletCommand::Write {
        ts: ts(at),
        mutations: vec![Mutation::put(key.to_vec(), at.to_be_bytes().to_vec())],
    };
    assert_eq!(apply_one(&mut machine, put(b"a", 10)), Applied);
    assert_eq!(apply_one(&mut machine, put(b"m", 11)), Applied);
    assert_eq!(apply_one(&mut machine, put(b"m", 12)), Applied);
    assert_eq!(apply_one(&mut machine, put(b"z", 13)), Applied);
    let child = TabletId(6);
    let split = |at: &[u8]| TabletCommand::Split {
        at: at.to_vec(),
        child,
    };
    assert!(matches!(
        apply_one(&mut machine, split(b"")),
        SplitRefused { .. }
    ));
    assert_eq!(apply_one(&mut machine, split(b"m")), Split { child });
    assert_eq!(
        apply_one(&mut machine, split(b"m")),
        Split { child },
        "a repeated split finds its child"
    );

    // The parent keeps the lower keys and refuses the upper ones, writes and prepares alike.
    let mvcc = &fixture.mvcc;
    assert!(mvcc.get(b"a", ts(20)).unwrap().is_some());
    assert_eq!(mvcc.get(b"m", ts(20)).unwrap(), None, "moved away");
    assert_eq!(apply_one(&mut machine, put(b"q", 30)), OutOfRange);
    let prepare = TabletCommand::Prepare {
        txn: locks::TxnId(1),
        coordinator: TabletId(5),
        prepare_ts: ts(31),
        mutations: vec![Mutation::put(b"x".to_vec(), b"1".to_vec())],
    };
    assert_eq!(apply_one(&mut machine, prepare), OutOfRange);

    // The child has every version of the upper keys, and starts at the parent's floor.
    let moved = Mvcc::open(Arc::clone(&fixture.engine), child.keyspace()).unwrap();
    assert_eq!(
        moved.get(b"m", ts(11)).unwrap(),
        Some(11u64.to_be_bytes().to_vec())
    );
    assert_eq!(
        moved.get(b"m", ts(20)).unwrap(),
        Some(12u64.to_be_bytes().to_vec())
    );
    assert_eq!(
        moved.get(b"z", ts(20)).unwrap(),
        Some(13u64.to_be_bytes().to_vec())
    );
    assert_eq!(moved.get(b"a", ts(20)).unwrap(), None);
    let (_, child_progress) = {
        let (tx, rx) = watch::channel(Progress::default());
        let machine = StateMachine::open(
            Arc::clone(&fixture.engine),
            Arc::new(moved),
            child,
            tx,
            Default::default(),
            None,
        )
        .unwrap();
        (machine, rx)
    };
    assert_eq!(child_progress.borrow().paxos_safe_ts, ts(13));
}
