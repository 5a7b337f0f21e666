//! Multi-version rows: every write is a new version of its key at a timestamp, and a read at
//! timestamp `t` sees, for each key, the newest version at or below `t`.
//!
//! # Layout
//!
//! In [`Cf::Data`], one RocksDB entry per version:
//!
//! ```text
//! keyspace ++ escape(user_key) ++ !timestamp (8 bytes, big-endian)  =>  kind ++ value
//! ```
//!
//! `escape` (see [`crate::key::encode`]) keeps user keys in order and prefix-free, so all
//! versions of a key are adjacent; the inverted timestamp puts the newest version first, so a
//! read at `t` is one seek to `(key, t)`. `kind` is `PUT` or `TOMBSTONE`.
//!
//! # GC
//!
//! [`Mvcc::gc`] removes versions no read at or above the watermark can see: for each key it
//! keeps every version above the watermark and the newest one at or below it (dropping that
//! one too if it is a tombstone). The watermark is persisted before anything is removed, and
//! reads below it fail with [`StorageError::BelowGcWatermark`] instead of returning a
//! history with holes in it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use truetime::Timestamp;

use crate::engine::{Cf, Engine, WriteBatch, prefix_successor};
use crate::error::{Result, StorageError};
use crate::key::encode::{escape_into, unescape};

const PUT: u8 = 1;
const TOMBSTONE: u8 = 0;
const TS_LEN: usize = 8;
/// How many versions one GC batch removes at most (whole keys only, see [`Mvcc::gc`]).
const GC_BATCH_VERSIONS: usize = 1024;

/// A half-open range of user keys `[start, end)`; `end: None` is unbounded.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyRange {
    /// First key included.
    pub start: Vec<u8>,
    /// First key excluded, or `None` for no upper bound.
    pub end: Option<Vec<u8>>,
}

impl KeyRange {
    /// Every key.
    pub fn all() -> Self {
        KeyRange::default()
    }

    /// `[start, end)`.
    pub fn new(start: impl Into<Vec<u8>>, end: impl Into<Vec<u8>>) -> Self {
        KeyRange {
            start: start.into(),
            end: Some(end.into()),
        }
    }

    /// `[start, ∞)`.
    pub fn from(start: impl Into<Vec<u8>>) -> Self {
        KeyRange {
            start: start.into(),
            end: None,
        }
    }

    /// Whether `key` lies in the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_slice() && self.end.as_deref().is_none_or(|end| key < end)
    }
}

/// Which way a scan walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ScanDirection {
    /// Ascending keys.
    #[default]
    Forward,
    /// Descending keys.
    Reverse,
}

/// One page of a scan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanPage {
    /// `(key, value)` pairs in scan order.
    pub rows: Vec<(Vec<u8>, Vec<u8>)>,
    /// Set when the page stopped at the limit: scan on from here. Forward: the new (inclusive)
    /// start; reverse: the new (exclusive) end. A further page may be empty.
    pub resume_key: Option<Vec<u8>>,
}

/// What a GC pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcStats {
    /// Versions examined.
    pub versions_seen: u64,
    /// Versions removed.
    pub versions_removed: u64,
}

/// The MVCC rows of one keyspace (a byte prefix that no other keyspace's prefix starts
/// with; empty for the whole column family). Use one `Mvcc` per keyspace: it caches the GC
/// watermark.
#[derive(Debug)]
pub struct Mvcc {
    engine: Arc<Engine>,
    keyspace: Vec<u8>,
    gc_watermark: AtomicU64,
}

fn watermark_key(keyspace: &[u8]) -> Vec<u8> {
    let mut key = b"gc_watermark/".to_vec();
    key.extend_from_slice(keyspace);
    key
}

fn corrupt(what: &str) -> StorageError {
    StorageError::Corruption {
        what: what.to_string(),
    }
}

impl Mvcc {
    /// The rows under `keyspace` in `engine`.
    pub fn open(engine: Arc<Engine>, keyspace: impl Into<Vec<u8>>) -> Result<Mvcc> {
        let keyspace = keyspace.into();
        let watermark = match engine.get(Cf::Meta, &watermark_key(&keyspace))? {
            None => Timestamp::ZERO,
            Some(bytes) => Timestamp::from_be_bytes(
                bytes
                    .try_into()
                    .map_err(|_| corrupt("GC watermark is not 8 bytes"))?,
            ),
        };
        Ok(Mvcc {
            engine,
            keyspace,
            gc_watermark: AtomicU64::new(watermark.as_nanos()),
        })
    }

    /// The engine underneath.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Reads below this timestamp are refused: GC may have removed versions they need.
    pub fn gc_watermark(&self) -> Timestamp {
        Timestamp::from_nanos(self.gc_watermark.load(Ordering::Acquire))
    }

    /// `keyspace ++ escape(key)`: the prefix every version of `key` starts with.
    fn encode_user_key(&self, key: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.keyspace.len() + key.len() + 2 + TS_LEN);
        out.extend_from_slice(&self.keyspace);
        escape_into(&mut out, key);
        out
    }

    fn version_key(&self, key: &[u8], ts: Timestamp) -> Vec<u8> {
        let mut out = self.encode_user_key(key);
        out.extend_from_slice(&(!ts.as_nanos()).to_be_bytes());
        out
    }

    /// Splits an entry's key into (encoded user key with keyspace, timestamp).
    fn split_version_key<'k>(&self, key: &'k [u8]) -> Result<(&'k [u8], Timestamp)> {
        if key.len() < self.keyspace.len() + 2 + TS_LEN || !key.starts_with(&self.keyspace) {
            return Err(corrupt("MVCC key too short or outside its keyspace"));
        }
        let (user, ts) = key.split_at(key.len() - TS_LEN);
        let ts = u64::from_be_bytes(ts.try_into().map_err(|_| corrupt("MVCC timestamp"))?);
        Ok((user, Timestamp::from_nanos(!ts)))
    }

    fn decode_user_key(&self, encoded: &[u8]) -> Result<Vec<u8>> {
        let (key, used) = unescape(&encoded[self.keyspace.len()..])?;
        if self.keyspace.len() + used != encoded.len() {
            return Err(corrupt("trailing bytes in MVCC key"));
        }
        Ok(key)
    }

    /// Stages a new version `key = value` at `ts`.
    pub fn put(&self, batch: &mut WriteBatch, key: &[u8], ts: Timestamp, value: &[u8]) {
        let mut encoded = Vec::with_capacity(1 + value.len());
        encoded.push(PUT);
        encoded.extend_from_slice(value);
        batch.put(Cf::Data, self.version_key(key, ts), encoded);
    }

    /// Stages a tombstone for `key` at `ts`: reads at or above `ts` do not see it.
    pub fn delete(&self, batch: &mut WriteBatch, key: &[u8], ts: Timestamp) {
        batch.put(Cf::Data, self.version_key(key, ts), vec![TOMBSTONE]);
    }

    fn check_read_ts(&self, read_ts: Timestamp) -> Result<()> {
        let watermark = self.gc_watermark();
        if read_ts < watermark {
            return Err(StorageError::BelowGcWatermark { read_ts, watermark });
        }
        Ok(())
    }

    fn keyspace_end(&self) -> Option<Vec<u8>> {
        prefix_successor(&self.keyspace)
    }

    /// The value of `key` at `read_ts`: its newest version at or below `read_ts`.
    pub fn get(&self, key: &[u8], read_ts: Timestamp) -> Result<Option<Vec<u8>>> {
        self.check_read_ts(read_ts)?;
        let user = self.encode_user_key(key);
        let mut iter = self
            .engine
            .raw_iterator(Cf::Data, None, self.keyspace_end())?;
        iter.seek(self.version_key(key, read_ts));
        let found = match (iter.key(), iter.value()) {
            (Some(k), Some(v)) if k.len() == user.len() + TS_LEN && k.starts_with(&user) => {
                decode_value(v)?
            }
            _ => None,
        };
        self.engine.iterator_status(&iter)?;
        Ok(found)
    }

    /// The rows of `range` visible at `read_ts`, in `direction`, at most `limit` of them.
    pub fn scan(
        &self,
        range: &KeyRange,
        read_ts: Timestamp,
        limit: usize,
        direction: ScanDirection,
    ) -> Result<ScanPage> {
        self.check_read_ts(read_ts)?;
        if limit == 0 {
            return Err(StorageError::InvalidArgument(
                "scan limit must be at least 1".into(),
            ));
        }
        match direction {
            ScanDirection::Forward => self.scan_forward(range, read_ts, limit),
            ScanDirection::Reverse => self.scan_reverse(range, read_ts, limit),
        }
    }

    fn upper_bound(&self, range: &KeyRange) -> Option<Vec<u8>> {
        match &range.end {
            Some(end) => Some(self.encode_user_key(end)),
            None => self.keyspace_end(),
        }
    }

    fn scan_forward(&self, range: &KeyRange, read_ts: Timestamp, limit: usize) -> Result<ScanPage> {
        let lower = self.encode_user_key(&range.start);
        let mut iter =
            self.engine
                .raw_iterator(Cf::Data, Some(lower.clone()), self.upper_bound(range))?;
        let mut page = ScanPage::default();
        iter.seek(&lower);
        while let (Some(k), Some(v)) = (iter.key(), iter.value()) {
            let (user, ts) = self.split_version_key(k)?;
            if ts > read_ts {
                // Too new: jump to this key's newest version at or below `read_ts`.
                let mut target = user.to_vec();
                target.extend_from_slice(&(!read_ts.as_nanos()).to_be_bytes());
                iter.seek(&target);
                continue;
            }
            let user = user.to_vec();
            if let Some(value) = decode_value(v)? {
                page.rows.push((self.decode_user_key(&user)?, value));
            }
            if page.rows.len() == limit {
                let mut resume = page.rows[limit - 1].0.clone();
                resume.push(0); // the smallest key after the last one returned
                page.resume_key = Some(resume);
                break;
            }
            iter.seek(next_user_key(&user));
        }
        self.engine.iterator_status(&iter)?;
        Ok(page)
    }

    fn scan_reverse(&self, range: &KeyRange, read_ts: Timestamp, limit: usize) -> Result<ScanPage> {
        let lower = self.encode_user_key(&range.start);
        let mut iter = self
            .engine
            .raw_iterator(Cf::Data, Some(lower), self.upper_bound(range))?;
        let mut page = ScanPage::default();
        iter.seek_to_last();
        while let Some(k) = iter.key() {
            // Landed on some version of a key (the oldest); look up its visible one.
            let (user, _) = self.split_version_key(k)?;
            let user = user.to_vec();
            let mut target = user.clone();
            target.extend_from_slice(&(!read_ts.as_nanos()).to_be_bytes());
            iter.seek(&target);
            if let (Some(k), Some(v)) = (iter.key(), iter.value())
                && k.len() == target.len()
                && k.starts_with(&user)
                && let Some(value) = decode_value(v)?
            {
                page.rows.push((self.decode_user_key(&user)?, value));
            }
            if page.rows.len() == limit {
                page.resume_key = Some(page.rows[limit - 1].0.clone());
                break;
            }
            // Everything before this key's first version: `keyspace ++ escape(key)` without
            // its terminator sorts below that version and above every smaller key.
            iter.seek_for_prev(&user[..user.len() - 2]);
        }
        self.engine.iterator_status(&iter)?;
        Ok(page)
    }

    /// Every stored version of the keyspace, as opaque `(key, value)` pairs relative to the
    /// keyspace, for a snapshot. Pair with [`Mvcc::stage_replace_all`] on the receiver.
    pub fn export_versions(&self) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let upper = self.keyspace_end();
        let mut rows =
            self.engine
                .scan_raw(Cf::Data, &self.keyspace, upper.as_deref(), usize::MAX)?;
        for (key, _) in &mut rows {
            key.drain(..self.keyspace.len());
        }
        Ok(rows)
    }

    /// Stages the replacement of the whole keyspace by `versions` from
    /// [`Mvcc::export_versions`], and of the GC watermark by `watermark`. Applied with the
    /// rest of `batch`, atomically. Call [`Mvcc::reload_gc_watermark`] after the write.
    pub fn stage_replace_all(
        &self,
        batch: &mut WriteBatch,
        versions: Vec<(Vec<u8>, Vec<u8>)>,
        watermark: Timestamp,
    ) {
        let end = self
            .keyspace_end()
            .unwrap_or_else(|| vec![0xFF; self.keyspace.len() + 1]);
        batch.delete_range(Cf::Data, self.keyspace.clone(), end);
        for (key, value) in versions {
            let mut full = self.keyspace.clone();
            full.extend_from_slice(&key);
            batch.put(Cf::Data, full, value);
        }
        batch.put(
            Cf::Meta,
            watermark_key(&self.keyspace),
            watermark.to_be_bytes().to_vec(),
        );
    }

    /// The raw bounds of every version of every key at or above `from`.
    fn raw_from(&self, from: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let end = self
            .keyspace_end()
            .unwrap_or_else(|| vec![0xFF; self.keyspace.len() + 1]);
        (self.encode_user_key(from), end)
    }

    /// Stages a copy of every version of every key at or above `from` into `to`'s keyspace
    /// (the keys themselves unchanged), with this keyspace's GC watermark: the data half of
    /// a tablet split. Applied with the rest of `batch`, atomically.
    pub fn stage_copy_from(&self, from: &[u8], to: &Mvcc, batch: &mut WriteBatch) -> Result<()> {
        let (start, end) = self.raw_from(from);
        let rows = self
            .engine
            .scan_raw(Cf::Data, &start, Some(&end), usize::MAX)?;
        for (key, value) in rows {
            let mut moved = to.keyspace.clone();
            moved.extend_from_slice(&key[self.keyspace.len()..]);
            batch.put(Cf::Data, moved, value);
        }
        batch.put(
            Cf::Meta,
            watermark_key(&to.keyspace),
            self.gc_watermark().to_be_bytes().to_vec(),
        );
        Ok(())
    }

    /// Stages the removal of every version of every key at or above `from`.
    pub fn stage_delete_from(&self, from: &[u8], batch: &mut WriteBatch) {
        let (start, end) = self.raw_from(from);
        batch.delete_range(Cf::Data, start, end);
    }

    /// Re-reads the GC watermark after [`Mvcc::stage_replace_all`] was written.
    pub fn reload_gc_watermark(&self) -> Result<()> {
        let reloaded = Mvcc::open(Arc::clone(&self.engine), self.keyspace.clone())?;
        self.gc_watermark
            .store(reloaded.gc_watermark().as_nanos(), Ordering::Release);
        Ok(())
    }

    /// Raises the GC watermark to `watermark` (it never falls) and removes the versions no
    /// read at or above it can see. With `sync`, each batch is fsync'd.
    pub fn gc(&self, watermark: Timestamp, sync: bool) -> Result<GcStats> {
        let watermark = watermark.max(self.gc_watermark());
        // Persist the watermark first: from here on, reads below it fail rather than see
        // a history with holes.
        let mut batch = WriteBatch::new();
        batch.put(
            Cf::Meta,
            watermark_key(&self.keyspace),
            watermark.to_be_bytes().to_vec(),
        );
        self.engine.write(batch, sync)?;
        self.gc_watermark
            .fetch_max(watermark.as_nanos(), Ordering::AcqRel);
        self.remove_hidden_versions(watermark, sync)
    }

    fn remove_hidden_versions(&self, watermark: Timestamp, sync: bool) -> Result<GcStats> {
        let lower = self.keyspace.clone();
        let mut iter =
            self.engine
                .raw_iterator(Cf::Data, Some(lower.clone()), self.keyspace_end())?;
        let mut stats = GcStats::default();
        let mut batch = WriteBatch::new();
        // The key whose versions we are walking, and whether its newest version at or below
        // the watermark has been passed (everything older is hidden).
        let mut current: Option<(Vec<u8>, bool)> = None;
        iter.seek(&lower);
        while let (Some(k), Some(v)) = (iter.key(), iter.value()) {
            let (user, ts) = self.split_version_key(k)?;
            stats.versions_seen += 1;
            if current
                .as_ref()
                .is_none_or(|(key, _)| key.as_slice() != user)
            {
                // A new key. Batches break only here, so that a tombstone and the versions
                // it hides are removed in one atomic write: a crash between batches must not
                // resurrect a deleted row.
                if batch.len() >= GC_BATCH_VERSIONS {
                    self.engine.write(std::mem::take(&mut batch), sync)?;
                }
                current = Some((user.to_vec(), false));
            }
            if let Some((_, passed)) = current.as_mut()
                && ts <= watermark
            {
                let newest_visible = !*passed;
                *passed = true;
                if !newest_visible || v.first() == Some(&TOMBSTONE) {
                    batch.delete(Cf::Data, k.to_vec());
                    stats.versions_removed += 1;
                }
            }
            iter.next();
        }
        self.engine.iterator_status(&iter)?;
        if !batch.is_empty() {
            self.engine.write(batch, sync)?;
        }
        Ok(stats)
    }
}

/// The smallest encoded key above every version of the key encoded as `user`
/// (`…escape(key) 0x00 0x01` becomes `…escape(key) 0x00 0x02`).
fn next_user_key(user: &[u8]) -> Vec<u8> {
    let mut next = user.to_vec();
    if let Some(last) = next.last_mut() {
        *last += 1;
    }
    next
}

fn decode_value(stored: &[u8]) -> Result<Option<Vec<u8>>> {
    match stored.split_first() {
        Some((&PUT, value)) => Ok(Some(value.to_vec())),
        Some((&TOMBSTONE, [])) => Ok(None),
        _ => Err(corrupt("MVCC value has an unknown kind")),
    }
}

#[cfg(test)]
mod tests;
