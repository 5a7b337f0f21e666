//! What a tablet's Raft log carries. Every timestamp in a command was chosen by the leader
//! that proposed it; replicas apply commands and never read a clock.

use std::fmt;

use serde::{Deserialize, Serialize};
use truetime::Timestamp;

/// One row change.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mutation {
    /// The row's key.
    pub key: Vec<u8>,
    /// The new value, or `None` to delete the row.
    pub value: Option<Vec<u8>>,
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
}

impl TabletCommand {
    /// The timestamp the command carries.
    pub fn ts(&self) -> Timestamp {
        match self {
            TabletCommand::Write { ts, .. } | TabletCommand::Close { ts } => *ts,
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
}
