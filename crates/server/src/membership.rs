//! Cluster membership: which nodes form the cluster, their ids and addresses, and where the
//! meta tablet lives. `meridian init` fixes it once; every node keeps it in
//! `cluster.json` in its data directory and reads it at start.
//!
//! Nodes reach each other for membership through the `NodeAdmin` service: identify a node,
//! hand it its id and the member list (join), create a tablet replica, bootstrap a group.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use proto::v1::PeerMessage;
use proto::v1::node_admin_client::NodeAdminClient;
use serde::{Deserialize, Serialize};
use tablet::{NodeId, TabletId};
use tonic::transport::Endpoint;

/// The tablet holding the catalog and the placement of every other tablet.
pub const META_TABLET: TabletId = TabletId(1);

/// Replicas per tablet (fewer when the cluster is smaller).
pub const REPLICATION: usize = 3;

/// What a node knows about its cluster once it has joined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// This node.
    pub node: NodeId,
    /// Every member and its address (`http://host:port`).
    pub nodes: BTreeMap<NodeId, String>,
    /// The members holding the meta tablet.
    pub meta_replicas: Vec<NodeId>,
}

impl Membership {
    fn path(dir: &Path) -> PathBuf {
        dir.join("cluster.json")
    }

    /// The membership saved in `dir`, if the node has joined a cluster.
    pub fn load(dir: &Path) -> anyhow::Result<Option<Membership>> {
        match std::fs::read(Self::path(dir)) {
            Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).map_err(|e| {
                anyhow::anyhow!("{} is damaged: {e}", Self::path(dir).display())
            })?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Saves it in `dir` durably (write, fsync, rename, fsync the directory).
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        let tmp = dir.join("cluster.json.tmp");
        let bytes = serde_json::to_vec_pretty(self)?;
        {
            use std::io::Write;
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
        }
        std::fs::rename(&tmp, Self::path(dir))?;
        std::fs::File::open(dir)?.sync_all()?;
        Ok(())
    }

    /// `nodes` with their addresses (members unknown here are left out).
    pub fn addresses_of(&self, nodes: &[NodeId]) -> BTreeMap<NodeId, String> {
        nodes
            .iter()
            .filter_map(|n| Some((*n, self.nodes.get(n)?.clone())))
            .collect()
    }

    /// The first `REPLICATION` members, starting at `seed` (spreads tablets over nodes).
    pub fn pick_replicas(&self, seed: u64) -> Vec<NodeId> {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        let n = ids.len().min(REPLICATION);
        (0..n)
            .filter_map(|i| ids.get((seed as usize + i) % ids.len()).copied())
            .collect()
    }
}

/// A membership call between nodes.
#[derive(Debug, Serialize, Deserialize)]
pub enum AdminCall {
    /// Who are you? Answered with [`AdminAnswer::Identity`].
    Identify,
    /// You are `membership.node` of this cluster: save it and start.
    Join(Membership),
    /// Create an empty replica of `tablet` (idempotent).
    CreateReplica(TabletId),
    /// Make `members` the first members of `tablet`'s group.
    Bootstrap {
        /// The tablet.
        tablet: TabletId,
        /// Its members and their addresses.
        members: BTreeMap<NodeId, String>,
    },
    /// Fault injection (nodes started with `--allow-faults` only).
    Fault(Fault),
}

/// A fault the nemesis injects into one node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Fault {
    /// Drop this node's outgoing traffic to exactly these addresses (empty heals).
    Partition(Vec<String>),
    /// Shift this node's clock by this many nanoseconds (replacing any earlier shift).
    ClockOffset(i64),
}

/// The answer to an [`AdminCall`].
#[derive(Debug, Serialize, Deserialize)]
pub enum AdminAnswer {
    /// The node's id, if it has joined a cluster.
    Identity(Option<NodeId>),
    /// Done.
    Done,
}

/// Sends `call` to the node at `address`.
pub async fn admin_call(address: &str, call: &AdminCall) -> anyhow::Result<AdminAnswer> {
    let endpoint = Endpoint::from_shared(address.to_string())?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(30));
    let mut client = NodeAdminClient::new(endpoint.connect_lazy());
    let payload = postcard::to_stdvec(call)?;
    let reply = client
        .call(PeerMessage { payload })
        .await
        .map_err(|s| anyhow::anyhow!("{address}: {}", s.message()))?;
    let answer: Result<AdminAnswer, String> = postcard::from_bytes(&reply.into_inner().payload)?;
    answer.map_err(|e| anyhow::anyhow!("{address}: {e}"))
}

/// `host:port` or a URL, as a URL.
pub fn to_url(address: &str) -> String {
    if address.contains("://") {
        address.to_string()
    } else {
        format!("http://{address}")
    }
}
