//! Runs one data statement (a query, DML, SHOW, EXPLAIN) inside a transaction. Transaction
//! control, session settings and DDL are the session's ([`crate::Session`]).

use sqlparser::ast::{ShowStatementIn, Statement};
use storage::key::Value;

use crate::catalog;
use crate::dml;
use crate::error::{SqlError, SqlResult};
use crate::expr::object_name;
use crate::kv::Kv;
use crate::result::{QueryResult, ResultColumn, text_column};
use crate::select;
use crate::types::SqlType;

/// Whether `stmt` writes (so it needs a read-write transaction).
pub fn is_write(stmt: &Statement) -> bool {
    matches!(
        stmt,
        Statement::Insert(_) | Statement::Update(_) | Statement::Delete(_)
    )
}

/// Whether [`run`] handles `stmt`.
pub fn is_data(stmt: &Statement) -> bool {
    is_write(stmt)
        || matches!(
            stmt,
            Statement::Query(_)
                | Statement::Explain { .. }
                | Statement::ShowTables { .. }
                | Statement::ShowColumns { .. }
        )
}

/// Runs a data statement in `kv`.
pub async fn run(
    kv: &mut dyn Kv,
    stmt: &Statement,
    upsert: bool,
    params: &[Value],
) -> SqlResult<QueryResult> {
    match stmt {
        Statement::Query(q) => select::compile(kv, q, params).await?.run(kv).await,
        Statement::Insert(ins) => dml::insert(kv, ins, upsert, params).await,
        Statement::Update(u) => dml::compile_update(kv, u, params).await?.run(kv).await,
        Statement::Delete(d) => dml::compile_delete(kv, d, params).await?.run(kv).await,
        Statement::Explain {
            statement, analyze, ..
        } => {
            if *analyze {
                return Err(SqlError::unsupported(
                    "EXPLAIN ANALYZE is not supported; use EXPLAIN",
                ));
            }
            let plan = explain(kv, statement, params).await?;
            Ok(QueryResult::rows(
                "EXPLAIN",
                vec![text_column("plan")],
                vec![vec![Value::String(plan)]],
            ))
        }
        Statement::ShowTables { .. } => show_tables(kv).await,
        Statement::ShowColumns { show_options, .. } => {
            let name = match &show_options.show_in {
                Some(ShowStatementIn {
                    parent_name: Some(n),
                    ..
                }) => object_name(n)?,
                _ => return Err(SqlError::syntax("write SHOW COLUMNS FROM <table>")),
            };
            show_columns(kv, &name).await
        }
        other => Err(SqlError::internal(format!("not a data statement: {other}"))),
    }
}

async fn explain(kv: &mut dyn Kv, stmt: &Statement, params: &[Value]) -> SqlResult<String> {
    Ok(match stmt {
        Statement::Query(q) => match select::compile(kv, q, params).await?.access {
            Some(a) => a.description,
            None => "constant row (no table)".to_string(),
        },
        Statement::Update(u) => dml::compile_update(kv, u, params).await?.access.description,
        Statement::Delete(d) => dml::compile_delete(kv, d, params).await?.access.description,
        Statement::Insert(i) => format!("insert into {}", i.table),
        other => {
            return Err(SqlError::unsupported(format!(
                "EXPLAIN of {other} is not supported; EXPLAIN a SELECT, UPDATE or DELETE"
            )));
        }
    })
}

async fn show_tables(kv: &mut dyn Kv) -> SqlResult<QueryResult> {
    let rows = catalog::list_tables(kv)
        .await?
        .into_iter()
        .map(|t| vec![Value::String(t.name)])
        .collect();
    Ok(QueryResult::rows("SHOW", vec![text_column("name")], rows))
}

async fn show_columns(kv: &mut dyn Kv, name: &str) -> SqlResult<QueryResult> {
    let t = catalog::get_table(kv, name).await?;
    let rows = t
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let pk = t.primary_key.iter().position(|&k| k == i);
            vec![
                Value::String(c.name.clone()),
                Value::String(c.ty.to_string()),
                Value::Bool(c.nullable),
                pk.map_or(Value::Null, |p| Value::Int64(p as i64 + 1)),
            ]
        })
        .collect();
    let columns = vec![
        text_column("name"),
        text_column("type"),
        ResultColumn {
            name: "nullable".into(),
            ty: Some(SqlType::Bool),
        },
        ResultColumn {
            name: "primary_key".into(),
            ty: Some(SqlType::Int64),
        },
    ];
    Ok(QueryResult::rows("SHOW", columns, rows))
}
