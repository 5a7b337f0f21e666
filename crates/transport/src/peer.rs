//! The transaction layer between nodes: [`RemotePeer`] is a [`txn::Peer`] whose calls go over
//! gRPC to another node, where [`PeerService`] hands them to that node's `TxnService`.
//!
//! # What a lost reply means
//!
//! A call that never got a reply may still have run. For reads, prepares and outcomes that is
//! harmless: the transaction aborts or retries. For the two calls that commit
//! (`commit_single`, `coordinate`) it is not: their transport failures are
//! [`TxnError::Indeterminate`], never `Unavailable`, so no client retries a commit that may
//! have happened.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use locks::{Priority, TxnId};
use proto::v1::PeerMessage;
use proto::v1::txn_peer_client::TxnPeerClient;
use proto::v1::txn_peer_server::{TxnPeer, TxnPeerServer};
use serde::{Deserialize, Serialize};
use storage::KeyRange;
use tablet::{Leadership, Mutation, NodeId, TabletId, TabletResponse};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};
use truetime::Timestamp;
use txn::{Participant, Peer, PeerFuture, ReplicaState, Rows, TxnError};

use crate::{Firewall, MAX_MESSAGE_BYTES};

/// One `txn::Peer` call on the wire.
#[derive(Debug, Serialize, Deserialize)]
enum Call {
    Read {
        txn: TxnId,
        priority: Priority,
        tablet: TabletId,
        key: Vec<u8>,
    },
    Scan {
        txn: TxnId,
        priority: Priority,
        tablet: TabletId,
        range: KeyRange,
        limit: u64,
    },
    CommitSingle {
        txn: TxnId,
        priority: Priority,
        tablet: TabletId,
        mutations: Vec<Mutation>,
        read_under: Option<Leadership>,
    },
    Prepare {
        txn: TxnId,
        priority: Priority,
        tablet: TabletId,
        coordinator: TabletId,
        mutations: Vec<Mutation>,
        read_under: Option<Leadership>,
    },
    Decide {
        txn: TxnId,
        tablet: TabletId,
        outcome: Option<Timestamp>,
    },
    Abort {
        txn: TxnId,
    },
    Coordinate {
        txn: TxnId,
        priority: Priority,
        coordinator: TabletId,
        participants: BTreeMap<TabletId, Participant>,
    },
    Outcome {
        coordinator: TabletId,
        txn: TxnId,
    },
    RequestAbort {
        txn: TxnId,
        by: TxnId,
    },
    Wound {
        txn: TxnId,
        by: TxnId,
    },
    SnapshotRead {
        tablet: TabletId,
        key: Vec<u8>,
        ts: Timestamp,
        wait_ms: u64,
    },
    SnapshotScan {
        tablet: TabletId,
        range: KeyRange,
        ts: Timestamp,
        limit: u64,
        wait_ms: u64,
    },
    ReplicaState {
        tablet: TabletId,
    },
    CloseTimestamp {
        tablet: TabletId,
    },
    Split {
        parent: TabletId,
        at: Vec<u8>,
        child: TabletId,
        members: BTreeMap<NodeId, String>,
    },
}

/// A call's answer on the wire.
#[derive(Debug, Serialize, Deserialize)]
enum Answer {
    Locked(Option<Vec<u8>>, Leadership),
    LockedRows(Rows, Leadership),
    Timestamp(Timestamp),
    Decided(TabletResponse),
    Done,
    Outcome(Option<Option<Timestamp>>),
    Value(Option<Vec<u8>>),
    Rows(Rows),
    State(ReplicaState),
    Tablet(TabletId),
}

type Reply = Result<Answer, TxnError>;

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, Status> {
    postcard::to_stdvec(value).map_err(|e| Status::internal(format!("encoding: {e}")))
}

/// A node's transaction layer, reached over gRPC.
#[derive(Debug, Clone)]
pub struct RemotePeer {
    node: NodeId,
    address: String,
    client: TxnPeerClient<Channel>,
    firewall: Arc<Firewall>,
}

/// Longest a call may take: a commit waits for locks (bounded by the lock-wait limit), two
/// Raft rounds and commit-wait.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

impl RemotePeer {
    /// A peer for `node` at `address` (`http://host:port`), connecting lazily.
    pub fn new(node: NodeId, address: &str) -> Result<Self, TxnError> {
        Self::with_firewall(node, address, Arc::default())
    }

    /// [`RemotePeer::new`], dropping calls while `firewall` blocks `address` (fault injection).
    pub fn with_firewall(
        node: NodeId,
        address: &str,
        firewall: Arc<Firewall>,
    ) -> Result<Self, TxnError> {
        let endpoint = Endpoint::from_shared(address.to_string())
            .map_err(|e| TxnError::Failed(format!("bad address {address:?}: {e}")))?
            .connect_timeout(Duration::from_secs(2))
            .timeout(CALL_TIMEOUT)
            .tcp_nodelay(true);
        let client = TxnPeerClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Ok(RemotePeer {
            node,
            address: address.to_string(),
            client,
            firewall,
        })
    }

    /// Sends `call`; a transport failure becomes `lost(reason)`.
    async fn send(&self, call: Call, lost: fn(String) -> TxnError) -> Reply {
        if self.firewall.is_blocked(&self.address) {
            // Never sent: safe to call unavailable, whatever the call.
            return Err(TxnError::Unavailable(format!(
                "{}: partitioned (fault injection)",
                self.node
            )));
        }
        let payload = postcard::to_stdvec(&call)
            .map_err(|e| TxnError::Failed(format!("encoding a peer call: {e}")))?;
        let mut client = self.client.clone();
        let reply = client
            .call(PeerMessage { payload })
            .await
            .map_err(|status| lost(format!("{}: {}", self.node, status.message())))?;
        postcard::from_bytes::<Reply>(&reply.into_inner().payload)
            .map_err(|e| lost(format!("{}: undecodable reply: {e}", self.node)))?
    }

    fn call<'a, T: Send + 'a>(
        &'a self,
        call: Call,
        lost: fn(String) -> TxnError,
        pick: fn(Answer) -> Option<T>,
    ) -> PeerFuture<'a, T> {
        Box::pin(async move {
            let answer = self.send(call, lost).await?;
            pick(answer).ok_or_else(|| lost(format!("{}: mismatched reply", self.node)))
        })
    }
}

fn retryable(reason: String) -> TxnError {
    TxnError::Unavailable(reason)
}

fn unknown(reason: String) -> TxnError {
    TxnError::Indeterminate(reason)
}

impl Peer for RemotePeer {
    fn node_id(&self) -> NodeId {
        self.node
    }

    fn read(
        &self,
        txn: TxnId,
        priority: Priority,
        tablet: TabletId,
        key: Vec<u8>,
    ) -> PeerFuture<'_, (Option<Vec<u8>>, Leadership)> {
        let call = Call::Read {
            txn,
            priority,
            tablet,
            key,
        };
        self.call(call, retryable, |a| match a {
            Answer::Locked(v, l) => Some((v, l)),
            _ => None,
        })
    }

    fn scan(
        &self,
        txn: TxnId,
        priority: Priority,
        tablet: TabletId,
        range: KeyRange,
        limit: usize,
    ) -> PeerFuture<'_, (Rows, Leadership)> {
        let call = Call::Scan {
            txn,
            priority,
            tablet,
            range,
            limit: limit as u64,
        };
        self.call(call, retryable, |a| match a {
            Answer::LockedRows(r, l) => Some((r, l)),
            _ => None,
        })
    }

    fn commit_single(
        &self,
        txn: TxnId,
        priority: Priority,
        tablet: TabletId,
        mutations: Vec<Mutation>,
        read_under: Option<Leadership>,
    ) -> PeerFuture<'_, Timestamp> {
        let call = Call::CommitSingle {
            txn,
            priority,
            tablet,
            mutations,
            read_under,
        };
        self.call(call, unknown, timestamp)
    }

    fn prepare(
        &self,
        txn: TxnId,
        priority: Priority,
        tablet: TabletId,
        coordinator: TabletId,
        mutations: Vec<Mutation>,
        read_under: Option<Leadership>,
    ) -> PeerFuture<'_, Timestamp> {
        let call = Call::Prepare {
            txn,
            priority,
            tablet,
            coordinator,
            mutations,
            read_under,
        };
        self.call(call, retryable, timestamp)
    }

    fn decide(
        &self,
        txn: TxnId,
        tablet: TabletId,
        outcome: Option<Timestamp>,
    ) -> PeerFuture<'_, TabletResponse> {
        let call = Call::Decide {
            txn,
            tablet,
            outcome,
        };
        self.call(call, retryable, |a| match a {
            Answer::Decided(r) => Some(r),
            _ => None,
        })
    }

    fn abort(&self, txn: TxnId) -> PeerFuture<'_, ()> {
        self.call(Call::Abort { txn }, retryable, done)
    }

    fn coordinate(
        &self,
        txn: TxnId,
        priority: Priority,
        coordinator: TabletId,
        participants: BTreeMap<TabletId, Participant>,
    ) -> PeerFuture<'_, Timestamp> {
        let call = Call::Coordinate {
            txn,
            priority,
            coordinator,
            participants,
        };
        self.call(call, unknown, timestamp)
    }

    fn outcome(
        &self,
        coordinator: TabletId,
        txn: TxnId,
    ) -> PeerFuture<'_, Option<Option<Timestamp>>> {
        self.call(Call::Outcome { coordinator, txn }, retryable, |a| match a {
            Answer::Outcome(o) => Some(o),
            _ => None,
        })
    }

    fn request_abort(&self, txn: TxnId, by: TxnId) -> PeerFuture<'_, ()> {
        self.call(Call::RequestAbort { txn, by }, retryable, done)
    }

    fn wound(&self, txn: TxnId, by: TxnId) -> PeerFuture<'_, ()> {
        self.call(Call::Wound { txn, by }, retryable, done)
    }

    fn snapshot_read(
        &self,
        tablet: TabletId,
        key: Vec<u8>,
        ts: Timestamp,
        wait: Duration,
    ) -> PeerFuture<'_, Option<Vec<u8>>> {
        let call = Call::SnapshotRead {
            tablet,
            key,
            ts,
            wait_ms: wait.as_millis() as u64,
        };
        self.call(call, retryable, |a| match a {
            Answer::Value(v) => Some(v),
            _ => None,
        })
    }

    fn snapshot_scan(
        &self,
        tablet: TabletId,
        range: KeyRange,
        ts: Timestamp,
        limit: usize,
        wait: Duration,
    ) -> PeerFuture<'_, Rows> {
        let call = Call::SnapshotScan {
            tablet,
            range,
            ts,
            limit: limit as u64,
            wait_ms: wait.as_millis() as u64,
        };
        self.call(call, retryable, |a| match a {
            Answer::Rows(r) => Some(r),
            _ => None,
        })
    }

    fn replica_state(&self, tablet: TabletId) -> PeerFuture<'_, ReplicaState> {
        self.call(Call::ReplicaState { tablet }, retryable, |a| match a {
            Answer::State(s) => Some(s),
            _ => None,
        })
    }

    fn close_timestamp(&self, tablet: TabletId) -> PeerFuture<'_, Timestamp> {
        self.call(Call::CloseTimestamp { tablet }, retryable, timestamp)
    }

    fn split(
        &self,
        parent: TabletId,
        at: Vec<u8>,
        child: TabletId,
        members: BTreeMap<NodeId, String>,
    ) -> PeerFuture<'_, TabletId> {
        let call = Call::Split {
            parent,
            at,
            child,
            members,
        };
        // A lost reply leaves the split done or not; asking again finds out (it is
        // idempotent per split key).
        self.call(call, retryable, |a| match a {
            Answer::Tablet(t) => Some(t),
            _ => None,
        })
    }
}

fn timestamp(answer: Answer) -> Option<Timestamp> {
    match answer {
        Answer::Timestamp(ts) => Some(ts),
        _ => None,
    }
}

fn done(answer: Answer) -> Option<()> {
    matches!(answer, Answer::Done).then_some(())
}

/// The node's transaction layer, once it has one (a node serves before it joins a cluster).
pub type PeerSlot = Arc<OnceLock<Arc<dyn Peer>>>;

/// Serves a node's transaction layer to its peers.
#[derive(Debug)]
pub struct PeerService {
    local: PeerSlot,
}

impl PeerService {
    /// Serves the peer in `local` (the node's `TxnService`) once it is set; until then calls
    /// are refused as unavailable.
    pub fn new(local: PeerSlot) -> Self {
        PeerService { local }
    }

    /// The tonic service, to add to a server.
    pub fn into_server(self) -> TxnPeerServer<PeerService> {
        TxnPeerServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    async fn dispatch(&self, call: Call) -> Reply {
        let peer = self
            .local
            .get()
            .ok_or_else(|| TxnError::Unavailable("this node has not joined a cluster".into()))?
            .as_ref();
        let wait = |ms: u64| Duration::from_millis(ms.min(60_000));
        Ok(match call {
            Call::Read {
                txn,
                priority,
                tablet,
                key,
            } => {
                let (value, leadership) = peer.read(txn, priority, tablet, key).await?;
                Answer::Locked(value, leadership)
            }
            Call::Scan {
                txn,
                priority,
                tablet,
                range,
                limit,
            } => {
                let limit = usize::try_from(limit).unwrap_or(usize::MAX);
                let (rows, leadership) = peer.scan(txn, priority, tablet, range, limit).await?;
                Answer::LockedRows(rows, leadership)
            }
            Call::CommitSingle {
                txn,
                priority,
                tablet,
                mutations,
                read_under,
            } => Answer::Timestamp(
                peer.commit_single(txn, priority, tablet, mutations, read_under)
                    .await?,
            ),
            Call::Prepare {
                txn,
                priority,
                tablet,
                coordinator,
                mutations,
                read_under,
            } => Answer::Timestamp(
                peer.prepare(txn, priority, tablet, coordinator, mutations, read_under)
                    .await?,
            ),
            Call::Decide {
                txn,
                tablet,
                outcome,
            } => Answer::Decided(peer.decide(txn, tablet, outcome).await?),
            Call::Abort { txn } => {
                peer.abort(txn).await?;
                Answer::Done
            }
            Call::Coordinate {
                txn,
                priority,
                coordinator,
                participants,
            } => Answer::Timestamp(
                peer.coordinate(txn, priority, coordinator, participants)
                    .await?,
            ),
            Call::Outcome { coordinator, txn } => {
                Answer::Outcome(peer.outcome(coordinator, txn).await?)
            }
            Call::RequestAbort { txn, by } => {
                peer.request_abort(txn, by).await?;
                Answer::Done
            }
            Call::Wound { txn, by } => {
                peer.wound(txn, by).await?;
                Answer::Done
            }
            Call::SnapshotRead {
                tablet,
                key,
                ts,
                wait_ms,
            } => Answer::Value(peer.snapshot_read(tablet, key, ts, wait(wait_ms)).await?),
            Call::SnapshotScan {
                tablet,
                range,
                ts,
                limit,
                wait_ms,
            } => {
                let limit = usize::try_from(limit).unwrap_or(usize::MAX);
                Answer::Rows(
                    peer.snapshot_scan(tablet, range, ts, limit, wait(wait_ms))
                        .await?,
                )
            }
            Call::ReplicaState { tablet } => Answer::State(peer.replica_state(tablet).await?),
            Call::CloseTimestamp { tablet } => {
                Answer::Timestamp(peer.close_timestamp(tablet).await?)
            }
            Call::Split {
                parent,
                at,
                child,
                members,
            } => Answer::Tablet(peer.split(parent, at, child, members).await?),
        })
    }
}

#[tonic::async_trait]
impl TxnPeer for PeerService {
    async fn call(&self, request: Request<PeerMessage>) -> Result<Response<PeerMessage>, Status> {
        let call: Call = postcard::from_bytes(&request.into_inner().payload)
            .map_err(|e| Status::invalid_argument(format!("undecodable peer call: {e}")))?;
        let reply = self.dispatch(call).await;
        Ok(Response::new(PeerMessage {
            payload: encode(&reply)?,
        }))
    }
}
