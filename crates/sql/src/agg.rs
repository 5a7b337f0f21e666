//! Aggregates: COUNT(*), COUNT(x), SUM, MIN, MAX, AVG, each optionally DISTINCT.
//!
//! NULL inputs are ignored; over no rows COUNT is 0 and the others are NULL. SUM of INT64
//! is checked (overflow is an error), AVG is FLOAT64.

use std::cmp::Ordering;
use std::collections::BTreeSet;

use storage::key::{Direction, Value, encode_key};

use crate::error::{SqlError, SqlResult};
use crate::expr::{Expr, compare};
use crate::schema::TableSchema;
use crate::types::{SqlType, display_value, type_name};

/// An aggregate function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggFunc {
    /// COUNT
    Count,
    /// SUM
    Sum,
    /// MIN
    Min,
    /// MAX
    Max,
    /// AVG
    Avg,
}

impl AggFunc {
    /// The aggregate called `name` (lower-case), if any.
    pub fn from_name(name: &str) -> Option<AggFunc> {
        Some(match name {
            "count" => AggFunc::Count,
            "sum" => AggFunc::Sum,
            "min" => AggFunc::Min,
            "max" => AggFunc::Max,
            "avg" => AggFunc::Avg,
            _ => return None,
        })
    }

    /// The SQL name.
    pub fn name(self) -> &'static str {
        match self {
            AggFunc::Count => "COUNT",
            AggFunc::Sum => "SUM",
            AggFunc::Min => "MIN",
            AggFunc::Max => "MAX",
            AggFunc::Avg => "AVG",
        }
    }
}

/// One aggregate call in a query: `func(arg)`, `arg` `None` for `COUNT(*)`.
#[derive(Debug, Clone, PartialEq)]
pub struct AggCall {
    /// The function.
    pub func: AggFunc,
    /// Its argument.
    pub arg: Option<Expr>,
    /// DISTINCT.
    pub distinct: bool,
}

impl AggCall {
    /// The result type.
    pub fn result_type(&self, table: Option<&TableSchema>) -> Option<SqlType> {
        match self.func {
            AggFunc::Count => Some(SqlType::Int64),
            AggFunc::Avg => Some(SqlType::Float64),
            _ => self.arg.as_ref().and_then(|a| a.infer(table, &[])),
        }
    }
}

/// The running state of one aggregate over one group.
#[derive(Debug, Clone)]
pub struct Accumulator {
    count: i64,
    acc: Value,
    float_sum: f64,
    seen: Option<BTreeSet<Vec<u8>>>,
}

impl Accumulator {
    /// A fresh accumulator for `call`.
    pub fn new(call: &AggCall) -> Self {
        Accumulator {
            count: 0,
            acc: Value::Null,
            float_sum: 0.0,
            seen: call.distinct.then(BTreeSet::new),
        }
    }

    /// Adds one row.
    pub fn add(&mut self, call: &AggCall, row: &[Value]) -> SqlResult<()> {
        let Some(arg) = &call.arg else {
            self.count += 1;
            return Ok(());
        };
        let v = arg.eval(row, &[])?;
        if v == Value::Null {
            return Ok(());
        }
        if let Some(seen) = &mut self.seen
            && !seen.insert(encode_key([(&v, Direction::Ascending)]))
        {
            return Ok(());
        }
        self.count += 1;
        match call.func {
            AggFunc::Count => {}
            AggFunc::Sum | AggFunc::Avg => self.sum(call.func, v)?,
            AggFunc::Min | AggFunc::Max => {
                let want = if call.func == AggFunc::Min {
                    Ordering::Less
                } else {
                    Ordering::Greater
                };
                if self.acc == Value::Null || compare(&v, &self.acc)? == Some(want) {
                    self.acc = v;
                }
            }
        }
        Ok(())
    }

    fn sum(&mut self, func: AggFunc, v: Value) -> SqlResult<()> {
        match (&self.acc, &v) {
            (_, Value::Float64(f)) => {
                self.float_sum += f;
                if !matches!(self.acc, Value::Float64(_)) {
                    self.float_sum += as_f64(&self.acc);
                }
                self.acc = Value::Float64(self.float_sum);
            }
            (Value::Null, Value::Int64(_)) => self.acc = v,
            (Value::Int64(a), Value::Int64(b)) => match a.checked_add(*b) {
                Some(s) => self.acc = Value::Int64(s),
                None if func == AggFunc::Avg => {
                    self.float_sum = *a as f64 + *b as f64;
                    self.acc = Value::Float64(self.float_sum);
                }
                None => {
                    return Err(SqlError::invalid(
                        "INT64 overflow in SUM; use SUM(CAST(x AS FLOAT64))",
                    ));
                }
            },
            (Value::Float64(_), Value::Int64(i)) => {
                self.float_sum += *i as f64;
                self.acc = Value::Float64(self.float_sum);
            }
            _ => {
                return Err(SqlError::mismatch(format!(
                    "{} needs numbers, not {} ({})",
                    func.name(),
                    display_value(&v),
                    type_name(&v)
                )));
            }
        }
        Ok(())
    }

    /// The aggregate's value.
    pub fn finish(&self, call: &AggCall) -> Value {
        match call.func {
            AggFunc::Count => Value::Int64(self.count),
            AggFunc::Avg if self.count == 0 => Value::Null,
            AggFunc::Avg => Value::Float64(as_f64(&self.acc) / self.count as f64),
            _ => self.acc.clone(),
        }
    }
}

fn as_f64(v: &Value) -> f64 {
    match v {
        Value::Int64(i) => *i as f64,
        Value::Float64(f) => *f,
        _ => 0.0,
    }
}
