//! The public API (`meridian.v1.Meridian`): sessions running SQL, explicit transactions,
//! cluster initialisation and status. Errors become gRPC statuses carrying a stable
//! `meridian-error` code (see `proto/meridian/v1/api.proto`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use proto::v1::meridian_server::{Meridian, MeridianServer};
use proto::v1::{self as pb, value::Kind};
use sql::{QueryResult, Session, SqlError, TimestampBound, TxnMode, TxnPriority, Value};
use tonic::{Request, Response, Status};
use truetime::Timestamp;

use crate::server::{Running, Server};

/// A session idle for this long is closed (its transaction rolled back).
const SESSION_IDLE: Duration = Duration::from_secs(600);

#[derive(Debug)]
struct SessionEntry {
    session: Arc<tokio::sync::Mutex<Session>>,
    last_used: Instant,
}

/// Serves the public API.
#[derive(Debug)]
pub struct ApiService {
    server: Weak<Server>,
    sessions: Mutex<HashMap<u64, SessionEntry>>,
    next_session: AtomicU64,
}

/// A `Status` with the stable `meridian-error` code.
pub fn status(code: &str, message: impl Into<String>) -> Status {
    let grpc = match code {
        "aborted" => tonic::Code::Aborted,
        "unavailable" => tonic::Code::Unavailable,
        "indeterminate" => tonic::Code::Unknown,
        "not_found" => tonic::Code::NotFound,
        "internal" => tonic::Code::Internal,
        "invalid_transaction_state" => tonic::Code::FailedPrecondition,
        "feature_not_supported" => tonic::Code::Unimplemented,
        _ => tonic::Code::InvalidArgument,
    };
    let mut status = Status::new(grpc, message);
    if let Ok(value) = code.parse() {
        status.metadata_mut().insert("meridian-error", value);
    }
    status
}

fn sql_status(e: SqlError) -> Status {
    status(e.code.as_str(), e.message)
}

impl ApiService {
    /// Serves `server`.
    pub fn new(server: Weak<Server>) -> Self {
        ApiService {
            server,
            sessions: Mutex::new(HashMap::new()),
            next_session: AtomicU64::new(1),
        }
    }

    /// The tonic service.
    pub fn into_server(self) -> MeridianServer<ApiService> {
        MeridianServer::new(self)
    }

    fn server(&self) -> Result<Arc<Server>, Status> {
        self.server
            .upgrade()
            .ok_or_else(|| status("unavailable", "the node is shutting down"))
    }

    fn running(&self) -> Result<Arc<Running>, Status> {
        self.server()?.running().cloned().ok_or_else(|| {
            status(
                "unavailable",
                "this node has not joined a cluster yet: run `meridian init` once",
            )
        })
    }

    fn session(&self, id: u64) -> Result<Arc<tokio::sync::Mutex<Session>>, Status> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let entry = sessions.get_mut(&id).ok_or_else(|| {
            status(
                "not_found",
                format!("no session {id} on this node (closed, expired, or the node restarted): open a new one"),
            )
        })?;
        entry.last_used = Instant::now();
        Ok(Arc::clone(&entry.session))
    }

    fn expire_idle(&self) -> Vec<Arc<tokio::sync::Mutex<Session>>> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let idle: Vec<u64> = sessions
            .iter()
            .filter(|(_, e)| e.last_used.elapsed() > SESSION_IDLE)
            .map(|(id, _)| *id)
            .collect();
        idle.iter()
            .filter_map(|id| sessions.remove(id))
            .map(|e| e.session)
            .collect()
    }
}

#[tonic::async_trait]
impl Meridian for ApiService {
    async fn open_session(
        &self,
        request: Request<pb::OpenSessionRequest>,
    ) -> Result<Response<pb::OpenSessionReply>, Status> {
        let running = self.running()?;
        let replicas = match pb::ReadReplica::try_from(request.into_inner().read_replica) {
            Ok(pb::ReadReplica::Leader) => txn::ReplicaChoice::Leader,
            Ok(pb::ReadReplica::Follower) => txn::ReplicaChoice::Follower,
            Ok(pb::ReadReplica::Any) => txn::ReplicaChoice::Any,
            Err(_) => return Err(status("invalid_argument", "unknown read_replica")),
        };
        let backend: Arc<dyn sql::Backend> = if replicas == running.backend.replicas {
            Arc::clone(&running.backend) as Arc<dyn sql::Backend>
        } else {
            Arc::new(running.backend.reading_at(replicas))
        };
        for idle in self.expire_idle() {
            let _ = idle.lock().await.rollback().await;
        }
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        let session = Session::new(backend);
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                id,
                SessionEntry {
                    session: Arc::new(tokio::sync::Mutex::new(session)),
                    last_used: Instant::now(),
                },
            );
        Ok(Response::new(pb::OpenSessionReply { session_id: id }))
    }

    async fn close_session(
        &self,
        request: Request<pb::SessionRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let id = request.into_inner().session_id;
        let entry = self
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        if let Some(entry) = entry {
            let _ = entry.session.lock().await.rollback().await;
        }
        Ok(Response::new(pb::Empty {}))
    }

    async fn execute(
        &self,
        request: Request<pb::ExecuteRequest>,
    ) -> Result<Response<pb::ExecuteReply>, Status> {
        let request = request.into_inner();
        let session = self.session(request.session_id)?;
        let params = request
            .params
            .into_iter()
            .map(from_wire)
            .collect::<Result<Vec<_>, _>>()?;
        let mut session = session.lock().await;
        let results = session
            .execute(&request.sql, &params)
            .await
            .map_err(sql_status)?;
        Ok(Response::new(pb::ExecuteReply {
            results: results.into_iter().map(to_wire_result).collect(),
            in_transaction: session.in_transaction(),
        }))
    }

    async fn begin(
        &self,
        request: Request<pb::BeginRequest>,
    ) -> Result<Response<pb::BeginReply>, Status> {
        let request = request.into_inner();
        let session = self.session(request.session_id)?;
        let mode = if request.read_only {
            TxnMode::ReadOnly(bound_from_wire(request.bound)?)
        } else {
            TxnMode::ReadWrite {
                priority: request.priority.map(|p| TxnPriority {
                    first_start: Timestamp::from_nanos(p.first_start),
                    tiebreak: p.tiebreak,
                }),
            }
        };
        let priority = session.lock().await.begin(mode).await.map_err(sql_status)?;
        Ok(Response::new(pb::BeginReply {
            priority: priority.map(|p| pb::Priority {
                first_start: p.first_start.as_nanos(),
                tiebreak: p.tiebreak,
            }),
        }))
    }

    async fn commit(
        &self,
        request: Request<pb::SessionRequest>,
    ) -> Result<Response<pb::CommitReply>, Status> {
        let session = self.session(request.into_inner().session_id)?;
        let commit_ts = session.lock().await.commit().await.map_err(sql_status)?;
        Ok(Response::new(pb::CommitReply {
            commit_ts: commit_ts.map_or(0, Timestamp::as_nanos),
        }))
    }

    async fn rollback(
        &self,
        request: Request<pb::SessionRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let session = self.session(request.into_inner().session_id)?;
        session.lock().await.rollback().await.map_err(sql_status)?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn init(&self, _: Request<pb::InitRequest>) -> Result<Response<pb::InitReply>, Status> {
        let server = self.server()?;
        let membership = crate::admin::init_cluster(&server)
            .await
            .map_err(|e| status("invalid_argument", format!("{e:#}")))?;
        Ok(Response::new(pb::InitReply {
            nodes: membership
                .nodes
                .iter()
                .map(|(id, address)| pb::NodeInfo {
                    node_id: id.0,
                    address: address.clone(),
                    live: true,
                })
                .collect(),
        }))
    }

    async fn status(&self, _: Request<pb::Empty>) -> Result<Response<pb::StatusReply>, Status> {
        let server = self.server()?;
        let Some(running) = server.running() else {
            return Ok(Response::new(pb::StatusReply {
                address: server.address().to_string(),
                ..Default::default()
            }));
        };
        Ok(Response::new(crate::status::status(&server, running).await))
    }
}

/// A wire value as a SQL value.
pub fn from_wire(value: pb::Value) -> Result<Value, Status> {
    Ok(match value.kind {
        None | Some(Kind::Null(_)) => Value::Null,
        Some(Kind::Int64(v)) => Value::Int64(v),
        Some(Kind::Float64(v)) => Value::Float64(v),
        Some(Kind::String(v)) => Value::String(v),
        Some(Kind::Bytes(v)) => Value::Bytes(v),
        Some(Kind::Bool(v)) => Value::Bool(v),
        Some(Kind::TimestampNanos(n)) => Value::Timestamp {
            secs: n.div_euclid(1_000_000_000),
            nanos: n.rem_euclid(1_000_000_000) as u32,
        },
    })
}

/// A SQL value on the wire.
pub fn to_wire(value: Value) -> pb::Value {
    let kind = match value {
        Value::Null => Kind::Null(true),
        Value::Int64(v) => Kind::Int64(v),
        Value::Float64(v) => Kind::Float64(v),
        Value::String(v) => Kind::String(v),
        Value::Bytes(v) => Kind::Bytes(v),
        Value::Bool(v) => Kind::Bool(v),
        Value::Timestamp { secs, nanos } => Kind::TimestampNanos(
            secs.saturating_mul(1_000_000_000)
                .saturating_add(i64::from(nanos)),
        ),
    };
    pb::Value { kind: Some(kind) }
}

fn to_wire_result(result: QueryResult) -> pb::ResultSet {
    pb::ResultSet {
        tag: result.tag,
        columns: result
            .columns
            .into_iter()
            .map(|c| pb::Column {
                name: c.name,
                r#type: c.ty.map(|t| t.to_string()).unwrap_or_default(),
            })
            .collect(),
        rows: result
            .rows
            .into_iter()
            .map(|row| pb::Row {
                values: row.into_iter().map(to_wire).collect(),
            })
            .collect(),
        rows_affected: result.rows_affected,
        commit_ts: result.commit_ts.map_or(0, Timestamp::as_nanos),
        read_ts: result.read_ts.map_or(0, Timestamp::as_nanos),
    }
}

fn bound_from_wire(bound: Option<pb::TimestampBound>) -> Result<TimestampBound, Status> {
    use pb::timestamp_bound::Bound;
    Ok(match bound.and_then(|b| b.bound) {
        None | Some(Bound::Strong(_)) => TimestampBound::Strong,
        Some(Bound::ExactStalenessUs(us)) => {
            TimestampBound::ExactStaleness(Duration::from_micros(us))
        }
        Some(Bound::MaxStalenessUs(us)) => TimestampBound::MaxStaleness(Duration::from_micros(us)),
        Some(Bound::ReadTimestamp(ns)) => TimestampBound::ReadTimestamp(Timestamp::from_nanos(ns)),
        Some(Bound::MinReadTimestamp(ns)) => {
            TimestampBound::MinReadTimestamp(Timestamp::from_nanos(ns))
        }
    })
}
