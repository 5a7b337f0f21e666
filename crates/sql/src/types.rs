//! SQL types: [`SqlType`] (a column's declared type, Spanner and PostgreSQL spellings
//! alike), the coercion of a value into a column's type on write, and the text forms of
//! values and timestamps.
//!
//! Values themselves are [`storage::key::Value`], the same type keys are encoded from, so a
//! primary-key value needs no conversion before [`storage::key::encode_key`].
//!
//! TIMESTAMP values are held as seconds and nanoseconds but stored as `i64` nanoseconds
//! since the epoch (the commit-timestamp placeholder format), so they must lie between
//! 1677-09-21 and 2262-04-11; anything outside is an `invalid_argument` error on write.

use std::fmt;

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use sqlparser::ast::{CharacterLength, DataType, TimezoneInfo};
use storage::key::{ColumnType, Value};

use crate::error::{SqlError, SqlResult};

/// A column's declared type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SqlType {
    /// INT64 / BIGINT / INT / INTEGER.
    Int64,
    /// FLOAT64 / DOUBLE PRECISION / FLOAT / REAL.
    Float64,
    /// STRING / TEXT / VARCHAR, with an optional maximum length in characters.
    String(Option<u64>),
    /// BYTES / BYTEA, with an optional maximum length in bytes.
    Bytes(Option<u64>),
    /// BOOL / BOOLEAN.
    Bool,
    /// TIMESTAMP / TIMESTAMPTZ (always UTC).
    Timestamp,
}

impl SqlType {
    /// Maps a parsed data type; errors name the types that are accepted.
    pub fn from_ast(dt: &DataType) -> SqlResult<SqlType> {
        Ok(match dt {
            DataType::Int64 | DataType::BigInt(_) | DataType::Int(_) | DataType::Integer(_) => {
                SqlType::Int64
            }
            DataType::Float64
            | DataType::DoublePrecision
            | DataType::Double(_)
            | DataType::Float(_)
            | DataType::Real => SqlType::Float64,
            DataType::String(n) => SqlType::String(*n),
            DataType::Text => SqlType::String(None),
            DataType::Varchar(n) | DataType::CharacterVarying(n) => {
                SqlType::String(char_length(n.as_ref()))
            }
            DataType::Bytes(n) => SqlType::Bytes(*n),
            DataType::Bytea => SqlType::Bytes(None),
            DataType::Bool | DataType::Boolean => SqlType::Bool,
            DataType::Timestamp(_, TimezoneInfo::None | TimezoneInfo::Tz)
            | DataType::Timestamp(_, TimezoneInfo::WithTimeZone)
            | DataType::Timestamp(_, TimezoneInfo::WithoutTimeZone) => SqlType::Timestamp,
            other => {
                return Err(SqlError::unsupported(format!(
                    "type {other} is not supported; use INT64, FLOAT64, STRING(n), BYTES, \
                     BOOL or TIMESTAMP (or BIGINT, DOUBLE PRECISION, TEXT, VARCHAR(n), \
                     BYTEA, BOOLEAN, TIMESTAMPTZ)"
                )));
            }
        })
    }

    /// The key-encoding type.
    pub fn column_type(self) -> ColumnType {
        match self {
            SqlType::Int64 => ColumnType::Int64,
            SqlType::Float64 => ColumnType::Float64,
            SqlType::String(_) => ColumnType::String,
            SqlType::Bytes(_) => ColumnType::Bytes,
            SqlType::Bool => ColumnType::Bool,
            SqlType::Timestamp => ColumnType::Timestamp,
        }
    }

    /// The type of a value, `None` for NULL.
    pub fn of(value: &Value) -> Option<SqlType> {
        Some(match value.column_type()? {
            ColumnType::Int64 => SqlType::Int64,
            ColumnType::Float64 => SqlType::Float64,
            ColumnType::String => SqlType::String(None),
            ColumnType::Bytes => SqlType::Bytes(None),
            ColumnType::Bool => SqlType::Bool,
            ColumnType::Timestamp => SqlType::Timestamp,
        })
    }

    /// Converts `value` for storage in a column of this type (`column` names it in errors).
    /// INT64 widens to FLOAT64; a string parses as a TIMESTAMP; a string is stored in a
    /// BYTES column as its UTF-8 bytes (or as hex after `\x`). NULL passes through.
    pub fn coerce(self, value: Value, column: &str) -> SqlResult<Value> {
        let value = match (self, value) {
            (_, Value::Null) => Value::Null,
            (SqlType::Int64, v @ Value::Int64(_)) => v,
            (SqlType::Float64, Value::Int64(i)) => Value::Float64(i as f64),
            (SqlType::Float64, v @ Value::Float64(_)) => v,
            (SqlType::String(_), v @ Value::String(_)) => v,
            (SqlType::Bytes(_), v @ Value::Bytes(_)) => v,
            (SqlType::Bytes(_), Value::String(s)) => Value::Bytes(string_to_bytes(&s)?),
            (SqlType::Bool, v @ Value::Bool(_)) => v,
            (SqlType::Timestamp, v @ Value::Timestamp { .. }) => v,
            (SqlType::Timestamp, Value::String(s)) => parse_timestamp(&s)?,
            (ty, v) => {
                return Err(SqlError::mismatch(format!(
                    "column {column} is {ty} but the value {} is {}; write a {ty} value or \
                     CAST it",
                    display_value(&v),
                    type_name(&v)
                )));
            }
        };
        self.check_length(&value, column)?;
        Ok(value)
    }

    fn check_length(self, value: &Value, column: &str) -> SqlResult<()> {
        let (len, max) = match (self, value) {
            (SqlType::String(Some(max)), Value::String(s)) => (s.chars().count() as u64, max),
            (SqlType::Bytes(Some(max)), Value::Bytes(b)) => (b.len() as u64, max),
            _ => return Ok(()),
        };
        if len > max {
            return Err(SqlError::too_large(format!(
                "value too large for column {column} ({self}): {len} > {max}; shorten it"
            )));
        }
        Ok(())
    }
}

fn char_length(n: Option<&CharacterLength>) -> Option<u64> {
    match n {
        Some(CharacterLength::IntegerLength { length, .. }) => Some(*length),
        _ => None,
    }
}

impl fmt::Display for SqlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SqlType::Int64 => f.write_str("INT64"),
            SqlType::Float64 => f.write_str("FLOAT64"),
            SqlType::String(None) => f.write_str("STRING"),
            SqlType::String(Some(n)) => write!(f, "STRING({n})"),
            SqlType::Bytes(None) => f.write_str("BYTES"),
            SqlType::Bytes(Some(n)) => write!(f, "BYTES({n})"),
            SqlType::Bool => f.write_str("BOOL"),
            SqlType::Timestamp => f.write_str("TIMESTAMP"),
        }
    }
}

/// The type name of a value, for messages.
pub fn type_name(v: &Value) -> String {
    SqlType::of(v).map_or_else(|| "NULL".to_string(), |t| t.to_string())
}

/// `\xABCD` is hex; anything else is the string's UTF-8 bytes.
fn string_to_bytes(s: &str) -> SqlResult<Vec<u8>> {
    match s.strip_prefix("\\x") {
        Some(hex) => parse_hex(hex),
        None => Ok(s.as_bytes().to_vec()),
    }
}

/// Decodes hex digits (an even number of them).
pub fn parse_hex(hex: &str) -> SqlResult<Vec<u8>> {
    let bad = || SqlError::invalid(format!("{hex:?} is not hexadecimal bytes"));
    if !hex.len().is_multiple_of(2) {
        return Err(bad());
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|d| u8::from_str_radix(d, 16).ok())
                .ok_or_else(bad)
        })
        .collect()
}

/// Parses RFC 3339 (`2024-05-01T12:00:00Z`, any offset) or `YYYY-MM-DD HH:MM:SS[.f]`
/// (taken as UTC) or `YYYY-MM-DD`.
pub fn parse_timestamp(s: &str) -> SqlResult<Value> {
    let s = s.trim();
    let parsed = DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .or_else(|_| DateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f%#z").map(|t| t.to_utc()))
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").map(|t| t.and_utc()))
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").map(|t| t.and_utc()))
        .or_else(|_| {
            chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .map(|d| d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc())
        });
    match parsed {
        Ok(t) => Ok(Value::from_datetime(t)),
        Err(_) => Err(SqlError::invalid(format!(
            "{s:?} is not a timestamp; write RFC 3339, e.g. '2024-05-01T12:00:00Z'"
        ))),
    }
}

/// Nanoseconds since the epoch of a TIMESTAMP value, if it fits the stored `i64` range.
pub fn timestamp_nanos(secs: i64, nanos: u32) -> SqlResult<i64> {
    secs.checked_mul(1_000_000_000)
        .and_then(|s| s.checked_add(i64::from(nanos)))
        .ok_or_else(|| {
            SqlError::invalid("timestamp out of range: it must lie between 1677 and 2262")
        })
}

/// The TIMESTAMP value `nanos` after the epoch.
pub fn timestamp_from_nanos(nanos: i64) -> Value {
    Value::Timestamp {
        secs: nanos.div_euclid(1_000_000_000),
        nanos: nanos.rem_euclid(1_000_000_000) as u32,
    }
}

/// Formats a value as text: RFC 3339 for timestamps, `\x..` hex for bytes, `NULL`.
pub fn display_value(v: &Value) -> String {
    match v {
        Value::Null => "NULL".to_string(),
        Value::Int64(i) => i.to_string(),
        Value::Float64(f) => f.to_string(),
        Value::String(s) => s.clone(),
        Value::Bytes(b) => {
            let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
            format!("\\x{hex}")
        }
        Value::Bool(b) => b.to_string(),
        Value::Timestamp { secs, nanos } => match DateTime::from_timestamp(*secs, *nanos) {
            Some(t) => t.to_rfc3339_opts(SecondsFormat::AutoSi, true),
            None => format!("{secs}.{nanos:09}"),
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn timestamps_parse_and_print() {
        let v = parse_timestamp("2024-05-01T12:00:00.5Z").unwrap();
        assert_eq!(display_value(&v), "2024-05-01T12:00:00.500Z");
        let v2 = parse_timestamp("2024-05-01 12:00:00.5").unwrap();
        assert_eq!(v, v2);
        assert!(parse_timestamp("yesterday").is_err());
        let Value::Timestamp { secs, nanos } = v else {
            panic!("not a timestamp")
        };
        let n = timestamp_nanos(secs, nanos).unwrap();
        assert_eq!(timestamp_from_nanos(n), v);
        assert_eq!(
            timestamp_from_nanos(-1),
            Value::Timestamp {
                secs: -1,
                nanos: 999_999_999
            }
        );
    }

    #[test]
    fn coercion_enforces_length_and_type() {
        let t = SqlType::String(Some(3));
        assert!(t.coerce(Value::String("abc".into()), "c").is_ok());
        assert_eq!(
            t.coerce(Value::String("abcd".into()), "c")
                .unwrap_err()
                .code,
            crate::ErrorCode::ValueTooLarge
        );
        assert_eq!(
            SqlType::Int64
                .coerce(Value::Bool(true), "c")
                .unwrap_err()
                .code,
            crate::ErrorCode::DatatypeMismatch
        );
        assert_eq!(
            SqlType::Float64.coerce(Value::Int64(2), "c").unwrap(),
            Value::Float64(2.0)
        );
    }
}
