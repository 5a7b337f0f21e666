//! `meridian`: the command-line entry point, shaped like CockroachDB's.
//!
//! - `meridian demo`: a local 3-node cluster with a bank schema, and the SQL shell;
//! - `meridian start` / `meridian init`: run nodes on several machines and make them a
//!   cluster, once;
//! - `meridian sql`: the SQL shell against any node (`-e` and stdin for scripts);
//! - `meridian node status`, `meridian tablets`: the members and the tablets;
//! - `meridian workload bank init|run`: a checked load (transfers and reads; see the
//!   `workload` crate);
//! - `meridian time-master`: a TrueTime time master;
//! - `meridian tour`: a walk through the layers (TrueTime, MVCC, Raft, 2PC) one by one.

#![allow(clippy::print_stdout)] // a command-line tool talks on stdout

mod demo;
mod nemesis_cmd;
mod node_cmd;
mod tour;
mod tour_tablets;
mod tour_txn;

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
    /// A local 3-node cluster with a bank schema loaded, and a SQL prompt.
    Demo(demo::DemoArgs),
    /// Run a node.
    Start(node_cmd::StartArgs),
    /// Make the started nodes (those named in --join) a cluster. Run once.
    Init {
        /// Any node of the new cluster.
        #[arg(long, default_value = "127.0.0.1:26257")]
        host: String,
    },
    /// The SQL shell.
    Sql {
        /// Node addresses, comma-separated, tried in order.
        #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:26257")]
        url: Vec<String>,
        /// Run these statements and exit (non-zero on the first error).
        #[arg(short = 'e', long = "execute")]
        execute: Option<String>,
        /// Print each statement of a script before running it.
        #[arg(long)]
        echo: bool,
    },
    /// About the cluster's nodes.
    Node {
        #[command(subcommand)]
        command: NodeCommand,
    },
    /// Every tablet: its range, replicas, leader and safe-time lag.
    Tablets {
        /// Any node.
        #[arg(long, default_value = "127.0.0.1:26257")]
        host: String,
    },
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
    /// A walk through the layers one by one: TrueTime sync, MVCC, Raft, 2PC, failover.
    Tour(tour::TourArgs),
    /// The bank workload on a cluster of processes under a seeded nemesis (kills, pauses,
    /// partitions, clock skew); exits 1 on any violation.
    Nemesis(nemesis_cmd::NemesisArgs),
    /// Load a workload's data, or run it against a cluster and check what it read.
    Workload {
        #[command(subcommand)]
        command: workload::cli::WorkloadCommand,
    },
}

#[derive(Debug, Subcommand)]
enum NodeCommand {
    /// Members, whether they answer, and how many tablets each leads.
    Status {
        /// Any node.
        #[arg(long, default_value = "127.0.0.1:26257")]
        host: String,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,openraft=error")),
        )
        .init();
    let runtime = tokio::runtime::Runtime::new()?;
    let code = runtime.block_on(run(Cli::parse().command))?;
    // Leave background tasks (Raft, refreshers) behind rather than wait for them.
    runtime.shutdown_timeout(Duration::from_secs(1));
    std::process::exit(code);
}

async fn run(command: Command) -> anyhow::Result<i32> {
    match command {
        Command::Demo(args) => return demo::run(args).await,
        Command::Start(args) => node_cmd::start(args).await?,
        Command::Init { host } => node_cmd::init(&host).await?,
        Command::Sql { url, execute, echo } => {
            let options = client::shell::ShellOptions {
                urls: url,
                execute,
                echo,
                ..client::shell::ShellOptions::default()
            };
            return Ok(client::shell::run(options).await?);
        }
        Command::Node {
            command: NodeCommand::Status { host },
        } => node_cmd::node_status(&host).await?,
        Command::Tablets { host } => node_cmd::tablets(&host).await?,
        Command::TimeMaster { listen, epsilon_us } => {
            let clock = Arc::new(FixedEpsilonClock::new(Duration::from_micros(epsilon_us)));
            let listener = tokio::net::TcpListener::bind(listen).await?;
            println!("time master listening on {listen} (ε = {epsilon_us} µs); Ctrl-C stops it");
            let shutdown = async {
                let _ = tokio::signal::ctrl_c().await;
            };
            TimeMaster::new(clock).serve(listener, shutdown).await?;
        }
        Command::Tour(args) => tour::run(args).await?,
        Command::Workload { command } => return workload::cli::run(command).await,
        Command::Nemesis(args) => return nemesis_cmd::run(args).await,
    }
    Ok(0)
}
