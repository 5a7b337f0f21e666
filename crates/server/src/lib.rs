//! A Meridian node and the pieces of the `meridian` command: the node process
//! ([`server::Server`]), cluster membership and placement, SQL over the cluster, and the
//! public API.

pub mod admin;
pub mod api;
pub mod backend;
pub mod membership;
pub mod nemesis;
pub mod placement;
pub mod server;
pub mod status;

pub use server::{Faults, Running, Server, ServerConfig};
