//! A cluster of `meridian` processes on loopback for the nemesis: node `i` listens on
//! `127.0.0.{i}` (every 127.0.0.0/8 address is the loopback interface on Linux), a time
//! master on `127.0.0.100`. Nodes sync with the master every 500 ms and accept fault
//! injection. Processes are killed when the cluster is dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::membership::{AdminCall, Fault, admin_call};

/// One node process.
#[derive(Debug)]
struct NodeProcess {
    address: String,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    paused: bool,
}

/// The cluster's processes.
#[derive(Debug)]
pub struct ProcessCluster {
    binary: PathBuf,
    master: Child,
    master_address: String,
    nodes: Vec<NodeProcess>,
}

/// A free port on `ip`.
fn free_port(ip: &str) -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind((ip, 0))?;
    Ok(listener.local_addr()?.port())
}

impl ProcessCluster {
    /// Starts a time master and `n` nodes under `dir`, and makes them a cluster.
    pub async fn start(binary: &Path, dir: &Path, n: usize) -> anyhow::Result<ProcessCluster> {
        let master_ip = "127.0.0.100";
        let master_address = format!("{master_ip}:{}", free_port(master_ip)?);
        let master = Command::new(binary)
            .args([
                "time-master",
                "--listen",
                &master_address,
                "--epsilon-us",
                "500",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let mut nodes = Vec::new();
        for i in 1..=n {
            let ip = format!("127.0.0.{i}");
            nodes.push(NodeProcess {
                address: format!("{ip}:{}", free_port(&ip)?),
                data_dir: dir.join(format!("node{i}")),
                log: dir.join(format!("node{i}.log")),
                child: None,
                paused: false,
            });
        }
        let mut cluster = ProcessCluster {
            binary: binary.to_path_buf(),
            master,
            master_address,
            nodes,
        };
        for i in 0..n {
            cluster.spawn(i)?;
        }
        let host = cluster.nodes[0].address.clone();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let init = Command::new(binary)
                .args(["init", "--host", &host])
                .output()?;
            if init.status.success() {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "init failed: {}",
                String::from_utf8_lossy(&init.stderr)
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Ok(cluster)
    }

    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let join: Vec<String> = self.nodes.iter().map(|n| n.address.clone()).collect();
        let node = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)?;
        let child = Command::new(&self.binary)
            .args([
                "start",
                "--listen",
                &node.address,
                "--join",
                &join.join(","),
            ])
            .args([
                "--time-master",
                &self.master_address,
                "--sync-interval-ms",
                "500",
            ])
            .arg("--allow-faults")
            .arg("--data-dir")
            .arg(&node.data_dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        node.child = Some(child);
        node.paused = false;
        Ok(())
    }

    /// The nodes' addresses (`host:port`), node 1 first.
    pub fn addresses(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.address.clone()).collect()
    }

    /// Nodes in the cluster.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the cluster has no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Kills node `i` with SIGKILL.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts node `i` again from its data directory (if it is down).
    pub fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        if self.nodes[i].child.is_none() {
            self.spawn(i)?;
        }
        Ok(())
    }

    fn signal(&mut self, i: usize, signal: &str) {
        if let Some(child) = &self.nodes[i].child {
            let _ = Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status();
        }
    }

    /// Freezes node `i` (SIGSTOP).
    pub fn pause(&mut self, i: usize) {
        self.signal(i, "-STOP");
        self.nodes[i].paused = true;
    }

    /// Thaws node `i` (SIGCONT).
    pub fn resume(&mut self, i: usize) {
        self.signal(i, "-CONT");
        self.nodes[i].paused = false;
    }

    /// Makes each node drop its traffic to the nodes `blocked(i)` lists.
    pub async fn partition(&self, blocked: impl Fn(usize) -> Vec<usize>) -> anyhow::Result<()> {
        for i in 0..self.nodes.len() {
            let addresses = blocked(i)
                .into_iter()
                .map(|j| format!("http://{}", self.nodes[j].address))
                .collect();
            self.fault(i, Fault::Partition(addresses)).await;
        }
        Ok(())
    }

    /// Shifts node `i`'s clock by `offset_ns`.
    pub async fn skew(&self, i: usize, offset_ns: i64) {
        self.fault(i, Fault::ClockOffset(offset_ns)).await;
    }

    /// Injects `fault` into node `i` (a down or frozen node misses it: faults live in memory
    /// and a restarted node starts healed).
    async fn fault(&self, i: usize, fault: Fault) {
        let node = &self.nodes[i];
        if node.child.is_none() || node.paused {
            return;
        }
        let address = format!("http://{}", node.address);
        let call = AdminCall::Fault(fault);
        match tokio::time::timeout(Duration::from_secs(5), admin_call(&address, &call)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(node = i + 1, error = %e, "injecting a fault failed"),
            Err(_) => tracing::warn!(node = i + 1, "injecting a fault timed out"),
        }
    }

    /// Ends every fault: thaws, restarts, heals partitions and clocks.
    pub async fn heal(&mut self) -> anyhow::Result<()> {
        for i in 0..self.nodes.len() {
            if self.nodes[i].paused {
                self.resume(i);
            }
            self.restart(i)?;
        }
        self.partition(|_| Vec::new()).await?;
        for i in 0..self.nodes.len() {
            self.skew(i, 0).await;
        }
        Ok(())
    }
}

impl Drop for ProcessCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].paused {
                self.resume(i);
            }
            self.kill(i);
        }
        let _ = self.master.kill();
        let _ = self.master.wait();
    }
}
