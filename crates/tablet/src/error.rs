//! [`TabletError`]: what a tablet operation can fail with, split by what the caller can do.

use truetime::Timestamp;

use crate::{NodeId, TabletId};

/// A tablet operation's failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TabletError {
    /// This replica is not the leader; retry at `leader` if known.
    #[error("{tablet}: this replica is not the leader (leader: {leader:?}); retry there")]
    NotLeader {
        /// The tablet.
        tablet: TabletId,
        /// The leader, if this replica knows it.
        leader: Option<NodeId>,
    },
    /// A key outside the tablet's range: the caller's placement is stale (the tablet was
    /// split). Nothing was read or written; refresh placement and retry.
    #[error("{tablet}: the key is outside this tablet's range; refresh placement and retry")]
    OutOfRange {
        /// The tablet.
        tablet: TabletId,
    },
    /// A split was refused (nothing changed).
    #[error("{tablet}: split refused: {reason}")]
    SplitRefused {
        /// The tablet.
        tablet: TabletId,
        /// Why.
        reason: String,
    },
    /// The tablet is not hosted on this node.
    #[error("{0}: no replica of this tablet on this node; refresh placement")]
    NotFound(TabletId),
    /// The write's outcome is unknown (leadership changed while it was in flight). It may or
    /// may not have been applied: retry only if the operation is idempotent.
    #[error("{tablet}: outcome unknown after a leader change; the write may have been applied")]
    Indeterminate {
        /// The tablet.
        tablet: TabletId,
    },
    /// A timestamp was rejected because the tablet had moved past it; safe to retry.
    #[error("{tablet}: timestamp {ts} is at or below the tablet's floor {floor}; retry")]
    StaleTimestamp {
        /// The tablet.
        tablet: TabletId,
        /// The rejected timestamp.
        ts: Timestamp,
        /// The floor.
        floor: Timestamp,
    },
    /// The transaction's outcome was already decided here; it cannot prepare again.
    #[error("{tablet}: {txn:?} was already decided; it cannot prepare again")]
    AlreadyDecided {
        /// The tablet.
        tablet: TabletId,
        /// The transaction.
        txn: locks::TxnId,
    },
    /// A read above this replica's safe time did not become safe within the deadline.
    #[error(
        "{tablet}: read at {ts} is above safe time {safe} on {node} \
         (applied up to {paxos_safe}, {prepared} prepared transaction(s) undecided); \
         retry later or at the leader"
    )]
    NotYetSafe {
        /// The tablet.
        tablet: TabletId,
        /// The replica's node.
        node: crate::NodeId,
        /// The read timestamp.
        ts: Timestamp,
        /// This replica's safe time.
        safe: Timestamp,
        /// Its `t_paxos_safe`: a safe time below it is held by prepared transactions.
        paxos_safe: Timestamp,
        /// Prepared transactions awaiting their outcome here.
        prepared: usize,
    },
    /// The clock cannot bound the time: no timestamps are assigned.
    #[error(transparent)]
    Clock(#[from] truetime::ClockError),
    /// Storage failed: fatal for this node.
    #[error(transparent)]
    Storage(#[from] storage::StorageError),
    /// The Raft group failed or stopped (a storage error inside Raft, a panic, a shutdown).
    /// Retryable: the node reopens a group that stopped on its own, and other replicas
    /// carry on meanwhile.
    #[error("{tablet}: raft group stopped: {reason}")]
    RaftStopped {
        /// The tablet.
        tablet: TabletId,
        /// What openraft reported.
        reason: String,
    },
    /// A membership change could not be made now.
    #[error("{tablet}: membership change refused: {reason}")]
    Membership {
        /// The tablet.
        tablet: TabletId,
        /// Why.
        reason: String,
    },
}

impl TabletError {
    /// Whether retrying (possibly elsewhere) can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            TabletError::NotLeader { .. }
                | TabletError::OutOfRange { .. }
                | TabletError::SplitRefused { .. }
                | TabletError::StaleTimestamp { .. }
                | TabletError::NotYetSafe { .. }
                | TabletError::Clock(_)
                | TabletError::Membership { .. }
                | TabletError::RaftStopped { .. }
        )
    }
}

/// The tablet layer's result.
pub type Result<T, E = TabletError> = std::result::Result<T, E>;
