//! Parameterized SQL for the transaction handle's row mutations (insert, update, upsert,
//! delete), as pure functions.
//!
//! Values always travel as `$n` parameters, never inside the SQL text. Identifiers that are
//! plain (`[A-Za-z_][A-Za-z0-9_]*`) are written as they are, so the server folds their case
//! as usual; any other identifier is double-quoted with `"` doubled.
//!
//! The client does not know a table's primary key, so update, upsert and delete name the key
//! columns explicitly. Upsert sets the non-key columns with the same parameters as the
//! insert (`SET balance = $2`) rather than `excluded.balance`, which needs no `excluded`
//! support from the server.

use crate::error::{Code, Error};

/// An identifier as SQL text.
pub(crate) fn ident(name: &str) -> String {
    let mut chars = name.chars();
    let plain = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if plain {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

fn check(columns: &[&str], values: usize) -> Result<(), Error> {
    if columns.is_empty() {
        return Err(Error::new(
            Code::InvalidArgument,
            "name at least one column",
        ));
    }
    if columns.len() != values {
        return Err(Error::new(
            Code::InvalidArgument,
            format!(
                "{} columns but {values} values: pass one value per column",
                columns.len()
            ),
        ));
    }
    Ok(())
}

/// Positions in `columns` of each key column; every key column must be among the columns.
fn key_positions(key: &[&str], columns: &[&str]) -> Result<Vec<usize>, Error> {
    if key.is_empty() {
        return Err(Error::new(
            Code::InvalidArgument,
            "name the primary key columns",
        ));
    }
    key.iter()
        .map(|k| {
            columns.iter().position(|c| c == k).ok_or_else(|| {
                Error::new(
                    Code::InvalidArgument,
                    format!("key column {k:?} is not among the columns: pass its value too"),
                )
            })
        })
        .collect()
}

fn placeholders(n: usize) -> String {
    (1..=n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn column_list(columns: &[&str]) -> String {
    columns
        .iter()
        .map(|c| ident(c))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `col = $n` for each of `positions`, joined by `sep`.
fn assignments(columns: &[&str], positions: impl Iterator<Item = usize>, sep: &str) -> String {
    positions
        .map(|i| format!("{} = ${}", ident(columns[i]), i + 1))
        .collect::<Vec<_>>()
        .join(sep)
}

/// `INSERT INTO t (a, b) VALUES ($1, $2)`.
pub(crate) fn insert(table: &str, columns: &[&str], values: usize) -> Result<String, Error> {
    check(columns, values)?;
    Ok(format!(
        "INSERT INTO {} ({}) VALUES ({})",
        ident(table),
        column_list(columns),
        placeholders(columns.len())
    ))
}

/// `UPDATE t SET b = $2 WHERE a = $1`: sets every non-key column, finds the row by the key.
pub(crate) fn update(
    table: &str,
    key: &[&str],
    columns: &[&str],
    values: usize,
) -> Result<String, Error> {
    check(columns, values)?;
    let keys = key_positions(key, columns)?;
    let set: Vec<usize> = (0..columns.len()).filter(|i| !keys.contains(i)).collect();
    if set.is_empty() {
        return Err(Error::new(
            Code::InvalidArgument,
            "an update needs at least one non-key column to set",
        ));
    }
    Ok(format!(
        "UPDATE {} SET {} WHERE {}",
        ident(table),
        assignments(columns, set.into_iter(), ", "),
        assignments(columns, keys.into_iter(), " AND ")
    ))
}

/// `INSERT INTO t (a, b) VALUES ($1, $2) ON CONFLICT (a) DO UPDATE SET b = $2`, or
/// `... DO NOTHING` when every column is a key column.
pub(crate) fn upsert(
    table: &str,
    key: &[&str],
    columns: &[&str],
    values: usize,
) -> Result<String, Error> {
    let insert = insert(table, columns, values)?;
    let keys = key_positions(key, columns)?;
    let set: Vec<usize> = (0..columns.len()).filter(|i| !keys.contains(i)).collect();
    let action = if set.is_empty() {
        "DO NOTHING".to_string()
    } else {
        format!(
            "DO UPDATE SET {}",
            assignments(columns, set.into_iter(), ", ")
        )
    };
    Ok(format!(
        "{insert} ON CONFLICT ({}) {action}",
        column_list(key)
    ))
}

/// `DELETE FROM t WHERE a = $1 AND b = $2`.
pub(crate) fn delete(table: &str, key: &[&str], values: usize) -> Result<String, Error> {
    check(key, values)?;
    Ok(format!(
        "DELETE FROM {} WHERE {}",
        ident(table),
        assignments(key, 0..key.len(), " AND ")
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn identifiers_are_quoted_only_when_needed() {
        assert_eq!(ident("accounts"), "accounts");
        assert_eq!(ident("_a1"), "_a1");
        assert_eq!(ident("my table"), "\"my table\"");
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(ident("1a"), "\"1a\"");
    }

    #[test]
    fn insert_uses_one_parameter_per_column() {
        assert_eq!(
            insert("t", &["a", "b"], 2).unwrap(),
            "INSERT INTO t (a, b) VALUES ($1, $2)"
        );
        assert!(insert("t", &["a", "b"], 1).is_err());
        assert!(insert("t", &[], 0).is_err());
    }

    #[test]
    fn update_sets_non_key_columns_and_finds_the_row_by_key() {
        assert_eq!(
            update("t", &["id"], &["balance", "id", "name"], 3).unwrap(),
            "UPDATE t SET balance = $1, name = $3 WHERE id = $2"
        );
        assert_eq!(
            update("t", &["a", "b"], &["a", "b", "c"], 3).unwrap(),
            "UPDATE t SET c = $3 WHERE a = $1 AND b = $2"
        );
        assert!(update("t", &["id"], &["id"], 1).is_err());
        assert!(update("t", &["nope"], &["id", "v"], 2).is_err());
    }

    #[test]
    fn upsert_updates_on_key_conflict() {
        assert_eq!(
            upsert("t", &["id"], &["id", "v"], 2).unwrap(),
            "INSERT INTO t (id, v) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET v = $2"
        );
        assert_eq!(
            upsert("t", &["id"], &["id"], 1).unwrap(),
            "INSERT INTO t (id) VALUES ($1) ON CONFLICT (id) DO NOTHING"
        );
    }

    #[test]
    fn delete_matches_every_key_column() {
        assert_eq!(
            delete("t", &["a", "b"], 2).unwrap(),
            "DELETE FROM t WHERE a = $1 AND b = $2"
        );
        assert!(delete("t", &["a"], 2).is_err());
    }
}
