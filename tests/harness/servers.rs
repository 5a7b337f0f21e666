//! Clusters of real Meridian node servers in this process: each node listens on its own
//! free loopback port and talks to the others over gRPC, exactly as separate processes
//! would (membership, placement, Raft, transactions, the public API).

use std::sync::Arc;
use std::time::Duration;

use server::{Server, ServerConfig};
use tempfile::TempDir;
use truetime::FixedEpsilonClock;
use txn::TxnConfig;

use crate::cluster::fast_node_config;

/// A running cluster of node servers.
#[derive(Debug)]
pub struct ServerCluster {
    /// The nodes, in join order (node ids 1, 2, ...).
    pub servers: Vec<Arc<Server>>,
    _dirs: Vec<TempDir>,
}

impl ServerCluster {
    /// Starts `n` nodes on free loopback ports and initialises them as one cluster.
    pub async fn start(n: usize) -> anyhow::Result<ServerCluster> {
        let mut servers = Vec::new();
        let mut dirs = Vec::new();
        let mut joined: Vec<String> = Vec::new();
        for _ in 0..n {
            let dir = tempfile::tempdir()?;
            let config = ServerConfig {
                data_dir: dir.path().to_path_buf(),
                listen: "127.0.0.1:0".parse()?,
                advertise: None,
                join: joined.clone(),
                clock: Arc::new(FixedEpsilonClock::new(Duration::from_millis(1))),
                node: fast_node_config(),
                txn: TxnConfig::default(),
                faults: None,
            };
            let server = Server::start(config).await?;
            joined.push(server.address().to_string());
            servers.push(server);
            dirs.push(dir);
        }
        // The last node knows every address: it runs init.
        let last = servers
            .last()
            .ok_or_else(|| anyhow::anyhow!("a cluster needs a node"))?;
        server::admin::init_cluster(last).await?;
        Ok(ServerCluster {
            servers,
            _dirs: dirs,
        })
    }

    /// The public API address of node `i`.
    pub fn url(&self, i: usize) -> String {
        self.servers[i].address().to_string()
    }

    /// A SQL session run in node `i`'s process (no network between it and the node).
    pub fn session(&self, i: usize) -> anyhow::Result<sql::Session> {
        let running = self.servers[i]
            .running()
            .ok_or_else(|| anyhow::anyhow!("node {i} is not running"))?;
        Ok(sql::Session::new(
            Arc::clone(&running.backend) as Arc<dyn sql::Backend>
        ))
    }

    /// Stops every node.
    pub async fn shutdown(&self) {
        for server in &self.servers {
            server.shutdown().await;
        }
    }
}
