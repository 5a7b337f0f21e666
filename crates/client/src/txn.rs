//! Transactions run by closures: [`Client::read_write`] with retries, and
//! [`Client::read_only`] at a timestamp bound.
//!
//! The closure receives an owned, cloneable handle ([`Txn`] or [`ReadOnlyTxn`]) and returns a
//! future, so natural code compiles: `client.read_write(|tx| async move { .. })`. Values the
//! closure captures are moved into each attempt's future, so clone what it needs per attempt
//! (or capture references, which `async move` copies).
//!
//! Retry rules, in order of importance:
//! - A transaction whose commit outcome is unknown is never retried: an `indeterminate`
//!   Commit, or a Commit whose reply was lost after it was sent, ends the loop with an
//!   `indeterminate` error, after the closure ran once for that attempt.
//! - `aborted`, `unavailable` and `not_found` (the session is gone) before or during the
//!   commit mean nothing was committed: the whole closure runs again, after a backoff, until
//!   [`RetryPolicy::max_elapsed`](crate::RetryPolicy) is spent.
//! - Every retry begins with the first attempt's priority (Begin's reply on attempt one), so
//!   the transaction ages and eventually wins its conflicts.
//! - A handle remembers a retryable failure: if the closure swallows it and returns `Ok`, the
//!   attempt is still retried rather than committed. A handle used after its attempt ended
//!   fails with `invalid_transaction_state`.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use crate::client::Client;
use crate::error::{Code, Error};
use crate::mutation;
use crate::retry::Backoff;
use crate::session::{Priority, SessionCore, TimestampBound, last_result};
use crate::value::{ResultSet, Row, Value};

/// What a committed read-write transaction returned.
#[derive(Debug, Clone, PartialEq)]
pub struct Committed<T> {
    /// The closure's value from the attempt that committed.
    pub value: T,
    /// The commit timestamp, in ns since the Unix epoch.
    pub commit_ts: u64,
    /// How many attempts ran (1 when the first committed).
    pub attempts: u32,
    /// Why each earlier attempt was retried: the error code, and for aborts the reason the
    /// server gave (`aborted: Wounded`, `aborted: LeaderChanged`, `unavailable`, ...).
    pub retried_because: Vec<String>,
}

/// A short reason for retrying after `e`: its code, and for an abort the server's reason
/// (the word after "transaction aborted: ").
fn retry_reason(e: &Error) -> String {
    let code = e.code();
    let message = e.to_string();
    match message.split("transaction aborted: ").nth(1) {
        Some(rest) => {
            let reason: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect();
            format!("{code}: {reason}")
        }
        None => code.to_string(),
    }
}

#[derive(Debug, Clone)]
enum State {
    Active,
    /// A retryable failure seen by a statement: the attempt must not commit.
    Failed(Code, String),
    Finished,
}

#[derive(Debug)]
struct Shared {
    core: SessionCore,
    state: Mutex<State>,
}

impl Shared {
    fn new(core: SessionCore) -> Arc<Shared> {
        Arc::new(Shared {
            core,
            state: Mutex::new(State::Active),
        })
    }

    fn state(&self) -> State {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set(&self, state: State) {
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = state;
    }

    async fn execute(&self, sql: &str, params: &[Value]) -> Result<Vec<ResultSet>, Error> {
        match self.state() {
            State::Active => {}
            State::Failed(code, message) => {
                return Err(Error::new(
                    code,
                    format!("the transaction already failed ({message}); return the error"),
                ));
            }
            State::Finished => {
                return Err(Error::new(
                    Code::InvalidTransactionState,
                    "this transaction handle's attempt has ended; use the handle only inside \
                     its closure",
                ));
            }
        }
        // Inside an explicit transaction a statement never commits, so a lost reply is not
        // indeterminate.
        match self.core.execute(sql, params, false).await {
            Ok(executed) => Ok(executed.results),
            Err(e) => {
                if must_restart(&e) {
                    self.set(State::Failed(e.code(), e.to_string()));
                }
                Err(e)
            }
        }
    }

    async fn query_one(&self, sql: &str, params: &[Value]) -> Result<Row, Error> {
        let result = last_result(self.execute(sql, params).await?);
        let count = result.rows.len();
        let mut rows = result.rows.into_iter();
        match (rows.next(), count) {
            (Some(row), 1) => Ok(row),
            _ => Err(Error::RowCount(count)),
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // A handle dropped mid-attempt (the caller's future was cancelled): closing the
        // session rolls the transaction back instead of leaving its locks until expiry.
        let active = matches!(
            *self.state.get_mut().unwrap_or_else(PoisonError::into_inner),
            State::Active
        );
        if active {
            self.core.clone().close_in_background();
        }
    }
}

/// Whether an error means the attempt cannot go on but nothing was committed.
fn must_restart(e: &Error) -> bool {
    e.is_retryable() || e.code() == Code::NotFound
}

/// Drops a session that is gone or whose state is unknown after `e`.
fn discard_if_broken(core: &mut Option<SessionCore>, e: &Error) {
    let broken = matches!(
        e.code(),
        Code::NotFound | Code::Unavailable | Code::Indeterminate | Code::Internal
    );
    if broken && let Some(core) = core.take() {
        core.close_in_background();
    }
}

/// A read-write transaction handle, given to the closure of [`Client::read_write`].
///
/// Cheap to clone; all clones are the same attempt. Valid only until the closure's future
/// completes.
#[derive(Debug, Clone)]
pub struct Txn {
    shared: Arc<Shared>,
    priority: Priority,
    attempt: u32,
}

impl Txn {
    /// This attempt's number, from 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The priority this attempt runs with (the first attempt's).
    pub fn priority(&self) -> Priority {
        self.priority
    }

    /// Runs `sql` (one or more statements) with `$1`-style `params`; returns the last result.
    pub async fn sql(&self, sql: &str, params: &[Value]) -> Result<ResultSet, Error> {
        Ok(last_result(self.shared.execute(sql, params).await?))
    }

    /// Runs `sql` and returns every statement's result.
    pub async fn execute(&self, sql: &str, params: &[Value]) -> Result<Vec<ResultSet>, Error> {
        self.shared.execute(sql, params).await
    }

    /// Runs a query and returns its rows.
    pub async fn query(&self, sql: &str, params: &[Value]) -> Result<Vec<Row>, Error> {
        Ok(self.sql(sql, params).await?.rows)
    }

    /// Runs a query that must return exactly one row ([`Error::RowCount`] otherwise).
    pub async fn query_one(&self, sql: &str, params: &[Value]) -> Result<Row, Error> {
        self.shared.query_one(sql, params).await
    }

    async fn mutate(&self, sql: Result<String, Error>, values: Vec<Value>) -> Result<u64, Error> {
        let sql = sql?;
        Ok(self.sql(&sql, &values).await?.rows_affected)
    }

    /// Inserts one row: `INSERT INTO table (columns) VALUES ($1, ..)`. Returns rows affected.
    pub async fn insert(
        &self,
        table: &str,
        columns: &[&str],
        values: Vec<Value>,
    ) -> Result<u64, Error> {
        let sql = mutation::insert(table, columns, values.len());
        self.mutate(sql, values).await
    }

    /// Updates the row whose primary key columns `key` (which must be among `columns`) have
    /// the given values, setting every other column: `UPDATE table SET c = $n .. WHERE k = $m`.
    /// Returns rows affected (0 if no such row).
    pub async fn update(
        &self,
        table: &str,
        key: &[&str],
        columns: &[&str],
        values: Vec<Value>,
    ) -> Result<u64, Error> {
        let sql = mutation::update(table, key, columns, values.len());
        self.mutate(sql, values).await
    }

    /// Inserts the row, or updates its non-key columns if a row with the same primary key
    /// `key` exists: `INSERT .. ON CONFLICT (key) DO UPDATE SET ..`. Returns rows affected.
    pub async fn upsert(
        &self,
        table: &str,
        key: &[&str],
        columns: &[&str],
        values: Vec<Value>,
    ) -> Result<u64, Error> {
        let sql = mutation::upsert(table, key, columns, values.len());
        self.mutate(sql, values).await
    }

    /// Deletes the row whose primary key columns `key` have `key_values`:
    /// `DELETE FROM table WHERE k = $1 AND ..`. Returns rows affected.
    pub async fn delete(
        &self,
        table: &str,
        key: &[&str],
        key_values: Vec<Value>,
    ) -> Result<u64, Error> {
        let sql = mutation::delete(table, key, key_values.len());
        self.mutate(sql, key_values).await
    }
}

/// A read-only transaction handle: every read sees the same snapshot, at its timestamp bound.
///
/// Given to the closure of [`Client::read_only`], or opened with
/// [`Client::read_only_txn`] and ended with [`ReadOnlyTxn::end`].
#[derive(Debug, Clone)]
pub struct ReadOnlyTxn {
    shared: Arc<Shared>,
    client: Client,
}

impl ReadOnlyTxn {
    /// Runs `sql` with `$1`-style `params`; returns the last statement's result, whose
    /// `read_ts` is the snapshot's timestamp.
    pub async fn sql(&self, sql: &str, params: &[Value]) -> Result<ResultSet, Error> {
        Ok(last_result(self.shared.execute(sql, params).await?))
    }

    /// Runs a query and returns its rows.
    pub async fn query(&self, sql: &str, params: &[Value]) -> Result<Vec<Row>, Error> {
        Ok(self.sql(sql, params).await?.rows)
    }

    /// Runs a query that must return exactly one row ([`Error::RowCount`] otherwise).
    pub async fn query_one(&self, sql: &str, params: &[Value]) -> Result<Row, Error> {
        self.shared.query_one(sql, params).await
    }

    /// Ends the transaction and returns its session to the client's pool.
    pub async fn end(self) -> Result<(), Error> {
        self.shared.set(State::Finished);
        let core = self.shared.core.clone();
        match core.commit().await {
            Ok(_) => {
                self.client.give_back(core);
                Ok(())
            }
            Err(e) => {
                core.close_in_background();
                Err(e)
            }
        }
    }
}

impl Client {
    /// Runs `body` in a read-write transaction and commits; returns the closure's value with
    /// the commit timestamp.
    ///
    /// The closure gets an owned, cloneable [`Txn`] and returns a future:
    /// `|tx| async move { .. }`. It may run several times, so it must not have effects
    /// outside the transaction that cannot be repeated. The rules:
    /// - `aborted`, `unavailable` or a lost session before the commit took effect: the whole
    ///   closure runs again after a backoff, until [`RetryPolicy::max_elapsed`] (default
    ///   30 s) is spent ([`Error::RetriesExhausted`]); every retry keeps the first attempt's
    ///   priority, so it ages and wins its conflicts;
    /// - a Commit answered `indeterminate`, or whose reply was lost after it was sent: no
    ///   retry, the error is `indeterminate` (the commit may have applied);
    /// - a retryable failure inside the closure is remembered by the handle: the attempt is
    ///   retried even if the closure swallowed the error and returned `Ok`;
    /// - any other error (including [`Error::user`] from the closure) rolls back and is
    ///   returned as is.
    ///
    /// [`RetryPolicy::max_elapsed`]: crate::RetryPolicy::max_elapsed
    ///
    /// ```no_run
    /// # async fn f(client: client::Client) -> Result<(), client::Error> {
    /// let done = client
    ///     .read_write(|tx| async move {
    ///         let row = tx.query_one("SELECT balance FROM accounts WHERE id = $1", &[1.into()]).await?;
    ///         let balance = row.get(0).and_then(|v| v.as_i64()).unwrap_or(0);
    ///         tx.update("accounts", &["id"], &["id", "balance"], vec![1.into(), (balance + 10).into()])
    ///             .await?;
    ///         Ok(balance)
    ///     })
    ///     .await?;
    /// println!("old balance {} committed at {}", done.value, done.commit_ts);
    /// # Ok(()) }
    /// ```
    pub async fn read_write<T, F, Fut>(&self, mut body: F) -> Result<Committed<T>, Error>
    where
        F: FnMut(Txn) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let mut backoff = Backoff::start(self.inner.options.retry);
        let mut priority = None;
        let mut core = None;
        let mut retried_because = Vec::new();
        loop {
            backoff.attempts += 1;
            let attempt = backoff.attempts;
            let result = self
                .read_write_attempt(&mut core, &mut priority, attempt, &mut body)
                .await;
            let e = match result {
                Ok((value, commit_ts)) => {
                    if let Some(core) = core.take() {
                        self.give_back(core);
                    }
                    return Ok(Committed {
                        value,
                        commit_ts,
                        attempts: attempt,
                        retried_because,
                    });
                }
                Err(e) => e,
            };
            discard_if_broken(&mut core, &e);
            if !must_restart(&e) {
                if let Some(core) = core.take() {
                    self.give_back(core);
                }
                return Err(e);
            }
            let Some(delay) = backoff.next_delay() else {
                return Err(Error::RetriesExhausted {
                    attempts: attempt,
                    elapsed: backoff.elapsed(),
                    last: Box::new(e),
                });
            };
            tracing::debug!(attempt, code = %e.code(), ?delay, "retrying transaction");
            retried_because.push(retry_reason(&e));
            tokio::time::sleep(delay).await;
        }
    }

    async fn read_write_attempt<T, F, Fut>(
        &self,
        core: &mut Option<SessionCore>,
        first_priority: &mut Option<Priority>,
        attempt: u32,
        body: &mut F,
    ) -> Result<(T, u64), Error>
    where
        F: FnMut(Txn) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let session = match core {
            Some(session) => session.clone(),
            None => core.insert(self.take_core().await?).clone(),
        };
        let priority = session.begin_read_write(*first_priority).await?;
        let priority = *first_priority.get_or_insert(priority);
        let shared = Shared::new(session.clone());
        let txn = Txn {
            shared: shared.clone(),
            priority,
            attempt,
        };
        let outcome = body(txn).await;
        let state = shared.state();
        shared.set(State::Finished);
        if let State::Failed(code, message) = state {
            let _ = session.rollback().await;
            return Err(Error::new(code, message));
        }
        let value = match outcome {
            Ok(value) => value,
            Err(e) => {
                let _ = session.rollback().await;
                return Err(e);
            }
        };
        let commit_ts = session.commit().await?;
        Ok((value, commit_ts.unwrap_or(0)))
    }

    /// Runs `body` in a read-only transaction at `bound`: every read sees one snapshot.
    /// Retried like [`Client::read_write`] (reads are always safe to repeat), so the closure
    /// may run more than once. Returns the closure's value.
    pub async fn read_only<T, F, Fut>(&self, bound: TimestampBound, mut body: F) -> Result<T, Error>
    where
        F: FnMut(ReadOnlyTxn) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let mut backoff = Backoff::start(self.inner.options.retry);
        loop {
            backoff.attempts += 1;
            let e = match self.read_only_attempt(bound, &mut body).await {
                Ok(value) => return Ok(value),
                Err(e) => e,
            };
            if !must_restart(&e) {
                return Err(e);
            }
            let Some(delay) = backoff.next_delay() else {
                return Err(Error::RetriesExhausted {
                    attempts: backoff.attempts,
                    elapsed: backoff.elapsed(),
                    last: Box::new(e),
                });
            };
            tokio::time::sleep(delay).await;
        }
    }

    async fn read_only_attempt<T, F, Fut>(
        &self,
        bound: TimestampBound,
        body: &mut F,
    ) -> Result<T, Error>
    where
        F: FnMut(ReadOnlyTxn) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let tx = self.read_only_txn(bound).await?;
        let shared = tx.shared.clone();
        let outcome = body(tx.clone()).await;
        if let State::Failed(code, message) = shared.state() {
            shared.set(State::Finished);
            shared.core.clone().close_in_background();
            return Err(Error::new(code, message));
        }
        let value = outcome?;
        // The reads are done and valid whatever happens to the end of the transaction.
        let _ = tx.end().await;
        Ok(value)
    }

    /// Begins a read-only transaction at `bound` on a session of its own; end it with
    /// [`ReadOnlyTxn::end`] (dropping it closes the session instead).
    pub async fn read_only_txn(&self, bound: TimestampBound) -> Result<ReadOnlyTxn, Error> {
        let mut core = self.take_core().await?;
        let begun = match core.begin_read_only(bound).await {
            Err(e) if e.code() == Code::NotFound => {
                core = self.open_core().await?;
                core.begin_read_only(bound).await
            }
            other => other,
        };
        if let Err(e) = begun {
            core.close_in_background();
            return Err(e);
        }
        Ok(ReadOnlyTxn {
            shared: Shared::new(core),
            client: self.clone(),
        })
    }
}
