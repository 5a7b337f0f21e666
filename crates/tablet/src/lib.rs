//! Tablets: a tablet is one key range of one table, replicated by its own Raft group
//! (openraft), holding MVCC rows on its node's RocksDB. A node hosts replicas of many
//! tablets (multi-raft) and carries all their Raft traffic over one transport.
//!
//! - [`Node`]: hosts replicas; creates, opens, closes and destroys them at run time; routes
//!   incoming Raft RPCs to the right group.
//! - [`Tablet`]: one replica; on the leader, writes at timestamps it picks (strictly
//!   increasing, also across leader changes) and closed timestamps; on every replica, reads
//!   at or below its safe time.
//! - [`transport`]: the [`Transport`] trait, and [`LocalNetwork`] for in-process clusters
//!   with partitions, delay and loss.
//!
//! openraft is confined to the private `raft` module.

mod command;
mod error;
mod ids;
mod node;
mod raft;
mod tablet;
pub mod transport;

pub use command::{Mutation, PreparedTxn, TabletCommand, TabletResponse};
pub use error::{Result, TabletError};
pub use ids::{NodeId, TabletId};
pub use node::{Node, NodeConfig};
pub use raft::RaftConfig;
pub use tablet::{Leadership, Tablet, TabletMetrics};
pub use transport::{LocalNetwork, RaftRpc, RpcHandler, RpcKind, Transport, TransportError};

use truetime::Timestamp;

/// A replica's apply progress, published after every applied batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// The last applied log index.
    pub applied_index: Option<u64>,
    /// `t_safe = min(t_paxos_safe, t_tm_safe)`: reads at or below it are served here.
    pub safe_ts: Timestamp,
    /// `t_paxos_safe`: every write at or below it has been applied here (prepared
    /// transactions aside, which commit at or above their prepare timestamps).
    pub paxos_safe_ts: Timestamp,
    /// Prepared transactions awaiting their outcome.
    pub prepared: usize,
    /// Commands rejected for a stale timestamp.
    pub stale_rejections: u64,
}
