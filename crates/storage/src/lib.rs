//! Storage: MVCC rows on RocksDB.
//!
//! - [`key`]: order-preserving encoding of composite SQL keys (byte order = SQL order).
//! - [`Engine`]: one RocksDB per node, with column families for MVCC data, Raft logs and
//!   metadata; atomic [`WriteBatch`]es with an fsync option; fail-stop after an I/O error.
//! - [`Mvcc`]: versions keyed by (key, timestamp descending); reads and scans at a
//!   timestamp; GC below a watermark.
//!
//! This crate knows nothing of Raft, transactions or the network: the tablet layer decides
//! what is written at which timestamp, and this layer makes it durable and readable.

mod engine;
mod error;
pub mod key;
mod mvcc;

pub use engine::{Cf, Engine, EngineOptions, WriteBatch, prefix_successor};
pub use error::{Result, StorageError};
pub use mvcc::{GcStats, KeyRange, Mvcc, ScanDirection, ScanPage};
