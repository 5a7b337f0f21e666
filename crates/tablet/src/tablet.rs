//! [`Tablet`]: one replica of one tablet on this node, and the leader's timestamp rules.
//!
//! # Timestamps
//!
//! Only the leader picks timestamps, and every command carries the one it was given. The
//! leader's allocator hands out `max(TT.now().latest, last + 1)`: strictly increasing, and
//! never below the true time. A new leader must also never go at or below anything its
//! predecessors assigned or promised. What they assigned or promised is in the log, so before
//! its first allocation in a term the leader waits until it has applied everything committed
//! before its term (a ReadIndex round: the entries of earlier terms are committed with the
//! leader's first entry), and starts above the state machine's floor. Proposals carry the
//! leader's id, so a command allocated under an old leadership is dropped rather than
//! appended by a newer one. As a last line of defence every replica rejects, alike, a command
//! whose timestamp is not above its floor.
//!
//! # Closed timestamps and safe time
//!
//! The leader proposes `Close { ts }` every `close_interval`, even when idle: a promise that
//! no later command writes at or below `ts`. Each replica's floor (the highest timestamp it
//! has applied or seen closed) is its `t_paxos_safe`; a read at or below it sees every write
//! it ever will, so any replica serves it with no leader round trip.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

use openraft::alias::CommittedLeaderIdOf;
use openraft::async_runtime::WatchReceiver;
use openraft::error::ClientWriteError;
use openraft::impls::ProgressResponder;
use openraft::{BasicNode, ReadPolicy};
use storage::{KeyRange, Mvcc, ScanDirection, ScanPage};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use truetime::{Clock, Timestamp};

use crate::error::{Result, TabletError};
use crate::raft::state_machine::SharedRange;
use crate::raft::{Raft, TypeConfig};
use crate::{Mutation, NodeId, PreparedTxn, Progress, TabletCommand, TabletId, TabletResponse};

/// How long a new leadership waits for the log it inherited to apply before giving up (the
/// caller retries; a leader that cannot commit its log is no leader).
const INHERIT_TIMEOUT: Duration = Duration::from_secs(10);

/// One leader's tenure of a tablet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Leadership {
    /// The Raft term.
    pub term: u64,
    /// The leader.
    pub leader: NodeId,
    /// The replica instance leading: a leader restarted (or its group reopened) can lead
    /// again in the same term, but the locks taken under its previous instance died with it.
    pub incarnation: u64,
}

/// Where a proposal's timestamp comes from.
#[derive(Debug, Clone, Copy)]
enum Stamp {
    /// The leader allocates the next one.
    Allocate,
    /// It was chosen elsewhere; the allocator moves past it.
    Given(Timestamp),
}

/// The leader's timestamp allocator.
#[derive(Debug, Default)]
struct Allocator {
    /// The leadership the floor below was established for.
    leadership: Option<CommittedLeaderIdOf<TypeConfig>>,
    /// The last timestamp handed out (or the floor inherited from predecessors).
    last: Timestamp,
}

/// A tablet's state as this replica sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TabletMetrics {
    /// The tablet.
    pub tablet: TabletId,
    /// This node.
    pub node: NodeId,
    /// The leader this replica knows of.
    pub leader: Option<NodeId>,
    /// The Raft term.
    pub term: u64,
    /// The last applied log index.
    pub applied_index: Option<u64>,
    /// This replica's `t_safe = min(t_paxos_safe, t_tm_safe)`.
    pub safe_ts: Timestamp,
    /// This replica's `t_paxos_safe`.
    pub paxos_safe_ts: Timestamp,
    /// Prepared transactions awaiting their outcome here.
    pub prepared: usize,
    /// How far safe time trails `TT.now().latest` here (zero if the clock refuses).
    pub safe_lag: Duration,
    /// Commands this replica rejected for a stale timestamp.
    pub stale_rejections: u64,
    /// Voters and learners of the group.
    pub voters: BTreeSet<NodeId>,
}

/// One replica of one tablet.
#[derive(Debug)]
pub struct Tablet {
    id: TabletId,
    node: NodeId,
    raft: Raft,
    mvcc: Arc<Mvcc>,
    progress: watch::Receiver<Progress>,
    /// The keys this tablet holds, as last applied here.
    range: SharedRange,
    clock: Arc<dyn Clock>,
    allocator: tokio::sync::Mutex<Allocator>,
    closer: std::sync::Mutex<Option<JoinHandle<()>>>,
    /// This instance of the replica (see [`Leadership::incarnation`]).
    incarnation: u64,
}

impl Tablet {
    pub(crate) fn new(
        id: TabletId,
        node: NodeId,
        raft: Raft,
        mvcc: Arc<Mvcc>,
        progress: watch::Receiver<Progress>,
        range: SharedRange,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Tablet {
            id,
            node,
            raft,
            mvcc,
            progress,
            range,
            clock,
            allocator: tokio::sync::Mutex::new(Allocator::default()),
            closer: std::sync::Mutex::new(None),
            incarnation: rand::random(),
        }
    }

    /// Starts proposing closed timestamps every `interval` while this replica leads.
    pub(crate) fn start_closer(self: &Arc<Self>, interval: Duration) {
        let weak: Weak<Tablet> = Arc::downgrade(self);
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let Some(tablet) = weak.upgrade() else { return };
                if tablet.raft.is_leader()
                    && let Err(e) = tablet.close_timestamp().await
                {
                    tracing::debug!(tablet_id = %tablet.id, error = %e, "closing a timestamp failed");
                }
            }
        });
        *self.closer.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
    }

    /// The tablet's id.
    pub fn id(&self) -> TabletId {
        self.id
    }

    pub(crate) fn raft(&self) -> &Raft {
        &self.raft
    }

    /// Whether this replica is the leader now.
    pub fn is_leader(&self) -> bool {
        self.raft.as_leader().is_ok()
    }

    fn not_leader(&self) -> TabletError {
        let leader = self.raft.metrics().borrow_watched().current_leader;
        TabletError::NotLeader {
            tablet: self.id,
            leader,
        }
    }

    fn stopped(&self, e: impl std::fmt::Display) -> TabletError {
        TabletError::RaftStopped {
            tablet: self.id,
            reason: e.to_string(),
        }
    }

    /// Writes `mutations` at a timestamp this leader picks, once they are applied here;
    /// returns the timestamp. Does not commit-wait: that is the transaction layer's job.
    pub async fn write(&self, mutations: Vec<Mutation>) -> Result<Timestamp> {
        self.write_under(None, mutations).await
    }

    /// [`Tablet::write`], refused unless this replica still holds `under` (the leadership
    /// the caller's locks were taken under).
    pub async fn write_under(
        &self,
        under: Option<Leadership>,
        mutations: Vec<Mutation>,
    ) -> Result<Timestamp> {
        let command = |ts| TabletCommand::Write { ts, mutations };
        let (ts, response) = self.propose(under, Stamp::Allocate, command).await?;
        self.expect_applied(response)?;
        Ok(ts)
    }

    /// Proposes a closed timestamp now (the leader also does this on its own every
    /// `close_interval`); returns it once applied here.
    pub async fn close_timestamp(&self) -> Result<Timestamp> {
        let (ts, response) = self
            .propose(None, Stamp::Allocate, |ts| TabletCommand::Close { ts })
            .await?;
        self.expect_applied(response)?;
        Ok(ts)
    }

    /// 2PC phase one on this participant's leader: records `txn`'s writes to this tablet
    /// with a prepare timestamp this leader picks, and returns it. Safe time stays below it
    /// until the outcome is applied.
    /// Refused unless this replica still holds `under`, when given.
    pub async fn prepare(
        &self,
        under: Option<Leadership>,
        txn: locks::TxnId,
        coordinator: TabletId,
        mutations: Vec<Mutation>,
    ) -> Result<Timestamp> {
        let command = |prepare_ts| TabletCommand::Prepare {
            txn,
            coordinator,
            prepare_ts,
            mutations,
        };
        let (ts, response) = self.propose(under, Stamp::Allocate, command).await?;
        match response {
            TabletResponse::AlreadyDecided { .. } => Err(TabletError::AlreadyDecided {
                tablet: self.id,
                txn,
            }),
            other => self.expect_applied(other).map(|()| ts),
        }
    }

    /// Applies the outcome of a prepared transaction: `Some(commit_ts)` commits its writes at
    /// `commit_ts`, `None` aborts. Idempotent: a repeated outcome returns what was decided.
    pub async fn decide(
        &self,
        txn: locks::TxnId,
        outcome: Option<Timestamp>,
    ) -> Result<TabletResponse> {
        let command = |_| match outcome {
            Some(commit_ts) => TabletCommand::Commit { txn, commit_ts },
            None => TabletCommand::Abort { txn },
        };
        let stamp = Stamp::Given(outcome.unwrap_or(Timestamp::ZERO));
        Ok(self.propose(None, stamp, command).await?.1)
    }

    fn expect_applied(&self, response: TabletResponse) -> Result<()> {
        match response {
            TabletResponse::StaleTimestamp { ts, floor } => Err(TabletError::StaleTimestamp {
                tablet: self.id,
                ts,
                floor,
            }),
            TabletResponse::OutOfRange => Err(TabletError::OutOfRange { tablet: self.id }),
            _ => Ok(()),
        }
    }

    /// Proposes `command(ts)` under this leadership, in timestamp order, then waits for it to
    /// be applied. With [`Stamp::Allocate`] the leader picks `ts`; with [`Stamp::Given`] the
    /// timestamp came from elsewhere (a coordinator's commit timestamp) and later
    /// allocations start above it.
    async fn propose(
        &self,
        under: Option<Leadership>,
        stamp: Stamp,
        command: impl FnOnce(Timestamp) -> TabletCommand,
    ) -> Result<(Timestamp, TabletResponse)> {
        let leadership = self
            .raft
            .as_leader()
            .map_err(|_| self.not_leader())?
            .to_committed_leader_id();
        if under.is_some_and(|u| u != self.leadership(leadership)) {
            return Err(self.not_leader());
        }
        let (responder, applied) = ProgressResponder::complete_only();
        let ts = {
            // Held while proposing: commands enter the log in the order they were allocated.
            let mut allocator = self.allocator.lock().await;
            if allocator.leadership != Some(leadership) {
                self.inherit_floor(&mut allocator, leadership).await?;
            }
            let ts = match stamp {
                Stamp::Allocate => self.clock.now()?.latest.max(allocator.last.next()),
                Stamp::Given(ts) => ts,
            };
            allocator.last = allocator.last.max(ts);
            self.raft
                .write(command(ts))
                .with_leader(leadership)
                .responder(responder)
                .await
                .map_err(|e| self.stopped(e))?;
            ts
        };
        let outcome = applied
            .await
            .map_err(|_| TabletError::Indeterminate { tablet: self.id })?;
        match outcome {
            Ok(response) => Ok((ts, response.data)),
            Err(ClientWriteError::ForwardToLeader(_)) => Err(self.not_leader()),
            Err(ClientWriteError::LogEntryDiscarded(_)) => {
                Err(TabletError::Indeterminate { tablet: self.id })
            }
            Err(e) => Err(self.stopped(e)),
        }
    }

    /// The leadership `leader` (openraft's id of a committed leader) is, in this instance.
    fn leadership(&self, leader: CommittedLeaderIdOf<TypeConfig>) -> Leadership {
        Leadership {
            term: leader.term,
            leader: leader.node_id,
            incarnation: self.incarnation,
        }
    }

    /// Waits until everything in the log when this leadership began is applied, then starts
    /// the allocator above the floor it left.
    ///
    /// ReadIndex covers what was committed; a leader that leads again in the same term (a
    /// restart) may also hold entries it appended before, not yet committed, which commit
    /// under it now: a write or an outcome from before the restart. Reads and lock tables
    /// of this leadership must see them, so it waits for the whole log.
    async fn inherit_floor(
        &self,
        allocator: &mut Allocator,
        leadership: CommittedLeaderIdOf<TypeConfig>,
    ) -> Result<()> {
        let last_log = self.raft.metrics().borrow_watched().last_log_index;
        self.raft
            .ensure_linearizable(ReadPolicy::ReadIndex)
            .await
            .map_err(|e| match e.forward_to_leader() {
                Some(_) => self.not_leader(),
                None => self.stopped(e),
            })?;
        if let Some(last_log) = last_log {
            let mut progress = self.progress.clone();
            let applied = progress.wait_for(|p| p.applied_index >= Some(last_log));
            match tokio::time::timeout(INHERIT_TIMEOUT, applied).await {
                Ok(Ok(_)) => {}
                Ok(Err(_)) => return Err(self.stopped("the state machine is gone")),
                Err(_) => return Err(self.not_leader()),
            }
        }
        allocator.last = allocator.last.max(self.progress.borrow().paxos_safe_ts);
        allocator.leadership = Some(leadership);
        Ok(())
    }

    /// Makes this replica ready to act as leader (everything committed before its term is
    /// applied here, and its allocator starts above it) and returns its leadership. Locks
    /// taken under one leadership mean nothing under another.
    pub async fn ensure_leading(&self) -> Result<Leadership> {
        let leader = self
            .raft
            .as_leader()
            .map_err(|_| self.not_leader())?
            .to_committed_leader_id();
        let mut allocator = self.allocator.lock().await;
        if allocator.leadership != Some(leader) {
            self.inherit_floor(&mut allocator, leader).await?;
        }
        Ok(self.leadership(leader))
    }

    /// The latest applied value of `key`, read at the leader. Only meaningful under a lock
    /// that keeps writers out (two-phase locking), which is why it reads no timestamp.
    pub async fn read_latest(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.ensure_leading().await?;
        self.check_key(key)?;
        Ok(self.mvcc.get(key, Timestamp::MAX)?)
    }

    /// The keys this tablet holds (as applied on this replica).
    pub fn range(&self) -> KeyRange {
        self.range.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn check_key(&self, key: &[u8]) -> Result<()> {
        if self
            .range
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(key)
        {
            Ok(())
        } else {
            Err(TabletError::OutOfRange { tablet: self.id })
        }
    }

    fn check_range(&self, range: &KeyRange) -> Result<()> {
        let held = self.range.read().unwrap_or_else(|e| e.into_inner());
        let below_end = match (&held.end, &range.end) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(held_end), Some(end)) => end <= held_end,
        };
        if range.start >= held.start && below_end {
            Ok(())
        } else {
            Err(TabletError::OutOfRange { tablet: self.id })
        }
    }

    /// Splits this tablet at `at` (proposed by its leader, refused unless it still holds
    /// `under`): keys from `at` on move to the new tablet `child`, which every replica of
    /// this one creates as it applies the split. Returns the child (the earlier one if this
    /// tablet was already split at `at`).
    pub async fn split(
        &self,
        under: Option<Leadership>,
        at: Vec<u8>,
        child: TabletId,
    ) -> Result<TabletId> {
        let command = |_| TabletCommand::Split { at, child };
        let (_, response) = self
            .propose(under, Stamp::Given(Timestamp::ZERO), command)
            .await?;
        match response {
            TabletResponse::Split { child } => Ok(child),
            TabletResponse::SplitRefused { reason } => Err(TabletError::SplitRefused {
                tablet: self.id,
                reason,
            }),
            other => Err(TabletError::SplitRefused {
                tablet: self.id,
                reason: format!("unexpected response {other:?}"),
            }),
        }
    }

    /// The latest applied rows of `range` at the leader, under a range lock.
    pub async fn scan_latest(&self, range: &KeyRange, limit: usize) -> Result<ScanPage> {
        self.ensure_leading().await?;
        self.check_range(range)?;
        Ok(self
            .mvcc
            .scan(range, Timestamp::MAX, limit, ScanDirection::Forward)?)
    }

    /// The prepared, undecided transactions applied on this replica.
    pub async fn prepared_txns(&self) -> Result<BTreeMap<locks::TxnId, PreparedTxn>> {
        self.raft
            .with_state_machine(|sm| {
                let prepared = sm.prepared();
                Box::pin(async move { prepared })
            })
            .await
            .map_err(|e| self.stopped(e))
    }

    /// The outcome recorded here for `txn`: `Some(Some(commit_ts))`, `Some(None)` for an
    /// abort, `None` if undecided or unknown.
    pub async fn decided(&self, txn: locks::TxnId) -> Result<Option<Option<Timestamp>>> {
        self.raft
            .with_state_machine(move |sm| {
                let decided = sm.decided(txn);
                Box::pin(async move { decided })
            })
            .await
            .map_err(|e| self.stopped(e))
    }

    /// The Raft term this replica is in (cheap: no metrics copy).
    pub fn term(&self) -> u64 {
        self.raft.metrics().borrow_watched().current_term
    }

    /// This replica's apply progress: safe times and prepared transactions.
    pub fn progress(&self) -> Progress {
        *self.progress.borrow()
    }

    /// This replica's `t_safe`: reads at or below it are served here without locks.
    pub fn safe_ts(&self) -> Timestamp {
        self.progress.borrow().safe_ts
    }

    /// Waits up to `timeout` for this replica's safe time to reach `ts`.
    pub async fn wait_safe(&self, ts: Timestamp, timeout: Duration) -> Result<()> {
        let mut progress = self.progress.clone();
        let reached = tokio::time::timeout(timeout, progress.wait_for(|p| p.safe_ts >= ts)).await;
        match reached {
            Ok(Ok(_)) => Ok(()),
            _ => {
                let progress = self.progress();
                Err(TabletError::NotYetSafe {
                    tablet: self.id,
                    node: self.node,
                    ts,
                    safe: progress.safe_ts,
                    paxos_safe: progress.paxos_safe_ts,
                    prepared: progress.prepared,
                })
            }
        }
    }

    /// Reads `key` at `ts` on this replica, waiting up to `timeout` for `ts` to become safe.
    pub async fn read(
        &self,
        key: &[u8],
        ts: Timestamp,
        timeout: Duration,
    ) -> Result<Option<Vec<u8>>> {
        self.wait_safe(ts, timeout).await?;
        self.check_key(key)?;
        Ok(self.mvcc.get(key, ts)?)
    }

    /// Scans on this replica at `ts`, waiting up to `timeout` for `ts` to become safe.
    pub async fn scan(
        &self,
        range: &KeyRange,
        ts: Timestamp,
        limit: usize,
        direction: ScanDirection,
        timeout: Duration,
    ) -> Result<ScanPage> {
        self.wait_safe(ts, timeout).await?;
        self.check_range(range)?;
        Ok(self.mvcc.scan(range, ts, limit, direction)?)
    }

    /// Adds `node` as a voter: first as a learner that catches up, then promoted.
    pub async fn add_replica(&self, node: NodeId, address: &str) -> Result<()> {
        let membership = |e: &dyn std::fmt::Display| TabletError::Membership {
            tablet: self.id,
            reason: e.to_string(),
        };
        self.settle_membership().await?;
        self.raft
            .add_learner(node, BasicNode::new(address), true)
            .await
            .map_err(|e| membership(&e))?;
        let mut voters = self.voters();
        voters.insert(node);
        self.raft
            .change_membership(voters, false)
            .await
            .map_err(|e| membership(&e))?;
        Ok(())
    }

    /// Waits until this leader has committed an entry of its own term, and with it every
    /// earlier membership change: openraft refuses a change while another is uncommitted.
    async fn settle_membership(&self) -> Result<()> {
        self.raft
            .ensure_linearizable(ReadPolicy::ReadIndex)
            .await
            .map_err(|e| match e.forward_to_leader() {
                Some(_) => self.not_leader(),
                None => self.stopped(e),
            })?;
        Ok(())
    }

    /// Removes `node` from the group.
    pub async fn remove_replica(&self, node: NodeId) -> Result<()> {
        self.settle_membership().await?;
        let mut voters = self.voters();
        voters.remove(&node);
        self.raft
            .change_membership(voters, false)
            .await
            .map_err(|e| TabletError::Membership {
                tablet: self.id,
                reason: e.to_string(),
            })?;
        Ok(())
    }

    fn voters(&self) -> BTreeSet<NodeId> {
        self.raft
            .metrics()
            .borrow_watched()
            .membership_config
            .membership()
            .voter_ids()
            .collect()
    }

    /// Asks Raft to hand leadership to `to`.
    pub async fn transfer_leadership(&self, to: NodeId) -> Result<()> {
        self.raft
            .trigger()
            .transfer_leader(to)
            .await
            .map_err(|e| self.stopped(e))
    }

    /// Makes this replica start an election now.
    pub async fn campaign(&self) -> Result<()> {
        self.raft
            .trigger()
            .elect(false)
            .await
            .map_err(|e| self.stopped(e))
    }

    /// Builds a snapshot now and purges the log behind it.
    pub async fn snapshot(&self) -> Result<()> {
        self.raft
            .trigger()
            .snapshot()
            .await
            .map_err(|e| self.stopped(e))
    }

    /// The replica's view of the group.
    pub fn metrics(&self) -> TabletMetrics {
        let raft = self.raft.metrics().borrow_watched().clone();
        let progress = *self.progress.borrow();
        TabletMetrics {
            tablet: self.id,
            node: self.node,
            leader: raft.current_leader,
            term: raft.current_term,
            applied_index: progress.applied_index,
            safe_ts: progress.safe_ts,
            paxos_safe_ts: progress.paxos_safe_ts,
            prepared: progress.prepared,
            safe_lag: self
                .clock
                .now()
                .map(|now| now.latest.saturating_duration_since(progress.safe_ts))
                .unwrap_or_default(),
            stale_rejections: progress.stale_rejections,
            voters: raft.membership_config.membership().voter_ids().collect(),
        }
    }

    /// The first log index not yet purged, and the snapshot's last index, if any.
    pub fn log_bounds(&self) -> (Option<u64>, Option<u64>) {
        let raft = self.raft.metrics().borrow_watched().clone();
        (
            raft.purged.map(|id| id.index),
            raft.snapshot.map(|id| id.index),
        )
    }

    /// Stops this replica's Raft group but leaves the replica open, as a fatal error inside
    /// openraft would. The node's supervisor notices and reopens the replica from storage;
    /// tests use this to exercise that path.
    pub async fn halt_raft(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(tablet_id = %self.id, error = %e, "raft shutdown failed");
        }
    }

    /// Stops the replica's Raft group and background tasks.
    pub async fn shutdown(&self) {
        if let Some(closer) = self.closer.lock().unwrap_or_else(|e| e.into_inner()).take() {
            closer.abort();
        }
        self.halt_raft().await;
    }

    pub(crate) fn initial_members(
        members: &BTreeMap<NodeId, String>,
    ) -> BTreeMap<NodeId, BasicNode> {
        members
            .iter()
            .map(|(id, addr)| (*id, BasicNode::new(addr)))
            .collect()
    }
}
