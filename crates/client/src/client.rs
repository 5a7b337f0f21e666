//! [`Client`]: a connection to a Meridian cluster through one of a list of nodes.
//!
//! The client talks to one node at a time (any node serves the whole API). When that node
//! cannot be reached — the connection fails, so the request was never sent — the client moves
//! to the next address in its list, wrapping around, and opens sessions there. A session is
//! bound to the node that opened it; sessions on a node that went away fail with `unavailable`
//! or `not_found` and are dropped.
//!
//! Idle sessions of autocommit statements and transactions are kept in a small pool, so
//! `client.sql(..)` costs one round trip in the common case.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use proto::v1::meridian_client::MeridianClient;
use tonic::transport::{Channel, Endpoint};

use crate::error::{Code, Error};
use crate::retry::RetryPolicy;
use crate::session::{Session, SessionCore, TimestampBound, last_result};
use crate::value::{ResultSet, Value};

/// Largest message the client sends or accepts.
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// How many idle sessions a client keeps for reuse.
const MAX_IDLE_SESSIONS: usize = 8;

/// How a [`Client`] connects and retries.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Longest wait to establish a connection to one node.
    pub connect_timeout: Duration,
    /// Longest wait for any one request's reply. A Commit that times out is `indeterminate`.
    pub request_timeout: Duration,
    /// How [`Client::read_write`] and [`Client::read_only`] retry.
    pub retry: RetryPolicy,
    /// Which replicas serve the sessions' read-only transactions.
    pub read_replica: ReadReplica,
}

/// Which replicas serve a session's read-only transactions (read-write transactions always
/// read at leaders, under locks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadReplica {
    /// Whichever is closest to the node the session is on (its own replica first).
    #[default]
    Any,
    /// The tablets' leaders.
    Leader,
    /// A follower where there is one: snapshot reads without a leader round trip.
    Follower,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            read_replica: ReadReplica::Any,
        }
    }
}

/// A handle on a Meridian cluster. Cheap to clone (clones share connections and the session
/// pool); safe to use from many tasks at once.
#[derive(Debug, Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    endpoints: Vec<Endpoint>,
    current: Mutex<Current>,
    idle: Mutex<Vec<SessionCore>>,
    pub(crate) options: ClientOptions,
}

#[derive(Debug, Clone)]
struct Current {
    index: usize,
    rpc: MeridianClient<Channel>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let idle = std::mem::take(self.idle.get_mut().unwrap_or_else(PoisonError::into_inner));
        for core in idle {
            core.close_in_background();
        }
    }
}

/// Adds `http://` to an address written without a scheme.
pub fn normalize_url(url: &str) -> String {
    let url = url.trim();
    if url.contains("://") {
        url.to_string()
    } else {
        format!("http://{url}")
    }
}

impl Client {
    /// Connects to the node at `url` (`http://host:port` or `host:port`). A comma-separated
    /// list names several nodes, tried in order.
    pub async fn connect(url: &str) -> Result<Client, Error> {
        Client::connect_with(url.split(','), ClientOptions::default()).await
    }

    /// Connects to the first reachable node of `urls`, with `options`.
    pub async fn connect_with<I, S>(urls: I, options: ClientOptions) -> Result<Client, Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let endpoints = urls
            .into_iter()
            .filter(|u| !u.as_ref().trim().is_empty())
            .map(|u| endpoint(u.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()?;
        if endpoints.is_empty() {
            return Err(Error::InvalidUrl {
                url: String::new(),
                reason: "no address given".into(),
            });
        }
        let current = connect_from(&endpoints, 0).await?;
        Ok(Client {
            inner: Arc::new(Inner {
                endpoints,
                current: Mutex::new(current),
                idle: Mutex::new(Vec::new()),
                options,
            }),
        })
    }

    /// The address of the node the client currently talks to.
    pub fn current_url(&self) -> String {
        let index = self.current().index;
        self.inner.endpoints[index].uri().to_string()
    }

    /// The client's options.
    pub fn options(&self) -> &ClientOptions {
        &self.inner.options
    }

    fn current(&self) -> Current {
        self.inner
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Moves to the next reachable node after `failed`, unless another task already moved.
    async fn fail_over(&self, failed: usize) -> Result<(), Error> {
        if self.current().index != failed {
            return Ok(());
        }
        let next = connect_from(&self.inner.endpoints, failed + 1).await?;
        tracing::info!(url = %self.inner.endpoints[next.index].uri(), "failed over");
        *self
            .inner
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = next;
        // Pooled sessions live on the node that failed.
        self.inner
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        Ok(())
    }

    /// Opens a session on the current node, moving to the next on connection failures.
    pub(crate) async fn open_core(&self) -> Result<SessionCore, Error> {
        let mut last = None;
        for _ in 0..self.inner.endpoints.len() {
            let current = self.current();
            match SessionCore::open(current.rpc, self.inner.options.read_replica).await {
                Ok(core) => return Ok(core),
                Err(e) if e.code() == Code::Unavailable => {
                    last = Some(e);
                    self.fail_over(current.index).await?;
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::new(Code::Unavailable, "no node to open a session on")))
    }

    /// A pooled idle session, or a new one.
    pub(crate) async fn take_core(&self) -> Result<SessionCore, Error> {
        let pooled = self
            .inner
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        match pooled {
            Some(core) => Ok(core),
            None => self.open_core().await,
        }
    }

    /// Returns a healthy session with no open transaction to the pool.
    pub(crate) fn give_back(&self, core: SessionCore) {
        let mut idle = self
            .inner
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE_SESSIONS {
            idle.push(core);
        } else {
            drop(idle);
            core.close_in_background();
        }
    }

    /// Opens a session of its own, for explicit transactions and session settings.
    pub async fn session(&self) -> Result<Session, Error> {
        Ok(Session::new(self.open_core().await?))
    }

    /// Runs `sql` (one or more `;`-separated statements, each committing on its own) with
    /// `$1`-style `params`; returns the last statement's result.
    ///
    /// ```no_run
    /// # async fn f(client: client::Client) -> Result<(), client::Error> {
    /// let rs = client.sql("SELECT balance FROM accounts WHERE id = $1", &[7.into()]).await?;
    /// # Ok(()) }
    /// ```
    pub async fn sql(&self, sql: &str, params: &[Value]) -> Result<ResultSet, Error> {
        Ok(last_result(self.execute(sql, params).await?))
    }

    /// Like [`Client::sql`], returning every statement's result.
    ///
    /// A session the server no longer knows, or whose node cannot be reached, is replaced
    /// and the statement sent once more (it cannot have run). A reply lost after the
    /// statement was sent is `indeterminate`: it may have committed. A statement that leaves a transaction open (`BEGIN`) is rolled back
    /// and refused: use [`Client::session`] for explicit transactions.
    pub async fn execute(&self, sql: &str, params: &[Value]) -> Result<Vec<ResultSet>, Error> {
        let mut core = self.take_core().await?;
        let mut executed = core.execute(sql, params, true).await;
        // A pooled session the server forgot, or on a node that cannot be reached (nothing
        // ran: a reply lost in transit would be indeterminate): once more on a new session,
        // which may be on the next node.
        if matches!(&executed, Err(e) if matches!(e.code(), Code::NotFound | Code::Unavailable)) {
            core = self.open_core().await?;
            executed = core.execute(sql, params, true).await;
        }
        let executed = match executed {
            Ok(executed) => executed,
            Err(e) => {
                if !matches!(
                    e.code(),
                    Code::NotFound | Code::Unavailable | Code::Indeterminate
                ) {
                    self.give_back(core);
                }
                return Err(e);
            }
        };
        if executed.in_transaction {
            let _ = core.rollback().await;
            core.close_in_background();
            return Err(Error::new(
                Code::InvalidTransactionState,
                "the statement left a transaction open, so it was rolled back; use \
                 Client::session, Client::read_write or Client::read_only for transactions",
            ));
        }
        self.give_back(core);
        Ok(executed.results)
    }

    /// Runs one read-only `sql` at `bound` in a single-use read-only transaction.
    pub async fn read(
        &self,
        sql: &str,
        params: &[Value],
        bound: TimestampBound,
    ) -> Result<ResultSet, Error> {
        self.read_only(bound, |tx| async move { tx.sql(sql, params).await })
            .await
    }
}

fn endpoint(url: &str, options: &ClientOptions) -> Result<Endpoint, Error> {
    let normalized = normalize_url(url);
    let endpoint = Endpoint::from_shared(normalized).map_err(|e| Error::InvalidUrl {
        url: url.to_string(),
        reason: e.to_string(),
    })?;
    Ok(endpoint
        .connect_timeout(options.connect_timeout)
        .timeout(options.request_timeout)
        .tcp_nodelay(true))
}

/// Connects to the first reachable endpoint, starting at `start` and wrapping around.
async fn connect_from(endpoints: &[Endpoint], start: usize) -> Result<Current, Error> {
    let mut reason = String::new();
    for step in 0..endpoints.len() {
        let index = (start + step) % endpoints.len();
        match endpoints[index].connect().await {
            Ok(channel) => {
                let rpc = MeridianClient::new(channel)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES);
                return Ok(Current { index, rpc });
            }
            Err(e) => {
                reason = format!("{}: {}", endpoints[index].uri(), error_chain(&e));
            }
        }
    }
    Err(Error::Connect {
        urls: endpoints
            .iter()
            .map(|e| e.uri().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        reason,
    })
}

/// An error and its sources, `: `-separated (tonic's transport errors say little on top).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_without_a_scheme_get_http() {
        assert_eq!(normalize_url("127.0.0.1:26257"), "http://127.0.0.1:26257");
        assert_eq!(normalize_url(" http://a:1 "), "http://a:1");
        assert_eq!(normalize_url("https://a:1"), "https://a:1");
    }
}
