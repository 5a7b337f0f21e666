//! `meridian nemesis`: the bank workload on a cluster of processes under a seeded nemesis.

use std::path::PathBuf;
use std::time::Duration;

use server::nemesis::{FaultKind, NemesisOptions};
use workload::duration::parse_duration;

/// Options of `meridian nemesis`.
#[derive(Debug, clap::Args)]
pub struct NemesisArgs {
    /// Nodes (processes on 127.0.0.1, 127.0.0.2, ...).
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Seed of the schedule and the workload (default: from the clock; printed).
    #[arg(long)]
    seed: Option<u64>,
    /// How long to run (e.g. 90s, 10m).
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    duration: Duration,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Accounts in the bank (1000 each).
    #[arg(long, default_value_t = 20)]
    accounts: u64,
    /// Clients running list-append transactions (checked for strict serializability).
    #[arg(long, default_value_t = 4)]
    list_append_clients: usize,
    /// Faults to draw from, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "kill,pause,partition,skew,skew-beyond"
    )]
    faults: Vec<FaultKind>,
    /// Where the nodes keep data and logs (default: a temporary directory, kept on failure).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The history file (default: history.jsonl in the run's directory).
    #[arg(long)]
    history: Option<PathBuf>,
}

/// Runs it; the exit code is 1 on any violation.
pub async fn run(args: NemesisArgs) -> anyhow::Result<i32> {
    let seed = args.seed.unwrap_or_else(|| {
        let t = truetime::system_wall_time().as_nanos();
        t ^ (t >> 29)
    });
    let temp = tempfile::Builder::new()
        .prefix("meridian-nemesis")
        .tempdir()?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| temp.path().to_path_buf());
    let history = args
        .history
        .clone()
        .unwrap_or_else(|| dir.join("history.jsonl"));
    println!(
        "nemesis: seed {seed}, {} nodes, {:?}, faults {:?}; data and logs in {}",
        args.nodes,
        args.duration,
        args.faults,
        dir.display()
    );
    let options = NemesisOptions {
        binary: std::env::current_exe()?,
        dir: dir.clone(),
        nodes: args.nodes,
        seed,
        duration: args.duration,
        clients: args.clients,
        accounts: args.accounts,
        faults: args.faults,
        history: history.clone(),
        list_append_clients: args.list_append_clients,
    };
    let outcome = server::nemesis::run(&options).await?;
    println!("{}", outcome.report.render());
    if let Some(list_append) = &outcome.list_append {
        println!("{}", list_append.render());
    }
    println!(
        "{} faults injected (listed in {}.nemesis.jsonl); history in {}",
        outcome.faults.len(),
        history.display(),
        history.display()
    );
    if outcome.violations == 0 {
        println!("OK: no violation (replay with --seed {seed})");
        Ok(0)
    } else {
        // Keep the evidence.
        let kept = temp.keep();
        println!(
            "FAILED: {} violation(s); data, logs and history kept in {} (replay with --seed {seed})",
            outcome.violations,
            kept.display()
        );
        Ok(1)
    }
}
