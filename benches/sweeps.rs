//! The sweeps of docs/BENCHMARKS.md on an in-process 3-node cluster (each node with its own
//! RocksDB and fsync'd Raft log; test clocks on the system time):
//!
//! - read-write commit latency against ε (0, 0.5, 1, 4, 7 ms): commit-wait is about 2ε;
//! - two-phase commit latency against the number of participants (1, 2, 5, 10 tablets);
//! - snapshot reads at a follower against reads at the leader;
//! - throughput of read-only against read-write transactions with 8 concurrent clients.
//!
//! `source tools/env.sh && cargo bench --workspace --bench sweeps`

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures_util::future::join_all;
use meridian_tests::cluster::fast_node_config;
use meridian_tests::txn_cluster::TxnCluster;
use tablet::{NodeId, TabletId};
use tokio::runtime::Runtime;
use txn::{ReadBound, ReplicaChoice, TxnClient, TxnConfig};

const TABLETS: u32 = 10;

fn key(account: u32) -> Vec<u8> {
    format!("acct/{account:03}").into_bytes()
}

/// Ten tablets, the i-th holding accounts 100·i ..= 100·i + 99.
fn splits() -> Vec<(Vec<u8>, TabletId)> {
    let mut splits = vec![(b"".to_vec(), TabletId(1))];
    for i in 1..TABLETS {
        splits.push((key(i * 100), TabletId(u64::from(i) + 1)));
    }
    splits
}

/// A read-modify-write of one account on each of `tablets` tablets (offset by `lane` so
/// concurrent clients do not conflict).
async fn touch(client: &TxnClient, tablets: u32, lane: u32) {
    client
        .read_write(move |tx| {
            Box::pin(async move {
                for t in 0..tablets {
                    let k = key(t * 100 + lane);
                    let v = tx.read(&k).await?.unwrap_or_default();
                    tx.write(k, v);
                }
                Ok(())
            })
        })
        .await
        .expect("transaction");
}

async fn snapshot(
    client: &TxnClient,
    tablets: u32,
    lane: u32,
    replicas: ReplicaChoice,
    bound: ReadBound,
) {
    let mut snapshot = client.read_only(bound, replicas).expect("read-only");
    for t in 0..tablets {
        black_box(snapshot.read(&key(t * 100 + lane)).await.expect("read"));
    }
}

fn start(runtime: &Runtime) -> TxnCluster {
    let cluster = runtime
        .block_on(TxnCluster::start(
            3,
            11,
            fast_node_config(),
            TxnConfig::default(),
            splits(),
        ))
        .expect("cluster");
    let client = cluster.client(NodeId(1), 1);
    runtime.block_on(async {
        for lane in 0..8 {
            touch(&client, TABLETS, lane).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await; // stale reads see the data
    });
    cluster
}

fn sweeps(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let cluster = start(&runtime);
    let client = cluster.client(NodeId(1), 1 << 40);

    let mut group = c.benchmark_group("epsilon");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3));
    for epsilon_us in [0u64, 500, 1_000, 4_000, 7_000] {
        for id in [NodeId(1), NodeId(2), NodeId(3)] {
            cluster
                .cluster
                .clock(id)
                .set_epsilon(Duration::from_micros(epsilon_us));
        }
        group.bench_with_input(
            BenchmarkId::new("read_write_2pc_two_tablets", epsilon_us),
            &epsilon_us,
            |b, _| b.iter(|| runtime.block_on(touch(&client, 2, 0))),
        );
        group.bench_with_input(
            BenchmarkId::new("read_write_one_tablet", epsilon_us),
            &epsilon_us,
            |b, _| b.iter(|| runtime.block_on(touch(&client, 1, 0))),
        );
    }
    group.finish();
    for id in [NodeId(1), NodeId(2), NodeId(3)] {
        cluster
            .cluster
            .clock(id)
            .set_epsilon(Duration::from_millis(1));
    }

    let mut group = c.benchmark_group("participants");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3));
    for n in [1u32, 2, 5, 10] {
        group.bench_with_input(BenchmarkId::new("read_write", n), &n, |b, &n| {
            b.iter(|| runtime.block_on(touch(&client, n, 0)))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("snapshot_reads");
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(3));
    let stale = ReadBound::ExactStaleness(Duration::from_millis(250));
    for (name, replicas) in [
        ("leader", ReplicaChoice::Leader),
        ("follower", ReplicaChoice::Follower),
    ] {
        group.bench_function(BenchmarkId::new("stale_one_key", name), |b| {
            b.iter(|| runtime.block_on(snapshot(&client, 1, 0, replicas, stale)))
        });
        group.bench_function(BenchmarkId::new("strong_one_key", name), |b| {
            b.iter(|| runtime.block_on(snapshot(&client, 1, 0, replicas, ReadBound::Strong)))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("throughput_8_clients");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(8));
    let clients: Vec<TxnClient> = (0..8)
        .map(|i| cluster.client(NodeId(i % 3 + 1), (i + 2) << 40))
        .collect();
    group.bench_function("read_write_2pc_two_tablets", |b| {
        b.iter(|| {
            runtime.block_on(join_all(
                clients
                    .iter()
                    .zip(0u32..)
                    .map(|(c, lane)| touch(c, 2, lane)),
            ))
        })
    });
    group.bench_function("read_only_strong_two_tablets", |b| {
        b.iter(|| {
            runtime.block_on(join_all(clients.iter().zip(0u32..).map(|(c, lane)| {
                snapshot(c, 2, lane, ReplicaChoice::Any, ReadBound::Strong)
            })))
        })
    });
    group.bench_function("read_only_stale_two_tablets", |b| {
        b.iter(|| {
            runtime.block_on(join_all(
                clients
                    .iter()
                    .zip(0u32..)
                    .map(|(c, lane)| snapshot(c, 2, lane, ReplicaChoice::Any, stale)),
            ))
        })
    });
    group.finish();
    runtime.block_on(cluster.shutdown());
}

criterion_group!(benches, sweeps);
criterion_main!(benches);
