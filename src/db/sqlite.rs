//! SQLite specifics: connection options (WAL, busy timeout, foreign keys), how values are bound
//! (timestamps as `datetime()` text, id lists as JSON arrays), how rows are decoded, the file
//! locks that stand in for a server's session locks, and the dialect (SQLite's spelling of what
//! differs between backends, and its catalogue for introspection).

use super::{Columns, Query, Row, TypeKind, Value};
use anyhow::{Context, Result};
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row as _, Sqlite, SqlitePool, TypeInfo, ValueRef};
use std::str::FromStr;
use std::time::Duration;

/// How SQLite's `datetime()` writes a timestamp; timestamps are bound in this form so that
/// text comparison orders them correctly.
pub const TIME_FORMAT: &str = "%Y-%m-%d %H:%M:%S";

pub async fn connect(url: &str, max_connections: u32) -> Result<SqlitePool> {
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
        .busy_timeout(BUSY_TIMEOUT)
        .foreign_keys(true)
        // Deleted and overwritten values are zeroed in the file, not only unlinked (SPEC 3).
        .pragma("secure_delete", "ON")
        // Statement journals (the pages a statement of a longer transaction changes, kept so that
        // the statement alone can be undone) and temporary tables stay in memory. On disk, every
        // multi-row UPDATE or DELETE of apply wrote the pages it changed, personal data and all,
        // to a new file in /var/tmp once past 64 KB: 12,517 files and 2.6 million writes for one
        // 57,142-customer delete, none of them zeroed when removed.
        .pragma("temp_store", "MEMORY")
        // SQLite's automatic checkpoint is replaced by retentiond's (`sqlite_wal`, installed
        // below on every connection), which apply can hold off while it checkpoints itself.
        // Reads through a memory map rather than each connection's page cache: with two
        // connections in use, the bundled SQLite's caches starved each other, and the same
        // candidate count took 0.9 to 1.2 s on one of them against 0.17 s (200,000 customers;
        // 0.16 to 0.24 s on both with the map). The map is capped at SQLite's default maximum
        // (2 GB); pages past it are read as before. Writes still go through the page cache.
        .pragma("mmap_size", MMAP_SIZE);
    let wal = super::sqlite_wal::WalState::of(&path);
    SqlitePoolOptions::new()
        .after_connect(move |conn, _| {
            Box::pin(async move {
                super::sqlite_hash::register(conn)
                    .await
                    .map_err(|e| sqlx::Error::Configuration(e.into()))?;
                wal.install(conn)
                    .await
                    .map_err(|e| sqlx::Error::Configuration(e.into()))
            })
        })
        .max_connections(max_connections)
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
        };
    }
    query
}

/// `bytes` as text, with any sequence that is not UTF-8 replaced by U+FFFD.
fn lossy_text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// A result's rows, sharing the names of its columns.
fn decode_all(rows: &[SqliteRow]) -> Result<Vec<Row>> {
    let columns = Columns::of(
        rows.first()
            .into_iter()
            .flat_map(|r| r.columns().iter().map(sqlx::Column::name)),
    );
    rows.iter().map(|r| decode(r, &columns)).collect()
}

fn decode(row: &SqliteRow, columns: &Columns) -> Result<Row> {
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
            // Personal text is shown as it can be read: bytes that are not UTF-8 (SQLite stores
            // whatever it is given) become U+FFFD for display and CSV, instead of failing the
            // whole page. Nothing read is written back: apply and replay change the stored
            // bytes in SQL.
            _ => Value::Text(lossy_text(row.try_get_unchecked::<Vec<u8>, _>(i)?)),
        };
        values.push(value);
    }
    Ok(Row(values, columns.clone()))
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
    decode_all(&build(q).fetch_all(ex).await?)
}

/// `q` (its first column integers) as one row holding them all, separated by commas, or NULL
/// when there are none: see [`crate::db::Tx::fetch_ids`].
pub fn ids_in_one_row(q: &Query) -> Query {
    let mut wrapped = q.clone();
    wrapped.wrap(
        "WITH retention_ids(id) AS (",
        ") SELECT group_concat(id, ',') FROM retention_ids",
    );
    wrapped
}

/// The ids of a row made by [`ids_in_one_row`].
pub fn parse_id_list(row: &Row) -> Result<Vec<i64>> {
    let Some(list) = row.opt_text(0)? else {
        return Ok(Vec::new());
    };
    list.split(',')
        .map(|id| {
            id.parse::<i64>()
                .with_context(|| format!("an id list held {id:?}, not an integer"))
        })
        .collect()
}

/// The memory map of every connection: SQLite's default maximum (2 GB).
const MMAP_SIZE: &str = "2147418112";

/// Runs `q` on a connection whose memory map is off for it (see `Db::fetch_all_once`).
pub async fn fetch_all_unmapped(pool: &SqlitePool, q: &Query) -> Result<Vec<Row>> {
    let mut conn = pool.acquire().await?;
    let conn: &mut sqlx::SqliteConnection = &mut conn;
    sqlx::query("PRAGMA mmap_size = 0")
        .execute(&mut *conn)
        .await?;
    let rows = build(q).fetch_all(&mut *conn).await;
    sqlx::query(&format!("PRAGMA mmap_size = {MMAP_SIZE}"))
        .execute(&mut *conn)
        .await?;
    decode_all(&rows?)
}

/// The file of a SQLite pool's database.
pub fn database_path(pool: &SqlitePool) -> std::path::PathBuf {
    pool.connect_options().get_filename().to_path_buf()
}

/// Values kept one per database file, for [`shared_by_file`].
pub(super) type FileRegistry<T> = std::sync::OnceLock<
    std::sync::Mutex<std::collections::HashMap<std::path::PathBuf, &'static T>>,
>;

/// What every pool of the process on the database file `path` shares (the daemon keeps one pool
/// for the pages and one for the cycles), made by `new` the first time the file is named: one
/// small allocation per file for the life of the process, since connections that may outlive
/// any pool point at it.
pub(super) fn shared_by_file<T: Send + Sync + 'static>(
    registry: &'static FileRegistry<T>,
    path: &std::path::Path,
    new: impl FnOnce() -> T,
) -> &'static T {
    let mut shared = registry
        .get_or_init(Default::default)
        .lock()
        .expect("the values shared by file");
    shared
        .entry(path.to_path_buf())
        .or_insert_with(|| Box::leak(Box::new(new())))
}

/// The lock file of the daemon of the database at `db_path`.
/// The file of a `sqlite://` URL when it does not exist: a command other than `migrate` then
/// refuses instead of creating an empty database (a mistyped path would otherwise look like a
/// database with nothing in it).
/// (A folder that does not exist is left to [`connect`], which names it.)
pub fn missing_file(url: &str) -> Option<std::path::PathBuf> {
    if !url.starts_with("sqlite:") {
        return None;
    }
    let options = SqliteConnectOptions::from_str(url).ok()?;
    let path = options.get_filename();
    let folder_exists = path
        .parent()
        .is_none_or(|f| f.as_os_str().is_empty() || f.is_dir());
    (path.as_os_str() != ":memory:" && folder_exists && !path.exists()).then(|| path.to_path_buf())
}

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

/// Copies the write-ahead log into the database without holding anyone back (a passive
/// checkpoint), and makes sure the log starts again from its first page. SQLite starts it again
/// only when the next writer finds every page of it copied and no reader on it. Beside a box
/// office committing every 20 ms that never happened (each passive checkpoint, 150 ms or more
/// for an apply's 32,768 pages, reported the whole log copied, yet the log went on growing,
/// most likely because a sale committed while it ran): the log grew by every page the apply
/// wrote, 3.4 GB over one delete of 57,142 customers, which then took twice as long (a fresh
/// file's pages cost the kernel more than rewritten ones). So when the passive checkpoint did not copy the whole
/// log, or the log is twice as long as an apply lets it grow between two checkpoints (it did not
/// start again after the last one), a truncating checkpoint copies what is left and empties the
/// log. It makes writers wait, so it waits [`TRUNCATE_PATIENCE`] at most for other connections
/// and is otherwise left for the next time.
pub async fn checkpoint_and_restart(pooled: &mut PoolConnection<Sqlite>) -> Result<()> {
    let passive = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_one(&mut **pooled)
        .await?;
    let (log, copied): (i64, i64) = (passive.try_get(1)?, passive.try_get(2)?);
    tracing::debug!(log, copied, "passive checkpoint");
    if !log_left_growing(log, copied) {
        // The whole log, and it started again since the last time: the next writer starts it again.
        return Ok(());
    }
    let busy = truncate_with_patience(pooled).await?;
    tracing::debug!(busy, "truncating checkpoint between batches");
    Ok(())
}

/// The page cache of a [`super::Writer`]'s connection, in KiB: one apply batch's pages (a few
/// thousand on a live shop's layout) with room for those of the batches before it. A
/// connection's cache fills only with pages it reads from the log or writes (the database file
/// is read through the memory map), and shrinks back when the writer is released.
pub const WRITER_CACHE_KIB: u32 = 65_536;

/// SQLite's default page cache (`cache_size = -2000`), which the pool's other connections keep.
const USUAL_CACHE_KIB: u32 = 2_000;

/// A connection from `pool` for a [`super::Writer`], its cache enlarged.
pub async fn hold_writer(pool: &SqlitePool) -> Result<PoolConnection<Sqlite>> {
    let mut held = pool.acquire().await?;
    let enlarge = format!("PRAGMA cache_size = -{WRITER_CACHE_KIB}");
    if let Err(e) = sqlx::query(&enlarge).execute(&mut *held).await {
        held.close_on_drop();
        return Err(e.into());
    }
    Ok(held)
}

/// Sets a writer's connection's cache back to the usual size (freeing the pages over it) and
/// lends it to the pool again; closes it instead if that fails.
pub async fn release_writer(mut held: PoolConnection<Sqlite>) -> Result<()> {
    let usual = format!("PRAGMA cache_size = -{USUAL_CACHE_KIB}");
    if let Err(e) = sqlx::query(&usual).execute(&mut *held).await {
        held.close_on_drop();
        return Err(e.into());
    }
    Ok(())
}

/// A truncating checkpoint on `pooled` that waits [`TRUNCATE_PATIENCE`] at most for other
/// connections (the usual busy timeout is put back after it; the connection is closed instead of
/// lent again if that fails); its `busy` column (0: the log is empty).
async fn truncate_with_patience(pooled: &mut PoolConnection<Sqlite>) -> Result<i64> {
    let conn: &mut sqlx::SqliteConnection = pooled;
    let patience = format!("PRAGMA busy_timeout = {}", TRUNCATE_PATIENCE.as_millis());
    sqlx::query(&patience).execute(&mut *conn).await?;
    let truncated = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .fetch_one(&mut *conn)
        .await;
    let usual = format!("PRAGMA busy_timeout = {}", BUSY_TIMEOUT.as_millis());
    let reset = sqlx::query(&usual).execute(&mut *conn).await;
    if reset.is_err() {
        pooled.close_on_drop();
    }
    reset?;
    Ok(truncated?.try_get(0)?)
}

/// Whether, after a passive checkpoint that found the log `log` pages long and copied `copied`
/// of them, the log must be emptied for it to start again (see [`checkpoint_and_restart`]).
pub fn log_left_growing(log: i64, copied: i64) -> bool {
    copied < log || log >= 2 * super::sqlite_wal::APPLY_CHECKPOINT_FRAMES
}

/// How long a connection waits for another's lock.
pub(super) const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the truncating checkpoint between apply's batches waits for other connections.
const TRUNCATE_PATIENCE: Duration = Duration::from_millis(50);

/// Copies the write-ahead log into the database and truncates it to nothing, so that no old page
/// image (with values since deleted or overwritten) stays in the log file. Readers in the middle
/// of a transaction make it busy; it is tried again, in attempts that wait at most
/// [`TRUNCATE_PATIENCE`] each, for [`TRUNCATE_FOR`]. (Beside a box office writing every 20 ms, one
/// attempt with the usual busy timeout waited 1.6 s; short attempts took 0.15 s in all.)
pub async fn truncate_wal(pool: &SqlitePool) -> Result<()> {
    // Copy the log first without holding anyone back (a passive checkpoint lets writers on),
    // so that the truncating checkpoint, which makes writers wait, has only the last pages to copy.
    sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_one(pool)
        .await?;
    let mut pooled = pool.acquire().await?;
    let began = std::time::Instant::now();
    for attempt in 0.. {
        let started = std::time::Instant::now();
        let busy = truncate_with_patience(&mut pooled).await?;
        tracing::debug!(
            attempt,
            busy,
            ms = started.elapsed().as_millis() as u64,
            "truncating checkpoint"
        );
        if busy == 0 {
            return Ok(());
        }
        if began.elapsed() >= TRUNCATE_FOR {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    anyhow::bail!("the write-ahead log stayed busy; it is truncated after the next apply")
}

/// How long the truncation after a run's applies is tried before it is left to the next run.
const TRUNCATE_FOR: Duration = Duration::from_secs(30);

// The dialect: SQLite's spelling of what differs between backends (see `Backend`).

pub fn in_ids(p: &str) -> String {
    format!(" IN (SELECT value FROM json_each({p}))")
}

/// The keyed hash of `column` computed by SQLite itself (see `sqlite_hash`), `key` bound.
pub fn keyed_hash(key: &str, column: &str) -> String {
    format!("{}({key}, {column})", super::sqlite_hash::FUNCTION)
}

pub fn ids_source(p: &str) -> String {
    format!("(SELECT value AS id FROM json_each({p})) AS ids")
}

/// Times are `YYYY-MM-DD HH:MM:SS` text: the year is its first four characters.
pub fn year_of(column: &str) -> String {
    format!("CAST(substr({column}, 1, 4) AS INTEGER)")
}

pub fn year_only(column: &str) -> String {
    format!("CASE WHEN {column} IS NULL THEN NULL ELSE substr({column}, 1, 4) || '-01-01' END")
}

pub const TABLE_EXISTS: &str =
    "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = $1";

/// name, declared type, NOT NULL, has a default, part of the primary key.
pub const COLUMNS: &str = r#"SELECT name, type, "notnull", dflt_value IS NOT NULL OR pk = 1, pk > 0
    FROM pragma_table_info($1) ORDER BY cid"#;

pub const FOREIGN_KEYS_TO: &str = r#"SELECT m.name, f."from" FROM sqlite_master m, pragma_foreign_key_list(m.name) f
    WHERE m.type = 'table' AND f."table" = $1 ORDER BY 1, 2"#;

pub const INDEX_LEADING_COLUMNS: &str =
    "SELECT ii.name FROM pragma_index_list($1) il, pragma_index_info(il.name) ii WHERE ii.seqno = 0";

/// SQLite's type affinity: any column that is not numeric or a blob may hold text, and times
/// are text.
pub fn classify(t: &str) -> TypeKind {
    let numeric =
        t.contains("int") || t.contains("real") || t.contains("floa") || t.contains("doub");
    TypeKind {
        temporal: !(numeric || t.contains("blob")),
        textual: !numeric,
        integer: t.contains("int"),
        flag: t.contains("int") || t.contains("bool"),
        time_as_text: !(numeric || t.contains("blob")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::sqlite_wal::APPLY_CHECKPOINT_FRAMES;

    #[test]
    fn a_log_copied_whole_after_a_fresh_start_is_left_to_the_next_writer() {
        assert!(!log_left_growing(33_000, 33_000));
        assert!(!log_left_growing(
            2 * APPLY_CHECKPOINT_FRAMES - 1,
            2 * APPLY_CHECKPOINT_FRAMES - 1
        ));
    }

    #[test]
    fn a_log_that_did_not_start_again_or_was_not_copied_whole_is_emptied() {
        // Someone committed while the passive checkpoint ran: pages left.
        assert!(log_left_growing(33_000, 32_990));
        // Copied whole, but twice the cadence long: it did not start again after the last one.
        assert!(log_left_growing(
            2 * APPLY_CHECKPOINT_FRAMES,
            2 * APPLY_CHECKPOINT_FRAMES
        ));
        assert!(log_left_growing(408_267, 408_267));
    }
}
