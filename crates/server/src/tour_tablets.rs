//! `meridian tour`, part two: a tablet replicated by Raft on three nodes over gRPC.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tablet::{Mutation, Node, NodeConfig, NodeId, RpcHandler, Tablet, TabletId};
use transport::{GrpcTransport, RaftService};
use truetime::Clock;

const PATIENCE: Duration = Duration::from_secs(20);

/// Three nodes in this process, each with its own RocksDB and gRPC port on 127.0.0.1.
pub async fn run(clock: Arc<dyn Clock>, dir: &std::path::Path) -> anyhow::Result<()> {
    println!("\n4. A tablet replicated by Raft on three nodes over gRPC");
    let mut nodes = Vec::new();
    let mut members = BTreeMap::new();
    for id in 1..=3 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = format!("http://{}", listener.local_addr()?);
        let node_dir = dir.join(format!("node{id}"));
        let transport = GrpcTransport::new(Duration::from_secs(2));
        let node = Node::open(
            NodeId(id),
            &node_dir,
            transport,
            Arc::clone(&clock),
            NodeConfig::default(),
        )
        .await?;
        let handler: Arc<dyn RpcHandler> = node.clone();
        tokio::spawn(RaftService::new(handler).serve(listener, std::future::pending()));
        println!("   node n{id} at {address}, data in {}", node_dir.display());
        members.insert(NodeId(id), address);
        nodes.push(node);
    }
    let tablet = TabletId(1);
    for node in &nodes {
        node.create_tablet(tablet).await?;
    }
    nodes[0].bootstrap(tablet, &members).await?;
    let leader = wait_leader(&nodes, tablet, None).await?;
    println!("   tablet {tablet}: leader {}", leader.metrics().node);
    let mutation = Mutation::put(b"greeting".to_vec(), b"hello".to_vec());
    let ts = leader.write(vec![mutation]).await?;
    println!("   wrote at {ts} (fsync'd on a majority before it was acknowledged)");
    for node in &nodes {
        let replica = node.tablet(tablet)?;
        let value = replica.read(b"greeting", ts, PATIENCE).await?;
        let shown = value.map(|v| String::from_utf8_lossy(&v).into_owned());
        println!(
            "   {} reads {shown:?} at {ts} without asking the leader",
            node.id()
        );
    }
    crate::tour_txn::run(Arc::clone(&clock), &nodes, &members).await?;
    println!("\n6. Failover");
    let old = leader.metrics().node;
    let survivors: Vec<Arc<Node>> = nodes.iter().filter(|n| n.id() != old).cloned().collect();
    for node in nodes.iter().filter(|n| n.id() == old) {
        node.shutdown().await;
    }
    let started = Instant::now();
    let leader = wait_leader(&survivors, tablet, Some(old)).await?;
    println!(
        "   stopped {old}; {} took over in {:?}",
        leader.metrics().node,
        started.elapsed()
    );
    let ts = leader
        .write(vec![Mutation::put(
            b"greeting".to_vec(),
            b"still here".to_vec(),
        )])
        .await?;
    println!(
        "   wrote again at {ts}; safe time on the new leader: {}",
        leader.safe_ts()
    );
    for node in survivors {
        node.shutdown().await;
    }
    Ok(())
}

async fn wait_leader(
    nodes: &[Arc<Node>],
    tablet: TabletId,
    not: Option<NodeId>,
) -> anyhow::Result<Arc<Tablet>> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let leader = nodes
            .iter()
            .filter(|n| Some(n.id()) != not)
            .filter_map(|n| n.tablet(tablet).ok())
            .find(|t| t.is_leader());
        if let Some(leader) = leader {
            return Ok(leader);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no leader for {tablet} within {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
