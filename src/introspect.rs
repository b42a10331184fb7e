//! Reading the live customer database's layout (tables, columns, foreign keys, indexes), so that
//! `check` and the anonymise guard compare the configuration against what is really there.

use crate::db::{Backend, Db, Ident, Query};
use anyhow::Result;

#[derive(Debug, Clone)]
pub struct ColumnInfo {
    pub name: String,
    /// The declared type, lowercase (`text`, `timestamp with time zone`, `integer`...).
    pub data_type: String,
    pub not_null: bool,
    pub has_default: bool,
    /// Part of the table's primary key.
    pub primary_key: bool,
}

impl ColumnInfo {
    /// Whether the column holds dates or times (SQLite: text, or a date/time declared type).
    pub fn is_temporal(&self, backend: Backend) -> bool {
        let t = &self.data_type;
        match backend {
            Backend::Postgres => t.starts_with("timestamp") || t == "date",
            Backend::Sqlite => {
                !(t.contains("int")
                    || t.contains("real")
                    || t.contains("floa")
                    || t.contains("doub")
                    || t.contains("blob"))
            }
        }
    }

    pub fn is_textual(&self, backend: Backend) -> bool {
        let t = &self.data_type;
        match backend {
            Backend::Postgres => t == "text" || t.starts_with("character"),
            Backend::Sqlite => {
                !(t.contains("int")
                    || t.contains("real")
                    || t.contains("floa")
                    || t.contains("doub"))
            }
        }
    }

    pub fn is_integer(&self, backend: Backend) -> bool {
        let t = &self.data_type;
        match backend {
            Backend::Postgres => t == "integer" || t == "smallint" || t == "bigint",
            Backend::Sqlite => t.contains("int"),
        }
    }

    pub fn is_flag(&self, backend: Backend) -> bool {
        let t = &self.data_type;
        match backend {
            Backend::Postgres => {
                t == "boolean" || t == "integer" || t == "smallint" || t == "bigint"
            }
            Backend::Sqlite => t.contains("int") || t.contains("bool"),
        }
    }
}

/// The columns of `table` in order; `None` when the table does not exist.
pub async fn columns(db: &Db, table: &Ident) -> Result<Option<Vec<ColumnInfo>>> {
    let mut q = match db.backend() {
        Backend::Sqlite => Query::new(r#"SELECT name, lower(type), "notnull", dflt_value IS NOT NULL OR pk = 1, pk > 0 FROM pragma_table_info("#),
        Backend::Postgres => Query::new(
            "SELECT column_name::text, data_type::text, is_nullable::text = 'NO', \
             column_default IS NOT NULL OR is_identity::text = 'YES', \
             EXISTS (SELECT 1 FROM pg_index ix JOIN pg_attribute a ON a.attrelid = ix.indrelid AND a.attnum = ANY(ix.indkey) \
                     WHERE ix.indisprimary AND ix.indrelid = to_regclass(format('%I.%I', table_schema, table_name)) \
                     AND a.attname::text = column_name::text) \
             FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = ",
        ),
    };
    q.bind(table.name());
    match db.backend() {
        Backend::Sqlite => q.push(") ORDER BY cid"),
        Backend::Postgres => q.push(" ORDER BY ordinal_position"),
    };
    let cols: Vec<ColumnInfo> = db
        .fetch_all(&q)
        .await?
        .iter()
        .map(|r| {
            Ok(ColumnInfo {
                name: r.text(0)?,
                data_type: r.text(1)?,
                not_null: r.bool(2)?,
                has_default: r.bool(3)?,
                primary_key: r.bool(4)?,
            })
        })
        .collect::<Result<_>>()?;
    Ok((!cols.is_empty()).then_some(cols))
}

/// `(table, column)` of every foreign key that points at `target`.
pub async fn foreign_keys_to(db: &Db, target: &Ident) -> Result<Vec<(String, String)>> {
    let mut q = match db.backend() {
        Backend::Sqlite => Query::new(
            r#"SELECT m.name, f."from" FROM sqlite_master m, pragma_foreign_key_list(m.name) f
               WHERE m.type = 'table' AND f."table" = "#,
        ),
        Backend::Postgres => Query::new(
            "SELECT cl.relname::text, a.attname::text FROM pg_constraint con \
             JOIN pg_class cl ON cl.oid = con.conrelid \
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = ANY(con.conkey) \
             WHERE con.contype = 'f' AND con.confrelid = to_regclass(format('%I.%I', current_schema(), ",
        ),
    };
    q.bind(target.name());
    if db.backend() == Backend::Postgres {
        q.push("))");
    }
    q.push(" ORDER BY 1, 2");
    db.fetch_all(&q)
        .await?
        .iter()
        .map(|r| Ok((r.text(0)?, r.text(1)?)))
        .collect()
}

/// The leading column of every index on `table`.
pub async fn index_leading_columns(db: &Db, table: &Ident) -> Result<Vec<String>> {
    let mut q = match db.backend() {
        Backend::Sqlite => Query::new("SELECT ii.name FROM pragma_index_list($1) il, pragma_index_info(il.name) ii WHERE ii.seqno = 0"),
        Backend::Postgres => Query::new(
            "SELECT a.attname::text FROM pg_index ix JOIN pg_attribute a ON a.attrelid = ix.indrelid AND a.attnum = ix.indkey[0] \
             WHERE ix.indrelid = to_regclass(format('%I.%I', current_schema(), $1::text))",
        ),
    };
    q.param(table.name());
    db.fetch_all(&q).await?.iter().map(|r| r.text(0)).collect()
}
