//! [`TxnClient`]: runs read-write transactions (retrying aborts with the first attempt's
//! priority) and lock-free read-only transactions.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use locks::{Priority, TxnId};
use storage::KeyRange;
use tablet::{Leadership, Mutation, TabletId};
use truetime::{Clock, Timestamp};

use crate::directory::{settle, settled_leader};
use crate::error::{Result, TxnError};
use crate::{Directory, Participant, Peer, Rows};

/// Rows fetched per page of a locking or snapshot scan.
const SCAN_PAGE: usize = 1024;

/// A client a transaction borrows, or shares when it outlives the call that began it (a
/// SQL session's transaction spans several requests).
#[derive(Debug, Clone)]
enum ClientRef<'c> {
    Borrowed(&'c TxnClient),
    Shared(Arc<TxnClient>),
}

impl std::ops::Deref for ClientRef<'_> {
    type Target = TxnClient;

    fn deref(&self) -> &TxnClient {
        match self {
            ClientRef::Borrowed(c) => c,
            ClientRef::Shared(c) => c,
        }
    }
}

/// A boxed future borrowing the transaction, for [`TxnClient::read_write`] bodies.
pub type TxnFuture<'t, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 't>>;

/// How long a read waits for a replica's safe time before giving up.
const SAFE_WAIT: Duration = Duration::from_secs(10);

/// How long a read waits at a replica other than the leader before it reads at the leader
/// instead: a replica that is catching up (restarted, partitioned, fed a snapshot) may stay
/// behind for long, while the leader can always close a timestamp.
const REPLICA_WAIT: Duration = Duration::from_secs(1);

/// The timestamp a read-only transaction or a single read reads at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadBound {
    /// Everything committed before the read began: `s_read = TT.now().latest`.
    Strong,
    /// Exactly this far in the past: `s_read = TT.now().latest - staleness`.
    ExactStaleness(Duration),
    /// The freshest timestamp the chosen replica can serve without waiting, but no older
    /// than `TT.now().latest - staleness`.
    MaxStaleness(Duration),
    /// At this timestamp.
    ReadTimestamp(Timestamp),
    /// At this timestamp or later: the replica's safe time if that is newer.
    MinReadTimestamp(Timestamp),
}

/// Which replica serves a read-only transaction's reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReplicaChoice {
    /// The leader.
    Leader,
    /// A follower if there is one (the point of snapshot reads: no leader round trip).
    Follower,
    /// Whichever replica is first (local first, in a real deployment).
    #[default]
    Any,
}

/// Starts transactions. Cheap to share.
#[derive(Debug)]
pub struct TxnClient {
    directory: Arc<dyn Directory>,
    clock: Arc<dyn Clock>,
    next_txn: AtomicU64,
    /// Total time a read-write transaction keeps retrying aborted attempts.
    pub retry_for: Duration,
}

impl TxnClient {
    /// A client routing through `directory`. Transaction ids start at `id_base` (give each
    /// client a disjoint range, e.g. `client_number << 40`).
    pub fn new(directory: Arc<dyn Directory>, clock: Arc<dyn Clock>, id_base: u64) -> Self {
        TxnClient {
            directory,
            clock,
            next_txn: AtomicU64::new(id_base),
            retry_for: Duration::from_secs(30),
        }
    }

    fn new_txn_id(&self) -> TxnId {
        TxnId(self.next_txn.fetch_add(1, Ordering::Relaxed))
    }

    /// The leader of `tablet`, waiting briefly for the directory to learn of one.
    async fn leader(&self, tablet: TabletId) -> Result<Arc<dyn Peer>> {
        settled_leader(self.directory.as_ref(), tablet).await
    }

    /// The tablet holding `key` and its leader.
    async fn route(&self, key: &[u8]) -> Result<(TabletId, Arc<dyn Peer>)> {
        let directory = self.directory.as_ref();
        settle(directory, || {
            let tablet = directory.tablet_for(key);
            directory.leader(tablet).map(|leader| (tablet, leader))
        })
        .await
        .ok_or_else(|| {
            let tablet = directory.tablet_for(key);
            TxnError::Unavailable(format!("{tablet} has no leader"))
        })
    }

    /// The tablet holding `key`, for a read at any replica.
    async fn locate(&self, key: &[u8]) -> Result<TabletId> {
        let directory = self.directory.as_ref();
        settle(directory, || {
            let tablet = directory.tablet_for(key);
            (!directory.replicas(tablet).is_empty()).then_some(tablet)
        })
        .await
        .ok_or_else(|| TxnError::Unavailable("no tablet holds the key (placement unknown)".into()))
    }

    /// The tablets holding `range`, each with its part, covering all of it.
    async fn cover(&self, range: &KeyRange) -> Result<Vec<(TabletId, KeyRange)>> {
        let directory = self.directory.as_ref();
        settle(directory, || {
            let parts = directory.ranges(range);
            crate::directory::covers(range, &parts).then_some(parts)
        })
        .await
        .ok_or_else(|| {
            TxnError::Unavailable("part of the range has no tablet (placement unknown)".into())
        })
    }

    /// The priority of a new transaction's first attempt.
    pub fn new_priority(&self) -> Result<Priority> {
        Ok(Priority {
            first_start: self.clock.now()?.latest,
            tiebreak: self.new_txn_id().0,
        })
    }

    /// Begins one attempt of a read-write transaction that outlives this call (commit or
    /// abort it explicitly). A retry passes its first attempt's `priority`.
    pub fn begin(self: &Arc<Self>, priority: Option<Priority>) -> Result<Transaction<'static>> {
        let priority = match priority {
            Some(p) => p,
            None => self.new_priority()?,
        };
        Ok(Transaction::new(
            ClientRef::Shared(Arc::clone(self)),
            self.new_txn_id(),
            priority,
        ))
    }

    /// Begins a read-only transaction that outlives this call.
    pub fn begin_read_only(
        self: &Arc<Self>,
        bound: ReadBound,
        replicas: ReplicaChoice,
    ) -> Result<ReadOnlyTxn<'static>> {
        ReadOnlyTxn::new(ClientRef::Shared(Arc::clone(self)), bound, replicas)
    }

    /// Runs `body` in a read-write transaction and commits it, retrying aborted attempts
    /// with the first attempt's priority (so it eventually wins every conflict) for up to
    /// `retry_for`. Returns the body's value and the commit timestamp. An attempt whose
    /// commit outcome is unknown is never retried: that error is returned.
    pub async fn read_write<T, F>(&self, mut body: F) -> Result<(T, Timestamp)>
    where
        F: for<'t> FnMut(&'t mut Transaction<'_>) -> TxnFuture<'t, T>,
    {
        let priority = self.new_priority()?;
        let deadline = Instant::now() + self.retry_for;
        let mut id = TxnId(priority.tiebreak);
        let mut backoff = Duration::from_millis(1);
        loop {
            let mut tx = Transaction::new(ClientRef::Borrowed(self), id, priority);
            let result = match body(&mut tx).await {
                Ok(value) => tx.commit().await.map(|ts| (value, ts)),
                Err(e) => Err(e),
            };
            match result {
                Ok(done) => return Ok(done),
                Err(TxnError::Indeterminate(reason)) => {
                    return Err(TxnError::Indeterminate(reason));
                }
                Err(e) => {
                    tx.abort().await;
                    if !e.is_retryable() || Instant::now() >= deadline {
                        return Err(e);
                    }
                    tracing::debug!(txn = ?id, error = %e, "retrying transaction");
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(50));
            id = self.new_txn_id();
        }
    }

    /// A read-only transaction: no locks, one snapshot at a timestamp picked from `bound`,
    /// served by `replicas`.
    pub fn read_only(&self, bound: ReadBound, replicas: ReplicaChoice) -> Result<ReadOnlyTxn<'_>> {
        ReadOnlyTxn::new(ClientRef::Borrowed(self), bound, replicas)
    }
}

impl TxnClient {
    /// A strong read of `keys` as one snapshot, without locks. When every key lives on one
    /// tablet and that tablet's leader has nothing prepared, it reads at the leader's last
    /// applied timestamp (Spanner's `LastTS`): every transaction acknowledged before this
    /// call is at or below it, and the read never waits. Otherwise it reads at
    /// `TT.now().latest`. Returns the values and the read timestamp.
    pub async fn strong_read(&self, keys: &[&[u8]]) -> Result<(Vec<Option<Vec<u8>>>, Timestamp)> {
        let tablets: BTreeSet<TabletId> =
            keys.iter().map(|k| self.directory.tablet_for(k)).collect();
        if let [tablet] = tablets.iter().copied().collect::<Vec<_>>().as_slice() {
            let leader = self.leader(*tablet).await?;
            let state = leader.replica_state(*tablet).await?;
            if state.prepared == 0 && state.is_leader {
                let s_read = state.paxos_safe_ts;
                let mut values = Vec::with_capacity(keys.len());
                for key in keys {
                    values.push(
                        leader
                            .snapshot_read(*tablet, key.to_vec(), s_read, SAFE_WAIT)
                            .await?,
                    );
                }
                return Ok((values, s_read));
            }
        }
        let mut snapshot = self.read_only(ReadBound::Strong, ReplicaChoice::Any)?;
        let mut values = Vec::with_capacity(keys.len());
        for key in keys {
            values.push(snapshot.read(key).await?);
        }
        Ok((values, snapshot.read_ts().unwrap_or(Timestamp::ZERO)))
    }
}

/// One attempt of a read-write transaction: reads take shared locks at tablet leaders,
/// writes are buffered until commit.
#[derive(Debug)]
pub struct Transaction<'c> {
    client: ClientRef<'c>,
    id: TxnId,
    priority: Priority,
    touched: BTreeSet<TabletId>,
    /// The leadership each tablet's read locks were taken under.
    read_under: BTreeMap<TabletId, Leadership>,
    /// Buffered writes by key; `None` deletes.
    writes: BTreeMap<Vec<u8>, Option<Mutation>>,
}

impl<'c> Transaction<'c> {
    fn new(client: ClientRef<'c>, id: TxnId, priority: Priority) -> Self {
        Transaction {
            client,
            id,
            priority,
            touched: BTreeSet::new(),
            read_under: BTreeMap::new(),
            writes: BTreeMap::new(),
        }
    }

    /// This attempt's id.
    pub fn id(&self) -> TxnId {
        self.id
    }

    /// The transaction's priority (the first attempt's, on a retry).
    pub fn priority(&self) -> Priority {
        self.priority
    }

    fn note_read(&mut self, tablet: TabletId, leadership: Leadership) -> Result<()> {
        if *self.read_under.entry(tablet).or_insert(leadership) != leadership {
            // Earlier reads here were locked under a leadership that is gone.
            return Err(TxnError::Aborted(crate::AbortReason::LeaderChanged));
        }
        Ok(())
    }

    /// Scans `range` under shared range locks (seeing this transaction's own writes): at
    /// most `limit` rows in key order.
    pub async fn scan(&mut self, range: KeyRange, limit: usize) -> Result<Rows> {
        let mut rows = Vec::new();
        for (tablet, part) in self.client.cover(&range).await? {
            if rows.len() >= limit {
                break;
            }
            let wanted = limit - rows.len();
            let deletes = self.buffered_in(&part).filter(|(_, w)| w.is_none()).count();
            self.touched.insert(tablet);
            let service = self.client.leader(tablet).await?;
            // Enough stored rows that the buffered deletes cannot leave fewer than `wanted`.
            let fetch = wanted.saturating_add(deletes);
            let (stored, leadership) = service
                .scan(self.id, self.priority, tablet, part.clone(), fetch)
                .await?;
            self.note_read(tablet, leadership)?;
            let exhausted = stored.len() < fetch;
            let upto = if exhausted {
                part.end.clone()
            } else {
                stored.last().map(|(k, _)| {
                    let mut after = k.clone();
                    after.push(0);
                    after
                })
            };
            let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = stored.into_iter().collect();
            let window = KeyRange {
                start: part.start.clone(),
                end: upto,
            };
            for (key, write) in self.buffered_in(&window) {
                match write {
                    Some(m) => merged.insert(key.clone(), m.value.clone().unwrap_or_default()),
                    None => merged.remove(key),
                };
            }
            rows.extend(merged.into_iter().take(wanted));
        }
        Ok(rows)
    }

    /// This transaction's buffered writes in `range`, in key order.
    fn buffered_in<'a>(
        &'a self,
        range: &'a KeyRange,
    ) -> impl Iterator<Item = (&'a Vec<u8>, &'a Option<Mutation>)> + 'a {
        self.writes
            .range(range.start.clone()..)
            .take_while(|(k, _)| range.end.as_ref().is_none_or(|end| *k < end))
    }

    /// Reads `key` (seeing this transaction's own writes) under a shared lock.
    pub async fn read(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if let Some(buffered) = self.writes.get(key) {
            return Ok(buffered.as_ref().and_then(|m| m.value.clone()));
        }
        let (tablet, service) = self.client.route(key).await?;
        self.touched.insert(tablet);
        let (value, leadership) = service
            .read(self.id, self.priority, tablet, key.to_vec())
            .await?;
        self.note_read(tablet, leadership)?;
        Ok(value)
    }

    /// Buffers `key = value`.
    pub fn write(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.buffer(Mutation::put(key, value));
    }

    /// Buffers `key = value` with the commit timestamp written into `value` at each offset
    /// of `commit_ts_at` (8 bytes, nanoseconds, big-endian) when it commits.
    pub fn write_stamped(
        &mut self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        commit_ts_at: Vec<u32>,
    ) {
        let mut mutation = Mutation::put(key, value);
        mutation.commit_ts_at = commit_ts_at;
        self.buffer(mutation);
    }

    /// Buffers the deletion of `key`.
    pub fn delete(&mut self, key: impl Into<Vec<u8>>) {
        self.writes.insert(key.into(), None);
    }

    fn buffer(&mut self, mutation: Mutation) {
        self.writes.insert(mutation.key.clone(), Some(mutation));
    }

    /// The buffered writes grouped by the tablet holding them, every tablet with a leader
    /// (waiting briefly for the directory to learn of new tablets and leaders).
    /// Takes the buffered writes out of the transaction.
    async fn writes_by_tablet(&mut self) -> Result<BTreeMap<TabletId, Vec<Mutation>>> {
        let directory = self.client.directory.as_ref();
        let writes = &self.writes;
        settle(directory, || {
            writes
                .keys()
                .all(|key| directory.leader(directory.tablet_for(key)).is_some())
                .then_some(())
        })
        .await
        .ok_or_else(|| TxnError::Unavailable("a written key's tablet has no leader".into()))?;
        let mut grouped: BTreeMap<TabletId, Vec<Mutation>> = BTreeMap::new();
        for (key, write) in std::mem::take(&mut self.writes) {
            let tablet = directory.tablet_for(&key);
            let mutation = write.unwrap_or_else(|| Mutation::delete(key));
            grouped.entry(tablet).or_default().push(mutation);
        }
        Ok(grouped)
    }

    /// Commits: returns the commit timestamp once commit-wait is over. After an error the
    /// attempt is over; abort it (an `Indeterminate` attempt may have committed).
    pub async fn commit(&mut self) -> Result<Timestamp> {
        let mut participants: BTreeMap<TabletId, Participant> = BTreeMap::new();
        let grouped = self.writes_by_tablet().await?;
        for (tablet, mutations) in grouped {
            self.touched.insert(tablet);
            participants.insert(
                tablet,
                Participant {
                    mutations,
                    read_under: None,
                },
            );
        }
        let Some(&coordinator) = participants.keys().next() else {
            // Read-only: nothing to commit; the reads were consistent while the locks held.
            let now = self.client.clock.now()?;
            self.abort().await;
            return Ok(now.latest);
        };
        for tablet in &self.touched {
            participants.entry(*tablet).or_default().read_under =
                self.read_under.get(tablet).copied();
        }
        let service = self.client.leader(coordinator).await?;
        if participants.len() == 1 {
            let part = participants.remove(&coordinator).unwrap_or_default();
            let (mutations, read_under) = (part.mutations, part.read_under);
            return service
                .commit_single(self.id, self.priority, coordinator, mutations, read_under)
                .await;
        }
        service
            .coordinate(self.id, self.priority, coordinator, participants)
            .await
    }

    /// Abandons the attempt: releases its locks and prepared state everywhere it went.
    pub async fn abort(&self) {
        let tablets: BTreeSet<TabletId> = self
            .touched
            .iter()
            .copied()
            .chain(
                self.writes
                    .keys()
                    .map(|k| self.client.directory.tablet_for(k)),
            )
            .collect();
        for tablet in tablets {
            if let Some(service) = self.client.directory.leader(tablet) {
                let _ = service.abort(self.id).await;
            }
        }
    }
}

/// A read-only transaction: a consistent snapshot at `s_read`, read from any replica
/// without locks.
#[derive(Debug)]
pub struct ReadOnlyTxn<'c> {
    client: ClientRef<'c>,
    bound: ReadBound,
    /// `TT.now().latest` when the transaction began.
    floor: Timestamp,
    s_read: Option<Timestamp>,
    replicas: ReplicaChoice,
    strong: bool,
    /// Tablets whose chosen replica fell behind: later reads go to the leader at once.
    at_leader: BTreeSet<TabletId>,
}

impl<'c> ReadOnlyTxn<'c> {
    fn new(client: ClientRef<'c>, bound: ReadBound, replicas: ReplicaChoice) -> Result<Self> {
        let now = client.clock.now()?;
        let s_read = match bound {
            ReadBound::Strong => Some(now.latest),
            ReadBound::ExactStaleness(d) => Some(now.latest.saturating_sub(d)),
            ReadBound::ReadTimestamp(t) => Some(t),
            ReadBound::MaxStaleness(_) | ReadBound::MinReadTimestamp(_) => None,
        };
        Ok(ReadOnlyTxn {
            client,
            bound,
            floor: now.latest,
            s_read,
            replicas,
            strong: bound == ReadBound::Strong,
            at_leader: BTreeSet::new(),
        })
    }

    /// The snapshot's timestamp, once chosen (bounded-staleness reads choose at first read).
    pub fn read_ts(&self) -> Option<Timestamp> {
        self.s_read
    }

    fn replica(&self, tablet: TabletId) -> Result<Arc<dyn Peer>> {
        let directory = &self.client.directory;
        let leader = directory.leader(tablet);
        let replicas = if self.at_leader.contains(&tablet) {
            ReplicaChoice::Leader
        } else {
            self.replicas
        };
        let chosen = match replicas {
            ReplicaChoice::Leader => leader,
            ReplicaChoice::Follower => {
                let leader_node = leader.as_ref().map(|l| l.node_id());
                directory
                    .replicas(tablet)
                    .into_iter()
                    .find(|r| Some(r.node_id()) != leader_node)
                    .or(leader)
            }
            ReplicaChoice::Any => directory.replicas(tablet).into_iter().next(),
        };
        chosen.ok_or_else(|| {
            directory.refresh(tablet);
            TxnError::Unavailable(format!("{tablet} has no replica"))
        })
    }

    /// Prepares to read `tablet` on `replica`: fixes the snapshot timestamp at the first
    /// read, and for a strong read asks the leader to close a timestamp when the replica's
    /// safe time is behind (rather than wait for the next periodic close).
    async fn ready(&mut self, tablet: TabletId, replica: &dyn Peer) -> Result<Timestamp> {
        if let Some(ts) = self.s_read
            && !self.strong
        {
            // A fixed snapshot that is not strong just waits for safe time at the replica.
            return Ok(ts);
        }
        let state = replica.replica_state(tablet).await?;
        let s_read = match self.s_read {
            Some(ts) => ts,
            None => {
                let ts = match self.bound {
                    ReadBound::MaxStaleness(d) => state.safe_ts.max(self.floor.saturating_sub(d)),
                    ReadBound::MinReadTimestamp(t) => state.safe_ts.max(t),
                    _ => self.floor,
                };
                self.s_read = Some(ts);
                ts
            }
        };
        if self.strong
            && state.safe_ts < s_read
            && let Some(leader) = self.client.directory.leader(tablet)
        {
            let _ = leader.close_timestamp(tablet).await;
        }
        Ok(s_read)
    }

    /// How long to wait for safe time at `replica`: briefly if another node leads `tablet`
    /// (the read can go there instead), else patiently.
    fn wait_at(&self, tablet: TabletId, replica: &dyn Peer) -> Duration {
        let elsewhere = self
            .client
            .directory
            .leader(tablet)
            .is_some_and(|l| l.node_id() != replica.node_id());
        if elsewhere { REPLICA_WAIT } else { SAFE_WAIT }
    }

    /// After a read at a replica other than the leader failed (most often: its safe time
    /// stayed behind), the leader to read at instead, if there is one.
    fn fall_back(
        &mut self,
        tablet: TabletId,
        replica: &dyn Peer,
        error: &TxnError,
    ) -> Option<Arc<dyn Peer>> {
        let leader = self.client.directory.leader(tablet)?;
        if leader.node_id() == replica.node_id() {
            return None;
        }
        tracing::debug!(tablet_id = %tablet, node_id = %replica.node_id(), %error, "reading at the leader instead");
        self.at_leader.insert(tablet);
        Some(leader)
    }

    /// Reads `key` at the snapshot.
    pub async fn read(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let tablet = self.client.locate(key).await?;
        let replica = self.replica(tablet)?;
        let s_read = self.ready(tablet, replica.as_ref()).await?;
        let wait = self.wait_at(tablet, replica.as_ref());
        match replica
            .snapshot_read(tablet, key.to_vec(), s_read, wait)
            .await
        {
            Err(e) => match self.fall_back(tablet, replica.as_ref(), &e) {
                Some(leader) => {
                    leader
                        .snapshot_read(tablet, key.to_vec(), s_read, SAFE_WAIT)
                        .await
                }
                None => Err(e),
            },
            read => read,
        }
    }

    /// Scans `range` at the snapshot: at most `limit` rows in key order.
    pub async fn scan(&mut self, range: KeyRange, limit: usize) -> Result<Rows> {
        let mut rows = Vec::new();
        for (tablet, mut part) in self.client.cover(&range).await? {
            let mut replica = self.replica(tablet)?;
            let s_read = self.ready(tablet, replica.as_ref()).await?;
            let mut wait = self.wait_at(tablet, replica.as_ref());
            while rows.len() < limit {
                let page = SCAN_PAGE.min(limit - rows.len());
                let got = match replica
                    .snapshot_scan(tablet, part.clone(), s_read, page, wait)
                    .await
                {
                    Err(e) => match self.fall_back(tablet, replica.as_ref(), &e) {
                        Some(leader) => {
                            replica = leader;
                            wait = SAFE_WAIT;
                            replica
                                .snapshot_scan(tablet, part.clone(), s_read, page, wait)
                                .await?
                        }
                        None => return Err(e),
                    },
                    got => got?,
                };
                let full = got.len() == page;
                if let Some((last, _)) = got.last() {
                    part.start = last.clone();
                    part.start.push(0);
                }
                rows.extend(got);
                if !full {
                    break;
                }
            }
        }
        Ok(rows)
    }
}
