//! Read-only against read-write transaction latency on an in-process 3-node cluster (each
//! node with its own RocksDB, fsync'd Raft log, ε = 1 ms test clocks).
//!
//! `source tools/env.sh && cargo bench --workspace --bench transactions`

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use meridian_tests::cluster::fast_node_config;
use meridian_tests::txn_cluster::TxnCluster;
use tablet::{NodeId, TabletId};
use txn::{ReadBound, ReplicaChoice, TxnClient, TxnConfig};

fn key(account: u32) -> Vec<u8> {
    format!("acct/{account}").into_bytes()
}

async fn transfer(client: &TxnClient, from: u32, to: u32) {
    client
        .read_write(move |tx| {
            Box::pin(async move {
                let a = tx.read(&key(from)).await?.unwrap_or_default();
                let b = tx.read(&key(to)).await?.unwrap_or_default();
                tx.write(key(from), a);
                tx.write(key(to), b);
                Ok(())
            })
        })
        .await
        .expect("transfer");
}

async fn strong_read(client: &TxnClient, replicas: ReplicaChoice, bound: ReadBound) {
    let mut snapshot = client.read_only(bound, replicas).expect("read-only");
    black_box(snapshot.read(&key(1)).await.expect("read"));
    black_box(snapshot.read(&key(6)).await.expect("read"));
}

fn transactions(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let splits = vec![(b"".to_vec(), TabletId(1)), (key(5), TabletId(2))];
    let cluster = runtime
        .block_on(TxnCluster::start(
            3,
            7,
            fast_node_config(),
            TxnConfig::default(),
            splits,
        ))
        .expect("cluster");
    let client = cluster.client(NodeId(1), 1);
    runtime.block_on(async {
        transfer(&client, 1, 6).await;
        tokio::time::sleep(Duration::from_millis(300)).await; // let stale reads see the data
    });
    let mut group = c.benchmark_group("transactions");
    group.sample_size(30);
    group.bench_function("read_write_two_tablets_2pc", |b| {
        b.iter(|| runtime.block_on(transfer(&client, 1, 6)))
    });
    group.bench_function("read_write_one_tablet", |b| {
        b.iter(|| runtime.block_on(transfer(&client, 1, 2)))
    });
    group.bench_function("read_only_strong_two_tablets", |b| {
        b.iter(|| {
            runtime.block_on(strong_read(
                &client,
                ReplicaChoice::Leader,
                ReadBound::Strong,
            ))
        })
    });
    group.bench_function("read_only_stale_follower", |b| {
        let bound = ReadBound::ExactStaleness(Duration::from_millis(250));
        b.iter(|| runtime.block_on(strong_read(&client, ReplicaChoice::Follower, bound)))
    });
    group.bench_function("strong_read_one_tablet_last_ts", |b| {
        b.iter(|| {
            runtime.block_on(async {
                black_box(client.strong_read(&[&key(1), &key(2)]).await.expect("read"))
            })
        })
    });
    group.finish();
    runtime.block_on(cluster.shutdown());
    commit_wait_off(c, &runtime);
}

/// The same 2PC transfer with commit-wait switched off (a test-only switch): the difference
/// shows how much of commit-wait the COMMIT round hides.
fn commit_wait_off(c: &mut Criterion, runtime: &tokio::runtime::Runtime) {
    let splits = vec![(b"".to_vec(), TabletId(1)), (key(5), TabletId(2))];
    let config = TxnConfig {
        commit_wait: false,
        ..TxnConfig::default()
    };
    let cluster = runtime
        .block_on(TxnCluster::start(3, 7, fast_node_config(), config, splits))
        .expect("cluster");
    let client = cluster.client(NodeId(1), 1);
    runtime.block_on(transfer(&client, 1, 6));
    let mut group = c.benchmark_group("transactions");
    group.sample_size(30);
    group.bench_function("read_write_two_tablets_2pc_without_commit_wait", |b| {
        b.iter(|| runtime.block_on(transfer(&client, 1, 6)))
    });
    group.finish();
    runtime.block_on(cluster.shutdown());
}

criterion_group!(benches, transactions);
criterion_main!(benches);
