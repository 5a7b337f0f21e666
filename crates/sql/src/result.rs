//! [`QueryResult`]: what one statement returns.

use storage::key::Value;
use truetime::Timestamp;

use crate::types::SqlType;

/// A result column: its name and type (`None` when the expression is always NULL or its
/// type is unknown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultColumn {
    /// The column name (its alias, the column's name, or the expression's text).
    pub name: String,
    /// Its type.
    pub ty: Option<SqlType>,
}

/// The result of one statement.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct QueryResult {
    /// A PostgreSQL-style command tag: `SELECT 2`, `INSERT 3`, `UPDATE 1`, `DELETE 0`,
    /// `CREATE TABLE`, `DROP TABLE`, `BEGIN`, `COMMIT`, `ROLLBACK`, `SET`, `SHOW`, ...
    pub tag: String,
    /// The result columns; empty for statements that return no rows.
    pub columns: Vec<ResultColumn>,
    /// The rows, each with one value per column.
    pub rows: Vec<Vec<Value>>,
    /// Rows returned (queries) or inserted, updated or deleted (DML).
    pub rows_affected: u64,
    /// The commit timestamp, when this statement committed a read-write transaction (an
    /// autocommit DML or DDL statement, or COMMIT).
    pub commit_ts: Option<Timestamp>,
    /// The snapshot timestamp, when this statement read in a read-only transaction.
    pub read_ts: Option<Timestamp>,
}

impl QueryResult {
    /// A result with only a tag.
    pub fn tag(tag: impl Into<String>) -> Self {
        QueryResult {
            tag: tag.into(),
            ..QueryResult::default()
        }
    }

    /// A result of `rows` under `columns`, tagged `SELECT n` (or `tag n`).
    pub fn rows(tag: &str, columns: Vec<ResultColumn>, rows: Vec<Vec<Value>>) -> Self {
        QueryResult {
            tag: format!("{tag} {}", rows.len()),
            rows_affected: rows.len() as u64,
            columns,
            rows,
            ..QueryResult::default()
        }
    }

    /// Whether the statement returns rows (a query, SHOW, EXPLAIN).
    pub fn has_rows(&self) -> bool {
        !self.columns.is_empty()
    }
}

/// A column of a SHOW or EXPLAIN result.
pub(crate) fn text_column(name: &str) -> ResultColumn {
    ResultColumn {
        name: name.to_string(),
        ty: Some(SqlType::String(None)),
    }
}
