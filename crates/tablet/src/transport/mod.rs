//! How tablet replicas on different nodes talk: a [`Transport`] carries one Raft RPC for one
//! tablet to one node and brings back the reply. Every group on a node shares the node's
//! transport (and so its connections); the tablet id travels in each message.
//!
//! Two implementations: gRPC (the `transport` crate) and [`LocalNetwork`], in-process, which
//! tests can partition, delay and make lossy.

mod local;

use std::fmt;
use std::future::Future;
use std::pin::Pin;

pub use local::LocalNetwork;

use crate::{NodeId, TabletId};

/// Which Raft RPC a message carries. The payload is the serde-encoded openraft request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RpcKind {
    /// Log replication and heartbeats.
    AppendEntries = 1,
    /// A vote request.
    Vote = 2,
    /// A pre-vote request.
    PreVote = 3,
    /// One bounded chunk of a snapshot.
    SnapshotChunk = 4,
    /// A leadership transfer.
    TransferLeader = 5,
}

impl RpcKind {
    /// Decodes the wire value.
    pub fn from_u8(value: u8) -> Option<RpcKind> {
        Some(match value {
            1 => RpcKind::AppendEntries,
            2 => RpcKind::Vote,
            3 => RpcKind::PreVote,
            4 => RpcKind::SnapshotChunk,
            5 => RpcKind::TransferLeader,
            _ => return None,
        })
    }
}

/// One Raft message for one tablet.
#[derive(Clone, PartialEq, Eq)]
pub struct RaftRpc {
    /// The group it belongs to.
    pub tablet: TabletId,
    /// The RPC.
    pub kind: RpcKind,
    /// The encoded request.
    pub payload: Vec<u8>,
}

impl fmt::Debug for RaftRpc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} for {} ({} B)",
            self.kind,
            self.tablet,
            self.payload.len()
        )
    }
}

/// A failed RPC.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The message or its reply did not get through (node down, partition, loss, timeout).
    #[error("node {node} unreachable: {reason}")]
    Unreachable {
        /// The target.
        node: NodeId,
        /// Why.
        reason: String,
    },
    /// The target got the message and refused it (no such tablet, undecodable request, the
    /// group has stopped).
    #[error("node {node} refused the request: {reason}")]
    Refused {
        /// The target.
        node: NodeId,
        /// Why.
        reason: String,
    },
}

/// A boxed future, so transports and handlers can be trait objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Sends Raft RPCs from one node.
pub trait Transport: Send + Sync + fmt::Debug + 'static {
    /// Sends `rpc` to `target` (at `address`, as recorded in the group's membership) and
    /// returns the encoded reply.
    fn call(
        &self,
        target: NodeId,
        address: &str,
        rpc: RaftRpc,
    ) -> BoxFuture<'static, Result<Vec<u8>, TransportError>>;
}

/// Receives Raft RPCs on a node (implemented by [`crate::Node`]).
pub trait RpcHandler: Send + Sync + 'static {
    /// Handles one RPC addressed to this node; `Err` is the reason it was refused.
    fn handle(&self, rpc: RaftRpc) -> BoxFuture<'_, Result<Vec<u8>, String>>;
}
