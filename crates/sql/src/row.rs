//! Where rows live and how they are stored.
//!
//! A row's key is `b"t" ++ table_id (u64 big-endian) ++ encode_key(primary key, ascending)`,
//! so a table is one contiguous range `[prefix(id), prefix(id + 1))` and key order is
//! primary-key order. The catalog lives under `b"c"`, below every table.
//!
//! A row's value holds the non-key columns in schema order, after a format byte (`1`):
//! each is a tag (`0` NULL, `1` a value, `2` a commit-timestamp placeholder) then the
//! payload: INT64, FLOAT64 (IEEE bits) and TIMESTAMP (`i64` nanoseconds since the epoch) as
//! 8 bytes big-endian, BOOL as one byte, STRING and BYTES as a `u32` big-endian length and
//! the bytes. A placeholder is 8 zero bytes whose offset is passed to [`crate::Kv::put`];
//! the layer below overwrites them with the commit timestamp. A placeholder still zero was
//! written by the reading transaction itself and is not yet known: reading it is an error.
//!
//! Limits: a key at most [`MAX_KEY_BYTES`], a value at most [`MAX_VALUE_BYTES`].

use storage::key::{Direction, Value, encode_key};

use crate::error::{SqlError, SqlResult};
use crate::schema::TableSchema;
use crate::types::{SqlType, timestamp_from_nanos, timestamp_nanos};

/// The largest key, in bytes.
pub const MAX_KEY_BYTES: usize = 8 * 1024;
/// The largest row value, in bytes.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;

const FORMAT: u8 = 1;
const TAG_NULL: u8 = 0;
const TAG_VALUE: u8 = 1;
const TAG_COMMIT_TS: u8 = 2;

/// The 9-byte prefix of every key of table `id`.
pub fn table_prefix(id: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(b't');
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// The key range `[start, end)` of table `id`.
pub fn table_range(id: u64) -> (Vec<u8>, Vec<u8>) {
    let end = match id.checked_add(1) {
        Some(next) => table_prefix(next),
        None => vec![b'u'],
    };
    (table_prefix(id), end)
}

/// The smallest key greater than every key that starts with `prefix` (`None`: no bound).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// The key of the row whose primary-key values are `pk` (already coerced to their types).
pub fn row_key(table: &TableSchema, pk: &[Value]) -> SqlResult<Vec<u8>> {
    for (value, &i) in pk.iter().zip(&table.primary_key) {
        if *value == Value::Null {
            let name = table.columns.get(i).map_or("?", |c| c.name.as_str());
            return Err(SqlError::new(
                crate::ErrorCode::NotNullViolation,
                format!("primary key column {name} cannot be NULL; give it a value"),
            ));
        }
    }
    let mut key = table_prefix(table.id);
    key.extend(encode_key(pk.iter().map(|v| (v, Direction::Ascending))));
    if key.len() > MAX_KEY_BYTES {
        return Err(SqlError::too_large(format!(
            "value too large: the primary key is {} bytes, the limit is {MAX_KEY_BYTES}",
            key.len()
        )));
    }
    Ok(key)
}

/// Encodes the non-key columns of `row` (every column, in schema order). Columns with
/// `pending[i]` set become commit-timestamp placeholders; returns the value and their
/// offsets.
pub fn encode_row(
    table: &TableSchema,
    row: &[Value],
    pending: &[bool],
) -> SqlResult<(Vec<u8>, Vec<usize>)> {
    let mut out = vec![FORMAT];
    let mut offsets = Vec::new();
    for i in table.non_key_columns() {
        if pending.get(i).copied().unwrap_or(false) {
            out.push(TAG_COMMIT_TS);
            offsets.push(out.len());
            out.extend_from_slice(&[0; 8]);
            continue;
        }
        encode_cell(&mut out, row.get(i).unwrap_or(&Value::Null))?;
    }
    if out.len() > MAX_VALUE_BYTES {
        return Err(SqlError::too_large(format!(
            "value too large: the row is {} bytes, the limit is {MAX_VALUE_BYTES}",
            out.len()
        )));
    }
    Ok((out, offsets))
}

fn encode_cell(out: &mut Vec<u8>, v: &Value) -> SqlResult<()> {
    if *v == Value::Null {
        out.push(TAG_NULL);
        return Ok(());
    }
    out.push(TAG_VALUE);
    match v {
        Value::Null => {}
        Value::Int64(i) => out.extend_from_slice(&i.to_be_bytes()),
        Value::Float64(f) => out.extend_from_slice(&f.to_bits().to_be_bytes()),
        Value::Bool(b) => out.push(u8::from(*b)),
        Value::Timestamp { secs, nanos } => {
            out.extend_from_slice(&timestamp_nanos(*secs, *nanos)?.to_be_bytes())
        }
        Value::String(s) => put_bytes(out, s.as_bytes())?,
        Value::Bytes(b) => put_bytes(out, b)?,
    }
    Ok(())
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) -> SqlResult<()> {
    let len = u32::try_from(b.len())
        .ok()
        .filter(|&n| n as usize <= MAX_VALUE_BYTES)
        .ok_or_else(|| SqlError::too_large("value too large: a value is at most 1 MiB"))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(b);
    Ok(())
}

/// Decodes a stored row (key and value) into every column, in schema order.
pub fn decode_row(table: &TableSchema, key: &[u8], value: &[u8]) -> SqlResult<Vec<Value>> {
    let pk_types = table.pk_key_types();
    let pk_bytes = key
        .get(9..)
        .ok_or_else(|| SqlError::internal("corrupt row: key shorter than its table prefix"))?;
    let pk = storage::key::decode_key(pk_bytes, &pk_types)
        .map_err(|e| SqlError::internal(format!("corrupt row key: {e}")))?;
    let mut row = vec![Value::Null; table.columns.len()];
    for (v, &i) in pk.into_iter().zip(&table.primary_key) {
        if let Some(slot) = row.get_mut(i) {
            *slot = v;
        }
    }
    let mut r = Reader { buf: value, pos: 0 };
    if r.take(1)? != [FORMAT] {
        return Err(SqlError::internal("corrupt row: unknown format"));
    }
    for i in table.non_key_columns() {
        let ty = table.columns.get(i).map_or(SqlType::Int64, |c| c.ty);
        let v = decode_cell(&mut r, ty)?;
        if let Some(slot) = row.get_mut(i) {
            *slot = v;
        }
    }
    if r.pos != value.len() {
        return Err(SqlError::internal("corrupt row: trailing bytes"));
    }
    Ok(row)
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> SqlResult<&'a [u8]> {
        let end = self.pos.checked_add(n);
        let s = end
            .and_then(|end| self.buf.get(self.pos..end))
            .ok_or_else(|| SqlError::internal("corrupt row: value too short"))?;
        self.pos += n;
        Ok(s)
    }

    fn eight(&mut self) -> SqlResult<[u8; 8]> {
        let s = self.take(8)?;
        s.try_into()
            .map_err(|_| SqlError::internal("corrupt row: value too short"))
    }

    fn bytes(&mut self) -> SqlResult<Vec<u8>> {
        let len: [u8; 4] = self
            .take(4)?
            .try_into()
            .map_err(|_| SqlError::internal("corrupt row"))?;
        Ok(self.take(u32::from_be_bytes(len) as usize)?.to_vec())
    }
}

fn decode_cell(r: &mut Reader<'_>, ty: SqlType) -> SqlResult<Value> {
    let tag = r.take(1)?.first().copied().unwrap_or(TAG_NULL);
    match tag {
        TAG_NULL => return Ok(Value::Null),
        TAG_COMMIT_TS => {
            let ns = u64::from_be_bytes(r.eight()?);
            if ns == 0 {
                return Err(SqlError::txn_state(
                    "commit timestamp not known until commit: this transaction wrote \
                     PENDING_COMMIT_TIMESTAMP() here; read it after COMMIT",
                ));
            }
            let ns = i64::try_from(ns)
                .map_err(|_| SqlError::internal("commit timestamp out of range"))?;
            return Ok(timestamp_from_nanos(ns));
        }
        TAG_VALUE => {}
        _ => return Err(SqlError::internal("corrupt row: bad cell tag")),
    }
    Ok(match ty {
        SqlType::Int64 => Value::Int64(i64::from_be_bytes(r.eight()?)),
        SqlType::Float64 => Value::Float64(f64::from_bits(u64::from_be_bytes(r.eight()?))),
        SqlType::Timestamp => timestamp_from_nanos(i64::from_be_bytes(r.eight()?)),
        SqlType::Bool => Value::Bool(r.take(1)? != [0]),
        SqlType::String(_) => Value::String(
            String::from_utf8(r.bytes()?)
                .map_err(|_| SqlError::internal("corrupt row: STRING is not UTF-8"))?,
        ),
        SqlType::Bytes(_) => Value::Bytes(r.bytes()?),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use proptest::prelude::*;

    use super::*;
    use crate::schema::ColumnDef;

    fn table() -> TableSchema {
        let col = |name: &str, ty| ColumnDef {
            name: name.into(),
            ty,
            nullable: true,
        };
        TableSchema {
            id: 7,
            name: "t".into(),
            columns: vec![
                col("a", SqlType::Int64),
                col("b", SqlType::String(None)),
                col("c", SqlType::Float64),
                col("d", SqlType::Bytes(None)),
                col("e", SqlType::Bool),
                col("f", SqlType::Timestamp),
            ],
            primary_key: vec![1, 0],
        }
    }

    fn cell(i: usize) -> BoxedStrategy<Value> {
        let v = match i {
            0 => any::<i64>().prop_map(Value::Int64).boxed(),
            1 => "[a\u{0}é]{0,5}".prop_map(Value::String).boxed(),
            2 => any::<f64>().prop_map(Value::Float64).boxed(),
            3 => proptest::collection::vec(any::<u8>(), 0..6)
                .prop_map(Value::Bytes)
                .boxed(),
            4 => any::<bool>().prop_map(Value::Bool).boxed(),
            _ => (-1_000_000_000_000i64..1_000_000_000_000)
                .prop_map(timestamp_from_nanos)
                .boxed(),
        };
        if i <= 1 {
            v
        } else {
            prop_oneof![1 => Just(Value::Null), 4 => v].boxed()
        }
    }

    proptest! {
        #[test]
        fn rows_round_trip(row in (0..6).map(cell).collect::<Vec<_>>()) {
            let t = table();
            let pk: Vec<Value> = t.primary_key.iter().map(|&i| row[i].clone()).collect();
            let key = row_key(&t, &pk).unwrap();
            let (value, offsets) = encode_row(&t, &row, &[]).unwrap();
            prop_assert!(offsets.is_empty());
            let back = decode_row(&t, &key, &value).unwrap();
            for (a, b) in row.iter().zip(&back) {
                prop_assert_eq!(a.sql_cmp(b), std::cmp::Ordering::Equal);
            }
        }

        #[test]
        fn garbage_values_do_not_panic(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let t = table();
            let key = row_key(&t, &[Value::String("k".into()), Value::Int64(1)]).unwrap();
            let _ = decode_row(&t, &key, &bytes);
        }
    }

    #[test]
    fn placeholder_is_filled_at_commit() {
        let t = table();
        let row = vec![
            Value::Int64(1),
            Value::String("k".into()),
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
        ];
        let key = row_key(&t, &[Value::String("k".into()), Value::Int64(1)]).unwrap();
        let (mut value, offsets) =
            encode_row(&t, &row, &[false, false, false, false, false, true]).unwrap();
        assert_eq!(offsets.len(), 1);
        let err = decode_row(&t, &key, &value).unwrap_err();
        assert!(err.message.contains("not known until commit"));
        let at = offsets[0];
        value[at..at + 8].copy_from_slice(&5_000_000_001u64.to_be_bytes());
        let back = decode_row(&t, &key, &value).unwrap();
        assert_eq!(back[5], Value::Timestamp { secs: 5, nanos: 1 });
    }

    #[test]
    fn ranges_and_prefix_end() {
        let (s, e) = table_range(1);
        assert!(s < e && s.len() == 9);
        assert_eq!(prefix_end(&[1, 0xFF]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xFF]), None);
    }

    #[test]
    fn null_key_and_huge_key_are_errors() {
        let t = table();
        let err = row_key(&t, &[Value::Null, Value::Int64(1)]).unwrap_err();
        assert_eq!(err.code, crate::ErrorCode::NotNullViolation);
        let big = Value::String("x".repeat(MAX_KEY_BYTES));
        let err = row_key(&t, &[big, Value::Int64(1)]).unwrap_err();
        assert_eq!(err.code, crate::ErrorCode::ValueTooLarge);
    }
}
