//! [`Directory`]: where keys live and who leads each tablet. The transaction layer asks it;
//! placement (the meta tablet) will implement it for real clusters. [`LocalDirectory`]
//! serves in-process clusters.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use storage::KeyRange;
use tablet::{NodeId, TabletId};

use crate::{Peer, TxnService};

/// Routing for transactions.
pub trait Directory: Send + Sync + std::fmt::Debug {
    /// The tablet whose range holds `key`.
    fn tablet_for(&self, key: &[u8]) -> TabletId;
    /// The tablets holding `range`, in key order, each with its part of the range.
    fn ranges(&self, range: &KeyRange) -> Vec<(TabletId, KeyRange)>;
    /// The node leading `tablet` (of the newest term if several believe they lead), if any.
    fn leader(&self, tablet: TabletId) -> Option<Arc<dyn Peer>>;
    /// The nodes holding a replica of `tablet`, the closest first.
    fn replicas(&self, tablet: TabletId) -> Vec<Arc<dyn Peer>>;
    /// A hint that `tablet`'s leader or placement looked stale: look again.
    fn refresh(&self, _tablet: TabletId) {}
    /// Brings the directory up to date now (placement and leaders), for a caller that
    /// found a key without a tablet or a tablet without a leader.
    fn sync(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(async {})
    }
}

/// How many times routing asks the directory to catch up before giving up (with a short,
/// growing pause between: a leader may be in election).
const ROUTE_ATTEMPTS: u32 = 5;

/// Asks `find` until it answers, letting `directory` catch up between tries: for callers
/// that met a key without a tablet or a tablet without a leader (a new table, a split, an
/// election this node has not seen yet).
pub(crate) async fn settle<T>(
    directory: &dyn Directory,
    mut find: impl FnMut() -> Option<T>,
) -> Option<T> {
    for attempt in 0..ROUTE_ATTEMPTS {
        if let Some(found) = find() {
            return Some(found);
        }
        directory.sync().await;
        tokio::time::sleep(std::time::Duration::from_millis(10 << attempt.min(4))).await;
    }
    find()
}

/// The leader of `tablet`, letting the directory catch up if it knows none.
pub(crate) async fn settled_leader(
    directory: &dyn Directory,
    tablet: TabletId,
) -> crate::Result<Arc<dyn Peer>> {
    settle(directory, || directory.leader(tablet))
        .await
        .ok_or_else(|| crate::TxnError::Unavailable(format!("{tablet} has no leader")))
}

/// Whether `parts` (in key order) cover all of `range` without a gap.
pub fn covers(range: &KeyRange, parts: &[(TabletId, KeyRange)]) -> bool {
    let mut at = &range.start;
    for (_, part) in parts {
        if part.start != *at {
            return false;
        }
        match &part.end {
            Some(end) => at = end,
            None => return true,
        }
    }
    range.end.as_ref().is_some_and(|end| at >= end)
}

/// `(tablet, start)` pairs sorted by start, the first from "": the parts of `range` each
/// tablet holds.
pub fn split_range(splits: &[(Vec<u8>, TabletId)], range: &KeyRange) -> Vec<(TabletId, KeyRange)> {
    let mut parts = Vec::new();
    for (i, (start, tablet)) in splits.iter().enumerate() {
        let end = splits.get(i + 1).map(|(next, _)| next.clone());
        let lo = start.clone().max(range.start.clone());
        let hi = match (&end, &range.end) {
            (Some(a), Some(b)) => Some(a.clone().min(b.clone())),
            (Some(a), None) => Some(a.clone()),
            (None, b) => b.clone(),
        };
        if hi.as_ref().is_none_or(|hi| lo < *hi) {
            parts.push((*tablet, KeyRange { start: lo, end: hi }));
        }
    }
    parts
}

/// A directory over services registered in this process, with fixed split points.
#[derive(Debug, Default)]
pub struct LocalDirectory {
    /// Tablet ranges: `(start key, tablet)` sorted by start key; the first starts at "".
    splits: Vec<(Vec<u8>, TabletId)>,
    services: RwLock<BTreeMap<NodeId, Arc<TxnService>>>,
}

impl LocalDirectory {
    /// A directory where tablet `splits[i].1` holds keys from `splits[i].0` up to the next
    /// start key.
    pub fn new(mut splits: Vec<(Vec<u8>, TabletId)>) -> Arc<Self> {
        splits.sort();
        Arc::new(LocalDirectory {
            splits,
            services: RwLock::new(BTreeMap::new()),
        })
    }

    /// Makes a node's service reachable.
    pub fn register(&self, service: Arc<TxnService>) {
        self.services
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(service.node_id(), service);
    }

    /// Makes a node's service unreachable (it crashed).
    pub fn unregister(&self, node: NodeId) {
        self.services
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&node);
    }

    fn services(&self) -> Vec<Arc<TxnService>> {
        self.services
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }
}

impl Directory for LocalDirectory {
    fn tablet_for(&self, key: &[u8]) -> TabletId {
        let index = self
            .splits
            .partition_point(|(start, _)| start.as_slice() <= key);
        // With no split covering `key` (or none at all), tablet 0: it has no leader, so the
        // caller gets a clear "no leader" error rather than a panic.
        self.splits
            .get(index.wrapping_sub(1))
            .map_or(TabletId(0), |(_, tablet)| *tablet)
    }

    fn ranges(&self, range: &KeyRange) -> Vec<(TabletId, KeyRange)> {
        split_range(&self.splits, range)
    }

    fn leader(&self, tablet: TabletId) -> Option<Arc<dyn Peer>> {
        self.leader_service(tablet).map(|s| s as Arc<dyn Peer>)
    }

    fn replicas(&self, tablet: TabletId) -> Vec<Arc<dyn Peer>> {
        self.services()
            .into_iter()
            .filter(|s| s.tablet(tablet).is_some())
            .map(|s| s as Arc<dyn Peer>)
            .collect()
    }
}

impl LocalDirectory {
    /// The service on the node leading `tablet` (of the newest term if several believe
    /// they lead).
    pub fn leader_service(&self, tablet: TabletId) -> Option<Arc<TxnService>> {
        self.services()
            .into_iter()
            .filter_map(|s| s.tablet(tablet).map(|t| (s, t)))
            .filter(|(_, t)| t.is_leader())
            .max_by_key(|(_, t)| t.term())
            .map(|(s, _)| s)
    }
}
