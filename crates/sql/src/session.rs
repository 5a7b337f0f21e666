//! [`Session`]: one client's connection to the SQL layer, the public entry point.
//!
//! # Transactions
//!
//! - A statement outside an explicit transaction autocommits. A query (SELECT, SHOW,
//!   EXPLAIN) runs in a read-only, lock-free snapshot transaction at the session's
//!   staleness and returns its `read_ts`. DML and DDL run in a read-write transaction that
//!   is retried on `aborted`/`unavailable` with the first attempt's priority (so it
//!   eventually wins under wound-wait), at most [`Session::set_max_attempts`] times (default
//!   [`DEFAULT_MAX_ATTEMPTS`]; this crate reads no clock, so the bound is a count). A
//!   commit whose outcome is unknown (`indeterminate`) is never retried.
//! - `BEGIN` / `START TRANSACTION [READ ONLY | READ WRITE]` / `BEGIN READ ONLY` open an
//!   explicit transaction (read-write by default); `SET TRANSACTION READ ONLY | READ WRITE`
//!   changes its mode if it is the first statement in it; `COMMIT` returns the commit
//!   timestamp; `ROLLBACK` abandons it (and is a no-op outside a transaction).
//! - A failing statement writes nothing (its writes are buffered until it succeeds) and
//!   leaves an explicit transaction usable, except `aborted`: the transaction is then rolled
//!   back and the client must start again.
//! - DDL (CREATE TABLE, DROP TABLE, ALTER TABLE ... SPLIT AT) is refused inside an explicit
//!   transaction.
//!
//! # Stale reads
//!
//! `SET READ_ONLY_STALENESS = '<bound>'` (Spanner JDBC's syntax) applies to later read-only
//! transactions and autocommit queries of the session; `SHOW READ_ONLY_STALENESS` shows it:
//!
//! ```sql
//! SET READ_ONLY_STALENESS = 'STRONG';                      -- the default
//! SET READ_ONLY_STALENESS = 'EXACT_STALENESS 10s';         -- ns, us, ms or s
//! SET READ_ONLY_STALENESS = 'MAX_STALENESS 500ms';
//! SET READ_ONLY_STALENESS = 'READ_TIMESTAMP 2024-05-01T12:00:00Z';  -- or integer ns
//! SET READ_ONLY_STALENESS = 'MIN_READ_TIMESTAMP 1714564800000000000';
//! ```
//!
//! # Splits
//!
//! `ALTER TABLE t SPLIT AT VALUES (100), (200)` makes each listed primary key (or key
//! prefix) start a tablet.

use std::sync::Arc;

use sqlparser::ast::{self, ObjectType, Statement, TransactionAccessMode, TransactionMode};
use storage::key::Value;
use truetime::Timestamp;

use crate::ddl::{self, CreateTable};
use crate::error::{ErrorCode, SqlError, SqlResult};
use crate::exec;
use crate::kv::{Backend, KvTxn, TimestampBound, TxnMode, TxnPriority};
use crate::parse::{Stmt, parse};
use crate::result::{QueryResult, text_column};
use crate::staleness::{format_staleness, parse_staleness};

/// How many times an autocommit statement is attempted before its retryable error is
/// returned.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 20;

#[derive(Debug)]
struct OpenTxn {
    txn: Box<dyn KvTxn>,
    read_only: bool,
    /// Whether a statement has run in it (SET TRANSACTION must come first).
    used: bool,
}

/// What an autocommit transaction runs.
#[derive(Debug, Clone, Copy)]
enum Work<'a> {
    Data(&'a Statement, bool),
    Create(&'a CreateTable),
    Drop(&'a [ast::ObjectName], bool),
}

/// A SQL session over a [`Backend`]. Not shared between clients: one per connection.
#[derive(Debug)]
pub struct Session {
    backend: Arc<dyn Backend>,
    txn: Option<OpenTxn>,
    staleness: TimestampBound,
    max_attempts: u32,
}

impl Session {
    /// A session with no open transaction and strong reads.
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Session {
            backend,
            txn: None,
            staleness: TimestampBound::Strong,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
        }
    }

    /// Sets how many times an autocommit statement is attempted (at least 1).
    pub fn set_max_attempts(&mut self, n: u32) {
        self.max_attempts = n.max(1);
    }

    /// The staleness of read-only transactions and autocommit queries.
    pub fn staleness(&self) -> TimestampBound {
        self.staleness
    }

    /// Sets the staleness of later read-only transactions and autocommit queries.
    pub fn set_staleness(&mut self, bound: TimestampBound) {
        self.staleness = bound;
    }

    /// Whether an explicit transaction is open.
    pub fn in_transaction(&self) -> bool {
        self.txn.is_some()
    }

    /// Runs one or more `;`-separated statements with `$1`... bound to `params`, stopping at
    /// the first error (statements before it keep their effects; nothing runs if any
    /// statement fails to parse).
    pub async fn execute(&mut self, sql: &str, params: &[Value]) -> SqlResult<Vec<QueryResult>> {
        let stmts = parse(sql)?;
        let mut results = Vec::with_capacity(stmts.len());
        for stmt in &stmts {
            results.push(self.execute_stmt(stmt, params).await?);
        }
        Ok(results)
    }

    /// Opens an explicit transaction; returns its priority if it is read-write.
    pub async fn begin(&mut self, mode: TxnMode) -> SqlResult<Option<TxnPriority>> {
        if self.txn.is_some() {
            return Err(SqlError::txn_state(
                "a transaction is already open; COMMIT or ROLLBACK it first",
            ));
        }
        let txn = self.backend.begin(mode).await?;
        let priority = txn.priority();
        self.txn = Some(OpenTxn {
            txn,
            read_only: matches!(mode, TxnMode::ReadOnly(_)),
            used: false,
        });
        Ok(priority)
    }

    /// Commits the explicit transaction; returns its commit timestamp (`None` if it was
    /// read-only). The transaction is over whatever the outcome.
    pub async fn commit(&mut self) -> SqlResult<Option<Timestamp>> {
        let Some(open) = self.txn.take() else {
            return Err(SqlError::txn_state(
                "there is no transaction to COMMIT; use BEGIN first",
            ));
        };
        open.txn.commit().await.map_err(|e| {
            let e = SqlError::from(e);
            if e.code.is_retryable() {
                SqlError::new(
                    e.code,
                    format!(
                        "{}; the transaction was not committed: run it again from BEGIN",
                        e.message
                    ),
                )
            } else {
                e
            }
        })
    }

    /// Abandons the explicit transaction, if any.
    pub async fn rollback(&mut self) -> SqlResult<()> {
        if let Some(open) = self.txn.take() {
            open.txn.rollback().await?;
        }
        Ok(())
    }

    async fn execute_stmt(&mut self, stmt: &Stmt, params: &[Value]) -> SqlResult<QueryResult> {
        let (stmt, upsert) = match stmt {
            Stmt::Split { table, points } => return self.split(table, points, params).await,
            Stmt::Sql { stmt, upsert } => (&**stmt, *upsert),
        };
        if exec::is_data(stmt) {
            return self.data(stmt, upsert, params).await;
        }
        match stmt {
            Statement::StartTransaction { modes, .. } => {
                let mode = match access_mode(modes)? {
                    Some(true) => TxnMode::ReadOnly(self.staleness),
                    _ => TxnMode::ReadWrite { priority: None },
                };
                self.begin(mode).await?;
                Ok(QueryResult::tag("BEGIN"))
            }
            Statement::Set(ast::Set::SetTransaction { modes, .. }) => {
                self.set_transaction(modes).await?;
                Ok(QueryResult::tag("SET"))
            }
            Statement::Commit { .. } => {
                let commit_ts = self.commit().await?;
                Ok(QueryResult {
                    commit_ts,
                    ..QueryResult::tag("COMMIT")
                })
            }
            Statement::Rollback {
                savepoint: None, ..
            } => {
                self.rollback().await?;
                Ok(QueryResult::tag("ROLLBACK"))
            }
            Statement::Set(ast::Set::SingleAssignment {
                variable, values, ..
            }) => self.set_variable(variable, values),
            Statement::ShowVariable { variable } => self.show_variable(variable),
            Statement::CreateTable(ct) => {
                let ct = ddl::compile_create(ct)?;
                self.autocommit(Work::Create(&ct), false, params).await
            }
            Statement::Drop {
                object_type: ObjectType::Table,
                if_exists,
                names,
                ..
            } => {
                self.autocommit(Work::Drop(names, *if_exists), false, params)
                    .await
            }
            other => Err(SqlError::unsupported(format!(
                "statement {other} is not supported"
            ))),
        }
    }

    async fn set_transaction(&mut self, modes: &[TransactionMode]) -> SqlResult<()> {
        let Some(open) = &self.txn else {
            return Err(SqlError::txn_state(
                "SET TRANSACTION needs an open transaction; use BEGIN first",
            ));
        };
        if open.used {
            return Err(SqlError::txn_state(
                "SET TRANSACTION must be the first statement of the transaction",
            ));
        }
        let Some(read_only) = access_mode(modes)? else {
            return Ok(());
        };
        if read_only != open.read_only {
            self.rollback().await?;
            let mode = if read_only {
                TxnMode::ReadOnly(self.staleness)
            } else {
                TxnMode::ReadWrite { priority: None }
            };
            self.begin(mode).await?;
        }
        Ok(())
    }

    fn set_variable(
        &mut self,
        variable: &ast::ObjectName,
        values: &[ast::Expr],
    ) -> SqlResult<QueryResult> {
        if !variable
            .to_string()
            .eq_ignore_ascii_case("read_only_staleness")
        {
            return Err(SqlError::unsupported(format!(
                "unknown setting {variable}; the only setting is READ_ONLY_STALENESS"
            )));
        }
        let text = match values {
            [ast::Expr::Value(v)] => v.value.clone().into_string(),
            _ => None,
        };
        let text = text.ok_or_else(|| {
            SqlError::invalid("write SET READ_ONLY_STALENESS = '<bound>' with the bound quoted")
        })?;
        self.staleness = parse_staleness(&text)?;
        Ok(QueryResult::tag("SET"))
    }

    fn show_variable(&self, variable: &[ast::Ident]) -> SqlResult<QueryResult> {
        match variable {
            [v] if v.value.eq_ignore_ascii_case("read_only_staleness") => Ok(QueryResult::rows(
                "SHOW",
                vec![text_column("read_only_staleness")],
                vec![vec![Value::String(format_staleness(self.staleness))]],
            )),
            _ => Err(SqlError::unsupported(
                "unknown setting; SHOW TABLES, SHOW COLUMNS FROM t and SHOW READ_ONLY_STALENESS \
                 are supported",
            )),
        }
    }

    async fn split(
        &mut self,
        table: &ast::ObjectName,
        points: &[Vec<ast::Expr>],
        params: &[Value],
    ) -> SqlResult<QueryResult> {
        self.refuse_ddl_in_txn()?;
        let mut txn = self
            .backend
            .begin(TxnMode::ReadOnly(TimestampBound::Strong))
            .await?;
        let keys = ddl::split_keys(&mut *txn, table, points, params).await;
        txn.rollback().await?;
        let keys = keys?;
        let n = keys.len();
        self.backend.split_at(keys).await?;
        Ok(QueryResult {
            rows_affected: n as u64,
            ..QueryResult::tag("ALTER TABLE")
        })
    }

    fn refuse_ddl_in_txn(&self) -> SqlResult<()> {
        if self.txn.is_some() {
            return Err(SqlError::txn_state(
                "DDL cannot run inside a transaction; COMMIT or ROLLBACK first (DDL commits on \
                 its own)",
            ));
        }
        Ok(())
    }

    async fn data(
        &mut self,
        stmt: &Statement,
        upsert: bool,
        params: &[Value],
    ) -> SqlResult<QueryResult> {
        let write = exec::is_write(stmt);
        let Some(open) = &mut self.txn else {
            return self
                .autocommit(Work::Data(stmt, upsert), !write, params)
                .await;
        };
        open.used = true;
        if write && open.read_only {
            return Err(SqlError::txn_state(
                "cannot write in a read-only transaction; COMMIT it and use BEGIN READ WRITE",
            ));
        }
        match exec::run(&mut *open.txn, stmt, upsert, params).await {
            Ok(mut r) => {
                r.read_ts = open.txn.read_timestamp();
                Ok(r)
            }
            Err(e) if e.code == ErrorCode::Aborted => {
                let _ = self.rollback().await;
                Err(SqlError::new(
                    e.code,
                    format!(
                        "{}; the transaction was rolled back: run it again from BEGIN",
                        e.message
                    ),
                ))
            }
            Err(e) => Err(e),
        }
    }

    async fn autocommit(
        &mut self,
        work: Work<'_>,
        read_only: bool,
        params: &[Value],
    ) -> SqlResult<QueryResult> {
        if !matches!(work, Work::Data(..)) {
            self.refuse_ddl_in_txn()?;
        }
        let mut priority = None;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mode = if read_only {
                TxnMode::ReadOnly(self.staleness)
            } else {
                TxnMode::ReadWrite { priority }
            };
            let backend = self.backend.clone();
            let e = match attempt_once(&*backend, mode, work, params, &mut priority).await {
                Ok(r) => return Ok(r),
                Err(e) => e,
            };
            if !e.code.is_retryable() {
                return Err(e);
            }
            if attempt >= self.max_attempts {
                return Err(SqlError::new(
                    e.code,
                    format!("{} (gave up after {attempt} attempts)", e.message),
                ));
            }
            tracing::debug!(
                attempt,
                code = e.code.as_str(),
                "retrying autocommit statement"
            );
        }
    }
}

/// One attempt of an autocommit statement: begin, run, commit (or roll back).
async fn attempt_once(
    backend: &dyn Backend,
    mode: TxnMode,
    work: Work<'_>,
    params: &[Value],
    priority: &mut Option<TxnPriority>,
) -> SqlResult<QueryResult> {
    let mut txn = backend.begin(mode).await?;
    if priority.is_none() {
        *priority = txn.priority();
    }
    let result = match work {
        Work::Data(stmt, upsert) => exec::run(&mut *txn, stmt, upsert, params).await,
        Work::Create(ct) => ddl::create(&mut *txn, backend, ct).await,
        Work::Drop(names, if_exists) => ddl::drop(&mut *txn, names, if_exists).await,
    };
    let mut result = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = txn.rollback().await;
            return Err(e);
        }
    };
    let read_ts = txn.read_timestamp();
    let commit_ts = txn.commit().await?;
    if matches!(mode, TxnMode::ReadOnly(_)) {
        result.read_ts = read_ts;
    } else {
        result.commit_ts = commit_ts;
    }
    Ok(result)
}

/// `Some(true)` for READ ONLY, `Some(false)` for READ WRITE, `None` if unspecified.
fn access_mode(modes: &[TransactionMode]) -> SqlResult<Option<bool>> {
    let mut read_only = None;
    for m in modes {
        match m {
            TransactionMode::AccessMode(TransactionAccessMode::ReadOnly) => read_only = Some(true),
            TransactionMode::AccessMode(TransactionAccessMode::ReadWrite) => {
                read_only = Some(false)
            }
            // Every read-write transaction is serializable (strictly), whatever is asked.
            TransactionMode::IsolationLevel(_) => {}
        }
    }
    Ok(read_only)
}

/// The server runs sessions on a multi-threaded runtime: their futures must be `Send`.
#[allow(dead_code)]
fn execute_is_send(s: &mut Session) -> impl Send + '_ {
    s.execute("", &[])
}
