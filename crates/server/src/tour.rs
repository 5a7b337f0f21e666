//! `meridian tour`: the layers one by one, working together.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use storage::key::{Direction, Value, encode_key};
use storage::{Engine, EngineOptions, KeyRange, Mvcc, ScanDirection, WriteBatch};
use timemaster::{ClockSyncer, TimeMaster, TimeMasters};
use truetime::{Clock, FixedEpsilonClock, SyncConfig, SyncedClock, SystemOscillator, Timestamp};

/// Options of `meridian tour`.
#[derive(Debug, clap::Args)]
pub struct TourArgs {
    /// Directory for the demo's RocksDB (default: a temporary directory, removed on exit).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// ε of the demo's time master, microseconds.
    #[arg(long, default_value_t = 1000)]
    master_epsilon_us: u64,
}

pub async fn run(args: TourArgs) -> anyhow::Result<()> {
    let (clock, syncer) = sync_clock(args.master_epsilon_us).await?;
    let temp = tempfile::tempdir()?;
    let dir = args.dir.unwrap_or_else(|| temp.path().to_path_buf());
    let engine = Arc::new(Engine::open(&dir, &EngineOptions::default())?);
    let accounts = Mvcc::open(engine, b"demo/accounts".to_vec())?;
    println!("\n2. MVCC rows on RocksDB at {}", dir.display());
    let opened_at = commit(&clock, &accounts, &[(1, 60), (2, 40)]).await?;
    let transfer_at = commit(&clock, &accounts, &[(1, 45), (2, 55)]).await?;
    show(&accounts, "before the transfer", opened_at)?;
    show(&accounts, "after the transfer", transfer_at)?;
    let stats = accounts.gc(transfer_at, true)?;
    println!(
        "\n3. GC at {transfer_at} removed {} of {} versions",
        stats.versions_removed, stats.versions_seen
    );
    match accounts.get(&account_key(1), opened_at) {
        Err(e) => println!("   a read at the old timestamp is now refused: {e}"),
        Ok(_) => anyhow::bail!("a read below the GC watermark was served"),
    }
    let shared: Arc<dyn Clock> = Arc::new(clock.clone());
    crate::tour_tablets::run(shared, &dir).await?;
    println!("\nThe layers work. Next: SQL, the cluster and the shell (see docs/ARCHITECTURE.md).");
    syncer.stop().await;
    Ok(())
}

/// Starts a time master on a free loopback port and syncs a node clock from it.
async fn sync_clock(master_epsilon_us: u64) -> anyhow::Result<(SyncedClock, ClockSyncer)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = format!("http://{}", listener.local_addr()?);
    let master_clock = Arc::new(FixedEpsilonClock::new(Duration::from_micros(
        master_epsilon_us,
    )));
    tokio::spawn(TimeMaster::new(master_clock).serve(listener, std::future::pending()));
    println!("1. TrueTime: a time master at {address}, ε = {master_epsilon_us} µs");

    let clock = SyncedClock::new(Arc::new(SystemOscillator::new()), SyncConfig::default());
    if let Err(refusal) = clock.now() {
        println!("   before syncing, the node refuses to guess: {refusal}");
    }
    let masters = TimeMasters::new(&[address], Duration::from_secs(2))?;
    let syncer = ClockSyncer::spawn(clock.clone(), masters, Duration::from_secs(5));
    let deadline = Instant::now() + Duration::from_secs(10);
    while clock.now().is_err() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the node could not sync with its time master"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("   synced over gRPC: now() = {}", clock.now()?);
    Ok((clock, syncer))
}

fn account_key(id: i64) -> Vec<u8> {
    encode_key([(&Value::Int64(id), Direction::Ascending)])
}

/// Writes balances at a commit timestamp > now().latest, then commit-waits.
async fn commit(
    clock: &SyncedClock,
    rows: &Mvcc,
    balances: &[(i64, i64)],
) -> anyhow::Result<Timestamp> {
    let commit_ts = clock.now()?.latest.next();
    let mut batch = WriteBatch::new();
    for (id, balance) in balances {
        rows.put(
            &mut batch,
            &account_key(*id),
            commit_ts,
            &balance.to_be_bytes(),
        );
    }
    rows.engine().write(batch, true)?;
    let started = Instant::now();
    clock.wait_until_after(commit_ts).await?;
    println!(
        "   committed {balances:?} at {commit_ts}; commit-wait took {:?}",
        started.elapsed()
    );
    Ok(commit_ts)
}

fn show(rows: &Mvcc, label: &str, at: Timestamp) -> anyhow::Result<()> {
    let page = rows.scan(&KeyRange::all(), at, 100, ScanDirection::Forward)?;
    let mut total = 0;
    let mut shown = Vec::new();
    for (_, value) in page.rows {
        let balance =
            i64::from_be_bytes(value.as_slice().try_into().context("balance is 8 bytes")?);
        total += balance;
        shown.push(balance);
    }
    println!("   read at {at} ({label}): balances {shown:?}, total {total}");
    Ok(())
}
