//! What SQL needs from the layers below: transactions over ordered keys, and placement for
//! new tables. Keys and values are opaque bytes here; the SQL layer owns their encoding.

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use truetime::Timestamp;

/// A boxed future returning a [`KvError`] on failure.
pub type KvFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, KvError>> + Send + 'a>>;

/// A failure below SQL, split by what the caller can do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// The transaction was aborted and nothing it wrote is visible: retry it whole.
    #[error("transaction aborted: {0}; retry the transaction")]
    Aborted(String),
    /// A tablet or its leader cannot be reached now; nothing was committed. Retry.
    #[error("unavailable: {0}; retry")]
    Unavailable(String),
    /// The commit was sent but its outcome is unknown: it may have committed.
    #[error("commit outcome unknown: {0}; check before retrying")]
    Indeterminate(String),
    /// A write in a read-only transaction.
    #[error("cannot write in a read-only transaction")]
    ReadOnly,
    /// Something this backend does not do (yet).
    #[error("not supported: {0}")]
    Unsupported(String),
    /// Anything else (a read below the GC watermark, a storage failure).
    #[error("{0}")]
    Failed(String),
}

/// The priority of a read-write transaction under wound-wait: older (smaller) wins. A retry
/// passes its first attempt's priority so it eventually wins every conflict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TxnPriority {
    /// When the first attempt started (`TT.now().latest`).
    pub first_start: Timestamp,
    /// Breaks ties: the first attempt's id.
    pub tiebreak: u64,
}

/// The timestamp a read-only transaction reads at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimestampBound {
    /// Everything committed before the transaction began.
    #[default]
    Strong,
    /// Exactly this far in the past.
    ExactStaleness(Duration),
    /// Whatever the replica can serve without waiting, but no older than this.
    MaxStaleness(Duration),
    /// At this timestamp.
    ReadTimestamp(Timestamp),
    /// At this timestamp or later.
    MinReadTimestamp(Timestamp),
}

/// How to begin a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnMode {
    /// Locking reads, buffered writes, two-phase commit. `priority` is the first attempt's
    /// when this is a retry.
    ReadWrite {
        /// The first attempt's priority, if this is a retry.
        priority: Option<TxnPriority>,
    },
    /// A lock-free snapshot read.
    ReadOnly(TimestampBound),
}

/// Reads and writes inside one transaction. Reads see the transaction's own writes.
pub trait Kv: Send {
    /// The value of `key`, if any.
    fn get<'a>(&'a mut self, key: &'a [u8]) -> KvFuture<'a, Option<Vec<u8>>>;

    /// Rows with `start <= key < end` in ascending key order, at most `limit` of them.
    fn scan<'a>(
        &'a mut self,
        start: &'a [u8],
        end: &'a [u8],
        limit: usize,
    ) -> KvFuture<'a, Vec<(Vec<u8>, Vec<u8>)>>;

    /// Reads a catalog entry. A read-write transaction may answer from a recent committed
    /// snapshot without a lock (the catalog's tablet then takes no part in the commit);
    /// the default is [`Kv::get`].
    fn get_schema<'a>(&'a mut self, key: &'a [u8]) -> KvFuture<'a, Option<Vec<u8>>> {
        self.get(key)
    }

    /// Buffers `key = value`. At commit, the transaction's commit timestamp (nanoseconds
    /// since the Unix epoch, `u64` big-endian, 8 bytes) is written into `value` at each
    /// offset in `commit_ts_at`: that is how `PENDING_COMMIT_TIMESTAMP()` gets its value.
    fn put(
        &mut self,
        key: Vec<u8>,
        value: Vec<u8>,
        commit_ts_at: Vec<usize>,
    ) -> Result<(), KvError>;

    /// Buffers the deletion of `key`.
    fn delete(&mut self, key: Vec<u8>) -> Result<(), KvError>;
}

/// A transaction: [`Kv`] plus its end.
pub trait KvTxn: Kv + Debug {
    /// Commits. Returns the commit timestamp of a read-write transaction (after
    /// commit-wait), `None` for a read-only one.
    fn commit(self: Box<Self>) -> KvFuture<'static, Option<Timestamp>>;

    /// Abandons the transaction and releases its locks.
    fn rollback(self: Box<Self>) -> KvFuture<'static, ()>;

    /// The snapshot timestamp of a read-only transaction, once chosen.
    fn read_timestamp(&self) -> Option<Timestamp>;

    /// The priority of a read-write transaction (pass it to a retry).
    fn priority(&self) -> Option<TxnPriority>;
}

/// Where SQL runs: begins transactions, and gives new tables their own tablets.
pub trait Backend: Send + Sync + Debug {
    /// Begins a transaction.
    fn begin(&self, mode: TxnMode) -> KvFuture<'_, Box<dyn KvTxn>>;

    /// Makes `start..end` (a new table's key range) a tablet of its own. Idempotent: a
    /// range that already is one is left alone.
    fn create_range(&self, start: Vec<u8>, end: Vec<u8>) -> KvFuture<'_, ()>;

    /// Splits the tablets holding `keys` so each key starts a tablet.
    fn split_at(&self, keys: Vec<Vec<u8>>) -> KvFuture<'_, ()>;
}
