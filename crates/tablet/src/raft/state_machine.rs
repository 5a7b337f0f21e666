//! A tablet's state machine: applies committed commands to the tablet's MVCC rows, tracks
//! the timestamp floor (`t_paxos_safe`), and builds and installs snapshots.
//!
//! Applied state (last applied log id, membership, floor, closed timestamp) is written in the
//! same RocksDB batch as the rows it describes, so after a crash at any point the two agree
//! and Raft re-applies exactly the entries after it. These batches are not fsync'd on their
//! own: the log entries they come from are, and a purge of the log syncs the write-ahead log
//! first (see `log_store.rs`).

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;

use futures_util::TryStreamExt;
use locks::TxnId;
use openraft::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};
use storage::{Cf, Engine, KeyRange, Mvcc, WriteBatch};
use tokio::sync::watch;
use truetime::Timestamp;

use super::codec::{decode, encode};
use super::{TabletSnapshot, TypeConfig};
use crate::{Mutation, PreparedTxn, Progress, TabletCommand, TabletId, TabletResponse};

/// What the state machine has applied, persisted with the rows.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct AppliedState {
    pub(crate) last_applied: Option<LogIdOf<TypeConfig>>,
    pub(crate) membership: StoredMembershipOf<TypeConfig>,
    /// Every applied or closed timestamp is at or below this; a later command must be above
    /// it. Reads at or below it see every write they ever will: `t_paxos_safe`.
    pub(crate) floor: Timestamp,
    /// The keys this tablet holds (all of them until a split).
    #[serde(default)]
    pub(crate) range: KeyRange,
    /// The tablets split off this one, with their split keys (a repeated split finds its
    /// child). A list, not a map: the applied state is JSON, whose keys are strings.
    #[serde(default)]
    pub(crate) children: Vec<(Vec<u8>, TabletId)>,
}

/// A snapshot's contents.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct SnapshotPayload {
    floor: Timestamp,
    #[serde(default)]
    range: KeyRange,
    #[serde(default)]
    children: Vec<(Vec<u8>, TabletId)>,
    gc_watermark: Timestamp,
    versions: Vec<(Vec<u8>, Vec<u8>)>,
    txns: TxnRecords,
}

/// Two-phase-commit state of a participant: prepared transactions awaiting their outcome,
/// and the outcomes already applied (so a duplicate outcome is recognised, never re-applied).
/// Persisted under `txn/<tablet>/` in the `meta` column family, one key per transaction.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct TxnRecords {
    pub(crate) prepared: BTreeMap<TxnId, PreparedTxn>,
    pub(crate) decided: BTreeMap<TxnId, Decided>,
}

/// An applied outcome, kept for [`DECIDED_RETENTION`] so that duplicate and late messages
/// about the transaction are recognised.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct Decided {
    /// The commit timestamp, or `None` for an abort.
    pub(crate) outcome: Option<Timestamp>,
    /// The tablet's floor when the outcome was applied (a replica-independent clock).
    pub(crate) at: Timestamp,
}

/// How long (in timestamp time) outcomes are remembered. Far beyond every retry, keepalive
/// and inquiry period, after which nothing legitimate still mentions the transaction: a late
/// prepare of a forgotten transaction stays prepared until its coordinator's group (which
/// presumes abort) answers the inquiry; a late commit finds nothing prepared and is ignored.
pub(crate) const DECIDED_RETENTION: std::time::Duration = std::time::Duration::from_secs(600);

const PREPARED: u8 = b'p';
const DECIDED: u8 = b'd';

fn txn_prefix(tablet: TabletId) -> Vec<u8> {
    let mut prefix = b"txn/".to_vec();
    prefix.extend_from_slice(&tablet.0.to_be_bytes());
    prefix
}

fn txn_key(prefix: &[u8], kind: u8, txn: TxnId) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.push(kind);
    key.extend_from_slice(&txn.0.to_be_bytes());
    key
}

impl TxnRecords {
    fn load(engine: &Engine, prefix: &[u8]) -> io::Result<TxnRecords> {
        let end = storage::prefix_successor(prefix);
        let rows = engine
            .scan_raw(Cf::Meta, prefix, end.as_deref(), usize::MAX)
            .map_err(to_io)?;
        let mut records = TxnRecords::default();
        for (key, value) in rows {
            let txn = key
                .get(prefix.len() + 1..)
                .and_then(|b| b.try_into().ok())
                .map(|b| TxnId(u64::from_be_bytes(b)))
                .ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidData, "bad transaction record key")
                })?;
            match key.get(prefix.len()) {
                Some(&PREPARED) => {
                    records.prepared.insert(txn, decode(&value)?);
                }
                Some(&DECIDED) => {
                    records.decided.insert(txn, decode(&value)?);
                }
                _ => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "bad transaction record kind",
                    ));
                }
            }
        }
        Ok(records)
    }

    /// Stages the replacement of every record under `prefix` by `self`.
    fn stage_replace(&self, prefix: &[u8], batch: &mut WriteBatch) -> io::Result<()> {
        stage_delete_txn_records(prefix, batch);
        for (txn, prepared) in &self.prepared {
            batch.put(Cf::Meta, txn_key(prefix, PREPARED, *txn), encode(prepared)?);
        }
        for (txn, decided) in &self.decided {
            batch.put(Cf::Meta, txn_key(prefix, DECIDED, *txn), encode(decided)?);
        }
        Ok(())
    }

    /// Just below the smallest prepare timestamp: `t_tm_safe`.
    fn tm_safe(&self) -> Timestamp {
        self.prepared
            .values()
            .map(|p| p.prepare_ts.prev())
            .min()
            .unwrap_or(Timestamp::MAX)
    }
}

fn stage_delete_txn_records(prefix: &[u8], batch: &mut WriteBatch) {
    let end = storage::prefix_successor(prefix).unwrap_or_else(|| vec![0xFF; prefix.len() + 1]);
    batch.delete_range(Cf::Meta, prefix.to_vec(), end);
}

/// The state machine of one tablet replica.
#[derive(Debug)]
pub(crate) struct StateMachine {
    engine: Arc<Engine>,
    mvcc: Arc<Mvcc>,
    applied_key: Vec<u8>,
    applied: AppliedState,
    progress: watch::Sender<Progress>,
    current_snapshot: CurrentSnapshot,
    stale_rejections: u64,
    txn_prefix: Vec<u8>,
    txns: TxnRecords,
    /// The tablet's range, shared with the [`crate::Tablet`] that checks reads against it.
    range: SharedRange,
    /// Where the node learns of tablets split off this one (it opens their replicas).
    children: Option<ChildSender>,
    /// Children created by the batch being applied, announced once it is written.
    opened_children: Vec<TabletId>,
}

/// A tablet's key range as its state machine last applied it.
pub(crate) type SharedRange = Arc<std::sync::RwLock<KeyRange>>;

/// Tells the node that a split created a replica of this tablet here.
pub(crate) type ChildSender = tokio::sync::mpsc::UnboundedSender<TabletId>;

/// The newest snapshot, shared with the builders that produce it.
type CurrentSnapshot = Arc<std::sync::Mutex<Option<SnapshotOf<TypeConfig, TabletSnapshot>>>>;

fn to_io(e: storage::StorageError) -> io::Error {
    io::Error::other(e)
}

impl StateMachine {
    /// Opens the state machine of `tablet`, recovering its applied state.
    pub(crate) fn open(
        engine: Arc<Engine>,
        mvcc: Arc<Mvcc>,
        tablet: TabletId,
        progress: watch::Sender<Progress>,
        range: SharedRange,
        children: Option<ChildSender>,
    ) -> io::Result<Self> {
        let applied_key = Self::applied_key(tablet);
        let applied = match engine.get(Cf::Meta, &applied_key).map_err(to_io)? {
            Some(bytes) => decode(&bytes)?,
            None => AppliedState::default(),
        };
        let txn_prefix = txn_prefix(tablet);
        let txns = TxnRecords::load(&engine, &txn_prefix)?;
        let machine = StateMachine {
            engine,
            mvcc,
            applied_key,
            applied,
            progress,
            current_snapshot: CurrentSnapshot::default(),
            stale_rejections: 0,
            txn_prefix,
            txns,
            range,
            children,
            opened_children: Vec::new(),
        };
        machine.publish();
        Ok(machine)
    }

    /// The key of the applied state (removed with the replica).
    pub(crate) fn applied_key(tablet: TabletId) -> Vec<u8> {
        let mut key = b"applied/".to_vec();
        key.extend_from_slice(&tablet.0.to_be_bytes());
        key
    }

    pub(crate) fn publish(&self) {
        *self.range.write().unwrap_or_else(|e| e.into_inner()) = self.applied.range.clone();
        let progress = Progress {
            applied_index: self.applied.last_applied.map(|id| id.index),
            // t_safe = min(t_paxos_safe, t_tm_safe).
            safe_ts: self.applied.floor.min(self.txns.tm_safe()),
            paxos_safe_ts: self.applied.floor,
            prepared: self.txns.prepared.len(),
            stale_rejections: self.stale_rejections,
        };
        self.progress.send_replace(progress);
    }

    /// Applies one command to `batch`; the floor rule makes every replica decide alike.
    /// Stages `mutations` as versions at `ts`.
    fn stage_mutations(&self, mutations: Vec<Mutation>, ts: Timestamp, batch: &mut WriteBatch) {
        for mutation in mutations {
            match mutation.stamped_value(ts) {
                Some(value) => self.mvcc.put(batch, &mutation.key, ts, &value),
                None => self.mvcc.delete(batch, &mutation.key, ts),
            }
        }
    }

    pub(crate) fn apply_command(
        &mut self,
        command: TabletCommand,
        batch: &mut WriteBatch,
    ) -> io::Result<TabletResponse> {
        match command {
            TabletCommand::Write { ts, mutations } => {
                if !self.holds(&mutations) {
                    return Ok(TabletResponse::OutOfRange);
                }
                let floor = self.applied.floor;
                if ts <= floor {
                    self.stale_rejections += 1;
                    return Ok(TabletResponse::StaleTimestamp { ts, floor });
                }
                self.stage_mutations(mutations, ts, batch);
                self.applied.floor = ts;
                Ok(TabletResponse::Applied)
            }
            TabletCommand::Close { ts } => {
                self.applied.floor = self.applied.floor.max(ts);
                self.forget_decided_before(ts.saturating_sub(DECIDED_RETENTION), batch);
                Ok(TabletResponse::Applied)
            }
            TabletCommand::Prepare {
                txn,
                prepare_ts,
                coordinator,
                mutations,
            } => {
                if !self.holds(&mutations) {
                    return Ok(TabletResponse::OutOfRange);
                }
                let prepared = PreparedTxn {
                    prepare_ts,
                    coordinator,
                    mutations,
                };
                self.apply_prepare(txn, prepared, batch)
            }
            TabletCommand::Split { at, child } => self.apply_split(at, child, batch),
            TabletCommand::Commit { txn, commit_ts } => {
                self.apply_outcome(txn, Some(commit_ts), batch)
            }
            TabletCommand::Abort { txn } => self.apply_outcome(txn, None, batch),
        }
    }

    fn apply_prepare(
        &mut self,
        txn: TxnId,
        prepared: PreparedTxn,
        batch: &mut WriteBatch,
    ) -> io::Result<TabletResponse> {
        let prepare_ts = prepared.prepare_ts;
        if let Some(decided) = self.txns.decided.get(&txn) {
            return Ok(TabletResponse::AlreadyDecided {
                commit_ts: decided.outcome,
            });
        }
        if self.txns.prepared.contains_key(&txn) {
            return Ok(TabletResponse::Applied); // a duplicate prepare: the first one counts
        }
        let floor = self.applied.floor;
        if prepare_ts <= floor {
            self.stale_rejections += 1;
            return Ok(TabletResponse::StaleTimestamp {
                ts: prepare_ts,
                floor,
            });
        }
        batch.put(
            Cf::Meta,
            txn_key(&self.txn_prefix, PREPARED, txn),
            encode(&prepared)?,
        );
        self.txns.prepared.insert(txn, prepared);
        self.applied.floor = prepare_ts;
        Ok(TabletResponse::Applied)
    }

    /// Applies a commit (`Some(commit_ts)`) or an abort (`None`) exactly once.
    fn apply_outcome(
        &mut self,
        txn: TxnId,
        outcome: Option<Timestamp>,
        batch: &mut WriteBatch,
    ) -> io::Result<TabletResponse> {
        if let Some(decided) = self.txns.decided.get(&txn) {
            return Ok(TabletResponse::AlreadyDecided {
                commit_ts: decided.outcome,
            });
        }
        let prepared = self.txns.prepared.get(&txn);
        if let Some(commit_ts) = outcome {
            match prepared {
                Some(p) if commit_ts >= p.prepare_ts => {}
                _ => return Ok(TabletResponse::NotPrepared),
            }
        }
        if let (Some(prepared), Some(commit_ts)) = (self.txns.prepared.remove(&txn), outcome) {
            self.stage_mutations(prepared.mutations, commit_ts, batch);
            self.applied.floor = self.applied.floor.max(commit_ts);
        }
        self.txns.prepared.remove(&txn);
        batch.delete(Cf::Meta, txn_key(&self.txn_prefix, PREPARED, txn));
        let decided = Decided {
            outcome,
            at: self.applied.floor,
        };
        batch.put(
            Cf::Meta,
            txn_key(&self.txn_prefix, DECIDED, txn),
            encode(&decided)?,
        );
        self.txns.decided.insert(txn, decided);
        Ok(TabletResponse::Applied)
    }

    /// Whether every mutation's key is in this tablet's range.
    fn holds(&self, mutations: &[Mutation]) -> bool {
        mutations
            .iter()
            .all(|m| self.applied.range.contains(&m.key))
    }

    /// Splits off `[at, end)` into `child`: its versions move to the child's keyspace, the
    /// child's applied state starts at this tablet's floor (so it never writes at or below
    /// a timestamp already served here), and the node is told to open the child's replica.
    /// Every replica applies the same split at the same log index, so every replica of this
    /// tablet becomes a replica of the child with the same rows.
    fn apply_split(
        &mut self,
        at: Vec<u8>,
        child: TabletId,
        batch: &mut WriteBatch,
    ) -> io::Result<TabletResponse> {
        if let Some((_, existing)) = self.applied.children.iter().find(|(key, _)| *key == at) {
            return Ok(TabletResponse::Split { child: *existing });
        }
        let range = &self.applied.range;
        if !range.contains(&at) || at == range.start {
            return Ok(TabletResponse::SplitRefused {
                reason: "the split key is not inside the tablet's range".into(),
            });
        }
        let upper = KeyRange {
            start: at.clone(),
            end: range.end.clone(),
        };
        let busy = self
            .txns
            .prepared
            .values()
            .any(|p| p.mutations.iter().any(|m| upper.contains(&m.key)));
        if busy {
            return Ok(TabletResponse::SplitRefused {
                reason: "a prepared transaction writes above the split key; retry".into(),
            });
        }
        let registry = crate::node::replica_key(child);
        // A replica of the child already here (created through its own group) keeps its
        // state: it came from the child's log or snapshot, not from this split.
        let fresh = self
            .engine
            .get(Cf::Meta, &registry)
            .map_err(to_io)?
            .is_none();
        if fresh {
            let target = Mvcc::open(Arc::clone(&self.engine), child.keyspace()).map_err(to_io)?;
            self.mvcc
                .stage_copy_from(&at, &target, batch)
                .map_err(to_io)?;
            let child_state = AppliedState {
                last_applied: None,
                membership: Default::default(),
                floor: self.applied.floor,
                range: upper,
                children: Vec::new(),
            };
            batch.put(Cf::Meta, Self::applied_key(child), encode(&child_state)?);
            batch.put(Cf::Meta, registry, Vec::new());
            // The node opens it once this batch is written.
            self.opened_children.push(child);
        }
        self.mvcc.stage_delete_from(&at, batch);
        self.applied.range.end = Some(at.clone());
        self.applied.children.push((at, child));
        Ok(TabletResponse::Split { child })
    }

    /// Drops the outcomes applied before `horizon` (deterministically: every replica applies
    /// the same closed timestamps).
    fn forget_decided_before(&mut self, horizon: Timestamp, batch: &mut WriteBatch) {
        let prefix = &self.txn_prefix;
        self.txns.decided.retain(|txn, decided| {
            let keep = decided.at >= horizon;
            if !keep {
                batch.delete(Cf::Meta, txn_key(prefix, DECIDED, *txn));
            }
            keep
        });
    }

    /// The prepared, undecided transactions (a new leader rebuilds their locks from these).
    pub(crate) fn prepared(&self) -> BTreeMap<TxnId, PreparedTxn> {
        self.txns.prepared.clone()
    }

    /// The recorded outcome of `txn`: `Some(Some(commit_ts))`, `Some(None)` for an abort,
    /// `None` if undecided or unknown here.
    pub(crate) fn decided(&self, txn: TxnId) -> Option<Option<Timestamp>> {
        self.txns.decided.get(&txn).map(|d| d.outcome)
    }

    /// Stages the removal of `tablet`'s transaction records (when the replica is destroyed).
    pub(crate) fn stage_destroy_txn_records(tablet: TabletId, batch: &mut WriteBatch) {
        stage_delete_txn_records(&txn_prefix(tablet), batch);
    }

    pub(crate) fn write_applied(&self, mut batch: WriteBatch) -> io::Result<()> {
        batch.put(Cf::Meta, self.applied_key.clone(), encode(&self.applied)?);
        self.engine.write(batch, false).map_err(to_io)
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = TabletSnapshot;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> io::Result<(Option<LogIdOf<TypeConfig>>, StoredMembershipOf<TypeConfig>)> {
        Ok((self.applied.last_applied, self.applied.membership.clone()))
    }

    async fn apply<S>(&mut self, mut entries: S) -> io::Result<()>
    where
        S: futures_util::Stream<Item = io::Result<EntryResponder<TypeConfig>>>
            + Unpin
            + OptionalSend,
    {
        let mut batch = WriteBatch::new();
        let mut replies = Vec::new();
        while let Some((entry, responder)) = entries.try_next().await? {
            self.applied.last_applied = Some(entry.log_id);
            let response = match entry.payload {
                EntryPayload::Blank => TabletResponse::None,
                EntryPayload::Normal(command) => self.apply_command(command, &mut batch)?,
                EntryPayload::Membership(membership) => {
                    self.applied.membership =
                        StoredMembershipOf::<TypeConfig>::new(Some(entry.log_id), membership);
                    TabletResponse::None
                }
            };
            if let Some(responder) = responder {
                replies.push((responder, response));
            }
        }
        self.write_applied(batch)?;
        self.publish();
        for child in self.opened_children.drain(..) {
            if let Some(children) = &self.children {
                let _ = children.send(child);
            }
        }
        for (responder, response) in replies {
            responder.send(response);
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        // Captured here, on the state machine's own task, so the copy is consistent with
        // `last_applied`: no apply runs in between.
        SnapshotBuilder {
            current: Arc::clone(&self.current_snapshot),
            meta: SnapshotMetaOf::<TypeConfig> {
                last_log_id: self.applied.last_applied,
                last_membership: self.applied.membership.clone(),
            },
            payload: self.mvcc.export_versions().map(|versions| SnapshotPayload {
                floor: self.applied.floor,
                range: self.applied.range.clone(),
                children: self.applied.children.clone(),
                gc_watermark: self.mvcc.gc_watermark(),
                versions,
                txns: self.txns.clone(),
            }),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<TypeConfig>,
        snapshot: TabletSnapshot,
    ) -> io::Result<()> {
        let payload: SnapshotPayload = decode(&snapshot.bytes)?;
        let mut batch = WriteBatch::new();
        self.mvcc
            .stage_replace_all(&mut batch, payload.versions, payload.gc_watermark);
        payload.txns.stage_replace(&self.txn_prefix, &mut batch)?;
        self.txns = payload.txns;
        self.applied = AppliedState {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            floor: payload.floor,
            range: payload.range,
            children: payload.children,
        };
        // One atomic batch: rows, watermark and applied state change together.
        batch.put(Cf::Meta, self.applied_key.clone(), encode(&self.applied)?);
        self.engine.write(batch, true).map_err(to_io)?;
        self.mvcc.reload_gc_watermark().map_err(to_io)?;
        self.publish();
        *lock(&self.current_snapshot) = Some(SnapshotOf::<TypeConfig, TabletSnapshot> {
            meta: meta.clone(),
            snapshot,
        });
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> io::Result<Option<SnapshotOf<TypeConfig, TabletSnapshot>>> {
        Ok(lock(&self.current_snapshot).clone())
    }
}

/// Encodes a snapshot captured by [`StateMachine::get_snapshot_builder`].
#[derive(Debug)]
pub(crate) struct SnapshotBuilder {
    current: CurrentSnapshot,
    meta: SnapshotMetaOf<TypeConfig>,
    payload: storage::Result<SnapshotPayload>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = TabletSnapshot;

    async fn build_snapshot(&mut self) -> io::Result<SnapshotOf<TypeConfig, TabletSnapshot>> {
        let payload = std::mem::replace(
            &mut self.payload,
            Err(storage::StorageError::InvalidArgument(
                "snapshot already built".into(),
            )),
        )
        .map_err(to_io)?;
        let snapshot = TabletSnapshot {
            bytes: encode(&payload)?,
        };
        let built = SnapshotOf::<TypeConfig, TabletSnapshot> {
            meta: self.meta.clone(),
            snapshot,
        };
        *lock(&self.current) = Some(built.clone());
        Ok(built)
    }
}

fn lock(
    current: &CurrentSnapshot,
) -> std::sync::MutexGuard<'_, Option<SnapshotOf<TypeConfig, TabletSnapshot>>> {
    current.lock().unwrap_or_else(|e| e.into_inner())
}
