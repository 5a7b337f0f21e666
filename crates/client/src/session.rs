//! Sessions: a server-side context that holds an open transaction between calls.
//!
//! A session lives on the node that opened it, so every call of a session goes over the
//! channel it was opened on. [`SessionCore`] is the cheap, cloneable pair (id, channel) that
//! the transaction handles share; [`Session`] is the public owner, which tracks whether a
//! transaction is open and closes the server-side session when dropped.
//!
//! Which failures are `indeterminate`: a Commit, or an Execute outside a transaction (it may
//! autocommit, or run `COMMIT`), whose request may have reached the server but whose reply was
//! lost. Everything else that is lost in the network is `unavailable`.

use std::time::Duration;

use proto::v1 as pb;
use proto::v1::meridian_client::MeridianClient;
use tonic::transport::Channel;

use crate::error::Error;
use crate::value::{ResultSet, Value, params_to_proto};

/// A read-write transaction's priority, as Begin returns it. A retry of an aborted
/// transaction passes its first attempt's priority, so it ages and eventually wins conflicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Priority {
    /// When the first attempt started (server clock, ns).
    pub first_start: u64,
    /// Breaks ties between transactions that started at the same time.
    pub tiebreak: u64,
}

impl Priority {
    fn from_proto(p: pb::Priority) -> Priority {
        Priority {
            first_start: p.first_start,
            tiebreak: p.tiebreak,
        }
    }

    fn into_proto(self) -> pb::Priority {
        pb::Priority {
            first_start: self.first_start,
            tiebreak: self.tiebreak,
        }
    }
}

/// Where a read-only transaction or a single read reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimestampBound {
    /// The latest committed data: sees every transaction that committed before it started.
    #[default]
    Strong,
    /// Exactly this far in the past; never waits for in-flight writes, may miss recent ones.
    ExactStaleness(Duration),
    /// At most this far in the past; the server picks a timestamp it can serve at once.
    MaxStaleness(Duration),
    /// At this timestamp (ns since the epoch).
    ReadTimestamp(u64),
    /// At this timestamp (ns since the epoch) or later.
    MinReadTimestamp(u64),
}

impl TimestampBound {
    pub(crate) fn into_proto(self) -> pb::TimestampBound {
        use pb::timestamp_bound::Bound;
        let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let bound = match self {
            TimestampBound::Strong => Bound::Strong(true),
            TimestampBound::ExactStaleness(d) => Bound::ExactStalenessUs(micros(d)),
            TimestampBound::MaxStaleness(d) => Bound::MaxStalenessUs(micros(d)),
            TimestampBound::ReadTimestamp(ts) => Bound::ReadTimestamp(ts),
            TimestampBound::MinReadTimestamp(ts) => Bound::MinReadTimestamp(ts),
        };
        pb::TimestampBound { bound: Some(bound) }
    }
}

/// A session id and the channel to the node that holds it. Cheap to clone; does not close
/// the session on drop.
#[derive(Debug, Clone)]
pub(crate) struct SessionCore {
    pub(crate) id: u64,
    rpc: MeridianClient<Channel>,
}

/// What Execute returned.
pub(crate) struct Executed {
    pub(crate) results: Vec<ResultSet>,
    pub(crate) in_transaction: bool,
}

impl SessionCore {
    pub(crate) async fn open(
        mut rpc: MeridianClient<Channel>,
        read_replica: crate::ReadReplica,
    ) -> Result<SessionCore, Error> {
        let read_replica = match read_replica {
            crate::ReadReplica::Any => pb::ReadReplica::Any,
            crate::ReadReplica::Leader => pb::ReadReplica::Leader,
            crate::ReadReplica::Follower => pb::ReadReplica::Follower,
        };
        let request = pb::OpenSessionRequest {
            read_replica: read_replica as i32,
        };
        let reply = rpc.open_session(request).await?;
        Ok(SessionCore {
            id: reply.into_inner().session_id,
            rpc,
        })
    }

    fn request(&self) -> pb::SessionRequest {
        pb::SessionRequest {
            session_id: self.id,
        }
    }

    /// Runs `sql`. `may_commit`: whether a lost reply leaves a commit's outcome unknown.
    pub(crate) async fn execute(
        &self,
        sql: &str,
        params: &[Value],
        may_commit: bool,
    ) -> Result<Executed, Error> {
        let request = pb::ExecuteRequest {
            session_id: self.id,
            sql: sql.to_string(),
            params: params_to_proto(params.to_vec()),
        };
        let reply = self
            .rpc
            .clone()
            .execute(request)
            .await
            .map_err(|s| Error::from_status(&s, may_commit))?
            .into_inner();
        Ok(Executed {
            results: reply
                .results
                .into_iter()
                .map(ResultSet::from_proto)
                .collect(),
            in_transaction: reply.in_transaction,
        })
    }

    pub(crate) async fn begin_read_write(
        &self,
        priority: Option<Priority>,
    ) -> Result<Priority, Error> {
        let request = pb::BeginRequest {
            session_id: self.id,
            read_only: false,
            bound: None,
            priority: priority.map(Priority::into_proto),
        };
        let reply = self.rpc.clone().begin(request).await?.into_inner();
        // A server that returns no priority gets the one we asked for (or none) back.
        Ok(reply
            .priority
            .map(Priority::from_proto)
            .or(priority)
            .unwrap_or(Priority {
                first_start: 0,
                tiebreak: 0,
            }))
    }

    pub(crate) async fn begin_read_only(&self, bound: TimestampBound) -> Result<(), Error> {
        let request = pb::BeginRequest {
            session_id: self.id,
            read_only: true,
            bound: Some(bound.into_proto()),
            priority: None,
        };
        self.rpc.clone().begin(request).await?;
        Ok(())
    }

    /// Commits; a lost reply is `indeterminate`. Returns the commit timestamp (None for a
    /// read-only transaction).
    pub(crate) async fn commit(&self) -> Result<Option<u64>, Error> {
        let reply = self
            .rpc
            .clone()
            .commit(self.request())
            .await
            .map_err(|s| Error::from_status(&s, true))?;
        let ts = reply.into_inner().commit_ts;
        Ok((ts != 0).then_some(ts))
    }

    pub(crate) async fn rollback(&self) -> Result<(), Error> {
        self.rpc.clone().rollback(self.request()).await?;
        Ok(())
    }

    pub(crate) async fn close(&self) -> Result<(), Error> {
        self.rpc.clone().close_session(self.request()).await?;
        Ok(())
    }

    /// Closes the session in the background, if there is a runtime to do it on; a session
    /// left open expires on the server.
    pub(crate) fn close_in_background(self) {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = self.close().await;
            });
        }
    }
}

/// A server-side session: statements run one at a time, and a transaction begun with
/// [`Session::begin`] (or SQL `BEGIN`) stays open across calls until commit or rollback.
///
/// Outside a transaction each statement commits on its own. Dropping the session closes it on
/// the server (in the background, when inside a Tokio runtime) and rolls back any open
/// transaction.
#[derive(Debug)]
pub struct Session {
    core: Option<SessionCore>,
    in_transaction: bool,
}

impl Session {
    pub(crate) fn new(core: SessionCore) -> Session {
        Session {
            core: Some(core),
            in_transaction: false,
        }
    }

    fn core(&self) -> Result<&SessionCore, Error> {
        self.core.as_ref().ok_or_else(|| {
            Error::new(
                crate::Code::NotFound,
                "the session was closed; open a new one with Client::session",
            )
        })
    }

    /// The server's id for this session.
    pub fn id(&self) -> Option<u64> {
        self.core.as_ref().map(|c| c.id)
    }

    /// Whether a transaction is open, as of the last call.
    pub fn in_transaction(&self) -> bool {
        self.in_transaction
    }

    /// Runs one or more `;`-separated statements with `$1`-style `params`, returning one
    /// result per statement. A lost reply outside a transaction is `indeterminate` (the
    /// statement may have committed).
    pub async fn execute(&mut self, sql: &str, params: &[Value]) -> Result<Vec<ResultSet>, Error> {
        let core = self.core()?;
        let may_commit = true;
        match core.execute(sql, params, may_commit).await {
            Ok(executed) => {
                self.in_transaction = executed.in_transaction;
                Ok(executed.results)
            }
            Err(e) => {
                self.note_failure(&e);
                Err(e)
            }
        }
    }

    /// Runs `sql` and returns the last statement's result (an empty one if there was none).
    pub async fn sql(&mut self, sql: &str, params: &[Value]) -> Result<ResultSet, Error> {
        let results = self.execute(sql, params).await?;
        Ok(last_result(results))
    }

    /// Begins a read-write transaction; returns its priority (pass it to
    /// [`Session::begin_retry`] when running the transaction again after an abort).
    pub async fn begin(&mut self) -> Result<Priority, Error> {
        self.begin_with(None).await
    }

    /// Begins a read-write transaction that retries an aborted one, keeping the aborted
    /// attempt's (first attempt's) `priority`.
    pub async fn begin_retry(&mut self, priority: Priority) -> Result<Priority, Error> {
        self.begin_with(Some(priority)).await
    }

    async fn begin_with(&mut self, priority: Option<Priority>) -> Result<Priority, Error> {
        let result = self.core()?.begin_read_write(priority).await;
        self.after(result.as_ref().err(), true);
        result
    }

    /// Begins a read-only transaction reading at `bound`.
    pub async fn begin_read_only(&mut self, bound: TimestampBound) -> Result<(), Error> {
        let result = self.core()?.begin_read_only(bound).await;
        self.after(result.as_ref().err(), true);
        result
    }

    /// Commits the open transaction; returns its commit timestamp (`None` for read-only).
    /// An `indeterminate` error means the outcome is unknown: do not blindly retry.
    pub async fn commit(&mut self) -> Result<Option<u64>, Error> {
        let result = self.core()?.commit().await;
        self.after(result.as_ref().err(), false);
        result
    }

    /// Rolls back the open transaction.
    pub async fn rollback(&mut self) -> Result<(), Error> {
        let result = self.core()?.rollback().await;
        self.after(result.as_ref().err(), false);
        result
    }

    /// Closes the session on the server, waiting for the reply.
    pub async fn close(mut self) -> Result<(), Error> {
        match self.core.take() {
            Some(core) => core.close().await,
            None => Ok(()),
        }
    }

    fn after(&mut self, error: Option<&Error>, in_transaction_on_success: bool) {
        match error {
            None => self.in_transaction = in_transaction_on_success,
            Some(e) => self.note_failure(e),
        }
    }

    /// After an error the server has ended the transaction if it aborted, and the session is
    /// gone if it says so.
    fn note_failure(&mut self, error: &Error) {
        use crate::Code;
        match error.code() {
            Code::Aborted | Code::Indeterminate => self.in_transaction = false,
            Code::NotFound => {
                self.in_transaction = false;
                self.core = None;
            }
            _ => {}
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(core) = self.core.take() {
            core.close_in_background();
        }
    }
}

/// The last statement's result, or an empty one.
pub(crate) fn last_result(results: Vec<ResultSet>) -> ResultSet {
    results.into_iter().last().unwrap_or_else(|| ResultSet {
        tag: String::new(),
        columns: Vec::new().into(),
        rows: Vec::new(),
        rows_affected: 0,
        commit_ts: None,
        read_ts: None,
    })
}
