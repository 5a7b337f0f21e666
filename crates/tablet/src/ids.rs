//! Identifiers of nodes and tablets.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A node of the cluster. Never reused once a node is removed: a stale replica with a reused
/// id could vote twice.
#[derive(Copy, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub u64);

/// A tablet: one key range of one table, replicated by its own Raft group.
#[derive(Copy, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TabletId(pub u64);

impl TabletId {
    /// The prefix of this tablet's rows in the node's `data` column family and of its Raft
    /// state in `raft_log`: fixed width, so no tablet's prefix starts another's.
    pub fn keyspace(self) -> Vec<u8> {
        let mut prefix = Vec::with_capacity(9);
        prefix.push(b't');
        prefix.extend_from_slice(&self.0.to_be_bytes());
        prefix
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for TabletId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t{}", self.0)
    }
}

impl fmt::Debug for TabletId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl From<u64> for NodeId {
    fn from(id: u64) -> Self {
        NodeId(id)
    }
}
