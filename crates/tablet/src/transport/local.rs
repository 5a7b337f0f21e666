//! [`LocalNetwork`]: an in-process network between nodes of one test, with faults.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{BoxFuture, RaftRpc, RpcHandler, Transport, TransportError};
use crate::NodeId;

/// The faults in force.
#[derive(Debug)]
struct Faults {
    /// Directed links that drop everything: (from, to).
    cut: HashSet<(NodeId, NodeId)>,
    /// Added one-way latency.
    delay: Duration,
    /// Probability that a message (or its reply) is lost.
    loss: f64,
    rng: StdRng,
}

struct State {
    handlers: HashMap<NodeId, Weak<dyn RpcHandler>>,
    faults: Faults,
}

/// In-process messaging between the nodes of a test. Cheap to clone; clones share state.
/// Randomness (message loss) comes from the seed given at creation.
#[derive(Clone)]
pub struct LocalNetwork {
    state: Arc<Mutex<State>>,
}

impl fmt::Debug for LocalNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalNetwork").finish_non_exhaustive()
    }
}

impl LocalNetwork {
    /// A network with no faults; `seed` drives message loss.
    pub fn new(seed: u64) -> Self {
        let faults = Faults {
            cut: HashSet::new(),
            delay: Duration::ZERO,
            loss: 0.0,
            rng: StdRng::seed_from_u64(seed),
        };
        LocalNetwork {
            state: Arc::new(Mutex::new(State {
                handlers: HashMap::new(),
                faults,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes `node` reachable, delivering to `handler` (held weakly: a dropped node is down).
    pub fn register(&self, node: NodeId, handler: Weak<dyn RpcHandler>) {
        self.lock().handlers.insert(node, handler);
    }

    /// The transport `node` sends with.
    pub fn endpoint(&self, node: NodeId) -> Arc<dyn Transport> {
        Arc::new(LocalEndpoint {
            from: node,
            network: self.clone(),
        })
    }

    /// Cuts `node` off from every other node, both ways.
    pub fn isolate(&self, node: NodeId) {
        let mut state = self.lock();
        let others: Vec<NodeId> = state
            .handlers
            .keys()
            .copied()
            .filter(|n| *n != node)
            .collect();
        for other in others {
            state.faults.cut.insert((node, other));
            state.faults.cut.insert((other, node));
        }
    }

    /// Splits the nodes into `groups` that cannot reach each other.
    pub fn partition(&self, groups: &[&[NodeId]]) {
        let mut state = self.lock();
        for (i, a) in groups.iter().enumerate() {
            for b in groups.iter().skip(i + 1) {
                for &x in a.iter() {
                    for &y in b.iter() {
                        state.faults.cut.insert((x, y));
                        state.faults.cut.insert((y, x));
                    }
                }
            }
        }
    }

    /// Cuts the link between `a` and `b`, both ways.
    pub fn cut(&self, a: NodeId, b: NodeId) {
        let mut state = self.lock();
        state.faults.cut.insert((a, b));
        state.faults.cut.insert((b, a));
    }

    /// Restores every link.
    pub fn heal(&self) {
        self.lock().faults.cut.clear();
    }

    /// Adds one-way latency to every message.
    pub fn set_delay(&self, delay: Duration) {
        self.lock().faults.delay = delay;
    }

    /// Loses each message (and each reply) with probability `loss`.
    pub fn set_loss(&self, loss: f64) {
        self.lock().faults.loss = loss.clamp(0.0, 1.0);
    }

    /// Whether a message from `from` to `to` gets through now, and the delay it takes.
    fn admit(&self, from: NodeId, to: NodeId) -> Result<Duration, TransportError> {
        let mut state = self.lock();
        let faults = &mut state.faults;
        if faults.cut.contains(&(from, to)) {
            return Err(TransportError::Unreachable {
                node: to,
                reason: "partitioned".into(),
            });
        }
        if faults.loss > 0.0 && faults.rng.random_bool(faults.loss) {
            return Err(TransportError::Unreachable {
                node: to,
                reason: "message lost".into(),
            });
        }
        Ok(faults.delay)
    }

    fn handler(&self, node: NodeId) -> Option<Arc<dyn RpcHandler>> {
        self.lock().handlers.get(&node).and_then(Weak::upgrade)
    }
}

/// One node's view of a [`LocalNetwork`].
#[derive(Debug)]
struct LocalEndpoint {
    from: NodeId,
    network: LocalNetwork,
}

impl Transport for LocalEndpoint {
    fn call(
        &self,
        target: NodeId,
        _address: &str,
        rpc: RaftRpc,
    ) -> BoxFuture<'static, Result<Vec<u8>, TransportError>> {
        let (from, network) = (self.from, self.network.clone());
        Box::pin(async move {
            let delay = network.admit(from, target)?;
            if !delay.is_zero() {
                tokio::time::sleep(delay).await; // simulated latency, not a wait for a condition
            }
            let handler = network
                .handler(target)
                .ok_or_else(|| TransportError::Unreachable {
                    node: target,
                    reason: "node is down".into(),
                })?;
            let reply = handler.handle(rpc).await;
            // The reply crosses the network too: a partition that began meanwhile drops it.
            let delay = network.admit(target, from)?;
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            reply.map_err(|reason| TransportError::Refused {
                node: target,
                reason,
            })
        })
    }
}
