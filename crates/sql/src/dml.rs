//! INSERT (with ON CONFLICT, UPSERT and INSERT OR REPLACE), UPDATE and DELETE.
//!
//! A statement's writes go to a [`WriteBuffer`] first and reach the transaction only when
//! the whole statement has succeeded, so a failing statement writes nothing and an explicit
//! transaction stays usable. Reads inside the statement see its own buffered writes (so
//! `INSERT ... VALUES (1), (1)` is a duplicate key).
//!
//! Conflict handling on INSERT:
//! - plain INSERT: an existing key is a `unique_violation`;
//! - `ON CONFLICT [(pk)] DO NOTHING`: the row is skipped;
//! - `ON CONFLICT [(pk)] DO UPDATE SET c = expr [WHERE ...]`: `expr` sees the existing row's
//!   columns and the proposed row as `excluded.c`;
//! - `UPSERT INTO` (Spanner's INSERT OR UPDATE): listed columns are overwritten, others kept;
//! - `INSERT OR REPLACE`: the row is replaced whole (unlisted columns become NULL).
//!
//! Primary-key columns cannot be updated (delete and insert the row instead).

use std::collections::BTreeMap;

use sqlparser::ast::{
    self, AssignmentTarget, FromTable, OnConflictAction, OnInsert, SetExpr, TableFactor,
};
use storage::key::Value;

use crate::catalog;
use crate::error::{ErrorCode, SqlError, SqlResult};
use crate::expr::{Compiler, Expr, ident_name, is_pending_commit_ts, object_name};
use crate::kv::Kv;
use crate::plan::{AccessPath, plan};
use crate::result::QueryResult;
use crate::row::{decode_row, encode_row, row_key};
use crate::scan::for_each_row;
use crate::schema::TableSchema;
use crate::types::SqlType;

type Write = Option<(Vec<u8>, Vec<usize>)>;

/// A statement's writes, applied to the transaction only if it succeeds.
#[derive(Debug, Default)]
pub struct WriteBuffer {
    writes: BTreeMap<Vec<u8>, Write>,
}

impl WriteBuffer {
    async fn get(&self, kv: &mut dyn Kv, key: &[u8]) -> SqlResult<Option<Vec<u8>>> {
        match self.writes.get(key) {
            Some(w) => Ok(w.as_ref().map(|(v, _)| v.clone())),
            None => Ok(kv.get(key).await?),
        }
    }

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>, offsets: Vec<usize>) {
        self.writes.insert(key, Some((value, offsets)));
    }

    fn delete(&mut self, key: Vec<u8>) {
        self.writes.insert(key, None);
    }

    /// Hands the writes to the transaction.
    pub fn apply(self, kv: &mut dyn Kv) -> SqlResult<()> {
        for (key, w) in self.writes {
            match w {
                Some((value, offsets)) => kv.put(key, value, offsets)?,
                None => kv.delete(key)?,
            }
        }
        Ok(())
    }
}

/// A value to write: computed, or the commit timestamp.
#[derive(Debug, Clone)]
enum Cell {
    Expr(Expr),
    CommitTs,
}

fn compile_cell(
    c: &mut Compiler<'_>,
    table: &TableSchema,
    col: usize,
    e: &ast::Expr,
) -> SqlResult<Cell> {
    if !is_pending_commit_ts(e) {
        return Ok(Cell::Expr(c.compile(e)?));
    }
    let def = table.column(col)?;
    if def.ty != SqlType::Timestamp {
        return Err(SqlError::mismatch(format!(
            "PENDING_COMMIT_TIMESTAMP() is a TIMESTAMP but column {} is {}",
            def.name, def.ty
        )));
    }
    if table.is_key(col) {
        return Err(SqlError::invalid(format!(
            "PENDING_COMMIT_TIMESTAMP() cannot be written to primary key column {}: the key \
             must be known before commit",
            def.name
        )));
    }
    Ok(Cell::CommitTs)
}

/// Evaluates `cells` for `cols` into `row` (and `pending`), coercing to the column types.
fn fill(
    table: &TableSchema,
    cols: &[usize],
    cells: &[Cell],
    input: &[Value],
    row: &mut [Value],
    pending: &mut [bool],
) -> SqlResult<()> {
    for (&col, cell) in cols.iter().zip(cells) {
        let def = table.column(col)?;
        let (value, is_pending) = match cell {
            Cell::CommitTs => (Value::Null, true),
            Cell::Expr(e) => (def.ty.coerce(e.eval(input, &[])?, &def.name)?, false),
        };
        if let (Some(slot), Some(p)) = (row.get_mut(col), pending.get_mut(col)) {
            *slot = value;
            *p = is_pending;
        }
    }
    Ok(())
}

fn check_not_null(table: &TableSchema, row: &[Value], pending: &[bool]) -> SqlResult<()> {
    for (i, def) in table.columns.iter().enumerate() {
        let null = row.get(i) == Some(&Value::Null) && !pending.get(i).copied().unwrap_or(false);
        if null && (!def.nullable || table.is_key(i)) {
            return Err(SqlError::new(
                ErrorCode::NotNullViolation,
                format!("column {} is NOT NULL; give it a value", def.name),
            ));
        }
    }
    Ok(())
}

fn pk_of(table: &TableSchema, row: &[Value]) -> Vec<Value> {
    table
        .primary_key
        .iter()
        .map(|&i| row.get(i).cloned().unwrap_or(Value::Null))
        .collect()
}

fn table_name_of(t: &ast::TableObject) -> SqlResult<String> {
    match t {
        ast::TableObject::TableName(n) => object_name(n),
        _ => Err(SqlError::unsupported(
            "INSERT into a table function is not supported",
        )),
    }
}

enum Conflict {
    Error,
    Nothing,
    Update(Vec<(usize, Cell)>, Option<Expr>),
    Upsert,
    Replace,
}

/// Runs an INSERT (`upsert`: written as UPSERT).
pub async fn insert(
    kv: &mut dyn Kv,
    ins: &ast::Insert,
    upsert: bool,
    params: &[Value],
) -> SqlResult<QueryResult> {
    let table = catalog::get_table(kv, &table_name_of(&ins.table)?).await?;
    if ins.returning.is_some() {
        return Err(SqlError::unsupported("RETURNING is not supported"));
    }
    let cols: Vec<usize> = if ins.columns.is_empty() {
        (0..table.columns.len()).collect()
    } else {
        ins.columns
            .iter()
            .map(|n| table.column_index(&object_name(n)?))
            .collect::<SqlResult<_>>()?
    };
    for (i, c) in cols.iter().enumerate() {
        if cols.get(..i).is_some_and(|before| before.contains(c)) {
            return Err(SqlError::invalid(format!(
                "column {} is listed twice",
                table.column(*c)?.name
            )));
        }
    }
    let rows = values_rows(ins)?;
    let conflict = conflict_mode(&table, ins, upsert, params)?;
    let mut c = Compiler::new(None, params);
    let mut compiled = Vec::new();
    for r in rows {
        let r = &r.content;
        if r.len() != cols.len() {
            return Err(SqlError::invalid(format!(
                "INSERT has {} columns but a row has {} values",
                cols.len(),
                r.len()
            )));
        }
        let cells = cols
            .iter()
            .zip(r)
            .map(|(&col, e)| compile_cell(&mut c, &table, col, e))
            .collect::<SqlResult<Vec<_>>>()?;
        compiled.push(cells);
    }
    let mut buf = WriteBuffer::default();
    let mut affected = 0;
    let width = table.columns.len();
    for cells in compiled {
        let mut row = vec![Value::Null; width];
        let mut pending = vec![false; width];
        fill(&table, &cols, &cells, &[], &mut row, &mut pending)?;
        let key = row_key(&table, &pk_of(&table, &row))?;
        let existing = buf.get(kv, &key).await?;
        let (row, pending) = match (existing, &conflict) {
            (None, _) | (Some(_), Conflict::Replace) => (row, pending),
            (Some(_), Conflict::Error) => {
                return Err(SqlError::new(
                    ErrorCode::UniqueViolation,
                    format!(
                        "duplicate key: a row with this primary key already exists in {}; use \
                         UPDATE, UPSERT or INSERT ... ON CONFLICT",
                        table.name
                    ),
                ));
            }
            (Some(_), Conflict::Nothing) => continue,
            (Some(old), Conflict::Upsert) => {
                let mut merged = decode_row(&table, &key, &old)?;
                let mut merged_pending = vec![false; width];
                fill(&table, &cols, &cells, &[], &mut merged, &mut merged_pending)?;
                (merged, merged_pending)
            }
            (Some(old), Conflict::Update(sets, filter)) => {
                let old = decode_row(&table, &key, &old)?;
                let mut both = old.clone();
                both.extend(row);
                if let Some(f) = filter
                    && !f.matches(&both)?
                {
                    continue;
                }
                let (set_cols, set_cells): (Vec<usize>, Vec<Cell>) = sets.iter().cloned().unzip();
                let mut new = old;
                let mut new_pending = vec![false; width];
                fill(
                    &table,
                    &set_cols,
                    &set_cells,
                    &both,
                    &mut new,
                    &mut new_pending,
                )?;
                (new, new_pending)
            }
        };
        check_not_null(&table, &row, &pending)?;
        let (value, offsets) = encode_row(&table, &row, &pending)?;
        buf.put(key, value, offsets);
        affected += 1;
    }
    buf.apply(kv)?;
    Ok(dml_result("INSERT", affected))
}

fn values_rows(ins: &ast::Insert) -> SqlResult<&Vec<ast::Parens<Vec<ast::Expr>>>> {
    let Some(source) = &ins.source else {
        return Err(SqlError::unsupported("INSERT needs VALUES (...)"));
    };
    match &*source.body {
        SetExpr::Values(v) => Ok(&v.rows),
        _ => Err(SqlError::unsupported(
            "INSERT ... SELECT is not supported; use VALUES",
        )),
    }
}

fn conflict_mode(
    table: &TableSchema,
    ins: &ast::Insert,
    upsert: bool,
    params: &[Value],
) -> SqlResult<Conflict> {
    if upsert {
        return Ok(Conflict::Upsert);
    }
    match ins.or {
        Some(ast::SqliteOnConflict::Replace) => return Ok(Conflict::Replace),
        Some(ast::SqliteOnConflict::Ignore) => return Ok(Conflict::Nothing),
        Some(other) => {
            return Err(SqlError::unsupported(format!(
                "INSERT OR {other} is not supported"
            )));
        }
        None => {}
    }
    if ins.ignore {
        return Ok(Conflict::Nothing);
    }
    let on = match &ins.on {
        None => return Ok(Conflict::Error),
        Some(OnInsert::OnConflict(on)) => on,
        Some(_) => {
            return Err(SqlError::unsupported(
                "use ON CONFLICT (pk) DO UPDATE SET ...",
            ));
        }
    };
    if let Some(target) = &on.conflict_target {
        let ast::ConflictTarget::Columns(cols) = target else {
            return Err(SqlError::unsupported(
                "ON CONFLICT ON CONSTRAINT is not supported",
            ));
        };
        let cols = cols
            .iter()
            .map(|c| table.column_index(&ident_name(c)))
            .collect::<SqlResult<Vec<_>>>()?;
        let mut sorted_pk = table.primary_key.clone();
        sorted_pk.sort_unstable();
        let mut sorted = cols;
        sorted.sort_unstable();
        if sorted != sorted_pk {
            return Err(SqlError::unsupported(
                "ON CONFLICT must name the primary key columns (there are no other unique keys)",
            ));
        }
    }
    match &on.action {
        OnConflictAction::DoNothing => Ok(Conflict::Nothing),
        OnConflictAction::DoUpdate(du) => {
            let mut c = Compiler::new(Some(table), params);
            c.excluded = true;
            let sets = assignments(&mut c, table, &du.assignments)?;
            let filter = du.selection.as_ref().map(|e| c.compile(e)).transpose()?;
            Ok(Conflict::Update(sets, filter))
        }
    }
}

fn assignments(
    c: &mut Compiler<'_>,
    table: &TableSchema,
    a: &[ast::Assignment],
) -> SqlResult<Vec<(usize, Cell)>> {
    a.iter()
        .map(|a| {
            let AssignmentTarget::ColumnName(name) = &a.target else {
                return Err(SqlError::unsupported("tuple assignment is not supported"));
            };
            let name = match name.0.last().and_then(|p| p.as_ident()) {
                Some(id) => ident_name(id),
                None => return Err(SqlError::syntax(format!("bad column {name}"))),
            };
            let col = table.column_index(&name)?;
            if table.is_key(col) {
                return Err(SqlError::unsupported(format!(
                    "primary key column {name} cannot be updated; DELETE the row and INSERT it \
                     with the new key"
                )));
            }
            Ok((col, compile_cell(c, table, col, &a.value)?))
        })
        .collect()
}

fn dml_result(verb: &str, n: u64) -> QueryResult {
    QueryResult {
        tag: format!("{verb} {n}"),
        rows_affected: n,
        ..QueryResult::default()
    }
}

/// A compiled UPDATE or DELETE.
#[derive(Debug)]
pub struct Mutation {
    table: TableSchema,
    filter: Option<Expr>,
    /// The access path.
    pub access: AccessPath,
    /// `None` for DELETE.
    sets: Option<Vec<(usize, Cell)>>,
}

fn single_table(t: &ast::TableWithJoins) -> SqlResult<String> {
    if !t.joins.is_empty() {
        return Err(SqlError::unsupported("joins are not supported"));
    }
    match &t.relation {
        TableFactor::Table { name, .. } => object_name(name),
        _ => Err(SqlError::unsupported("only a plain table is supported")),
    }
}

/// Compiles an UPDATE.
pub async fn compile_update(
    kv: &mut dyn Kv,
    u: &ast::Update,
    params: &[Value],
) -> SqlResult<Mutation> {
    if u.from.is_some() || u.returning.is_some() {
        return Err(SqlError::unsupported(
            "UPDATE ... FROM / RETURNING is not supported",
        ));
    }
    let table = catalog::get_table(kv, &single_table(&u.table)?).await?;
    let mut c = Compiler::new(Some(&table), params);
    let sets = assignments(&mut c, &table, &u.assignments)?;
    let filter = u.selection.as_ref().map(|e| c.compile(e)).transpose()?;
    let access = plan(&table, filter.as_ref())?;
    Ok(Mutation {
        table,
        filter,
        access,
        sets: Some(sets),
    })
}

/// Compiles a DELETE.
pub async fn compile_delete(
    kv: &mut dyn Kv,
    d: &ast::Delete,
    params: &[Value],
) -> SqlResult<Mutation> {
    let from = match &d.from {
        FromTable::WithFromKeyword(t) | FromTable::WithoutKeyword(t) => t,
    };
    let [t] = from.as_slice() else {
        return Err(SqlError::unsupported("DELETE from one table only"));
    };
    if d.using.is_some() || d.returning.is_some() || !d.tables.is_empty() {
        return Err(SqlError::unsupported(
            "DELETE ... USING / RETURNING is not supported",
        ));
    }
    let table = catalog::get_table(kv, &single_table(t)?).await?;
    let filter = {
        let mut c = Compiler::new(Some(&table), params);
        d.selection.as_ref().map(|e| c.compile(e)).transpose()?
    };
    let access = plan(&table, filter.as_ref())?;
    Ok(Mutation {
        table,
        filter,
        access,
        sets: None,
    })
}

impl Mutation {
    /// Runs the UPDATE or DELETE.
    pub async fn run(&self, kv: &mut dyn Kv) -> SqlResult<QueryResult> {
        let mut rows = Vec::new();
        for_each_row(
            kv,
            &self.table,
            &self.access.access,
            self.filter.as_ref(),
            |k, r| {
                rows.push((k, r));
                Ok(true)
            },
        )
        .await?;
        let mut buf = WriteBuffer::default();
        let n = rows.len() as u64;
        let Some(sets) = &self.sets else {
            for (key, _) in rows {
                buf.delete(key);
            }
            buf.apply(kv)?;
            return Ok(dml_result("DELETE", n));
        };
        let (cols, cells): (Vec<usize>, Vec<Cell>) = sets.iter().cloned().unzip();
        let width = self.table.columns.len();
        for (key, old) in rows {
            let mut new = old.clone();
            let mut pending = vec![false; width];
            fill(&self.table, &cols, &cells, &old, &mut new, &mut pending)?;
            check_not_null(&self.table, &new, &pending)?;
            let (value, offsets) = encode_row(&self.table, &new, &pending)?;
            buf.put(key, value, offsets);
        }
        buf.apply(kv)?;
        Ok(dml_result("UPDATE", n))
    }
}
