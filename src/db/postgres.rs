//! PostgreSQL specifics: the connection pool, how values are bound (id lists as arrays), how rows
//! are decoded by column type, and the session advisory locks that keep a venue's cycle to one
//! instance at a time.

use super::{Query, Row, Value};
use anyhow::{bail, Context, Result};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions, PgRow};
use sqlx::{Column, Connection, PgPool, Postgres, Row as _, TypeInfo};
use std::time::Duration;

pub async fn connect(url: &str) -> Result<PgPool> {
    let options: PgConnectOptions = url
        .parse()
        .context("database.url is not a valid PostgreSQL URL")?;
    let target = format!(
        "PostgreSQL at {}:{} (database {})",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("default")
    );
    // One connection first, so that an unreachable server or a missing database is reported
    // at once with its cause, not as a pool timeout.
    let first = tokio::time::timeout(
        Duration::from_secs(10),
        PgConnection::connect_with(&options),
    )
    .await
    .map_err(|_| anyhow::anyhow!("cannot connect to {target}: no answer within 10 s"))?
    .map_err(|e| anyhow::anyhow!("cannot connect to {target}: {}", describe(&e)))?;
    drop(first);
    PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(10))
        // A ping before every acquire doubles the round trips of a page; a broken connection
        // fails its query instead and the pool replaces it.
        .test_before_acquire(false)
        .connect_with(options)
        .await
        .with_context(|| format!("cannot connect to {target}"))
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
            Value::TextList(v) => query.bind(v.clone()),
        };
    }
    query
}

fn decode(row: &PgRow) -> Result<Row> {
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
    Ok(Row(values))
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
    build(q).fetch_all(ex).await?.iter().map(decode).collect()
}

pub async fn execute_script(pool: &PgPool, sql: &str) -> Result<()> {
    sqlx::raw_sql(sql).execute(pool).await?;
    Ok(())
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
