//! A tablet's state machine: applies committed commands to the tablet's MVCC rows, tracks
//! the timestamp floor (`t_paxos_safe`), and builds and installs snapshots.
//!
//! Applied state (last applied log id, membership, floor, closed timestamp) is written in the
//! same RocksDB batch as the rows it describes, so after a crash at any point the two agree
//! and Raft re-applies exactly the entries after it. These batches are not fsync'd on their
//! own: the log entries they come from are, and a purge of the log syncs the write-ahead log
//! first (see `log_store.rs`).

use std::io;
use std::sync::Arc;

use futures_util::TryStreamExt;
use openraft::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};
use storage::{Cf, Engine, Mvcc, WriteBatch};
use tokio::sync::watch;
use truetime::Timestamp;

use super::codec::{decode, encode};
use super::{TabletSnapshot, TypeConfig};
use crate::{Progress, TabletCommand, TabletId, TabletResponse};

/// What the state machine has applied, persisted with the rows.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct AppliedState {
    pub(crate) last_applied: Option<LogIdOf<TypeConfig>>,
    pub(crate) membership: StoredMembershipOf<TypeConfig>,
    /// Every applied or closed timestamp is at or below this; a later command must be above
    /// it. Reads at or below it see every write they ever will: `t_paxos_safe`.
    pub(crate) floor: Timestamp,
}

/// A snapshot's contents.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct SnapshotPayload {
    floor: Timestamp,
    gc_watermark: Timestamp,
    versions: Vec<(Vec<u8>, Vec<u8>)>,
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
}

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
    ) -> io::Result<Self> {
        let mut applied_key = b"applied/".to_vec();
        applied_key.extend_from_slice(&tablet.0.to_be_bytes());
        let applied = match engine.get(Cf::Meta, &applied_key).map_err(to_io)? {
            Some(bytes) => decode(&bytes)?,
            None => AppliedState::default(),
        };
        let machine = StateMachine {
            engine,
            mvcc,
            applied_key,
            applied,
            progress,
            current_snapshot: CurrentSnapshot::default(),
            stale_rejections: 0,
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

    fn publish(&self) {
        let progress = Progress {
            applied_index: self.applied.last_applied.map(|id| id.index),
            safe_ts: self.applied.floor,
            stale_rejections: self.stale_rejections,
        };
        self.progress.send_replace(progress);
    }

    /// Applies one command to `batch`; the floor rule makes every replica decide alike.
    fn apply_command(&mut self, command: TabletCommand, batch: &mut WriteBatch) -> TabletResponse {
        match command {
            TabletCommand::Write { ts, mutations } => {
                let floor = self.applied.floor;
                if ts <= floor {
                    self.stale_rejections += 1;
                    return TabletResponse::StaleTimestamp { ts, floor };
                }
                for mutation in mutations {
                    match mutation.value {
                        Some(value) => self.mvcc.put(batch, &mutation.key, ts, &value),
                        None => self.mvcc.delete(batch, &mutation.key, ts),
                    }
                }
                self.applied.floor = ts;
                TabletResponse::Applied
            }
            TabletCommand::Close { ts } => {
                self.applied.floor = self.applied.floor.max(ts);
                TabletResponse::Applied
            }
        }
    }

    fn write_applied(&self, mut batch: WriteBatch) -> io::Result<()> {
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
                EntryPayload::Normal(command) => self.apply_command(command, &mut batch),
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
                gc_watermark: self.mvcc.gc_watermark(),
                versions,
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
        self.applied = AppliedState {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            floor: payload.floor,
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
