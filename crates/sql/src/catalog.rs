//! The catalog: table schemas stored in the database itself, under `b"c"`.
//!
//! - `c` `table/` + name → the [`TableSchema`] as JSON;
//! - `c` `next_table_id` → the next table id (`u64` big-endian; ids start at 1, never reused).
//!
//! Every statement reads the catalog inside its own transaction, so DDL is transactional
//! and every node sees the same schema at the same timestamp; there is no cache to go stale.
//! A read-write statement's catalog read is a locking read, so DDL and DML on the same table
//! conflict as they should.

use crate::error::{ErrorCode, SqlError, SqlResult};
use crate::kv::Kv;
use crate::schema::TableSchema;

const TABLE_PREFIX: &[u8] = b"ctable/";
const NEXT_ID_KEY: &[u8] = b"cnext_table_id";

fn table_key(name: &str) -> Vec<u8> {
    let mut k = TABLE_PREFIX.to_vec();
    k.extend_from_slice(name.as_bytes());
    k
}

/// The schema of table `name`, if it exists.
pub async fn find_table(kv: &mut dyn Kv, name: &str) -> SqlResult<Option<TableSchema>> {
    let key = table_key(name);
    match kv.get(&key).await? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| SqlError::internal(format!("corrupt catalog entry for {name}: {e}"))),
    }
}

/// The schema of table `name`, or an `undefined_table` error.
pub async fn get_table(kv: &mut dyn Kv, name: &str) -> SqlResult<TableSchema> {
    find_table(kv, name).await?.ok_or_else(|| {
        SqlError::undefined_table(format!(
            "table {name} does not exist; SHOW TABLES lists the tables"
        ))
    })
}

/// Every table, by name.
pub async fn list_tables(kv: &mut dyn Kv) -> SqlResult<Vec<TableSchema>> {
    let end = crate::row::prefix_end(TABLE_PREFIX).unwrap_or_default();
    let rows = kv.scan(TABLE_PREFIX, &end, usize::MAX).await?;
    rows.iter()
        .map(|(_, v)| {
            serde_json::from_slice(v)
                .map_err(|e| SqlError::internal(format!("corrupt catalog entry: {e}")))
        })
        .collect()
}

/// Allocates the next table id.
pub async fn allocate_table_id(kv: &mut dyn Kv) -> SqlResult<u64> {
    let id = match kv.get(NEXT_ID_KEY).await? {
        None => 1,
        Some(bytes) => {
            let b: [u8; 8] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| SqlError::internal("corrupt catalog: bad next table id"))?;
            u64::from_be_bytes(b)
        }
    };
    let next = id
        .checked_add(1)
        .ok_or_else(|| SqlError::internal("table ids exhausted"))?;
    kv.put(
        NEXT_ID_KEY.to_vec(),
        next.to_be_bytes().to_vec(),
        Vec::new(),
    )?;
    Ok(id)
}

/// Writes `table`'s catalog entry; fails if the name is taken.
pub async fn create_table(kv: &mut dyn Kv, table: &TableSchema) -> SqlResult<()> {
    if find_table(kv, &table.name).await?.is_some() {
        return Err(SqlError::new(
            ErrorCode::DuplicateTable,
            format!(
                "table {} already exists; use CREATE TABLE IF NOT EXISTS or another name",
                table.name
            ),
        ));
    }
    let bytes = serde_json::to_vec(table)
        .map_err(|e| SqlError::internal(format!("cannot encode schema: {e}")))?;
    kv.put(table_key(&table.name), bytes, Vec::new())?;
    Ok(())
}

/// Deletes `name`'s catalog entry.
pub fn drop_table(kv: &mut dyn Kv, name: &str) -> SqlResult<()> {
    kv.delete(table_key(name))?;
    Ok(())
}
