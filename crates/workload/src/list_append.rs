//! The list-append workload, in the manner of Elle: transactions of random reads and
//! appends over a few keys, each appended value unique, so that every read of a list
//! reveals the order of the appends before it. The history (with each transaction's
//! real-time bounds) goes to the strict-serializability checker
//! ([`checker::list_append::check`]): a cycle of write-write, write-read, read-write and
//! real-time edges, or reads no single order explains, is an anomaly.
//!
//! A list is a row `lists (k, v)` with `v` the values joined by commas. An append reads the
//! row and writes it back longer, in the same read-write transaction; a read-only
//! transaction reads a few lists at one strong snapshot.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use checker::list_append::{Anomaly, Op, Outcome, Txn};
use client::{Client, ClientOptions, Code, TimestampBound, params};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How long a set of keys is in use before the workload moves to fresh ones.
const KEY_WINDOW_SECS: u64 = 5;

/// The table.
pub const SCHEMA: &str =
    "CREATE TABLE IF NOT EXISTS lists (k INT64 PRIMARY KEY, v STRING NOT NULL)";

/// Options of a list-append run.
#[derive(Debug, Clone)]
pub struct ListAppendOptions {
    /// Node addresses; client `i` starts at the `i`-th.
    pub urls: Vec<String>,
    /// Concurrent clients.
    pub clients: usize,
    /// How long to run.
    pub duration: Duration,
    /// Keys the transactions touch (fewer keys, more conflicts).
    pub keys: u64,
    /// Operations per read-write transaction, at most.
    pub max_ops: usize,
    /// The fraction of transactions that are strong read-only ones.
    pub read_only_ratio: f64,
    /// Seed of all randomness.
    pub seed: u64,
}

/// What a run found.
#[derive(Debug)]
pub struct ListAppendReport {
    /// Transactions run.
    pub txns: usize,
    /// Acknowledged commits.
    pub committed: usize,
    /// Transactions whose outcome the client does not know.
    pub unknown: usize,
    /// What the checker found (empty: strictly serializable as far as the history shows).
    pub anomalies: Vec<Anomaly>,
}

impl ListAppendReport {
    /// A summary for people.
    pub fn render(&self) -> String {
        let mut out = format!(
            "list-append: {} transactions ({} committed, {} unknown); strict-serializability anomalies: {}\n",
            self.txns,
            self.committed,
            self.unknown,
            self.anomalies.len()
        );
        for anomaly in self.anomalies.iter().take(10) {
            out.push_str(&format!("  {anomaly}\n"));
        }
        out
    }
}

/// Creates the table.
pub async fn init(urls: &[String]) -> anyhow::Result<()> {
    let client = Client::connect_with(urls, ClientOptions::default()).await?;
    client.sql(SCHEMA, &[]).await?;
    Ok(())
}

/// Reads one list.
const SELECT_LIST: &str = "SELECT v FROM lists WHERE k = $1";

/// A list's key as its SQL parameter.
fn key_param(key: u64) -> i64 {
    i64::try_from(key).unwrap_or(i64::MAX)
}

/// The stored list in the rows of [`SELECT_LIST`], if the key has one.
fn stored_list(rows: &[client::Row]) -> Option<&str> {
    rows.first().and_then(|r| r.get(0)).and_then(|v| v.as_str())
}

fn parse(list: &str) -> Vec<u64> {
    list.split(',').filter_map(|v| v.parse().ok()).collect()
}

/// Runs the workload and checks its history.
pub async fn run(options: &ListAppendOptions) -> anyhow::Result<ListAppendReport> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for index in 0..options.clients {
        let mut urls = options.urls.clone();
        let shift = index % urls.len().max(1);
        urls.rotate_left(shift);
        let client = Client::connect_with(urls, ClientOptions::default()).await?;
        let options = options.clone();
        tasks.push(tokio::spawn(async move {
            client_task(index, client, options, started).await
        }));
    }
    let mut history = Vec::new();
    for task in tasks {
        history.extend(task.await?);
    }
    let anomalies = checker::list_append::check(&history);
    Ok(ListAppendReport {
        txns: history.len(),
        committed: history
            .iter()
            .filter(|t| t.outcome == Outcome::Committed)
            .count(),
        unknown: history
            .iter()
            .filter(|t| t.outcome == Outcome::Unknown)
            .count(),
        anomalies,
    })
}

fn micros_since(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX)
}

async fn client_task(
    index: usize,
    client: Client,
    options: ListAppendOptions,
    started: Instant,
) -> Vec<Txn> {
    let mut rng = StdRng::seed_from_u64(options.seed ^ (index as u64).wrapping_mul(0x9E37_79B9));
    let mut history = Vec::new();
    let mut counter = 0u64;
    let base = (index as u64 + 1) << 32;
    while started.elapsed() < options.duration {
        let id = base | counter;
        // Keys retire every few seconds, so lists stay short and the checker's work grows
        // with the history, not with its square.
        let window = started.elapsed().as_secs() / KEY_WINDOW_SECS;
        let first_key = window * options.keys;
        let read_only = rng.random_bool(options.read_only_ratio);
        let ops: Vec<Op> = if read_only {
            (0..rng.random_range(1..=3))
                .map(|_| Op::Read {
                    key: first_key + rng.random_range(0..options.keys),
                    values: None,
                })
                .collect()
        } else {
            (0..rng.random_range(1..=options.max_ops))
                .map(|_| {
                    let key = first_key + rng.random_range(0..options.keys);
                    if rng.random_bool(0.5) {
                        counter += 1;
                        Op::Append {
                            key,
                            value: base | counter,
                        }
                    } else {
                        Op::Read { key, values: None }
                    }
                })
                .collect()
        };
        counter += 1;
        let start = micros_since(started);
        let (outcome, ops) = if read_only {
            read_txn(&client, ops).await
        } else {
            write_txn(&client, ops).await
        };
        history.push(Txn {
            id,
            start,
            end: micros_since(started),
            outcome,
            ops,
        });
    }
    history
}

/// A read-only transaction: every read at one strong snapshot.
async fn read_txn(client: &Client, ops: Vec<Op>) -> (Outcome, Vec<Op>) {
    let planned = ops.clone();
    let read = client
        .read_only(TimestampBound::Strong, |tx| {
            let ops = planned.clone();
            async move {
                let mut done = Vec::new();
                for op in ops {
                    if let Op::Read { key, .. } = op {
                        let rows = tx.query(SELECT_LIST, &params![key_param(key)]).await?;
                        let values = stored_list(&rows).map(parse).unwrap_or_default();
                        done.push(Op::Read {
                            key,
                            values: Some(values),
                        });
                    }
                }
                Ok(done)
            }
        })
        .await;
    match read {
        Ok(done) => (Outcome::Committed, done),
        Err(_) => (Outcome::Failed, ops),
    }
}

/// A read-write transaction of reads and appends; the operations recorded are those of the
/// last attempt (retries re-run the body).
async fn write_txn(client: &Client, ops: Vec<Op>) -> (Outcome, Vec<Op>) {
    let last: Arc<Mutex<Vec<Op>>> = Arc::new(Mutex::new(ops.clone()));
    let result = client
        .read_write(|tx| {
            let ops = ops.clone();
            let last = Arc::clone(&last);
            async move {
                let mut done = Vec::new();
                for op in ops {
                    let key = match &op {
                        Op::Read { key, .. } | Op::Append { key, .. } => *key,
                    };
                    let key_i = key_param(key);
                    let rows = tx.query(SELECT_LIST, &params![key_i]).await?;
                    let current = stored_list(&rows).map(str::to_string);
                    match op {
                        Op::Read { .. } => done.push(Op::Read {
                            key,
                            values: Some(current.as_deref().map(parse).unwrap_or_default()),
                        }),
                        Op::Append { value, .. } => {
                            let next = match current {
                                Some(list) if !list.is_empty() => format!("{list},{value}"),
                                _ => value.to_string(),
                            };
                            tx.sql(
                                "UPSERT INTO lists (k, v) VALUES ($1, $2)",
                                &params![key_i, next],
                            )
                            .await?;
                            done.push(Op::Append { key, value });
                        }
                    }
                }
                *last.lock().unwrap_or_else(|e| e.into_inner()) = done.clone();
                Ok(done)
            }
        })
        .await;
    match result {
        Ok(committed) => (Outcome::Committed, committed.value),
        Err(e) if e.code() == Code::Indeterminate => {
            let ops = last.lock().unwrap_or_else(|e| e.into_inner()).clone();
            (Outcome::Unknown, ops)
        }
        Err(_) => {
            let ops = last.lock().unwrap_or_else(|e| e.into_inner()).clone();
            (Outcome::Failed, ops)
        }
    }
}
