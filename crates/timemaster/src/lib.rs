//! TrueTime over the network.
//!
//! - [`TimeMaster`]: the gRPC `TimeService` a time master runs, answering with its
//!   reference clock's interval.
//! - [`TimeMasters`]: a node's view of its masters; probes them all at once, stamping each
//!   exchange with the node's oscillator, and feeds the answers to
//!   [`truetime::SyncedClock::apply_readings`] (Cristian per answer, Marzullo across them).
//! - [`ClockSyncer`]: the background task that re-syncs every few seconds.
//!
//! The arithmetic lives in `truetime`, which knows nothing of gRPC; this crate is transport.

mod client;
mod service;
mod syncer;

pub use client::{SyncFailure, TimeMasters};
pub use service::TimeMaster;
pub use syncer::ClockSyncer;
