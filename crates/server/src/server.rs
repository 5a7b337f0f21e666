//! A Meridian node as a process: one gRPC listener serving the public API, node-to-node
//! transactions, Raft traffic and membership; the tablets on its RocksDB; its transaction
//! service; and its cached placement.
//!
//! A node starts before it belongs to a cluster: it then answers `Init` and membership
//! calls only. `meridian init` makes the nodes named in `--join` a cluster (ids, the meta
//! tablet) and every node saves that in its data directory, so later starts come up
//! directly.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tablet::{Node, NodeConfig, RaftRpc, RpcHandler};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::server::TcpIncoming;
use transport::{GrpcTransport, PeerService, PeerSlot, RaftService};
use truetime::Clock;
use txn::{Peer, TxnClient, TxnConfig, TxnService};

use crate::admin::AdminService;
use crate::api::ApiService;
use crate::backend::ClusterBackend;
use crate::membership::{META_TABLET, Membership};
use crate::placement::ClusterDirectory;

/// How a node runs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where the node keeps its data.
    pub data_dir: PathBuf,
    /// Where it listens.
    pub listen: SocketAddr,
    /// The address other nodes and clients use, if not the listen address.
    pub advertise: Option<String>,
    /// The addresses of the cluster's first nodes (for `meridian init`).
    pub join: Vec<String>,
    /// TrueTime.
    pub clock: Arc<dyn Clock>,
    /// Tablets and Raft.
    pub node: NodeConfig,
    /// Transactions.
    pub txn: TxnConfig,
    /// Fault injection for the nemesis (`--allow-faults`); `None` refuses fault calls.
    pub faults: Option<Faults>,
}

/// The levers a nemesis may pull on a node started with `--allow-faults`.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Addresses this node drops its Raft and transaction traffic to.
    pub firewall: Arc<transport::Firewall>,
    /// Added to this node's clock (to its oscillator when it syncs with time masters, so a
    /// shift beyond ε is noticed and fences the node).
    pub clock_offset: truetime::fault::SharedOffset,
}

/// A node that has joined its cluster.
#[derive(Debug)]
pub struct Running {
    /// The cluster's members.
    pub membership: Membership,
    /// The tablets on this node.
    pub node: Arc<Node>,
    /// Its transaction layer.
    pub service: Arc<TxnService>,
    /// Its view of placement.
    pub directory: Arc<ClusterDirectory>,
    /// Transactions started here.
    pub client: Arc<TxnClient>,
    /// SQL's access to the cluster.
    pub backend: Arc<ClusterBackend>,
}

/// The node's tablets, once it has them (Raft traffic before that is refused).
#[derive(Default)]
struct NodeSlot(OnceLock<Arc<Node>>);

impl RpcHandler for NodeSlot {
    fn handle(&self, rpc: RaftRpc) -> tablet::transport::BoxFuture<'_, Result<Vec<u8>, String>> {
        match self.0.get() {
            Some(node) => node.handle(rpc),
            None => Box::pin(async { Err("this node has not joined a cluster".to_string()) }),
        }
    }
}

/// A running node process.
pub struct Server {
    config: ServerConfig,
    address: String,
    running: tokio::sync::OnceCell<Arc<Running>>,
    raft: Arc<NodeSlot>,
    peer: PeerSlot,
    stop: Mutex<Option<oneshot::Sender<()>>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Starts serving on `config.listen`, and runs the node if it has joined a cluster.
    pub async fn start(config: ServerConfig) -> anyhow::Result<Arc<Server>> {
        std::fs::create_dir_all(&config.data_dir)?;
        let listener = TcpListener::bind(config.listen).await?;
        let local = listener.local_addr()?;
        let address = config.advertise.clone().map_or_else(
            || format!("http://{local}"),
            |a| crate::membership::to_url(&a),
        );
        let (stop, stopped) = oneshot::channel();
        let server = Arc::new(Server {
            config,
            address,
            running: tokio::sync::OnceCell::new(),
            raft: Arc::new(NodeSlot::default()),
            peer: Arc::new(OnceLock::new()),
            stop: Mutex::new(Some(stop)),
        });
        let router = tonic::transport::Server::builder()
            // Clients and peers that time out reset their streams; under faults many do at
            // once, and h2's rapid-reset guard (20 by default) would then drop the whole
            // connection with every request still on it.
            .http2_max_pending_accept_reset_streams(Some(200))
            .add_service(RaftService::new(server.raft.clone()).into_server())
            .add_service(PeerService::new(Arc::clone(&server.peer)).into_server())
            .add_service(AdminService::new(Arc::downgrade(&server)).into_server())
            .add_service(ApiService::new(Arc::downgrade(&server)).into_server());
        tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            // Replies are small writes (headers, data, trailers): without TCP_NODELAY, Nagle
            // holds the later ones until the client's delayed ACK, ~40 ms per request.
            let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
            if let Err(e) = router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
            {
                tracing::error!(error = %e, "the gRPC server stopped");
            }
        });
        if let Some(membership) = Membership::load(&server.config.data_dir)? {
            server.join(membership).await?;
        }
        Ok(server)
    }

    /// The address other nodes and clients reach this node at (`http://host:port`).
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// The node, once it has joined a cluster.
    pub fn running(&self) -> Option<&Arc<Running>> {
        self.running.get()
    }

    /// Makes this node a member of the cluster in `membership` (saving it) and runs it.
    pub async fn join(&self, membership: Membership) -> anyhow::Result<Arc<Running>> {
        if let Some(running) = self.running.get() {
            anyhow::ensure!(
                running.membership == membership,
                "this node already belongs to a cluster"
            );
            return Ok(Arc::clone(running));
        }
        membership.save(&self.config.data_dir)?;
        let running = self
            .running
            .get_or_try_init(|| self.open(membership))
            .await?;
        Ok(Arc::clone(running))
    }

    async fn open(&self, membership: Membership) -> anyhow::Result<Arc<Running>> {
        let config = &self.config;
        let firewall = config
            .faults
            .as_ref()
            .map(|f| Arc::clone(&f.firewall))
            .unwrap_or_default();
        let transport = GrpcTransport::with_firewall(Duration::from_secs(2), Arc::clone(&firewall));
        let node = Node::open(
            membership.node,
            &config.data_dir.join("db"),
            transport,
            Arc::clone(&config.clock),
            config.node.clone(),
        )
        .await?;
        if membership.meta_replicas.contains(&membership.node) {
            node.create_tablet(META_TABLET).await?;
        }
        let directory = ClusterDirectory::new(membership.clone(), firewall);
        let weak: std::sync::Weak<dyn txn::Directory> =
            Arc::downgrade(&(Arc::clone(&directory) as Arc<dyn txn::Directory>));
        let service = TxnService::start(
            Arc::clone(&node),
            Arc::clone(&config.clock),
            config.txn.clone(),
            weak,
        );
        let id_base = txn_id_base(membership.node.0, config.clock.as_ref());
        let client = Arc::new(TxnClient::new(
            Arc::clone(&directory) as Arc<dyn txn::Directory>,
            Arc::clone(&config.clock),
            id_base,
        ));
        directory.start(Arc::clone(&service), &client);
        let backend = Arc::new(ClusterBackend::new(
            Arc::clone(&client),
            Arc::clone(&directory),
        ));
        let _ = self.raft.0.set(Arc::clone(&node));
        let _ = self.peer.set(Arc::clone(&service) as Arc<dyn Peer>);
        tracing::info!(node = %membership.node, address = %self.address, "node running");
        Ok(Arc::new(Running {
            membership,
            node,
            service,
            directory,
            client,
            backend,
        }))
    }

    /// Stops serving and closes the node's tablets.
    pub async fn shutdown(&self) {
        if let Some(stop) = self.stop.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = stop.send(());
        }
        if let Some(running) = self.running.get() {
            running.service.stop();
            running.node.shutdown().await;
        }
    }
}

/// Transaction ids unique across the cluster and across restarts: the node id in the top
/// 16 bits, then the start time in microseconds (a restart starts above every id the last
/// run could have issued unless it ran more than one transaction per microsecond).
fn txn_id_base(node: u64, clock: &dyn Clock) -> u64 {
    let micros = clock
        .now()
        .map(|t| t.latest.as_nanos() / 1_000)
        .unwrap_or_default();
    (node << 48) | (micros & ((1 << 48) - 1))
}
