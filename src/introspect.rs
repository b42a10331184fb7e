//! Reading the live customer database's layout (tables, columns, foreign keys, indexes), so that
//! `check` and the anonymise guard compare the configuration against what is really there. Each
//! backend's catalogue query is in `src/db/`.

use crate::db::{Db, Ident};
use anyhow::Result;

pub use crate::db::ColumnInfo;

/// The columns of `table` in order; `None` when the table does not exist.
pub async fn columns(db: &Db, table: &Ident) -> Result<Option<Vec<ColumnInfo>>> {
    db.columns(table).await
}

/// `(table, column)` of every foreign key that points at `target`.
pub async fn foreign_keys_to(db: &Db, target: &Ident) -> Result<Vec<(String, String)>> {
    db.foreign_keys_to(target).await
}

/// The leading column of every index on `table`.
pub async fn index_leading_columns(db: &Db, table: &Ident) -> Result<Vec<String>> {
    db.index_leading_columns(table).await
}
