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

fn int(v: &Value) -> i64 {
    match v {
        Value::Int64(v) => *v,
        other => panic!("expected an INT64, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_split_table_keeps_its_rows_history_and_transactions() {
    init_tracing();
    let cluster = ServerCluster::start(3).await.unwrap();
    let mut first = cluster.session(0).unwrap();
    first
        .execute(
            "CREATE TABLE accounts (id INT64 PRIMARY KEY, balance INT64 NOT NULL)",
            &[],
        )
        .await
        .unwrap();
    let values: Vec<String> = (0..90).map(|id| format!("({id}, 100)")).collect();
    let inserted = first
        .execute(
            &format!("INSERT INTO accounts VALUES {}", values.join(", ")),
            &[],
        )
        .await
        .unwrap();
    let before_split = inserted[0].commit_ts.unwrap();

    first
        .execute("ALTER TABLE accounts SPLIT AT VALUES (30), (60)", &[])
        .await
        .unwrap();
    // At once, before the other nodes' placement caches refresh: a transfer across two of
    // the new tablets commits with two-phase commit, whichever node coordinates it.
    first
        .execute(
            "BEGIN; UPDATE accounts SET balance = balance - 40 WHERE id = 10; \
             UPDATE accounts SET balance = balance + 40 WHERE id = 70; COMMIT",
            &[],
        )
        .await
        .unwrap();
    let moved = first
        .execute(
            "SELECT id, balance FROM accounts WHERE id = 10 OR id = 70 ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        moved[0].rows,
        vec![
            vec![Value::Int64(10), Value::Int64(60)],
            vec![Value::Int64(70), Value::Int64(140)]
        ]
    );

    let running = cluster.servers[0].running().unwrap();
    let ranges = running.directory.ranges_info();
    assert_eq!(ranges.len(), 4, "meta plus three tablets: {ranges:?}");
    let tablets: std::collections::BTreeSet<_> = ranges.iter().map(|r| r.tablet).collect();
    assert_eq!(tablets.len(), 4, "each range its own tablet");

    // Every node reads every row, through every tablet, and scans across the splits.
    for node in 0..3 {
        let mut session = cluster.session(node).unwrap();
        let all = session
            .execute("SELECT COUNT(*), SUM(balance) FROM accounts", &[])
            .await
            .unwrap();
        assert_eq!(all[0].rows[0], vec![Value::Int64(90), Value::Int64(9000)]);
        let point = session
            .execute("SELECT balance FROM accounts WHERE id = 75", &[])
            .await
            .unwrap();
        assert_eq!(point[0].rows, vec![vec![Value::Int64(100)]]);
    }

    // History moved with the rows: a read at a timestamp before the split and the
    // transfer sees the original balances on the new tablets.
    let mut stale = cluster.session(2).unwrap();
    stale
        .execute(
            &format!(
                "SET READ_ONLY_STALENESS = 'READ_TIMESTAMP {}'",
                before_split.as_nanos()
            ),
            &[],
        )
        .await
        .unwrap();
    let old = stale
        .execute("SELECT balance FROM accounts WHERE id = 70", &[])
        .await
        .unwrap();
    assert_eq!(int(&old[0].rows[0][0]), 100);
    let total = stale
        .execute("SELECT SUM(balance) FROM accounts", &[])
        .await
        .unwrap();
    assert_eq!(int(&total[0].rows[0][0]), 9000);
    cluster.shutdown().await;
}
