//! The `NodeAdmin` service (membership calls between nodes) and cluster initialisation.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use proto::v1::PeerMessage;
use proto::v1::node_admin_server::{NodeAdmin, NodeAdminServer};
use tablet::NodeId;
use tonic::{Request, Response, Status};

use crate::membership::{
    AdminAnswer, AdminCall, Fault, META_TABLET, Membership, admin_call, to_url,
};
use crate::server::Server;

/// Answers membership calls from other nodes.
#[derive(Debug)]
pub struct AdminService {
    server: Weak<Server>,
}

impl AdminService {
    /// Serves `server`.
    pub fn new(server: Weak<Server>) -> Self {
        AdminService { server }
    }

    /// The tonic service.
    pub fn into_server(self) -> NodeAdminServer<AdminService> {
        NodeAdminServer::new(self)
    }

    async fn handle(&self, call: AdminCall) -> anyhow::Result<AdminAnswer> {
        let server = self
            .server
            .upgrade()
            .ok_or_else(|| anyhow::anyhow!("shutting down"))?;
        match call {
            AdminCall::Identify => Ok(AdminAnswer::Identity(
                server.running().map(|r| r.membership.node),
            )),
            AdminCall::Join(membership) => {
                server.join(membership).await?;
                Ok(AdminAnswer::Done)
            }
            AdminCall::CreateReplica(tablet) => {
                let running = server
                    .running()
                    .ok_or_else(|| anyhow::anyhow!("this node has not joined a cluster"))?;
                running.node.create_tablet(tablet).await?;
                Ok(AdminAnswer::Done)
            }
            AdminCall::Fault(fault) => {
                let faults = server.config().faults.as_ref().ok_or_else(|| {
                    anyhow::anyhow!(
                        "faults are disabled on this node (start it with --allow-faults)"
                    )
                })?;
                tracing::warn!(?fault, "fault injected");
                match fault {
                    Fault::Partition(blocked) => faults.firewall.set_blocked(blocked),
                    Fault::ClockOffset(ns) => faults
                        .clock_offset
                        .store(ns, std::sync::atomic::Ordering::SeqCst),
                }
                Ok(AdminAnswer::Done)
            }
            AdminCall::Bootstrap { tablet, members } => {
                let running = server
                    .running()
                    .ok_or_else(|| anyhow::anyhow!("this node has not joined a cluster"))?;
                let replica = running.node.tablet(tablet)?;
                // A retried bootstrap of a group that already has members is done already.
                if replica.term() == 0 {
                    running.node.bootstrap(tablet, &members).await?;
                }
                Ok(AdminAnswer::Done)
            }
        }
    }
}

#[tonic::async_trait]
impl NodeAdmin for AdminService {
    async fn call(&self, request: Request<PeerMessage>) -> Result<Response<PeerMessage>, Status> {
        let call: AdminCall = postcard::from_bytes(&request.into_inner().payload)
            .map_err(|e| Status::invalid_argument(format!("undecodable admin call: {e}")))?;
        let answer = self.handle(call).await.map_err(|e| format!("{e:#}"));
        let payload =
            postcard::to_stdvec(&answer).map_err(|e| Status::internal(format!("encoding: {e}")))?;
        Ok(Response::new(PeerMessage { payload }))
    }
}

/// Makes the nodes in `server`'s join list (and `server`) a new cluster: gives each its id,
/// places the meta tablet on the first three, and waits until it has a leader.
pub async fn init_cluster(server: &Arc<Server>) -> anyhow::Result<Membership> {
    anyhow::ensure!(
        server.running().is_none(),
        "this node already belongs to a cluster; init runs once"
    );
    let mut addresses: Vec<String> = server.config().join.iter().map(|a| to_url(a)).collect();
    if !addresses.iter().any(|a| a == server.address()) {
        addresses.push(server.address().to_string());
    }
    addresses.dedup();
    for address in &addresses {
        match admin_call(address, &AdminCall::Identify).await {
            Ok(AdminAnswer::Identity(None)) => {}
            Ok(_) => anyhow::bail!("{address} already belongs to a cluster"),
            Err(e) => anyhow::bail!("cannot reach {address} ({e}); start every node first"),
        }
    }
    let nodes: BTreeMap<NodeId, String> = addresses
        .iter()
        .enumerate()
        .map(|(i, a)| (NodeId(i as u64 + 1), a.clone()))
        .collect();
    let meta_replicas: Vec<NodeId> = nodes.keys().copied().take(3).collect();
    for (id, address) in &nodes {
        let membership = Membership {
            node: *id,
            nodes: nodes.clone(),
            meta_replicas: meta_replicas.clone(),
        };
        admin_call(address, &AdminCall::Join(membership)).await?;
    }
    let members: BTreeMap<NodeId, String> = meta_replicas
        .iter()
        .filter_map(|id| Some((*id, nodes.get(id)?.clone())))
        .collect();
    let first = members
        .values()
        .next()
        .ok_or_else(|| anyhow::anyhow!("no nodes to initialise"))?;
    admin_call(
        first,
        &AdminCall::Bootstrap {
            tablet: META_TABLET,
            members: members.clone(),
        },
    )
    .await?;
    let running = server
        .running()
        .ok_or_else(|| anyhow::anyhow!("this node did not join"))?;
    anyhow::ensure!(
        running
            .directory
            .wait_for_range(b"", Duration::from_secs(30))
            .await,
        "the meta tablet elected no leader within 30 s"
    );
    Ok(running.membership.clone())
}
