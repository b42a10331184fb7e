//! The one interface to the database: a pool for SQLite or PostgreSQL, queries whose values are
//! always bound as parameters, and rows decoded into plain [`Value`]s. Everything that differs
//! between the two backends lives in `sqlite.rs` and `postgres.rs`; the modules above write SQL once.

mod ident;
mod postgres;
mod sqlite;

pub use ident::{Ident, IdentError};
pub use sqlite::{daemon_lock_path, try_lock_file};

use anyhow::{bail, Context, Result};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use sqlx::{PgPool, SqlitePool};

/// Which database engine a [`Db`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// Appends ` <op> <ids>` so that `expr` is tested for membership in `ids`, bound as one
    /// parameter (a PostgreSQL array, a SQLite JSON array) whatever the number of ids.
    pub fn push_in_ids(self, q: &mut Query, ids: &[i64]) {
        let p = q.param(Value::IntList(ids.to_vec()));
        match self {
            Backend::Postgres => q.push(&format!(" = ANY({p})")),
            Backend::Sqlite => q.push(&format!(" IN (SELECT value FROM json_each({p}))")),
        };
    }

    /// A row source with columns `id` and `v0..vN`, built from parallel lists bound as parameters,
    /// for set-based updates of computed values (e.g. keyed hashes).
    pub fn push_values_source(
        self,
        q: &mut Query,
        ids: Vec<i64>,
        columns: Vec<Vec<Option<String>>>,
    ) {
        match self {
            Backend::Postgres => {
                let mut args = vec![format!(
                    "CAST({} AS BIGINT[])",
                    q.param(Value::IntList(ids))
                )];
                let mut names = vec!["id".to_string()];
                for (i, col) in columns.into_iter().enumerate() {
                    args.push(format!("CAST({} AS TEXT[])", q.param(Value::TextList(col))));
                    names.push(format!("v{i}"));
                }
                q.push(&format!(
                    "unnest({}) AS v({})",
                    args.join(", "),
                    names.join(", ")
                ));
            }
            Backend::Sqlite => {
                // One JSON array of rows, read in a single pass (joining several json_each
                // sources on their keys would be quadratic).
                let rows: Vec<serde_json::Value> = ids
                    .iter()
                    .enumerate()
                    .map(|(i, id)| {
                        let mut row = vec![serde_json::Value::from(*id)];
                        row.extend(columns.iter().map(|col| {
                            col[i]
                                .clone()
                                .map_or(serde_json::Value::Null, serde_json::Value::from)
                        }));
                        serde_json::Value::Array(row)
                    })
                    .collect();
                let p = q.param(Value::Text(serde_json::Value::Array(rows).to_string()));
                let mut select = vec!["json_extract(value, '$[0]') AS id".to_string()];
                select.extend(
                    (0..columns.len())
                        .map(|n| format!("json_extract(value, '$[{}]') AS v{n}", n + 1)),
                );
                q.push(&format!(
                    "(SELECT {} FROM json_each({p})) AS v",
                    select.join(", ")
                ));
            }
        }
    }

    /// A row source with one column `id`, from a list of ids bound as one parameter.
    pub fn push_ids_source(self, q: &mut Query, ids: &[i64]) {
        let p = q.param(Value::IntList(ids.to_vec()));
        match self {
            Backend::Postgres => q.push(&format!(
                "(SELECT unnest(CAST({p} AS BIGINT[])) AS id) AS ids"
            )),
            Backend::Sqlite => q.push(&format!("(SELECT value AS id FROM json_each({p})) AS ids")),
        };
    }

    /// The calendar year (UTC) of a timestamp expression, as an integer; NULL stays NULL.
    pub fn year_of(self, column: &str) -> String {
        match self {
            Backend::Postgres => format!("CAST(extract(year FROM {column}) AS INTEGER)"),
            Backend::Sqlite => format!("CAST(substr({column}, 1, 4) AS INTEGER)"),
        }
    }

    /// An expression that keeps only the year of a date (as 1 January of that year).
    pub fn year_only(self, column: &str) -> String {
        match self {
            Backend::Postgres => {
                format!("make_date(CAST(extract(year FROM {column}) AS INTEGER), 1, 1)")
            }
            Backend::Sqlite => {
                format!("CASE WHEN {column} IS NULL THEN NULL ELSE substr({column}, 1, 4) || '-01-01' END")
            }
        }
    }
}

/// A value bound to, or read from, a query.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// NULL typed as text (PostgreSQL needs a type for every parameter).
    Null,
    /// NULL typed as an integer.
    NullInt,
    /// NULL typed as a timestamp.
    NullTime,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    /// An instant; SQLite stores it as `YYYY-MM-DD HH:MM:SS` UTC text, as its `datetime()` does.
    Time(DateTime<Utc>),
    Date(NaiveDate),
    IntList(Vec<i64>),
    TextList(Vec<Option<String>>),
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_string())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}
impl From<DateTime<Utc>> for Value {
    fn from(v: DateTime<Utc>) -> Self {
        Value::Time(v)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
impl From<Option<i64>> for Value {
    fn from(v: Option<i64>) -> Self {
        v.map_or(Value::NullInt, Value::Int)
    }
}
impl From<Option<&str>> for Value {
    fn from(v: Option<&str>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}
impl From<Option<DateTime<Utc>>> for Value {
    fn from(v: Option<DateTime<Utc>>) -> Self {
        v.map_or(Value::NullTime, Value::Time)
    }
}

impl Value {
    /// The value as text for display, CSV and hashing; `None` for NULL.
    pub fn to_text(&self) -> Option<String> {
        match self {
            Value::Null | Value::NullInt | Value::NullTime => None,
            Value::Bool(b) => Some(b.to_string()),
            Value::Int(i) => Some(i.to_string()),
            Value::Float(f) => Some(f.to_string()),
            Value::Text(s) => Some(s.clone()),
            Value::Time(t) => Some(t.format(sqlite::TIME_FORMAT).to_string()),
            Value::Date(d) => Some(d.to_string()),
            Value::IntList(v) => Some(format!("{v:?}")),
            Value::TextList(v) => Some(format!("{v:?}")),
        }
    }

    /// The value as an instant, parsing SQLite's text forms.
    pub fn to_time(&self) -> Result<Option<DateTime<Utc>>> {
        Ok(match self {
            Value::Null | Value::NullInt | Value::NullTime => None,
            Value::Time(t) => Some(*t),
            Value::Date(d) => Some(d.and_hms_opt(0, 0, 0).expect("midnight").and_utc()),
            Value::Text(s) => Some(parse_time_text(s)?),
            other => bail!("expected a timestamp, found {}", other.kind()),
        })
    }

    fn kind(&self) -> &'static str {
        match self {
            Value::Null | Value::NullInt | Value::NullTime => "NULL",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Text(_) => "text",
            Value::Time(_) => "a timestamp",
            Value::Date(_) => "a date",
            Value::IntList(_) | Value::TextList(_) => "a list",
        }
    }
}

/// Parses the text timestamps SQLite databases hold: `YYYY-MM-DD HH:MM:SS[.fff]`, a bare date, or RFC 3339.
pub fn parse_time_text(s: &str) -> Result<DateTime<Utc>> {
    if let Ok(t) = NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f") {
        return Ok(t.and_utc());
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight").and_utc());
    }
    bail!("not a timestamp: expected YYYY-MM-DD HH:MM:SS")
}

/// SQL text plus the values bound to its `$n` placeholders (both backends accept `$n`).
#[derive(Debug, Clone, Default)]
pub struct Query {
    sql: String,
    params: Vec<Value>,
}

impl Query {
    pub fn new(sql: &str) -> Self {
        Query {
            sql: sql.to_string(),
            params: Vec::new(),
        }
    }

    pub fn push(&mut self, sql: &str) -> &mut Self {
        self.sql.push_str(sql);
        self
    }

    /// Binds a value and appends its placeholder.
    pub fn bind(&mut self, value: impl Into<Value>) -> &mut Self {
        let p = self.param(value);
        self.sql.push_str(&p);
        self
    }

    /// Binds a value and returns its placeholder, for use inside `format!`.
    pub fn param(&mut self, value: impl Into<Value>) -> String {
        self.params.push(value.into());
        format!("${}", self.params.len())
    }

    pub fn sql(&self) -> &str {
        &self.sql
    }
}

/// One decoded row.
#[derive(Debug, Clone)]
pub struct Row(pub Vec<Value>);

impl Row {
    pub fn get(&self, i: usize) -> &Value {
        self.0.get(i).unwrap_or(&Value::Null)
    }
    pub fn i64(&self, i: usize) -> Result<i64> {
        self.opt_i64(i)?
            .with_context(|| format!("column {i} is NULL"))
    }
    pub fn opt_i64(&self, i: usize) -> Result<Option<i64>> {
        match self.get(i) {
            Value::Null | Value::NullInt | Value::NullTime => Ok(None),
            Value::Int(v) => Ok(Some(*v)),
            Value::Bool(b) => Ok(Some(*b as i64)),
            Value::Text(s) => s
                .parse()
                .map(Some)
                .with_context(|| format!("column {i} is not an integer")),
            other => bail!("column {i}: expected an integer, found {}", other.kind()),
        }
    }
    pub fn text(&self, i: usize) -> Result<String> {
        self.opt_text(i)?
            .with_context(|| format!("column {i} is NULL"))
    }
    pub fn opt_text(&self, i: usize) -> Result<Option<String>> {
        Ok(self.get(i).to_text())
    }
    pub fn bool(&self, i: usize) -> Result<bool> {
        Ok(match self.get(i) {
            Value::Null | Value::NullInt | Value::NullTime => false,
            Value::Bool(b) => *b,
            Value::Int(v) => *v != 0,
            other => bail!("column {i}: expected a boolean, found {}", other.kind()),
        })
    }
    pub fn time(&self, i: usize) -> Result<DateTime<Utc>> {
        self.opt_time(i)?
            .with_context(|| format!("column {i} is NULL"))
    }
    pub fn opt_time(&self, i: usize) -> Result<Option<DateTime<Utc>>> {
        self.get(i).to_time().with_context(|| format!("column {i}"))
    }
}

/// A connection pool to the customer database (which also holds the service's `retention_` tables).
#[derive(Clone, Debug)]
pub enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// A transaction; dropped without [`Tx::commit`] it rolls back.
pub enum Tx {
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

impl Db {
    /// Connects to `sqlite://...` or `postgres://...`.
    pub async fn connect(url: &str) -> Result<Db> {
        if url.starts_with("sqlite:") {
            Ok(Db::Sqlite(sqlite::connect(url).await?))
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Ok(Db::Postgres(postgres::connect(url).await?))
        } else {
            bail!("database.url must start with sqlite:// or postgres://")
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            Db::Sqlite(_) => Backend::Sqlite,
            Db::Postgres(_) => Backend::Postgres,
        }
    }

    /// SQLite: copies the write-ahead log into the database file (a passive checkpoint, which
    /// waits for no one and blocks no writer). Outside any transaction, so no lock of ours is
    /// held while it writes. PostgreSQL checkpoints on its own: nothing to do.
    pub async fn checkpoint_wal(&self) -> Result<()> {
        if let Db::Sqlite(pool) = self {
            sqlite::execute(pool, &Query::new("PRAGMA wal_checkpoint(PASSIVE)")).await?;
        }
        Ok(())
    }

    /// After customers were erased: their removed values must not survive in the database's
    /// files (SPEC 3). SQLite zeroes freed content as it goes (`secure_delete`); here its
    /// write-ahead log, which still holds old page images, is checkpointed and truncated.
    /// PostgreSQL: `VACUUM` of the touched tables reclaims the dead row versions (skipped when
    /// `vacuum` is false, for operators who schedule their own).
    pub async fn scrub_files(&self, tables: &[&Ident], vacuum: bool) -> Result<()> {
        match self {
            Db::Sqlite(pool) => sqlite::truncate_wal(pool).await,
            Db::Postgres(pool) if vacuum && !tables.is_empty() => {
                let list: Vec<String> = tables.iter().map(|t| t.q()).collect();
                postgres::execute_script(pool, &format!("VACUUM {}", list.join(", "))).await
            }
            Db::Postgres(_) => Ok(()),
        }
    }

    pub async fn execute(&self, q: &Query) -> Result<u64> {
        match self {
            Db::Sqlite(pool) => sqlite::execute(pool, q).await,
            Db::Postgres(pool) => postgres::execute(pool, q).await,
        }
    }

    pub async fn fetch_all(&self, q: &Query) -> Result<Vec<Row>> {
        match self {
            Db::Sqlite(pool) => sqlite::fetch_all(pool, q).await,
            Db::Postgres(pool) => postgres::fetch_all(pool, q).await,
        }
    }

    pub async fn fetch_optional(&self, q: &Query) -> Result<Option<Row>> {
        Ok(self.fetch_all(q).await?.into_iter().next())
    }

    pub async fn fetch_one(&self, q: &Query) -> Result<Row> {
        self.fetch_optional(q)
            .await?
            .context("query returned no row")
    }

    /// Runs several statements separated by `;` (migrations, fixtures); no parameters.
    pub async fn execute_script(&self, sql: &str) -> Result<()> {
        match self {
            Db::Sqlite(pool) => sqlite::execute_script(pool, sql).await,
            Db::Postgres(pool) => postgres::execute_script(pool, sql).await,
        }
    }

    /// Begins a transaction that will write: on SQLite it takes the write lock up front
    /// (`BEGIN IMMEDIATE`) so that a read-then-write transaction cannot fail to upgrade.
    pub async fn begin(&self) -> Result<Tx> {
        Ok(match self {
            Db::Sqlite(pool) => Tx::Sqlite(pool.begin_with("BEGIN IMMEDIATE").await?),
            Db::Postgres(pool) => Tx::Postgres(pool.begin().await?),
        })
    }

    /// Takes the cross-process lock of one venue's cycle, if free. On PostgreSQL this is a
    /// session advisory lock, released with its session if the process dies; on SQLite an
    /// exclusive lock on a file beside the database, released by the OS if the process dies.
    pub async fn try_lock_venue(&self, venue_id: i64) -> Result<Option<VenueLock>> {
        match self {
            Db::Sqlite(pool) => Ok(
                sqlite::try_lock_venue(pool, venue_id)?.map(|file| VenueLock {
                    conn: None,
                    file: Some(file),
                    name: String::new(),
                }),
            ),
            Db::Postgres(pool) => {
                let name = format!("venue:{venue_id}");
                let conn = postgres::try_advisory_lock(pool, &name).await?;
                Ok(conn.map(|conn| VenueLock {
                    conn: Some(conn),
                    file: None,
                    name,
                }))
            }
        }
    }

    /// Makes sure this process is the only daemon where the backend requires it: on SQLite one
    /// daemon (`run` or `demo`) serves a database, and a second one refuses with a clear message;
    /// operator commands take only venue locks, so they work while it runs. PostgreSQL supports
    /// several daemons, coordinated per venue by advisory locks. Keep the guard for the
    /// process's life.
    pub fn daemon_guard(&self) -> Result<InstanceGuard> {
        match self {
            Db::Sqlite(pool) => Ok(InstanceGuard(Some(sqlite::lock_daemon(pool)?))),
            Db::Postgres(_) => Ok(InstanceGuard(None)),
        }
    }

    pub async fn close(&self) {
        match self {
            Db::Sqlite(pool) => pool.close().await,
            Db::Postgres(pool) => pool.close().await,
        }
    }
}

/// Holds the single-instance lock (SQLite) until dropped.
pub struct InstanceGuard(#[allow(dead_code)] Option<std::fs::File>);

/// A held venue lock; release it with [`VenueLock::release`]. If dropped instead, its connection
/// is closed so that the lock can never leak back into the pool.
pub struct VenueLock {
    conn: Option<sqlx::pool::PoolConnection<sqlx::Postgres>>,
    /// SQLite: the locked file, unlocked when closed.
    #[allow(dead_code)]
    file: Option<std::fs::File>,
    name: String,
}

impl VenueLock {
    pub async fn release(mut self) -> Result<()> {
        if let Some(conn) = self.conn.take() {
            postgres::advisory_unlock(conn, &self.name).await?;
        }
        Ok(())
    }
}

impl Drop for VenueLock {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            drop(conn.detach());
        }
    }
}

impl Tx {
    pub fn backend(&self) -> Backend {
        match self {
            Tx::Sqlite(_) => Backend::Sqlite,
            Tx::Postgres(_) => Backend::Postgres,
        }
    }

    pub async fn execute(&mut self, q: &Query) -> Result<u64> {
        match self {
            Tx::Sqlite(tx) => sqlite::execute(&mut **tx, q).await,
            Tx::Postgres(tx) => postgres::execute(&mut **tx, q).await,
        }
    }

    pub async fn fetch_all(&mut self, q: &Query) -> Result<Vec<Row>> {
        match self {
            Tx::Sqlite(tx) => sqlite::fetch_all(&mut **tx, q).await,
            Tx::Postgres(tx) => postgres::fetch_all(&mut **tx, q).await,
        }
    }

    pub async fn fetch_optional(&mut self, q: &Query) -> Result<Option<Row>> {
        Ok(self.fetch_all(q).await?.into_iter().next())
    }

    pub async fn fetch_one(&mut self, q: &Query) -> Result<Row> {
        self.fetch_optional(q)
            .await?
            .context("query returned no row")
    }

    /// Runs several statements separated by `;` inside the transaction; no parameters.
    pub async fn execute_script(&mut self, sql: &str) -> Result<()> {
        match self {
            Tx::Sqlite(tx) => {
                sqlx::raw_sql(sql).execute(&mut **tx).await?;
            }
            Tx::Postgres(tx) => {
                sqlx::raw_sql(sql).execute(&mut **tx).await?;
            }
        }
        Ok(())
    }

    pub async fn commit(self) -> Result<()> {
        match self {
            Tx::Sqlite(tx) => tx.commit().await?,
            Tx::Postgres(tx) => tx.commit().await?,
        }
        Ok(())
    }
}
