//! The state machine's timestamp floor: every replica rejects, alike, a command whose
//! timestamp is not above everything applied or closed before it.

use std::sync::Arc;

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

fn write(ts: u64) -> TabletCommand {
    let mutation = Mutation {
        key: b"k".to_vec(),
        value: Some(ts.to_be_bytes().to_vec()),
    };
    TabletCommand::Write {
        ts: Timestamp::from_nanos(ts),
        mutations: vec![mutation],
    }
}

#[tokio::test]
async fn commands_at_or_below_the_floor_are_rejected_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(Engine::open(dir.path(), &EngineOptions::default()).unwrap());
    let tablet = TabletId(1);
    let mvcc = Arc::new(Mvcc::open(Arc::clone(&engine), tablet.keyspace()).unwrap());
    let (tx, progress) = watch::channel(Progress::default());
    let mut machine = StateMachine::open(engine, Arc::clone(&mvcc), tablet, tx).unwrap();
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
