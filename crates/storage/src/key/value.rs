//! [`Value`]: one SQL value as it appears in a key, and its SQL order.

use std::cmp::Ordering;
use std::fmt;

/// The SQL types a key column can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ColumnType {
    /// 64-bit signed integer.
    Int64,
    /// IEEE 754 double.
    Float64,
    /// UTF-8 text.
    String,
    /// Arbitrary bytes.
    Bytes,
    /// Boolean.
    Bool,
    /// A UTC instant with nanosecond precision.
    Timestamp,
}

/// One SQL value. `Null` belongs to every type.
#[derive(Clone, PartialEq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// INT64.
    Int64(i64),
    /// FLOAT64. In keys, `-0.0` is the same key as `0.0` and every NaN is the same key.
    Float64(f64),
    /// STRING.
    String(String),
    /// BYTES.
    Bytes(Vec<u8>),
    /// BOOL.
    Bool(bool),
    /// TIMESTAMP as seconds and nanoseconds since the Unix epoch (UTC); nanos `< 2·10^9`
    /// (chrono's leap-second representation).
    Timestamp {
        /// Whole seconds since the epoch, negative before it.
        secs: i64,
        /// Nanoseconds within the second.
        nanos: u32,
    },
}

impl Value {
    /// The value's type, `None` for NULL.
    pub fn column_type(&self) -> Option<ColumnType> {
        Some(match self {
            Value::Null => return None,
            Value::Int64(_) => ColumnType::Int64,
            Value::Float64(_) => ColumnType::Float64,
            Value::String(_) => ColumnType::String,
            Value::Bytes(_) => ColumnType::Bytes,
            Value::Bool(_) => ColumnType::Bool,
            Value::Timestamp { .. } => ColumnType::Timestamp,
        })
    }

    /// A TIMESTAMP value from a chrono instant.
    pub fn from_datetime(t: chrono::DateTime<chrono::Utc>) -> Value {
        Value::Timestamp {
            secs: t.timestamp(),
            nanos: t.timestamp_subsec_nanos(),
        }
    }

    /// SQL's order for values of the same type, as key order defines it: NULL first, then
    /// NaN, then numbers ascending (`-0.0 == 0.0`); strings and bytes by bytes; false < true.
    /// Values of different types order by type (they never share a column).
    pub fn sql_cmp(&self, other: &Value) -> Ordering {
        match (self, other) {
            (Value::Null, Value::Null) => Ordering::Equal,
            (Value::Null, _) => Ordering::Less,
            (_, Value::Null) => Ordering::Greater,
            (Value::Int64(a), Value::Int64(b)) => a.cmp(b),
            (Value::Float64(a), Value::Float64(b)) => float_cmp(*a, *b),
            (Value::String(a), Value::String(b)) => a.as_bytes().cmp(b.as_bytes()),
            (Value::Bytes(a), Value::Bytes(b)) => a.cmp(b),
            (Value::Bool(a), Value::Bool(b)) => a.cmp(b),
            (
                Value::Timestamp {
                    secs: s1,
                    nanos: n1,
                },
                Value::Timestamp {
                    secs: s2,
                    nanos: n2,
                },
            ) => (s1, n1).cmp(&(s2, n2)),
            (a, b) => type_rank(a).cmp(&type_rank(b)),
        }
    }
}

fn type_rank(v: &Value) -> u8 {
    super::encode::tag(v)
}

/// NaN < -inf < ... < -0.0 == 0.0 < ... < +inf.
fn float_cmp(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => write!(f, "NULL"),
            Value::Int64(v) => write!(f, "{v}"),
            Value::Float64(v) => write!(f, "{v:?}"),
            Value::String(v) => write!(f, "{v:?}"),
            Value::Bytes(v) => write!(f, "b{:?}", String::from_utf8_lossy(v)),
            Value::Bool(v) => write!(f, "{v}"),
            Value::Timestamp { secs, nanos } => write!(f, "ts({secs}.{nanos:09})"),
        }
    }
}
