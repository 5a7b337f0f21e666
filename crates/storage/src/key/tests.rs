use std::cmp::Ordering;

use proptest::prelude::*;

use super::*;

fn column_type() -> impl Strategy<Value = ColumnType> {
    prop_oneof![
        Just(ColumnType::Int64),
        Just(ColumnType::Float64),
        Just(ColumnType::String),
        Just(ColumnType::Bytes),
        Just(ColumnType::Bool),
        Just(ColumnType::Timestamp),
    ]
}

fn direction() -> impl Strategy<Value = Direction> {
    prop_oneof![Just(Direction::Ascending), Just(Direction::Descending)]
}

fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(f64::NAN),
        Just(-f64::NAN),
        Just(0.0),
        Just(-0.0),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(f64::MIN_POSITIVE),
        Just(-f64::MIN_POSITIVE),
        any::<f64>(),
        -1e6f64..1e6,
    ]
}

fn value_of(ty: ColumnType) -> BoxedStrategy<Value> {
    let non_null = match ty {
        ColumnType::Int64 => prop_oneof![any::<i64>(), -3i64..3, Just(i64::MIN), Just(i64::MAX)]
            .prop_map(Value::Int64)
            .boxed(),
        ColumnType::Float64 => float().prop_map(Value::Float64).boxed(),
        // Small alphabets with NUL and 0xFF make prefixes and escapes likely.
        ColumnType::String => "[a\u{0}b\u{ff}é]{0,4}".prop_map(Value::String).boxed(),
        ColumnType::Bytes => proptest::collection::vec(
            prop_oneof![Just(0u8), Just(1), Just(0xFF), any::<u8>()],
            0..5,
        )
        .prop_map(Value::Bytes)
        .boxed(),
        ColumnType::Bool => any::<bool>().prop_map(Value::Bool).boxed(),
        ColumnType::Timestamp => (prop_oneof![any::<i64>(), -2i64..2], 0u32..2_000_000_000)
            .prop_map(|(secs, nanos)| Value::Timestamp { secs, nanos })
            .boxed(),
    };
    prop_oneof![1 => Just(Value::Null), 6 => non_null].boxed()
}

fn row_of(schema: &[(ColumnType, Direction)]) -> BoxedStrategy<Vec<Value>> {
    schema
        .iter()
        .map(|&(ty, _)| value_of(ty))
        .collect::<Vec<_>>()
        .boxed()
}

/// The SQL order of two rows under a schema: column by column, each in its direction.
fn model_cmp(schema: &[(ColumnType, Direction)], a: &[Value], b: &[Value]) -> Ordering {
    for ((_, direction), (x, y)) in schema.iter().zip(a.iter().zip(b)) {
        let ord = x.sql_cmp(y);
        let ord = if *direction == Direction::Descending {
            ord.reverse()
        } else {
            ord
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    Ordering::Equal
}

fn encode(schema: &[(ColumnType, Direction)], row: &[Value]) -> Vec<u8> {
    encode_key(row.iter().zip(schema).map(|(v, &(_, d))| (v, d)))
}

fn schema_and_rows() -> impl Strategy<Value = (Vec<(ColumnType, Direction)>, Vec<Vec<Value>>)> {
    proptest::collection::vec((column_type(), direction()), 1..4).prop_flat_map(|schema| {
        let rows = proptest::collection::vec(row_of(&schema), 2..12);
        (Just(schema), rows)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Byte order of encoded keys equals the SQL order of the tuples, in both directions.
    #[test]
    fn byte_order_equals_sql_order((schema, rows) in schema_and_rows()) {
        for a in &rows {
            for b in &rows {
                let bytes = encode(&schema, a).cmp(&encode(&schema, b));
                prop_assert_eq!(bytes, model_cmp(&schema, a, b), "{:?} vs {:?} under {:?}", a, b, schema);
            }
        }
    }

    /// Decoding gives back a value equal (in SQL) to the one encoded.
    #[test]
    fn decode_inverts_encode((schema, rows) in schema_and_rows()) {
        for row in &rows {
            let decoded = decode_key(&encode(&schema, row), &schema).unwrap();
            prop_assert_eq!(model_cmp(&schema, row, &decoded), Ordering::Equal);
        }
    }

    /// Garbage never panics the decoder.
    #[test]
    fn decoding_garbage_is_an_error_not_a_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..40),
        schema in proptest::collection::vec((column_type(), direction()), 1..4),
    ) {
        let _ = decode_key(&bytes, &schema);
    }
}

#[test]
fn special_floats_have_defined_keys() {
    let key = |f: f64| encode_key([(&Value::Float64(f), Direction::Ascending)]);
    assert_eq!(key(-0.0), key(0.0), "-0.0 and 0.0 are one key");
    assert_eq!(key(f64::NAN), key(-f64::NAN), "every NaN is one key");
    assert!(
        key(f64::NAN) < key(f64::NEG_INFINITY),
        "NaN sorts below -inf"
    );
    assert!(key(f64::NEG_INFINITY) < key(-1.0));
    assert!(key(f64::MAX) < key(f64::INFINITY));
    let null = encode_key([(&Value::Null, Direction::Ascending)]);
    assert!(null < key(f64::NAN), "NULL sorts first ascending");
    let null_desc = encode_key([(&Value::Null, Direction::Descending)]);
    let nan_desc = encode_key([(&Value::Float64(f64::NAN), Direction::Descending)]);
    assert!(null_desc > nan_desc, "NULL sorts last descending");
}

#[test]
fn strings_with_nul_and_prefixes_order_correctly() {
    let key = |s: &str| encode_key([(&Value::String(s.to_string()), Direction::Ascending)]);
    assert!(key("a") < key("a\0"));
    assert!(key("a\0") < key("a\0\0"));
    assert!(key("a\0\u{ff}") < key("a\u{1}"));
    assert!(key("") < key("\0"));
}

#[test]
fn wrong_type_is_a_clear_error() {
    let key = encode_key([(&Value::Int64(7), Direction::Ascending)]);
    let err = decode_key(&key, &[(ColumnType::String, Direction::Ascending)]).unwrap_err();
    assert!(err.to_string().contains("wrong type"), "{err}");
}
