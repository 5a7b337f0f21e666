//! `meridian workload bank run`: concurrent client tasks move money and read every balance
//! until a deadline or a number of transfers, and every read goes through the bank checker.
//!
//! The run first reads the bank strongly: its balances give the accounts and the total every
//! later read must sum to (or `expect_total`, when given). Stale reads read at `now −
//! staleness`, which may be before the bank was loaded (or before a `--reset`); so before
//! starting, the run waits until a stale read sees every account holding the total, or reads
//! at or after that first strong read (at most `staleness`, and only right after `init`).
//! Rows are never deleted, so every later stale read sees the whole bank.
//!
//! Each task runs on its own [`Client`], the first address rotated per task so coordinators
//! spread over the nodes, with its own RNG seeded from the run's seed and the task's index:
//! a task's sequence of operations is reproducible, their interleaving is not.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use client::{Client, ClientOptions, Code, Committed, TimestampBound, params};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{is_missing_table, read_balances};
use crate::history::{Entry, History, TransferDetail};
use crate::report::{ErrorClass, KindStats, OpKind, Report, Verdict};

/// Which read-only transactions the reads are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReadPath {
    /// Strong reads: the latest committed data.
    Strong,
    /// Reads at an exact staleness.
    Stale,
    /// Each read strong or stale, at random, half and half.
    Both,
    /// Reads at an exact staleness, served by followers.
    Follower,
}

/// When a run stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// No operation starts after this long.
    After(Duration),
    /// No transfer starts after this many have started.
    Transfers(u64),
}

/// Options of `meridian workload bank run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Node addresses.
    pub urls: Vec<String>,
    /// Concurrent client tasks.
    pub clients: usize,
    /// When to stop.
    pub stop: Stop,
    /// A transfer moves 1 to this much (less if the account has less).
    pub max_transfer: i64,
    /// The fraction of operations that are reads of every balance.
    pub read_ratio: f64,
    /// Strong reads, stale reads or both.
    pub read_path: ReadPath,
    /// How far in the past stale reads read.
    pub staleness: Duration,
    /// The seed of all randomness.
    pub seed: u64,
    /// Write a JSON-lines history here.
    pub history: Option<PathBuf>,
    /// Show a progress bar (on stdout).
    pub progress: bool,
    /// The total the bank must hold (default: what the first strong read sums to).
    pub expect_total: Option<i64>,
}

impl RunOptions {
    /// Options with the command's defaults: 8 clients for 30 s, transfers of up to 10, one
    /// strong read in five, stale reads 5 s back.
    pub fn new(urls: Vec<String>, seed: u64) -> RunOptions {
        RunOptions {
            urls,
            clients: 8,
            stop: Stop::After(Duration::from_secs(30)),
            max_transfer: 10,
            read_ratio: 0.2,
            read_path: ReadPath::Strong,
            staleness: Duration::from_secs(5),
            seed,
            history: None,
            progress: false,
            expect_total: None,
        }
    }

    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.clients >= 1, "--clients must be at least 1");
        anyhow::ensure!(self.max_transfer >= 1, "--max-transfer must be at least 1");
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.read_ratio),
            "--read-ratio must be between 0 and 1"
        );
        if matches!(self.stop, Stop::Transfers(_)) {
            anyhow::ensure!(
                self.read_ratio < 1.0,
                "--transfers needs a --read-ratio below 1 (no transfer would ever run)"
            );
        }
        Ok(())
    }

    fn reads_stale(&self) -> bool {
        self.read_ratio > 0.0 && self.read_path != ReadPath::Strong
    }
}

/// What every task shares.
#[derive(Debug)]
struct Shared {
    options: RunOptions,
    ids: Vec<i64>,
    total: i64,
    started: Instant,
    transfers_started: AtomicU64,
    done_transfers: AtomicU64,
    done_reads: AtomicU64,
    failed: AtomicU64,
    history: Option<History>,
}

impl Shared {
    fn since_start_us(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.started).as_micros()).unwrap_or(u64::MAX)
    }
}

/// What one task measured and checked.
#[derive(Debug, Default)]
struct TaskOutcome {
    stats: BTreeMap<OpKind, KindStats>,
    verdict: Verdict,
    /// Ids of acknowledged transfers.
    acknowledged: Vec<i64>,
    /// Ids of transfers that ended indeterminate.
    indeterminate: Vec<i64>,
}

/// Runs the bank workload against the cluster at `options.urls` and checks every read.
pub async fn run(options: &RunOptions) -> anyhow::Result<Report> {
    options.validate()?;
    let control = Client::connect_with(&options.urls, ClientOptions::default()).await?;
    let (ids, balances, first_read_ts) = first_read(&control).await?;
    anyhow::ensure!(
        ids.len() >= 2,
        "table bank has {} account(s): a transfer needs two (run `meridian workload bank init`)",
        ids.len()
    );
    let total = options.expect_total.unwrap_or(balances.iter().sum());
    let mut verdict = Verdict {
        initial_total: total,
        accounts: ids.len(),
        ..Verdict::default()
    };
    verdict.check_read(&balances, "the first strong read");
    let history = match &options.history {
        Some(path) => Some(
            History::create(path)
                .with_context(|| format!("creating the history file {}", path.display()))?,
        ),
        None => None,
    };
    if options.reads_stale() {
        let accounts = ids.len();
        wait_for_stale_reads(&control, options.staleness, first_read_ts, accounts, total).await?;
    }

    let shared = Arc::new(Shared {
        options: options.clone(),
        ids,
        total,
        started: Instant::now(),
        transfers_started: AtomicU64::new(0),
        done_transfers: AtomicU64::new(0),
        done_reads: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        history,
    });
    let progress = Progress::start(&shared);
    let mut tasks = Vec::new();
    for index in 0..options.clients {
        let client_options = ClientOptions {
            read_replica: if options.read_path == ReadPath::Follower {
                client::ReadReplica::Follower
            } else {
                client::ReadReplica::Any
            },
            ..ClientOptions::default()
        };
        let client = Client::connect_with(rotated(&options.urls, index), client_options)
            .await
            .with_context(|| format!("connecting client {index}"))?;
        tasks.push(tokio::spawn(client_task(
            index,
            client,
            Arc::clone(&shared),
        )));
    }
    let mut stats: BTreeMap<OpKind, KindStats> = BTreeMap::new();
    let (mut acknowledged, mut indeterminate) = (Vec::new(), Vec::new());
    for task in tasks {
        let outcome = task.await.context("a client task panicked")?;
        for (kind, kind_stats) in &outcome.stats {
            stats.entry(*kind).or_default().merge(kind_stats);
        }
        verdict.merge(&outcome.verdict);
        acknowledged.extend(outcome.acknowledged);
        indeterminate.extend(outcome.indeterminate);
    }
    let elapsed = shared.started.elapsed();
    progress.finish().await;
    if let Some(history) = &shared.history {
        history.flush().context("writing the history file")?;
    }

    match read_balances(&control, TimestampBound::Strong).await {
        Ok((balances, _)) => {
            verdict.check_read(&balances, "the final strong read");
            verdict.final_total = Some(balances.iter().sum());
        }
        Err(e) => verdict
            .examples
            .push(format!("the final strong read failed: {e}")),
    }
    check_log(&control, &acknowledged, &indeterminate, &mut verdict).await;
    Ok(Report {
        seed: options.seed,
        clients: options.clients,
        elapsed,
        stats,
        verdict,
    })
}

/// After the run: every acknowledged transfer is in the transfer log (none was lost), and
/// the indeterminate ones that were applied are counted.
async fn check_log(
    client: &Client,
    acknowledged: &[i64],
    indeterminate: &[i64],
    verdict: &mut Verdict,
) {
    let logged = client
        .read_only(TimestampBound::Strong, |tx| async move {
            tx.query("SELECT id FROM bank_log", &[]).await
        })
        .await;
    let logged: std::collections::HashSet<i64> = match logged {
        Ok(rows) => rows
            .iter()
            .filter_map(|r| r.get(0).and_then(|v| v.as_i64()))
            .collect(),
        Err(e) => {
            verdict.lost_transfers = acknowledged.len() as u64;
            verdict
                .examples
                .push(format!("reading the transfer log failed: {e}"));
            return;
        }
    };
    let lost: Vec<i64> = acknowledged
        .iter()
        .copied()
        .filter(|id| !logged.contains(id))
        .collect();
    verdict.lost_transfers = lost.len() as u64;
    for id in lost.iter().take(Verdict::MAX_EXAMPLES) {
        verdict.examples.push(format!(
            "acknowledged transfer {id} is missing from the transfer log"
        ));
    }
    verdict.indeterminate_applied = indeterminate
        .iter()
        .filter(|id| logged.contains(id))
        .count() as u64;
}

/// The accounts' ids and balances, and the read's timestamp, read strongly.
async fn first_read(client: &Client) -> anyhow::Result<(Vec<i64>, Vec<i64>, Option<u64>)> {
    let read = client
        .read_only(TimestampBound::Strong, |tx| async move {
            let result = tx
                .sql("SELECT id, balance FROM bank ORDER BY id", &[])
                .await?;
            let int = |row: &client::Row, i: usize| {
                row.get(i)
                    .and_then(|v| v.as_i64())
                    .ok_or_else(|| client::Error::user("table bank has a non-INT64 value"))
            };
            let mut ids = Vec::new();
            let mut balances = Vec::new();
            for row in &result.rows {
                ids.push(int(row, 0)?);
                balances.push(int(row, 1)?);
            }
            Ok((ids, balances, result.read_ts))
        })
        .await;
    match read {
        Ok(read) => Ok(read),
        Err(e) if is_missing_table(&e) => {
            anyhow::bail!("there is no bank table: run `meridian workload bank init` first")
        }
        Err(e) => Err(e).context("reading the bank"),
    }
}

/// Waits until reads `staleness` in the past see the whole bank: at once if it has been
/// there that long (a stale read sees every account, holding `total`), else until stale reads
/// read at or after `loaded_ts`, when it was there (at most `staleness`).
async fn wait_for_stale_reads(
    client: &Client,
    staleness: Duration,
    loaded_ts: Option<u64>,
    accounts: usize,
    total: i64,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + staleness + Duration::from_secs(10);
    loop {
        let read = read_balances(client, TimestampBound::ExactStaleness(staleness)).await;
        let wait = match (read, loaded_ts) {
            (Ok((balances, _)), _)
                if balances.len() == accounts && balances.iter().sum::<i64>() == total =>
            {
                return Ok(());
            }
            (Ok((_, Some(read_ts))), Some(loaded_ts)) if read_ts >= loaded_ts => return Ok(()),
            (Ok((_, Some(read_ts))), Some(loaded_ts)) => Duration::from_nanos(loaded_ts - read_ts),
            // No timestamps to compare: wait out the staleness itself.
            (Ok(_), _) => staleness,
            // The table did not exist yet at that time.
            (Err(e), _) if is_missing_table(&e) => Duration::from_millis(100),
            (Err(e), _) => return Err(e).context("a stale read of the bank"),
        };
        anyhow::ensure!(
            Instant::now() < deadline,
            "stale reads {staleness:?} back never reached the loaded bank"
        );
        tokio::time::sleep(wait.clamp(Duration::from_millis(10), Duration::from_secs(1))).await;
    }
}

/// `urls` starting at the `index`-th (wrapping), so tasks start on different nodes.
fn rotated(urls: &[String], index: usize) -> Vec<String> {
    let mut urls = urls.to_vec();
    if !urls.is_empty() {
        let shift = index % urls.len();
        urls.rotate_left(shift);
    }
    urls
}

/// The seed of task `index`'s RNG.
fn task_seed(seed: u64, index: usize) -> u64 {
    seed ^ (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

async fn client_task(index: usize, client: Client, shared: Arc<Shared>) -> TaskOutcome {
    let options = &shared.options;
    let mut rng = StdRng::seed_from_u64(task_seed(options.seed, index));
    let mut outcome = TaskOutcome {
        verdict: Verdict {
            initial_total: shared.total,
            accounts: shared.ids.len(),
            ..Verdict::default()
        },
        ..TaskOutcome::default()
    };
    loop {
        if let Stop::After(duration) = options.stop
            && shared.started.elapsed() >= duration
        {
            break;
        }
        if rng.random_bool(options.read_ratio) {
            let stale = match options.read_path {
                ReadPath::Strong => false,
                ReadPath::Stale | ReadPath::Follower => true,
                ReadPath::Both => rng.random_bool(0.5),
            };
            read(index, &client, &shared, stale, &mut outcome).await;
        } else {
            if let Stop::Transfers(n) = options.stop
                && shared.transfers_started.fetch_add(1, Ordering::Relaxed) >= n
            {
                break;
            }
            transfer(index, &client, &shared, &mut rng, &mut outcome).await;
        }
    }
    outcome
}

async fn transfer(
    index: usize,
    client: &Client,
    shared: &Shared,
    rng: &mut StdRng,
    outcome: &mut TaskOutcome,
) {
    let n = shared.ids.len();
    let from_index = rng.random_range(0..n);
    // Any other account, uniformly.
    let to_index = (from_index + rng.random_range(1..n)) % n;
    let (from, to) = (shared.ids[from_index], shared.ids[to_index]);
    let amount = rng.random_range(1..=shared.options.max_transfer);
    let id = rng.random::<i64>() & i64::MAX;
    let started = Instant::now();
    let result = client
        .read_write(|tx| async move {
            let from_balance = balance(&tx, from).await?;
            let to_balance = balance(&tx, to).await?;
            let moved = amount.min(from_balance).max(0);
            if moved > 0 {
                let update = "UPDATE bank SET balance = $1 WHERE id = $2";
                tx.sql(update, &params![from_balance - moved, from]).await?;
                tx.sql(update, &params![to_balance + moved, to]).await?;
            }
            tx.sql(
                "INSERT INTO bank_log (id, from_id, to_id, moved) VALUES ($1, $2, $3, $4)",
                &params![id, from, to, moved],
            )
            .await?;
            Ok(moved)
        })
        .await;
    let ended = Instant::now();
    let stats = outcome.stats.entry(OpKind::Transfer).or_default();
    let mut entry = entry(OpKind::Transfer, index, shared, started, ended);
    let mut detail = TransferDetail {
        id,
        from,
        to,
        amount,
        moved: None,
    };
    match result {
        Ok(Committed {
            value,
            commit_ts,
            attempts,
            retried_because,
        }) => {
            stats.record_ok(ended - started, attempts);
            stats.record_retry_reasons(&retried_because);
            detail.moved = Some(value);
            entry.commit_ts = Some(commit_ts);
            entry.attempts = Some(attempts);
            shared.done_transfers.fetch_add(1, Ordering::Relaxed);
            outcome.acknowledged.push(id);
        }
        Err(e) => {
            if e.code() == Code::Indeterminate {
                outcome.indeterminate.push(id);
            }
            stats.record_error(ErrorClass::of(e.code()));
            tracing::debug!(client = index, error = %e, "transfer failed");
            entry.result = e.code().to_string();
            shared.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
    entry.transfer = Some(detail);
    append(shared, &entry);
}

/// The balance of account `id`, read in the transaction (and so locked until it ends).
async fn balance(tx: &client::Txn, id: i64) -> Result<i64, client::Error> {
    let row = tx
        .query_one("SELECT balance FROM bank WHERE id = $1", &params![id])
        .await?;
    row.get(0)
        .and_then(|v| v.as_i64())
        .ok_or_else(|| client::Error::user(format!("account {id} has no INT64 balance")))
}

async fn read(
    index: usize,
    client: &Client,
    shared: &Shared,
    stale: bool,
    outcome: &mut TaskOutcome,
) {
    let (kind, bound) = if stale {
        let kind = if shared.options.read_path == ReadPath::Follower {
            OpKind::ReadFollower
        } else {
            OpKind::ReadStale
        };
        (
            kind,
            TimestampBound::ExactStaleness(shared.options.staleness),
        )
    } else {
        (OpKind::ReadStrong, TimestampBound::Strong)
    };
    let started = Instant::now();
    let result = read_balances(client, bound).await;
    let ended = Instant::now();
    let mut entry = entry(kind, index, shared, started, ended);
    let stats = outcome.stats.entry(kind).or_default();
    match result {
        Ok((balances, read_ts)) => {
            stats.record_ok(ended - started, 1);
            let at = read_ts.map_or_else(|| "?".to_string(), |ts| ts.to_string());
            let what = format!("{} by client {index} at read_ts {at}", kind.as_str());
            outcome.verdict.check_read(&balances, &what);
            entry.read_ts = read_ts;
            entry.balances = Some(balances);
            shared.done_reads.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => {
            stats.record_error(ErrorClass::of(e.code()));
            tracing::debug!(client = index, error = %e, "read failed");
            entry.result = e.code().to_string();
            shared.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
    append(shared, &entry);
}

fn entry(kind: OpKind, client: usize, shared: &Shared, started: Instant, ended: Instant) -> Entry {
    Entry {
        kind: kind.as_str(),
        client,
        start_us: shared.since_start_us(started),
        end_us: shared.since_start_us(ended),
        result: "ok".to_string(),
        commit_ts: None,
        attempts: None,
        transfer: None,
        read_ts: None,
        balances: None,
    }
}

fn append(shared: &Shared, entry: &Entry) {
    if let Some(history) = &shared.history
        && let Err(e) = history.append(entry)
    {
        tracing::warn!(error = %e, "cannot write the history");
    }
}

/// The progress bar and the task that refreshes it.
#[derive(Debug)]
struct Progress {
    bar: ProgressBar,
    stop: Arc<AtomicBool>,
    ticker: tokio::task::JoinHandle<()>,
}

impl Progress {
    fn start(shared: &Arc<Shared>) -> Progress {
        let (length, template) = match shared.options.stop {
            Stop::After(d) => (
                u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
                "{elapsed:>4} [{wide_bar}] {msg}",
            ),
            Stop::Transfers(n) => (n, "{elapsed:>4} [{wide_bar}] {pos}/{len} transfers, {msg}"),
        };
        let bar = if shared.options.progress {
            ProgressBar::with_draw_target(Some(length), ProgressDrawTarget::stdout())
        } else {
            ProgressBar::hidden()
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let ticker = tokio::spawn(tick(bar.clone(), Arc::clone(shared), Arc::clone(&stop)));
        Progress { bar, stop, ticker }
    }

    async fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.ticker.await;
        self.bar.finish_and_clear();
    }
}

async fn tick(bar: ProgressBar, shared: Arc<Shared>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let transfers = shared.done_transfers.load(Ordering::Relaxed);
        let reads = shared.done_reads.load(Ordering::Relaxed);
        let failed = shared.failed.load(Ordering::Relaxed);
        let counts = format!("reads {reads}, failed {failed}");
        match shared.options.stop {
            Stop::After(_) => {
                let elapsed_ms = shared.started.elapsed().as_millis();
                bar.set_position(u64::try_from(elapsed_ms).unwrap_or(u64::MAX));
                bar.set_message(format!("transfers {transfers}, {counts}"));
            }
            Stop::Transfers(_) => {
                bar.set_position(transfers);
                bar.set_message(counts);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_task_starts_on_another_node() {
        let urls: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        assert_eq!(rotated(&urls, 0), ["a", "b", "c"]);
        assert_eq!(rotated(&urls, 1), ["b", "c", "a"]);
        assert_eq!(rotated(&urls, 5), ["c", "a", "b"]);
        assert!(rotated(&[], 3).is_empty());
    }

    #[test]
    fn task_seeds_differ_and_repeat() {
        assert_ne!(task_seed(1, 0), task_seed(1, 1));
        assert_eq!(task_seed(42, 3), task_seed(42, 3));
    }
}
