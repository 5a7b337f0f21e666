//! SQL for Meridian: statements parsed with sqlparser, a catalog stored in the database
//! itself, plans that turn primary-key predicates into point lookups and range scans, and
//! execution over a transaction's key-value interface.
//!
//! The layer knows nothing of tablets, Raft or the network: it runs statements against a
//! [`Backend`] that begins transactions ([`KvTxn`]). The server implements it over the
//! transaction layer; tests use [`testing::MemoryBackend`].
//!
//! Start reading at [`Session`]. The life of a statement: [`parse`] (text → statements),
//! then the session picks a transaction (explicit, or an autocommit one), then `exec` runs
//! it: `select` / `dml` compile against the [`catalog`] read in that transaction, `plan`
//! chooses the access path, `scan` reads rows (`row` decodes them), and DML buffers its
//! writes until the statement has succeeded.

mod agg;
pub mod catalog;
mod ddl;
mod dml;
mod error;
mod exec;
mod expr;
mod kv;
mod memory;
pub mod parse;
mod plan;
mod result;
mod row;
mod scan;
mod schema;
mod select;
mod session;
mod staleness;
pub mod testing;
mod types;

pub use error::{ErrorCode, SqlError, SqlResult};
pub use kv::{Backend, Kv, KvError, KvFuture, KvTxn, TimestampBound, TxnMode, TxnPriority};
pub use plan::{Access, AccessPath};
pub use result::{QueryResult, ResultColumn};
pub use row::{MAX_KEY_BYTES, MAX_VALUE_BYTES, table_prefix, table_range};
pub use schema::{ColumnDef, TableSchema};
pub use session::{DEFAULT_MAX_ATTEMPTS, Session};
pub use staleness::{format_staleness, parse_staleness};
pub use storage::key::Value;
pub use types::{SqlType, display_value};
