//! Strict serializability of list-append histories: version orders from reads, a dependency
//! graph (ww, wr, rw and real-time edges), and cycle detection.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

/// One operation of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Appended `value` (unique per key) to the list at `key`.
    Append {
        /// The key.
        key: u64,
        /// The value.
        value: u64,
    },
    /// Read the whole list at `key` (`None` if the read's result is unknown).
    Read {
        /// The key.
        key: u64,
        /// The list, oldest value first.
        values: Option<Vec<u64>>,
    },
}

/// How a transaction ended, as its client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged as committed.
    Committed,
    /// Known not to have committed.
    Failed,
    /// Unknown (timeout, indeterminate commit): it may or may not have committed.
    Unknown,
}

/// A transaction in a history, with its real-time bounds (any monotonic clock, shared by
/// all clients of the history).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Txn {
    /// Unique id.
    pub id: u64,
    /// When the client invoked it.
    pub start: u64,
    /// When the client learnt the outcome (meaningful for committed transactions).
    pub end: u64,
    /// The outcome.
    pub outcome: Outcome,
    /// Its operations, in order.
    pub ops: Vec<Op>,
}

/// Why one transaction must precede another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Edge {
    /// Write-write: it wrote the previous version of a key.
    WriteWrite,
    /// Write-read: the other read a version it wrote.
    WriteRead,
    /// Read-write (anti-dependency): it read a version the other then overwrote.
    ReadWrite,
    /// Real time: it was acknowledged before the other began.
    RealTime,
}

/// The kind of an anomaly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnomalyKind {
    /// A cycle of dependencies, with the edge leading from each transaction to the next.
    Cycle(Vec<Edge>),
    /// Two reads of a key that no single version order explains.
    IncompatibleOrder {
        /// The key.
        key: u64,
    },
    /// A read saw a value appended by a transaction that failed.
    AbortedRead {
        /// The key.
        key: u64,
        /// The value.
        value: u64,
    },
    /// A value appended twice to the same key.
    DuplicateAppend {
        /// The key.
        key: u64,
        /// The value.
        value: u64,
    },
    /// A read saw a value nobody appended.
    PhantomValue {
        /// The key.
        key: u64,
        /// The value.
        value: u64,
    },
}

/// Something the history shows that a strictly serializable database never does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anomaly {
    /// What.
    pub kind: AnomalyKind,
    /// The transactions involved (for a cycle, in cycle order).
    pub txns: Vec<u64>,
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} among transactions {:?}", self.kind, self.txns)
    }
}

type Graph = BTreeMap<u64, BTreeMap<u64, Edge>>;

/// Checks a list-append history; an empty result means no anomaly was found.
pub fn check(history: &[Txn]) -> Vec<Anomaly> {
    let mut anomalies = Vec::new();
    let writers = index_appends(history, &mut anomalies);
    let orders = version_orders(history, &mut anomalies);
    check_reads(history, &writers, &mut anomalies);
    let graph = dependency_graph(history, &writers, &orders);
    anomalies.extend(cycles(&graph));
    anomalies
}

/// Every complete read of a committed transaction: (reader, key, list).
fn committed_reads(history: &[Txn]) -> impl Iterator<Item = (&Txn, u64, &Vec<u64>)> {
    history
        .iter()
        .filter(|t| t.outcome == Outcome::Committed)
        .flat_map(|txn| {
            txn.ops.iter().filter_map(move |op| match op {
                Op::Read {
                    key,
                    values: Some(values),
                } => Some((txn, *key, values)),
                _ => None,
            })
        })
}

/// Whether a transaction's writes may be visible (committed, or unknown but possibly so).
fn may_have_committed(txn: &Txn) -> bool {
    txn.outcome != Outcome::Failed
}

fn index_appends<'h>(
    history: &'h [Txn],
    anomalies: &mut Vec<Anomaly>,
) -> HashMap<(u64, u64), &'h Txn> {
    let mut writers: HashMap<(u64, u64), &Txn> = HashMap::new();
    for txn in history {
        for op in &txn.ops {
            if let Op::Append { key, value } = op
                && let Some(other) = writers.insert((*key, *value), txn)
            {
                let kind = AnomalyKind::DuplicateAppend {
                    key: *key,
                    value: *value,
                };
                anomalies.push(Anomaly {
                    kind,
                    txns: vec![other.id, txn.id],
                });
            }
        }
    }
    writers
}

/// Each key's version order: the longest committed read, checked against every other read.
fn version_orders(history: &[Txn], anomalies: &mut Vec<Anomaly>) -> BTreeMap<u64, Vec<u64>> {
    let mut reads: BTreeMap<u64, Vec<(u64, &Vec<u64>)>> = BTreeMap::new();
    for (txn, key, values) in committed_reads(history) {
        reads.entry(key).or_default().push((txn.id, values));
    }
    let mut orders = BTreeMap::new();
    for (key, observed) in reads {
        let Some(&(longest_reader, longest)) = observed.iter().max_by_key(|(_, v)| v.len()) else {
            continue;
        };
        for (reader, values) in &observed {
            if !longest.starts_with(values) {
                let kind = AnomalyKind::IncompatibleOrder { key };
                anomalies.push(Anomaly {
                    kind,
                    txns: vec![longest_reader, *reader],
                });
            }
        }
        orders.insert(key, longest.clone());
    }
    orders
}

fn check_reads(history: &[Txn], writers: &HashMap<(u64, u64), &Txn>, anomalies: &mut Vec<Anomaly>) {
    for (txn, key, values) in committed_reads(history) {
        for value in values {
            match writers.get(&(key, *value)) {
                None => anomalies.push(Anomaly {
                    kind: AnomalyKind::PhantomValue { key, value: *value },
                    txns: vec![txn.id],
                }),
                Some(writer) if writer.outcome == Outcome::Failed => anomalies.push(Anomaly {
                    kind: AnomalyKind::AbortedRead { key, value: *value },
                    txns: vec![writer.id, txn.id],
                }),
                Some(_) => {}
            }
        }
    }
}

fn add_edge(graph: &mut Graph, from: u64, to: u64, edge: Edge) {
    if from != to {
        graph.entry(from).or_default().entry(to).or_insert(edge);
    }
}

fn dependency_graph(
    history: &[Txn],
    writers: &HashMap<(u64, u64), &Txn>,
    orders: &BTreeMap<u64, Vec<u64>>,
) -> Graph {
    let mut graph = Graph::new();
    let writer_of = |key: u64, value: u64| {
        writers
            .get(&(key, value))
            .filter(|t| may_have_committed(t))
            .map(|t| t.id)
    };
    for (key, order) in orders {
        for pair in order.windows(2) {
            if let (Some(a), Some(b)) = (writer_of(*key, pair[0]), writer_of(*key, pair[1])) {
                add_edge(&mut graph, a, b, Edge::WriteWrite);
            }
        }
    }
    for (txn, key, values) in committed_reads(history) {
        if let Some(writer) = values.last().and_then(|v| writer_of(key, *v)) {
            add_edge(&mut graph, writer, txn.id, Edge::WriteRead);
        }
        // The version after the last one this read saw was written after it.
        let next = orders.get(&key).and_then(|order| order.get(values.len()));
        if let Some(overwriter) = next.and_then(|v| writer_of(key, *v)) {
            add_edge(&mut graph, txn.id, overwriter, Edge::ReadWrite);
        }
    }
    add_real_time_edges(&mut graph, history);
    graph
}

/// Ids at or above this are the virtual nodes of [`add_real_time_edges`], not transactions.
const VIRTUAL: u64 = u64::MAX - (1 << 40);

/// Real-time order (`a` acknowledged before `b` began) in O(n) edges rather than O(n²): a
/// chain of virtual nodes, one per distinct end time in ascending order; each committed
/// transaction points at the node of its end, and the node of the latest end before a
/// transaction's start points at it. `a` then reaches `b` through the chain exactly when
/// `a.end < b.start`, so every cycle of the full graph is a cycle here and vice versa.
fn add_real_time_edges(graph: &mut Graph, history: &[Txn]) {
    let committed: Vec<&Txn> = history
        .iter()
        .filter(|t| t.outcome == Outcome::Committed)
        .collect();
    let ends: Vec<u64> = committed
        .iter()
        .map(|t| t.end)
        .collect::<BTreeSet<u64>>()
        .into_iter()
        .collect();
    let node = |i: usize| VIRTUAL + i as u64;
    for i in 1..ends.len() {
        add_edge(graph, node(i - 1), node(i), Edge::RealTime);
    }
    for t in &committed {
        if let Ok(i) = ends.binary_search(&t.end) {
            add_edge(graph, t.id, node(i), Edge::RealTime);
        }
        // The latest end strictly before this transaction began.
        let before = ends.partition_point(|end| *end < t.start);
        if before > 0 {
            add_edge(graph, node(before - 1), t.id, Edge::RealTime);
        }
    }
}

/// One cycle per strongly connected component with more than one transaction (Tarjan).
fn cycles(graph: &Graph) -> Vec<Anomaly> {
    let nodes: BTreeSet<u64> = graph
        .keys()
        .copied()
        .chain(graph.values().flat_map(|m| m.keys().copied()))
        .collect();
    strongly_connected(graph, &nodes)
        .into_iter()
        .filter(|c| c.iter().filter(|n| **n < VIRTUAL).count() > 1)
        .filter_map(|c| cycle_in(graph, &c))
        .collect()
}

/// Tarjan's strongly connected components, iterative (histories and the real-time chain
/// are far deeper than a thread's stack allows recursion).
fn strongly_connected(graph: &Graph, nodes: &BTreeSet<u64>) -> Vec<BTreeSet<u64>> {
    let successors = |n: u64| -> Vec<u64> {
        graph
            .get(&n)
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default()
    };
    let mut index: HashMap<u64, usize> = HashMap::new();
    let mut low: HashMap<u64, usize> = HashMap::new();
    let mut stack: Vec<u64> = Vec::new();
    let mut on_stack: BTreeSet<u64> = BTreeSet::new();
    let mut components = Vec::new();
    let mut next = 0;
    for &root in nodes {
        if index.contains_key(&root) {
            continue;
        }
        let mut work: Vec<(u64, Vec<u64>, usize)> = Vec::new();
        index.insert(root, next);
        low.insert(root, next);
        next += 1;
        stack.push(root);
        on_stack.insert(root);
        work.push((root, successors(root), 0));
        while let Some((node, succs, pos)) = work.last_mut() {
            let node = *node;
            if let Some(&w) = succs.get(*pos) {
                *pos += 1;
                if let std::collections::hash_map::Entry::Vacant(fresh) = index.entry(w) {
                    fresh.insert(next);
                    low.insert(w, next);
                    next += 1;
                    stack.push(w);
                    on_stack.insert(w);
                    work.push((w, successors(w), 0));
                } else if on_stack.contains(&w) {
                    let l = low[&node].min(index[&w]);
                    low.insert(node, l);
                }
                continue;
            }
            work.pop();
            if let Some((parent, _, _)) = work.last() {
                let l = low[parent].min(low[&node]);
                low.insert(*parent, l);
            }
            if low[&node] == index[&node] {
                let mut component = BTreeSet::new();
                while let Some(member) = stack.pop() {
                    on_stack.remove(&member);
                    component.insert(member);
                    if member == node {
                        break;
                    }
                }
                components.push(component);
            }
        }
    }
    components
}

/// A shortest cycle through the component's smallest transaction (breadth-first search).
fn cycle_in(graph: &Graph, component: &BTreeSet<u64>) -> Option<Anomaly> {
    let start = *component.iter().next()?;
    let mut parent: HashMap<u64, (u64, Edge)> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(node) = queue.pop_front() {
        for (&next, &edge) in graph.get(&node).into_iter().flatten() {
            if !component.contains(&next) {
                continue;
            }
            if next == start {
                let (mut txns, mut edges) = (vec![node], vec![edge]);
                let mut at = node;
                while at != start {
                    let (prev, prev_edge) = parent[&at];
                    txns.push(prev);
                    edges.push(prev_edge);
                    at = prev;
                }
                txns.reverse();
                edges.reverse();
                // Virtual real-time nodes are not transactions: keep the path's real ones,
                // each with the edge it leaves by (into the chain: real time).
                let (txns, edges): (Vec<u64>, Vec<Edge>) = txns
                    .into_iter()
                    .zip(edges)
                    .filter(|(t, _)| *t < VIRTUAL)
                    .unzip();
                return Some(Anomaly {
                    kind: AnomalyKind::Cycle(edges),
                    txns,
                });
            }
            if next != start && !parent.contains_key(&next) {
                parent.insert(next, (node, edge));
                queue.push_back(next);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests;
