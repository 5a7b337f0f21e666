//! No input panics the SQL layer: statements assembled at random from SQL's own words,
//! values and stray characters, run against a table with rows, only ever return a result or
//! an error. (A panic here would take down the node serving the session.)

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use proptest::prelude::*;
use sql::testing::MemoryBackend;
use sql::{Backend, Session, Value};

const WORDS: &[&str] = &[
    "SELECT",
    "INSERT",
    "INTO",
    "VALUES",
    "UPDATE",
    "SET",
    "DELETE",
    "FROM",
    "WHERE",
    "AND",
    "OR",
    "NOT",
    "NULL",
    "IS",
    "IN",
    "BETWEEN",
    "LIKE",
    "ORDER",
    "BY",
    "DESC",
    "LIMIT",
    "OFFSET",
    "GROUP",
    "HAVING",
    "COUNT(*)",
    "SUM(v)",
    "AVG(v)",
    "MIN(k)",
    "MAX(s)",
    "CREATE",
    "TABLE",
    "DROP",
    "PRIMARY",
    "KEY",
    "BEGIN",
    "COMMIT",
    "ROLLBACK",
    "READ",
    "ONLY",
    "EXPLAIN",
    "UPSERT",
    "ON",
    "CONFLICT",
    "DO",
    "NOTHING",
    "ALTER",
    "SPLIT",
    "AT",
    "t",
    "k",
    "v",
    "s",
    "*",
    ",",
    "(",
    ")",
    "=",
    "<",
    ">",
    "<=",
    "+",
    "-",
    "/",
    "%",
    "||",
    ";",
    "$1",
    "$2",
    "$99",
    "'x'",
    "''",
    "1",
    "0",
    "-1",
    "9223372036854775807",
    "-9223372036854775808",
    "1e308",
    "1.5",
    "TRUE",
    "CAST(",
    "AS",
    "INT64",
    "STRING(3)",
    "TIMESTAMP",
    "BYTES",
    "PENDING_COMMIT_TIMESTAMP()",
    "SET READ_ONLY_STALENESS =",
    "'MAX_STALENESS 1s'",
    "'READ_TIMESTAMP x'",
    "\u{0}",
    "\u{1F600}",
];

fn statement() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            8 => prop::sample::select(WORDS).prop_map(str::to_string),
            1 => "[ -~]{0,6}",
        ],
        0..14,
    )
    .prop_map(|words| words.join(" "))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn random_statements_return_results_or_errors(statements in prop::collection::vec(statement(), 1..6)) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(async {
            let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
            let mut session = Session::new(backend);
            session
                .execute(
                    "CREATE TABLE t (k INT64 PRIMARY KEY, v INT64, s STRING(3)); \
                     INSERT INTO t VALUES (1, 10, 'a'), (2, NULL, 'bb'), (3, -5, NULL)",
                    &[],
                )
                .await
                .unwrap();
            let params = [Value::Int64(i64::MAX), Value::String("zz".into())];
            for sql in &statements {
                // Either outcome is fine; a panic fails the property.
                let _ = session.execute(sql, &params).await;
            }
        });
    }
}
