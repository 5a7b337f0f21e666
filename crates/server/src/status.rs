//! What `meridian node status` and `meridian tablets` show: the members, whether they
//! answer, and every tablet's range, replicas, leader and how far this node's replica's
//! safe time lags its clock.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use proto::v1 as pb;

use crate::membership::{AdminCall, admin_call};
use crate::server::{Running, Server};

/// The node's status.
pub async fn status(server: &Arc<Server>, running: &Running) -> pb::StatusReply {
    let membership = &running.membership;
    let probes = membership.nodes.iter().map(|(id, address)| async move {
        let live = tokio::time::timeout(
            Duration::from_secs(1),
            admin_call(address, &AdminCall::Identify),
        )
        .await
        .is_ok_and(|r| r.is_ok());
        pb::NodeInfo {
            node_id: id.0,
            address: address.clone(),
            live,
        }
    });
    let nodes = join_all(probes).await;
    let now = server.config().clock.now().map(|t| t.latest).ok();
    let tablets = running
        .directory
        .ranges_info()
        .into_iter()
        .map(|range| {
            let local = running.node.tablet(range.tablet).ok();
            let safe_lag_us = match (&local, now) {
                (Some(replica), Some(now)) => {
                    now.saturating_duration_since(replica.safe_ts()).as_micros() as u64
                }
                _ => 0,
            };
            let (leader, term) = running
                .directory
                .leader_of(range.tablet)
                .map_or((0, 0), |(n, t)| (n.0, t));
            pb::TabletInfo {
                tablet_id: range.tablet.0,
                start: range.start,
                end: range.end,
                replicas: range.replicas.iter().map(|n| n.0).collect(),
                leader,
                term,
                safe_lag_us,
                local: local.is_some(),
            }
        })
        .collect();
    pb::StatusReply {
        node_id: membership.node.0,
        address: server.address().to_string(),
        initialized: true,
        nodes,
        tablets,
    }
}
