//! What a tablet's Raft log carries. Every timestamp in a command was chosen by the leader
//! that proposed it; replicas apply commands and never read a clock.

use std::fmt;

use locks::TxnId;
use serde::{Deserialize, Serialize};
use truetime::Timestamp;

/// One row change.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mutation {
    /// The row's key.
    pub key: Vec<u8>,
    /// The new value, or `None` to delete the row.
    pub value: Option<Vec<u8>>,
    /// Offsets in `value` of 8-byte slots that receive the commit timestamp (nanoseconds,
    /// big-endian) when the mutation is applied: `PENDING_COMMIT_TIMESTAMP()`. Slots that
    /// do not fit in the value are ignored.
    #[serde(default)]
    pub commit_ts_at: Vec<u32>,
}

impl Mutation {
    /// Puts `key = value`.
    pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Mutation {
            key: key.into(),
            value: Some(value.into()),
            commit_ts_at: Vec::new(),
        }
    }

    /// Deletes `key`.
    pub fn delete(key: impl Into<Vec<u8>>) -> Self {
        Mutation {
            key: key.into(),
            value: None,
            commit_ts_at: Vec::new(),
        }
    }

    /// The value as written at `commit_ts`: with the commit timestamp in its slots.
    pub fn stamped_value(&self, commit_ts: Timestamp) -> Option<std::borrow::Cow<'_, [u8]>> {
        let value = self.value.as_deref()?;
        if self.commit_ts_at.is_empty() {
            return Some(std::borrow::Cow::Borrowed(value));
        }
        let mut stamped = value.to_vec();
        for &at in &self.commit_ts_at {
            let at = at as usize;
            if let Some(slot) = stamped.get_mut(at..at.saturating_add(8)) {
                slot.copy_from_slice(&commit_ts.as_nanos().to_be_bytes());
            }
        }
        Some(std::borrow::Cow::Owned(stamped))
    }
}

impl fmt::Debug for Mutation {
    /// Never prints user data: sizes only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(v) => write!(f, "put(key {} B, value {} B)", self.key.len(), v.len()),
            None => write!(f, "delete(key {} B)", self.key.len()),
        }
    }
}

/// A Raft log entry's application payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TabletCommand {
    /// Writes mutations as versions at `ts`, which must exceed every timestamp this tablet has
    /// applied or closed.
    Write {
        /// The commit timestamp of these versions.
        ts: Timestamp,
        /// The row changes.
        mutations: Vec<Mutation>,
    },
    /// A closed timestamp: the leader promises that no later command writes at or below `ts`.
    /// Replicas may then serve snapshot reads at or below it.
    Close {
        /// The promise.
        ts: Timestamp,
    },
    /// Two-phase commit, phase one, on this participant: `txn`'s writes to this tablet are
    /// recorded (not yet visible) with a prepare timestamp chosen by this tablet's leader.
    /// Until the outcome is applied, safe time stays below `prepare_ts`.
    Prepare {
        /// The transaction.
        txn: TxnId,
        /// The tablet whose group records the transaction's outcome; a participant left
        /// without an outcome asks its leader.
        coordinator: crate::TabletId,
        /// Above everything this tablet applied or closed before; `commit_ts >= prepare_ts`.
        prepare_ts: Timestamp,
        /// The transaction's writes to this tablet.
        mutations: Vec<Mutation>,
    },
    /// The outcome of a prepared transaction: its writes become versions at `commit_ts`.
    Commit {
        /// The transaction.
        txn: TxnId,
        /// Chosen by the coordinator, at or above every participant's prepare timestamp.
        commit_ts: Timestamp,
    },
    /// The outcome of a prepared (or unknown) transaction: its writes are dropped.
    Abort {
        /// The transaction.
        txn: TxnId,
    },
    /// Splits the tablet at `at`: every version of the keys at or above `at` moves to the
    /// new tablet `child` (created on every replica of this one as it applies the command),
    /// and this tablet keeps the keys below. Refused while a prepared transaction writes
    /// above `at`.
    Split {
        /// The first key of the new tablet.
        at: Vec<u8>,
        /// The new tablet.
        child: crate::TabletId,
    },
}

impl TabletCommand {
    /// The timestamp the command carries, if any.
    pub fn ts(&self) -> Option<Timestamp> {
        match self {
            TabletCommand::Write { ts, .. } | TabletCommand::Close { ts } => Some(*ts),
            TabletCommand::Prepare { prepare_ts, .. } => Some(*prepare_ts),
            TabletCommand::Commit { commit_ts, .. } => Some(*commit_ts),
            TabletCommand::Abort { .. } | TabletCommand::Split { .. } => None,
        }
    }
}

impl fmt::Display for TabletCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TabletCommand::Write { ts, mutations } => {
                write!(f, "write {} mutations at {ts}", mutations.len())
            }
            TabletCommand::Close { ts } => write!(f, "close {ts}"),
            TabletCommand::Prepare {
                txn,
                prepare_ts,
                mutations,
                ..
            } => {
                write!(
                    f,
                    "prepare {txn:?} ({} mutations) at {prepare_ts}",
                    mutations.len()
                )
            }
            TabletCommand::Commit { txn, commit_ts } => write!(f, "commit {txn:?} at {commit_ts}"),
            TabletCommand::Split { at, child } => {
                write!(f, "split at a {}-byte key into {child}", at.len())
            }
            TabletCommand::Abort { txn } => write!(f, "abort {txn:?}"),
        }
    }
}

/// What applying a command produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TabletResponse {
    /// Entries without an application result (blank, membership).
    None,
    /// The command was applied.
    Applied,
    /// The command's timestamp was not above everything applied or closed before it, so
    /// every replica rejected it alike. The leader that chose it had lost its lease or its
    /// floor; the write had no effect and may be retried with a new timestamp.
    StaleTimestamp {
        /// The rejected timestamp.
        ts: Timestamp,
        /// The tablet's floor when it was rejected.
        floor: Timestamp,
    },
    /// The transaction's outcome was already decided; the command changed nothing. Retried
    /// and duplicated outcome messages land here, so no transaction is applied twice.
    AlreadyDecided {
        /// What was decided: the commit timestamp, or `None` for an abort.
        commit_ts: Option<Timestamp>,
    },
    /// A commit for a transaction this tablet never prepared, or below its prepare timestamp.
    NotPrepared,
    /// A write or prepare with a key outside the tablet's range (the sender's placement was
    /// stale, for instance after a split): nothing was applied.
    OutOfRange,
    /// The tablet is split: keys from the split key on belong to `child`.
    Split {
        /// The tablet holding the upper part.
        child: crate::TabletId,
    },
    /// The split was refused and nothing changed.
    SplitRefused {
        /// Why.
        reason: String,
    },
}

/// A prepared, undecided transaction on a participant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreparedTxn {
    /// Its prepare timestamp.
    pub prepare_ts: Timestamp,
    /// The tablet whose group records its outcome.
    pub coordinator: crate::TabletId,
    /// Its writes to this tablet.
    pub mutations: Vec<Mutation>,
}
