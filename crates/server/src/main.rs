//! `meridian`: the command-line entry point.
//!
//! Until the cluster and SQL exist, `meridian demo` walks through the layers that do: a time
//! master and a node syncing TrueTime over gRPC; MVCC rows on RocksDB written at commit
//! timestamps with commit-wait; a tablet replicated by Raft on three nodes; a transfer as a
//! two-phase-commit transaction read back lock-free from followers; a leader failover.

#![allow(clippy::print_stdout)] // a command-line tool talks on stdout

mod demo;
mod demo_tablets;
mod demo_txn;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use timemaster::TimeMaster;
use truetime::FixedEpsilonClock;

/// Meridian: an externally consistent, replicated, sharded SQL database.
#[derive(Debug, Parser)]
#[command(name = "meridian", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show the layers working together on this machine (time sync, MVCC on RocksDB).
    Demo(demo::DemoArgs),
    /// Run a TrueTime time master that answers with the system clock ± a declared ε.
    TimeMaster {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:7070")]
        listen: SocketAddr,
        /// The uncertainty this master claims, in microseconds. It must cover the system
        /// clock's true error (keep NTP/PTP running on a master).
        #[arg(long, default_value_t = 500)]
        epsilon_us: u64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,openraft=error")),
        )
        .init();
    match Cli::parse().command {
        Command::Demo(args) => demo::run(args).await,
        Command::TimeMaster { listen, epsilon_us } => {
            let clock = Arc::new(FixedEpsilonClock::new(Duration::from_micros(epsilon_us)));
            let listener = tokio::net::TcpListener::bind(listen).await?;
            println!("time master listening on {listen} (ε = {epsilon_us} µs); Ctrl-C stops it");
            let shutdown = async {
                let _ = tokio::signal::ctrl_c().await;
            };
            TimeMaster::new(clock).serve(listener, shutdown).await?;
            Ok(())
        }
    }
}
