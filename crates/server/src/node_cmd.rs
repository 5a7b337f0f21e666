//! `meridian start`, `meridian init`, `meridian node status` and `meridian tablets`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use proto::v1::meridian_client::MeridianClient;
use proto::v1::{Empty, InitRequest, StatusReply};
use server::membership::to_url;
use server::{Faults, Server, ServerConfig};
use tablet::NodeConfig;
use timemaster::{ClockSyncer, TimeMasters};
use truetime::fault::{OffsetClock, OffsetOscillator, SharedOffset};
use truetime::{Clock, FixedEpsilonClock, Oscillator, SyncConfig, SyncedClock, SystemOscillator};
use txn::TxnConfig;

/// Options of `meridian start`.
#[derive(Debug, clap::Args)]
pub struct StartArgs {
    /// Where this node keeps its data.
    #[arg(long, default_value = "meridian-data")]
    pub data_dir: PathBuf,
    /// Address to listen on (the public API, Raft and node-to-node traffic share it).
    #[arg(long, default_value = "127.0.0.1:26257")]
    pub listen: SocketAddr,
    /// Address other nodes and clients reach this node at, if not the listen address.
    #[arg(long)]
    pub advertise: Option<String>,
    /// Addresses of the cluster's first nodes, comma-separated (used by `meridian init`).
    #[arg(long, value_delimiter = ',')]
    pub join: Vec<String>,
    /// TrueTime from these time masters (repeat or comma-separate); without any, the
    /// system clock with a declared --epsilon-ms.
    #[arg(long = "time-master", value_delimiter = ',')]
    pub time_masters: Vec<String>,
    /// The uncertainty claimed for the system clock when no time master is given. It must
    /// cover the clock's real error (keep NTP running): external consistency depends on it.
    #[arg(long, default_value_t = 1.0)]
    pub epsilon_ms: f64,
    /// Accept fault injection (partitions, clock shifts) from a nemesis. Never in production.
    #[arg(long)]
    pub allow_faults: bool,
    /// How often to sync with the time masters, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub sync_interval_ms: u64,
}

/// The node's clock, and the task keeping it synced if it uses time masters. With
/// `offset`, the clock can be shifted at run time (fault injection): the oscillator of a
/// synced clock, the output of a fixed-ε one.
pub async fn clock(
    time_masters: &[String],
    epsilon_ms: f64,
    offset: Option<SharedOffset>,
) -> anyhow::Result<(Arc<dyn Clock>, Option<ClockSyncer>)> {
    clock_syncing_every(time_masters, epsilon_ms, offset, Duration::from_secs(5)).await
}

async fn clock_syncing_every(
    time_masters: &[String],
    epsilon_ms: f64,
    offset: Option<SharedOffset>,
    sync_every: Duration,
) -> anyhow::Result<(Arc<dyn Clock>, Option<ClockSyncer>)> {
    if time_masters.is_empty() {
        anyhow::ensure!(
            epsilon_ms.is_finite() && epsilon_ms >= 0.0,
            "--epsilon-ms must be a non-negative number"
        );
        let epsilon = Duration::from_secs_f64(epsilon_ms / 1000.0);
        let fixed: Arc<dyn Clock> = Arc::new(FixedEpsilonClock::new(epsilon));
        return Ok(match offset {
            Some(offset) => (Arc::new(OffsetClock::new(fixed, offset)), None),
            None => (fixed, None),
        });
    }
    let mut oscillator: Arc<dyn Oscillator> = Arc::new(SystemOscillator::new());
    if let Some(offset) = offset {
        oscillator = Arc::new(OffsetOscillator::new(oscillator, offset));
    }
    let clock = SyncedClock::new(oscillator, SyncConfig::default());
    let urls: Vec<String> = time_masters.iter().map(|a| to_url(a)).collect();
    let masters = TimeMasters::new(&urls, Duration::from_secs(2))?;
    // The masters may be starting too: keep trying for a while before giving up.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        match masters.sync(&clock).await {
            Ok(_) => break,
            Err(e) if std::time::Instant::now() < deadline => {
                tracing::warn!(error = %e, "the first sync with the time masters failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => {
                return Err(
                    anyhow::Error::new(e).context("the first sync with the time masters failed")
                );
            }
        }
    }
    let syncer = ClockSyncer::spawn(clock.clone(), masters, sync_every);
    Ok((Arc::new(clock), Some(syncer)))
}

/// `meridian start`: runs one node until Ctrl-C or SIGTERM.
pub async fn start(args: StartArgs) -> anyhow::Result<()> {
    let faults = args.allow_faults.then(Faults::default);
    let (clock, syncer) = clock_syncing_every(
        &args.time_masters,
        args.epsilon_ms,
        faults.as_ref().map(|f| Arc::clone(&f.clock_offset)),
        Duration::from_millis(args.sync_interval_ms.max(10)),
    )
    .await?;
    let config = ServerConfig {
        data_dir: args.data_dir.clone(),
        listen: args.listen,
        advertise: args.advertise,
        join: args.join,
        clock,
        node: NodeConfig::default(),
        txn: TxnConfig::default(),
        faults,
    };
    let server = Server::start(config).await?;
    match server.running() {
        Some(running) => println!(
            "node {} of a {}-node cluster serving at {} (data in {})",
            running.membership.node,
            running.membership.nodes.len(),
            server.address(),
            args.data_dir.display()
        ),
        None => println!(
            "node serving at {} (data in {}); not part of a cluster yet: run `meridian init --host {}` once every node has started",
            server.address(),
            args.data_dir.display(),
            args.listen
        ),
    }
    wait_for_signal().await;
    println!("stopping");
    server.shutdown().await;
    if let Some(syncer) = syncer {
        syncer.stop().await;
    }
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

async fn connect(host: &str) -> anyhow::Result<MeridianClient<tonic::transport::Channel>> {
    MeridianClient::connect(to_url(host))
        .await
        .with_context(|| format!("cannot reach a node at {host}"))
}

/// `meridian init`: makes the started nodes a cluster.
pub async fn init(host: &str) -> anyhow::Result<()> {
    let reply = connect(host)
        .await?
        .init(InitRequest {})
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
        .into_inner();
    println!("cluster initialised with {} nodes:", reply.nodes.len());
    for node in reply.nodes {
        println!("  node {} at {}", node.node_id, node.address);
    }
    Ok(())
}

async fn fetch_status(host: &str) -> anyhow::Result<StatusReply> {
    Ok(connect(host)
        .await?
        .status(Empty {})
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
        .into_inner())
}

/// `meridian node status`.
pub async fn node_status(host: &str) -> anyhow::Result<()> {
    let status = fetch_status(host).await?;
    if !status.initialized {
        println!(
            "{} has not joined a cluster (run `meridian init`)",
            status.address
        );
        return Ok(());
    }
    let mut table = comfy_table::Table::new();
    table.set_header(["node", "address", "live", "tablets led"]);
    for node in &status.nodes {
        let led = status
            .tablets
            .iter()
            .filter(|t| t.leader == node.node_id)
            .count();
        table.add_row([
            node.node_id.to_string(),
            node.address.clone(),
            if node.live { "yes" } else { "NO" }.to_string(),
            led.to_string(),
        ]);
    }
    println!("{table}");
    Ok(())
}

/// `meridian tablets`.
pub async fn tablets(host: &str) -> anyhow::Result<()> {
    let status = fetch_status(host).await?;
    let mut table = comfy_table::Table::new();
    table.set_header([
        "tablet",
        "range",
        "replicas",
        "leader",
        "term",
        "t_safe lag (ms)",
    ]);
    for t in &status.tablets {
        let replicas: Vec<String> = t.replicas.iter().map(u64::to_string).collect();
        let lag = if t.local {
            format!("{:.1}", t.safe_lag_us as f64 / 1000.0)
        } else {
            "-".to_string()
        };
        table.add_row([
            t.tablet_id.to_string(),
            format!("[{}, {})", show_key(&t.start), show_key(&t.end)),
            replicas.join(","),
            if t.leader == 0 {
                "none".to_string()
            } else {
                t.leader.to_string()
            },
            t.term.to_string(),
            lag,
        ]);
    }
    println!("{table}");
    println!(
        "(t_safe lag is measured on node {}, {})",
        status.node_id, status.address
    );
    Ok(())
}

/// A key for people: printable bytes as text, the rest as `\xNN`.
fn show_key(key: &[u8]) -> String {
    key.iter()
        .map(|&b| {
            if b.is_ascii_graphic() {
                (b as char).to_string()
            } else {
                format!("\\x{b:02x}")
            }
        })
        .collect()
}
