//! The tablet Raft transport over gRPC: [`GrpcTransport`] sends every tablet's Raft RPCs
//! from a node over one shared connection per peer, and [`RaftService`] receives them and
//! hands them to the node's [`RpcHandler`].
//!
//! Failures map onto what Raft needs to know: a peer that cannot be reached (or times out) is
//! `Unreachable`, so Raft backs off; a peer that answered with an error refused the request.

mod firewall;
mod peer;

pub use firewall::Firewall;
pub use peer::{PeerService, PeerSlot, RemotePeer};

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proto::v1::raft_transport_client::RaftTransportClient;
use proto::v1::raft_transport_server::{RaftTransport, RaftTransportServer};
use proto::v1::{RaftMessage, RaftReply};
use tablet::transport::BoxFuture;
use tablet::{NodeId, RaftRpc, RpcHandler, RpcKind, TabletId, Transport, TransportError};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Response, Status};

/// The largest Raft message accepted (log batches and snapshot chunks are bounded well below).
pub(crate) const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// Sends Raft RPCs over gRPC, keeping one lazily connected channel per peer address.
#[derive(Debug)]
pub struct GrpcTransport {
    timeout: Duration,
    clients: Mutex<HashMap<String, RaftTransportClient<Channel>>>,
    firewall: Arc<Firewall>,
}

impl GrpcTransport {
    /// A transport whose calls give up after `timeout`.
    pub fn new(timeout: Duration) -> Arc<Self> {
        Self::with_firewall(timeout, Arc::default())
    }

    /// A transport that drops messages to the addresses `firewall` blocks (fault injection).
    pub fn with_firewall(timeout: Duration, firewall: Arc<Firewall>) -> Arc<Self> {
        Arc::new(GrpcTransport {
            timeout,
            clients: Mutex::new(HashMap::new()),
            firewall,
        })
    }

    fn client(
        &self,
        target: NodeId,
        address: &str,
    ) -> Result<RaftTransportClient<Channel>, TransportError> {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(client) = clients.get(address) {
            return Ok(client.clone());
        }
        let endpoint = Endpoint::from_shared(address.to_string())
            .map_err(|e| TransportError::Refused {
                node: target,
                reason: format!("bad address {address:?}: {e}"),
            })?
            .connect_timeout(self.timeout)
            .timeout(self.timeout)
            .tcp_nodelay(true);
        let client = RaftTransportClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        clients.insert(address.to_string(), client.clone());
        Ok(client)
    }
}

impl Transport for GrpcTransport {
    fn call(
        &self,
        target: NodeId,
        address: &str,
        rpc: RaftRpc,
    ) -> BoxFuture<'static, Result<Vec<u8>, TransportError>> {
        let client = if self.firewall.is_blocked(address) {
            Err(TransportError::Unreachable {
                node: target,
                reason: "partitioned (fault injection)".into(),
            })
        } else {
            self.client(target, address)
        };
        Box::pin(async move {
            let mut client = client?;
            let message = RaftMessage {
                tablet_id: rpc.tablet.0,
                kind: u32::from(rpc.kind as u8),
                payload: rpc.payload,
            };
            match client.call(message).await {
                Ok(reply) => Ok(reply.into_inner().payload),
                Err(status) => Err(match status.code() {
                    Code::Unavailable
                    | Code::DeadlineExceeded
                    | Code::Cancelled
                    | Code::Unknown => TransportError::Unreachable {
                        node: target,
                        reason: status.message().to_string(),
                    },
                    _ => TransportError::Refused {
                        node: target,
                        reason: status.message().to_string(),
                    },
                }),
            }
        })
    }
}

/// The gRPC service a node runs to receive Raft traffic for all its tablets.
pub struct RaftService {
    handler: Arc<dyn RpcHandler>,
}

impl std::fmt::Debug for RaftService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftService").finish_non_exhaustive()
    }
}

impl RaftService {
    /// A service delivering to `handler` (the node).
    pub fn new(handler: Arc<dyn RpcHandler>) -> Self {
        RaftService { handler }
    }

    /// The tonic service, to add to a server.
    pub fn into_server(self) -> RaftTransportServer<RaftService> {
        RaftTransportServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// Serves on `listener` until `shutdown` resolves.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        tonic::transport::Server::builder()
            .add_service(self.into_server())
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
            .await
    }
}

#[tonic::async_trait]
impl RaftTransport for RaftService {
    async fn call(&self, request: Request<RaftMessage>) -> Result<Response<RaftReply>, Status> {
        let message = request.into_inner();
        let kind = u8::try_from(message.kind)
            .ok()
            .and_then(RpcKind::from_u8)
            .ok_or_else(|| {
                Status::invalid_argument(format!("unknown Raft RPC kind {}", message.kind))
            })?;
        let rpc = RaftRpc {
            tablet: TabletId(message.tablet_id),
            kind,
            payload: message.payload,
        };
        match self.handler.handle(rpc).await {
            Ok(payload) => Ok(Response::new(RaftReply { payload })),
            Err(reason) => Err(Status::failed_precondition(reason)),
        }
    }
}
