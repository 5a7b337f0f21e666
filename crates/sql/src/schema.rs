//! [`TableSchema`]: a table's columns and primary key, as stored in the catalog.
//!
//! Names are case-insensitive: they are stored lower-case unless they were quoted.

use serde::{Deserialize, Serialize};
use storage::key::{ColumnType, Direction};

use crate::error::{SqlError, SqlResult};
use crate::types::SqlType;

/// One column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnDef {
    /// The column's name.
    pub name: String,
    /// Its declared type.
    pub ty: SqlType,
    /// Whether it may hold NULL (primary-key columns never do).
    pub nullable: bool,
}

/// A table: its id (which fixes its key range), columns and primary key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSchema {
    /// The table id: its rows live in [`crate::table_range`]`(id)`.
    pub id: u64,
    /// The table's name.
    pub name: String,
    /// The columns, in declaration order.
    pub columns: Vec<ColumnDef>,
    /// Indexes into `columns` of the primary key, in key order.
    pub primary_key: Vec<usize>,
}

impl TableSchema {
    /// The index of column `name`.
    pub fn column_index(&self, name: &str) -> SqlResult<usize> {
        self.columns
            .iter()
            .position(|c| c.name == name)
            .ok_or_else(|| {
                SqlError::undefined_column(format!(
                    "column {name} does not exist in table {}; its columns are: {}",
                    self.name,
                    self.column_names().join(", ")
                ))
            })
    }

    /// The column names, in order.
    pub fn column_names(&self) -> Vec<String> {
        self.columns.iter().map(|c| c.name.clone()).collect()
    }

    /// Whether column `i` is part of the primary key.
    pub fn is_key(&self, i: usize) -> bool {
        self.primary_key.contains(&i)
    }

    /// The indexes of the columns stored in the row value.
    pub fn non_key_columns(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.columns.len()).filter(|i| !self.is_key(*i))
    }

    /// The key-decoding types of the primary key.
    pub fn pk_key_types(&self) -> Vec<(ColumnType, Direction)> {
        self.primary_key
            .iter()
            .filter_map(|&i| self.columns.get(i))
            .map(|c| (c.ty.column_type(), Direction::Ascending))
            .collect()
    }

    /// The column at `i` (an internal index, always valid for compiled plans).
    pub fn column(&self, i: usize) -> SqlResult<&ColumnDef> {
        self.columns
            .get(i)
            .ok_or_else(|| SqlError::internal(format!("column index {i} out of range")))
    }
}
