//! Session behaviour that the sqllogictest corpus cannot express: parameters, timestamps,
//! retries and failure injection, calls to the backend.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use sql::testing::MemoryBackend;
use sql::{ErrorCode, KvError, Session, TxnMode, Value, table_range};

fn session() -> (MemoryBackend, Session) {
    let backend = MemoryBackend::new();
    let session = Session::new(Arc::new(backend.clone()));
    (backend, session)
}

async fn setup(s: &mut Session) {
    s.execute(
        "CREATE TABLE t (k INT64 PRIMARY KEY, v STRING, ts TIMESTAMP)",
        &[],
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn create_table_makes_its_range_a_tablet_before_commit() {
    let (backend, mut s) = session();
    setup(&mut s).await;
    assert_eq!(backend.created_ranges(), vec![table_range(1)]);
    s.execute("CREATE TABLE u (k INT64 PRIMARY KEY)", &[])
        .await
        .unwrap();
    assert_eq!(backend.created_ranges()[1], table_range(2));
}

#[tokio::test]
async fn parameters_bind_by_position() {
    let (_, mut s) = session();
    setup(&mut s).await;
    let params = [Value::Int64(7), Value::String("seven".into())];
    s.execute("INSERT INTO t (k, v) VALUES ($1, $2)", &params)
        .await
        .unwrap();
    let r = s
        .execute("SELECT v FROM t WHERE k = $1", &params)
        .await
        .unwrap();
    assert_eq!(r[0].rows, vec![vec![Value::String("seven".into())]]);
    assert_eq!(r[0].tag, "SELECT 1");
}

#[tokio::test]
async fn results_carry_commit_and_read_timestamps() {
    let (_, mut s) = session();
    setup(&mut s).await;
    let w = s
        .execute(
            "INSERT INTO t VALUES (1, 'a', PENDING_COMMIT_TIMESTAMP())",
            &[],
        )
        .await
        .unwrap();
    let commit_ts = w[0].commit_ts.unwrap();
    assert_eq!(w[0].rows_affected, 1);
    let r = s
        .execute("SELECT ts FROM t WHERE k = 1", &[])
        .await
        .unwrap();
    assert!(r[0].read_ts.unwrap() >= commit_ts);
    let nanos = i64::try_from(commit_ts.as_nanos()).unwrap();
    let expected = Value::Timestamp {
        secs: nanos / 1_000_000_000,
        nanos: (nanos % 1_000_000_000) as u32,
    };
    assert_eq!(r[0].rows, vec![vec![expected]]);
    s.execute("BEGIN", &[]).await.unwrap();
    s.execute("UPDATE t SET v = 'b' WHERE k = 1", &[])
        .await
        .unwrap();
    let c = s.execute("COMMIT", &[]).await.unwrap();
    assert!(c[0].commit_ts.unwrap() > commit_ts);
}

#[tokio::test]
async fn autocommit_retries_retryable_errors_with_the_first_priority() {
    let (backend, mut s) = session();
    setup(&mut s).await;
    backend.fail_next_commits([
        KvError::Aborted("wounded".into()),
        KvError::Unavailable("no leader".into()),
    ]);
    let before = backend.begun_modes().len();
    let r = s
        .execute("INSERT INTO t (k) VALUES (1)", &[])
        .await
        .unwrap();
    assert!(r[0].commit_ts.is_some());
    let modes = &backend.begun_modes()[before..];
    assert_eq!(modes.len(), 3);
    let TxnMode::ReadWrite { priority: None } = modes[0] else {
        panic!("first attempt has no priority: {modes:?}")
    };
    let TxnMode::ReadWrite { priority: Some(p1) } = modes[1] else {
        panic!("retry carries a priority")
    };
    assert_eq!(modes[2], TxnMode::ReadWrite { priority: Some(p1) });
}

#[tokio::test]
async fn indeterminate_commits_are_never_retried() {
    let (backend, mut s) = session();
    setup(&mut s).await;
    backend.fail_next_commits([KvError::Indeterminate("lost reply".into())]);
    let before = backend.begun_modes().len();
    let err = s
        .execute("INSERT INTO t (k) VALUES (1)", &[])
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::Indeterminate);
    assert!(!err.code.is_retryable());
    assert_eq!(backend.begun_modes().len() - before, 1);
}

#[tokio::test]
async fn retries_are_bounded() {
    let (backend, mut s) = session();
    setup(&mut s).await;
    s.set_max_attempts(2);
    backend.fail_next_commits((0..3).map(|_| KvError::Aborted("again".into())));
    let err = s
        .execute("INSERT INTO t (k) VALUES (1)", &[])
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::Aborted);
    assert!(err.message.contains("gave up after 2 attempts"), "{err}");
}

#[tokio::test]
async fn an_aborted_commit_ends_the_explicit_transaction() {
    let (backend, mut s) = session();
    setup(&mut s).await;
    let priority = s
        .begin(TxnMode::ReadWrite { priority: None })
        .await
        .unwrap();
    assert!(priority.is_some());
    s.execute("INSERT INTO t (k) VALUES (1)", &[])
        .await
        .unwrap();
    backend.fail_next_commits([KvError::Aborted("wounded".into())]);
    let err = s.commit().await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Aborted);
    assert!(!s.in_transaction());
    let r = s.execute("SELECT COUNT(*) FROM t", &[]).await.unwrap();
    assert_eq!(r[0].rows, vec![vec![Value::Int64(0)]]);
}

#[tokio::test]
async fn split_at_encodes_primary_keys() {
    let (backend, mut s) = session();
    setup(&mut s).await;
    s.execute("INSERT INTO t (k) VALUES (100)", &[])
        .await
        .unwrap();
    s.execute("ALTER TABLE t SPLIT AT VALUES (100), (200)", &[])
        .await
        .unwrap();
    let keys = backend.split_keys();
    assert_eq!(keys.len(), 2);
    let (start, end) = table_range(1);
    assert!(start < keys[0] && keys[0] < keys[1] && keys[1] < end);
}

#[tokio::test]
async fn oversized_keys_and_rows_are_refused() {
    let (_, mut s) = session();
    s.execute("CREATE TABLE b (k STRING PRIMARY KEY, v BYTES)", &[])
        .await
        .unwrap();
    let big_key = [Value::String("x".repeat(9000)), Value::Null];
    let err = s
        .execute("INSERT INTO b VALUES ($1, $2)", &big_key)
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::ValueTooLarge, "{err}");
    let big_row = [
        Value::String("k".into()),
        Value::Bytes(vec![0; 1024 * 1024 + 1]),
    ];
    let err = s
        .execute("INSERT INTO b VALUES ($1, $2)", &big_row)
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::ValueTooLarge, "{err}");
    let r = s.execute("SELECT COUNT(*) FROM b", &[]).await.unwrap();
    assert_eq!(r[0].rows, vec![vec![Value::Int64(0)]]);
}

#[tokio::test]
async fn scans_cross_batch_boundaries() {
    let (_, mut s) = session();
    setup(&mut s).await;
    let values: Vec<String> = (0..2500).map(|i| format!("({i})")).collect();
    let sql = format!("INSERT INTO t (k) VALUES {}", values.join(", "));
    s.execute(&sql, &[]).await.unwrap();
    let r = s
        .execute("SELECT COUNT(*), SUM(k) FROM t", &[])
        .await
        .unwrap();
    assert_eq!(
        r[0].rows,
        vec![vec![Value::Int64(2500), Value::Int64(2500 * 2499 / 2)]]
    );
    let r = s
        .execute("SELECT k FROM t WHERE k >= 1020 LIMIT 3 OFFSET 2", &[])
        .await
        .unwrap();
    let ks: Vec<Value> = r[0].rows.iter().map(|r| r[0].clone()).collect();
    assert_eq!(
        ks,
        vec![Value::Int64(1022), Value::Int64(1023), Value::Int64(1024)]
    );
    let r = s
        .execute(
            "DROP TABLE t; CREATE TABLE t (k INT64 PRIMARY KEY); SELECT COUNT(*) FROM t",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r[2].rows, vec![vec![Value::Int64(0)]]);
}

#[tokio::test]
async fn stale_reads_see_the_past() {
    let (backend, mut s) = session();
    setup(&mut s).await;
    s.execute("INSERT INTO t (k) VALUES (1)", &[])
        .await
        .unwrap();
    backend.advance(std::time::Duration::from_secs(10));
    s.execute("INSERT INTO t (k) VALUES (2)", &[])
        .await
        .unwrap();
    s.execute("SET READ_ONLY_STALENESS = 'EXACT_STALENESS 5s'", &[])
        .await
        .unwrap();
    let r = s.execute("SELECT COUNT(*) FROM t", &[]).await.unwrap();
    assert_eq!(r[0].rows, vec![vec![Value::Int64(1)]]);
    let read_ts = r[0].read_ts.unwrap();
    assert_eq!(
        read_ts,
        backend
            .now()
            .saturating_sub(std::time::Duration::from_secs(5))
    );
}
