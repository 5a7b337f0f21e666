//! [`Peer`]: the transaction layer of one node as the rest of the cluster sees it. The local
//! [`TxnService`] is one; a remote node behind an RPC client is another. Clients,
//! coordinators and participants call each other only through this trait, so the protocol
//! runs the same in one process and across machines.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use locks::{Priority, TxnId};
use serde::{Deserialize, Serialize};
use storage::KeyRange;
use tablet::{Leadership, Mutation, NodeId, TabletId, TabletResponse};
use truetime::Timestamp;

use crate::error::{Result, TxnError};
use crate::{Participant, TxnService};

/// A boxed future of a [`Peer`] call.
pub type PeerFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// Rows as `(key, value)` pairs in key order.
pub type Rows = Vec<(Vec<u8>, Vec<u8>)>;

/// What a replica reports about itself, for routing and for picking a read timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ReplicaState {
    /// Whether this replica believes it leads (a deposed leader may, until it hears the new
    /// term: compare terms).
    pub is_leader: bool,
    /// The Raft term it knows.
    pub term: u64,
    /// `t_safe`: snapshot reads at or below it are served without waiting.
    pub safe_ts: Timestamp,
    /// `t_paxos_safe`: every write at or below it is applied here.
    pub paxos_safe_ts: Timestamp,
    /// Prepared transactions awaiting their outcome.
    pub prepared: usize,
}

/// One node's transaction layer, local or remote. Every call names the tablet it is about;
/// calls that need the tablet's leader fail with [`TxnError::Unavailable`] elsewhere.
pub trait Peer: Send + Sync + std::fmt::Debug {
    /// The node.
    fn node_id(&self) -> NodeId;

    /// Reads `key` at the leader of `tablet` under a shared lock.
    fn read(
        &self,
        txn: TxnId,
        priority: Priority,
        tablet: TabletId,
        key: Vec<u8>,
    ) -> PeerFuture<'_, (Option<Vec<u8>>, Leadership)>;

    /// Scans `range` at the leader of `tablet` under a shared range lock: at most `limit`
    /// rows (a full page means there may be more).
    fn scan(
        &self,
        txn: TxnId,
        priority: Priority,
        tablet: TabletId,
        range: KeyRange,
        limit: usize,
    ) -> PeerFuture<'_, (Rows, Leadership)>;

    /// Commits a transaction that wrote only to `tablet`, without two-phase commit.
    fn commit_single(
        &self,
        txn: TxnId,
        priority: Priority,
        tablet: TabletId,
        mutations: Vec<Mutation>,
        read_under: Option<Leadership>,
    ) -> PeerFuture<'_, Timestamp>;

    /// 2PC phase one on `tablet`.
    fn prepare(
        &self,
        txn: TxnId,
        priority: Priority,
        tablet: TabletId,
        coordinator: TabletId,
        mutations: Vec<Mutation>,
        read_under: Option<Leadership>,
    ) -> PeerFuture<'_, Timestamp>;

    /// Logs `txn`'s outcome on `tablet` (commit at `Some(ts)`, abort on `None`).
    fn decide(
        &self,
        txn: TxnId,
        tablet: TabletId,
        outcome: Option<Timestamp>,
    ) -> PeerFuture<'_, TabletResponse>;

    /// Aborts `txn` on this node and releases its locks.
    fn abort(&self, txn: TxnId) -> PeerFuture<'_, ()>;

    /// Runs two-phase commit with this node (leader of `coordinator`) as coordinator.
    fn coordinate(
        &self,
        txn: TxnId,
        priority: Priority,
        coordinator: TabletId,
        participants: BTreeMap<TabletId, Participant>,
    ) -> PeerFuture<'_, Timestamp>;

    /// The outcome of `txn` recorded by `coordinator` (led here); `None` while undecided.
    fn outcome(
        &self,
        coordinator: TabletId,
        txn: TxnId,
    ) -> PeerFuture<'_, Option<Option<Timestamp>>>;

    /// On the coordinator: abort `txn` for the older `by` unless it passed its commit point.
    fn request_abort(&self, txn: TxnId, by: TxnId) -> PeerFuture<'_, ()>;

    /// Marks `txn` wounded by `by` here and releases its unprepared locks.
    fn wound(&self, txn: TxnId, by: TxnId) -> PeerFuture<'_, ()>;

    /// Reads `key` on this node's replica of `tablet` at `ts`, waiting up to `wait` for `ts`
    /// to become safe there. No locks.
    fn snapshot_read(
        &self,
        tablet: TabletId,
        key: Vec<u8>,
        ts: Timestamp,
        wait: Duration,
    ) -> PeerFuture<'_, Option<Vec<u8>>>;

    /// Scans `range` on this node's replica of `tablet` at `ts` (at most `limit` rows).
    fn snapshot_scan(
        &self,
        tablet: TabletId,
        range: KeyRange,
        ts: Timestamp,
        limit: usize,
        wait: Duration,
    ) -> PeerFuture<'_, Rows>;

    /// This node's replica of `tablet`: leader or not, safe times.
    fn replica_state(&self, tablet: TabletId) -> PeerFuture<'_, ReplicaState>;

    /// At the leader of `tablet`: closes a timestamp now, so replicas can serve reads up to it.
    fn close_timestamp(&self, tablet: TabletId) -> PeerFuture<'_, Timestamp>;

    /// At the leader of `parent`: splits it at `at` into `child`, whose group gets
    /// `members`; returns the child (the existing one if already split there).
    fn split(
        &self,
        parent: TabletId,
        at: Vec<u8>,
        child: TabletId,
        members: BTreeMap<NodeId, String>,
    ) -> PeerFuture<'_, TabletId>;
}

impl Peer for TxnService {
    fn node_id(&self) -> NodeId {
        TxnService::node_id(self)
    }

    fn read(
        &self,
        txn: TxnId,
        priority: Priority,
        tablet: TabletId,
        key: Vec<u8>,
    ) -> PeerFuture<'_, (Option<Vec<u8>>, Leadership)> {
        Box::pin(async move { TxnService::read(self, txn, priority, tablet, &key).await })
    }

    fn scan(
        &self,
        txn: TxnId,
        priority: Priority,
        tablet: TabletId,
        range: KeyRange,
        limit: usize,
    ) -> PeerFuture<'_, (Rows, Leadership)> {
        Box::pin(TxnService::scan(self, txn, priority, tablet, range, limit))
    }

    fn commit_single(
        &self,
        txn: TxnId,
        priority: Priority,
        tablet: TabletId,
        mutations: Vec<Mutation>,
        read_under: Option<Leadership>,
    ) -> PeerFuture<'_, Timestamp> {
        Box::pin(TxnService::commit_single(
            self, txn, priority, tablet, mutations, read_under,
        ))
    }

    fn prepare(
        &self,
        txn: TxnId,
        priority: Priority,
        tablet: TabletId,
        coordinator: TabletId,
        mutations: Vec<Mutation>,
        read_under: Option<Leadership>,
    ) -> PeerFuture<'_, Timestamp> {
        Box::pin(TxnService::prepare(
            self,
            txn,
            priority,
            tablet,
            coordinator,
            mutations,
            read_under,
        ))
    }

    fn decide(
        &self,
        txn: TxnId,
        tablet: TabletId,
        outcome: Option<Timestamp>,
    ) -> PeerFuture<'_, TabletResponse> {
        Box::pin(TxnService::decide(self, txn, tablet, outcome))
    }

    fn abort(&self, txn: TxnId) -> PeerFuture<'_, ()> {
        Box::pin(async move {
            TxnService::abort(self, txn).await;
            Ok(())
        })
    }

    fn coordinate(
        &self,
        txn: TxnId,
        priority: Priority,
        coordinator: TabletId,
        participants: BTreeMap<TabletId, Participant>,
    ) -> PeerFuture<'_, Timestamp> {
        Box::pin(async move {
            let me = self.me()?;
            me.coordinate(txn, priority, coordinator, participants)
                .await
        })
    }

    fn outcome(
        &self,
        coordinator: TabletId,
        txn: TxnId,
    ) -> PeerFuture<'_, Option<Option<Timestamp>>> {
        Box::pin(TxnService::outcome(self, coordinator, txn))
    }

    fn request_abort(&self, txn: TxnId, by: TxnId) -> PeerFuture<'_, ()> {
        Box::pin(async move {
            TxnService::request_abort(self, txn, by).await;
            Ok(())
        })
    }

    fn wound(&self, txn: TxnId, by: TxnId) -> PeerFuture<'_, ()> {
        self.wound_local(txn, by);
        Box::pin(async { Ok(()) })
    }

    fn snapshot_read(
        &self,
        tablet: TabletId,
        key: Vec<u8>,
        ts: Timestamp,
        wait: Duration,
    ) -> PeerFuture<'_, Option<Vec<u8>>> {
        Box::pin(async move {
            self.serving()?;
            let replica = self.replica(tablet)?;
            Ok(replica.read(&key, ts, wait).await?)
        })
    }

    fn snapshot_scan(
        &self,
        tablet: TabletId,
        range: KeyRange,
        ts: Timestamp,
        limit: usize,
        wait: Duration,
    ) -> PeerFuture<'_, Rows> {
        Box::pin(async move {
            self.serving()?;
            let replica = self.replica(tablet)?;
            let page = replica
                .scan(&range, ts, limit, storage::ScanDirection::Forward, wait)
                .await?;
            Ok(page.rows)
        })
    }

    fn replica_state(&self, tablet: TabletId) -> PeerFuture<'_, ReplicaState> {
        let state = self.replica(tablet).map(|replica| {
            let progress = replica.progress();
            ReplicaState {
                is_leader: replica.is_leader(),
                term: replica.term(),
                safe_ts: progress.safe_ts,
                paxos_safe_ts: progress.paxos_safe_ts,
                prepared: progress.prepared,
            }
        });
        Box::pin(async move { state })
    }

    fn close_timestamp(&self, tablet: TabletId) -> PeerFuture<'_, Timestamp> {
        Box::pin(async move {
            let replica = self.replica(tablet)?;
            Ok(replica.close_timestamp().await?)
        })
    }

    fn split(
        &self,
        parent: TabletId,
        at: Vec<u8>,
        child: TabletId,
        members: BTreeMap<NodeId, String>,
    ) -> PeerFuture<'_, TabletId> {
        Box::pin(TxnService::split(self, parent, at, child, members))
    }
}

impl TxnService {
    fn replica(&self, tablet: TabletId) -> Result<Arc<tablet::Tablet>> {
        self.tablet(tablet)
            .ok_or_else(|| TxnError::Unavailable(format!("no replica of {tablet} on this node")))
    }
}
