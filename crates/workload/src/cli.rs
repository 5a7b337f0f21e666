//! The `meridian workload` subcommands: their flags, and the text they print.

#![allow(clippy::print_stdout)] // a command-line tool talks on stdout

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::bank::{self, Initialized, ReadPath, RunOptions, Stop};
use crate::duration::parse_duration;

/// `meridian workload <workload>`.
#[derive(Debug, Subcommand)]
pub enum WorkloadCommand {
    /// Transfers between bank accounts, checked: the total never changes, no balance goes
    /// negative.
    Bank {
        #[command(subcommand)]
        command: BankCommand,
    },
}

/// `meridian workload bank <init|run>`.
#[derive(Debug, Subcommand)]
pub enum BankCommand {
    /// Create the `bank` table and load its accounts.
    Init(InitArgs),
    /// Move money and read every balance from concurrent clients; report latencies and
    /// what the checker found (exit code 1 on any violation).
    Run(RunArgs),
}

/// Flags of `meridian workload bank init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Node addresses, comma-separated, tried in order.
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:26257")]
    url: Vec<String>,
    /// Accounts to create (ids 0 to N-1).
    #[arg(long, default_value_t = 100)]
    accounts: u64,
    /// Money in the bank, spread evenly over the accounts.
    #[arg(long, default_value_t = 100_000)]
    total: i64,
    /// Drop an existing `bank` table first.
    #[arg(long)]
    reset: bool,
}

/// Flags of `meridian workload bank run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Node addresses, comma-separated; client task i starts at the i-th.
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:26257")]
    url: Vec<String>,
    /// Concurrent client tasks.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// How long to run (e.g. 500ms, 30s, 2m); the default unless --transfers is given.
    #[arg(long, value_parser = parse_duration, conflicts_with = "transfers")]
    duration: Option<Duration>,
    /// Stop after this many transfers instead of after a duration.
    #[arg(long)]
    transfers: Option<u64>,
    /// A transfer moves 1 to this much (never more than the account has).
    #[arg(long, default_value_t = 10)]
    max_transfer: i64,
    /// Fraction of operations that are read-only reads of every balance.
    #[arg(long, default_value_t = 0.2)]
    read_ratio: f64,
    /// Strong reads, stale reads (EXACT_STALENESS --staleness) or both, half and half.
    #[arg(long, value_enum, default_value_t = ReadPath::Strong)]
    read_path: ReadPath,
    /// How far back stale reads read.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    staleness: Duration,
    /// Seed of all randomness (default: from the clock; printed either way).
    #[arg(long)]
    seed: Option<u64>,
    /// Write every operation to this file as JSON lines.
    #[arg(long)]
    history: Option<PathBuf>,
    /// The total the bank must hold (default: what the first read sums to).
    #[arg(long)]
    expect_total: Option<i64>,
}

/// Runs a `meridian workload` command; returns the process's exit code.
pub async fn run(command: WorkloadCommand) -> anyhow::Result<i32> {
    match command {
        WorkloadCommand::Bank {
            command: BankCommand::Init(args),
        } => bank_init(args).await,
        WorkloadCommand::Bank {
            command: BankCommand::Run(args),
        } => bank_run(args).await,
    }
}

async fn bank_init(args: InitArgs) -> anyhow::Result<i32> {
    let options = bank::InitOptions {
        urls: args.url,
        accounts: args.accounts,
        total: args.total,
        reset: args.reset,
    };
    match bank::init(&options).await? {
        Initialized::Loaded => println!(
            "loaded table bank: {} accounts holding {} in all",
            options.accounts, options.total
        ),
        Initialized::AlreadyThere => println!(
            "table bank already holds {} accounts totalling {}: left as it is",
            options.accounts, options.total
        ),
    }
    Ok(0)
}

async fn bank_run(args: RunArgs) -> anyhow::Result<i32> {
    let seed = args.seed.unwrap_or_else(|| {
        let t = truetime::system_wall_time().as_nanos();
        t ^ (t >> 29)
    });
    let stop = match (args.transfers, args.duration) {
        (Some(n), _) => Stop::Transfers(n),
        (None, Some(d)) => Stop::After(d),
        (None, None) => Stop::After(Duration::from_secs(30)),
    };
    let options = RunOptions {
        clients: args.clients,
        stop,
        max_transfer: args.max_transfer,
        read_ratio: args.read_ratio,
        read_path: args.read_path,
        staleness: args.staleness,
        history: args.history,
        progress: std::io::stdout().is_terminal(),
        expect_total: args.expect_total,
        ..RunOptions::new(args.url, seed)
    };
    println!(
        "bank workload: {} clients, {}, reads {:.0}% ({:?}), seed {seed}",
        options.clients,
        match stop {
            Stop::After(d) => format!("for {d:?}"),
            Stop::Transfers(n) => format!("{n} transfers"),
        },
        options.read_ratio * 100.0,
        options.read_path,
    );
    let report = bank::run(&options).await?;
    print!("{}", report.render());
    Ok(if report.verdict.violations() == 0 {
        0
    } else {
        1
    })
}
