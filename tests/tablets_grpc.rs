//! Tablets replicating over real gRPC on 127.0.0.1: one Raft service per node carries the
//! traffic of every group it hosts.

#![allow(clippy::unwrap_used)] // a test fails by panicking

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use meridian_tests::cluster::{PATIENCE, put};
use meridian_tests::{init_tracing, wait_for};
use storage::{KeyRange, ScanDirection};
use tablet::{Node, NodeConfig, NodeId, RpcHandler, TabletId};
use tokio::sync::oneshot;
use transport::{GrpcTransport, RaftService};
use truetime::{Clock, FixedEpsilonClock, Timestamp};

struct GrpcNode {
    node: Arc<Node>,
    _dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
}

async fn start_node(id: NodeId) -> (GrpcNode, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let clock: Arc<dyn Clock> = Arc::new(FixedEpsilonClock::new(Duration::from_millis(1)));
    let transport = GrpcTransport::new(Duration::from_secs(2));
    let node = Node::open(id, dir.path(), transport, clock, NodeConfig::default())
        .await
        .unwrap();
    let handler: Arc<dyn RpcHandler> = node.clone();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(RaftService::new(handler).serve(listener, async {
        let _ = stopped.await;
    }));
    (
        GrpcNode {
            node,
            _dir: dir,
            stop: Some(stop),
        },
        address,
    )
}

impl GrpcNode {
    async fn stop(&mut self) {
        self.node.shutdown().await;
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicate_two_tablets_over_grpc() {
    init_tracing();
    let mut nodes = Vec::new();
    let mut members = BTreeMap::new();
    for id in 1..=3 {
        let (node, address) = start_node(NodeId(id)).await;
        members.insert(NodeId(id), address);
        nodes.push(node);
    }
    let tablets = [TabletId(7), TabletId(8)];
    for tablet in tablets {
        for n in &nodes {
            n.node.create_tablet(tablet).await.unwrap();
        }
        nodes[0].node.bootstrap(tablet, &members).await.unwrap();
    }
    let leader_of = |tablet: TabletId, nodes: &[GrpcNode]| {
        nodes
            .iter()
            .filter_map(|n| n.node.tablet(tablet).ok())
            .find(|t| t.is_leader())
    };
    let mut last = BTreeMap::new();
    for tablet in tablets {
        let leader = wait_for("a leader over gRPC", PATIENCE, || async {
            leader_of(tablet, &nodes)
        })
        .await
        .unwrap();
        let mut ts = Timestamp::ZERO;
        for i in 0..10 {
            ts = leader
                .write(vec![put(format!("k{i}"), b"v".to_vec())])
                .await
                .unwrap();
        }
        last.insert(tablet, ts);
    }
    for tablet in tablets {
        for n in &nodes {
            let replica = n.node.tablet(tablet).unwrap();
            let page = replica
                .scan(
                    &KeyRange::all(),
                    last[&tablet],
                    100,
                    ScanDirection::Forward,
                    PATIENCE,
                )
                .await
                .unwrap();
            assert_eq!(page.rows.len(), 10, "{tablet} on {}", n.node.id());
        }
    }

    // Stop the leader of the first tablet: the other two elect a new one over gRPC.
    let old = leader_of(tablets[0], &nodes).unwrap().metrics().node;
    let index = nodes.iter().position(|n| n.node.id() == old).unwrap();
    nodes[index].stop().await;
    let survivors: Vec<GrpcNode> = nodes.drain(..).filter(|n| n.node.id() != old).collect();
    let leader = wait_for("a new leader over gRPC", PATIENCE, || async {
        leader_of(tablets[0], &survivors)
    })
    .await
    .unwrap();
    let ts = leader
        .write(vec![put("after", b"v".to_vec())])
        .await
        .unwrap();
    for n in &survivors {
        let value = n
            .node
            .tablet(tablets[0])
            .unwrap()
            .read(b"after", ts, PATIENCE)
            .await
            .unwrap();
        assert_eq!(value, Some(b"v".to_vec()));
    }
    for mut n in survivors {
        n.stop().await;
    }
}
