//! Transactions: read-write transactions with two-phase locking on tablet leaders and
//! two-phase commit with commit-wait; read-only transactions that take no locks and read a
//! snapshot at or below `t_safe` on any replica.
//!
//! - [`TxnService`] (one per node): lock tables, participant and coordinator, recovery.
//! - [`TxnClient`]: `read_write` with retries keeping the first attempt's priority;
//!   `read_only` at a [`ReadBound`] from a chosen [`ReplicaChoice`].
//! - [`Directory`]: where keys live and who leads each tablet.

mod client;
mod directory;
mod error;
mod metrics;
mod peer;
mod service;

pub use client::{ReadBound, ReadOnlyTxn, ReplicaChoice, Transaction, TxnClient, TxnFuture};
pub use directory::{Directory, LocalDirectory, split_range};
pub use error::{AbortReason, Result, TxnError};
pub use metrics::{Counter, Timer, TxnMetrics};
pub use peer::{Peer, PeerFuture, ReplicaState, Rows};
pub use service::{Participant, TxnConfig, TxnService};
