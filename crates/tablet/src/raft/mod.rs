//! Everything that touches openraft lives in this module: the type configuration, the log
//! store and state machine on the node's RocksDB, and the network adapter over
//! [`crate::transport::Transport`]. openraft 0.10 is an alpha whose API moves between
//! releases; keeping it here means a version bump touches one directory.

pub(crate) mod codec;
pub(crate) mod log_store;
pub(crate) mod network;
pub(crate) mod state_machine;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{NodeId, TabletCommand, TabletResponse};

openraft::declare_raft_types!(
    /// The one openraft type configuration of Meridian's tablets.
    pub TypeConfig:
        D = TabletCommand,
        R = TabletResponse,
        NodeId = NodeId,
        Node = openraft::BasicNode,
);

/// A tablet replica's Raft handle.
pub type Raft = openraft::Raft<TypeConfig, state_machine::StateMachine>;

/// A tablet snapshot: its MVCC versions and applied state, encoded (see
/// [`state_machine::SnapshotPayload`]). Shipped to lagging replicas in bounded chunks.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TabletSnapshot {
    /// The encoded payload.
    pub bytes: Vec<u8>,
}

/// Raft timing and log retention for every tablet of a node.
#[derive(Debug, Clone)]
pub struct RaftConfig {
    /// Leader heartbeat period.
    pub heartbeat_interval: Duration,
    /// Election timeout range; a follower that hears no leader for a random time in it
    /// starts an election.
    pub election_timeout: (Duration, Duration),
    /// Build a snapshot after this many log entries since the last one.
    pub snapshot_after_entries: u64,
    /// Entries kept in the log behind a snapshot, so slightly lagging followers catch up
    /// from the log rather than by snapshot.
    pub log_entries_kept_after_snapshot: u64,
}

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig {
            heartbeat_interval: Duration::from_millis(100),
            election_timeout: (Duration::from_millis(600), Duration::from_millis(1200)),
            snapshot_after_entries: 10_000,
            log_entries_kept_after_snapshot: 1_000,
        }
    }
}

impl RaftConfig {
    pub(crate) fn to_openraft(&self, cluster: &str) -> Result<openraft::Config, String> {
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let config = openraft::Config {
            cluster_name: cluster.to_string(),
            heartbeat_interval: millis(self.heartbeat_interval),
            election_timeout_min: millis(self.election_timeout.0),
            election_timeout_max: millis(self.election_timeout.1),
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_after_entries),
            max_in_snapshot_log_to_keep: self.log_entries_kept_after_snapshot,
            // A restarted (or reopened) leader must not resume its old term without an
            // election: the transaction layer's locks live in memory and died with it, yet
            // its leadership (term, node) would look unchanged, so transactions that read
            // under the old locks would pass the leadership check and commit stale reads;
            // and with no new blank entry, the leader's ReadIndex would not wait for the
            // entries it appended before the restart.
            enable_leader_restore: Some(false),
            ..Default::default()
        };
        config.validate().map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod conformance_test;
#[cfg(test)]
mod state_machine_test;
