//! Checkers over recorded histories, in the manner of Jepsen's Elle.
//!
//! [`list_append`]: every transaction appends unique values to lists and reads whole lists.
//! Because appends are unique and lists only grow, each read reveals the order of every
//! version before it, so the checker can rebuild each key's version order from the longest
//! read, infer write-write, write-read and read-write dependencies between transactions, add
//! real-time edges (T1 acknowledged before T2 began), and report any cycle: a history with a
//! cycle is not strictly serializable. It also reports reads that no version order explains
//! (incompatible orders), reads of aborted writes, and duplicate appends.
//!
//! [`bank`]: every read of all accounts sums to the total and no balance is negative.

pub mod bank;
pub mod list_append;

pub use list_append::{Anomaly, AnomalyKind, Edge, Op, Outcome, Txn, check};
