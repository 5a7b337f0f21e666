//! [`Node`]: hosts the replicas of many tablets (multi-raft) on one RocksDB, and receives
//! every group's Raft traffic through one [`RpcHandler`].

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use openraft::EntryPayload;
use openraft::alias::SnapshotOf;
use openraft::async_runtime::WatchReceiver;
use openraft::raft::{AppendEntriesRequest, TransferLeaderRequest, VoteRequest};
use storage::{Cf, Engine, EngineOptions, Mvcc, WriteBatch};
use tokio::sync::watch;
use tracing::Instrument;
use truetime::Clock;

use crate::error::{Result, TabletError};
use crate::raft::codec::{decode, encode};
use crate::raft::log_store::LogStore;
use crate::raft::network::{NetworkFactory, SnapshotChunk};
use crate::raft::state_machine::{ChildSender, SharedRange, StateMachine};
use crate::raft::{Raft, RaftConfig, TabletSnapshot, TypeConfig};
use crate::transport::{BoxFuture, RaftRpc, RpcHandler, RpcKind, Transport};
use crate::{NodeId, Progress, Tablet, TabletId};

/// With twice its own ε, the least a follower lets a leader's timestamps run past its own
/// clock's `latest` (see [`NodeConfig::clock_tolerance`]).
const PEER_CLOCK_SLACK: Duration = Duration::from_millis(5);

/// Starts a follower's refusal of timestamps from the future, so the leader's node knows its
/// clock is the problem (see [`Node`]'s "Peers check the leader's clock").
pub(crate) const CLOCK_AHEAD: &str = "leader clock ahead";

/// Settings shared by every tablet on a node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The cluster's name (tablets of different clusters refuse each other's messages).
    pub cluster: String,
    /// Raft timing and log retention.
    pub raft: RaftConfig,
    /// How often a leader closes a timestamp while idle: followers' safe time lags by
    /// about this much.
    pub close_interval: Duration,
    /// Largest snapshot chunk sent in one message.
    pub snapshot_chunk_bytes: usize,
    /// RocksDB tuning.
    pub engine: EngineOptions,
    /// How far past its own clock's `latest` a follower accepts a leader's timestamps (at
    /// least `2ε + 5 ms` of its own clock): twice the largest ε a healthy clock reports, so a
    /// healthy leader with a wider interval is never refused.
    pub clock_tolerance: Duration,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            cluster: "meridian".into(),
            raft: RaftConfig::default(),
            close_interval: Duration::from_millis(250),
            snapshot_chunk_bytes: 256 << 10,
            engine: EngineOptions::default(),
            clock_tolerance: Duration::from_millis(100),
        }
    }
}

/// A node: the tablet replicas it hosts, its RocksDB, its clock and its transport.
///
/// # Peers check the leader's clock
///
/// A leader stamps commands with its own clock; if that clock leaps ahead of the true time,
/// commit-wait on it ends early and a commit could be acknowledged before its timestamp has
/// passed anywhere else: external consistency lost. So a follower whose own clock is healthy
/// refuses entries stamped more than [`NodeConfig::clock_tolerance`] past its own `latest`,
/// and keeps refusing that leader until its timestamps are no longer from the follower's
/// future: those commands cannot reach a majority meanwhile, and the leader's node does not
/// acknowledge them (its clock is fenced). The
/// refusal tells the leader's node, whose clock then fences itself ([`truetime::Clock::fence`])
/// and hands its leaderships over. A follower whose own clock cannot bound the time judges
/// nobody.
pub struct Node {
    id: NodeId,
    /// This node, for the tasks it starts (they must not keep it alive).
    me: Weak<Node>,
    /// Set by [`Node::shutdown`]: stopped replicas are not reopened.
    closing: AtomicBool,
    /// Tablets whose replica is being opened (see [`Node::open_replica`]).
    opening: Mutex<std::collections::HashSet<TabletId>>,
    /// When the supervisor last reopened each tablet's replica, and after what pause.
    reopened: Mutex<HashMap<TabletId, (std::time::Instant, Duration)>>,
    engine: Arc<Engine>,
    transport: Arc<dyn Transport>,
    clock: Arc<dyn Clock>,
    config: NodeConfig,
    tablets: RwLock<BTreeMap<TabletId, Arc<Tablet>>>,
    /// Snapshots being received, chunk by chunk.
    incoming_snapshots: Mutex<HashMap<TabletId, Vec<u8>>>,
    /// Tablets a split created here, to open.
    children: ChildSender,
    /// Per tablet, a leader (term, node) refused for stamping commands ahead of this node's
    /// clock, and the largest such timestamp: its appends stay refused until that timestamp
    /// is within the tolerance of this node's clock.
    refused_leaders: Mutex<HashMap<TabletId, (u64, NodeId, truetime::Timestamp)>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

pub(crate) fn replica_key(tablet: TabletId) -> Vec<u8> {
    let mut key = b"replica/".to_vec();
    key.extend_from_slice(&tablet.0.to_be_bytes());
    key
}

impl Node {
    /// Opens the node stored in `dir` and every tablet replica it hosted.
    pub async fn open(
        id: NodeId,
        dir: &Path,
        transport: Arc<dyn Transport>,
        clock: Arc<dyn Clock>,
        config: NodeConfig,
    ) -> Result<Arc<Node>> {
        let engine = Arc::new(Engine::open(dir, &config.engine)?);
        let (children, mut opened) = tokio::sync::mpsc::unbounded_channel();
        let node = Arc::new_cyclic(|me| Node {
            id,
            me: me.clone(),
            closing: AtomicBool::new(false),
            opening: Mutex::new(std::collections::HashSet::new()),
            reopened: Mutex::new(HashMap::new()),
            engine,
            transport,
            clock,
            config,
            tablets: RwLock::new(BTreeMap::new()),
            incoming_snapshots: Mutex::new(HashMap::new()),
            children,
            refused_leaders: Mutex::new(HashMap::new()),
        });
        // Replicas created by splits open here (the channel closes with the node).
        let weak = Arc::downgrade(&node);
        tokio::spawn(async move {
            while let Some(child) = opened.recv().await {
                let Some(node) = weak.upgrade() else { return };
                if node.tablet(child).is_err()
                    && let Err(e) = node.open_replica(child).await
                {
                    tracing::error!(tablet_id = %child, error = %e, "opening a split-off tablet failed");
                }
            }
        });
        let hosted = node
            .engine
            .scan_raw(Cf::Meta, b"replica/", Some(b"replica0"), usize::MAX)?;
        for (key, _) in hosted {
            let id = key
                .get(8..16)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes);
            let Some(id) = id else {
                return Err(storage::StorageError::Corruption {
                    what: "bad replica key".into(),
                }
                .into());
            };
            node.open_replica(TabletId(id)).await?;
        }
        Ok(node)
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The node's RocksDB. After [`Node::shutdown`] it stays open until every task that
    /// used it (including openraft's) has let go.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Creates an empty replica of `tablet` here; it joins the group when the group's leader
    /// adds it, or when [`Node::bootstrap`] makes it the group's first member.
    pub async fn create_tablet(&self, tablet: TabletId) -> Result<Arc<Tablet>> {
        if let Ok(existing) = self.tablet(tablet) {
            return Ok(existing);
        }
        let mut batch = WriteBatch::new();
        batch.put(Cf::Meta, replica_key(tablet), Vec::new());
        self.engine.write(batch, true)?;
        self.open_replica(tablet).await
    }

    /// Initializes a new group for `tablet` with `members` (node id to address). Call it on
    /// exactly one node, once, after every member has created its replica.
    pub async fn bootstrap(
        &self,
        tablet: TabletId,
        members: &BTreeMap<NodeId, String>,
    ) -> Result<()> {
        let replica = self.tablet(tablet)?;
        replica
            .raft()
            .initialize(Tablet::initial_members(members))
            .await
            .map_err(|e| TabletError::Membership {
                tablet,
                reason: e.to_string(),
            })
    }

    /// Opens the replica of `tablet` recorded here (or returns it if open). One opening at a
    /// time per tablet: two Raft instances over one log would corrupt it.
    async fn open_replica(&self, tablet: TabletId) -> Result<Arc<Tablet>> {
        let _opening = {
            let tablets = self.tablets.read().unwrap_or_else(|e| e.into_inner());
            if let Some(open) = tablets.get(&tablet) {
                return Ok(Arc::clone(open));
            }
            let mut opening = self.opening.lock().unwrap_or_else(|e| e.into_inner());
            if !opening.insert(tablet) {
                return Err(TabletError::RaftStopped {
                    tablet,
                    reason: "being opened here; retry".into(),
                });
            }
            Opening { node: self, tablet }
        };
        if self.engine.get(Cf::Meta, &replica_key(tablet))?.is_none() {
            return Err(TabletError::NotFound(tablet));
        }
        let mvcc = Arc::new(Mvcc::open(Arc::clone(&self.engine), tablet.keyspace())?);
        let (progress_tx, progress_rx) = watch::channel(Progress::default());
        let range = SharedRange::default();
        let stopped = |e: &dyn std::fmt::Display| TabletError::RaftStopped {
            tablet,
            reason: e.to_string(),
        };
        let machine = StateMachine::open(
            Arc::clone(&self.engine),
            Arc::clone(&mvcc),
            tablet,
            progress_tx,
            Arc::clone(&range),
            Some(self.children.clone()),
        )
        .map_err(|e| stopped(&e))?;
        let log = LogStore::new(Arc::clone(&self.engine), tablet);
        let network = NetworkFactory {
            transport: Arc::clone(&self.transport),
            clock: Arc::clone(&self.clock),
            tablet,
            snapshot_chunk_bytes: self.config.snapshot_chunk_bytes,
        };
        let config = self
            .config
            .raft
            .to_openraft(&self.config.cluster)
            .map_err(|e| stopped(&e))?;
        let raft = Raft::new(self.id, Arc::new(config), network, log, machine)
            .await
            .map_err(|e| stopped(&e))?;
        let replica = Arc::new(Tablet::new(
            tablet,
            self.id,
            raft,
            mvcc,
            progress_rx,
            range,
            Arc::clone(&self.clock),
        ));
        {
            let mut tablets = self.tablets.write().unwrap_or_else(|e| e.into_inner());
            // Checked under the lock `shutdown` empties the map with.
            if !self.closing.load(Ordering::Acquire) {
                tablets.insert(tablet, Arc::clone(&replica));
                drop(tablets);
                replica.start_closer(self.config.close_interval);
                self.supervise(&replica);
                return Ok(replica);
            }
        }
        replica.shutdown().await;
        Err(TabletError::RaftStopped {
            tablet,
            reason: "the node is shutting down".into(),
        })
    }

    /// Watches `replica`'s Raft group. If it stops while the replica is still open here (a
    /// fatal storage or apply error, or a panic in openraft's core such as openraft#2116),
    /// the replica would stay wedged: no votes, no appends, a safe time that never moves.
    /// Reopens it from storage instead, so it rejoins its group and catches up.
    fn supervise(&self, replica: &Arc<Tablet>) {
        let node = self.me.clone();
        let watched = Arc::downgrade(replica);
        let tablet = replica.id();
        let mut metrics = replica.raft().metrics();
        tokio::spawn(async move {
            let reason = loop {
                let fatal = {
                    let now = metrics.borrow_watched();
                    now.running_state.as_ref().err().map(|f| f.to_string())
                };
                if let Some(fatal) = fatal {
                    break fatal;
                }
                if metrics.changed().await.is_err() {
                    break "its core task ended".to_string();
                }
            };
            let mut backoff = {
                let Some(node) = node.upgrade() else { return };
                // Closed or destroyed on purpose (or already replaced): nothing to do.
                let open = node.tablet(tablet).ok();
                let Some(open) = open.filter(|t| std::ptr::eq(Arc::as_ptr(t), watched.as_ptr()))
                else {
                    return;
                };
                tracing::error!(tablet_id = %tablet, node_id = %node.id, %reason, "raft group stopped; reopening the replica from storage");
                node.tablets
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&tablet);
                open.shutdown().await;
                // A group that keeps stopping (a fatal error that recurs at once) is
                // reopened less and less often.
                let mut reopened = node.reopened.lock().unwrap_or_else(|e| e.into_inner());
                let backoff = match reopened.get(&tablet) {
                    Some((at, last)) if at.elapsed() < Duration::from_secs(60) => {
                        (*last * 2).min(Duration::from_secs(30))
                    }
                    _ => Duration::from_millis(100),
                };
                reopened.insert(tablet, (std::time::Instant::now(), backoff));
                backoff
            };
            loop {
                tokio::time::sleep(backoff).await;
                let Some(node) = node.upgrade() else { return };
                if node.closing.load(Ordering::Acquire) {
                    return;
                }
                match node.open_replica(tablet).await {
                    // Reopened (here or by another opener), or destroyed.
                    Ok(_) | Err(TabletError::NotFound(_)) => return,
                    Err(e) => {
                        tracing::error!(tablet_id = %tablet, error = %e, "reopening a stopped replica failed; trying again");
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                    }
                }
            }
        });
    }

    /// The replica of `tablet` on this node.
    pub fn tablet(&self, tablet: TabletId) -> Result<Arc<Tablet>> {
        self.tablets
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&tablet)
            .cloned()
            .ok_or(TabletError::NotFound(tablet))
    }

    /// Every tablet hosted here.
    pub fn tablets(&self) -> Vec<Arc<Tablet>> {
        self.tablets
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Stops the replica of `tablet` here, keeping its data (it reopens with the node).
    pub async fn close_tablet(&self, tablet: TabletId) -> Result<()> {
        let replica = self
            .tablets
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&tablet);
        match replica {
            Some(replica) => {
                replica.shutdown().await;
                Ok(())
            }
            None => Err(TabletError::NotFound(tablet)),
        }
    }

    /// Stops the replica of `tablet` here and deletes its rows, log and state (after the
    /// group removed this node).
    pub async fn destroy_tablet(&self, tablet: TabletId) -> Result<()> {
        self.close_tablet(tablet).await?;
        let mvcc = Mvcc::open(Arc::clone(&self.engine), tablet.keyspace())?;
        let mut batch = WriteBatch::new();
        mvcc.stage_replace_all(&mut batch, Vec::new(), truetime::Timestamp::ZERO);
        LogStore::new(Arc::clone(&self.engine), tablet).stage_destroy(&mut batch);
        batch.delete(Cf::Meta, StateMachine::applied_key(tablet));
        StateMachine::stage_destroy_txn_records(tablet, &mut batch);
        batch.delete(Cf::Meta, replica_key(tablet));
        self.engine.write(batch, true)?;
        Ok(())
    }

    /// Stops every replica (the data stays).
    pub async fn shutdown(&self) {
        let tablets: Vec<_> = {
            let mut open = self.tablets.write().unwrap_or_else(|e| e.into_inner());
            // Under the lock `open_replica` inserts with: nothing opens after this.
            self.closing.store(true, Ordering::Release);
            std::mem::take(&mut *open).into_values().collect()
        };
        for tablet in tablets {
            tablet.shutdown().await;
        }
    }

    async fn dispatch(&self, rpc: RaftRpc) -> std::result::Result<Vec<u8>, String> {
        let tablet = self.tablet(rpc.tablet).map_err(|e| e.to_string())?;
        let raft = tablet.raft();
        let io = |e: std::io::Error| e.to_string();
        let failed = |e: &dyn std::fmt::Display| e.to_string();
        match rpc.kind {
            RpcKind::AppendEntries => {
                let request: AppendEntriesRequest<TypeConfig> = decode(&rpc.payload).map_err(io)?;
                self.check_leader_clock(rpc.tablet, &request)?;
                encode(&raft.append_entries(request).await.map_err(|e| failed(&e))?).map_err(io)
            }
            RpcKind::Vote => {
                let request: VoteRequest<TypeConfig> = decode(&rpc.payload).map_err(io)?;
                encode(&raft.vote(request).await.map_err(|e| failed(&e))?).map_err(io)
            }
            RpcKind::PreVote => {
                let request: VoteRequest<TypeConfig> = decode(&rpc.payload).map_err(io)?;
                encode(&raft.pre_vote(request).await.map_err(|e| failed(&e))?).map_err(io)
            }
            RpcKind::TransferLeader => {
                let request: TransferLeaderRequest<TypeConfig> =
                    decode(&rpc.payload).map_err(io)?;
                encode(
                    &raft
                        .handle_transfer_leader(request)
                        .await
                        .map_err(|e| failed(&e))?,
                )
                .map_err(io)
            }
            RpcKind::SnapshotChunk => {
                self.receive_snapshot_chunk(raft, rpc.tablet, &rpc.payload)
                    .await
            }
        }
    }

    /// Refuses `request` if its leader stamped a command ahead of this node's clock beyond
    /// what two correct clocks allow, or is a leader refused so before (see [`Node`]).
    fn check_leader_clock(
        &self,
        tablet: TabletId,
        request: &AppendEntriesRequest<TypeConfig>,
    ) -> std::result::Result<(), String> {
        let leader = &request.vote.leader_id;
        // Only what this leader stamped itself: entries of earlier terms it passes on were
        // stamped by its predecessors.
        let stamped = request
            .entries
            .iter()
            .filter(|e| e.log_id.leader_id == *leader)
            .filter_map(|e| match &e.payload {
                EntryPayload::Normal(command) => command.ts(),
                _ => None,
            })
            .max();
        let mut refused = self
            .refused_leaders
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if stamped.is_none() && !refused.contains_key(&tablet) {
            return Ok(()); // a heartbeat from a leader nobody refused: no clock to read
        }
        let Ok(now) = self.clock.now() else {
            return Ok(()); // a clock that cannot bound the time judges nobody
        };
        let tolerance = (now.epsilon() * 2 + PEER_CLOCK_SLACK).max(self.config.clock_tolerance);
        let limit = now.latest.saturating_add(tolerance);
        if let Some(&(term, node, until)) = refused.get(&tablet) {
            if (term, node) == (leader.term, leader.node_id) && until > limit {
                // Heartbeats too, until its timestamps are no longer from our future: the
                // followers elect another leader if that takes longer than a timeout.
                return Err(format!(
                    "{CLOCK_AHEAD}: {tablet}: refusing {node} (term {term}) until {until}, a timestamp it stamped, is no longer ahead of this node's clock"
                ));
            }
            refused.remove(&tablet);
        }
        let Some(stamped) = stamped.filter(|ts| *ts > limit) else {
            return Ok(());
        };
        refused.insert(tablet, (leader.term, leader.node_id, stamped));
        let reason = format!(
            "{CLOCK_AHEAD}: {tablet}: {} (term {}) stamped a command {stamped}, {:?} past {}'s latest {}: the leader's clock is beyond its bound",
            leader.node_id,
            leader.term,
            stamped.saturating_duration_since(now.latest),
            self.id,
            now.latest
        );
        tracing::error!(tablet_id = %tablet, %reason, "refusing a leader whose clock runs ahead");
        Err(reason)
    }

    /// Appends a chunk to the snapshot being received for `tablet`; installs it when complete.
    async fn receive_snapshot_chunk(
        &self,
        raft: &Raft,
        tablet: TabletId,
        payload: &[u8],
    ) -> std::result::Result<Vec<u8>, String> {
        let chunk: SnapshotChunk = decode(payload).map_err(|e| e.to_string())?;
        let complete = {
            let mut incoming = self
                .incoming_snapshots
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let buffer = incoming.entry(tablet).or_default();
            if chunk.offset == 0 {
                buffer.clear();
            }
            if chunk.offset != buffer.len() as u64 {
                incoming.remove(&tablet);
                return Err(format!(
                    "snapshot chunk at {} out of order; restart the transfer",
                    chunk.offset
                ));
            }
            buffer.extend_from_slice(&chunk.data);
            if (buffer.len() as u64) < chunk.total {
                None
            } else {
                incoming.remove(&tablet)
            }
        };
        let Some(bytes) = complete else {
            return encode(&None::<()>).map_err(|e| e.to_string());
        };
        let snapshot = SnapshotOf::<TypeConfig, TabletSnapshot> {
            meta: chunk.meta,
            snapshot: TabletSnapshot { bytes },
        };
        let response = raft
            .install_full_snapshot(chunk.vote, snapshot)
            .await
            .map_err(|e| e.to_string())?;
        encode(&Some(response)).map_err(|e| e.to_string())
    }
}

/// Marks a tablet's replica as being opened until dropped.
struct Opening<'a> {
    node: &'a Node,
    tablet: TabletId,
}

impl Drop for Opening<'_> {
    fn drop(&mut self) {
        self.node
            .opening
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.tablet);
    }
}

impl RpcHandler for Node {
    fn handle(&self, rpc: RaftRpc) -> BoxFuture<'_, std::result::Result<Vec<u8>, String>> {
        let span = tracing::debug_span!("raft_rpc", node_id = %self.id, tablet_id = %rpc.tablet, kind = ?rpc.kind);
        Box::pin(self.dispatch(rpc).instrument(span))
    }
}
