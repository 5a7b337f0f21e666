//! [`TxnError`]: how a transaction can fail, split by what the caller can do.

use locks::TxnId;
use tablet::TabletError;

/// Why a transaction was aborted. Every abort is safe to retry: nothing it wrote is visible.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum AbortReason {
    /// An older transaction needed one of its locks (wound-wait).
    Wounded {
        /// The older transaction.
        by: TxnId,
    },
    /// A tablet's leader changed after it took locks there: the locks are gone.
    LeaderChanged,
    /// A lock did not come within the lock-wait limit.
    LockTimeout,
    /// A participant could not prepare.
    PrepareFailed(String),
    /// The coordinator recorded an abort (for instance, presumed abort after it lost the
    /// transaction).
    Decided,
    /// No keepalive within the configured timeout: the client was presumed gone.
    Expired,
}

/// A transaction's failure.
#[derive(Debug, Clone, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum TxnError {
    /// Aborted; nothing was applied. Retry (with the same priority).
    #[error("transaction aborted ({0:?}); retry it")]
    Aborted(AbortReason),
    /// A tablet or its leader cannot be reached now. Nothing was committed; retry.
    #[error("unavailable: {0}; retry")]
    Unavailable(String),
    /// The commit was sent but its outcome is unknown (the coordinator's leader changed
    /// while it logged the decision). Do not retry blindly: it may have committed.
    #[error("commit outcome unknown: {0}")]
    Indeterminate(String),
    /// A read was refused (for instance, below the GC watermark), or storage failed.
    #[error("{0}")]
    Failed(String),
}

impl TxnError {
    /// Whether the whole transaction can be retried safely.
    pub fn is_retryable(&self) -> bool {
        matches!(self, TxnError::Aborted(_) | TxnError::Unavailable(_))
    }
}

impl From<TabletError> for TxnError {
    fn from(e: TabletError) -> Self {
        match e {
            TabletError::Indeterminate { .. } => TxnError::Indeterminate(e.to_string()),
            TabletError::Storage(_) => TxnError::Failed(e.to_string()),
            e if e.is_retryable() => TxnError::Unavailable(e.to_string()),
            e => TxnError::Unavailable(e.to_string()),
        }
    }
}

impl From<truetime::ClockError> for TxnError {
    fn from(e: truetime::ClockError) -> Self {
        TxnError::Unavailable(e.to_string())
    }
}

/// The transaction layer's result.
pub type Result<T, E = TxnError> = std::result::Result<T, E>;
