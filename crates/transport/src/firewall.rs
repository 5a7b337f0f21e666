//! [`Firewall`]: fault injection for the nemesis. A node drops its own outgoing Raft and
//! transaction traffic to the addresses it is told to block; blocking both directions on
//! both sides partitions two nodes without touching the operating system's firewall. Empty
//! (and unused) in normal operation.

use std::collections::HashSet;
use std::sync::RwLock;

/// Addresses this node pretends it cannot reach.
#[derive(Debug, Default)]
pub struct Firewall {
    blocked: RwLock<HashSet<String>>,
}

impl Firewall {
    /// Blocks exactly `addresses` from now on (empty heals).
    pub fn set_blocked(&self, addresses: impl IntoIterator<Item = String>) {
        *self.blocked.write().unwrap_or_else(|e| e.into_inner()) = addresses.into_iter().collect();
    }

    /// Whether traffic to `address` is dropped.
    pub fn is_blocked(&self, address: &str) -> bool {
        self.blocked
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(address)
    }
}
