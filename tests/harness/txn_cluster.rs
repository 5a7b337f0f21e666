//! An in-process cluster with the transaction layer: a [`Cluster`], a transaction service
//! per node, and a [`LocalDirectory`] over fixed tablet splits.

use std::collections::BTreeMap;
use std::sync::Arc;

use tablet::{NodeConfig, NodeId, TabletId};
use truetime::Clock;
use txn::{Directory, LocalDirectory, TxnClient, TxnConfig, TxnService};

use crate::cluster::Cluster;

/// Nodes with tablets and transaction services.
#[derive(Debug)]
pub struct TxnCluster {
    /// The nodes.
    pub cluster: Cluster,
    /// Routing.
    pub directory: Arc<LocalDirectory>,
    config: TxnConfig,
    services: BTreeMap<NodeId, Arc<TxnService>>,
}

impl TxnCluster {
    /// `nodes` nodes; tablet `splits[i].1` holds keys from `splits[i].0` on, replicated on
    /// every node.
    pub async fn start(
        nodes: u64,
        seed: u64,
        node_config: NodeConfig,
        config: TxnConfig,
        splits: Vec<(Vec<u8>, TabletId)>,
    ) -> anyhow::Result<TxnCluster> {
        let cluster = Cluster::start(nodes, seed, node_config).await?;
        for (i, (_, tablet)) in splits.iter().enumerate() {
            let mut members = cluster.ids();
            let shift = i % members.len();
            members.rotate_left(shift); // spread leaders
            cluster.create_tablet(*tablet, &members).await?;
        }
        let directory = LocalDirectory::new(splits);
        let mut this = TxnCluster {
            cluster,
            directory,
            config,
            services: BTreeMap::new(),
        };
        for id in this.cluster.ids() {
            this.start_service(id);
        }
        Ok(this)
    }

    fn start_service(&mut self, id: NodeId) {
        let clock: Arc<dyn Clock> = Arc::new(self.cluster.clock(id).clone());
        let directory: Arc<dyn Directory> = self.directory.clone();
        let service = TxnService::start(
            self.cluster.node(id),
            clock,
            self.config.clone(),
            Arc::downgrade(&directory),
        );
        self.directory.register(Arc::clone(&service));
        self.services.insert(id, service);
    }

    /// A client whose clock is node `at`'s.
    pub fn client(&self, at: NodeId, id_base: u64) -> TxnClient {
        let clock: Arc<dyn Clock> = Arc::new(self.cluster.clock(at).clone());
        TxnClient::new(self.directory.clone(), clock, id_base)
    }

    /// The service of a running node.
    pub fn service(&self, id: NodeId) -> Arc<TxnService> {
        Arc::clone(&self.services[&id])
    }

    /// Crashes a node: its transaction state (locks, coordination) is lost with it.
    pub async fn kill(&mut self, id: NodeId) {
        self.directory.unregister(id);
        if let Some(service) = self.services.remove(&id) {
            service.stop();
        }
        self.cluster.kill(id).await;
    }

    /// Restarts a node from its directory, with a fresh transaction service.
    pub async fn restart(&mut self, id: NodeId) -> anyhow::Result<()> {
        self.cluster.restart(id).await?;
        self.start_service(id);
        Ok(())
    }

    /// Stops everything.
    pub async fn shutdown(mut self) {
        for id in self.cluster.ids() {
            self.kill(id).await;
        }
    }
}
