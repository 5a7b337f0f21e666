//! [`TxnClient`]: runs read-write transactions (retrying aborts with the first attempt's
//! priority) and lock-free read-only transactions.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use locks::{Priority, TxnId};
use tablet::{Leadership, Mutation, Tablet, TabletId};
use truetime::{Clock, Timestamp};

use crate::error::{Result, TxnError};
use crate::{Directory, Participant, TxnService};

/// A boxed future borrowing the transaction, for [`TxnClient::read_write`] bodies.
pub type TxnFuture<'t, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 't>>;

/// How long a read waits for a replica's safe time before giving up.
const SAFE_WAIT: Duration = Duration::from_secs(10);

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

    fn leader(&self, tablet: TabletId) -> Result<Arc<TxnService>> {
        self.directory
            .leader(tablet)
            .ok_or_else(|| TxnError::Unavailable(format!("{tablet} has no leader")))
    }

    /// Runs `body` in a read-write transaction and commits it, retrying aborted attempts
    /// with the first attempt's priority (so it eventually wins every conflict) for up to
    /// `retry_for`. Returns the body's value and the commit timestamp. An attempt whose
    /// commit outcome is unknown is never retried: that error is returned.
    pub async fn read_write<T, F>(&self, mut body: F) -> Result<(T, Timestamp)>
    where
        F: for<'t> FnMut(&'t mut Transaction<'_>) -> TxnFuture<'t, T>,
    {
        let first = self.new_txn_id();
        let priority = Priority {
            first_start: self.clock.now()?.latest,
            tiebreak: first.0,
        };
        let deadline = Instant::now() + self.retry_for;
        let mut id = first;
        let mut backoff = Duration::from_millis(1);
        loop {
            let mut tx = Transaction {
                client: self,
                id,
                priority,
                touched: BTreeSet::new(),
                read_under: BTreeMap::new(),
                writes: BTreeMap::new(),
            };
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
        let now = self.clock.now()?;
        let s_read = match bound {
            ReadBound::Strong => Some(now.latest),
            ReadBound::ExactStaleness(d) => Some(now.latest.saturating_sub(d)),
            ReadBound::ReadTimestamp(t) => Some(t),
            ReadBound::MaxStaleness(_) | ReadBound::MinReadTimestamp(_) => None,
        };
        Ok(ReadOnlyTxn {
            client: self,
            bound,
            floor: now.latest,
            s_read,
            replicas,
            strong: bound == ReadBound::Strong,
        })
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
        if let [tablet] = tablets.iter().copied().collect::<Vec<_>>().as_slice()
            && let Some(leader) = self.leader(*tablet)?.tablet(*tablet)
        {
            let progress = leader.progress();
            if progress.prepared == 0 && leader.is_leader() {
                let s_read = progress.paxos_safe_ts;
                let mut values = Vec::with_capacity(keys.len());
                for key in keys {
                    values.push(leader.read(key, s_read, SAFE_WAIT).await?);
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
    client: &'c TxnClient,
    id: TxnId,
    priority: Priority,
    touched: BTreeSet<TabletId>,
    /// The leadership each tablet's read locks were taken under.
    read_under: BTreeMap<TabletId, Leadership>,
    writes: BTreeMap<TabletId, BTreeMap<Vec<u8>, Option<Vec<u8>>>>,
}

impl Transaction<'_> {
    /// This attempt's id.
    pub fn id(&self) -> TxnId {
        self.id
    }

    /// Reads `key` (seeing this transaction's own writes) under a shared lock.
    pub async fn read(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let tablet = self.client.directory.tablet_for(key);
        if let Some(buffered) = self.writes.get(&tablet).and_then(|w| w.get(key)) {
            return Ok(buffered.clone());
        }
        self.touched.insert(tablet);
        let service = self.client.leader(tablet)?;
        let (value, leadership) = service.read(self.id, self.priority, tablet, key).await?;
        if *self.read_under.entry(tablet).or_insert(leadership) != leadership {
            // Earlier reads here were locked under a leadership that is gone.
            return Err(TxnError::Aborted(crate::AbortReason::LeaderChanged));
        }
        Ok(value)
    }

    /// Buffers `key = value`.
    pub fn write(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        let key = key.into();
        let tablet = self.client.directory.tablet_for(&key);
        self.writes
            .entry(tablet)
            .or_default()
            .insert(key, Some(value.into()));
    }

    /// Buffers the deletion of `key`.
    pub fn delete(&mut self, key: impl Into<Vec<u8>>) {
        let key = key.into();
        let tablet = self.client.directory.tablet_for(&key);
        self.writes.entry(tablet).or_default().insert(key, None);
    }

    async fn commit(&mut self) -> Result<Timestamp> {
        let mut participants: BTreeMap<TabletId, Participant> = BTreeMap::new();
        for (tablet, writes) in std::mem::take(&mut self.writes) {
            let mutations = writes
                .into_iter()
                .map(|(key, value)| Mutation { key, value })
                .collect();
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
        let service = self.client.leader(coordinator)?;
        if participants.len() == 1 {
            let part = participants.remove(&coordinator).unwrap_or_default();
            let (mutations, read_under) = (part.mutations, part.read_under);
            return service
                .commit_single(self.id, self.priority, coordinator, mutations, read_under)
                .await;
        }
        self.touched.extend(participants.keys().copied());
        service
            .coordinate(self.id, self.priority, coordinator, participants)
            .await
    }

    async fn abort(&self) {
        let tablets: BTreeSet<TabletId> = self
            .touched
            .iter()
            .chain(self.writes.keys())
            .copied()
            .collect();
        for tablet in tablets {
            if let Some(service) = self.client.directory.leader(tablet) {
                service.abort(self.id).await;
            }
        }
    }
}

/// A read-only transaction: a consistent snapshot at `s_read`, read from any replica
/// without locks.
#[derive(Debug)]
pub struct ReadOnlyTxn<'c> {
    client: &'c TxnClient,
    bound: ReadBound,
    /// `TT.now().latest` when the transaction began.
    floor: Timestamp,
    s_read: Option<Timestamp>,
    replicas: ReplicaChoice,
    strong: bool,
}

impl ReadOnlyTxn<'_> {
    /// The snapshot's timestamp, once chosen (bounded-staleness reads choose at first read).
    pub fn read_ts(&self) -> Option<Timestamp> {
        self.s_read
    }

    fn replica(&self, tablet: TabletId) -> Result<Arc<Tablet>> {
        let replicas = self.client.directory.replicas(tablet);
        // A deposed leader may still believe it leads until it hears the new term: prefer the
        // leader of the newest term.
        let pick = |leader: bool| {
            let mut matching = replicas.iter().filter(|r| r.is_leader() == leader);
            if leader {
                matching.max_by_key(|r| r.term()).cloned()
            } else {
                matching.next().cloned()
            }
        };
        let chosen = match self.replicas {
            ReplicaChoice::Leader => pick(true),
            ReplicaChoice::Follower => pick(false).or_else(|| pick(true)),
            ReplicaChoice::Any => replicas.first().cloned(),
        };
        chosen.ok_or_else(|| TxnError::Unavailable(format!("{tablet} has no replica")))
    }

    /// Reads `key` at the snapshot.
    pub async fn read(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let tablet = self.client.directory.tablet_for(key);
        let replica = self.replica(tablet)?;
        let s_read = self.fix_timestamp(&replica)?;
        if self.strong && replica.safe_ts() < s_read {
            // Ask the leader for a safe point rather than wait for the next closed timestamp.
            if let Some(leader) = self
                .client
                .directory
                .leader(tablet)
                .and_then(|s| s.tablet(tablet))
            {
                let _ = leader.close_timestamp().await;
            }
        }
        Ok(replica.read(key, s_read, SAFE_WAIT).await?)
    }

    fn fix_timestamp(&mut self, replica: &Tablet) -> Result<Timestamp> {
        if let Some(ts) = self.s_read {
            return Ok(ts);
        }
        let ts = match self.bound {
            ReadBound::MaxStaleness(d) => replica.safe_ts().max(self.floor.saturating_sub(d)),
            ReadBound::MinReadTimestamp(t) => replica.safe_ts().max(t),
            _ => self.floor,
        };
        self.s_read = Some(ts);
        Ok(ts)
    }
}
