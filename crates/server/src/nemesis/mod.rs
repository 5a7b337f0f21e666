//! `meridian nemesis`: the bank workload on a cluster of `meridian` processes while a seeded
//! nemesis kills (SIGKILL) and restarts nodes, freezes them (SIGSTOP/SIGCONT), partitions
//! them (one isolated, majority/minority, overlapping majorities), and skews their clocks
//! within ε (strobe) and beyond it (the node must notice and fence itself).
//!
//! Every read is checked as it completes; after the nemesis stops and the cluster heals, a
//! final strong read must hold the total. Alongside, list-append transactions (Elle's
//! workload) run on the same cluster and their history goes to the strict-serializability
//! checker. The history of operations goes to a JSON-lines
//! file, the faults to `<history>.nemesis.jsonl`. The run fails (exit 1) on any violation.

mod faults;
mod procs;

use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use workload::bank::{self, InitOptions, ReadPath, RunOptions, Stop};
use workload::list_append::{self, ListAppendOptions, ListAppendReport};

pub use faults::{Fault, FaultKind, Schedule};
pub use procs::ProcessCluster;

/// Options of a nemesis run.
#[derive(Debug, Clone)]
pub struct NemesisOptions {
    /// The `meridian` binary to run the nodes with.
    pub binary: PathBuf,
    /// Where the nodes keep their data and logs.
    pub dir: PathBuf,
    /// Nodes.
    pub nodes: usize,
    /// Seed of the schedule and the workload.
    pub seed: u64,
    /// How long the workload and the nemesis run.
    pub duration: Duration,
    /// Concurrent clients.
    pub clients: usize,
    /// Accounts in the bank.
    pub accounts: u64,
    /// The faults to draw from.
    pub faults: Vec<FaultKind>,
    /// The operations' history (the faults go next to it).
    pub history: PathBuf,
    /// Clients running list-append transactions alongside the bank (0: none).
    pub list_append_clients: usize,
}

/// What a run found.
#[derive(Debug)]
pub struct NemesisOutcome {
    /// The workload's report (latencies, errors, the checker's verdict).
    pub report: workload::report::Report,
    /// The faults injected, in order.
    pub faults: Vec<Fault>,
    /// The list-append run and its checker's findings, if one ran.
    pub list_append: Option<ListAppendReport>,
    /// Violations, including a final read that did not hold the total.
    pub violations: u64,
}

/// Runs the nemesis; see the module docs.
pub async fn run(options: &NemesisOptions) -> anyhow::Result<NemesisOutcome> {
    std::fs::create_dir_all(&options.dir)?;
    let mut cluster = ProcessCluster::start(&options.binary, &options.dir, options.nodes).await?;
    let urls: Vec<String> = cluster.addresses();
    let total = 1_000 * i64::try_from(options.accounts).unwrap_or(i64::MAX / 1_000);
    bank::init(&InitOptions {
        urls: urls.clone(),
        accounts: options.accounts,
        total,
        reset: false,
    })
    .await
    .context("loading the bank")?;

    let mut run = RunOptions::new(urls.clone(), options.seed);
    run.clients = options.clients;
    run.stop = Stop::After(options.duration);
    run.read_path = ReadPath::Both;
    run.staleness = Duration::from_millis(500);
    run.history = Some(options.history.clone());
    run.expect_total = Some(total);
    let workload = tokio::spawn(async move { bank::run(&run).await });
    let appends = if options.list_append_clients > 0 {
        list_append::init(&urls).await?;
        let run = ListAppendOptions {
            urls: urls.clone(),
            clients: options.list_append_clients,
            duration: options.duration,
            keys: 8,
            max_ops: 4,
            read_only_ratio: 0.25,
            seed: options.seed,
        };
        Some(tokio::spawn(async move { list_append::run(&run).await }))
    } else {
        None
    };

    let faults = nemesis(&mut cluster, options).await?;
    let report = workload.await.context("the workload panicked")??;
    let list_append = match appends {
        Some(task) => Some(task.await.context("the list-append workload panicked")??),
        None => None,
    };
    cluster.heal().await?;
    let final_ok = final_total(&urls, total).await?;
    let anomalies = list_append.as_ref().map_or(0, |r| r.anomalies.len() as u64);
    let violations = report.verdict.violations() + u64::from(!final_ok) + anomalies;
    Ok(NemesisOutcome {
        report,
        faults,
        list_append,
        violations,
    })
}

/// Injects faults until the run's duration is over, logging each.
async fn nemesis(
    cluster: &mut ProcessCluster,
    options: &NemesisOptions,
) -> anyhow::Result<Vec<Fault>> {
    let mut log_path = options.history.clone().into_os_string();
    log_path.push(".nemesis.jsonl");
    let mut log = std::fs::File::create(&log_path)?;
    let mut schedule = Schedule::new(options.seed, options.faults.clone(), cluster.len());
    let started = Instant::now();
    let mut injected = Vec::new();
    // Let the workload start on a healthy cluster.
    tokio::time::sleep(Duration::from_secs(2)).await;
    while started.elapsed() + Duration::from_secs(4) < options.duration {
        let Some((fault, hold, recover)) = schedule.next_fault() else {
            break;
        };
        let at_ms = started.elapsed().as_millis();
        writeln!(
            log,
            "{}",
            serde_json::json!({"at_ms": at_ms, "hold_ms": hold.as_millis(), "fault": &fault})
        )?;
        tracing::info!(?fault, ?hold, "nemesis");
        faults::begin(cluster, &fault).await?;
        if let Fault::SkewWithin { node } = fault {
            // Strobe: a new shift within ε every 100 ms.
            let until = Instant::now() + hold;
            while Instant::now() < until {
                cluster.skew(node, schedule.shift_within()).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        } else {
            tokio::time::sleep(hold).await;
        }
        cluster.heal().await?;
        injected.push(fault);
        tokio::time::sleep(recover).await;
    }
    Ok(injected)
}

/// After healing: a strong read of every balance sums to the total (retrying while the
/// cluster recovers).
async fn final_total(urls: &[String], total: i64) -> anyhow::Result<bool> {
    let client = client::Client::connect_with(urls, client::ClientOptions::default()).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let read = client
            .read_only(client::TimestampBound::Strong, |tx| async move {
                tx.query("SELECT balance FROM bank", &[]).await
            })
            .await;
        match read {
            Ok(rows) => {
                let balances: Vec<i64> = rows
                    .iter()
                    .filter_map(|r| r.get(0).and_then(|v| v.as_i64()))
                    .collect();
                let sum: i64 = balances.iter().sum();
                if sum != total || balances.iter().any(|b| *b < 0) {
                    tracing::error!(sum, total, "the final read broke the invariant");
                    return Ok(false);
                }
                return Ok(true);
            }
            Err(e) if Instant::now() < deadline => {
                tracing::info!(error = %e, "final read failed; the cluster is recovering");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}
