//! [`StorageError`]: everything the storage layer can fail with.

use truetime::Timestamp;

/// A storage failure. I/O failures are fatal: after one, the engine refuses all further work
/// ([`StorageError::Stopped`]) so that nothing is built on a write that may not have landed;
/// the node restarts and recovers from what is durable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// RocksDB reported an error (I/O, or its own corruption checks).
    #[error("storage I/O failed: {0}")]
    Io(#[from] rocksdb::Error),
    /// An earlier I/O failure stopped the engine.
    #[error("storage stopped after an earlier I/O failure; restart the node to recover")]
    Stopped,
    /// Bytes on disk do not decode.
    #[error("corrupt data: {what}")]
    Corruption {
        /// What failed to decode.
        what: String,
    },
    /// A read below the GC watermark, where versions it needs may have been removed.
    #[error(
        "cannot read at {read_ts}: versions below the GC watermark {watermark} are gone; \
         read at or above the watermark"
    )]
    BelowGcWatermark {
        /// The requested read timestamp.
        read_ts: Timestamp,
        /// The keyspace's GC watermark.
        watermark: Timestamp,
    },
    /// The caller passed something the storage layer cannot accept.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl StorageError {
    /// Whether the engine can go on after this error (false: restart the node).
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            StorageError::Io(_) | StorageError::Stopped | StorageError::Corruption { .. }
        )
    }
}

/// The storage layer's result.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;
