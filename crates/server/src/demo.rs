//! `meridian demo`: a local 3-node cluster in this process (each node on its own loopback
//! port, talking gRPC to the others exactly as separate machines would), a bank schema
//! loaded, and the SQL shell connected to it.

use std::path::PathBuf;
use std::sync::Arc;

use server::{Server, ServerConfig};
use tablet::NodeConfig;
use txn::TxnConfig;

/// Options of `meridian demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Keep the cluster's data here (default: a temporary directory removed on exit). A
    /// directory from an earlier demo is reopened.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Nodes in the cluster.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Run this SQL in the shell and exit instead of opening a prompt.
    #[arg(short = 'e', long = "execute")]
    execute: Option<String>,
}

const BANK_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS accounts (\
    id INT64 PRIMARY KEY, owner STRING NOT NULL, balance INT64 NOT NULL, \
    updated TIMESTAMP)";

const OWNERS: [&str; 10] = [
    "ada", "barbara", "claude", "dennis", "edsger", "frances", "grace", "john", "ken", "leslie",
];

/// Runs the demo; returns the shell's exit code.
pub async fn run(args: DemoArgs) -> anyhow::Result<i32> {
    anyhow::ensure!(args.nodes >= 1, "--nodes must be at least 1");
    let temp = tempfile::tempdir()?;
    let root = args
        .dir
        .clone()
        .unwrap_or_else(|| temp.path().to_path_buf());
    let servers = start_nodes(&root, args.nodes).await?;
    let result = async {
        let last = servers.last().ok_or_else(|| anyhow::anyhow!("no nodes"))?;
        if last.running().is_none() {
            server::admin::init_cluster(last).await?;
        }
        load_bank(last).await?;
        let urls: Vec<String> = servers.iter().map(|s| s.address().to_string()).collect();
        if args.execute.is_none() {
            println!(
                "Meridian demo: a {}-node cluster on this machine",
                servers.len()
            );
            for (i, url) in urls.iter().enumerate() {
                println!("  node {} at {url}", i + 1);
            }
            println!(
                "Data in {}{}",
                root.display(),
                if args.dir.is_none() {
                    " (removed on exit)"
                } else {
                    ""
                }
            );
            println!("The bank: `SELECT * FROM accounts;`, then move money:");
            println!("  BEGIN; UPDATE accounts SET balance = balance - 10 WHERE id = 1;");
            println!("  UPDATE accounts SET balance = balance + 10 WHERE id = 2; COMMIT;");
            println!("  SELECT SUM(balance) FROM accounts;   -- always 10000");
            println!(
                "Other shells: `meridian sql --url {}`. Type \\? for help, \\q to quit.\n",
                urls[0]
            );
        }
        let options = client::shell::ShellOptions {
            urls,
            execute: args.execute.clone(),
            ..client::shell::ShellOptions::default()
        };
        Ok::<i32, anyhow::Error>(client::shell::run(options).await?)
    }
    .await;
    for server in &servers {
        server.shutdown().await;
    }
    result
}

async fn start_nodes(root: &std::path::Path, n: usize) -> anyhow::Result<Vec<Arc<Server>>> {
    let mut servers: Vec<Arc<Server>> = Vec::new();
    let mut joined = Vec::new();
    for i in 1..=n {
        let config = ServerConfig {
            data_dir: root.join(format!("node{i}")),
            listen: "127.0.0.1:0".parse()?,
            advertise: None,
            join: joined.clone(),
            clock: crate::node_cmd::clock(&[], 1.0, None).await?.0,
            node: NodeConfig::default(),
            txn: TxnConfig::default(),
            faults: None,
        };
        let server = Server::start(config).await?;
        joined.push(server.address().to_string());
        servers.push(server);
    }
    Ok(servers)
}

/// Creates the accounts table and ten accounts of 1000 each, unless they exist.
async fn load_bank(server: &Arc<Server>) -> anyhow::Result<()> {
    let running = server
        .running()
        .ok_or_else(|| anyhow::anyhow!("the node did not join"))?;
    let mut session = sql::Session::new(Arc::clone(&running.backend) as Arc<dyn sql::Backend>);
    session.execute(BANK_SCHEMA, &[]).await?;
    let existing = session
        .execute("SELECT COUNT(*) FROM accounts", &[])
        .await?;
    if existing
        .first()
        .and_then(|r| r.rows.first())
        .and_then(|row| row.first())
        .is_some_and(|v| *v != sql::Value::Int64(0))
    {
        return Ok(());
    }
    for (id, owner) in OWNERS.iter().enumerate() {
        session
            .execute(
                "INSERT INTO accounts (id, owner, balance, updated) VALUES ($1, $2, 1000, PENDING_COMMIT_TIMESTAMP())",
                &[sql::Value::Int64(id as i64 + 1), sql::Value::String((*owner).to_string())],
            )
            .await?;
    }
    Ok(())
}
