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
    let committed: Vec<&Txn> = history
        .iter()
        .filter(|t| t.outcome == Outcome::Committed)
        .collect();
    for a in &committed {
        for b in &committed {
            if a.end < b.start {
                add_edge(&mut graph, a.id, b.id, Edge::RealTime);
            }
        }
    }
    graph
}

/// One cycle per strongly connected component with more than one transaction (Tarjan).
fn cycles(graph: &Graph) -> Vec<Anomaly> {
    let nodes: BTreeSet<u64> = graph
        .keys()
        .copied()
        .chain(graph.values().flat_map(|m| m.keys().copied()))
        .collect();
    let mut tarjan = Tarjan {
        graph,
        index: HashMap::new(),
        low: HashMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        components: Vec::new(),
    };
    for node in &nodes {
        if !tarjan.index.contains_key(node) {
            tarjan.visit(*node);
        }
    }
    tarjan
        .components
        .into_iter()
        .filter(|c| c.len() > 1)
        .filter_map(|c| cycle_in(graph, &c))
        .collect()
}

struct Tarjan<'g> {
    graph: &'g Graph,
    index: HashMap<u64, usize>,
    low: HashMap<u64, usize>,
    stack: Vec<u64>,
    on_stack: BTreeSet<u64>,
    next: usize,
    components: Vec<BTreeSet<u64>>,
}

impl Tarjan<'_> {
    /// Recursive Tarjan; depth is bounded by the number of transactions in a test history.
    fn visit(&mut self, node: u64) {
        self.index.insert(node, self.next);
        self.low.insert(node, self.next);
        self.next += 1;
        self.stack.push(node);
        self.on_stack.insert(node);
        let successors: Vec<u64> = self
            .graph
            .get(&node)
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default();
        for next in successors {
            if !self.index.contains_key(&next) {
                self.visit(next);
                let low = self.low[&node].min(self.low[&next]);
                self.low.insert(node, low);
            } else if self.on_stack.contains(&next) {
                let low = self.low[&node].min(self.index[&next]);
                self.low.insert(node, low);
            }
        }
        if self.low[&node] == self.index[&node] {
            let mut component = BTreeSet::new();
            while let Some(member) = self.stack.pop() {
                self.on_stack.remove(&member);
                component.insert(member);
                if member == node {
                    break;
                }
            }
            self.components.push(component);
        }
    }
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
