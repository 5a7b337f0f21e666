//! Test support, public so integration tests in other crates can use it:
//! [`MemoryBackend`] and the text forms sqllogictest compares.
//!
//! To run the `sql/*.slt` corpus against another backend, wrap a [`crate::Session`] over it
//! in an `AsyncDB` whose `run` calls [`slt_run`] (see `crates/sql/tests/sqllogic.rs`).

pub use crate::memory::{COMMIT_STEP_NANOS, MemoryBackend, START_NANOS};

use storage::key::Value;

use crate::error::SqlResult;
use crate::session::Session;
use crate::types::{SqlType, display_value};

/// What sqllogictest compares: rows as text, or a statement's affected-row count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SltOutput {
    /// A result with columns: a type character per column (`I` integer, `R` float, `T`
    /// other) and the rows as text.
    Rows {
        /// One of `I`, `R`, `T` per column.
        types: Vec<char>,
        /// Formatted values.
        rows: Vec<Vec<String>>,
    },
    /// A statement without a result set.
    Complete(u64),
}

/// sqllogictest's text form of a value: `NULL`, `(empty)` for the empty string, else
/// [`display_value`].
pub fn slt_value(v: &Value) -> String {
    match v {
        Value::String(s) if s.is_empty() => "(empty)".to_string(),
        v => display_value(v),
    }
}

/// Runs `sql` (one or more statements) in `session`; returns the last statement's output.
pub async fn slt_run(session: &mut Session, sql: &str) -> SqlResult<SltOutput> {
    let results = session.execute(sql, &[]).await?;
    let Some(last) = results.last() else {
        return Ok(SltOutput::Complete(0));
    };
    if !last.has_rows() {
        return Ok(SltOutput::Complete(last.rows_affected));
    }
    let types = last
        .columns
        .iter()
        .map(|c| match c.ty {
            Some(SqlType::Int64) => 'I',
            Some(SqlType::Float64) => 'R',
            _ => 'T',
        })
        .collect();
    let rows = last
        .rows
        .iter()
        .map(|r| r.iter().map(slt_value).collect())
        .collect();
    Ok(SltOutput::Rows { types, rows })
}
