//! SQLite specifics: connection options (WAL, busy timeout, foreign keys), how values are bound
//! (timestamps as `datetime()` text, id lists as JSON arrays) and how rows are decoded.

use super::{Query, Row, Value};
use anyhow::{Context, Result};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row as _, Sqlite, SqlitePool, TypeInfo, ValueRef};
use std::str::FromStr;
use std::time::Duration;

/// How SQLite's `datetime()` writes a timestamp; timestamps are bound in this form so that
/// text comparison orders them correctly.
pub const TIME_FORMAT: &str = "%Y-%m-%d %H:%M:%S";

pub async fn connect(url: &str) -> Result<SqlitePool> {
    let parsed =
        SqliteConnectOptions::from_str(url).context("database.url is not a valid SQLite URL")?;
    let path = parsed.get_filename().to_path_buf();
    if let Some(folder) = path.parent().filter(|f| !f.as_os_str().is_empty()) {
        if !folder.is_dir() {
            anyhow::bail!(
                "cannot open the SQLite database {}: the folder {} does not exist",
                path.display(),
                folder.display()
            );
        }
    }
    let options = parsed
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(30))
        .foreign_keys(true)
        // Deleted and overwritten values are zeroed in the file, not only unlinked (SPEC 3).
        .pragma("secure_delete", "ON")
        // Apply checkpoints the WAL itself between batches (`Db::checkpoint_wal`), a few
        // batches' pages at once; this larger automatic threshold (about 80 MB) is the backstop.
        .pragma("wal_autocheckpoint", "20000");
    SqlitePoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(60))
        .test_before_acquire(false)
        .connect_with(options)
        .await
        .with_context(|| format!("cannot open the SQLite database {}", path.display()))
}

fn build(q: &Query) -> sqlx::query::Query<'_, Sqlite, sqlx::sqlite::SqliteArguments<'_>> {
    let mut query = sqlx::query::<Sqlite>(&q.sql);
    for value in &q.params {
        query = match value {
            Value::Null | Value::NullInt | Value::NullTime => query.bind(None::<i64>),
            Value::Bool(b) => query.bind(*b),
            Value::Int(i) => query.bind(*i),
            Value::Float(f) => query.bind(*f),
            Value::Text(s) => query.bind(s.clone()),
            Value::Time(t) => query.bind(t.format(TIME_FORMAT).to_string()),
            Value::Date(d) => query.bind(d.format("%Y-%m-%d").to_string()),
            Value::IntList(v) => query.bind(serde_json::to_string(v).expect("ids serialise")),
            Value::TextList(v) => query.bind(serde_json::to_string(v).expect("texts serialise")),
        };
    }
    query
}

fn decode(row: &SqliteRow) -> Result<Row> {
    let mut values = Vec::with_capacity(row.columns().len());
    for i in 0..row.columns().len() {
        let raw = row.try_get_raw(i)?;
        if raw.is_null() {
            values.push(Value::Null);
            continue;
        }
        let kind = raw.type_info().name().to_ascii_uppercase();
        let value = match kind.as_str() {
            "INTEGER" | "INT" | "BIGINT" | "BOOLEAN" => {
                Value::Int(row.try_get_unchecked::<i64, _>(i)?)
            }
            "REAL" | "NUMERIC" => Value::Float(row.try_get_unchecked::<f64, _>(i)?),
            "BLOB" => Value::Text(hex::encode(row.try_get_unchecked::<Vec<u8>, _>(i)?)),
            _ => Value::Text(row.try_get_unchecked::<String, _>(i)?),
        };
        values.push(value);
    }
    Ok(Row(values))
}

pub async fn execute<'e, E: sqlx::Executor<'e, Database = Sqlite>>(
    ex: E,
    q: &Query,
) -> Result<u64> {
    Ok(build(q).execute(ex).await?.rows_affected())
}

pub async fn fetch_all<'e, E: sqlx::Executor<'e, Database = Sqlite>>(
    ex: E,
    q: &Query,
) -> Result<Vec<Row>> {
    build(q).fetch_all(ex).await?.iter().map(decode).collect()
}

/// The file of a SQLite pool's database.
pub fn database_path(pool: &SqlitePool) -> std::path::PathBuf {
    pool.connect_options().get_filename().to_path_buf()
}

/// The lock file of the daemon of the database at `db_path`.
pub fn daemon_lock_path(db_path: &std::path::Path) -> std::path::PathBuf {
    db_path.with_extension("retentiond.lock")
}

/// Takes the daemon lock of a SQLite database: an exclusive lock on a file beside it, held as
/// long as the returned file is open (the OS releases it if the process dies). Only daemons
/// (`run`, `demo`) take it; operator commands take venue locks instead.
pub fn lock_daemon(pool: &SqlitePool) -> Result<std::fs::File> {
    let db_path = database_path(pool);
    let lock_path = daemon_lock_path(&db_path);
    try_lock_file(&lock_path)?.with_context(|| {
        format!(
            "another retentiond daemon (run or demo) is running against {} (lock {}); stop it first. Operator commands (cycle, reports, audit, check) work while it runs",
            db_path.display(),
            lock_path.display()
        )
    })
}

/// Takes the lock of one venue's cycle on a SQLite database (a file beside it), if free: a
/// venue's cycle runs in one process at a time, the daemon's or an operator's.
pub fn try_lock_venue(pool: &SqlitePool, venue_id: i64) -> Result<Option<std::fs::File>> {
    let db_path = database_path(pool);
    try_lock_file(&db_path.with_extension(format!("venue-{venue_id}.lock")))
}

/// An exclusive lock on `path` (created if missing), or `None` when another process holds it.
pub fn try_lock_file(path: &std::path::Path) -> Result<Option<std::fs::File>> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("cannot open the lock file {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

/// Copies the write-ahead log into the database and truncates it to nothing, so that no old page
/// image (with values since deleted or overwritten) stays in the log file. Readers in the middle
/// of a transaction make it busy; it is tried again for a while.
pub async fn truncate_wal(pool: &SqlitePool) -> Result<()> {
    for attempt in 0..50 {
        let row = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(pool)
            .await?;
        let busy: i64 = row.try_get(0)?;
        if busy == 0 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20 * (attempt + 1).min(10))).await;
    }
    anyhow::bail!("the write-ahead log stayed busy; it is truncated after the next apply")
}

pub async fn execute_script(pool: &SqlitePool, sql: &str) -> Result<()> {
    sqlx::raw_sql(sql).execute(pool).await?;
    Ok(())
}
