//! DDL: CREATE TABLE, DROP TABLE and `ALTER TABLE t SPLIT AT VALUES (...)`.
//!
//! DDL runs outside explicit transactions, each statement in a read-write transaction of
//! its own (the session retries it on retryable errors). CREATE TABLE allocates the table
//! id, writes the schema and makes the table's key range a tablet
//! ([`crate::Backend::create_range`]) before it commits, so the first row never lands in a
//! shared tablet. DROP TABLE deletes the rows and the catalog entry in one transaction;
//! table ids are never reused, so a dropped table's keys cannot reappear in a new table.

use sqlparser::ast::{self, ColumnOption, TableConstraint};
use storage::key::Value;

use crate::catalog;
use crate::error::{SqlError, SqlResult};
use crate::expr::{Compiler, ident_name, object_name};
use crate::kv::{Backend, Kv};
use crate::result::QueryResult;
use crate::row::{row_key, table_range};
use crate::scan::SCAN_BATCH;
use crate::schema::{ColumnDef, TableSchema};
use crate::types::SqlType;

/// A validated CREATE TABLE (its id is allocated when it runs).
#[derive(Debug, Clone)]
pub struct CreateTable {
    /// The schema, id 0.
    pub schema: TableSchema,
    /// IF NOT EXISTS.
    pub if_not_exists: bool,
}

/// Validates a CREATE TABLE statement.
pub fn compile_create(ct: &ast::CreateTable) -> SqlResult<CreateTable> {
    if ct.query.is_some() || ct.like.is_some() || ct.clone.is_some() {
        return Err(SqlError::unsupported(
            "CREATE TABLE AS/LIKE/CLONE is not supported",
        ));
    }
    let name = object_name(&ct.name)?;
    let mut columns: Vec<ColumnDef> = Vec::new();
    let mut pk: Option<Vec<usize>> = None;
    let set_pk = |pk: &mut Option<Vec<usize>>, cols: Vec<usize>| {
        if pk.is_some() {
            return Err(SqlError::invalid(
                "the table has two PRIMARY KEY definitions; keep one",
            ));
        }
        *pk = Some(cols);
        Ok(())
    };
    for (i, col) in ct.columns.iter().enumerate() {
        let cname = ident_name(&col.name);
        if columns.iter().any(|c| c.name == cname) {
            return Err(SqlError::invalid(format!(
                "column {cname} is defined twice"
            )));
        }
        let mut def = ColumnDef {
            name: cname.clone(),
            ty: SqlType::from_ast(&col.data_type)?,
            nullable: true,
        };
        for opt in &col.options {
            match &opt.option {
                ColumnOption::NotNull => def.nullable = false,
                ColumnOption::Null => {}
                ColumnOption::PrimaryKey(_) => set_pk(&mut pk, vec![i])?,
                other => {
                    return Err(SqlError::unsupported(format!(
                        "column option {other} is not supported (only NOT NULL and PRIMARY KEY)"
                    )));
                }
            }
        }
        columns.push(def);
    }
    if columns.is_empty() {
        return Err(SqlError::invalid("a table needs at least one column"));
    }
    for c in &ct.constraints {
        let TableConstraint::PrimaryKey(p) = c else {
            return Err(SqlError::unsupported(format!(
                "constraint {c} is not supported (only PRIMARY KEY)"
            )));
        };
        let cols = p
            .columns
            .iter()
            .map(|ic| match &ic.column.expr {
                ast::Expr::Identifier(id) => {
                    let n = ident_name(id);
                    columns.iter().position(|c| c.name == n).ok_or_else(|| {
                        SqlError::undefined_column(format!("primary key column {n} is not defined"))
                    })
                }
                other => Err(SqlError::invalid(format!(
                    "primary key part {other} must be a column"
                ))),
            })
            .collect::<SqlResult<Vec<_>>>()?;
        set_pk(&mut pk, cols)?;
    }
    let pk = pk.filter(|p| !p.is_empty()).ok_or_else(|| {
        SqlError::invalid(format!(
            "table {name} needs a PRIMARY KEY: add PRIMARY KEY to a column or PRIMARY KEY (a, b)"
        ))
    })?;
    for (n, i) in pk.iter().enumerate() {
        if pk.get(..n).is_some_and(|before| before.contains(i)) {
            return Err(SqlError::invalid("a primary key column is listed twice"));
        }
        if let Some(c) = columns.get_mut(*i) {
            c.nullable = false;
        }
    }
    Ok(CreateTable {
        schema: TableSchema {
            id: 0,
            name,
            columns,
            primary_key: pk,
        },
        if_not_exists: ct.if_not_exists,
    })
}

/// Runs a CREATE TABLE in `kv` (a fresh read-write transaction the caller commits).
pub async fn create(
    kv: &mut dyn Kv,
    backend: &dyn Backend,
    ct: &CreateTable,
) -> SqlResult<QueryResult> {
    if ct.if_not_exists
        && catalog::find_table_locked(kv, &ct.schema.name)
            .await?
            .is_some()
    {
        return Ok(QueryResult::tag("CREATE TABLE"));
    }
    let mut schema = ct.schema.clone();
    schema.id = catalog::allocate_table_id(kv).await?;
    catalog::create_table(kv, &schema).await?;
    let (start, end) = table_range(schema.id);
    backend.create_range(start, end).await?;
    Ok(QueryResult::tag("CREATE TABLE"))
}

/// Runs a DROP TABLE in `kv`.
pub async fn drop(
    kv: &mut dyn Kv,
    names: &[ast::ObjectName],
    if_exists: bool,
) -> SqlResult<QueryResult> {
    for name in names {
        let name = object_name(name)?;
        let Some(table) = catalog::find_table_locked(kv, &name).await? else {
            if if_exists {
                continue;
            }
            return Err(SqlError::undefined_table(format!(
                "table {name} does not exist; use DROP TABLE IF EXISTS to ignore that"
            )));
        };
        let (mut start, end) = table_range(table.id);
        loop {
            let batch = kv.scan(&start, &end, SCAN_BATCH).await?;
            let full = batch.len() >= SCAN_BATCH;
            let Some(last) = batch.last().map(|(k, _)| k.clone()) else {
                break;
            };
            for (key, _) in batch {
                kv.delete(key)?;
            }
            if !full {
                break;
            }
            start = last;
            start.push(0);
        }
        catalog::drop_table(kv, &name)?;
    }
    Ok(QueryResult::tag("DROP TABLE"))
}

/// The split keys of `ALTER TABLE t SPLIT AT VALUES ...`: each point is a primary key or a
/// prefix of one, encoded as the first key of that prefix.
pub async fn split_keys(
    kv: &mut dyn Kv,
    table: &ast::ObjectName,
    points: &[Vec<ast::Expr>],
    params: &[Value],
) -> SqlResult<Vec<Vec<u8>>> {
    let table = catalog::get_table_locked(kv, &object_name(table)?).await?;
    let mut keys = Vec::new();
    for point in points {
        if point.is_empty() || point.len() > table.primary_key.len() {
            return Err(SqlError::invalid(format!(
                "a split point has 1 to {} values (the primary key of {})",
                table.primary_key.len(),
                table.name
            )));
        }
        let mut values = Vec::new();
        for (e, &col) in point.iter().zip(&table.primary_key) {
            let def = table.column(col)?;
            let v = Compiler::new(None, params).compile(e)?.eval(&[], &[])?;
            values.push(def.ty.coerce(v, &def.name)?);
        }
        let key = if values.len() == table.primary_key.len() {
            row_key(&table, &values)?
        } else {
            let mut partial = table.clone();
            partial.primary_key.truncate(values.len());
            row_key(&partial, &values)?
        };
        keys.push(key);
    }
    Ok(keys)
}
