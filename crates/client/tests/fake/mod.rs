//! A fake `Meridian` server for the client's tests: it keeps sessions and transaction state,
//! records every Begin, Execute and Commit, and fails on demand (aborts, indeterminate or
//! lost commit replies, forgotten sessions), so the client's retry rules can be checked
//! without a cluster. It listens on a free port of 127.0.0.1 and stops when dropped.
#![allow(clippy::unwrap_used, dead_code)]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proto::v1 as pb;
use proto::v1::meridian_server::{Meridian, MeridianServer};
use tokio::sync::oneshot;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

/// One Begin as received: (read_only, the priority passed in, the bound).
pub type BeginSeen = (bool, Option<(u64, u64)>, Option<pb::TimestampBound>);

/// What the fake has seen and what it should do next.
#[derive(Debug, Default)]
pub struct State {
    next_id: u64,
    sessions: HashSet<u64>,
    in_txn: HashSet<u64>,
    /// Every Begin: (read_only, the priority passed in, the bound).
    pub begins: Vec<BeginSeen>,
    /// The priorities the fake returned from Begin, in order.
    pub priorities_returned: Vec<(u64, u64)>,
    /// Every Execute's SQL and parameters.
    pub executes: Vec<(String, Vec<pb::Value>)>,
    /// Commits received (whatever their outcome).
    pub commits_received: u32,
    /// Commits that took effect (including those answered `indeterminate`).
    pub commits_applied: u32,
    pub rollbacks: u32,
    pub closes: u32,
    /// The next this many commits abort.
    pub abort_commits: u32,
    /// Every commit aborts.
    pub always_abort: bool,
    /// The next this many Executes inside a transaction abort it.
    pub abort_executes: u32,
    /// The next this many commits apply, then answer `indeterminate`.
    pub indeterminate_commits: u32,
    /// Commits apply, then the reply takes this long (longer than the client's timeout
    /// simulates a lost reply).
    pub commit_delay: Option<Duration>,
    /// The next this many calls on a session answer `not_found` (the node forgot it).
    pub forget_sessions: u32,
}

/// A status with a stable code in its metadata.
pub fn coded(grpc: tonic::Code, code: &str, message: &str) -> Status {
    let mut status = Status::new(grpc, message);
    status
        .metadata_mut()
        .insert("meridian-error", code.parse().unwrap());
    status
}

#[derive(Debug, Clone, Default)]
struct Service {
    state: Arc<Mutex<State>>,
}

impl Service {
    fn check_session(&self, id: u64) -> Result<(), Status> {
        let mut s = self.state.lock().unwrap();
        if s.forget_sessions > 0 {
            s.forget_sessions -= 1;
            s.sessions.clear();
            s.in_txn.clear();
        }
        if s.sessions.contains(&id) {
            Ok(())
        } else {
            Err(coded(tonic::Code::NotFound, "not_found", "no such session"))
        }
    }
}

fn column(name: &str) -> pb::Column {
    pb::Column {
        name: name.into(),
        r#type: "INT64".into(),
    }
}

fn int(v: i64) -> pb::Value {
    pb::Value {
        kind: Some(pb::value::Kind::Int64(v)),
    }
}

fn result(tag: &str) -> pb::ResultSet {
    pb::ResultSet {
        tag: tag.into(),
        ..Default::default()
    }
}

/// The fake's SQL: `SELECT ...` returns one row `v` = the first parameter (or 1);
/// `BEGIN`/`COMMIT`/`ROLLBACK` move the session in and out of a transaction; SQL containing
/// `syntax error`, `no_table` or `weird_code` fails with the matching code; anything else
/// affects one row.
fn run_statement(
    s: &mut State,
    id: u64,
    sql: &str,
    params: &[pb::Value],
) -> Result<pb::ResultSet, Status> {
    let upper = sql.trim().to_uppercase();
    if sql.contains("syntax error") {
        return Err(coded(
            tonic::Code::InvalidArgument,
            "syntax",
            "syntax error at 'error'",
        ));
    }
    if sql.contains("no_table") {
        return Err(coded(
            tonic::Code::NotFound,
            "undefined_table",
            "table no_table does not exist",
        ));
    }
    if sql.contains("weird_code") {
        return Err(coded(
            tonic::Code::Aborted,
            "something_new",
            "a code from the future",
        ));
    }
    if s.in_txn.contains(&id) && s.abort_executes > 0 {
        s.abort_executes -= 1;
        s.in_txn.remove(&id);
        return Err(coded(
            tonic::Code::Aborted,
            "aborted",
            "wounded by an older transaction",
        ));
    }
    if upper.starts_with("SELECT") || upper.starts_with("SHOW") {
        let v = params.first().cloned().unwrap_or(int(1));
        return Ok(pb::ResultSet {
            tag: "SELECT 1".into(),
            columns: vec![column("v")],
            rows: vec![pb::Row { values: vec![v] }],
            read_ts: 7,
            ..Default::default()
        });
    }
    match upper.as_str() {
        "BEGIN" => {
            s.in_txn.insert(id);
            Ok(result("BEGIN"))
        }
        "COMMIT" => {
            s.in_txn.remove(&id);
            s.commits_applied += 1;
            Ok(pb::ResultSet {
                commit_ts: 99,
                ..result("COMMIT")
            })
        }
        "ROLLBACK" => {
            s.in_txn.remove(&id);
            Ok(result("ROLLBACK"))
        }
        _ => {
            if !s.in_txn.contains(&id) {
                s.commits_applied += 1;
            }
            Ok(pb::ResultSet {
                rows_affected: 1,
                ..result("INSERT 1")
            })
        }
    }
}

#[tonic::async_trait]
impl Meridian for Service {
    async fn open_session(
        &self,
        _: Request<pb::OpenSessionRequest>,
    ) -> Result<Response<pb::OpenSessionReply>, Status> {
        let mut s = self.state.lock().unwrap();
        s.next_id += 1;
        let id = s.next_id;
        s.sessions.insert(id);
        Ok(Response::new(pb::OpenSessionReply { session_id: id }))
    }

    async fn close_session(
        &self,
        request: Request<pb::SessionRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let mut s = self.state.lock().unwrap();
        let id = request.into_inner().session_id;
        s.sessions.remove(&id);
        s.in_txn.remove(&id);
        s.closes += 1;
        Ok(Response::new(pb::Empty {}))
    }

    async fn execute(
        &self,
        request: Request<pb::ExecuteRequest>,
    ) -> Result<Response<pb::ExecuteReply>, Status> {
        let request = request.into_inner();
        self.check_session(request.session_id)?;
        let mut s = self.state.lock().unwrap();
        s.executes
            .push((request.sql.clone(), request.params.clone()));
        let mut results = Vec::new();
        for sql in request.sql.split(';').filter(|q| !q.trim().is_empty()) {
            results.push(run_statement(
                &mut s,
                request.session_id,
                sql,
                &request.params,
            )?);
        }
        let in_transaction = s.in_txn.contains(&request.session_id);
        Ok(Response::new(pb::ExecuteReply {
            results,
            in_transaction,
        }))
    }

    async fn begin(
        &self,
        request: Request<pb::BeginRequest>,
    ) -> Result<Response<pb::BeginReply>, Status> {
        let request = request.into_inner();
        self.check_session(request.session_id)?;
        let mut s = self.state.lock().unwrap();
        let asked = request.priority.map(|p| (p.first_start, p.tiebreak));
        s.begins.push((request.read_only, asked, request.bound));
        s.in_txn.insert(request.session_id);
        let n = s.begins.len() as u64;
        let priority = asked.unwrap_or((1000 * n, n));
        s.priorities_returned.push(priority);
        Ok(Response::new(pb::BeginReply {
            priority: Some(pb::Priority {
                first_start: priority.0,
                tiebreak: priority.1,
            }),
        }))
    }

    async fn commit(
        &self,
        request: Request<pb::SessionRequest>,
    ) -> Result<Response<pb::CommitReply>, Status> {
        let id = request.into_inner().session_id;
        self.check_session(id)?;
        let delay = {
            let mut s = self.state.lock().unwrap();
            s.commits_received += 1;
            if !s.in_txn.remove(&id) {
                return Err(coded(
                    tonic::Code::FailedPrecondition,
                    "invalid_transaction_state",
                    "no transaction",
                ));
            }
            if s.always_abort || s.abort_commits > 0 {
                s.abort_commits = s.abort_commits.saturating_sub(1);
                return Err(coded(
                    tonic::Code::Aborted,
                    "aborted",
                    "write-write conflict",
                ));
            }
            s.commits_applied += 1;
            if s.indeterminate_commits > 0 {
                s.indeterminate_commits -= 1;
                return Err(coded(
                    tonic::Code::Unavailable,
                    "indeterminate",
                    "the coordinator lost its participants mid-commit",
                ));
            }
            s.commit_delay
        };
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        Ok(Response::new(pb::CommitReply { commit_ts: 4242 }))
    }

    async fn rollback(
        &self,
        request: Request<pb::SessionRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let id = request.into_inner().session_id;
        self.check_session(id)?;
        let mut s = self.state.lock().unwrap();
        s.in_txn.remove(&id);
        s.rollbacks += 1;
        Ok(Response::new(pb::Empty {}))
    }

    async fn init(&self, _: Request<pb::InitRequest>) -> Result<Response<pb::InitReply>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn status(&self, _: Request<pb::Empty>) -> Result<Response<pb::StatusReply>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

/// A running fake server; stops when dropped.
#[derive(Debug)]
pub struct FakeServer {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<State>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl FakeServer {
    /// Starts a fake on a free port.
    pub async fn start() -> FakeServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = Service::default();
        let state = service.state.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(MeridianServer::new(service))
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        FakeServer {
            addr,
            state,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops the server and waits until its port is closed.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Changes or reads the state.
    pub fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// An address on which nothing listens (a port that was just free).
pub async fn dead_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("{addr}")
}
