//! Scalar expressions: compiled from sqlparser's AST against a table's columns (so unknown
//! columns fail before anything runs), then evaluated against rows.
//!
//! Semantics follow SQL: three-valued logic for AND/OR/NOT, NULL in → NULL out for
//! operators, INT64 arithmetic is checked (overflow and division by zero are errors; `/` on
//! two INT64s truncates, as in PostgreSQL), INT64 and FLOAT64 compare and combine as
//! numbers, and a string compared with a TIMESTAMP is parsed as one. Parameters (`$1`...)
//! are substituted at compile time. Aggregates compile to [`Expr::Agg`] slots that the
//! executor fills per group (see [`crate::agg`]).

use std::cmp::Ordering;

use sqlparser::ast::{self, BinaryOperator, UnaryOperator};
use storage::key::Value;

use crate::agg::{AggCall, AggFunc};
use crate::error::{SqlError, SqlResult};
use crate::schema::TableSchema;
use crate::types::{SqlType, display_value, parse_hex, parse_timestamp, type_name};

/// A compiled scalar expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A constant (literals and parameters).
    Literal(Value),
    /// The value of the row's column at this index.
    Column(usize),
    /// The value of the group's aggregate at this index.
    Agg(usize),
    /// `-x`.
    Neg(Box<Expr>),
    /// `NOT x`.
    Not(Box<Expr>),
    /// A binary operator.
    Binary(BinOp, Box<Expr>, Box<Expr>),
    /// `x IS [NOT] NULL` (`true` = negated).
    IsNull(Box<Expr>, bool),
    /// `x [NOT] IN (list)`.
    InList(Box<Expr>, Vec<Expr>, bool),
    /// `x [NOT] BETWEEN low AND high`.
    Between(Box<Expr>, Box<Expr>, Box<Expr>, bool),
    /// `x [NOT] LIKE pattern` (`%` and `_`; the last flag: ILIKE).
    Like(Box<Expr>, Box<Expr>, bool, bool),
    /// `CAST(x AS type)`.
    Cast(Box<Expr>, SqlType),
    /// A scalar function.
    Func(Func, Vec<Expr>),
}

/// Binary operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `%`
    Mod,
    /// `=`
    Eq,
    /// `<>`, `!=`
    NotEq,
    /// `<`
    Lt,
    /// `<=`
    LtEq,
    /// `>`
    Gt,
    /// `>=`
    GtEq,
    /// `AND`
    And,
    /// `OR`
    Or,
    /// `||`
    Concat,
}

/// Scalar functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Func {
    /// LOWER(s)
    Lower,
    /// UPPER(s)
    Upper,
    /// LENGTH(s) / CHAR_LENGTH(s): characters of a string, bytes of BYTES.
    Length,
    /// ABS(x)
    Abs,
    /// COALESCE(a, b, ...)
    Coalesce,
}

/// Compiles AST expressions against one table (or none, for `SELECT 1`).
#[derive(Debug)]
pub struct Compiler<'a> {
    /// The table columns resolve against.
    pub table: Option<&'a TableSchema>,
    /// The name the table may be qualified with (its alias, or its name).
    pub qualifier: Option<String>,
    /// `$1`... values.
    pub params: &'a [Value],
    /// Collected aggregate calls; `None` where aggregates are not allowed.
    pub aggs: Option<Vec<AggCall>>,
    /// Whether `excluded.c` names column `c` of the proposed row (ON CONFLICT DO UPDATE),
    /// which evaluates as column `width + c`.
    pub excluded: bool,
}

/// Normalises an identifier: lower-case unless quoted.
pub fn ident_name(id: &ast::Ident) -> String {
    if id.quote_style.is_some() {
        id.value.clone()
    } else {
        id.value.to_lowercase()
    }
}

/// The name of a table reference (the last part of a possibly qualified name).
pub fn object_name(name: &ast::ObjectName) -> SqlResult<String> {
    match name.0.last().and_then(|p| p.as_ident()) {
        Some(id) if name.0.len() == 1 => Ok(ident_name(id)),
        _ => Err(SqlError::unsupported(format!(
            "qualified name {name} is not supported; use a plain table name"
        ))),
    }
}

/// Whether `e` is `PENDING_COMMIT_TIMESTAMP()`.
pub fn is_pending_commit_ts(e: &ast::Expr) -> bool {
    match e {
        ast::Expr::Function(f) => f
            .name
            .to_string()
            .eq_ignore_ascii_case("pending_commit_timestamp"),
        _ => false,
    }
}

impl<'a> Compiler<'a> {
    /// A compiler for expressions over `table`.
    pub fn new(table: Option<&'a TableSchema>, params: &'a [Value]) -> Self {
        Compiler {
            table,
            qualifier: table.map(|t| t.name.clone()),
            params,
            aggs: None,
            excluded: false,
        }
    }

    /// Compiles `e`.
    pub fn compile(&mut self, e: &ast::Expr) -> SqlResult<Expr> {
        use ast::Expr as A;
        Ok(match e {
            A::Identifier(id) => Expr::Column(self.column(&ident_name(id))?),
            A::CompoundIdentifier(parts) => self.compound(parts)?,
            A::Value(v) => Expr::Literal(self.literal(&v.value)?),
            A::Nested(inner) => self.compile(inner)?,
            A::UnaryOp { op, expr } => self.unary(*op, expr)?,
            A::BinaryOp { left, op, right } => {
                let op = bin_op(op)?;
                Expr::Binary(op, self.boxed(left)?, self.boxed(right)?)
            }
            A::IsNull(x) => Expr::IsNull(self.boxed(x)?, false),
            A::IsNotNull(x) => Expr::IsNull(self.boxed(x)?, true),
            A::InList {
                expr,
                list,
                negated,
            } => {
                let list = list
                    .iter()
                    .map(|x| self.compile(x))
                    .collect::<SqlResult<_>>()?;
                Expr::InList(self.boxed(expr)?, list, *negated)
            }
            A::Between {
                expr,
                negated,
                low,
                high,
            } => Expr::Between(
                self.boxed(expr)?,
                self.boxed(low)?,
                self.boxed(high)?,
                *negated,
            ),
            A::Like {
                negated,
                expr,
                pattern,
                escape_char: None,
                any: false,
            } => Expr::Like(self.boxed(expr)?, self.boxed(pattern)?, *negated, false),
            A::ILike {
                negated,
                expr,
                pattern,
                escape_char: None,
                any: false,
            } => Expr::Like(self.boxed(expr)?, self.boxed(pattern)?, *negated, true),
            A::Cast {
                expr, data_type, ..
            } => Expr::Cast(self.boxed(expr)?, SqlType::from_ast(data_type)?),
            A::TypedString(ts) => {
                let ty = SqlType::from_ast(&ts.data_type)?;
                let s = ts.value.value.clone().into_string().ok_or_else(|| {
                    SqlError::syntax(format!("{e}: expected a quoted string after the type"))
                })?;
                Expr::Literal(cast(Value::String(s), ty)?)
            }
            A::Function(f) => self.function(f)?,
            other => {
                return Err(SqlError::unsupported(format!(
                    "expression {other} is not supported"
                )));
            }
        })
    }

    fn boxed(&mut self, e: &ast::Expr) -> SqlResult<Box<Expr>> {
        Ok(Box::new(self.compile(e)?))
    }

    fn column(&self, name: &str) -> SqlResult<usize> {
        match self.table {
            Some(t) => t.column_index(name),
            None => Err(SqlError::undefined_column(format!(
                "column {name} does not exist: the statement has no FROM clause"
            ))),
        }
    }

    fn compound(&self, parts: &[ast::Ident]) -> SqlResult<Expr> {
        match parts {
            [q, col] if Some(ident_name(q)) == self.qualifier => {
                Ok(Expr::Column(self.column(&ident_name(col))?))
            }
            [q, col] if self.excluded && ident_name(q) == "excluded" => {
                let width = self.table.map_or(0, |t| t.columns.len());
                Ok(Expr::Column(width + self.column(&ident_name(col))?))
            }
            _ => Err(SqlError::undefined_column(format!(
                "column {} does not exist",
                parts
                    .iter()
                    .map(|p| p.value.as_str())
                    .collect::<Vec<_>>()
                    .join(".")
            ))),
        }
    }

    fn unary(&mut self, op: UnaryOperator, expr: &ast::Expr) -> SqlResult<Expr> {
        match op {
            UnaryOperator::Plus => self.compile(expr),
            UnaryOperator::Minus => {
                if let ast::Expr::Value(v) = expr
                    && let ast::Value::Number(n, _) = &v.value
                {
                    return Ok(Expr::Literal(number(&format!("-{n}"))?));
                }
                Ok(Expr::Neg(self.boxed(expr)?))
            }
            UnaryOperator::Not => Ok(Expr::Not(self.boxed(expr)?)),
            other => Err(SqlError::unsupported(format!(
                "operator {other} is not supported"
            ))),
        }
    }

    fn literal(&self, v: &ast::Value) -> SqlResult<Value> {
        use ast::Value as V;
        Ok(match v {
            V::Number(n, _) => number(n)?,
            V::SingleQuotedString(s) | V::DoubleQuotedString(s) | V::EscapedStringLiteral(s) => {
                Value::String(s.clone())
            }
            V::HexStringLiteral(h) => Value::Bytes(parse_hex(h)?),
            V::SingleQuotedByteStringLiteral(s) | V::DoubleQuotedByteStringLiteral(s) => {
                Value::Bytes(s.as_bytes().to_vec())
            }
            V::Boolean(b) => Value::Bool(*b),
            V::Null => Value::Null,
            V::Placeholder(p) => self.param(p)?,
            other => {
                return Err(SqlError::unsupported(format!(
                    "literal {other} is not supported"
                )));
            }
        })
    }

    fn param(&self, p: &str) -> SqlResult<Value> {
        let n: usize = p
            .strip_prefix('$')
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| SqlError::syntax(format!("parameter {p}: write $1, $2, ...")))?;
        n.checked_sub(1)
            .and_then(|i| self.params.get(i))
            .cloned()
            .ok_or_else(|| {
                SqlError::invalid(format!(
                    "the statement uses {p} but {} parameters were given",
                    self.params.len()
                ))
            })
    }

    fn function(&mut self, f: &ast::Function) -> SqlResult<Expr> {
        let name = f.name.to_string().to_lowercase();
        let (args, distinct) = match &f.args {
            ast::FunctionArguments::None => (Vec::new(), false),
            ast::FunctionArguments::List(l) => (
                l.args.clone(),
                matches!(
                    l.duplicate_treatment,
                    Some(ast::DuplicateTreatment::Distinct)
                ),
            ),
            ast::FunctionArguments::Subquery(_) => {
                return Err(SqlError::unsupported("subqueries are not supported"));
            }
        };
        if f.over.is_some() || f.filter.is_some() {
            return Err(SqlError::unsupported(
                "window functions and FILTER are not supported",
            ));
        }
        if let Some(func) = AggFunc::from_name(&name) {
            return self.aggregate(func, &args, distinct);
        }
        let func = match name.as_str() {
            "lower" => Func::Lower,
            "upper" => Func::Upper,
            "length" | "char_length" => Func::Length,
            "abs" => Func::Abs,
            "coalesce" => Func::Coalesce,
            "pending_commit_timestamp" => {
                return Err(SqlError::invalid(
                    "PENDING_COMMIT_TIMESTAMP() can only be the whole value written to a \
                     TIMESTAMP column by INSERT or UPDATE",
                ));
            }
            _ => {
                return Err(SqlError::unsupported(format!(
                    "function {name} is not supported"
                )));
            }
        };
        let args = args
            .iter()
            .map(|a| self.compile(arg_expr(a)?))
            .collect::<SqlResult<Vec<_>>>()?;
        let arity_ok = match func {
            Func::Coalesce => !args.is_empty(),
            _ => args.len() == 1,
        };
        if !arity_ok {
            return Err(SqlError::invalid(format!(
                "{name} takes {} argument(s)",
                if func == Func::Coalesce {
                    "one or more"
                } else {
                    "one"
                }
            )));
        }
        Ok(Expr::Func(func, args))
    }

    fn aggregate(
        &mut self,
        func: AggFunc,
        args: &[ast::FunctionArg],
        distinct: bool,
    ) -> SqlResult<Expr> {
        if self.aggs.is_none() {
            return Err(SqlError::invalid(format!(
                "aggregate {} is not allowed here (only in SELECT, HAVING and ORDER BY, \
                 not nested)",
                func.name()
            )));
        }
        let arg = match args {
            [ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Wildcard)]
                if func == AggFunc::Count =>
            {
                None
            }
            [a] => {
                let e = arg_expr(a)?;
                let saved = self.aggs.take();
                let compiled = self.compile(e);
                self.aggs = saved;
                Some(compiled?)
            }
            _ => {
                return Err(SqlError::invalid(format!(
                    "{} takes one argument",
                    func.name()
                )));
            }
        };
        let aggs = self.aggs.get_or_insert_with(Vec::new);
        aggs.push(AggCall {
            func,
            arg,
            distinct,
        });
        Ok(Expr::Agg(aggs.len() - 1))
    }
}

fn arg_expr(a: &ast::FunctionArg) -> SqlResult<&ast::Expr> {
    match a {
        ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(e)) => Ok(e),
        other => Err(SqlError::unsupported(format!(
            "function argument {other} is not supported"
        ))),
    }
}

fn number(n: &str) -> SqlResult<Value> {
    if let Ok(i) = n.parse::<i64>() {
        return Ok(Value::Int64(i));
    }
    let is_int = n.bytes().all(|b| b.is_ascii_digit() || b == b'-');
    match n.parse::<f64>() {
        Ok(_) if is_int => Err(SqlError::invalid(format!(
            "integer {n} is out of range for INT64; write it as a FLOAT64 (e.g. {n}.0)"
        ))),
        Ok(f) => Ok(Value::Float64(f)),
        Err(_) => Err(SqlError::syntax(format!("{n} is not a number"))),
    }
}

fn bin_op(op: &BinaryOperator) -> SqlResult<BinOp> {
    use BinaryOperator as B;
    Ok(match op {
        B::Plus => BinOp::Add,
        B::Minus => BinOp::Sub,
        B::Multiply => BinOp::Mul,
        B::Divide => BinOp::Div,
        B::Modulo => BinOp::Mod,
        B::Eq => BinOp::Eq,
        B::NotEq => BinOp::NotEq,
        B::Lt => BinOp::Lt,
        B::LtEq => BinOp::LtEq,
        B::Gt => BinOp::Gt,
        B::GtEq => BinOp::GtEq,
        B::And => BinOp::And,
        B::Or => BinOp::Or,
        B::StringConcat => BinOp::Concat,
        other => {
            return Err(SqlError::unsupported(format!(
                "operator {other} is not supported"
            )));
        }
    })
}

impl Expr {
    /// Evaluates against a row (all columns of the table) and a group's aggregates.
    pub fn eval(&self, row: &[Value], aggs: &[Value]) -> SqlResult<Value> {
        Ok(match self {
            Expr::Literal(v) => v.clone(),
            Expr::Column(i) => row.get(*i).cloned().unwrap_or(Value::Null),
            Expr::Agg(i) => aggs.get(*i).cloned().unwrap_or(Value::Null),
            Expr::Neg(x) => match x.eval(row, aggs)? {
                Value::Null => Value::Null,
                Value::Int64(i) => Value::Int64(i.checked_neg().ok_or_else(overflow)?),
                Value::Float64(f) => Value::Float64(-f),
                v => return Err(bad_operand("-", &v)),
            },
            Expr::Not(x) => match truth(&x.eval(row, aggs)?)? {
                None => Value::Null,
                Some(b) => Value::Bool(!b),
            },
            Expr::Binary(op, l, r) => binary(*op, l, r, row, aggs)?,
            Expr::IsNull(x, negated) => {
                Value::Bool((x.eval(row, aggs)? == Value::Null) != *negated)
            }
            Expr::InList(x, list, negated) => in_list(x, list, *negated, row, aggs)?,
            Expr::Between(x, lo, hi, negated) => {
                let v = x.eval(row, aggs)?;
                let ge = cmp_op(BinOp::GtEq, &v, &lo.eval(row, aggs)?)?;
                let le = cmp_op(BinOp::LtEq, &v, &hi.eval(row, aggs)?)?;
                let both = and(truth(&ge)?, truth(&le)?);
                both.map_or(Value::Null, |b| Value::Bool(b != *negated))
            }
            Expr::Like(x, p, negated, ci) => match (x.eval(row, aggs)?, p.eval(row, aggs)?) {
                (Value::String(s), Value::String(p)) => {
                    let (s, p) = if *ci {
                        (s.to_lowercase(), p.to_lowercase())
                    } else {
                        (s, p)
                    };
                    let s: Vec<char> = s.chars().collect();
                    let p: Vec<char> = p.chars().collect();
                    Value::Bool(like(&s, &p) != *negated)
                }
                (Value::Null, _) | (_, Value::Null) => Value::Null,
                (v, _) => return Err(bad_operand("LIKE", &v)),
            },
            Expr::Cast(x, ty) => cast(x.eval(row, aggs)?, *ty)?,
            Expr::Func(f, args) => func(*f, args, row, aggs)?,
        })
    }

    /// Evaluates a predicate: only TRUE passes.
    pub fn matches(&self, row: &[Value]) -> SqlResult<bool> {
        Ok(truth(&self.eval(row, &[])?)? == Some(true))
    }

    /// The expression's result type, `None` if unknown (NULL).
    pub fn infer(&self, table: Option<&TableSchema>, aggs: &[AggCall]) -> Option<SqlType> {
        match self {
            Expr::Literal(v) => SqlType::of(v),
            Expr::Column(i) => table.and_then(|t| t.columns.get(*i)).map(|c| c.ty),
            Expr::Agg(i) => aggs.get(*i).and_then(|a| a.result_type(table)),
            Expr::Neg(x) => x.infer(table, aggs),
            Expr::Binary(op, l, r) => match op {
                BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Mod => {
                    match (l.infer(table, aggs), r.infer(table, aggs)) {
                        (Some(SqlType::Int64), Some(SqlType::Int64)) => Some(SqlType::Int64),
                        (None, None) => None,
                        _ => Some(SqlType::Float64),
                    }
                }
                BinOp::Concat => match l.infer(table, aggs) {
                    Some(SqlType::Bytes(_)) => Some(SqlType::Bytes(None)),
                    _ => Some(SqlType::String(None)),
                },
                _ => Some(SqlType::Bool),
            },
            Expr::Cast(_, ty) => Some(*ty),
            Expr::Func(Func::Length, _) => Some(SqlType::Int64),
            Expr::Func(Func::Lower | Func::Upper, _) => Some(SqlType::String(None)),
            Expr::Func(Func::Abs, a) => a.first().and_then(|x| x.infer(table, aggs)),
            Expr::Func(Func::Coalesce, a) => a.iter().find_map(|x| x.infer(table, aggs)),
            Expr::Not(_)
            | Expr::IsNull(..)
            | Expr::InList(..)
            | Expr::Between(..)
            | Expr::Like(..) => Some(SqlType::Bool),
        }
    }
}

fn overflow() -> SqlError {
    SqlError::invalid("INT64 overflow; use FLOAT64 (CAST(x AS FLOAT64)) for larger values")
}

fn bad_operand(op: &str, v: &Value) -> SqlError {
    SqlError::mismatch(format!(
        "operator {op} cannot take {} ({})",
        display_value(v),
        type_name(v)
    ))
}

/// A BOOL's truth value (`None` for NULL).
pub fn truth(v: &Value) -> SqlResult<Option<bool>> {
    match v {
        Value::Null => Ok(None),
        Value::Bool(b) => Ok(Some(*b)),
        other => Err(SqlError::mismatch(format!(
            "expected a BOOL condition, found {} ({})",
            display_value(other),
            type_name(other)
        ))),
    }
}

fn and(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    match (a, b) {
        (Some(false), _) | (_, Some(false)) => Some(false),
        (Some(true), Some(true)) => Some(true),
        _ => None,
    }
}

fn binary(op: BinOp, l: &Expr, r: &Expr, row: &[Value], aggs: &[Value]) -> SqlResult<Value> {
    match op {
        BinOp::And => {
            let a = truth(&l.eval(row, aggs)?)?;
            if a == Some(false) {
                return Ok(Value::Bool(false));
            }
            Ok(and(a, truth(&r.eval(row, aggs)?)?).map_or(Value::Null, Value::Bool))
        }
        BinOp::Or => {
            let a = truth(&l.eval(row, aggs)?)?;
            if a == Some(true) {
                return Ok(Value::Bool(true));
            }
            let b = truth(&r.eval(row, aggs)?)?;
            Ok(match (a, b) {
                (_, Some(true)) => Value::Bool(true),
                (Some(false), Some(false)) => Value::Bool(false),
                _ => Value::Null,
            })
        }
        _ => {
            let (a, b) = (l.eval(row, aggs)?, r.eval(row, aggs)?);
            match op {
                BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Mod => arith(op, &a, &b),
                BinOp::Concat => concat(a, b),
                _ => cmp_op(op, &a, &b),
            }
        }
    }
}

fn arith(op: BinOp, a: &Value, b: &Value) -> SqlResult<Value> {
    let div0 = || SqlError::invalid("division by zero");
    Ok(match (a, b) {
        (Value::Null, _) | (_, Value::Null) => Value::Null,
        (Value::Int64(x), Value::Int64(y)) => Value::Int64(match op {
            BinOp::Add => x.checked_add(*y).ok_or_else(overflow)?,
            BinOp::Sub => x.checked_sub(*y).ok_or_else(overflow)?,
            BinOp::Mul => x.checked_mul(*y).ok_or_else(overflow)?,
            BinOp::Div if *y == 0 => return Err(div0()),
            BinOp::Div => x.checked_div(*y).ok_or_else(overflow)?,
            BinOp::Mod if *y == 0 => return Err(div0()),
            _ => x.checked_rem(*y).ok_or_else(overflow)?,
        }),
        _ => {
            let (Some(x), Some(y)) = (as_f64(a), as_f64(b)) else {
                let bad = if as_f64(a).is_none() { a } else { b };
                return Err(bad_operand(op_name(op), bad));
            };
            if matches!(op, BinOp::Div | BinOp::Mod) && y == 0.0 {
                return Err(div0());
            }
            Value::Float64(match op {
                BinOp::Add => x + y,
                BinOp::Sub => x - y,
                BinOp::Mul => x * y,
                BinOp::Div => x / y,
                _ => x % y,
            })
        }
    })
}

fn op_name(op: BinOp) -> &'static str {
    match op {
        BinOp::Add => "+",
        BinOp::Sub => "-",
        BinOp::Mul => "*",
        BinOp::Div => "/",
        BinOp::Mod => "%",
        _ => "comparison",
    }
}

fn as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Int64(i) => Some(*i as f64),
        Value::Float64(f) => Some(*f),
        _ => None,
    }
}

fn concat(a: Value, b: Value) -> SqlResult<Value> {
    Ok(match (a, b) {
        (Value::Null, _) | (_, Value::Null) => Value::Null,
        (Value::Bytes(mut x), Value::Bytes(y)) => {
            x.extend(y);
            Value::Bytes(x)
        }
        (x, y) => Value::String(display_value(&x) + &display_value(&y)),
    })
}

/// Compares two values in SQL: `None` if either is NULL; INT64 and FLOAT64 as numbers;
/// a string against a TIMESTAMP parses the string; other type mixes are errors.
pub fn compare(a: &Value, b: &Value) -> SqlResult<Option<Ordering>> {
    Ok(Some(match (a, b) {
        (Value::Null, _) | (_, Value::Null) => return Ok(None),
        (Value::Int64(x), Value::Float64(y)) => (*x as f64).total_cmp(y),
        (Value::Float64(x), Value::Int64(y)) => x.total_cmp(&(*y as f64)),
        (Value::String(s), t @ Value::Timestamp { .. }) => parse_timestamp(s)?.sql_cmp(t),
        (t @ Value::Timestamp { .. }, Value::String(s)) => t.sql_cmp(&parse_timestamp(s)?),
        (x, y) if std::mem::discriminant(x) == std::mem::discriminant(y) => x.sql_cmp(y),
        (x, y) => {
            return Err(SqlError::mismatch(format!(
                "cannot compare {} ({}) with {} ({}); CAST one of them",
                display_value(x),
                type_name(x),
                display_value(y),
                type_name(y)
            )));
        }
    }))
}

fn cmp_op(op: BinOp, a: &Value, b: &Value) -> SqlResult<Value> {
    let Some(ord) = compare(a, b)? else {
        return Ok(Value::Null);
    };
    Ok(Value::Bool(match op {
        BinOp::Eq => ord == Ordering::Equal,
        BinOp::NotEq => ord != Ordering::Equal,
        BinOp::Lt => ord == Ordering::Less,
        BinOp::LtEq => ord != Ordering::Greater,
        BinOp::Gt => ord == Ordering::Greater,
        _ => ord != Ordering::Less,
    }))
}

fn in_list(
    x: &Expr,
    list: &[Expr],
    negated: bool,
    row: &[Value],
    aggs: &[Value],
) -> SqlResult<Value> {
    let v = x.eval(row, aggs)?;
    if v == Value::Null {
        return Ok(Value::Null);
    }
    let mut saw_null = false;
    for item in list {
        match compare(&v, &item.eval(row, aggs)?)? {
            Some(Ordering::Equal) => return Ok(Value::Bool(!negated)),
            None => saw_null = true,
            Some(_) => {}
        }
    }
    Ok(if saw_null {
        Value::Null
    } else {
        Value::Bool(negated)
    })
}

/// `%` matches any run of characters, `_` any one. Iterative (backtracking to the last
/// `%`), so long strings cannot overflow the stack; O(len(s) * len(p)) at worst.
fn like(s: &[char], p: &[char]) -> bool {
    let (mut si, mut pi) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        match p.get(pi) {
            Some('%') => {
                star = Some((pi, si));
                pi += 1;
            }
            Some(c) if *c == '_' || Some(c) == s.get(si) => {
                si += 1;
                pi += 1;
            }
            _ => match star {
                Some((sp, ss)) => {
                    pi = sp + 1;
                    si = ss + 1;
                    star = Some((sp, ss + 1));
                }
                None => return false,
            },
        }
    }
    p.get(pi..)
        .is_some_and(|rest| rest.iter().all(|c| *c == '%'))
}

/// Converts a value to `ty` (CAST).
pub fn cast(v: Value, ty: SqlType) -> SqlResult<Value> {
    let fail = |v: &Value| {
        SqlError::invalid(format!(
            "cannot cast {} ({}) to {ty}",
            display_value(v),
            type_name(v)
        ))
    };
    Ok(match (ty, v) {
        (_, Value::Null) => Value::Null,
        (SqlType::Int64, Value::Float64(f)) => {
            if f.is_finite() && f.abs() < 9.2e18 {
                Value::Int64(f.round() as i64)
            } else {
                return Err(fail(&Value::Float64(f)));
            }
        }
        (SqlType::Int64, Value::String(s)) => match s.trim().parse() {
            Ok(i) => Value::Int64(i),
            Err(_) => return Err(fail(&Value::String(s))),
        },
        (SqlType::Int64, Value::Bool(b)) => Value::Int64(i64::from(b)),
        (SqlType::Float64, Value::String(s)) => match s.trim().parse() {
            Ok(f) => Value::Float64(f),
            Err(_) => return Err(fail(&Value::String(s))),
        },
        (SqlType::String(_), v @ Value::Bytes(_)) => match v {
            Value::Bytes(b) => match String::from_utf8(b) {
                Ok(s) => Value::String(s),
                Err(e) => return Err(fail(&Value::Bytes(e.into_bytes()))),
            },
            v => v,
        },
        (SqlType::String(_), v) => Value::String(display_value(&v)),
        (SqlType::Bool, Value::String(s)) => match s.trim().to_lowercase().as_str() {
            "true" | "t" => Value::Bool(true),
            "false" | "f" => Value::Bool(false),
            _ => return Err(fail(&Value::String(s))),
        },
        (ty, v) => ty.coerce(v, "CAST").map_err(|_| fail(&Value::Null))?,
    })
}

fn func(f: Func, args: &[Expr], row: &[Value], aggs: &[Value]) -> SqlResult<Value> {
    let vals = args
        .iter()
        .map(|a| a.eval(row, aggs))
        .collect::<SqlResult<Vec<_>>>()?;
    if f == Func::Coalesce {
        return Ok(vals
            .into_iter()
            .find(|v| *v != Value::Null)
            .unwrap_or(Value::Null));
    }
    let v = vals.into_iter().next().unwrap_or(Value::Null);
    Ok(match (f, v) {
        (_, Value::Null) => Value::Null,
        (Func::Lower, Value::String(s)) => Value::String(s.to_lowercase()),
        (Func::Upper, Value::String(s)) => Value::String(s.to_uppercase()),
        (Func::Length, Value::String(s)) => Value::Int64(s.chars().count() as i64),
        (Func::Length, Value::Bytes(b)) => Value::Int64(b.len() as i64),
        (Func::Abs, Value::Int64(i)) => Value::Int64(i.checked_abs().ok_or_else(overflow)?),
        (Func::Abs, Value::Float64(x)) => Value::Float64(x.abs()),
        (f, v) => return Err(bad_operand(&format!("{f:?}").to_uppercase(), &v)),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use sqlparser::dialect::GenericDialect;
    use sqlparser::parser::Parser;

    use super::*;

    fn eval(sql: &str) -> SqlResult<Value> {
        let e = Parser::new(&GenericDialect {})
            .try_with_sql(sql)
            .unwrap()
            .parse_expr()
            .unwrap();
        Compiler::new(None, &[Value::Int64(7)])
            .compile(&e)?
            .eval(&[], &[])
    }

    #[test]
    fn arithmetic_and_logic() {
        assert_eq!(eval("1 + 2 * 3").unwrap(), Value::Int64(7));
        assert_eq!(eval("7 / 2").unwrap(), Value::Int64(3));
        assert_eq!(eval("7 / 2.0").unwrap(), Value::Float64(3.5));
        assert_eq!(eval("$1 - 1").unwrap(), Value::Int64(6));
        assert_eq!(eval("NULL AND FALSE").unwrap(), Value::Bool(false));
        assert_eq!(eval("NULL OR FALSE").unwrap(), Value::Null);
        assert_eq!(eval("2 IN (1, NULL)").unwrap(), Value::Null);
        assert_eq!(eval("2 BETWEEN 1 AND 3").unwrap(), Value::Bool(true));
        assert_eq!(eval("'abc' LIKE 'a%c'").unwrap(), Value::Bool(true));
        assert_eq!(eval("'abc' LIKE 'a_'").unwrap(), Value::Bool(false));
        assert_eq!(eval("'abcbd' LIKE '%b_'").unwrap(), Value::Bool(true));
        assert_eq!(eval("'abc' LIKE '%%c%'").unwrap(), Value::Bool(true));
        assert_eq!(eval("'' LIKE '%'").unwrap(), Value::Bool(true));
        assert_eq!(eval("'ab' LIKE 'a'").unwrap(), Value::Bool(false));
        let long = format!("'{}'", "a".repeat(200_000));
        assert_eq!(
            eval(&format!("{long} LIKE '%a_a%'")).unwrap(),
            Value::Bool(true)
        );
        assert_eq!(eval("'a' || 1").unwrap(), Value::String("a1".into()));
        assert_eq!(
            eval("-9223372036854775808").unwrap(),
            Value::Int64(i64::MIN)
        );
    }

    #[test]
    fn errors_not_panics() {
        assert!(
            eval("9223372036854775807 + 1")
                .unwrap_err()
                .message
                .contains("overflow")
        );
        assert!(
            eval("1 / 0")
                .unwrap_err()
                .message
                .contains("division by zero")
        );
        assert!(eval("1 % 0").is_err());
        assert!(eval("-9223372036854775808 / -1").is_err());
        assert_eq!(
            eval("1 = 'a'").unwrap_err().code,
            crate::ErrorCode::DatatypeMismatch
        );
        assert_eq!(
            eval("x").unwrap_err().code,
            crate::ErrorCode::UndefinedColumn
        );
        assert_eq!(
            eval("$2").unwrap_err().code,
            crate::ErrorCode::InvalidArgument
        );
        assert!(eval("count(*)").is_err());
    }
}
