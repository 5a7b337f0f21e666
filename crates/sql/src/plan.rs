//! Access paths: which keys a statement must read, derived from its WHERE clause and the
//! table's primary key.
//!
//! - equality on every primary-key column → a point lookup;
//! - equality on a key prefix and/or a range (`<`, `<=`, `>`, `>=`, `BETWEEN`) on the next
//!   key column → a scan of that key range;
//! - otherwise a full scan of the table's range.
//!
//! Only conjuncts `column op constant` whose constant has the column's type (or INT64 for a
//! FLOAT64 column, a string for a TIMESTAMP column) are used. The whole WHERE clause is
//! always re-applied to the rows read, so the access path only has to be a superset.
//! EXPLAIN prints [`AccessPath::describe`] of the same plan execution uses.

use storage::key::{Direction, Value, encode_value};

use crate::error::SqlResult;
use crate::expr::{BinOp, Expr};
use crate::row::{prefix_end, row_key, table_prefix, table_range};
use crate::schema::TableSchema;
use crate::types::{SqlType, display_value};

/// How to find a statement's rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Read one key.
    Point(Vec<u8>),
    /// Scan `[start, end)`.
    Range(Vec<u8>, Vec<u8>),
}

/// An access path and its description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessPath {
    /// The keys to read.
    pub access: Access,
    /// For EXPLAIN, e.g. `point lookup on accounts (id = 5)`.
    pub description: String,
}

impl AccessPath {
    /// The EXPLAIN text.
    pub fn describe(&self) -> &str {
        &self.description
    }
}

/// A range end: the value and whether it is included.
type Bound = Option<(Value, bool)>;

#[derive(Debug, Default, Clone)]
struct Bounds {
    eq: Option<Value>,
    lower: Bound,
    upper: Bound,
}

/// Plans the access path for `filter` over `table`.
pub fn plan(table: &TableSchema, filter: Option<&Expr>) -> SqlResult<AccessPath> {
    let mut bounds = vec![Bounds::default(); table.columns.len()];
    if let Some(f) = filter {
        collect(table, f, &mut bounds);
    }
    let mut eq = Vec::new();
    let mut parts = Vec::new();
    let mut range: (Bound, Bound) = (None, None);
    for &i in &table.primary_key {
        let name = &table.column(i)?.name;
        let Some(b) = bounds.get(i) else { break };
        if let Some(v) = &b.eq {
            parts.push(format!("{name} = {}", show(v)));
            eq.push(v.clone());
            continue;
        }
        if let Some((v, incl)) = &b.lower {
            parts.push(format!(
                "{name} {} {}",
                if *incl { ">=" } else { ">" },
                show(v)
            ));
        }
        if let Some((v, incl)) = &b.upper {
            parts.push(format!(
                "{name} {} {}",
                if *incl { "<=" } else { "<" },
                show(v)
            ));
        }
        range = (b.lower.clone(), b.upper.clone());
        break;
    }
    let name = &table.name;
    if eq.len() == table.primary_key.len() {
        let key = row_key(table, &eq)?;
        return Ok(AccessPath {
            access: Access::Point(key),
            description: format!("point lookup on {name} ({})", parts.join(", ")),
        });
    }
    let (table_start, table_end) = table_range(table.id);
    if parts.is_empty() {
        return Ok(AccessPath {
            access: Access::Range(table_start, table_end),
            description: format!("full scan on {name}"),
        });
    }
    let mut prefix = table_prefix(table.id);
    for v in &eq {
        encode_value(&mut prefix, v, Direction::Ascending);
    }
    let with = |v: &Value| {
        let mut k = prefix.clone();
        encode_value(&mut k, v, Direction::Ascending);
        k
    };
    let after = |k: Vec<u8>| prefix_end(&k).unwrap_or_else(|| table_end.clone());
    let start = match &range.0 {
        None => prefix.clone(),
        Some((v, true)) => with(v),
        Some((v, false)) => after(with(v)),
    };
    let end = match &range.1 {
        None => after(prefix.clone()),
        Some((v, true)) => after(with(v)),
        Some((v, false)) => with(v),
    };
    Ok(AccessPath {
        access: Access::Range(start, end),
        description: format!("range scan on {name} ({})", parts.join(", ")),
    })
}

fn show(v: &Value) -> String {
    match v {
        Value::String(_) | Value::Timestamp { .. } | Value::Bytes(_) => {
            format!("'{}'", display_value(v))
        }
        _ => display_value(v),
    }
}

fn collect(table: &TableSchema, e: &Expr, bounds: &mut [Bounds]) {
    match e {
        Expr::Binary(BinOp::And, l, r) => {
            collect(table, l, bounds);
            collect(table, r, bounds);
        }
        Expr::Binary(op, l, r) => {
            let (col, lit, op) = match (&**l, &**r) {
                (Expr::Column(c), Expr::Literal(v)) => (*c, v, *op),
                (Expr::Literal(v), Expr::Column(c)) => (*c, v, flip(*op)),
                _ => return,
            };
            let (Some(ty), Some(b)) = (table.columns.get(col).map(|c| c.ty), bounds.get_mut(col))
            else {
                return;
            };
            let Some(v) = key_value(ty, lit) else { return };
            match op {
                BinOp::Eq if b.eq.is_none() => b.eq = Some(v),
                BinOp::Gt | BinOp::GtEq if b.lower.is_none() => {
                    b.lower = Some((v, op == BinOp::GtEq))
                }
                BinOp::Lt | BinOp::LtEq if b.upper.is_none() => {
                    b.upper = Some((v, op == BinOp::LtEq))
                }
                _ => {}
            }
        }
        Expr::Between(x, lo, hi, false) => {
            let (Expr::Column(c), Expr::Literal(lo), Expr::Literal(hi)) = (&**x, &**lo, &**hi)
            else {
                return;
            };
            let (Some(ty), Some(b)) = (table.columns.get(*c).map(|c| c.ty), bounds.get_mut(*c))
            else {
                return;
            };
            if let (Some(lo), Some(hi), None, None) =
                (key_value(ty, lo), key_value(ty, hi), &b.lower, &b.upper)
            {
                b.lower = Some((lo, true));
                b.upper = Some((hi, true));
            }
        }
        _ => {}
    }
}

fn flip(op: BinOp) -> BinOp {
    match op {
        BinOp::Lt => BinOp::Gt,
        BinOp::LtEq => BinOp::GtEq,
        BinOp::Gt => BinOp::Lt,
        BinOp::GtEq => BinOp::LtEq,
        other => other,
    }
}

/// The constant as a key value of the column's type, if it compares the same way.
fn key_value(ty: SqlType, v: &Value) -> Option<Value> {
    match (ty, v) {
        (_, Value::Null) => None,
        (SqlType::Float64, Value::Int64(i)) => Some(Value::Float64(*i as f64)),
        (SqlType::Timestamp, Value::String(s)) => crate::types::parse_timestamp(s).ok(),
        (ty, v) if SqlType::of(v).map(|t| t.column_type()) == Some(ty.column_type()) => {
            Some(v.clone())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use sqlparser::dialect::GenericDialect;
    use sqlparser::parser::Parser;

    use super::*;
    use crate::expr::Compiler;
    use crate::schema::ColumnDef;

    fn table() -> TableSchema {
        let col = |name: &str, ty| ColumnDef {
            name: name.into(),
            ty,
            nullable: false,
        };
        TableSchema {
            id: 3,
            name: "t".into(),
            columns: vec![
                col("a", SqlType::Int64),
                col("b", SqlType::String(None)),
                col("c", SqlType::Float64),
            ],
            primary_key: vec![0, 1],
        }
    }

    fn path(filter: &str) -> AccessPath {
        let t = table();
        let e = Parser::new(&GenericDialect {})
            .try_with_sql(filter)
            .unwrap()
            .parse_expr()
            .unwrap();
        let e = Compiler::new(Some(&t), &[]).compile(&e).unwrap();
        plan(&t, Some(&e)).unwrap()
    }

    #[test]
    fn chooses_point_range_or_full() {
        assert_eq!(
            path("a = 1 AND b = 'x'").describe(),
            "point lookup on t (a = 1, b = 'x')"
        );
        assert_eq!(
            path("'x' = b AND 1 = a AND c > 0").describe(),
            "point lookup on t (a = 1, b = 'x')"
        );
        assert_eq!(path("a = 1").describe(), "range scan on t (a = 1)");
        assert_eq!(
            path("a = 1 AND b >= 'k'").describe(),
            "range scan on t (a = 1, b >= 'k')"
        );
        assert_eq!(
            path("a BETWEEN 1 AND 5").describe(),
            "range scan on t (a >= 1, a <= 5)"
        );
        assert_eq!(
            path("a > 1 AND a < 5").describe(),
            "range scan on t (a > 1, a < 5)"
        );
        assert_eq!(path("b = 'x'").describe(), "full scan on t");
        assert_eq!(path("a = 1 OR a = 2").describe(), "full scan on t");
        assert_eq!(path("a = 1.5").describe(), "full scan on t");
        assert_eq!(path("c = 1").describe(), "full scan on t");
    }

    #[test]
    fn range_keys_bracket_the_rows() {
        let t = table();
        let key =
            |a: i64, b: &str| row_key(&t, &[Value::Int64(a), Value::String(b.into())]).unwrap();
        let Access::Range(s, e) = path("a > 1 AND a <= 3").access else {
            panic!("not a range")
        };
        let inside = |k: &Vec<u8>| s <= *k && *k < e;
        assert!(!inside(&key(1, "zzz")));
        assert!(inside(&key(2, "")));
        assert!(inside(&key(3, "zzz")));
        assert!(!inside(&key(4, "")));
        let Access::Range(s, e) = path("a = 2 AND b < 'm'").access else {
            panic!("not a range")
        };
        let inside = |k: &Vec<u8>| s <= *k && *k < e;
        assert!(inside(&key(2, "a")) && !inside(&key(2, "m")) && !inside(&key(1, "a")));
    }
}
