//! openraft's network traits over a [`Transport`]: one cheap connection handle per
//! (tablet, target node), sharing the node's transport.

use std::future::Future;
use std::sync::Arc;

use openraft::alias::{SnapshotMetaOf, SnapshotOf, VoteOf};
use openraft::error::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::v2::RaftNetworkV2;
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, OptionalSend};
use serde::{Deserialize, Serialize};

use super::codec::{decode, encode};
use super::{TabletSnapshot, TypeConfig};
use crate::transport::{RaftRpc, RpcKind, Transport, TransportError};
use crate::{NodeId, TabletId};

/// One chunk of a snapshot on the wire. The receiver assembles chunks in order and installs
/// the snapshot when the last one arrives.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct SnapshotChunk {
    pub(crate) vote: VoteOf<TypeConfig>,
    pub(crate) meta: SnapshotMetaOf<TypeConfig>,
    pub(crate) offset: u64,
    pub(crate) total: u64,
    pub(crate) data: Vec<u8>,
}

/// Creates connections for one tablet's group.
#[derive(Debug, Clone)]
pub(crate) struct NetworkFactory {
    pub(crate) transport: Arc<dyn Transport>,
    /// This node's clock, fenced when a follower refuses its timestamps as from the future.
    pub(crate) clock: Arc<dyn truetime::Clock>,
    pub(crate) tablet: TabletId,
    pub(crate) snapshot_chunk_bytes: usize,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Connection {
        Connection {
            transport: Arc::clone(&self.transport),
            clock: Arc::clone(&self.clock),
            tablet: self.tablet,
            target,
            address: node.addr.clone(),
            snapshot_chunk_bytes: self.snapshot_chunk_bytes.max(1),
        }
    }
}

/// The group's link to one peer.
#[derive(Debug)]
pub(crate) struct Connection {
    transport: Arc<dyn Transport>,
    clock: Arc<dyn truetime::Clock>,
    tablet: TabletId,
    target: NodeId,
    address: String,
    snapshot_chunk_bytes: usize,
}

fn unreachable(e: &(impl std::error::Error + 'static)) -> RPCError<TypeConfig> {
    // Refusals too: with openraft's default error type a remote error cannot be returned,
    // and backing off from a peer that refuses is what we want anyway.
    RPCError::Unreachable(Unreachable::new(e))
}

impl Connection {
    async fn call<Req: Serialize, Resp: serde::de::DeserializeOwned>(
        &self,
        kind: RpcKind,
        request: &Req,
    ) -> Result<Resp, TransportError> {
        let refused = |reason: String| TransportError::Refused {
            node: self.target,
            reason,
        };
        let payload = encode(request).map_err(|e| refused(e.to_string()))?;
        let rpc = RaftRpc {
            tablet: self.tablet,
            kind,
            payload,
        };
        let reply = self.transport.call(self.target, &self.address, rpc).await?;
        decode(&reply).map_err(|e| refused(format!("undecodable reply: {e}")))
    }
}

impl RaftNetworkV2<TypeConfig> for Connection {
    type SnapshotData = TabletSnapshot;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(RpcKind::AppendEntries, &rpc).await.map_err(|e| {
            let reason = e.to_string();
            if reason.contains(crate::node::CLOCK_AHEAD) {
                // A follower with a healthy clock saw our timestamps from its future.
                self.clock.fence(&reason);
            }
            unreachable(&e)
        })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(RpcKind::Vote, &rpc)
            .await
            .map_err(|e| unreachable(&e))
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(RpcKind::PreVote, &rpc)
            .await
            .map_err(|e| unreachable(&e))
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(RpcKind::TransferLeader, &req)
            .await
            .map_err(|e| unreachable(&e))
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<TypeConfig>,
        snapshot: SnapshotOf<TypeConfig, TabletSnapshot>,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let bytes = snapshot.snapshot.bytes;
        let total = bytes.len() as u64;
        let mut cancel = std::pin::pin!(cancel);
        let mut offset = 0usize;
        loop {
            let end = (offset + self.snapshot_chunk_bytes).min(bytes.len());
            let chunk = SnapshotChunk {
                vote,
                meta: snapshot.meta.clone(),
                offset: offset as u64,
                total,
                data: bytes[offset..end].to_vec(),
            };
            let sent = self
                .call::<_, Option<SnapshotResponse<TypeConfig>>>(RpcKind::SnapshotChunk, &chunk);
            let reply = tokio::select! {
                closed = &mut cancel => return Err(StreamingError::Closed(closed)),
                reply = sent => reply,
            };
            match reply {
                Ok(Some(response)) => return Ok(response),
                Ok(None) if end < bytes.len() => offset = end,
                Ok(None) => {
                    let e = TransportError::Refused {
                        node: self.target,
                        reason: "snapshot not installed".into(),
                    };
                    return Err(StreamingError::Unreachable(Unreachable::new(&e)));
                }
                Err(e) => return Err(StreamingError::Unreachable(Unreachable::new(&e))),
            }
        }
    }
}
