//! The catalog: table schemas stored in the database itself, under `b"c"`.
//!
//! - `c` `table/` + name → the [`TableSchema`] as JSON;
//! - `c` `next_table_id` → the next table id (`u64` big-endian; ids start at 1, never reused).
//!
//! Every statement reads the catalog through its own transaction, so every node sees the
//! same schema; there is no cache to go stale. DDL reads it with locks ([`find_table_locked`]),
//! so concurrent DDL on one table conflicts. Other statements read it with
//! [`crate::Kv::get_schema`]: a read-write transaction may take the newest committed schema
//! without a lock, which keeps the catalog's tablet out of every commit. The price: DML racing
//! a `DROP TABLE` can leave rows in the dropped table's key range, where nothing reads them
//! (table ids are never reused).

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

/// The schema of table `name`, if it exists, read under the transaction's locks (for DDL).
pub async fn find_table_locked(kv: &mut dyn Kv, name: &str) -> SqlResult<Option<TableSchema>> {
    let key = table_key(name);
    let entry = kv.get(&key).await?;
    decode_entry(name, entry)
}

/// The schema of table `name`, if it exists (for queries and DML: see the module docs).
pub async fn find_table(kv: &mut dyn Kv, name: &str) -> SqlResult<Option<TableSchema>> {
    let key = table_key(name);
    let entry = kv.get_schema(&key).await?;
    decode_entry(name, entry)
}

fn decode_entry(name: &str, entry: Option<Vec<u8>>) -> SqlResult<Option<TableSchema>> {
    match entry {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| SqlError::internal(format!("corrupt catalog entry for {name}: {e}"))),
    }
}

/// The schema of table `name`, or an `undefined_table` error.
pub async fn get_table(kv: &mut dyn Kv, name: &str) -> SqlResult<TableSchema> {
    find_table(kv, name).await?.ok_or_else(|| undefined(name))
}

/// [`get_table`] under the transaction's locks (for DDL).
pub async fn get_table_locked(kv: &mut dyn Kv, name: &str) -> SqlResult<TableSchema> {
    find_table_locked(kv, name)
        .await?
        .ok_or_else(|| undefined(name))
}

fn undefined(name: &str) -> SqlError {
    SqlError::undefined_table(format!(
        "table {name} does not exist; SHOW TABLES lists the tables"
    ))
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
