//! Placement: which tablet holds which key range, where its replicas are and which of them
//! leads. The ranges are rows of the meta tablet (`m/range/<start>`), written in read-write
//! transactions like any other data, so every node reads the same placement. Each node
//! caches it in a [`ClusterDirectory`] that the transaction layer routes through; the cache
//! refreshes periodically and whenever a caller hits a missing or stale leader.
//!
//! The meta tablet's own place is fixed at `meridian init` ([`Membership`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde::{Deserialize, Serialize};
use storage::KeyRange;
use tablet::{NodeId, TabletId};
use transport::{Firewall, RemotePeer};
use txn::{Directory, Peer, ReadBound, ReplicaChoice, TxnClient, TxnService};

use crate::membership::{META_TABLET, Membership};

/// Keys below this belong to the meta tablet (the catalog and placement); tables start here.
pub const META_END: &[u8] = b"t";

const RANGE_PREFIX: &[u8] = b"m/range/";
const RANGE_PREFIX_END: &[u8] = b"m/range0";

/// How often a node re-reads placement and asks replicas who leads.
const REFRESH_EVERY: Duration = Duration::from_millis(500);

/// One tablet's range and replicas, as stored in the meta tablet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeInfo {
    /// The tablet.
    pub tablet: TabletId,
    /// First key.
    pub start: Vec<u8>,
    /// First key after the range.
    pub end: Vec<u8>,
    /// The nodes holding its replicas.
    pub replicas: Vec<NodeId>,
}

impl RangeInfo {
    /// Its row key in the meta tablet.
    pub fn key(start: &[u8]) -> Vec<u8> {
        [RANGE_PREFIX, start].concat()
    }
}

/// What a node last learnt about placement.
#[derive(Debug, Default, Clone)]
struct Snapshot {
    /// By start key.
    ranges: BTreeMap<Vec<u8>, RangeInfo>,
    leaders: HashMap<TabletId, (NodeId, u64)>,
}

/// A node's cached view of placement, implementing [`Directory`] for its transactions.
#[derive(Debug)]
pub struct ClusterDirectory {
    membership: Membership,
    local: OnceLock<Arc<TxnService>>,
    client: OnceLock<Weak<TxnClient>>,
    remotes: Mutex<HashMap<NodeId, Arc<dyn Peer>>>,
    snapshot: RwLock<Snapshot>,
    wake: Arc<tokio::sync::Notify>,
    firewall: Arc<Firewall>,
}

impl ClusterDirectory {
    /// A directory knowing only the meta tablet; calls to other nodes pass `firewall`.
    pub fn new(membership: Membership, firewall: Arc<Firewall>) -> Arc<Self> {
        let meta = RangeInfo {
            tablet: META_TABLET,
            start: Vec::new(),
            end: META_END.to_vec(),
            replicas: membership.meta_replicas.clone(),
        };
        let snapshot = Snapshot {
            ranges: BTreeMap::from([(Vec::new(), meta)]),
            leaders: HashMap::new(),
        };
        Arc::new(ClusterDirectory {
            membership,
            local: OnceLock::new(),
            client: OnceLock::new(),
            remotes: Mutex::new(HashMap::new()),
            snapshot: RwLock::new(snapshot),
            wake: Arc::new(tokio::sync::Notify::new()),
            firewall,
        })
    }

    /// Connects the local transaction service and a client for reading placement, and
    /// starts refreshing in the background until the directory is dropped.
    pub fn start(self: &Arc<Self>, local: Arc<TxnService>, client: &Arc<TxnClient>) {
        let _ = self.local.set(local);
        let _ = self.client.set(Arc::downgrade(client));
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(directory) = weak.upgrade() else {
                    return;
                };
                directory.refresh_now().await;
                let wake = Arc::clone(&directory.wake);
                drop(directory);
                let _ = tokio::time::timeout(REFRESH_EVERY, wake.notified()).await;
            }
        });
    }

    /// The cluster's members.
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Snapshot> {
        self.snapshot.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Every range, in key order.
    pub fn ranges_info(&self) -> Vec<RangeInfo> {
        self.read().ranges.values().cloned().collect()
    }

    /// The leader of `tablet` and its term, as last seen.
    pub fn leader_of(&self, tablet: TabletId) -> Option<(NodeId, u64)> {
        self.read().leaders.get(&tablet).copied()
    }

    /// The range starting at `start`, if placement has it.
    pub fn range_at(&self, start: &[u8]) -> Option<RangeInfo> {
        self.read().ranges.get(start).cloned()
    }

    /// The transaction layer on `node`.
    pub fn peer(&self, node: NodeId) -> Option<Arc<dyn Peer>> {
        if node == self.membership.node {
            return self.local.get().map(|s| Arc::clone(s) as Arc<dyn Peer>);
        }
        let mut remotes = self.remotes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(peer) = remotes.get(&node) {
            return Some(Arc::clone(peer));
        }
        let address = self.membership.nodes.get(&node)?;
        let peer: Arc<dyn Peer> =
            Arc::new(RemotePeer::with_firewall(node, address, Arc::clone(&self.firewall)).ok()?);
        remotes.insert(node, Arc::clone(&peer));
        Some(peer)
    }

    /// Re-reads placement from the meta tablet and asks every replica who leads.
    pub async fn refresh_now(&self) {
        if let Some(ranges) = self.load_ranges().await {
            let mut snapshot = self.snapshot.write().unwrap_or_else(|e| e.into_inner());
            snapshot.ranges.retain(|_, r| r.tablet == META_TABLET);
            for range in ranges {
                snapshot.ranges.insert(range.start.clone(), range);
            }
        }
        let ranges = self.ranges_info();
        let found = join_all(ranges.iter().map(|r| self.find_leader(r))).await;
        let mut snapshot = self.snapshot.write().unwrap_or_else(|e| e.into_inner());
        for (range, leader) in ranges.iter().zip(found) {
            match leader {
                Some(leader) => snapshot.leaders.insert(range.tablet, leader),
                None => snapshot.leaders.remove(&range.tablet),
            };
        }
    }

    async fn load_ranges(&self) -> Option<Vec<RangeInfo>> {
        let client = self.client.get()?.upgrade()?;
        let mut snapshot = client
            .read_only(ReadBound::Strong, ReplicaChoice::Any)
            .ok()?;
        let rows = snapshot
            .scan(KeyRange::new(RANGE_PREFIX, RANGE_PREFIX_END), usize::MAX)
            .await
            .ok()?;
        Some(
            rows.iter()
                .filter_map(|(_, v)| serde_json::from_slice(v).ok())
                .collect(),
        )
    }

    async fn find_leader(&self, range: &RangeInfo) -> Option<(NodeId, u64)> {
        let asks = range.replicas.iter().map(|node| async move {
            let peer = self.peer(*node)?;
            let state =
                tokio::time::timeout(Duration::from_secs(1), peer.replica_state(range.tablet))
                    .await
                    .ok()?
                    .ok()?;
            state.is_leader.then_some((*node, state.term))
        });
        join_all(asks)
            .await
            .into_iter()
            .flatten()
            .max_by_key(|(_, term)| *term)
    }

    /// Waits until placement holds a range starting at `start` with a known leader.
    pub async fn wait_for_range(&self, start: &[u8], timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(range) = self.range_at(start)
                && self.leader_of(range.tablet).is_some()
            {
                return true;
            }
            self.refresh_now().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// The range holding `key`, if placement has one.
    pub fn range_of(&self, key: &[u8]) -> Option<RangeInfo> {
        let snapshot = self.read();
        let (_, range) = snapshot.ranges.range(..=key.to_vec()).next_back()?;
        (key < range.end.as_slice()).then(|| range.clone())
    }
}

impl Directory for ClusterDirectory {
    fn tablet_for(&self, key: &[u8]) -> TabletId {
        // TabletId(0) has no leader and no replicas: the caller gets "unavailable".
        self.range_of(key).map_or(TabletId(0), |r| r.tablet)
    }

    fn ranges(&self, range: &KeyRange) -> Vec<(TabletId, KeyRange)> {
        self.ranges_info()
            .into_iter()
            .filter_map(|r| {
                let start = r.start.clone().max(range.start.clone());
                let end = match &range.end {
                    Some(end) => r.end.clone().min(end.clone()),
                    None => r.end.clone(),
                };
                (start < end).then(|| (r.tablet, KeyRange::new(start, end)))
            })
            .collect()
    }

    fn leader(&self, tablet: TabletId) -> Option<Arc<dyn Peer>> {
        let (node, _) = self.leader_of(tablet)?;
        self.peer(node)
    }

    fn replicas(&self, tablet: TabletId) -> Vec<Arc<dyn Peer>> {
        let snapshot = self.read();
        let Some(range) = snapshot.ranges.values().find(|r| r.tablet == tablet) else {
            return Vec::new();
        };
        let mut nodes = range.replicas.clone();
        drop(snapshot);
        // This node first: a local snapshot read needs no network.
        nodes.sort_by_key(|n| *n != self.membership.node);
        nodes.into_iter().filter_map(|n| self.peer(n)).collect()
    }

    fn refresh(&self, _tablet: TabletId) {
        self.wake.notify_one();
    }

    fn sync(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(self.refresh_now())
    }
}
