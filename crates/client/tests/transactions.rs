//! The client's retry and error rules against a fake server: aborted transactions retry with
//! their first attempt's priority, commits with unknown outcome never retry, retries stop in
//! time, and error codes are parsed.
#![allow(clippy::unwrap_used)]

mod fake;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use client::{Client, ClientOptions, Code, Error, RetryPolicy, TimestampBound, Value, params};
use fake::FakeServer;

fn quick_retries() -> ClientOptions {
    ClientOptions {
        retry: RetryPolicy {
            max_elapsed: Duration::from_secs(5),
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(20),
        },
        ..ClientOptions::default()
    }
}

async fn connect(server: &FakeServer, options: ClientOptions) -> Client {
    Client::connect_with([server.url()], options).await.unwrap()
}

/// Runs a transfer-like transaction counting how often its body ran.
async fn counted_txn(
    client: &Client,
    runs: &Arc<AtomicU32>,
) -> Result<client::Committed<i64>, Error> {
    client
        .read_write(|tx| {
            let runs = runs.clone();
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                let row = tx
                    .query_one("SELECT v FROM t WHERE id = $1", &params![5])
                    .await?;
                let v = row.get(0).and_then(Value::as_i64).unwrap_or(0);
                tx.update("t", &["id"], &["id", "v"], params![5, v + 1].to_vec())
                    .await?;
                Ok(v)
            }
        })
        .await
}

#[tokio::test]
async fn aborted_transactions_retry_with_the_first_attempts_priority() {
    let server = FakeServer::start().await;
    server.with(|s| s.abort_commits = 2);
    let client = connect(&server, quick_retries()).await;
    let runs = Arc::new(AtomicU32::new(0));

    // Spawned, to check that transactions are Send.
    let task = {
        let (client, runs) = (client.clone(), runs.clone());
        tokio::spawn(async move { counted_txn(&client, &runs).await })
    };
    let done = task.await.unwrap().unwrap();

    assert_eq!(done.value, 5);
    assert_eq!(done.commit_ts, 4242);
    assert_eq!(done.attempts, 3);
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    server.with(|s| {
        let first = s.priorities_returned[0];
        let asked: Vec<_> = s.begins.iter().map(|b| b.1).collect();
        assert_eq!(asked, [None, Some(first), Some(first)]);
        assert!(s.begins.iter().all(|b| !b.0), "read-write begins");
        assert_eq!(s.commits_received, 3);
        assert_eq!(s.commits_applied, 1);
    });
}

#[tokio::test]
async fn an_abort_during_a_statement_retries_even_if_the_closure_swallows_it() {
    let server = FakeServer::start().await;
    server.with(|s| s.abort_executes = 1);
    let client = connect(&server, quick_retries()).await;
    let runs = Arc::new(AtomicU32::new(0));

    let done = client
        .read_write(|tx| {
            let runs = runs.clone();
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                let _ignored = tx.sql("UPDATE t SET v = 1", &[]).await;
                Ok(())
            }
        })
        .await
        .unwrap();

    assert_eq!(done.attempts, 2);
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    server.with(|s| {
        assert_eq!(s.commits_received, 1, "the aborted attempt must not commit");
        assert_eq!(s.begins[1].1, Some(s.priorities_returned[0]));
    });
}

#[tokio::test]
async fn an_indeterminate_commit_is_not_retried() {
    let server = FakeServer::start().await;
    server.with(|s| s.indeterminate_commits = 1);
    let client = connect(&server, quick_retries()).await;
    let runs = Arc::new(AtomicU32::new(0));

    let err = counted_txn(&client, &runs).await.unwrap_err();

    assert_eq!(err.code(), Code::Indeterminate, "{err}");
    assert!(!err.is_retryable());
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the body ran exactly once");
    server.with(|s| {
        assert_eq!(s.commits_received, 1);
        assert_eq!(s.commits_applied, 1, "applied once, not twice");
        assert_eq!(s.begins.len(), 1);
    });
}

#[tokio::test]
async fn a_lost_commit_reply_is_indeterminate_and_not_retried() {
    let server = FakeServer::start().await;
    server.with(|s| s.commit_delay = Some(Duration::from_secs(2)));
    let options = ClientOptions {
        request_timeout: Duration::from_millis(300),
        ..quick_retries()
    };
    let client = connect(&server, options).await;
    let runs = Arc::new(AtomicU32::new(0));

    let err = counted_txn(&client, &runs).await.unwrap_err();

    assert_eq!(err.code(), Code::Indeterminate, "{err}");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    server.with(|s| {
        assert_eq!(s.commits_received, 1);
        assert_eq!(s.commits_applied, 1);
    });
}

#[tokio::test]
async fn retries_stop_when_their_time_is_spent() {
    let server = FakeServer::start().await;
    server.with(|s| s.always_abort = true);
    let options = ClientOptions {
        retry: RetryPolicy {
            max_elapsed: Duration::from_millis(300),
            initial_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(50),
        },
        ..ClientOptions::default()
    };
    let client = connect(&server, options).await;
    let runs = Arc::new(AtomicU32::new(0));
    let started = Instant::now();

    let err = counted_txn(&client, &runs).await.unwrap_err();

    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(err, Error::RetriesExhausted { .. }), "{err}");
    assert_eq!(err.code(), Code::Aborted);
    let runs = runs.load(Ordering::SeqCst);
    assert!(runs > 1, "retried {runs} times");
    server.with(|s| {
        assert_eq!(s.commits_applied, 0);
        let first = s.priorities_returned[0];
        assert!(s.begins.iter().skip(1).all(|b| b.1 == Some(first)));
    });
}

#[tokio::test]
async fn a_closure_error_rolls_back_without_retry() {
    let server = FakeServer::start().await;
    let client = connect(&server, quick_retries()).await;
    let runs = Arc::new(AtomicU32::new(0));

    let err = client
        .read_write(|tx| {
            let runs = runs.clone();
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                tx.insert("t", &["id", "v"], params![1, 2].to_vec()).await?;
                Err::<(), _>(Error::user("insufficient funds"))
            }
        })
        .await
        .unwrap_err();

    assert_eq!(err.code(), Code::Client);
    assert!(err.to_string().contains("insufficient funds"));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    server.with(|s| {
        assert_eq!(s.commits_received, 0);
        assert_eq!(s.rollbacks, 1);
    });
}

#[tokio::test]
async fn mutations_send_parameterized_sql() {
    let server = FakeServer::start().await;
    let client = connect(&server, quick_retries()).await;
    client
        .read_write(|tx| async move {
            tx.insert("t", &["id", "v"], params![1, "a"].to_vec())
                .await?;
            tx.upsert("t", &["id"], &["id", "v"], params![1, "b"].to_vec())
                .await?;
            tx.delete("t", &["id"], params![1].to_vec()).await?;
            Ok(())
        })
        .await
        .unwrap();
    server.with(|s| {
        let sql: Vec<_> = s.executes.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            sql,
            [
                "INSERT INTO t (id, v) VALUES ($1, $2)",
                "INSERT INTO t (id, v) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET v = $2",
                "DELETE FROM t WHERE id = $1",
            ]
        );
        assert_eq!(s.executes[0].1.len(), 2);
    });
}

#[tokio::test]
async fn error_codes_come_from_metadata_with_a_grpc_fallback() {
    let server = FakeServer::start().await;
    let client = connect(&server, quick_retries()).await;

    let err = client.sql("SELEC syntax error", &[]).await.unwrap_err();
    assert_eq!(err.code(), Code::Syntax);
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("syntax error at"), "{err}");

    let err = client.sql("SELECT * FROM no_table", &[]).await.unwrap_err();
    assert_eq!(err.code(), Code::UndefinedTable);

    // An unknown stable code falls back on the gRPC code (Aborted here).
    let err = client.sql("weird_code", &[]).await.unwrap_err();
    assert_eq!(err.code(), Code::Aborted);
}

#[tokio::test]
async fn a_forgotten_session_is_replaced() {
    let server = FakeServer::start().await;
    let client = connect(&server, quick_retries()).await;
    client.sql("INSERT INTO t VALUES (1)", &[]).await.unwrap();

    // The node restarts and forgets the pooled session: autocommit SQL opens a new one.
    server.with(|s| s.forget_sessions = 1);
    let rs = client.sql("SELECT $1", &params![3]).await.unwrap();
    assert_eq!(rs.rows[0].get(0), Some(&Value::Int64(3)));

    // And a transaction whose session vanishes runs again on a new session.
    server.with(|s| s.forget_sessions = 1);
    let runs = Arc::new(AtomicU32::new(0));
    let done = counted_txn(&client, &runs).await.unwrap();
    assert_eq!(done.attempts, 2);
}

#[tokio::test]
async fn reads_pass_their_timestamp_bound() {
    let server = FakeServer::start().await;
    let client = connect(&server, quick_retries()).await;

    let rs = client
        .read(
            "SELECT v FROM t",
            &[],
            TimestampBound::ExactStaleness(Duration::from_secs(10)),
        )
        .await
        .unwrap();
    assert_eq!(rs.read_ts, Some(7));

    let sum = client
        .read_only(TimestampBound::MinReadTimestamp(55), |tx| async move {
            let a = tx.query_one("SELECT $1", &params![2]).await?;
            let b = tx.query_one("SELECT $1", &params![3]).await?;
            Ok(a.get(0).and_then(Value::as_i64).unwrap_or(0)
                + b.get(0).and_then(Value::as_i64).unwrap_or(0))
        })
        .await
        .unwrap();
    assert_eq!(sum, 5);

    server.with(|s| {
        use proto::v1::timestamp_bound::Bound;
        let bounds: Vec<_> = s
            .begins
            .iter()
            .map(|b| (b.0, b.2.as_ref().and_then(|t| t.bound)))
            .collect();
        assert_eq!(
            bounds,
            [
                (true, Some(Bound::ExactStalenessUs(10_000_000))),
                (true, Some(Bound::MinReadTimestamp(55)))
            ]
        );
    });
}

#[tokio::test]
async fn explicit_sessions_track_their_transaction() {
    let server = FakeServer::start().await;
    let client = connect(&server, quick_retries()).await;
    let mut session = client.session().await.unwrap();
    let priority = session.begin().await.unwrap();
    assert!(session.in_transaction());
    session.sql("INSERT INTO t VALUES (1)", &[]).await.unwrap();
    assert_eq!(session.commit().await.unwrap(), Some(4242));
    assert!(!session.in_transaction());
    session.begin_retry(priority).await.unwrap();
    session.rollback().await.unwrap();
    session.close().await.unwrap();
    server.with(|s| {
        assert_eq!(s.begins[1].1, Some(s.priorities_returned[0]));
        assert_eq!(s.closes, 1);
    });
}

#[tokio::test]
async fn autocommit_refuses_to_leave_a_transaction_open() {
    let server = FakeServer::start().await;
    let client = connect(&server, quick_retries()).await;
    let err = client.sql("BEGIN", &[]).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidTransactionState);
    server.with(|s| assert_eq!(s.rollbacks, 1));
}

#[tokio::test]
async fn the_client_moves_past_unreachable_nodes() {
    let server = FakeServer::start().await;
    let dead = fake::dead_address().await;
    let client = Client::connect(&format!("{dead},{}", server.addr))
        .await
        .unwrap();
    assert_eq!(client.current_url(), format!("{}/", server.url()));
    client.sql("SELECT 1", &[]).await.unwrap();

    let err = Client::connect(&dead).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.is_retryable());
    assert!(err.to_string().contains("cannot connect"), "{err}");
}

#[tokio::test]
async fn statements_fail_over_when_the_node_goes_away() {
    let first = FakeServer::start().await;
    let second = FakeServer::start().await;
    let client = Client::connect_with([first.url(), second.url()], quick_retries())
        .await
        .unwrap();
    client.sql("INSERT INTO t VALUES (1)", &[]).await.unwrap();
    first.stop().await;

    client.sql("INSERT INTO t VALUES (2)", &[]).await.unwrap();
    assert_eq!(client.current_url(), format!("{}/", second.url()));
    let runs = Arc::new(AtomicU32::new(0));
    counted_txn(&client, &runs).await.unwrap();
    second.with(|s| assert_eq!(s.commits_applied, 2));
}
