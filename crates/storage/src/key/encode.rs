//! Encoding and decoding of composite keys, so that byte order is SQL order.
//!
//! Each column is a tag byte followed by a payload; a descending column is the same bytes
//! with every bit inverted. Every encoding is prefix-free (fixed width, or terminated), so
//! the concatenation of columns orders like the tuple, and inverting a column's bytes
//! reverses its order without disturbing the columns after it.
//!
//! | type      | payload                                                              |
//! |-----------|----------------------------------------------------------------------|
//! | NULL      | none (tag 0x01: sorts first ascending, last descending)              |
//! | INT64     | big-endian with the sign bit flipped                                 |
//! | FLOAT64   | IEEE bits; negatives inverted, positives with the sign bit set;      |
//! |           | `-0.0` written as `0.0`, every NaN as all-zero bytes (below -inf)    |
//! | STRING    | UTF-8 bytes, escaped: `0x00` → `0x00 0xFF`, then `0x00 0x01`          |
//! | BYTES     | as STRING                                                            |
//! | BOOL      | `0x00` or `0x01`                                                     |
//! | TIMESTAMP | seconds as INT64, then nanoseconds as big-endian u32                 |

use super::value::{ColumnType, Value};
use crate::error::StorageError;

/// A key column's sort direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Direction {
    /// Smallest first.
    #[default]
    Ascending,
    /// Largest first.
    Descending,
}

const TAG_NULL: u8 = 0x01;
const TAG_BOOL: u8 = 0x10;
const TAG_INT64: u8 = 0x20;
const TAG_FLOAT64: u8 = 0x30;
const TAG_TIMESTAMP: u8 = 0x40;
const TAG_STRING: u8 = 0x50;
const TAG_BYTES: u8 = 0x60;

const ESCAPE: u8 = 0x00;
const ESCAPED_ZERO: u8 = 0xFF;
const TERMINATOR: u8 = 0x01;

pub(super) fn tag(v: &Value) -> u8 {
    match v {
        Value::Null => TAG_NULL,
        Value::Bool(_) => TAG_BOOL,
        Value::Int64(_) => TAG_INT64,
        Value::Float64(_) => TAG_FLOAT64,
        Value::Timestamp { .. } => TAG_TIMESTAMP,
        Value::String(_) => TAG_STRING,
        Value::Bytes(_) => TAG_BYTES,
    }
}

/// Appends the escaped, terminated form of `bytes`: order-preserving and prefix-free.
pub fn escape_into(out: &mut Vec<u8>, bytes: &[u8]) {
    for &b in bytes {
        out.push(b);
        if b == ESCAPE {
            out.push(ESCAPED_ZERO);
        }
    }
    out.extend_from_slice(&[ESCAPE, TERMINATOR]);
}

/// Reads an escaped, terminated byte string from the front of `input`; returns it and the
/// number of input bytes consumed.
pub fn unescape(input: &[u8]) -> Result<(Vec<u8>, usize), StorageError> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < input.len() {
        let b = input[i];
        if b != ESCAPE {
            out.push(b);
            i += 1;
            continue;
        }
        match input.get(i + 1) {
            Some(&ESCAPED_ZERO) => out.push(ESCAPE),
            Some(&TERMINATOR) => return Ok((out, i + 2)),
            _ => return Err(corrupt("bad escape in key")),
        }
        i += 2;
    }
    Err(corrupt("unterminated string in key"))
}

fn corrupt(what: &str) -> StorageError {
    StorageError::Corruption {
        what: what.to_string(),
    }
}

fn float_key_bits(f: f64) -> u64 {
    if f.is_nan() {
        return 0;
    }
    let f = if f == 0.0 { 0.0 } else { f }; // -0.0 and 0.0 are one key
    let bits = f.to_bits();
    if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    }
}

fn float_from_key_bits(bits: u64) -> f64 {
    if bits == 0 {
        return f64::NAN;
    }
    f64::from_bits(if bits >> 63 == 1 {
        bits & !(1 << 63)
    } else {
        !bits
    })
}

/// Appends one column of a key.
pub fn encode_value(out: &mut Vec<u8>, value: &Value, direction: Direction) {
    let start = out.len();
    out.push(tag(value));
    match value {
        Value::Null => {}
        Value::Bool(b) => out.push(u8::from(*b)),
        Value::Int64(v) => out.extend_from_slice(&((*v as u64) ^ (1 << 63)).to_be_bytes()),
        Value::Float64(f) => out.extend_from_slice(&float_key_bits(*f).to_be_bytes()),
        Value::Timestamp { secs, nanos } => {
            out.extend_from_slice(&((*secs as u64) ^ (1 << 63)).to_be_bytes());
            out.extend_from_slice(&nanos.to_be_bytes());
        }
        Value::String(s) => escape_into(out, s.as_bytes()),
        Value::Bytes(b) => escape_into(out, b),
    }
    if direction == Direction::Descending {
        out[start..].iter_mut().for_each(|b| *b = !*b);
    }
}

/// Encodes a composite key: the columns in order, each in its direction.
pub fn encode_key<'a>(columns: impl IntoIterator<Item = (&'a Value, Direction)>) -> Vec<u8> {
    let mut out = Vec::new();
    for (value, direction) in columns {
        encode_value(&mut out, value, direction);
    }
    out
}

/// Decodes a key produced by [`encode_key`] with the same column types and directions.
pub fn decode_key(
    mut key: &[u8],
    columns: &[(ColumnType, Direction)],
) -> Result<Vec<Value>, StorageError> {
    let mut values = Vec::with_capacity(columns.len());
    for &(ty, direction) in columns {
        // Un-invert a descending column into a scratch buffer; ascending ones read in place.
        let owned: Vec<u8>;
        let input: &[u8] = match direction {
            Direction::Ascending => key,
            Direction::Descending => {
                owned = key.iter().map(|b| !b).collect();
                &owned
            }
        };
        let (value, used) = decode_value(input, ty)?;
        values.push(value);
        key = &key[used..];
    }
    if !key.is_empty() {
        return Err(corrupt("trailing bytes after key"));
    }
    Ok(values)
}

fn fixed<const N: usize>(input: &[u8]) -> Result<[u8; N], StorageError> {
    input
        .get(..N)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| corrupt("key too short"))
}

fn decode_value(input: &[u8], ty: ColumnType) -> Result<(Value, usize), StorageError> {
    let (&tag, rest) = input
        .split_first()
        .ok_or_else(|| corrupt("key too short"))?;
    if tag == TAG_NULL {
        return Ok((Value::Null, 1));
    }
    let (value, used) = match (ty, tag) {
        (ColumnType::Bool, TAG_BOOL) => match fixed::<1>(rest)? {
            [0] => (Value::Bool(false), 1),
            [1] => (Value::Bool(true), 1),
            _ => return Err(corrupt("bad BOOL in key")),
        },
        (ColumnType::Int64, TAG_INT64) => (
            Value::Int64((u64::from_be_bytes(fixed(rest)?) ^ (1 << 63)) as i64),
            8,
        ),
        (ColumnType::Float64, TAG_FLOAT64) => (
            Value::Float64(float_from_key_bits(u64::from_be_bytes(fixed(rest)?))),
            8,
        ),
        (ColumnType::Timestamp, TAG_TIMESTAMP) => {
            let secs = (u64::from_be_bytes(fixed(rest)?) ^ (1 << 63)) as i64;
            let nanos = u32::from_be_bytes(fixed(&rest[8..])?);
            (Value::Timestamp { secs, nanos }, 12)
        }
        (ColumnType::String, TAG_STRING) => {
            let (bytes, used) = unescape(rest)?;
            let s = String::from_utf8(bytes).map_err(|_| corrupt("STRING in key is not UTF-8"))?;
            (Value::String(s), used)
        }
        (ColumnType::Bytes, TAG_BYTES) => {
            let (bytes, used) = unescape(rest)?;
            (Value::Bytes(bytes), used)
        }
        _ => return Err(corrupt("key column has the wrong type tag")),
    };
    Ok((value, used + 1))
}
