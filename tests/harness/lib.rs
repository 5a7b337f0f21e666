//! Shared helpers for Meridian's integration tests: loopback listeners on free ports, seeded
//! randomness that reports its seed, and waiting on conditions with a deadline (never a
//! fixed sleep).

use std::future::Future;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;

pub mod cluster;
pub mod servers;
pub mod txn_cluster;

/// Installs a tracing subscriber once (honours `RUST_LOG`), writing through the test harness.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// A listener on a free port of 127.0.0.1, and its `http://` address.
pub async fn loopback_listener() -> anyhow::Result<(TcpListener, String)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = format!("http://{}", listener.local_addr()?);
    Ok((listener, address))
}

/// The seed for this test's randomness: `MERIDIAN_SEED` if set, else derived from the clock.
/// Printed, so that a failure can be replayed with `MERIDIAN_SEED=<seed>`.
pub fn seed(test: &str) -> u64 {
    let seed = std::env::var("MERIDIAN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            let t = truetime::system_wall_time().as_nanos();
            t ^ (t >> 29)
        });
    eprintln!("{test}: MERIDIAN_SEED={seed}");
    seed
}

/// Polls `condition` until it yields `Some`, or fails after `timeout` naming `what`.
pub async fn wait_for<T, F, Fut>(
    what: &str,
    timeout: Duration,
    mut condition: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = condition().await {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
