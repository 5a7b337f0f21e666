//! Load generators that check what they read: `meridian workload <name> init|run`.
//!
//! A workload loads its data ([`bank::init`]), then runs concurrent client tasks against a
//! cluster through the public client ([`bank::run`]), timing every operation and feeding
//! every read to a checker from the `checker` crate. The [`report::Report`] holds the
//! latencies (HDR histograms), the errors by class and the checker's verdict; a run with any
//! violation is a failed run, whatever its throughput.
//!
//! - [`bank`]: transfers between accounts and reads of every balance; the total never
//!   changes and no balance goes negative.

pub mod bank;
pub mod cli;
pub mod duration;
pub mod history;
pub mod list_append;
pub mod report;
