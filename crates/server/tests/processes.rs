//! The end-to-end test: a 3-process cluster of the built `meridian` binary on loopback. The
//! shell creates the bank schema and moves money, the Rust client moves more, one node is
//! killed with SIGKILL, and the total is intact and the cluster still serves.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use client::{Client, ClientOptions, TimestampBound, params};

const ACCOUNTS: i64 = 8;
const INITIAL: i64 = 100;

/// A node process, killed when dropped.
struct NodeProcess(Child);

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn meridian() -> Command {
    Command::new(env!("CARGO_BIN_EXE_meridian"))
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn start_node(dir: &Path, i: usize, listen: &str, join: &str) -> NodeProcess {
    let log = std::fs::File::create(dir.join(format!("node{i}.log"))).unwrap();
    let child = meridian()
        .args(["start", "--listen", listen, "--join", join, "--data-dir"])
        .arg(dir.join(format!("node{i}")))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    NodeProcess(child)
}

/// Runs `meridian sql -e <sql>` against `url`.
fn shell(url: &str, sql: &str) -> Output {
    meridian()
        .args(["sql", "--url", url, "-e", sql])
        .output()
        .unwrap()
}

fn must(output: Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "the shell failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Moves up to `amount` from one account to another in one read-write transaction.
async fn transfer(client: &Client, from: i64, to: i64, amount: i64) -> Result<(), client::Error> {
    client
        .read_write(|tx| async move {
            let row = tx
                .query_one("SELECT balance FROM accounts WHERE id = $1", &params![from])
                .await?;
            let balance = row.get(0).and_then(|v| v.as_i64()).unwrap_or(0);
            let moved = amount.min(balance);
            tx.sql(
                "UPDATE accounts SET balance = balance - $1 WHERE id = $2",
                &params![moved, from],
            )
            .await?;
            tx.sql(
                "UPDATE accounts SET balance = balance + $1 WHERE id = $2",
                &params![moved, to],
            )
            .await?;
            Ok(())
        })
        .await
        .map(|_| ())
}

async fn balances(client: &Client) -> Vec<i64> {
    client
        .read_only(TimestampBound::Strong, |tx| async move {
            tx.query("SELECT balance FROM accounts ORDER BY id", &[])
                .await
        })
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0).and_then(|v| v.as_i64()).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_keep_the_bank_total_through_a_killed_node() {
    let dir = tempfile::tempdir().unwrap();
    let addresses: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let join = addresses.join(",");
    let mut nodes: Vec<Option<NodeProcess>> = addresses
        .iter()
        .enumerate()
        .map(|(i, a)| Some(start_node(dir.path(), i + 1, a, &join)))
        .collect();

    // The nodes take a moment to listen: init retries until one answers.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let init = meridian()
            .args(["init", "--host", &addresses[0]])
            .output()
            .unwrap();
        if init.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "init never succeeded: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The shell creates the schema and moves money.
    let values: Vec<String> = (1..=ACCOUNTS)
        .map(|id| format!("({id}, {INITIAL})"))
        .collect();
    must(shell(
        &addresses[0],
        &format!(
            "CREATE TABLE accounts (id INT64 PRIMARY KEY, balance INT64 NOT NULL); \
             INSERT INTO accounts (id, balance) VALUES {};",
            values.join(", ")
        ),
    ));
    must(shell(
        &addresses[1],
        "BEGIN; UPDATE accounts SET balance = balance - 7 WHERE id = 1; \
         UPDATE accounts SET balance = balance + 7 WHERE id = 2; COMMIT;",
    ));

    // The client (knowing every node) moves more.
    let options = ClientOptions::default();
    let client = Client::connect_with(addresses.iter().map(String::as_str), options)
        .await
        .unwrap();
    for i in 0..20 {
        transfer(&client, i % ACCOUNTS + 1, (i * 3 + 1) % ACCOUNTS + 1, 5)
            .await
            .unwrap();
    }
    let total: i64 = balances(&client).await.iter().sum();
    assert_eq!(total, ACCOUNTS * INITIAL);

    // Kill the node the client talks to, mid-stream: transfers in flight may end
    // indeterminate, but none may break the total.
    let killed = nodes[0].take();
    drop(killed);
    let mut indeterminate = 0;
    for i in 0..20 {
        match transfer(&client, (i * 5) % ACCOUNTS + 1, i % ACCOUNTS + 1, 3).await {
            Ok(()) => {}
            Err(e) if e.code() == client::Code::Indeterminate => indeterminate += 1,
            Err(e) => panic!("transfer failed after the kill: {e}"),
        }
    }
    let after = balances(&client).await;
    assert_eq!(after.iter().sum::<i64>(), ACCOUNTS * INITIAL, "{after:?}");
    assert!(after.iter().all(|b| *b >= 0), "negative balance: {after:?}");
    assert!(
        indeterminate <= 1,
        "{indeterminate} transfers ended indeterminate"
    );

    // The shell on a surviving node agrees.
    let sum = must(shell(&addresses[2], "SELECT SUM(balance) FROM accounts;"));
    assert!(sum.contains(&(ACCOUNTS * INITIAL).to_string()), "{sum}");

    // The operator's view: the killed node does not answer; the table's tablet has three
    // replicas and a leader.
    let status = meridian()
        .args(["node", "status", "--host", &addresses[1]])
        .output()
        .unwrap();
    let status = must(status);
    assert!(
        status.contains("NO"),
        "the killed node shows as not live:\n{status}"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let tablets = must(
            meridian()
                .args(["tablets", "--host", &addresses[1]])
                .output()
                .unwrap(),
        );
        assert!(tablets.contains("1,2,3"), "replicas listed:\n{tablets}");
        if !tablets.contains("none") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a tablet has no leader:\n{tablets}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(nodes);
}
