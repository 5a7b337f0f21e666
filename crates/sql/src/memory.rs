//! [`MemoryBackend`]: an in-memory [`Backend`] for tests, with multi-version storage,
//! snapshot reads and optimistic read-write transactions.
//!
//! Correct for tests that drive one session at a time (and for several interleaved
//! sessions, which see serializable snapshot behaviour): a read-write transaction reads at
//! its start timestamp, records what it read, and at commit aborts if anything it read has a
//! newer committed version. Time is a logical clock: each commit advances it by
//! [`COMMIT_STEP_NANOS`], and [`MemoryBackend::advance`] moves it on, so stale reads are
//! deterministic. Failures can be injected with [`MemoryBackend::fail_next_commits`].

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use truetime::Timestamp;

use crate::kv::{Backend, Kv, KvError, KvFuture, KvTxn, TimestampBound, TxnMode, TxnPriority};

/// Where the logical clock starts (2023-11-14T22:13:20Z), so timestamps look real.
pub const START_NANOS: u64 = 1_700_000_000_000_000_000;
/// How far each commit advances the logical clock (1 ms).
pub const COMMIT_STEP_NANOS: u64 = 1_000_000;

type Versions = Vec<(u64, Option<Vec<u8>>)>;

#[derive(Debug, Default)]
struct State {
    data: BTreeMap<Vec<u8>, Versions>,
    now: u64,
    next_txn: u64,
    fail_commits: VecDeque<KvError>,
    ranges: Vec<(Vec<u8>, Vec<u8>)>,
    splits: Vec<Vec<u8>>,
    begun: Vec<TxnMode>,
}

impl State {
    fn read(&self, key: &[u8], ts: u64) -> Option<Vec<u8>> {
        let versions = self.data.get(key)?;
        versions
            .iter()
            .rev()
            .find(|(t, _)| *t <= ts)
            .and_then(|(_, v)| v.clone())
    }

    fn changed_after(&self, start: &[u8], end: Option<&[u8]>, ts: u64) -> bool {
        self.data
            .range(start.to_vec()..)
            .take_while(|(k, _)| end.is_none_or(|e| k.as_slice() < e))
            .any(|(_, versions)| versions.iter().any(|(t, _)| *t > ts))
    }
}

/// An in-memory backend; clones share the same store.
#[derive(Clone, Default)]
pub struct MemoryBackend {
    state: Arc<Mutex<State>>,
}

impl fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBackend").finish_non_exhaustive()
    }
}

impl MemoryBackend {
    /// An empty store whose clock is at [`START_NANOS`].
    pub fn new() -> Self {
        let b = MemoryBackend::default();
        b.lock().now = START_NANOS;
        b
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The logical clock's current time.
    pub fn now(&self) -> Timestamp {
        Timestamp::from_nanos(self.lock().now)
    }

    /// Moves the logical clock on by `d`.
    pub fn advance(&self, d: Duration) {
        let mut s = self.lock();
        s.now = s
            .now
            .saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Makes the next commits fail, one per error, with nothing written.
    pub fn fail_next_commits(&self, errors: impl IntoIterator<Item = KvError>) {
        self.lock().fail_commits.extend(errors);
    }

    /// The ranges passed to [`Backend::create_range`], in order.
    pub fn created_ranges(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.lock().ranges.clone()
    }

    /// The modes of every transaction begun, in order.
    pub fn begun_modes(&self) -> Vec<TxnMode> {
        self.lock().begun.clone()
    }

    /// The keys passed to [`Backend::split_at`], in order.
    pub fn split_keys(&self) -> Vec<Vec<u8>> {
        self.lock().splits.clone()
    }
}

impl Backend for MemoryBackend {
    fn begin(&self, mode: TxnMode) -> KvFuture<'_, Box<dyn KvTxn>> {
        let txn = {
            let mut s = self.lock();
            s.next_txn += 1;
            s.begun.push(mode);
            let now = s.now;
            let (read_ts, priority) = match mode {
                TxnMode::ReadWrite { priority } => (
                    now,
                    Some(priority.unwrap_or(TxnPriority {
                        first_start: Timestamp::from_nanos(now),
                        tiebreak: s.next_txn,
                    })),
                ),
                TxnMode::ReadOnly(bound) => (snapshot(bound, now), None),
            };
            MemoryTxn {
                state: self.state.clone(),
                read_ts,
                priority,
                writes: BTreeMap::new(),
                reads: Vec::new(),
            }
        };
        Box::pin(async move { Ok(Box::new(txn) as Box<dyn KvTxn>) })
    }

    fn create_range(&self, start: Vec<u8>, end: Vec<u8>) -> KvFuture<'_, ()> {
        let mut s = self.lock();
        if !s.ranges.iter().any(|(a, b)| *a == start && *b == end) {
            s.ranges.push((start, end));
        }
        Box::pin(async { Ok(()) })
    }

    fn split_at(&self, keys: Vec<Vec<u8>>) -> KvFuture<'_, ()> {
        self.lock().splits.extend(keys);
        Box::pin(async { Ok(()) })
    }
}

fn snapshot(bound: TimestampBound, now: u64) -> u64 {
    let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    match bound {
        TimestampBound::Strong | TimestampBound::MaxStaleness(_) => now,
        TimestampBound::ExactStaleness(d) => now.saturating_sub(nanos(d)),
        TimestampBound::ReadTimestamp(t) => t.as_nanos(),
        TimestampBound::MinReadTimestamp(t) => now.max(t.as_nanos()),
    }
}

type Write = Option<(Vec<u8>, Vec<usize>)>;

/// A transaction of [`MemoryBackend`].
struct MemoryTxn {
    state: Arc<Mutex<State>>,
    read_ts: u64,
    /// `Some` for read-write transactions.
    priority: Option<TxnPriority>,
    writes: BTreeMap<Vec<u8>, Write>,
    /// Read keys and ranges (`end` `None`: a single key).
    reads: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl fmt::Debug for MemoryTxn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryTxn")
            .field("read_ts", &self.read_ts)
            .field("read_write", &self.priority.is_some())
            .finish_non_exhaustive()
    }
}

impl MemoryTxn {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get_now(&mut self, key: &[u8]) -> Option<Vec<u8>> {
        if let Some(w) = self.writes.get(key) {
            return w.as_ref().map(|(v, _)| v.clone());
        }
        if self.priority.is_some() {
            self.reads.push((key.to_vec(), None));
        }
        self.lock().read(key, self.read_ts)
    }

    fn scan_now(&mut self, start: &[u8], end: &[u8], limit: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        if start >= end {
            return Vec::new();
        }
        if self.priority.is_some() {
            self.reads.push((start.to_vec(), Some(end.to_vec())));
        }
        let mut rows: BTreeMap<Vec<u8>, Vec<u8>> = {
            let s = self.lock();
            s.data
                .range(start.to_vec()..end.to_vec())
                .filter_map(|(k, _)| s.read(k, self.read_ts).map(|v| (k.clone(), v)))
                .collect()
        };
        for (k, w) in self.writes.range(start.to_vec()..end.to_vec()) {
            match w {
                Some((v, _)) => rows.insert(k.clone(), v.clone()),
                None => rows.remove(k),
            };
        }
        rows.into_iter().take(limit).collect()
    }

    fn commit_now(self) -> Result<Option<Timestamp>, KvError> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(err) = s.fail_commits.pop_front() {
            return Err(err);
        }
        if self.priority.is_none() {
            return Ok(None);
        }
        for (start, end) in &self.reads {
            let conflict = match end {
                None => s
                    .data
                    .get(start)
                    .is_some_and(|v| v.iter().any(|(t, _)| *t > self.read_ts)),
                Some(end) => s.changed_after(start, Some(end), self.read_ts),
            };
            if conflict {
                return Err(KvError::Aborted(
                    "a row this transaction read changed".into(),
                ));
            }
        }
        s.now = s.now.saturating_add(COMMIT_STEP_NANOS);
        let ts = s.now;
        for (key, write) in self.writes {
            let value = write.map(|(mut v, offsets)| {
                for at in offsets {
                    if let Some(slot) = v.get_mut(at..at + 8) {
                        slot.copy_from_slice(&ts.to_be_bytes());
                    }
                }
                v
            });
            s.data.entry(key).or_default().push((ts, value));
        }
        Ok(Some(Timestamp::from_nanos(ts)))
    }
}

impl Kv for MemoryTxn {
    fn get<'a>(&'a mut self, key: &'a [u8]) -> KvFuture<'a, Option<Vec<u8>>> {
        let v = self.get_now(key);
        Box::pin(async move { Ok(v) })
    }

    fn scan<'a>(
        &'a mut self,
        start: &'a [u8],
        end: &'a [u8],
        limit: usize,
    ) -> KvFuture<'a, Vec<(Vec<u8>, Vec<u8>)>> {
        let rows = self.scan_now(start, end, limit);
        Box::pin(async move { Ok(rows) })
    }

    fn put(
        &mut self,
        key: Vec<u8>,
        value: Vec<u8>,
        commit_ts_at: Vec<usize>,
    ) -> Result<(), KvError> {
        if self.priority.is_none() {
            return Err(KvError::ReadOnly);
        }
        self.writes.insert(key, Some((value, commit_ts_at)));
        Ok(())
    }

    fn delete(&mut self, key: Vec<u8>) -> Result<(), KvError> {
        if self.priority.is_none() {
            return Err(KvError::ReadOnly);
        }
        self.writes.insert(key, None);
        Ok(())
    }
}

impl KvTxn for MemoryTxn {
    fn commit(self: Box<Self>) -> KvFuture<'static, Option<Timestamp>> {
        let r = self.commit_now();
        Box::pin(async move { r })
    }

    fn rollback(self: Box<Self>) -> KvFuture<'static, ()> {
        Box::pin(async { Ok(()) })
    }

    fn read_timestamp(&self) -> Option<Timestamp> {
        self.priority
            .is_none()
            .then(|| Timestamp::from_nanos(self.read_ts))
    }

    fn priority(&self) -> Option<TxnPriority> {
        self.priority
    }
}
