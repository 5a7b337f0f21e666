//! Two-phase locking for read-write transactions: the lock table of a tablet leader, with
//! shared and exclusive locks on keys and key ranges, wait queues and wound-wait deadlock
//! avoidance. A plain state machine (see [`table`]); the transaction layer drives it.

pub mod table;
mod target;

pub use table::{Acquire, Event, LockTable, Priority, RequestId, TxnId};
pub use target::{LockMode, LockTarget};

#[cfg(test)]
mod scenarios;
