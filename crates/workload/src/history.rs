//! The optional JSON-lines history of a run: one line per operation, written as operations
//! end, for offline checkers.
//!
//! Times are `Instant` offsets in microseconds since the run started (monotonic, so they
//! order operations in real time on this machine); `commit_ts` and `read_ts` are the
//! database's timestamps (ns since the Unix epoch).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use serde::Serialize;

/// One operation of the history.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// `transfer`, `read-strong` or `read-stale`.
    pub kind: &'static str,
    /// The client task that ran it.
    pub client: usize,
    /// When it started, µs since the run started.
    pub start_us: u64,
    /// When it ended, µs since the run started.
    pub end_us: u64,
    /// `ok`, or the error's code (`aborted`, `indeterminate`, ...).
    pub result: String,
    /// A transfer's commit timestamp.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit_ts: Option<u64>,
    /// A transfer's attempts (1 when the first committed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// A transfer's accounts and amounts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transfer: Option<TransferDetail>,
    /// A read's timestamp.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_ts: Option<u64>,
    /// The balances a read saw, in account order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub balances: Option<Vec<i64>>,
}

/// What a transfer tried and, when it committed, did.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct TransferDetail {
    /// The transfer's id, its key in the transfer log.
    pub id: i64,
    /// The account debited.
    pub from: i64,
    /// The account credited.
    pub to: i64,
    /// The amount asked for.
    pub amount: i64,
    /// The amount moved (never more than `from` had); absent unless it committed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub moved: Option<i64>,
}

/// A history file shared by the client tasks.
#[derive(Debug)]
pub struct History {
    out: Mutex<BufWriter<File>>,
}

impl History {
    /// Creates (or truncates) `path`.
    pub fn create(path: &Path) -> std::io::Result<History> {
        Ok(History {
            out: Mutex::new(BufWriter::new(File::create(path)?)),
        })
    }

    /// Appends one entry.
    pub fn append(&self, entry: &Entry) -> std::io::Result<()> {
        let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        serde_json::to_writer(&mut *out, entry)?;
        out.write_all(b"\n")
    }

    /// Writes out what is buffered.
    pub fn flush(&self) -> std::io::Result<()> {
        self.out
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .flush()
    }
}
