//! SQL for Meridian: statements parsed with sqlparser, a catalog stored in the database
//! itself, plans that turn primary-key predicates into point lookups and range scans, and
//! execution over a transaction's key-value interface.
//!
//! The layer knows nothing of tablets, Raft or the network: it runs statements against a
//! [`Backend`] that begins transactions ([`KvTxn`]). The server implements it over the
//! transaction layer; tests use an in-memory one.

mod kv;

pub use kv::{Backend, Kv, KvError, KvFuture, KvTxn, TimestampBound, TxnMode, TxnPriority};
