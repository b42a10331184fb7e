//! Reading the live customer database's layout (tables, columns, foreign keys, indexes), so that
//! `check` and the anonymise guard compare the configuration against what is really there. Each
//! backend's catalogue query is in `src/db/`; a column's sample values are read here too.

use crate::db::{Db, Ident, Query};
use anyhow::Result;
use std::collections::BTreeMap;

pub use crate::db::ColumnInfo;

/// Values sampled from each column to judge what it holds.
pub const SAMPLE: i64 = 50;

/// The columns of `table` in order; `None` when the table does not exist.
pub async fn columns(db: &Db, table: &Ident) -> Result<Option<Vec<ColumnInfo>>> {
    db.columns(table).await
}

/// The columns of each of `tables` that exists, by table name, in one statement on the servers.
pub async fn columns_of(db: &Db, tables: &[&Ident]) -> Result<BTreeMap<String, Vec<ColumnInfo>>> {
    db.columns_of(tables).await
}

/// `(table, column)` of every foreign key that points at `target`.
pub async fn foreign_keys_to(db: &Db, target: &Ident) -> Result<Vec<(String, String)>> {
    db.foreign_keys_to(target).await
}

/// The leading column of every index on `table`.
pub async fn index_leading_columns(db: &Db, table: &Ident) -> Result<Vec<String>> {
    db.index_leading_columns(table).await
}

/// Up to `limit` values of `table.column` that are not NULL, as text (what a column holds, for
/// `suggest` to propose a strategy and `check` to test that times can be read).
pub async fn sample(db: &Db, table: &Ident, column: &str, limit: i64) -> Result<Vec<String>> {
    let column = Ident::new(column)?;
    let mut q = Query::new(&format!(
        "SELECT {text} FROM {t} WHERE {c} IS NOT NULL LIMIT ",
        text = db.backend().cast_text(&column.q()),
        c = column.q(),
        t = table.q()
    ));
    q.bind(limit);
    Ok(db
        .fetch_all(&q)
        .await?
        .iter()
        .filter_map(|r| r.opt_text(0).ok().flatten())
        .collect())
}
