//! The nemesis's faults and its seeded schedule. Each step picks one fault, holds it for a
//! while, ends it, and lets the cluster recover briefly: a run is a sequence of
//! fault-then-heal episodes, reproducible from the seed.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::procs::ProcessCluster;

/// The clock uncertainty the nemesis's time master declares, in nanoseconds.
pub const MASTER_EPSILON_NS: i64 = 500_000;

/// One fault.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "fault", rename_all = "snake_case")]
pub enum Fault {
    /// SIGKILL a node; restart it when the fault ends.
    Kill {
        /// The node (0-based).
        node: usize,
    },
    /// SIGSTOP a node; SIGCONT when the fault ends.
    Pause {
        /// The node.
        node: usize,
    },
    /// Cut one node off from all the others.
    Isolate {
        /// The node.
        node: usize,
    },
    /// Split the nodes into a majority and a minority.
    MajorityMinority {
        /// The minority.
        minority: Vec<usize>,
    },
    /// Overlapping majorities: `a` and `b` cannot talk; every other pair can (with three
    /// nodes, the third is the only one both sides see).
    Bridge {
        /// One side.
        a: usize,
        /// The other side.
        b: usize,
    },
    /// Shift one node's clock back and forth within the masters' ε (strobe).
    SkewWithin {
        /// The node.
        node: usize,
    },
    /// Shift one node's clock far beyond ε: its next sync notices and fences it.
    SkewBeyond {
        /// The node.
        node: usize,
        /// The shift, nanoseconds.
        offset_ns: i64,
    },
}

/// Which kinds of fault a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FaultKind {
    /// SIGKILL and restart.
    Kill,
    /// SIGSTOP and SIGCONT.
    Pause,
    /// Partitions: isolated node, majority/minority, overlapping majorities.
    Partition,
    /// Clock skew and strobe within ε.
    Skew,
    /// Clock skew beyond ε (the node fences itself).
    SkewBeyond,
}

/// The seeded schedule.
#[derive(Debug)]
pub struct Schedule {
    rng: StdRng,
    kinds: Vec<FaultKind>,
    nodes: usize,
}

impl Schedule {
    /// A schedule over `nodes` nodes drawing from `kinds`.
    pub fn new(seed: u64, kinds: Vec<FaultKind>, nodes: usize) -> Schedule {
        Schedule {
            rng: StdRng::seed_from_u64(seed),
            kinds,
            nodes,
        }
    }

    /// The next fault, how long to hold it, and how long to let the cluster recover after.
    pub fn next_fault(&mut self) -> Option<(Fault, Duration, Duration)> {
        if self.kinds.is_empty() || self.nodes == 0 {
            return None;
        }
        let kind = self.kinds[self.rng.random_range(0..self.kinds.len())];
        let node = self.rng.random_range(0..self.nodes);
        let other = (node + 1 + self.rng.random_range(0..self.nodes.max(2) - 1)) % self.nodes;
        let fault = match kind {
            FaultKind::Kill => Fault::Kill { node },
            FaultKind::Pause => Fault::Pause { node },
            FaultKind::Partition => match self.rng.random_range(0..3) {
                0 => Fault::Isolate { node },
                1 => {
                    let size = (self.nodes - 1) / 2;
                    let minority = (0..size.max(1)).map(|k| (node + k) % self.nodes).collect();
                    Fault::MajorityMinority { minority }
                }
                _ => Fault::Bridge { a: node, b: other },
            },
            FaultKind::Skew => Fault::SkewWithin { node },
            FaultKind::SkewBeyond => {
                let sign = if self.rng.random_bool(0.5) { 1 } else { -1 };
                Fault::SkewBeyond {
                    node,
                    offset_ns: sign * 200_000_000,
                }
            }
        };
        let hold = Duration::from_millis(self.rng.random_range(1_000..4_000));
        let recover = Duration::from_millis(self.rng.random_range(1_000..3_000));
        Some((fault, hold, recover))
    }

    /// A random shift within ε, for strobing.
    pub fn shift_within(&mut self) -> i64 {
        self.rng
            .random_range(-MASTER_EPSILON_NS / 2..=MASTER_EPSILON_NS / 2)
    }
}

/// Starts `fault`.
pub async fn begin(cluster: &mut ProcessCluster, fault: &Fault) -> anyhow::Result<()> {
    let n = cluster.len();
    match fault {
        Fault::Kill { node } => cluster.kill(*node),
        Fault::Pause { node } => cluster.pause(*node),
        Fault::Isolate { node } => {
            let node = *node;
            cluster
                .partition(|i| {
                    if i == node {
                        (0..n).filter(|j| *j != node).collect()
                    } else {
                        vec![node]
                    }
                })
                .await?;
        }
        Fault::MajorityMinority { minority } => {
            cluster
                .partition(|i| {
                    let mine = minority.contains(&i);
                    (0..n).filter(|j| minority.contains(j) != mine).collect()
                })
                .await?;
        }
        Fault::Bridge { a, b } => {
            let (a, b) = (*a, *b);
            cluster
                .partition(|i| match i {
                    i if i == a => vec![b],
                    i if i == b => vec![a],
                    _ => Vec::new(),
                })
                .await?;
        }
        Fault::SkewWithin { .. } => {}
        Fault::SkewBeyond { node, offset_ns } => cluster.skew(*node, *offset_ns).await,
    }
    Ok(())
}
