//! SQL on a real 3-node cluster in this process (gRPC between nodes): DDL creates a
//! replicated table with its own tablet, transactions move money between accounts on
//! different nodes' sessions, and every node sees the same catalog and data.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use meridian_tests::servers::ServerCluster;
use meridian_tests::{init_tracing, wait_for};
use sql::Value;

async fn total(session: &mut sql::Session) -> i64 {
    let results = session
        .execute("SELECT SUM(balance) FROM accounts", &[])
        .await
        .unwrap();
    match results[0].rows[0][0] {
        Value::Int64(v) => v,
        ref other => panic!("SUM returned {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bank_schema_and_transfers_work_on_every_node() {
    init_tracing();
    let cluster = ServerCluster::start(3).await.unwrap();
    let mut first = cluster.session(0).unwrap();
    first
        .execute(
            "CREATE TABLE accounts (id INT64 PRIMARY KEY, owner STRING NOT NULL, balance INT64 NOT NULL)",
            &[],
        )
        .await
        .unwrap();
    for id in 0..10 {
        first
            .execute(
                "INSERT INTO accounts (id, owner, balance) VALUES ($1, $2, 100)",
                &[Value::Int64(id), Value::String(format!("owner{id}"))],
            )
            .await
            .unwrap();
    }
    assert_eq!(total(&mut first).await, 1000);

    // Another node sees the table (the catalog is in the database) and moves money in an
    // explicit transaction.
    let mut second = cluster.session(1).unwrap();
    let results = second
        .execute(
            "BEGIN; UPDATE accounts SET balance = balance - 30 WHERE id = 1; \
             UPDATE accounts SET balance = balance + 30 WHERE id = 2; COMMIT",
            &[],
        )
        .await
        .unwrap();
    assert!(
        results.last().unwrap().commit_ts.is_some(),
        "COMMIT reports its timestamp"
    );
    let mut third = cluster.session(2).unwrap();
    let balances = third
        .execute(
            "SELECT id, balance FROM accounts WHERE id = 1 OR id = 2 ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        balances[0].rows,
        vec![
            vec![Value::Int64(1), Value::Int64(70)],
            vec![Value::Int64(2), Value::Int64(130)]
        ]
    );
    assert_eq!(total(&mut third).await, 1000);

    // The table has a tablet of its own, replicated on three nodes, with a leader.
    let running = cluster.servers[0].running().unwrap();
    let ranges = wait_for(
        "the table's tablet in placement",
        Duration::from_secs(10),
        || async {
            let ranges = running.directory.ranges_info();
            (ranges.len() == 2).then_some(ranges)
        },
    )
    .await
    .unwrap();
    assert_eq!(ranges[1].replicas.len(), 3);
    cluster.shutdown().await;
}
