//! [`Engine`]: one RocksDB per node, with a column family for each kind of data.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use rocksdb::{ColumnFamilyDescriptor, DB, DBRawIterator, Options, ReadOptions, WriteOptions};

use crate::error::{Result, StorageError};

/// The column families of a node's RocksDB. Each kind of data gets its own, so that each can
/// be tuned (the Raft log is written once and read rarely; MVCC data is scanned) and so that
/// one kind's compactions do not rewrite another's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cf {
    /// MVCC rows of every tablet on the node.
    Data,
    /// Raft logs, votes and other per-group Raft state.
    RaftLog,
    /// Node and tablet metadata, GC watermarks.
    Meta,
}

impl Cf {
    /// Every column family, in a fixed order.
    pub const ALL: [Cf; 3] = [Cf::Data, Cf::RaftLog, Cf::Meta];

    /// The column family's name in RocksDB.
    pub fn name(self) -> &'static str {
        match self {
            Cf::Data => "data",
            Cf::RaftLog => "raft_log",
            Cf::Meta => "meta",
        }
    }
}

/// Tuning for [`Engine::open`].
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Bytes of memtable per column family before a flush.
    pub write_buffer_bytes: usize,
    /// Background compaction and flush threads.
    pub background_jobs: i32,
}

impl Default for EngineOptions {
    fn default() -> Self {
        // Small by default: a node with many tablets shares one engine, and tests run several
        // nodes in one process.
        EngineOptions {
            write_buffer_bytes: 16 << 20,
            background_jobs: 2,
        }
    }
}

/// A node's RocksDB. Fail-stop: the first failed write stops it, and every later call returns
/// [`StorageError::Stopped`].
pub struct Engine {
    db: DB,
    path: PathBuf,
    stopped: AtomicBool,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Atomic writes across column families: all land or none do.
#[derive(Default)]
pub struct WriteBatch {
    ops: Vec<BatchOp>,
}

enum BatchOp {
    Put(Cf, Vec<u8>, Vec<u8>),
    Delete(Cf, Vec<u8>),
    DeleteRange(Cf, Vec<u8>, Vec<u8>),
}

impl fmt::Debug for WriteBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteBatch")
            .field("len", &self.len())
            .finish()
    }
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stages `key = value` in `cf`.
    pub fn put(&mut self, cf: Cf, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push(BatchOp::Put(cf, key.into(), value.into()));
    }

    /// Stages the removal of `key` from `cf`.
    pub fn delete(&mut self, cf: Cf, key: impl Into<Vec<u8>>) {
        self.ops.push(BatchOp::Delete(cf, key.into()));
    }

    /// Stages the removal of every key of `cf` in `[from, to)`.
    pub fn delete_range(&mut self, cf: Cf, from: impl Into<Vec<u8>>, to: impl Into<Vec<u8>>) {
        self.ops
            .push(BatchOp::DeleteRange(cf, from.into(), to.into()));
    }

    /// Number of staged operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether nothing is staged.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Engine {
    /// Opens (creating if missing) the engine at `path`, with every [`Cf`].
    pub fn open(path: impl AsRef<Path>, options: &EngineOptions) -> Result<Engine> {
        let path = path.as_ref().to_path_buf();
        let mut db_options = Options::default();
        db_options.create_if_missing(true);
        db_options.create_missing_column_families(true);
        db_options.set_max_background_jobs(options.background_jobs);
        // Detect torn or corrupt files at open rather than serve them.
        db_options.set_paranoid_checks(true);
        let descriptors = Cf::ALL.iter().map(|cf| {
            let mut cf_options = Options::default();
            cf_options.set_write_buffer_size(options.write_buffer_bytes);
            ColumnFamilyDescriptor::new(cf.name(), cf_options)
        });
        let db = DB::open_cf_descriptors(&db_options, &path, descriptors)?;
        Ok(Engine {
            db,
            path,
            stopped: AtomicBool::new(false),
        })
    }

    /// The directory the engine lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn check_running(&self) -> Result<()> {
        if self.stopped.load(Ordering::Acquire) {
            return Err(StorageError::Stopped);
        }
        Ok(())
    }

    /// Marks the engine stopped if `result` is an I/O error.
    fn fail_stop<T>(&self, result: std::result::Result<T, rocksdb::Error>) -> Result<T> {
        result.map_err(|e| {
            self.stopped.store(true, Ordering::Release);
            tracing::error!(error = %e, path = %self.path.display(), "storage I/O failed; engine stopped");
            StorageError::Io(e)
        })
    }

    pub(crate) fn handle(&self, cf: Cf) -> Result<&rocksdb::ColumnFamily> {
        self.db
            .cf_handle(cf.name())
            .ok_or_else(|| StorageError::Corruption {
                what: format!("column family {} is missing", cf.name()),
            })
    }

    /// Applies `batch` atomically. With `sync`, the write-ahead log is fsync'd before this
    /// returns: the batch survives a crash of the machine, not only of the process.
    pub fn write(&self, batch: WriteBatch, sync: bool) -> Result<()> {
        self.check_running()?;
        let mut inner = rocksdb::WriteBatch::default();
        for op in batch.ops {
            match op {
                BatchOp::Put(cf, key, value) => inner.put_cf(self.handle(cf)?, key, value),
                BatchOp::Delete(cf, key) => inner.delete_cf(self.handle(cf)?, key),
                BatchOp::DeleteRange(cf, from, to) => {
                    inner.delete_range_cf(self.handle(cf)?, from, to)
                }
            }
        }
        let mut write_options = WriteOptions::default();
        write_options.set_sync(sync);
        self.fail_stop(self.db.write_opt(inner, &write_options))
    }

    /// The value of `key` in `cf`.
    pub fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.check_running()?;
        self.fail_stop(self.db.get_cf(self.handle(cf)?, key))
    }

    /// A raw iterator over `cf` limited to `[lower, upper)` (None: unbounded).
    pub(crate) fn raw_iterator(
        &self,
        cf: Cf,
        lower: Option<Vec<u8>>,
        upper: Option<Vec<u8>>,
    ) -> Result<DBRawIterator<'_>> {
        self.check_running()?;
        let mut read_options = ReadOptions::default();
        if let Some(lower) = lower {
            read_options.set_iterate_lower_bound(lower);
        }
        if let Some(upper) = upper {
            read_options.set_iterate_upper_bound(upper);
        }
        Ok(self.db.raw_iterator_cf_opt(self.handle(cf)?, read_options))
    }

    /// Turns an iterator's end into an error if it ended because of one.
    pub(crate) fn iterator_status(&self, iter: &DBRawIterator<'_>) -> Result<()> {
        self.fail_stop(iter.status())
    }

    /// Key-value pairs of `cf` in `[lower, upper)`, in key order, at most `limit` of them.
    pub fn scan_raw(
        &self,
        cf: Cf,
        lower: &[u8],
        upper: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut iter = self.raw_iterator(cf, Some(lower.to_vec()), upper.map(<[u8]>::to_vec))?;
        iter.seek(lower);
        let mut out = Vec::new();
        while out.len() < limit {
            match (iter.key(), iter.value()) {
                (Some(k), Some(v)) => out.push((k.to_vec(), v.to_vec())),
                _ => break,
            }
            iter.next();
        }
        self.iterator_status(&iter)?;
        Ok(out)
    }
}

impl Engine {
    /// The last key-value pair of `cf` in `[lower, upper)`.
    pub fn last_in_range(
        &self,
        cf: Cf,
        lower: &[u8],
        upper: &[u8],
    ) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        let mut iter = self.raw_iterator(cf, Some(lower.to_vec()), Some(upper.to_vec()))?;
        iter.seek_to_last();
        let last = match (iter.key(), iter.value()) {
            (Some(k), Some(v)) => Some((k.to_vec(), v.to_vec())),
            _ => None,
        };
        self.iterator_status(&iter)?;
        Ok(last)
    }
}

/// The smallest key greater than every key starting with `prefix`, or `None` if there is
/// none (`prefix` is empty or all `0xFF`).
pub fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut out = prefix.to_vec();
    while let Some(last) = out.pop() {
        if last < 0xFF {
            out.push(last + 1);
            return Some(out);
        }
    }
    None
}
