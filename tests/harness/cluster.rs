//! An in-process cluster: N nodes, each with its own RocksDB directory, talking over a
//! [`LocalNetwork`] that tests can partition, delay and make lossy.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use storage::{KeyRange, ScanDirection};
use tablet::{LocalNetwork, Mutation, Node, NodeConfig, NodeId, RpcHandler, Tablet, TabletId};
use tempfile::TempDir;
use truetime::{Clock, ReferenceTime, TestClock, Timestamp};

use crate::wait_for;

/// How long tests wait for a cluster condition before failing.
pub const PATIENCE: Duration = Duration::from_secs(30);

#[derive(Debug)]
struct Slot {
    dir: TempDir,
    clock: TestClock,
    node: Option<Arc<Node>>,
    /// A killed node, until every in-flight reference to it is gone and its RocksDB closed.
    dying: Option<std::sync::Weak<storage::Engine>>,
}

/// Nodes `n1..=nN` in one process.
#[derive(Debug)]
pub struct Cluster {
    /// The network between the nodes.
    pub network: LocalNetwork,
    config: NodeConfig,
    slots: BTreeMap<NodeId, Slot>,
}

/// Node settings for tests: fast heartbeats and elections, and closed timestamps every
/// 100 ms so followers' safe time keeps up.
pub fn fast_node_config() -> NodeConfig {
    NodeConfig {
        raft: tablet::RaftConfig {
            heartbeat_interval: Duration::from_millis(100),
            election_timeout: (Duration::from_millis(500), Duration::from_millis(1000)),
            ..tablet::RaftConfig::default()
        },
        close_interval: Duration::from_millis(100),
        ..NodeConfig::default()
    }
}

/// The address a node is known by in group memberships.
pub fn address(node: NodeId) -> String {
    format!("local://{node}")
}

impl Cluster {
    /// Starts `n` nodes with clocks on the system time (ε = 1 ms) and `config`.
    pub async fn start(n: u64, seed: u64, config: NodeConfig) -> anyhow::Result<Cluster> {
        let mut cluster = Cluster {
            network: LocalNetwork::new(seed),
            config,
            slots: BTreeMap::new(),
        };
        for id in 1..=n {
            let clock = TestClock::new(ReferenceTime::system(), Duration::from_millis(1));
            let slot = Slot {
                dir: tempfile::tempdir()?,
                clock,
                node: None,
                dying: None,
            };
            cluster.slots.insert(NodeId(id), slot);
            cluster.restart(NodeId(id)).await?;
        }
        Ok(cluster)
    }

    /// Every node id, running or not.
    pub fn ids(&self) -> Vec<NodeId> {
        self.slots.keys().copied().collect()
    }

    /// A running node.
    pub fn node(&self, id: NodeId) -> Arc<Node> {
        self.slots[&id]
            .node
            .clone()
            .unwrap_or_else(|| panic!("{id} is not running"))
    }

    /// The test clock of a node.
    pub fn clock(&self, id: NodeId) -> &TestClock {
        &self.slots[&id].clock
    }

    /// Whether a node is running.
    pub fn is_running(&self, id: NodeId) -> bool {
        self.slots[&id].node.is_some()
    }

    /// Stops a node (as a crash would: nothing is flushed beyond what was already durable)
    /// and keeps its directory.
    pub async fn kill(&mut self, id: NodeId) {
        if let Some(slot) = self.slots.get_mut(&id)
            && let Some(node) = slot.node.take()
        {
            node.shutdown().await;
            slot.dying = Some(Arc::downgrade(node.engine()));
        }
    }

    /// Starts (or restarts) a node from its directory.
    pub async fn restart(&mut self, id: NodeId) -> anyhow::Result<()> {
        // Requests and tasks in flight when the node was killed still hold its RocksDB; it
        // closes (and can be opened again) when the last of them lets go.
        if let Some(dying) = self.slots.get_mut(&id).and_then(|s| s.dying.take()) {
            wait_for(&format!("{id}'s old instance to close"), PATIENCE, || {
                let gone = dying.upgrade().is_none();
                async move { gone.then_some(()) }
            })
            .await?;
        }
        let slot = &self.slots[&id];
        let clock: Arc<dyn Clock> = Arc::new(slot.clock.clone());
        let (dir, config) = (slot.dir.path().to_path_buf(), self.config.clone());
        let node = wait_for(&format!("{id}'s RocksDB to open"), PATIENCE, || {
            let (clock, endpoint) = (Arc::clone(&clock), self.network.endpoint(id));
            let (dir, config) = (dir.clone(), config.clone());
            // The last holder of the old instance may still be closing RocksDB (its lock
            // file is released at the end of the drop): retry until it has.
            async move {
                match Node::open(id, &dir, endpoint, clock, config).await {
                    Err(e) if e.to_string().contains("LOCK") => None,
                    opened => Some(opened),
                }
            }
        })
        .await??;
        let handler: Arc<dyn RpcHandler> = node.clone();
        self.network.register(id, Arc::downgrade(&handler));
        if let Some(slot) = self.slots.get_mut(&id) {
            slot.node = Some(node);
        }
        Ok(())
    }

    /// Creates `tablet` replicated on `members`, bootstraps it, and waits for a leader.
    pub async fn create_tablet(
        &self,
        tablet: TabletId,
        members: &[NodeId],
    ) -> anyhow::Result<NodeId> {
        for &id in members {
            self.node(id).create_tablet(tablet).await?;
        }
        let addresses: BTreeMap<NodeId, String> =
            members.iter().map(|&id| (id, address(id))).collect();
        self.node(members[0]).bootstrap(tablet, &addresses).await?;
        self.wait_leader(tablet).await
    }

    /// The running replicas of `tablet`.
    pub fn replicas(&self, tablet: TabletId) -> Vec<Arc<Tablet>> {
        self.slots
            .values()
            .filter_map(|s| s.node.as_ref())
            .filter_map(|n| n.tablet(tablet).ok())
            .collect()
    }

    /// Waits until a running replica of `tablet` is leader and returns its node; if a
    /// partitioned old leader still believes it leads, the leader of the newest term wins.
    pub async fn wait_leader(&self, tablet: TabletId) -> anyhow::Result<NodeId> {
        wait_for(&format!("a leader of {tablet}"), PATIENCE, || async {
            self.replicas(tablet)
                .iter()
                .filter(|t| t.is_leader())
                .map(|t| t.metrics())
                .max_by_key(|m| m.term)
                .map(|m| m.node)
        })
        .await
    }

    /// Writes through the current leader, retrying while leadership moves. Returns the
    /// timestamp and the leader that acknowledged it.
    pub async fn write(
        &self,
        tablet: TabletId,
        mutations: Vec<Mutation>,
    ) -> anyhow::Result<(Timestamp, NodeId)> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let leader = self.wait_leader(tablet).await?;
            // The replica may be between instances (its node's supervisor reopening it).
            let written = match self.node(leader).tablet(tablet) {
                Ok(replica) => replica.write(mutations.clone()).await,
                Err(e) => Err(e),
            };
            match written {
                Ok(ts) => return Ok((ts, leader)),
                Err(e)
                    if (e.is_retryable() || matches!(e, tablet::TabletError::NotFound(_)))
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Waits until every running replica of `tablet` is safe at `ts`, then returns each
    /// replica's rows at `ts`.
    pub async fn rows_everywhere(
        &self,
        tablet: TabletId,
        ts: Timestamp,
    ) -> anyhow::Result<Vec<(NodeId, Vec<(Vec<u8>, Vec<u8>)>)>> {
        let mut out = Vec::new();
        for replica in self.replicas(tablet) {
            let page = replica
                .scan(
                    &KeyRange::all(),
                    ts,
                    usize::MAX,
                    ScanDirection::Forward,
                    PATIENCE,
                )
                .await?;
            out.push((replica.metrics().node, page.rows));
        }
        Ok(out)
    }

    /// Stops every node.
    pub async fn shutdown(mut self) {
        for id in self.ids() {
            self.kill(id).await;
        }
    }
}

/// A put mutation.
pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Mutation {
    Mutation::put(key, value)
}
