//! Reads a table's rows along an access path, in key order, in batches, applying the
//! statement's filter. Shared by SELECT, UPDATE and DELETE.

use storage::key::Value;

use crate::error::SqlResult;
use crate::expr::Expr;
use crate::kv::Kv;
use crate::plan::Access;
use crate::row::decode_row;
use crate::schema::TableSchema;

/// Rows fetched per `scan` call.
pub const SCAN_BATCH: usize = 1024;

/// Calls `f` on every row (key, columns) on `access` that `filter` accepts, in key order,
/// until `f` returns `false`.
pub async fn for_each_row(
    kv: &mut dyn Kv,
    table: &TableSchema,
    access: &Access,
    filter: Option<&Expr>,
    mut f: impl FnMut(Vec<u8>, Vec<Value>) -> SqlResult<bool>,
) -> SqlResult<()> {
    let mut visit = |key: Vec<u8>, value: &[u8]| -> SqlResult<bool> {
        let row = decode_row(table, &key, value)?;
        match filter {
            Some(p) if !p.matches(&row)? => Ok(true),
            _ => f(key, row),
        }
    };
    match access {
        Access::Point(key) => {
            if let Some(value) = kv.get(key).await? {
                visit(key.clone(), &value)?;
            }
        }
        Access::Range(start, end) => {
            let mut start = start.clone();
            loop {
                let batch = kv.scan(&start, end, SCAN_BATCH).await?;
                let full = batch.len() >= SCAN_BATCH;
                let mut next = None;
                for (key, value) in batch {
                    next = Some(key.clone());
                    if !visit(key, &value)? {
                        return Ok(());
                    }
                }
                match next {
                    Some(mut k) if full => {
                        k.push(0);
                        start = k;
                    }
                    _ => return Ok(()),
                }
            }
        }
    }
    Ok(())
}
