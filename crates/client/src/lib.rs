//! Meridian's embeddable Rust client, and the interactive SQL shell built on it.
//!
//! A [`Client`] connects to any node of a cluster (a list of addresses is tried in order) and
//! runs SQL over the public gRPC API (`proto/meridian/v1/api.proto`):
//!
//! - [`Client::sql`]: autocommit statements, each in its own implicit transaction;
//! - [`Client::read_write`]: a closure run in a read-write transaction, retried on aborts
//!   with its first attempt's priority, and never retried when the commit outcome is unknown;
//! - [`Client::read_only`] and [`Client::read`]: snapshot reads at a [`TimestampBound`];
//! - [`Client::session`]: a [`Session`] for explicit `begin`/`commit` control.
//!
//! ```no_run
//! # async fn f() -> Result<(), client::Error> {
//! use client::{Client, TimestampBound, params};
//! let client = Client::connect("127.0.0.1:26257").await?;
//! client.sql("INSERT INTO accounts (id, balance) VALUES ($1, $2)", &params![1, 100]).await?;
//! let done = client
//!     .read_write(|tx| async move {
//!         tx.update("accounts", &["id"], &["id", "balance"], params![1, 90].to_vec()).await
//!     })
//!     .await?;
//! let total = client
//!     .read("SELECT SUM(balance) FROM accounts", &[], TimestampBound::Strong)
//!     .await?;
//! # let _ = (done, total); Ok(()) }
//! ```
//!
//! Errors carry a stable [`Code`]; [`Error::is_retryable`] says whether a failed transaction
//! may run again. The shell is [`shell::run`].

#![warn(missing_docs)]

mod client;
mod error;
mod mutation;
mod retry;
mod session;
pub mod shell;
mod txn;
mod value;

pub use client::{Client, ClientOptions, ReadReplica, normalize_url};
pub use error::{Code, ERROR_CODE_KEY, Error, UnknownCode};
pub use retry::RetryPolicy;
pub use session::{Priority, Session, TimestampBound};
pub use txn::{Committed, ReadOnlyTxn, Txn};
pub use value::{Column, ResultSet, Row, Value};

/// Builds an array of [`Value`]s from expressions that convert into values, for statement
/// parameters: `&params![1, "alice", 2.5]`.
#[macro_export]
macro_rules! params {
    () => { [] as [$crate::Value; 0] };
    ($($value:expr),+ $(,)?) => { [$($crate::Value::from($value)),+] };
}
