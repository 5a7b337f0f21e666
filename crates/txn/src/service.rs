//! [`TxnService`]: the transaction layer on one node. On the tablets this node leads it runs
//! the lock tables (two-phase locking with wound-wait), prepares and applies outcomes
//! (participant), and drives two-phase commit with commit-wait (coordinator). A background
//! task resolves prepared transactions whose coordinator went silent and aborts transactions
//! whose client vanished.
//!
//! # Commit-wait
//!
//! A read-write transaction's commit is acknowledged, and its locks released, only once
//! `TT.after(commit_ts)` holds. With `commit_ts > TT.now().latest` at the commit request, a
//! transaction that starts after the acknowledgement (anywhere) reads a `now().latest`
//! above `commit_ts`: external consistency. The wait runs alongside the Raft round that
//! logs the commit, not after it.
//!
//! # Locks and leaders
//!
//! Lock tables live in the leader's memory. Locks taken under one leadership are void under
//! the next, so every transaction records the leadership it locked under, and an unprepared
//! transaction whose tablet changed leader aborts. Prepared transactions keep their locks:
//! a new leader rebuilds them from the prepared records in its state machine.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use locks::{Acquire, Event, LockMode, LockTable, LockTarget, Priority, RequestId, TxnId};
use storage::KeyRange;
use tablet::{Leadership, Mutation, Node, NodeId, Tablet, TabletId, TabletResponse};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use truetime::{Clock, Timestamp};

use crate::error::{AbortReason, Result, TxnError};
use crate::{Directory, Peer, TxnMetrics};

/// How long a node remembers that it aborted a transaction. A client still using an
/// aborted transaction after this long could take fresh locks under the old id; clients
/// give up on a transaction well before (they retry aborted ones under new ids).
const ABORTED_RETENTION: Duration = Duration::from_secs(600);

/// Tuning of the transaction layer.
#[derive(Debug, Clone)]
pub struct TxnConfig {
    /// Longest wait for one lock before the transaction aborts.
    pub lock_wait_timeout: Duration,
    /// A transaction with no activity for this long (and not prepared) is presumed
    /// abandoned by its client: it is aborted and its locks released.
    pub keepalive_timeout: Duration,
    /// A prepared transaction without an outcome for this long asks its coordinator.
    pub inquiry_after: Duration,
    /// Commit-wait. Always true in a real deployment; tests switch it off only to show that
    /// the external-consistency checker notices.
    pub commit_wait: bool,
}

impl Default for TxnConfig {
    fn default() -> Self {
        TxnConfig {
            lock_wait_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(10),
            inquiry_after: Duration::from_secs(2),
            commit_wait: true,
        }
    }
}

/// A tablet taking part in a transaction's commit.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Participant {
    /// The transaction's writes there (empty if it only read there).
    pub mutations: Vec<Mutation>,
    /// The leadership its reads there were locked under, if it read there.
    pub read_under: Option<Leadership>,
}

/// A new leader's lock table: the exclusive locks of the prepared transactions it inherits.
fn rebuild_prepared_locks(prepared: BTreeMap<TxnId, tablet::PreparedTxn>) -> LockTable {
    let mut table = LockTable::new();
    for (txn, p) in prepared {
        let priority = Priority {
            first_start: p.prepare_ts,
            tiebreak: txn.0,
        };
        for m in p.mutations {
            table.acquire(txn, priority, LockTarget::Key(m.key), LockMode::Exclusive);
        }
        table.set_prepared(txn);
    }
    table
}

/// One tablet's locks under one leadership.
#[derive(Debug)]
struct TabletLocks {
    leadership: Leadership,
    table: LockTable,
    waiters: HashMap<RequestId, (TxnId, oneshot::Sender<()>)>,
}

/// What this node knows of a transaction.
#[derive(Debug)]
struct TxnInfo {
    last_seen: Instant,
    wounded_by: Option<TxnId>,
    /// The leadership each tablet's locks were taken under.
    locked: HashMap<TabletId, Leadership>,
    prepared: HashSet<TabletId>,
    /// The tablet recording the outcome, once the transaction prepares here.
    coordinator: Option<TabletId>,
    /// Set on the coordinator while it drives two-phase commit.
    coordinating: bool,
    /// The participants, on the coordinator.
    participants: Vec<TabletId>,
    /// An older transaction asked for this one's abort (wound-wait against a prepared
    /// holder); honoured unless the commit point was already reached.
    abort_requested: Option<TxnId>,
    /// The coordinator reached the commit point: too late to abort.
    committing: bool,
}

impl TxnInfo {
    fn new() -> Self {
        TxnInfo {
            last_seen: Instant::now(),
            wounded_by: None,
            locked: HashMap::new(),
            prepared: HashSet::new(),
            coordinator: None,
            coordinating: false,
            participants: Vec::new(),
            abort_requested: None,
            committing: false,
        }
    }
}

/// The transaction layer of one node.
#[derive(Debug)]
pub struct TxnService {
    node: Arc<Node>,
    clock: Arc<dyn Clock>,
    config: TxnConfig,
    directory: Weak<dyn Directory>,
    tablets: Mutex<HashMap<TabletId, TabletLocks>>,
    txns: Mutex<HashMap<TxnId, TxnInfo>>,
    /// Transactions aborted here (by their client, a failed commit, or keepalive expiry),
    /// and when: a later request of one is refused, because the locks it took before the
    /// abort are gone. Kept for [`ABORTED_RETENTION`].
    aborted: Mutex<HashMap<TxnId, (AbortReason, Instant)>>,
    metrics: TxnMetrics,
    background: Mutex<Option<JoinHandle<()>>>,
    /// This service, for calls that hand it to spawned tasks or to itself as a [`Peer`].
    me: Weak<TxnService>,
}

/// How long a coordinator whose commit-wait failed keeps waiting for its clock before it
/// lets others see the commit.
const OUTWAIT_LIMIT: Duration = Duration::from_secs(60);

/// Runs a commit in its own task and waits for it. A commit must not stop halfway because
/// its caller went away (a client that timed out drops the request's future): a coordinator
/// cut off between PREPARE and its decision would stay "coordinating" forever, and its
/// participants, told to wait, would hold their locks and safe time with it.
async fn run_to_end(
    commit: impl std::future::Future<Output = Result<Timestamp>> + Send + 'static,
) -> Result<Timestamp> {
    tokio::spawn(commit).await.unwrap_or_else(|e| {
        Err(TxnError::Indeterminate(format!(
            "the commit's task failed: {e}"
        )))
    })
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl TxnService {
    /// The service of `node`, routing through `directory`, with its recovery task running.
    pub fn start(
        node: Arc<Node>,
        clock: Arc<dyn Clock>,
        config: TxnConfig,
        directory: Weak<dyn Directory>,
    ) -> Arc<Self> {
        let service = Arc::new_cyclic(|me| TxnService {
            me: me.clone(),
            node,
            clock,
            config,
            directory,
            tablets: Mutex::new(HashMap::new()),
            txns: Mutex::new(HashMap::new()),
            aborted: Mutex::new(HashMap::new()),
            metrics: TxnMetrics::default(),
            background: Mutex::new(None),
        });
        let weak = Arc::downgrade(&service);
        let period = service.config.inquiry_after / 2;
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(period.max(Duration::from_millis(10)));
            loop {
                ticker.tick().await;
                let Some(service) = weak.upgrade() else {
                    return;
                };
                service.recover().await;
            }
        });
        *lock(&service.background) = Some(task);
        service
    }

    /// Stops the recovery task.
    pub fn stop(&self) {
        if let Some(task) = lock(&self.background).take() {
            task.abort();
        }
    }

    /// The node this service runs on.
    pub fn node_id(&self) -> NodeId {
        self.node.id()
    }

    /// The replica of `tablet` on this node, if any.
    pub fn tablet(&self, tablet: TabletId) -> Option<Arc<Tablet>> {
        self.node.tablet(tablet).ok()
    }

    /// Counters of this node's transaction layer.
    pub fn metrics(&self) -> &TxnMetrics {
        &self.metrics
    }

    pub(crate) fn me(&self) -> Result<Arc<TxnService>> {
        self.me
            .upgrade()
            .ok_or_else(|| TxnError::Unavailable("transaction service stopped".into()))
    }

    fn directory(&self) -> Result<Arc<dyn Directory>> {
        self.directory
            .upgrade()
            .ok_or_else(|| TxnError::Unavailable("no directory".into()))
    }

    /// This node's replica of `tablet`, as leader, with its lock table current for this
    /// leadership (rebuilt from prepared transactions after a leader change).
    async fn leading(&self, id: TabletId) -> Result<(Arc<Tablet>, Leadership)> {
        let tablet = self.node.tablet(id)?;
        let leadership = tablet.ensure_leading().await?;
        let current = lock(&self.tablets).get(&id).map(|l| l.leadership);
        if current != Some(leadership) {
            let prepared = tablet.prepared_txns().await?;
            let mut tablets = lock(&self.tablets);
            match tablets.get(&id).map(|l| l.leadership) {
                Some(now) if now == leadership => {}
                // Exactly one table per leadership, and never back to an older one: a table
                // replaced while a transaction holds locks in it would lose them silently.
                Some(now) if now.term > leadership.term => {
                    return Err(TxnError::Unavailable(format!("{id}: leadership moved on")));
                }
                _ => {
                    let table = rebuild_prepared_locks(prepared);
                    tablets.insert(
                        id,
                        TabletLocks {
                            leadership,
                            table,
                            waiters: HashMap::new(),
                        },
                    );
                }
            }
        }
        Ok((tablet, leadership))
    }

    /// Registers activity of `txn`; fails if it has been wounded.
    fn touch(&self, txn: TxnId) -> Result<()> {
        if let Some((reason, _)) = lock(&self.aborted).get(&txn) {
            return Err(TxnError::Aborted(reason.clone()));
        }
        let mut txns = lock(&self.txns);
        let info = txns.entry(txn).or_insert_with(TxnInfo::new);
        info.last_seen = Instant::now();
        match info.wounded_by {
            Some(by) => Err(TxnError::Aborted(AbortReason::Wounded { by })),
            None => Ok(()),
        }
    }

    /// Records that `txn` locks on `tablet` under `leadership`; fails if it already held
    /// locks there under another leadership (they are gone).
    fn note_leadership(&self, txn: TxnId, tablet: TabletId, leadership: Leadership) -> Result<()> {
        let mut txns = lock(&self.txns);
        let info = txns.entry(txn).or_insert_with(TxnInfo::new);
        match info.locked.insert(tablet, leadership) {
            Some(before) if before != leadership => {
                Err(TxnError::Aborted(AbortReason::LeaderChanged))
            }
            _ => Ok(()),
        }
    }

    /// Takes a lock for `txn`, waiting (bounded) if needed.
    async fn lock(
        &self,
        txn: TxnId,
        priority: Priority,
        id: TabletId,
        target: LockTarget,
        mode: LockMode,
    ) -> Result<(Arc<Tablet>, Leadership)> {
        self.touch(txn)?;
        let (tablet, leadership) = self.leading(id).await?;
        self.note_leadership(txn, id, leadership)?;
        let (outcome, events, waiter) = {
            let mut tablets = lock(&self.tablets);
            let locks = tablets
                .get_mut(&id)
                .ok_or_else(|| TxnError::Unavailable(format!("{id}: leadership moved")))?;
            let (outcome, events) = locks.table.acquire(txn, priority, target.clone(), mode);
            let waiter = match outcome {
                Acquire::Waiting(request) => {
                    let (tx, rx) = oneshot::channel();
                    locks.waiters.insert(request, (txn, tx));
                    Some(rx)
                }
                _ => None,
            };
            (outcome, events, waiter)
        };
        self.handle_events(id, events);
        match (outcome, waiter) {
            (Acquire::Wounded { by }, _) => Err(TxnError::Aborted(AbortReason::Wounded { by })),
            (_, None) => Ok((tablet, leadership)),
            (_, Some(mut granted)) => {
                let started = Instant::now();
                let slow = self.config.lock_wait_timeout / 4;
                let mut waited = tokio::time::timeout(slow, &mut granted).await;
                if waited.is_err() {
                    self.log_slow_wait(txn, id, &target, mode);
                    let rest = self.config.lock_wait_timeout - slow;
                    waited = tokio::time::timeout(rest, &mut granted).await;
                }
                self.metrics.record_lock_wait(started.elapsed());
                match waited {
                    Ok(Ok(())) => Ok((tablet, leadership)),
                    Ok(Err(_)) => Err(TxnError::Aborted(self.abort_reason(txn))),
                    Err(_) => {
                        self.release_unprepared(txn);
                        Err(TxnError::Aborted(AbortReason::LockTimeout))
                    }
                }
            }
        }
    }

    /// Says who holds up a long lock wait, and what this node knows of them.
    fn log_slow_wait(&self, txn: TxnId, id: TabletId, target: &LockTarget, mode: LockMode) {
        let blockers = lock(&self.tablets)
            .get(&id)
            .map(|l| l.table.blockers(txn, target, mode))
            .unwrap_or_default();
        let txns = lock(&self.txns);
        let known: Vec<String> = blockers
            .iter()
            .map(|b| match txns.get(b) {
                Some(i) => format!(
                    "{b:?} (idle {:?}, prepared on {:?}, coordinator {:?}, coordinating {}, \
                     wounded by {:?}, abort requested by {:?}, committing {})",
                    i.last_seen.elapsed(),
                    i.prepared,
                    i.coordinator,
                    i.coordinating,
                    i.wounded_by,
                    i.abort_requested,
                    i.committing,
                ),
                None => format!("{b:?} (unknown here)"),
            })
            .collect();
        tracing::warn!(?txn, tablet_id = %id, node_id = %self.node.id(), ?mode, blockers = ?known, "slow lock wait");
    }

    fn abort_reason(&self, txn: TxnId) -> AbortReason {
        match lock(&self.txns).get(&txn).and_then(|i| i.wounded_by) {
            Some(by) => AbortReason::Wounded { by },
            None => AbortReason::Expired,
        }
    }

    /// Carries out lock-table decisions: wakes granted waiters; aborts wounded transactions
    /// here (releasing their unprepared locks, which may grant more).
    fn handle_events(&self, tablet: TabletId, events: Vec<Event>) {
        let mut pending: Vec<(TabletId, Event)> = events.into_iter().map(|e| (tablet, e)).collect();
        while let Some((tablet, event)) = pending.pop() {
            match event {
                Event::Granted { request, .. } => {
                    let waiter = lock(&self.tablets)
                        .get_mut(&tablet)
                        .and_then(|l| l.waiters.remove(&request));
                    if let Some((_, tx)) = waiter {
                        let _ = tx.send(());
                    }
                }
                Event::AskToAbort { txn, by } => self.ask_to_abort(txn, by),
                Event::Wounded { txn, by } => {
                    self.metrics.record_abort(&AbortReason::Wounded { by });
                    if let Some(info) = lock(&self.txns).get_mut(&txn) {
                        info.wounded_by = Some(by);
                    }
                    pending.extend(self.release_unprepared_events(txn));
                }
            }
        }
    }

    /// Asks the coordinator of prepared `txn` to abort it for the older `by`.
    fn ask_to_abort(&self, txn: TxnId, by: TxnId) {
        let coordinator = lock(&self.txns).get(&txn).and_then(|i| i.coordinator);
        tracing::debug!(
            ?txn,
            ?by,
            ?coordinator,
            "asking a prepared transaction to abort"
        );
        let (Some(coordinator), Some(directory)) = (coordinator, self.directory.upgrade()) else {
            return; // a single-tablet commit in flight, or unknown here: it finishes on its own
        };
        tokio::spawn(async move {
            if let Some(service) = directory.leader(coordinator) {
                let _ = service.request_abort(txn, by).await;
            }
        });
    }

    /// On the coordinator: aborts `txn` for the older `by` unless it reached its commit
    /// point, cancelling its lock waits at every participant so its prepare fails fast.
    pub async fn request_abort(&self, txn: TxnId, by: TxnId) {
        let participants = {
            let mut txns = lock(&self.txns);
            match txns.get_mut(&txn) {
                Some(info) if info.coordinating && !info.committing => {
                    info.abort_requested = Some(by);
                    info.participants.clone()
                }
                _ => return,
            }
        };
        let Ok(directory) = self.directory() else {
            return;
        };
        for tablet in participants {
            if let Some(service) = directory.leader(tablet) {
                let _ = service.wound(txn, by).await;
            }
        }
    }

    /// Marks `txn` wounded here and releases its unprepared locks and waits on this node.
    pub fn wound_local(&self, txn: TxnId, by: TxnId) {
        if let Some(info) = lock(&self.txns).get_mut(&txn) {
            info.wounded_by.get_or_insert(by);
        }
        self.release_unprepared(txn);
    }

    /// Releases `txn`'s locks on every tablet of this node where it is not prepared, and
    /// cancels its waits (its waiters see the sender dropped).
    fn release_unprepared_events(&self, txn: TxnId) -> Vec<(TabletId, Event)> {
        let prepared = lock(&self.txns)
            .get(&txn)
            .map(|i| i.prepared.clone())
            .unwrap_or_default();
        let mut events = Vec::new();
        for (id, locks) in lock(&self.tablets).iter_mut() {
            if prepared.contains(id) {
                continue;
            }
            events.extend(locks.table.release(txn).into_iter().map(|e| (*id, e)));
            locks.waiters.retain(|_, (t, _)| *t != txn);
        }
        events
    }

    fn release_unprepared(&self, txn: TxnId) {
        let events = self.release_unprepared_events(txn);
        for (tablet, event) in events {
            self.handle_events(tablet, vec![event]);
        }
    }

    /// Releases `txn`'s locks on one tablet (after its outcome there).
    fn release_on(&self, txn: TxnId, tablet: TabletId) {
        let events = match lock(&self.tablets).get_mut(&tablet) {
            Some(locks) => {
                locks.waiters.retain(|_, (t, _)| *t != txn);
                locks.table.release(txn)
            }
            None => Vec::new(),
        };
        self.handle_events(tablet, events);
        let mut txns = lock(&self.txns);
        if let Some(info) = txns.get_mut(&txn) {
            info.locked.remove(&tablet);
            info.prepared.remove(&tablet);
            if info.locked.is_empty() && !info.coordinating {
                txns.remove(&txn);
            }
        }
    }

    /// Fails while this node's clock cannot bound the time (fenced, or unsynced): such a
    /// node serves no reads, so a client whose reads must be ordered by time never depends
    /// on it.
    pub(crate) fn serving(&self) -> Result<()> {
        self.clock.now().map(|_| ()).map_err(TxnError::from)
    }

    /// Reads `key` at the leader of `tablet` under a shared lock.
    pub async fn read(
        &self,
        txn: TxnId,
        priority: Priority,
        tablet: TabletId,
        key: &[u8],
    ) -> Result<(Option<Vec<u8>>, Leadership)> {
        self.serving()?;
        let target = LockTarget::key(key);
        let (replica, leadership) = self
            .lock(txn, priority, tablet, target, LockMode::Shared)
            .await?;
        Ok((replica.read_latest(key).await?, leadership))
    }

    /// Scans `range` at the leader of `tablet` under a shared range lock.
    pub async fn scan(
        &self,
        txn: TxnId,
        priority: Priority,
        tablet: TabletId,
        range: KeyRange,
        limit: usize,
    ) -> Result<(Vec<(Vec<u8>, Vec<u8>)>, Leadership)> {
        self.serving()?;
        let target = LockTarget::Range {
            start: range.start.clone(),
            end: range.end.clone(),
        };
        let (replica, leadership) = self
            .lock(txn, priority, tablet, target, LockMode::Shared)
            .await?;
        Ok((replica.scan_latest(&range, limit).await?.rows, leadership))
    }

    /// Takes exclusive locks on every key `mutations` touch, checks the leadership the
    /// transaction's locks here were taken under still holds, and marks the transaction
    /// committing here: from then on no wound can strip its locks while its PREPARE or
    /// commit is in flight (Spanner wounds only transactions that have not begun to commit).
    async fn lock_writes(
        &self,
        txn: TxnId,
        priority: Priority,
        id: TabletId,
        mutations: &[Mutation],
        read_under: Option<Leadership>,
    ) -> Result<(Arc<Tablet>, Leadership)> {
        for m in mutations {
            self.lock(
                txn,
                priority,
                id,
                LockTarget::key(m.key.clone()),
                LockMode::Exclusive,
            )
            .await?;
        }
        self.touch(txn)?;
        let (tablet, leadership) = self.leading(id).await?;
        if read_under.is_some_and(|r| r != leadership) {
            // The shared locks behind the transaction's reads died with that leadership
            // (possibly with its node, and this node's record of them).
            return Err(TxnError::Aborted(AbortReason::LeaderChanged));
        }
        self.note_leadership(txn, id, leadership)?;
        let marked = match lock(&self.tablets).get_mut(&id) {
            Some(locks) if locks.leadership == leadership => locks.table.try_set_prepared(txn),
            _ => Err(None),
        };
        match marked {
            Ok(()) => {
                if let Some(info) = lock(&self.txns).get_mut(&txn) {
                    info.prepared.insert(id);
                }
                Ok((tablet, leadership))
            }
            Err(Some(by)) => Err(TxnError::Aborted(AbortReason::Wounded { by })),
            Err(None) => Err(TxnError::Aborted(AbortReason::LeaderChanged)),
        }
    }

    /// Waits until `TT.after(ts)` (unless the test-only switch disabled commit-wait).
    async fn commit_wait(&self, ts: Timestamp) -> Result<()> {
        if !self.config.commit_wait {
            return Ok(());
        }
        let started = Instant::now();
        let waited = self.clock.wait_until_after(ts).await;
        self.metrics.record_commit_wait(started.elapsed());
        waited.map(|_| ()).map_err(|e| {
            TxnError::Indeterminate(format!("committed at {ts} but commit-wait failed: {e}"))
        })
    }

    /// Waits until the clock shows `ts` has passed, through a fence, for at most
    /// [`OUTWAIT_LIMIT`] (far longer than any timestamp a node assigns can be ahead of
    /// the true time).
    async fn outwait(&self, ts: Timestamp) {
        let deadline = Instant::now() + OUTWAIT_LIMIT;
        while Instant::now() < deadline {
            if let Ok(true) = self.clock.after(ts) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tracing::warn!(%ts, "the clock never showed a commit timestamp passing; releasing anyway");
    }

    /// After a commit at `ts` is logged and waited out: if this node's clock was fenced
    /// meanwhile (a follower saw its timestamps from the future), commit-wait may have ended
    /// before `ts` passed elsewhere, so the commit is not acknowledged. It stands; the client
    /// learns its outcome is unknown.
    fn acknowledge(&self, ts: Timestamp) -> Result<Timestamp> {
        if !self.config.commit_wait {
            return Ok(ts);
        }
        self.clock.now().map(|_| ts).map_err(|e| {
            TxnError::Indeterminate(format!(
                "committed at {ts}, but this node's clock was fenced before the acknowledgement: {e}"
            ))
        })
    }

    /// Commits a transaction that touched only `tablet`: locks, one Raft entry at a
    /// timestamp the leader picks, commit-wait, release. No two-phase commit. Runs to the
    /// end even if the caller goes away (see [`run_to_end`]).
    pub async fn commit_single(
        &self,
        txn: TxnId,
        priority: Priority,
        id: TabletId,
        mutations: Vec<Mutation>,
        read_under: Option<Leadership>,
    ) -> Result<Timestamp> {
        let me = self.me()?;
        run_to_end(async move {
            me.commit_single_here(txn, priority, id, mutations, read_under)
                .await
        })
        .await
    }

    async fn commit_single_here(
        &self,
        txn: TxnId,
        priority: Priority,
        id: TabletId,
        mutations: Vec<Mutation>,
        read_under: Option<Leadership>,
    ) -> Result<Timestamp> {
        let locked = self
            .lock_writes(txn, priority, id, &mutations, read_under)
            .await;
        let (tablet, leadership) = match locked {
            Ok(locked) => locked,
            Err(e) => {
                self.abort(txn).await;
                return Err(e);
            }
        };
        let written = tablet.write_under(Some(leadership), mutations).await;
        let result = match written {
            Ok(ts) => self
                .commit_wait(ts)
                .await
                .and_then(|()| self.acknowledge(ts)),
            Err(e) => {
                // It may have been applied at a timestamp we do not know: outwait any
                // timestamp it could have had before letting others see past it.
                if let Ok(now) = self.clock.now() {
                    let _ = self.commit_wait(now.latest).await;
                }
                Err(e.into())
            }
        };
        self.release_on(txn, id);
        self.forget(txn);
        if result.is_ok() {
            self.metrics.record_commit();
        }
        result
    }

    /// 2PC phase one here: exclusive locks on the writes, then `Prepare` logged through Raft
    /// at a prepare timestamp this leader picks.
    pub async fn prepare(
        &self,
        txn: TxnId,
        priority: Priority,
        id: TabletId,
        coordinator: TabletId,
        mutations: Vec<Mutation>,
        read_under: Option<Leadership>,
    ) -> Result<Timestamp> {
        let started = Instant::now();
        self.touch(txn)?;
        if let Some(info) = lock(&self.txns).get_mut(&txn) {
            // Known before the locks are: a wound against the prepared holder goes there.
            info.coordinator = Some(coordinator);
        }
        let (tablet, leadership) = self
            .lock_writes(txn, priority, id, &mutations, read_under)
            .await?;
        let prepare_ts = tablet
            .prepare(Some(leadership), txn, coordinator, mutations)
            .await?;
        self.metrics.record_prepare(started.elapsed());
        Ok(prepare_ts)
    }

    /// Logs the outcome of `txn` on `tablet` (commit at `Some(ts)`, abort on `None`) and
    /// releases its locks there.
    pub async fn decide(
        &self,
        txn: TxnId,
        id: TabletId,
        outcome: Option<Timestamp>,
    ) -> Result<TabletResponse> {
        // Bring the lock table up to this leadership first: a table rebuilt from the
        // prepared records after the outcome was applied would hold the transaction's locks
        // forever.
        let (tablet, _) = self.leading(id).await?;
        let response = tablet.decide(txn, outcome).await?;
        self.release_on(txn, id);
        Ok(response)
    }

    /// Aborts `txn` on this node: logs an abort where it is prepared, releases its locks.
    /// Later requests of `txn` here are refused.
    pub async fn abort(&self, txn: TxnId) {
        lock(&self.aborted)
            .entry(txn)
            .or_insert((AbortReason::Decided, Instant::now()));
        let prepared: Vec<TabletId> = lock(&self.txns)
            .get(&txn)
            .map(|i| i.prepared.iter().copied().collect())
            .unwrap_or_default();
        for id in prepared {
            if let Err(e) = self.decide(txn, id, None).await {
                // The outcome is abort either way (whoever asks the coordinator learns it), so
                // the locks go even if the abort record could not be logged here.
                tracing::debug!(?txn, tablet_id = %id, error = %e, "abort of a prepared transaction failed");
                self.release_on(txn, id);
            }
        }
        self.release_unprepared(txn);
        self.forget(txn);
    }

    fn forget(&self, txn: TxnId) {
        let mut txns = lock(&self.txns);
        if txns
            .get(&txn)
            .is_some_and(|i| i.prepared.is_empty() && !i.coordinating)
        {
            txns.remove(&txn);
        }
    }

    fn set_coordinating(&self, txn: TxnId, participants: Option<Vec<TabletId>>) {
        let mut txns = lock(&self.txns);
        let info = txns.entry(txn).or_insert_with(TxnInfo::new);
        info.coordinating = participants.is_some();
        info.participants = participants.unwrap_or_default();
    }

    /// Passes the commit point unless an abort was requested first.
    fn enter_commit_point(&self, txn: TxnId) -> Result<()> {
        let mut txns = lock(&self.txns);
        let info = txns.entry(txn).or_insert_with(TxnInfo::new);
        match info.abort_requested.or(info.wounded_by) {
            Some(by) => Err(TxnError::Aborted(AbortReason::Wounded { by })),
            None => {
                info.committing = true;
                Ok(())
            }
        }
    }

    fn is_coordinating(&self, txn: TxnId) -> bool {
        lock(&self.txns).get(&txn).is_some_and(|i| i.coordinating)
    }

    /// Runs two-phase commit for `txn` with this node as coordinator (it leads
    /// `coordinator`, one of the participants). Returns the commit timestamp once the commit
    /// is logged and commit-wait is over; participants learn the outcome afterwards. Runs to
    /// the end even if the caller goes away (see [`run_to_end`]).
    pub async fn coordinate(
        self: &Arc<Self>,
        txn: TxnId,
        priority: Priority,
        coordinator: TabletId,
        participants: BTreeMap<TabletId, Participant>,
    ) -> Result<Timestamp> {
        let me = Arc::clone(self);
        run_to_end(async move {
            me.coordinate_here(txn, priority, coordinator, participants)
                .await
        })
        .await
    }

    async fn coordinate_here(
        self: &Arc<Self>,
        txn: TxnId,
        priority: Priority,
        coordinator: TabletId,
        participants: BTreeMap<TabletId, Participant>,
    ) -> Result<Timestamp> {
        self.set_coordinating(txn, Some(participants.keys().copied().collect()));
        let result = self
            .run_two_phase_commit(txn, priority, coordinator, &participants)
            .await;
        self.set_coordinating(txn, None);
        self.forget(txn);
        match &result {
            Ok(_) => self.metrics.record_commit(),
            Err(TxnError::Aborted(reason)) => self.metrics.record_abort(reason),
            Err(_) => {}
        }
        result
    }

    async fn run_two_phase_commit(
        self: &Arc<Self>,
        txn: TxnId,
        priority: Priority,
        coordinator: TabletId,
        participants: &BTreeMap<TabletId, Participant>,
    ) -> Result<Timestamp> {
        let request_latest = self.clock.now()?.latest;
        let prepare_max = self
            .prepare_everywhere(txn, priority, coordinator, participants)
            .await?;
        if let Err(e) = self.enter_commit_point(txn) {
            self.abort_everywhere(txn, participants).await;
            return Err(e);
        }
        // commit_ts >= every prepare timestamp, and > TT.now().latest at the commit request;
        // the coordinator tablet's own prepare (allocated above everything it assigned
        // before) is among the prepare timestamps.
        let commit_ts = prepare_max.max(request_latest.next());
        debug_assert!(commit_ts > request_latest && commit_ts >= prepare_max);
        let tablet = self.node.tablet(coordinator)?;
        // The commit point: COMMIT logged in the coordinator's group. Commit-wait runs
        // alongside the Raft round, not after it.
        let started = Instant::now();
        let (logged, waited) = tokio::join!(
            tablet.decide(txn, Some(commit_ts)),
            self.commit_wait(commit_ts)
        );
        self.metrics.record_commit_round(started.elapsed());
        match logged {
            Ok(TabletResponse::Applied) => {}
            Ok(TabletResponse::AlreadyDecided {
                commit_ts: Some(ts),
            }) if ts == commit_ts => {}
            Ok(TabletResponse::AlreadyDecided { commit_ts: None }) => {
                self.abort_everywhere(txn, participants).await;
                return Err(TxnError::Aborted(AbortReason::Decided));
            }
            Ok(other) => {
                return Err(TxnError::Indeterminate(format!(
                    "unexpected commit response {other:?}"
                )));
            }
            Err(e) => return Err(TxnError::Indeterminate(e.to_string())),
        }
        // Committed. Nobody may see it before `commit_ts` has passed: if commit-wait failed
        // (the clock was fenced), the locks stay and participants hear "pending" until the
        // clock shows it has; the client hears the outcome is unknown.
        if waited.is_err() {
            self.outwait(commit_ts).await;
        }
        self.release_on(txn, coordinator);
        self.notify_commit(txn, commit_ts, coordinator, participants);
        waited?;
        self.acknowledge(commit_ts)
    }

    /// 2PC phase one: every participant's leader prepares, in parallel. Returns the largest
    /// prepare timestamp, or aborts the transaction everywhere if any participant failed.
    async fn prepare_everywhere(
        self: &Arc<Self>,
        txn: TxnId,
        priority: Priority,
        coordinator: TabletId,
        participants: &BTreeMap<TabletId, Participant>,
    ) -> Result<Timestamp> {
        let directory = self.directory()?;
        let prepares = participants.iter().map(|(id, part)| {
            let directory = Arc::clone(&directory);
            async move {
                let service: Arc<dyn Peer> = if *id == coordinator {
                    Arc::clone(self) as Arc<dyn Peer>
                } else {
                    crate::directory::settled_leader(directory.as_ref(), *id).await?
                };
                let mutations = part.mutations.clone();
                service
                    .prepare(txn, priority, *id, coordinator, mutations, part.read_under)
                    .await
            }
        });
        let mut prepare_max = Timestamp::ZERO;
        for vote in join_all(prepares).await {
            match vote {
                Ok(ts) => prepare_max = prepare_max.max(ts),
                Err(e) => {
                    self.abort_everywhere(txn, participants).await;
                    return Err(match e {
                        TxnError::Aborted(reason) => TxnError::Aborted(reason),
                        other => TxnError::Aborted(AbortReason::PrepareFailed(other.to_string())),
                    });
                }
            }
        }
        Ok(prepare_max)
    }

    /// Tells the other participants the commit outcome, retrying through leader changes; the
    /// participants' own inquiries are the fallback.
    fn notify_commit(
        self: &Arc<Self>,
        txn: TxnId,
        commit_ts: Timestamp,
        coordinator: TabletId,
        participants: &BTreeMap<TabletId, Participant>,
    ) {
        let others: Vec<TabletId> = participants
            .keys()
            .copied()
            .filter(|id| *id != coordinator)
            .collect();
        let directory = self.directory.clone();
        tokio::spawn(async move {
            for id in others {
                for _ in 0..50 {
                    let leader = directory.upgrade().and_then(|d| d.leader(id));
                    if let Some(service) = leader
                        && service.decide(txn, id, Some(commit_ts)).await.is_ok()
                    {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        });
    }

    async fn abort_everywhere(
        self: &Arc<Self>,
        txn: TxnId,
        participants: &BTreeMap<TabletId, Participant>,
    ) {
        let Ok(directory) = self.directory() else {
            return;
        };
        for id in participants.keys() {
            if let Some(service) = directory.leader(*id) {
                // Recorded on the participant, so a late prepare of this attempt is refused.
                let _ = service.decide(txn, *id, None).await;
                let _ = service.abort(txn).await;
            }
        }
    }

    /// Splits `parent` (led here) at `at` into a new tablet `child` whose group gets
    /// `members` (node to address, the parent's replicas). First takes an exclusive lock on
    /// the moving keys with the oldest possible priority: unprepared transactions holding
    /// locks there are wounded, prepared ones finish first, so no transaction that read or
    /// wrote a moving key under the parent's locks can commit afterwards at the child.
    /// Returns the child (the existing one if `parent` was already split at `at`).
    pub async fn split(
        &self,
        parent: TabletId,
        at: Vec<u8>,
        child: TabletId,
        members: BTreeMap<tablet::NodeId, String>,
    ) -> Result<TabletId> {
        let txn = TxnId(u64::MAX - child.0);
        let oldest = Priority {
            first_start: Timestamp::ZERO,
            tiebreak: 0,
        };
        let end = self.node.tablet(parent)?.range().end;
        let target = LockTarget::Range {
            start: at.clone(),
            end,
        };
        let locked = self
            .lock(txn, oldest, parent, target, LockMode::Exclusive)
            .await;
        let split = match locked {
            Ok((tablet, leadership)) => tablet.split(Some(leadership), at, child).await,
            Err(e) => {
                self.abort(txn).await;
                return Err(e);
            }
        };
        self.release_on(txn, parent);
        self.forget(txn);
        let child = split?;
        // Every replica of the parent opens the child as it applies the split; one of them
        // starts the child's group.
        let deadline = Instant::now() + Duration::from_secs(10);
        let replica = loop {
            if let Ok(replica) = self.node.tablet(child) {
                break replica;
            }
            if Instant::now() >= deadline {
                return Err(TxnError::Unavailable(format!(
                    "{child} was split off but did not open here"
                )));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        if replica.term() == 0 {
            self.node.bootstrap(child, &members).await?;
        }
        Ok(child)
    }

    /// The outcome of `txn` as recorded by the `coordinator` tablet this node leads:
    /// `Ok(None)` while it is still being decided here. With no record and nobody deciding,
    /// records an abort first (presumed abort), so a late commit cannot slip in.
    pub async fn outcome(
        &self,
        coordinator: TabletId,
        txn: TxnId,
    ) -> Result<Option<Option<Timestamp>>> {
        if self.is_coordinating(txn) {
            return Ok(None);
        }
        let (tablet, _) = self.leading(coordinator).await?;
        if let Some(outcome) = tablet.decided(txn).await? {
            return Ok(Some(outcome));
        }
        match self.decide(txn, coordinator, None).await? {
            TabletResponse::AlreadyDecided { commit_ts } => Ok(Some(commit_ts)),
            _ => Ok(Some(None)),
        }
    }

    /// One pass of recovery: resolves prepared transactions that waited too long for their
    /// outcome, and aborts unprepared transactions whose client went quiet.
    async fn recover(self: &Arc<Self>) {
        if let Err(truetime::ClockError::Fenced { reason }) = self.clock.now() {
            self.hand_over_leaderships(&reason).await;
        }
        for tablet in self.node.tablets() {
            if tablet.is_leader() {
                self.resolve_in_doubt(&tablet).await;
            }
        }
        let expired: Vec<TxnId> = lock(&self.txns)
            .iter()
            .filter(|(_, i)| {
                i.prepared.is_empty()
                    && !i.coordinating
                    && i.last_seen.elapsed() > self.config.keepalive_timeout
            })
            .map(|(txn, _)| *txn)
            .collect();
        for txn in expired {
            self.metrics.record_abort(&AbortReason::Expired);
            lock(&self.aborted).insert(txn, (AbortReason::Expired, Instant::now()));
            self.abort(txn).await;
        }
        lock(&self.aborted).retain(|_, (_, at)| at.elapsed() < ABORTED_RETENTION);
    }

    /// While this node's clock is fenced it can assign no timestamps, so every tablet it
    /// leads would stall: hand each to another replica (Raft's leadership transfer; the
    /// new leader inherits the floor and the prepared transactions).
    async fn hand_over_leaderships(&self, reason: &str) {
        for tablet in self.node.tablets() {
            if !tablet.is_leader() {
                continue;
            }
            let me = self.node.id();
            let Some(to) = tablet.metrics().voters.into_iter().find(|v| *v != me) else {
                continue;
            };
            tracing::warn!(tablet_id = %tablet.id(), to = %to, %reason, "clock fenced: handing leadership over");
            if let Err(e) = tablet.transfer_leadership(to).await {
                tracing::debug!(tablet_id = %tablet.id(), error = %e, "leadership transfer failed");
            }
        }
    }

    async fn resolve_in_doubt(self: &Arc<Self>, tablet: &Arc<Tablet>) {
        let Ok(prepared) = tablet.prepared_txns().await else {
            return;
        };
        let Ok(now) = self.clock.now() else { return };
        for (txn, p) in prepared {
            let waited = now.earliest.saturating_duration_since(p.prepare_ts);
            if waited < self.config.inquiry_after || self.is_coordinating(txn) {
                continue;
            }
            let Ok(directory) = self.directory() else {
                return;
            };
            let Some(coordinator) = directory.leader(p.coordinator) else {
                continue;
            };
            match coordinator.outcome(p.coordinator, txn).await {
                Ok(Some(outcome)) => {
                    tracing::info!(?txn, tablet_id = %tablet.id(), ?outcome, "resolved an in-doubt transaction");
                    if let Err(e) = self.decide(txn, tablet.id(), outcome).await {
                        tracing::debug!(?txn, error = %e, "applying a recovered outcome failed");
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::debug!(?txn, error = %e, "asking the coordinator failed"),
            }
        }
    }
}
