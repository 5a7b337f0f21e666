//! SQL values, rows and result sets as the client sees them, and their wire conversions.
//!
//! Values are a closed enum mirroring the `Value` message. Timestamps are nanoseconds since
//! the Unix epoch (UTC) in an `i64`, as on the wire. A `Value` message with no kind set (an
//! older or newer server) reads as `Null` rather than failing the whole result.

use std::fmt;
use std::sync::Arc;

use proto::v1 as pb;

/// One SQL value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL `NULL`.
    Null,
    /// `INT64`.
    Int64(i64),
    /// `FLOAT64`.
    Float64(f64),
    /// `STRING`.
    String(String),
    /// `BYTES`.
    Bytes(Vec<u8>),
    /// `BOOL`.
    Bool(bool),
    /// `TIMESTAMP`, in nanoseconds since the Unix epoch (UTC).
    Timestamp(i64),
}

impl Value {
    /// Whether this is `NULL`.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The integer, if this is an `INT64`.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int64(v) => Some(*v),
            _ => None,
        }
    }

    /// The float, if this is a `FLOAT64` (or an `INT64`, converted).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Float64(v) => Some(*v),
            Value::Int64(v) => Some(*v as f64),
            _ => None,
        }
    }

    /// The string, if this is a `STRING`.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(v) => Some(v),
            _ => None,
        }
    }

    /// The bytes, if this is `BYTES`.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(v) => Some(v),
            _ => None,
        }
    }

    /// The boolean, if this is a `BOOL`.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(v) => Some(*v),
            _ => None,
        }
    }

    /// The nanoseconds since the epoch, if this is a `TIMESTAMP`.
    pub fn as_timestamp_nanos(&self) -> Option<i64> {
        match self {
            Value::Timestamp(v) => Some(*v),
            _ => None,
        }
    }

    pub(crate) fn into_proto(self) -> pb::Value {
        use pb::value::Kind;
        let kind = match self {
            Value::Null => Kind::Null(true),
            Value::Int64(v) => Kind::Int64(v),
            Value::Float64(v) => Kind::Float64(v),
            Value::String(v) => Kind::String(v),
            Value::Bytes(v) => Kind::Bytes(v),
            Value::Bool(v) => Kind::Bool(v),
            Value::Timestamp(v) => Kind::TimestampNanos(v),
        };
        pb::Value { kind: Some(kind) }
    }

    pub(crate) fn from_proto(value: pb::Value) -> Value {
        use pb::value::Kind;
        match value.kind {
            None | Some(Kind::Null(_)) => Value::Null,
            Some(Kind::Int64(v)) => Value::Int64(v),
            Some(Kind::Float64(v)) => Value::Float64(v),
            Some(Kind::String(v)) => Value::String(v),
            Some(Kind::Bytes(v)) => Value::Bytes(v),
            Some(Kind::Bool(v)) => Value::Bool(v),
            Some(Kind::TimestampNanos(v)) => Value::Timestamp(v),
        }
    }
}

/// Renders values as the shell shows them: `NULL`, numbers, strings unquoted, bytes as
/// `\x` hex, timestamps in UTC as `YYYY-MM-DD HH:MM:SS.nnnnnnnnnZ`.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("NULL"),
            Value::Int64(v) => write!(f, "{v}"),
            Value::Float64(v) => write!(f, "{v}"),
            Value::String(v) => f.write_str(v),
            Value::Bytes(v) => {
                f.write_str("\\x")?;
                v.iter().try_for_each(|b| write!(f, "{b:02x}"))
            }
            Value::Bool(v) => write!(f, "{v}"),
            Value::Timestamp(v) => {
                let t = chrono::DateTime::from_timestamp_nanos(*v);
                write!(f, "{}", t.format("%Y-%m-%d %H:%M:%S%.9fZ"))
            }
        }
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Value {
        Value::Int64(v)
    }
}

impl From<i32> for Value {
    fn from(v: i32) -> Value {
        Value::Int64(i64::from(v))
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Value {
        Value::Float64(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::String(v.to_string())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Value {
        Value::String(v)
    }
}

impl From<&String> for Value {
    fn from(v: &String) -> Value {
        Value::String(v.clone())
    }
}

impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Value {
        Value::Bytes(v)
    }
}

impl From<&[u8]> for Value {
    fn from(v: &[u8]) -> Value {
        Value::Bytes(v.to_vec())
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Value {
        Value::Bool(v)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Value {
        v.map_or(Value::Null, Into::into)
    }
}

/// A result column: its name and SQL type name (e.g. `INT64`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// The column's name.
    pub name: String,
    /// The SQL type's name, as the server reports it.
    pub type_name: String,
}

/// One result row. It shares its result set's column list, so values can be found by name.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    columns: Arc<[Column]>,
    values: Vec<Value>,
}

impl Row {
    /// A row of `values` under `columns` (mostly for tests and fakes).
    pub fn new(columns: Arc<[Column]>, values: Vec<Value>) -> Row {
        Row { columns, values }
    }

    /// The value at position `index`.
    pub fn get(&self, index: usize) -> Option<&Value> {
        self.values.get(index)
    }

    /// The value of the column called `name` (the first such, ASCII case-insensitive).
    pub fn named(&self, name: &str) -> Option<&Value> {
        let index = self
            .columns
            .iter()
            .position(|c| c.name.eq_ignore_ascii_case(name))?;
        self.values.get(index)
    }

    /// The row's columns.
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// The row's values, in column order.
    pub fn values(&self) -> &[Value] {
        &self.values
    }

    /// The values, consuming the row.
    pub fn into_values(self) -> Vec<Value> {
        self.values
    }
}

/// The result of one statement.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultSet {
    /// The command tag, e.g. `"INSERT 3"`, `"SELECT 2"`, `"COMMIT"`.
    pub tag: String,
    /// The columns (empty for statements that return no rows).
    pub columns: Arc<[Column]>,
    /// The rows.
    pub rows: Vec<Row>,
    /// Rows inserted, updated or deleted.
    pub rows_affected: u64,
    /// For a statement that committed: the commit timestamp, in ns since the epoch.
    pub commit_ts: Option<u64>,
    /// For a read: the timestamp it read at, in ns since the epoch.
    pub read_ts: Option<u64>,
}

impl ResultSet {
    pub(crate) fn from_proto(result: pb::ResultSet) -> ResultSet {
        let columns: Arc<[Column]> = result
            .columns
            .into_iter()
            .map(|c| Column {
                name: c.name,
                type_name: c.r#type,
            })
            .collect();
        let rows = result
            .rows
            .into_iter()
            .map(|r| Row {
                columns: columns.clone(),
                values: r.values.into_iter().map(Value::from_proto).collect(),
            })
            .collect();
        ResultSet {
            tag: result.tag,
            columns,
            rows,
            rows_affected: result.rows_affected,
            commit_ts: nonzero(result.commit_ts),
            read_ts: nonzero(result.read_ts),
        }
    }

    /// The first row, if any.
    pub fn first(&self) -> Option<&Row> {
        self.rows.first()
    }
}

fn nonzero(ts: u64) -> Option<u64> {
    (ts != 0).then_some(ts)
}

pub(crate) fn params_to_proto(params: Vec<Value>) -> Vec<pb::Value> {
    params.into_iter().map(Value::into_proto).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn values_round_trip_through_the_wire() {
        let values = [
            Value::Null,
            Value::from(7i64),
            Value::from(1.5),
            Value::from("a"),
            Value::from(vec![1u8, 2]),
            Value::from(true),
            Value::Timestamp(-3),
        ];
        for v in values {
            assert_eq!(Value::from_proto(v.clone().into_proto()), v);
        }
        assert_eq!(Value::from_proto(pb::Value { kind: None }), Value::Null);
        assert_eq!(Value::from(None::<i64>), Value::Null);
    }

    #[test]
    fn rows_find_values_by_name() {
        let rs = ResultSet::from_proto(pb::ResultSet {
            tag: "SELECT 1".into(),
            columns: vec![pb::Column {
                name: "Balance".into(),
                r#type: "INT64".into(),
            }],
            rows: vec![pb::Row {
                values: vec![Value::from(5i64).into_proto()],
            }],
            rows_affected: 0,
            commit_ts: 0,
            read_ts: 9,
        });
        let row = rs.first().unwrap();
        assert_eq!(row.named("balance").and_then(Value::as_i64), Some(5));
        assert_eq!(rs.read_ts, Some(9));
        assert_eq!(rs.commit_ts, None);
        assert_eq!(Value::Bytes(vec![0xab, 1]).to_string(), "\\xab01");
    }
}
