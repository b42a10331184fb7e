//! PostgreSQL specifics: the connection pool, how values are bound (id lists as arrays), how rows
//! are decoded by column type, the session advisory locks that keep a venue's cycle to one
//! instance at a time, and the dialect (PostgreSQL's spelling of what differs between backends,
//! and its catalogue for introspection).

use super::{Columns, Query, Row, TypeKind, Value};
use anyhow::{bail, Context, Result};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions, PgRow};
use sqlx::{Column, Connection, PgPool, Postgres, Row as _, TypeInfo};
use std::time::Duration;

pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool> {
    let options: PgConnectOptions = url
        .parse()
        .context("database.url is not a valid PostgreSQL URL")?;
    let target = format!(
        "PostgreSQL at {}:{} (database {})",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("default")
    );
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        // A ping before every acquire doubles the round trips of a page; a broken connection
        // fails its query instead and the pool replaces it.
        .test_before_acquire(false)
        .connect_lazy_with(options.clone());
    // One connection on its own, so that an unreachable server or a missing database is
    // reported at once with its cause, not as a pool timeout; the pool opens its first
    // connection meanwhile (one after the other, they cost a command 5 ms more).
    let first = async {
        tokio::time::timeout(
            Duration::from_secs(10),
            PgConnection::connect_with(&options),
        )
        .await
        .map_err(|_| anyhow::anyhow!("cannot connect to {target}: no answer within 10 s"))?
        .map_err(|e| anyhow::anyhow!("cannot connect to {target}: {}", describe(&e)))
    };
    // The lone connection's error is the one reported (the pool's would be a timeout after
    // 10 s of retries for a refused connection); a pool that could not connect tries again at
    // the first statement.
    let pooled = async { anyhow::Ok(pool.acquire().await.ok()) };
    let (first, pooled) = tokio::try_join!(first, pooled)?;
    drop((first, pooled));
    Ok(pool)
}

/// The cause of a connection failure in one phrase (the server's message, or the I/O error).
fn describe(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => db.message().to_string(),
        sqlx::Error::Io(io) => io.to_string(),
        other => other.to_string(),
    }
}

fn build(q: &Query) -> sqlx::query::Query<'_, Postgres, sqlx::postgres::PgArguments> {
    let mut query = sqlx::query::<Postgres>(&q.sql);
    for value in &q.params {
        query = match value {
            Value::Null => query.bind(None::<String>),
            Value::NullInt => query.bind(None::<i64>),
            Value::NullTime => query.bind(None::<DateTime<Utc>>),
            Value::Bool(b) => query.bind(*b),
            Value::Int(i) => query.bind(*i),
            Value::Float(f) => query.bind(*f),
            Value::Text(s) => query.bind(s.clone()),
            Value::Time(t) => query.bind(*t),
            Value::Date(d) => query.bind(*d),
            Value::IntList(v) => query.bind(v.clone()),
        };
    }
    query
}

/// A result's rows, sharing the names of its columns.
fn decode_all(rows: &[PgRow]) -> Result<Vec<Row>> {
    let columns = Columns::of(
        rows.first()
            .into_iter()
            .flat_map(|r| r.columns().iter().map(sqlx::Column::name)),
    );
    rows.iter().map(|r| decode(r, &columns)).collect()
}

fn decode(row: &PgRow, columns: &Columns) -> Result<Row> {
    let mut values = Vec::with_capacity(row.columns().len());
    for (i, column) in row.columns().iter().enumerate() {
        let type_name = column.type_info().name();
        let value = match type_name {
            "INT2" => row
                .try_get::<Option<i16>, _>(i)?
                .map(|v| Value::Int(v.into())),
            "INT4" => row
                .try_get::<Option<i32>, _>(i)?
                .map(|v| Value::Int(v.into())),
            "INT8" => row.try_get::<Option<i64>, _>(i)?.map(Value::Int),
            "BOOL" => row.try_get::<Option<bool>, _>(i)?.map(Value::Bool),
            "FLOAT4" => row
                .try_get::<Option<f32>, _>(i)?
                .map(|v| Value::Float(v.into())),
            "FLOAT8" => row.try_get::<Option<f64>, _>(i)?.map(Value::Float),
            "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "CHAR" => {
                row.try_get::<Option<String>, _>(i)?.map(Value::Text)
            }
            "TIMESTAMPTZ" => row.try_get::<Option<DateTime<Utc>>, _>(i)?.map(Value::Time),
            "TIMESTAMP" => row
                .try_get::<Option<NaiveDateTime>, _>(i)?
                .map(|t| Value::Time(t.and_utc())),
            "DATE" => row.try_get::<Option<NaiveDate>, _>(i)?.map(Value::Date),
            other => bail!(
                "column {} has type {other}, which retentiond cannot read; cast it in the query",
                column.name()
            ),
        };
        values.push(value.unwrap_or(Value::Null));
    }
    Ok(Row(values, columns.clone()))
}

pub async fn execute<'e, E: sqlx::Executor<'e, Database = Postgres>>(
    ex: E,
    q: &Query,
) -> Result<u64> {
    Ok(build(q).execute(ex).await?.rows_affected())
}

pub async fn fetch_all<'e, E: sqlx::Executor<'e, Database = Postgres>>(
    ex: E,
    q: &Query,
) -> Result<Vec<Row>> {
    decode_all(&build(q).fetch_all(ex).await?)
}

/// Stops the transaction's later statements after `limit` (none when zero), until it ends.
pub async fn set_statement_timeout(
    tx: &mut sqlx::PgConnection,
    limit: std::time::Duration,
) -> Result<()> {
    sqlx::query("SELECT set_config('statement_timeout', $1, true)")
        .bind(format!("{}ms", limit.as_millis()))
        .execute(tx)
        .await?;
    Ok(())
}

/// Whether `e` is a statement stopped by `statement_timeout` (SQLSTATE 57014, query_canceled).
pub fn was_stopped_by_timeout(e: &anyhow::Error) -> bool {
    e.downcast_ref::<sqlx::Error>()
        .and_then(|e| e.as_database_error())
        .and_then(|e| e.code())
        .is_some_and(|code| code == "57014")
}

pub async fn execute_script(pool: &PgPool, sql: &str) -> Result<()> {
    sqlx::raw_sql(sql).execute(pool).await?;
    Ok(())
}

/// Waits for the session advisory lock `name` on a connection of its own.
pub async fn advisory_lock(pool: &PgPool, name: &str) -> Result<PoolConnection<Postgres>> {
    let mut conn = pool.acquire().await?;
    let sql = format!("SELECT pg_advisory_lock({LOCK_KEY})");
    sqlx::query(&sql).bind(name).execute(&mut *conn).await?;
    Ok(conn)
}

/// The advisory lock key of a name in the current schema, so that deployments sharing a
/// database in different schemas do not block each other.
const LOCK_KEY: &str = "hashtextextended(current_schema() || ':retentiond:' || $1, 0)";

/// Tries the session advisory lock `name` on a connection of its own; the connection (and with
/// it the lock) is returned to the caller, or to the pool if the lock is taken elsewhere.
pub async fn try_advisory_lock(
    pool: &PgPool,
    name: &str,
) -> Result<Option<PoolConnection<Postgres>>> {
    let mut conn = pool.acquire().await?;
    let sql = format!("SELECT pg_try_advisory_lock({LOCK_KEY})");
    let locked: bool = sqlx::query_scalar(&sql)
        .bind(name)
        .fetch_one(&mut *conn)
        .await?;
    Ok(locked.then_some(conn))
}

pub async fn advisory_unlock(mut conn: PoolConnection<Postgres>, name: &str) -> Result<()> {
    let sql = format!("SELECT pg_advisory_unlock({LOCK_KEY})");
    sqlx::query(&sql).bind(name).execute(&mut *conn).await?;
    Ok(())
}

// The dialect: PostgreSQL's spelling of what differs between backends (see `Backend`).

pub fn in_ids(p: &str) -> String {
    format!(" = ANY({p})")
}

pub fn ids_source(p: &str) -> String {
    format!("(SELECT unnest(CAST({p} AS BIGINT[])) AS id) AS ids")
}

pub fn year_of(column: &str) -> String {
    format!("CAST(extract(year FROM {column}) AS INTEGER)")
}

pub fn year_only(column: &str) -> String {
    format!("make_date(CAST(extract(year FROM {column}) AS INTEGER), 1, 1)")
}

pub const TABLE_EXISTS: &str =
    "SELECT COUNT(*) FROM pg_tables WHERE schemaname = current_schema() AND tablename = $1";

/// name, declared type, NOT NULL, has a default, part of the primary key. Read from the
/// catalogs, which a fresh connection answers in a third of the time `information_schema.columns`
/// takes; the type is spelled as `information_schema` spells it (a domain as its base type).
pub const COLUMNS: &str = "SELECT a.attname::text, \
     format_type(CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE a.atttypid END, NULL), \
     a.attnotnull, a.atthasdef OR a.attidentity <> '', \
     EXISTS (SELECT 1 FROM pg_index ix WHERE ix.indrelid = a.attrelid AND ix.indisprimary AND a.attnum = ANY(ix.indkey)) \
     FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
     WHERE a.attrelid = to_regclass(format('%I.%I', current_schema(), $1::text)) AND a.attnum > 0 AND NOT a.attisdropped \
     ORDER BY a.attnum";

/// [`COLUMNS`] of several tables at once, each row led by its table's name; `names` are the
/// placeholders of the tables' names.
pub fn columns_of_tables(names: &[String]) -> String {
    let tables: Vec<String> = names
        .iter()
        .map(|n| format!("to_regclass(format('%I.%I', current_schema(), {n}::text))"))
        .collect();
    format!(
        "SELECT c.relname::text, a.attname::text, \
         format_type(CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE a.atttypid END, NULL), \
         a.attnotnull, a.atthasdef OR a.attidentity <> '', \
         EXISTS (SELECT 1 FROM pg_index ix WHERE ix.indrelid = a.attrelid AND ix.indisprimary AND a.attnum = ANY(ix.indkey)) \
         FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid JOIN pg_class c ON c.oid = a.attrelid \
         WHERE a.attrelid IN ({}) AND a.attnum > 0 AND NOT a.attisdropped \
         ORDER BY a.attrelid, a.attnum",
        tables.join(", ")
    )
}

pub const FOREIGN_KEYS_TO: &str = "SELECT cl.relname::text, a.attname::text FROM pg_constraint con \
     JOIN pg_class cl ON cl.oid = con.conrelid \
     JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = ANY(con.conkey) \
     WHERE con.contype = 'f' AND con.confrelid = to_regclass(format('%I.%I', current_schema(), $1::text)) \
     ORDER BY 1, 2";

pub const INDEX_LEADING_COLUMNS: &str = "SELECT a.attname::text FROM pg_index ix \
     JOIN pg_attribute a ON a.attrelid = ix.indrelid AND a.attnum = ix.indkey[0] \
     WHERE ix.indrelid = to_regclass(format('%I.%I', current_schema(), $1::text))";

pub fn classify(t: &str) -> TypeKind {
    let integer = t == "integer" || t == "smallint" || t == "bigint";
    TypeKind {
        temporal: t.starts_with("timestamp") || t == "date",
        textual: t == "text" || t.starts_with("character"),
        integer,
        flag: integer || t == "boolean",
        time_as_text: false,
    }
}

/// The keyed hash of `column` (HMAC-SHA-256 as lowercase hex, see
/// `policy::hmac_padded_keys`) with PostgreSQL's own `sha256` (version 11 and later), the padded
/// keys bound as hex text; NULL stays NULL.
pub fn keyed_hash(inner: &str, outer: &str, column: &str) -> String {
    format!(
        "encode(sha256(decode({outer}, 'hex') || sha256(decode({inner}, 'hex') || \
         convert_to(CAST({column} AS TEXT), 'UTF8'))), 'hex')"
    )
}
