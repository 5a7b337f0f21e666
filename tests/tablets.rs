//! Tablets as Raft groups on an in-process 3-node cluster: replication, leader failure,
//! partitions, snapshots, restarts, timestamps, membership, safe time, many groups.

#![allow(clippy::unwrap_used)] // a test fails by panicking

use std::collections::BTreeSet;
use std::time::Duration;

use meridian_tests::cluster::{Cluster, PATIENCE, address, fast_node_config, put};
use meridian_tests::{init_tracing, seed, wait_for};
use tablet::{NodeId, TabletId};
use truetime::Timestamp;

const T1: TabletId = TabletId(1);

async fn three_nodes(test: &str) -> Cluster {
    init_tracing();
    let cluster = Cluster::start(3, seed(test), fast_node_config())
        .await
        .unwrap();
    cluster.create_tablet(T1, &cluster.ids()).await.unwrap();
    cluster
}

fn key(i: usize) -> Vec<u8> {
    format!("k{i:04}").into_bytes()
}

/// Writes `range` keys one by one; returns the last acknowledged timestamp.
async fn write_keys(cluster: &Cluster, range: std::ops::Range<usize>) -> Timestamp {
    let mut last = Timestamp::ZERO;
    for i in range {
        let (ts, _) = cluster
            .write(T1, vec![put(key(i), format!("v{i}"))])
            .await
            .unwrap();
        assert!(ts > last, "timestamps of sequential writes increase");
        last = ts;
    }
    last
}

/// Asserts every running replica holds exactly keys `0..n` at `ts`.
async fn assert_keys_everywhere(cluster: &Cluster, n: usize, ts: Timestamp) {
    for (node, rows) in cluster.rows_everywhere(T1, ts).await.unwrap() {
        let keys: Vec<Vec<u8>> = rows.into_iter().map(|(k, _)| k).collect();
        let expected: Vec<Vec<u8>> = (0..n).map(key).collect();
        assert_eq!(
            keys.len(),
            expected.len(),
            "{node} has {} of {n} rows",
            keys.len()
        );
        assert_eq!(keys, expected, "{node} holds the acknowledged rows");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_replicate_and_are_readable_at_their_timestamps_on_every_replica() {
    let cluster = three_nodes("writes_replicate").await;
    let mut acknowledged = Vec::new();
    for i in 0..10 {
        let (ts, _) = cluster
            .write(T1, vec![put(b"x".to_vec(), format!("v{i}"))])
            .await
            .unwrap();
        acknowledged.push(ts);
    }
    for replica in cluster.replicas(T1) {
        for (i, ts) in acknowledged.iter().enumerate() {
            let value = replica.read(b"x", *ts, PATIENCE).await.unwrap();
            assert_eq!(
                value,
                Some(format!("v{i}").into_bytes()),
                "{} at {ts}",
                replica.metrics().node
            );
        }
        // Just below the first write, the row does not exist yet.
        assert_eq!(
            replica
                .read(b"x", acknowledged[0].prev(), PATIENCE)
                .await
                .unwrap(),
            None
        );
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_elects_another_and_loses_no_acknowledged_write() {
    let mut cluster = three_nodes("kill_leader").await;
    write_keys(&cluster, 0..20).await;
    let old = cluster.wait_leader(T1).await.unwrap();
    cluster.kill(old).await;
    let new = cluster.wait_leader(T1).await.unwrap();
    assert_ne!(new, old);
    let last = write_keys(&cluster, 20..40).await;
    assert_keys_everywhere(&cluster, 40, last).await;
    // The old leader comes back and catches up.
    cluster.restart(old).await.unwrap();
    assert_keys_everywhere(&cluster, 40, last).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_old_leader_cannot_get_a_write_acknowledged() {
    let cluster = three_nodes("partitioned_leader").await;
    let before = write_keys(&cluster, 0..5).await;
    let old = cluster.wait_leader(T1).await.unwrap();
    let majority: Vec<NodeId> = cluster.ids().into_iter().filter(|n| *n != old).collect();
    cluster.network.partition(&[&[old], &majority]);

    // The minority side cannot commit: the write is never acknowledged while cut off.
    let stranded = cluster.node(old).tablet(T1).unwrap();
    let attempt = tokio::time::timeout(
        Duration::from_secs(3),
        stranded.write(vec![put(b"lost".to_vec(), b"x".to_vec())]),
    )
    .await;
    assert!(
        !matches!(attempt, Ok(Ok(_))),
        "a minority acknowledged a write: {attempt:?}"
    );

    // The majority elects a leader and keeps serving.
    let new = wait_for("a leader in the majority", PATIENCE, || async {
        majority
            .iter()
            .copied()
            .find(|n| cluster.node(*n).tablet(T1).unwrap().is_leader())
    })
    .await
    .unwrap();
    let (after, by) = cluster
        .write(T1, vec![put(key(5), b"v5".to_vec())])
        .await
        .unwrap();
    assert_ne!(by, old);
    assert!(after > before);
    let _ = new;

    // After healing, the old leader's unacknowledged write is nowhere.
    cluster.network.heal();
    let (last, _) = cluster
        .write(T1, vec![put(key(6), b"v6".to_vec())])
        .await
        .unwrap();
    for (node, rows) in cluster.rows_everywhere(T1, last).await.unwrap() {
        assert!(
            rows.iter().all(|(k, _)| k.as_slice() != b"lost"),
            "{node} holds an unacknowledged write"
        );
        assert_eq!(rows.len(), 7, "{node}");
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_was_down_catches_up_by_snapshot_after_the_log_was_purged() {
    init_tracing();
    let mut small_log = fast_node_config();
    small_log.raft.snapshot_after_entries = 20;
    small_log.raft.log_entries_kept_after_snapshot = 0;
    small_log.snapshot_chunk_bytes = 512; // several chunks per snapshot
    let mut cluster = Cluster::start(3, seed("snapshot_catch_up"), small_log)
        .await
        .unwrap();
    cluster.create_tablet(T1, &cluster.ids()).await.unwrap();
    write_keys(&cluster, 0..5).await;
    let leader = cluster.wait_leader(T1).await.unwrap();
    let down = cluster.ids().into_iter().find(|n| *n != leader).unwrap();
    cluster.kill(down).await;

    let last = write_keys(&cluster, 5..60).await;
    let leader = cluster.wait_leader(T1).await.unwrap();
    let leader_tablet = cluster.node(leader).tablet(T1).unwrap();
    leader_tablet.snapshot().await.unwrap();
    wait_for("the leader to purge its log", PATIENCE, || async {
        leader_tablet.log_bounds().0.filter(|purged| *purged > 10)
    })
    .await
    .unwrap();

    cluster.restart(down).await.unwrap();
    let rejoined = cluster.node(down).tablet(T1).unwrap();
    wait_for(
        "the rejoined replica to install a snapshot",
        PATIENCE,
        || async { rejoined.log_bounds().1 },
    )
    .await
    .unwrap();
    assert_keys_everywhere(&cluster, 60, last).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_from_its_directory_rejoins_with_its_data() {
    let mut cluster = three_nodes("restart").await;
    let last = write_keys(&cluster, 0..10).await;
    for id in cluster.ids() {
        cluster.kill(id).await;
    }
    for id in cluster.ids() {
        cluster.restart(id).await.unwrap();
    }
    cluster.wait_leader(T1).await.unwrap();
    assert_keys_everywhere(&cluster, 10, last).await;
    let last = write_keys(&cluster, 10..15).await;
    assert_keys_everywhere(&cluster, 15, last).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_raft_group_stops_by_itself_is_reopened_and_catches_up() {
    let cluster = three_nodes("supervisor").await;
    write_keys(&cluster, 0..5).await;
    // The leader's group stops as if openraft had hit a fatal error; the replica stays open.
    let leader = cluster.wait_leader(T1).await.unwrap();
    let halted = cluster.node(leader).tablet(T1).unwrap();
    halted.halt_raft().await;
    let last = write_keys(&cluster, 5..20).await;
    wait_for("the halted replica to be reopened", PATIENCE, || async {
        let now = cluster.node(leader).tablet(T1).ok()?;
        (!std::sync::Arc::ptr_eq(&now, &halted)).then_some(())
    })
    .await
    .unwrap();
    // Reopened from storage, it rejoined its group and caught up.
    assert_keys_everywhere(&cluster, 20, last).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_timestamps_strictly_increase_across_forced_leader_changes() {
    let cluster = three_nodes("leader_changes").await;
    let mut acknowledged: Vec<Timestamp> = Vec::new();
    let mut leaders = BTreeSet::new();
    for change in 0..20 {
        for i in 0..3 {
            let (ts, leader) = cluster
                .write(T1, vec![put(key(change * 3 + i), b"v".to_vec())])
                .await
                .unwrap();
            leaders.insert(leader);
            acknowledged.push(ts);
        }
        // Force a leader change: a follower campaigns.
        let leader = cluster.wait_leader(T1).await.unwrap();
        let term = cluster.node(leader).tablet(T1).unwrap().metrics().term;
        let follower = cluster.ids().into_iter().find(|n| *n != leader).unwrap();
        cluster
            .node(follower)
            .tablet(T1)
            .unwrap()
            .campaign()
            .await
            .unwrap();
        wait_for("a new term", PATIENCE, || async {
            cluster
                .replicas(T1)
                .iter()
                .map(|t| t.metrics())
                .find(|m| m.term > term && m.leader == Some(m.node))
        })
        .await
        .unwrap();
    }
    assert!(
        acknowledged.windows(2).all(|w| w[0] < w[1]),
        "acknowledged timestamps increase: {acknowledged:?}"
    );
    assert!(
        leaders.len() >= 2,
        "leadership moved between nodes: {leaders:?}"
    );
    for replica in cluster.replicas(T1) {
        // No command was ever proposed at or below its predecessors' timestamps.
        assert_eq!(
            replica.metrics().stale_rejections,
            0,
            "{}",
            replica.metrics().node
        );
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_add_and_remove_under_writes_loses_nothing() {
    init_tracing();
    let cluster = Cluster::start(4, seed("membership"), fast_node_config())
        .await
        .unwrap();
    let (n1, n2, n3, n4) = (NodeId(1), NodeId(2), NodeId(3), NodeId(4));
    cluster.create_tablet(T1, &[n1, n2, n3]).await.unwrap();
    let writer = {
        let cluster = &cluster;
        async move { write_keys(cluster, 0..60).await }
    };
    let changes = async {
        cluster.node(n4).create_tablet(T1).await.unwrap();
        let leader = cluster.wait_leader(T1).await.unwrap();
        cluster
            .node(leader)
            .tablet(T1)
            .unwrap()
            .add_replica(n4, &address(n4))
            .await
            .unwrap();
        // Remove a follower that is not the new replica.
        let leader = cluster.wait_leader(T1).await.unwrap();
        let victim = [n1, n2, n3].into_iter().find(|n| *n != leader).unwrap();
        cluster
            .node(leader)
            .tablet(T1)
            .unwrap()
            .remove_replica(victim)
            .await
            .unwrap();
        victim
    };
    let (last, victim) = tokio::join!(writer, changes);
    let leader = cluster.wait_leader(T1).await.unwrap();
    let voters = cluster.node(leader).tablet(T1).unwrap().metrics().voters;
    assert!(
        voters.contains(&n4) && !voters.contains(&victim),
        "{voters:?}"
    );
    cluster.node(victim).destroy_tablet(T1).await.unwrap();
    assert_keys_everywhere(&cluster, 60, last).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_followers_safe_time_advances() {
    let cluster = three_nodes("idle_safe_time").await;
    write_keys(&cluster, 0..1).await;
    let leader = cluster.wait_leader(T1).await.unwrap();
    let start = truetime::system_wall_time();
    for follower in cluster.ids().into_iter().filter(|n| *n != leader) {
        let replica = cluster.node(follower).tablet(T1).unwrap();
        // With no writes at all, closed timestamps carry the follower past the present.
        let safe = wait_for(
            "an idle follower's safe time to pass the start",
            PATIENCE,
            || async { Some(replica.safe_ts()).filter(|s| *s > start) },
        )
        .await
        .unwrap();
        assert!(
            replica.read(b"k0000", safe, Duration::ZERO).await.is_ok(),
            "served locally at safe time"
        );
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_tablets_on_one_cluster_make_progress_together() {
    init_tracing();
    let cluster = Cluster::start(3, seed("twenty_tablets"), fast_node_config())
        .await
        .unwrap();
    let tablets: Vec<TabletId> = (1..=20).map(TabletId).collect();
    for (i, tablet) in tablets.iter().enumerate() {
        // Rotate the bootstrapping node so leaders spread.
        let mut members = cluster.ids();
        members.rotate_left(i % 3);
        cluster.create_tablet(*tablet, &members).await.unwrap();
    }
    let writes = tablets.iter().map(|tablet| {
        let cluster = &cluster;
        async move {
            let mut last = Timestamp::ZERO;
            for i in 0..5 {
                last = cluster
                    .write(*tablet, vec![put(key(i), b"v".to_vec())])
                    .await
                    .unwrap()
                    .0;
            }
            (*tablet, last)
        }
    });
    for (tablet, last) in futures_util::future::join_all(writes).await {
        for (node, rows) in cluster.rows_everywhere(tablet, last).await.unwrap() {
            assert_eq!(rows.len(), 5, "{tablet} on {node}");
        }
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_survive_a_slow_lossy_network() {
    let cluster = three_nodes("lossy_network").await;
    cluster.network.set_delay(Duration::from_millis(2));
    cluster.network.set_loss(0.05);
    let last = write_keys(&cluster, 0..20).await;
    cluster.network.set_loss(0.0);
    assert_keys_everywhere(&cluster, 20, last).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_transaction_holds_safe_time_on_every_replica_until_decided() {
    let cluster = three_nodes("prepared_safe_time").await;
    let leader = cluster
        .node(cluster.wait_leader(T1).await.unwrap())
        .tablet(T1)
        .unwrap();
    let txn = locks::TxnId(7);
    let prepare_ts = leader
        .prepare(None, txn, T1, vec![put(b"acct".to_vec(), b"50".to_vec())])
        .await
        .unwrap();
    // Closed timestamps keep coming, but no replica's t_safe passes the prepare timestamp.
    for replica in cluster.replicas(T1) {
        wait_for("the prepare to reach the replica", PATIENCE, || async {
            Some(()).filter(|_| replica.metrics().prepared == 1)
        })
        .await
        .unwrap();
        let err = replica
            .read(b"acct", prepare_ts, Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(
            matches!(err, tablet::TabletError::NotYetSafe { .. }),
            "{err}"
        );
    }
    let commit_ts = prepare_ts.saturating_add(Duration::from_millis(1));
    let outcome = leader.decide(txn, Some(commit_ts)).await.unwrap();
    assert_eq!(outcome, tablet::TabletResponse::Applied);
    let again = leader.decide(txn, Some(commit_ts)).await.unwrap();
    assert_eq!(
        again,
        tablet::TabletResponse::AlreadyDecided {
            commit_ts: Some(commit_ts)
        }
    );
    for replica in cluster.replicas(T1) {
        assert_eq!(
            replica.read(b"acct", commit_ts, PATIENCE).await.unwrap(),
            Some(b"50".to_vec())
        );
        assert_eq!(
            replica
                .read(b"acct", commit_ts.prev(), PATIENCE)
                .await
                .unwrap(),
            None
        );
    }
    // Later writes are allocated above the coordinator's commit timestamp.
    let (after, _) = cluster
        .write(T1, vec![put(b"other".to_vec(), b"x".to_vec())])
        .await
        .unwrap();
    assert!(after > commit_ts);
    cluster.shutdown().await;
}
