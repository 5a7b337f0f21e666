//! SELECT: compiles a query against its table into a [`SelectPlan`] (access path, filter,
//! projections, aggregates, ordering), then runs it.
//!
//! ORDER BY: ascending puts NULLs first and descending puts them last (NULL is the smallest
//! value, as in Spanner); `NULLS FIRST`/`NULLS LAST` override. ORDER BY may name an output
//! alias, an output position (`ORDER BY 2`) or any expression. Without ORDER BY, rows come
//! in primary-key order (groups in group-key order) and LIMIT stops the scan early.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use sqlparser::ast::{self, GroupByExpr, LimitClause, SelectItem, SetExpr, TableFactor};
use storage::key::{Direction, Value, encode_key};

use crate::agg::{Accumulator, AggCall};
use crate::catalog;
use crate::error::{SqlError, SqlResult};
use crate::expr::{Compiler, Expr, compare, ident_name, object_name, truth};
use crate::kv::Kv;
use crate::plan::{AccessPath, plan};
use crate::result::{QueryResult, ResultColumn};
use crate::scan::for_each_row;
use crate::schema::TableSchema;

#[derive(Debug, Clone)]
enum OrderKey {
    Output(usize),
    Expr(Expr),
}

#[derive(Debug, Clone)]
struct OrderItem {
    key: OrderKey,
    desc: bool,
    nulls_first: bool,
}

/// A compiled SELECT.
#[derive(Debug, Clone)]
pub struct SelectPlan {
    table: Option<TableSchema>,
    /// The access path (`None` without FROM).
    pub access: Option<AccessPath>,
    filter: Option<Expr>,
    outputs: Vec<Expr>,
    columns: Vec<ResultColumn>,
    aggs: Vec<AggCall>,
    group_by: Vec<Expr>,
    having: Option<Expr>,
    aggregate: bool,
    order: Vec<OrderItem>,
    distinct: bool,
    limit: Option<u64>,
    offset: u64,
}

/// Compiles `query`, reading the catalog through `kv`.
pub async fn compile(
    kv: &mut dyn Kv,
    query: &ast::Query,
    params: &[Value],
) -> SqlResult<SelectPlan> {
    if query.with.is_some() {
        return Err(SqlError::unsupported("WITH is not supported"));
    }
    let SetExpr::Select(select) = &*query.body else {
        return Err(SqlError::unsupported(
            "only SELECT ... [FROM one table] is supported (no UNION, VALUES or subqueries)",
        ));
    };
    let (table, alias) = match select.from.as_slice() {
        [] => (None, None),
        [t] if t.joins.is_empty() => match &t.relation {
            TableFactor::Table { name, alias, .. } => {
                let table = catalog::get_table(kv, &object_name(name)?).await?;
                (Some(table), alias.as_ref().map(|a| ident_name(&a.name)))
            }
            _ => return Err(SqlError::unsupported("only a plain table may follow FROM")),
        },
        _ => {
            return Err(SqlError::unsupported(
                "joins are not supported; query one table",
            ));
        }
    };
    let mut c = Compiler::new(table.as_ref(), params);
    if alias.is_some() {
        c.qualifier = alias;
    }
    let filter = select
        .selection
        .as_ref()
        .map(|e| c.compile(e))
        .transpose()?;
    c.aggs = Some(Vec::new());
    let (outputs, names) = projection(&mut c, &select.projection)?;
    let group_by = group_by(&mut c, &select.group_by, &outputs)?;
    let having = select.having.as_ref().map(|e| c.compile(e)).transpose()?;
    let order = order_by(&mut c, query.order_by.as_ref(), &names, outputs.len())?;
    let (limit, offset) = limits(query.limit_clause.as_ref(), params)?;
    let aggs = c.aggs.take().unwrap_or_default();
    let aggregate = !aggs.is_empty() || !group_by.is_empty() || having.is_some();
    if aggregate {
        let order_exprs = order.iter().filter_map(|o| match &o.key {
            OrderKey::Expr(e) => Some(e),
            OrderKey::Output(_) => None,
        });
        for e in outputs.iter().chain(having.iter()).chain(order_exprs) {
            if !grouped(e, &group_by) {
                return Err(SqlError::invalid(
                    "a column outside an aggregate must appear in GROUP BY; add it to GROUP BY \
                     or wrap it in an aggregate such as MIN()",
                ));
            }
        }
    }
    let columns = names
        .into_iter()
        .zip(&outputs)
        .map(|(name, e)| ResultColumn {
            name,
            ty: e.infer(table.as_ref(), &aggs),
        })
        .collect();
    let access = table
        .as_ref()
        .map(|t| plan(t, filter.as_ref()))
        .transpose()?;
    Ok(SelectPlan {
        table,
        access,
        filter,
        outputs,
        columns,
        aggs,
        group_by,
        having,
        aggregate,
        order,
        distinct: select.distinct.is_some(),
        limit,
        offset,
    })
}

fn projection(c: &mut Compiler<'_>, items: &[SelectItem]) -> SqlResult<(Vec<Expr>, Vec<String>)> {
    let mut outputs = Vec::new();
    let mut names = Vec::new();
    for item in items {
        match item {
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..) => {
                let Some(t) = c.table else {
                    return Err(SqlError::invalid("SELECT * needs a FROM clause"));
                };
                for (i, col) in t.columns.iter().enumerate() {
                    outputs.push(Expr::Column(i));
                    names.push(col.name.clone());
                }
            }
            SelectItem::UnnamedExpr(e) => {
                outputs.push(c.compile(e)?);
                names.push(expr_name(e));
            }
            SelectItem::ExprWithAlias { expr, alias } => {
                outputs.push(c.compile(expr)?);
                names.push(ident_name(alias));
            }
            other => return Err(SqlError::unsupported(format!("{other} is not supported"))),
        }
    }
    Ok((outputs, names))
}

fn expr_name(e: &ast::Expr) -> String {
    match e {
        ast::Expr::Identifier(id) => ident_name(id),
        ast::Expr::CompoundIdentifier(p) => p.last().map(ident_name).unwrap_or_default(),
        ast::Expr::Function(f) => f.name.to_string().to_lowercase(),
        other => other.to_string(),
    }
}

/// An output position (`ORDER BY 2`, `GROUP BY 1`), if `e` is an integer literal.
fn position(e: &ast::Expr, len: usize) -> SqlResult<Option<usize>> {
    let ast::Expr::Value(v) = e else {
        return Ok(None);
    };
    let ast::Value::Number(n, _) = &v.value else {
        return Ok(None);
    };
    match n.parse::<usize>() {
        Ok(p) if (1..=len).contains(&p) => Ok(Some(p - 1)),
        _ => Err(SqlError::invalid(format!(
            "position {n} is not in the select list (1 to {len})"
        ))),
    }
}

fn group_by(c: &mut Compiler<'_>, g: &GroupByExpr, outputs: &[Expr]) -> SqlResult<Vec<Expr>> {
    let GroupByExpr::Expressions(exprs, modifiers) = g else {
        return Err(SqlError::unsupported("GROUP BY ALL is not supported"));
    };
    if !modifiers.is_empty() {
        return Err(SqlError::unsupported(
            "GROUP BY modifiers are not supported",
        ));
    }
    let saved = c.aggs.take();
    let result = exprs
        .iter()
        .map(|e| match position(e, outputs.len())? {
            Some(p) => outputs
                .get(p)
                .cloned()
                .ok_or_else(|| SqlError::internal("bad GROUP BY position")),
            None => c.compile(e),
        })
        .collect::<SqlResult<Vec<_>>>();
    c.aggs = saved;
    result
}

fn order_by(
    c: &mut Compiler<'_>,
    order: Option<&ast::OrderBy>,
    names: &[String],
    len: usize,
) -> SqlResult<Vec<OrderItem>> {
    let Some(order) = order else {
        return Ok(Vec::new());
    };
    let ast::OrderByKind::Expressions(items) = &order.kind else {
        return Err(SqlError::unsupported("ORDER BY ALL is not supported"));
    };
    items
        .iter()
        .map(|item| {
            let desc = match &item.options.sort {
                None | Some(ast::OrderBySort::Asc) => false,
                Some(ast::OrderBySort::Desc) => true,
                Some(_) => {
                    return Err(SqlError::unsupported("ORDER BY ... USING is not supported"));
                }
            };
            let key = match (&item.expr, position(&item.expr, len)?) {
                (_, Some(p)) => OrderKey::Output(p),
                (ast::Expr::Identifier(id), None)
                    if names.contains(&ident_name(id))
                        && c.table
                            .is_none_or(|t| t.column_index(&ident_name(id)).is_err()) =>
                {
                    OrderKey::Output(names.iter().position(|n| *n == ident_name(id)).unwrap_or(0))
                }
                (e, None) => OrderKey::Expr(c.compile(e)?),
            };
            Ok(OrderItem {
                key,
                desc,
                nulls_first: item.options.nulls_first.unwrap_or(!desc),
            })
        })
        .collect()
}

fn limits(l: Option<&LimitClause>, params: &[Value]) -> SqlResult<(Option<u64>, u64)> {
    let Some(l) = l else {
        return Ok((None, 0));
    };
    let LimitClause::LimitOffset {
        limit,
        offset,
        limit_by,
    } = l
    else {
        return Err(SqlError::unsupported("use LIMIT n OFFSET m"));
    };
    if !limit_by.is_empty() {
        return Err(SqlError::unsupported("LIMIT BY is not supported"));
    }
    let eval = |e: &ast::Expr, what: &str| -> SqlResult<Option<u64>> {
        match Compiler::new(None, params).compile(e)?.eval(&[], &[])? {
            Value::Null => Ok(None),
            Value::Int64(n) if n >= 0 => Ok(Some(n as u64)),
            _ => Err(SqlError::invalid(format!(
                "{what} must be a non-negative INT64"
            ))),
        }
    };
    let limit = limit
        .as_ref()
        .map(|e| eval(e, "LIMIT"))
        .transpose()?
        .flatten();
    let offset = offset
        .as_ref()
        .map(|o| eval(&o.value, "OFFSET"))
        .transpose()?
        .flatten();
    Ok((limit, offset.unwrap_or(0)))
}

/// Whether `e` only reads columns through GROUP BY expressions or aggregates.
fn grouped(e: &Expr, group_by: &[Expr]) -> bool {
    if group_by.contains(e) {
        return true;
    }
    match e {
        Expr::Column(_) => false,
        Expr::Literal(_) | Expr::Agg(_) => true,
        Expr::Neg(x) | Expr::Not(x) | Expr::IsNull(x, _) | Expr::Cast(x, _) => grouped(x, group_by),
        Expr::Binary(_, a, b) | Expr::Like(a, b, _, _) => {
            grouped(a, group_by) && grouped(b, group_by)
        }
        Expr::Between(a, b, c, _) => [a, b, c].iter().all(|x| grouped(x, group_by)),
        Expr::InList(x, l, _) => grouped(x, group_by) && l.iter().all(|y| grouped(y, group_by)),
        Expr::Func(_, args) => args.iter().all(|y| grouped(y, group_by)),
    }
}

type Output = (Vec<Value>, Vec<Value>);

impl SelectPlan {
    /// Runs the plan.
    pub async fn run(&self, kv: &mut dyn Kv) -> SqlResult<QueryResult> {
        let mut out: Vec<Output> = Vec::new();
        let early_stop = (self.order.is_empty() && !self.distinct && !self.aggregate)
            .then_some(self.limit.map(|l| l.saturating_add(self.offset)))
            .flatten();
        let mut groups: BTreeMap<Vec<u8>, (Vec<Value>, Vec<Accumulator>)> = BTreeMap::new();
        let mut on_row = |row: Vec<Value>| -> SqlResult<bool> {
            if self.aggregate {
                self.accumulate(&mut groups, row)?;
                return Ok(true);
            }
            out.push(self.output(&row, &[])?);
            Ok(early_stop.is_none_or(|n| (out.len() as u64) < n))
        };
        match (&self.table, &self.access) {
            (Some(t), Some(a)) => {
                if early_stop != Some(0) {
                    for_each_row(kv, t, &a.access, self.filter.as_ref(), |_, r| on_row(r)).await?;
                }
            }
            _ => {
                let pass = match &self.filter {
                    Some(f) => f.matches(&[])?,
                    None => true,
                };
                if pass {
                    on_row(Vec::new())?;
                }
            }
        }
        if self.aggregate {
            out = self.finish_groups(groups)?;
        }
        self.sort(&mut out);
        let mut rows: Vec<Vec<Value>> = out.into_iter().map(|(r, _)| r).collect();
        if self.distinct {
            let mut seen = BTreeSet::new();
            rows.retain(|r| seen.insert(encode_key(r.iter().map(|v| (v, Direction::Ascending)))));
        }
        let rows = rows
            .into_iter()
            .skip(usize::try_from(self.offset).unwrap_or(usize::MAX))
            .take(
                self.limit
                    .map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX)),
            )
            .collect();
        Ok(QueryResult::rows("SELECT", self.columns.clone(), rows))
    }

    fn output(&self, row: &[Value], aggs: &[Value]) -> SqlResult<Output> {
        let values = self
            .outputs
            .iter()
            .map(|e| e.eval(row, aggs))
            .collect::<SqlResult<Vec<_>>>()?;
        let keys = self
            .order
            .iter()
            .map(|o| match &o.key {
                OrderKey::Output(i) => Ok(values.get(*i).cloned().unwrap_or(Value::Null)),
                OrderKey::Expr(e) => e.eval(row, aggs),
            })
            .collect::<SqlResult<Vec<_>>>()?;
        Ok((values, keys))
    }

    fn accumulate(
        &self,
        groups: &mut BTreeMap<Vec<u8>, (Vec<Value>, Vec<Accumulator>)>,
        row: Vec<Value>,
    ) -> SqlResult<()> {
        let key_values = self
            .group_by
            .iter()
            .map(|e| e.eval(&row, &[]))
            .collect::<SqlResult<Vec<_>>>()?;
        let key = encode_key(key_values.iter().map(|v| (v, Direction::Ascending)));
        let (_, accs) = groups.entry(key).or_insert_with(|| {
            let accs = self.aggs.iter().map(Accumulator::new).collect();
            (row.clone(), accs)
        });
        for (acc, call) in accs.iter_mut().zip(&self.aggs) {
            acc.add(call, &row)?;
        }
        Ok(())
    }

    fn finish_groups(
        &self,
        mut groups: BTreeMap<Vec<u8>, (Vec<Value>, Vec<Accumulator>)>,
    ) -> SqlResult<Vec<Output>> {
        if groups.is_empty() && self.group_by.is_empty() {
            let width = self.table.as_ref().map_or(0, |t| t.columns.len());
            let accs = self.aggs.iter().map(Accumulator::new).collect();
            groups.insert(Vec::new(), (vec![Value::Null; width], accs));
        }
        let mut out = Vec::new();
        for (rep, accs) in groups.into_values() {
            let values: Vec<Value> = accs
                .iter()
                .zip(&self.aggs)
                .map(|(a, c)| a.finish(c))
                .collect();
            if let Some(h) = &self.having
                && truth(&h.eval(&rep, &values)?)? != Some(true)
            {
                continue;
            }
            out.push(self.output(&rep, &values)?);
        }
        Ok(out)
    }

    fn sort(&self, out: &mut [Output]) {
        if self.order.is_empty() {
            return;
        }
        out.sort_by(|(_, a), (_, b)| {
            for (o, (x, y)) in self.order.iter().zip(a.iter().zip(b)) {
                let ord = match (x, y) {
                    (Value::Null, Value::Null) => Ordering::Equal,
                    (Value::Null, _) if o.nulls_first => Ordering::Less,
                    (Value::Null, _) => Ordering::Greater,
                    (_, Value::Null) if o.nulls_first => Ordering::Greater,
                    (_, Value::Null) => Ordering::Less,
                    _ => {
                        let ord = compare(x, y).ok().flatten().unwrap_or_else(|| x.sql_cmp(y));
                        if o.desc { ord.reverse() } else { ord }
                    }
                };
                if ord != Ordering::Equal {
                    return ord;
                }
            }
            Ordering::Equal
        });
    }
}
