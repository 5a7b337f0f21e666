//! A tablet's Raft log and vote in the node's `raft_log` column family.
//!
//! Keys: `'r' ++ tablet (8 bytes) ++ kind (1 byte) [++ index (8 bytes, big-endian)]`, so
//! one group's state is contiguous and its entries are in index order. Every call is one
//! atomic RocksDB batch; appends, votes, truncations and purges are fsync'd before they
//! report success, because Raft counts a replica's acknowledgement as a durable copy.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::OptionalSend;
use openraft::alias::{EntryOf, LogIdOf, VoteOf};
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use storage::{Cf, Engine, WriteBatch};

use super::TypeConfig;
use super::codec::{decode, encode};
use crate::TabletId;

const VOTE: u8 = 0x01;
const COMMITTED: u8 = 0x02;
const PURGED: u8 = 0x03;
const ENTRY: u8 = 0x10;

/// One tablet's log; clones share the engine.
#[derive(Debug, Clone)]
pub(crate) struct LogStore {
    engine: Arc<Engine>,
    prefix: Vec<u8>,
}

fn to_io(e: storage::StorageError) -> io::Error {
    io::Error::other(e)
}

impl LogStore {
    pub(crate) fn new(engine: Arc<Engine>, tablet: TabletId) -> Self {
        let mut prefix = vec![b'r'];
        prefix.extend_from_slice(&tablet.0.to_be_bytes());
        LogStore { engine, prefix }
    }

    fn key(&self, kind: u8) -> Vec<u8> {
        let mut key = self.prefix.clone();
        key.push(kind);
        key
    }

    fn entry_key(&self, index: u64) -> Vec<u8> {
        let mut key = self.key(ENTRY);
        key.extend_from_slice(&index.to_be_bytes());
        key
    }

    /// Just above every entry key of this group.
    fn entries_end(&self) -> Vec<u8> {
        self.key(ENTRY + 1)
    }

    fn read<T: serde::de::DeserializeOwned>(&self, kind: u8) -> io::Result<Option<T>> {
        match self
            .engine
            .get(Cf::RaftLog, &self.key(kind))
            .map_err(to_io)?
        {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Writes a batch off the async runtime's threads (an fsync blocks).
    async fn write(&self, batch: WriteBatch, sync: bool) -> io::Result<()> {
        let engine = Arc::clone(&self.engine);
        tokio::task::spawn_blocking(move || engine.write(batch, sync))
            .await
            .map_err(io::Error::other)?
            .map_err(to_io)
    }

    /// Removes this group's whole log and vote (when the replica is destroyed).
    pub(crate) fn stage_destroy(&self, batch: &mut WriteBatch) {
        batch.delete_range(Cf::RaftLog, self.prefix.clone(), self.entries_end());
    }
}

fn index_bounds<RB: RangeBounds<u64>>(range: &RB) -> (u64, Option<u64>) {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e.checked_add(1),
        Bound::Excluded(&e) => Some(e),
        Bound::Unbounded => None,
    };
    (start, end)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> io::Result<Vec<EntryOf<TypeConfig>>> {
        let (start, end) = index_bounds(&range);
        let upper = end.map_or_else(|| self.entries_end(), |e| self.entry_key(e));
        let rows = self
            .engine
            .scan_raw(
                Cf::RaftLog,
                &self.entry_key(start),
                Some(&upper),
                usize::MAX,
            )
            .map_err(to_io)?;
        rows.iter().map(|(_, value)| decode(value)).collect()
    }

    async fn read_vote(&mut self) -> io::Result<Option<VoteOf<TypeConfig>>> {
        self.read(VOTE)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> io::Result<LogState<TypeConfig>> {
        let last_purged_log_id: Option<LogIdOf<TypeConfig>> = self.read(PURGED)?;
        let last = self
            .engine
            .last_in_range(Cf::RaftLog, &self.entry_key(0), &self.entries_end())
            .map_err(to_io)?;
        let last_log_id = match last {
            Some((_, value)) => Some(decode::<EntryOf<TypeConfig>>(&value)?.log_id()),
            None => last_purged_log_id,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &VoteOf<TypeConfig>) -> io::Result<()> {
        let mut batch = WriteBatch::new();
        batch.put(Cf::RaftLog, self.key(VOTE), encode(vote)?);
        self.write(batch, true).await
    }

    async fn save_committed(&mut self, committed: Option<LogIdOf<TypeConfig>>) -> io::Result<()> {
        // Not synced: after a crash Raft re-learns the commit index from the leader; this
        // only lets a restarted replica re-apply what it knew was committed sooner.
        let mut batch = WriteBatch::new();
        batch.put(Cf::RaftLog, self.key(COMMITTED), encode(&committed)?);
        self.write(batch, false).await
    }

    async fn read_committed(&mut self) -> io::Result<Option<LogIdOf<TypeConfig>>> {
        Ok(self
            .read::<Option<LogIdOf<TypeConfig>>>(COMMITTED)?
            .flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> io::Result<()>
    where
        I: IntoIterator<Item = EntryOf<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = WriteBatch::new();
        for entry in entries {
            batch.put(Cf::RaftLog, self.entry_key(entry.index()), encode(&entry)?);
        }
        // Durable before Raft hears it is: the callback counts this copy toward a majority.
        let result = self.write(batch, true).await;
        let reported = result
            .as_ref()
            .map(|_| ())
            .map_err(|e| io::Error::new(e.kind(), e.to_string()));
        callback.io_completed(reported);
        result
    }

    async fn truncate_after(&mut self, last: Option<LogIdOf<TypeConfig>>) -> io::Result<()> {
        let from = last.map_or(0, |id| id.index + 1);
        let mut batch = WriteBatch::new();
        batch.delete_range(Cf::RaftLog, self.entry_key(from), self.entries_end());
        self.write(batch, true).await
    }

    async fn purge(&mut self, log_id: LogIdOf<TypeConfig>) -> io::Result<()> {
        let mut batch = WriteBatch::new();
        batch.put(Cf::RaftLog, self.key(PURGED), encode(&log_id)?);
        batch.delete_range(
            Cf::RaftLog,
            self.entry_key(0),
            self.entry_key(log_id.index + 1),
        );
        // Synced: this also makes every earlier (unsynced) state machine write durable, as
        // RocksDB has one write-ahead log. The purged entries are then never needed again.
        self.write(batch, true).await
    }
}
