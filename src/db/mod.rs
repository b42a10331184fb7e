//! The one interface to the database: a pool for SQLite, PostgreSQL or MySQL/MariaDB, queries
//! whose values are always bound as parameters, and rows decoded into plain [`Value`]s.
//! Everything that differs between the backends lives here: each dialect is one file
//! (`sqlite.rs`, `postgres.rs`, `mysql.rs`, read side by side), dispatched from this one; the
//! modules above write their SQL once and never ask which backend they are on.

mod ident;
mod mysql;
mod postgres;
pub mod scratch;
mod sqlite;
mod sqlite_hash;
pub mod sqlite_turns;
pub mod sqlite_wal;

pub use ident::{Ident, IdentError};
pub use sqlite::{
    daemon_lock_path, missing_file as missing_sqlite_file, try_lock_file, WRITER_CACHE_KIB,
};

use anyhow::{bail, Context, Result};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use sqlx::{MySqlPool, PgPool, SqlitePool};

/// Which database engine a [`Db`] talks to. Its methods are the SQL fragments that differ
/// between engines; each engine's spelling of them is in its own file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
    Mysql,
}

/// One piece of SQL (a migration, a schema) spelled for each backend.
#[derive(Debug, Clone, Copy)]
pub struct Spelled {
    pub sqlite: &'static str,
    pub postgres: &'static str,
    pub mysql: &'static str,
}

impl Backend {
    /// The engine a database URL names by its scheme (`None`: none of the three).
    pub fn of_url(url: &str) -> Option<Backend> {
        if url.starts_with("sqlite:") {
            Some(Backend::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Some(Backend::Postgres)
        } else if url.starts_with("mysql:") || url.starts_with("mariadb:") {
            Some(Backend::Mysql)
        } else {
            None
        }
    }

    /// The engine's name as an operator knows it.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
            Backend::Mysql => "MySQL",
        }
    }

    /// This backend's spelling of `sql`.
    pub fn pick(self, sql: &Spelled) -> &'static str {
        match self {
            Backend::Sqlite => sql.sqlite,
            Backend::Postgres => sql.postgres,
            Backend::Mysql => sql.mysql,
        }
    }

    /// Appends ` <op> <ids>` so that `expr` is tested for membership in `ids`, every id bound
    /// as a parameter: one array (PostgreSQL) or JSON array (SQLite) whatever the number of
    /// ids; on MySQL a list of placeholders, since an `UPDATE` or `DELETE` filtered by a
    /// subquery scans its whole table there.
    pub fn push_in_ids(self, q: &mut Query, ids: &[i64]) {
        let sql = match self {
            Backend::Sqlite => sqlite::in_ids(&q.param(Value::IntList(ids.to_vec()))),
            Backend::Postgres => postgres::in_ids(&q.param(Value::IntList(ids.to_vec()))),
            Backend::Mysql => mysql::in_ids(q, ids),
        };
        q.push(&sql);
    }

    /// The SQL that computes the keyed hash (`policy::keyed_hash`) of `column` with `key`,
    /// where the database can run it: SQLite through a function registered on each connection,
    /// PostgreSQL and MySQL with their built-in SHA-256 and the padded keys. `bind` binds a text
    /// value and returns its placeholder (or a literal). Every backend hashes in SQL, so an
    /// erasure never reads a value it is about to destroy.
    pub fn keyed_hash_sql(
        self,
        key: &[u8],
        column: &str,
        bind: &mut dyn FnMut(String) -> String,
    ) -> String {
        match self {
            Backend::Sqlite => {
                sqlite::keyed_hash(&bind(String::from_utf8_lossy(key).into_owned()), column)
            }
            Backend::Postgres => {
                let (inner, outer) = crate::policy::hmac_padded_keys(key);
                postgres::keyed_hash(&bind(inner), &bind(outer), column)
            }
            Backend::Mysql => {
                let (inner, outer) = crate::policy::hmac_padded_keys(key);
                mysql::keyed_hash(&bind(inner), &bind(outer), column)
            }
        }
    }

    /// Whether [`Tx::set_deadline`] can stop a statement midway: PostgreSQL's
    /// `statement_timeout`, set per statement to what is left. (MariaDB's `max_statement_time`
    /// would do, MySQL has nothing for writes, and SQLite's batches are bounded by the sizer.)
    pub fn stops_statements_at_deadline(self) -> bool {
        self == Backend::Postgres
    }

    /// Whether the selection runs its orders test as a subquery for each customer whatever
    /// the statement looks like (SQLite's correlated subquery), so that one scan can count
    /// other things beside it at no cost. PostgreSQL turns it into a parallel anti-join, which
    /// it gives up inside an expression; MariaDB measured 1.4 times slower that way.
    pub fn selects_row_by_row(self) -> bool {
        self == Backend::Sqlite
    }

    /// A row source aliased `ids` with one column `id`, from a list of ids bound as one parameter.
    pub fn push_ids_source(self, q: &mut Query, ids: &[i64]) {
        let p = q.param(Value::IntList(ids.to_vec()));
        q.push(&match self {
            Backend::Sqlite => sqlite::ids_source(&p),
            Backend::Postgres => postgres::ids_source(&p),
            Backend::Mysql => mysql::ids_source(&p),
        });
    }

    /// The calendar year (UTC) of a timestamp expression, as an integer; NULL stays NULL.
    pub fn year_of(self, column: &str) -> String {
        match self {
            Backend::Sqlite => sqlite::year_of(column),
            Backend::Postgres => postgres::year_of(column),
            Backend::Mysql => mysql::year_of(column),
        }
    }

    /// An expression that keeps only the year of a date (as 1 January of that year).
    pub fn year_only(self, column: &str) -> String {
        match self {
            Backend::Sqlite => sqlite::year_only(column),
            Backend::Postgres => postgres::year_only(column),
            Backend::Mysql => mysql::year_only(column),
        }
    }

    /// `expr` as text, whatever its type.
    pub fn cast_text(self, expr: &str) -> String {
        match self {
            Backend::Sqlite | Backend::Postgres => format!("CAST({expr} AS TEXT)"),
            Backend::Mysql => format!("CAST({expr} AS CHAR)"),
        }
    }

    /// The time or date `expr` as a timestamp, so that times and dates of several tables
    /// compare and store as one type (PostgreSQL and SQLite compare them as they are).
    pub fn as_timestamp(self, expr: &str) -> String {
        match self {
            Backend::Sqlite | Backend::Postgres => expr.to_string(),
            Backend::Mysql => format!("CAST({expr} AS DATETIME(6))"),
        }
    }

    /// The greatest of `exprs` that are not NULL; NULL when all are. PostgreSQL's `GREATEST`
    /// leaves NULLs out; MySQL's `GREATEST` and SQLite's `MAX` return NULL if any argument is,
    /// so each argument is coalesced with the others in turn.
    pub fn greatest_not_null(self, exprs: &[String]) -> String {
        if let [one] = exprs {
            return one.clone();
        }
        let function = match self {
            Backend::Postgres => return format!("GREATEST({})", exprs.join(", ")),
            Backend::Mysql => "GREATEST",
            Backend::Sqlite => "MAX",
        };
        let rotations: Vec<String> = (0..exprs.len())
            .map(|i| {
                let turn: Vec<&str> = exprs[i..]
                    .iter()
                    .chain(&exprs[..i])
                    .map(String::as_str)
                    .collect();
                format!("COALESCE({})", turn.join(", "))
            })
            .collect();
        format!("{function}({})", rotations.join(", "))
    }

    /// `expr` as an integer: one spelling for BOOLEAN and 0/1 INTEGER flag columns.
    pub fn cast_int(self, expr: &str) -> String {
        match self {
            Backend::Sqlite | Backend::Postgres => format!("CAST({expr} AS INTEGER)"),
            Backend::Mysql => format!("CAST({expr} AS SIGNED)"),
        }
    }

    /// The end of an `INSERT ... SELECT` that, where a row with the same `key` exists, sets
    /// `column` to the new value instead.
    pub fn upsert(self, key: &[&str], column: &str) -> String {
        match self {
            Backend::Sqlite | Backend::Postgres => format!(
                " ON CONFLICT ({}) DO UPDATE SET {column} = excluded.{column}",
                key.join(", ")
            ),
            Backend::Mysql => format!(" ON DUPLICATE KEY UPDATE {column} = VALUES({column})"),
        }
    }
}

/// A column of a customer table as the database declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnInfo {
    pub name: String,
    /// The declared type, lowercase (`text`, `timestamp with time zone`, `datetime(6)`...).
    pub data_type: String,
    pub not_null: bool,
    pub has_default: bool,
    /// Part of the table's primary key.
    pub primary_key: bool,
    pub kind: TypeKind,
}

/// What a declared type can hold, as each backend's spelling says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TypeKind {
    /// Dates or times (on SQLite any text column may hold them).
    pub temporal: bool,
    pub textual: bool,
    pub integer: bool,
    /// A yes/no flag: a boolean, or an integer used as 0/1.
    pub flag: bool,
    /// The backend keeps times as text, so only the values tell whether a column holds them.
    pub time_as_text: bool,
}

impl ColumnInfo {
    pub fn is_temporal(&self) -> bool {
        self.kind.temporal
    }
    pub fn is_textual(&self) -> bool {
        self.kind.textual
    }
    pub fn is_integer(&self) -> bool {
        self.kind.integer
    }
    pub fn is_flag(&self) -> bool {
        self.kind.flag
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
            Value::IntList(_) => "a list",
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

    /// `INSERT INTO table (columns) VALUES (...)` with `values` bound in order: for retentiond's
    /// own rows, whose table and column names are constants, never configuration.
    pub fn insert(table: &str, columns: &[&str], values: Vec<Value>) -> Query {
        debug_assert_eq!(columns.len(), values.len(), "{table}: a value per column");
        let mut q = Query::new(&format!(
            "INSERT INTO {table} ({}) VALUES (",
            columns.join(", ")
        ));
        for (i, value) in values.into_iter().enumerate() {
            if i > 0 {
                q.push(", ");
            }
            q.bind(value);
        }
        q.push(")");
        q
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

    /// Puts `before` in front of the statement and `after` behind it, keeping its bound values
    /// (their placeholders are numbered, so text around them does not move them).
    pub fn wrap(&mut self, before: &str, after: &str) -> &mut Self {
        self.sql = format!("{before}{}{after}", self.sql);
        self
    }

    pub fn sql(&self) -> &str {
        &self.sql
    }

    /// The bound values, in placeholder order.
    pub fn values(&self) -> &[Value] {
        &self.params
    }
}

/// One decoded row: its values in select order, and the names of its columns (shared by the
/// rows of one result), so that a row can be read by name.
#[derive(Debug, Clone)]
pub struct Row(pub Vec<Value>, pub Columns);

/// The names of a result's columns, shared by its rows.
#[derive(Debug, Clone, Default)]
pub struct Columns(std::sync::Arc<[String]>);

impl Columns {
    pub(crate) fn of<'a>(names: impl Iterator<Item = &'a str>) -> Columns {
        Columns(names.map(str::to_string).collect())
    }
}

/// Reads a row by column name: `row.named("id")?.i64()`-style accessors for the store's types.
macro_rules! named {
    ($($name:ident => $get:ident: $ty:ty),* $(,)?) => {
        $(
            pub fn $name(&self, column: &str) -> Result<$ty> {
                self.$get(self.position(column)?)
                    .with_context(|| format!("column {column}"))
            }
        )*
    };
}

impl Row {
    /// The position of the column named `column` in this row.
    pub fn position(&self, column: &str) -> Result<usize> {
        self.1
             .0
            .iter()
            .position(|n| n.eq_ignore_ascii_case(column))
            .with_context(|| format!("no column {column} in the row"))
    }

    named! {
        named_i64 => i64: i64,
        named_opt_i64 => opt_i64: Option<i64>,
        named_text => text: String,
        named_opt_text => opt_text: Option<String>,
        named_bool => bool: bool,
        named_time => time: DateTime<Utc>,
        named_opt_time => opt_time: Option<DateTime<Utc>>,
    }

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
    Mysql(MySqlPool),
}

/// A transaction; dropped without [`Tx::commit`] it rolls back. Most run on a connection lent by
/// the pool for the transaction alone (`Tx<'static>`); a [`Writer`]'s run on the connection it
/// holds.
pub struct Tx<'c> {
    conn: TxConn<'c>,
    /// When set (see [`Tx::set_deadline`]), no statement of this transaction runs past it.
    deadline: Option<std::time::Instant>,
    /// When the statement timeout was last given to the server, and what it was.
    timeout_given: Option<(std::time::Instant, std::time::Duration)>,
    /// SQLite: this process's turn to write, held to the transaction's end ([`sqlite_turns`]).
    _turn: Option<sqlite_turns::Turn>,
}

enum TxConn<'c> {
    Sqlite(sqlx::Transaction<'c, sqlx::Sqlite>),
    Postgres(sqlx::Transaction<'c, sqlx::Postgres>),
    Mysql(sqlx::Transaction<'c, sqlx::MySql>),
}

/// A sequence of write transactions one after the other (apply's batches), on one connection
/// where that matters. SQLite's pool lends its idle connections in turn, and a connection's
/// page cache is emptied whenever another connection wrote since its last transaction, so every
/// batch of an apply began with a cold cache, and its small default (2 MB) was too small for
/// one batch's pages anyway. A writer holds one connection with a larger cache
/// ([`WRITER_CACHE_KIB`]) from its first transaction to its [`Writer::release`], and
/// checkpoints on it too: the next batch finds the pages the last ones wrote. (A 57,142-customer
/// delete on a live shop's layout, alone: 17.1 s lent in turn, 14.3 s held.) A writer asked for
/// a single transaction, and any writer on the server backends, takes a connection from the pool
/// for each transaction as before.
pub struct Writer<'d> {
    db: &'d Db,
    held: Option<sqlx::pool::PoolConnection<sqlx::Sqlite>>,
}

impl Writer<'_> {
    /// Begins a write transaction (see [`Db::begin`]) on the held connection, if any.
    pub async fn begin(&mut self) -> Result<Tx<'_>> {
        let Some(held) = &mut self.held else {
            return self.db.begin().await;
        };
        let turn = self.db.write_turn().await?;
        let tx = sqlx::Connection::begin_with(&mut **held, "BEGIN IMMEDIATE").await?;
        Ok(Tx {
            conn: TxConn::Sqlite(tx),
            deadline: None,
            timeout_given: None,
            _turn: turn,
        })
    }

    /// SQLite: checkpoints the write-ahead log when `sqlite_wal::APPLY_CHECKPOINT_FRAMES` pages
    /// were written to it since the last time (see `sqlite::checkpoint_and_restart`), on the
    /// held connection if any (so that the checkpoint, too, leaves its cache as it is); whether
    /// it did.
    pub async fn checkpoint_if_long(&mut self) -> Result<bool> {
        let (Db::Sqlite(pool), Some(state)) = (self.db, self.db.wal_state()) else {
            return Ok(false);
        };
        if !state.apply_checkpoint_due() {
            return Ok(false);
        }
        match &mut self.held {
            Some(held) => sqlite::checkpoint_and_restart(held).await?,
            None => sqlite::checkpoint_and_restart(&mut pool.acquire().await?).await?,
        }
        state.checkpointed();
        Ok(true)
    }

    /// Lends the held connection back to the pool with the usual cache. A writer dropped
    /// without this (an apply that failed midway) closes its connection instead, so that no
    /// connection with the larger cache is lent again.
    pub async fn release(mut self) -> Result<()> {
        if let Some(held) = self.held.take() {
            sqlite::release_writer(held).await?;
        }
        Ok(())
    }
}

impl Drop for Writer<'_> {
    fn drop(&mut self) {
        if let Some(held) = &mut self.held {
            held.close_on_drop();
        }
    }
}

/// A statement of a transaction with a deadline ([`Tx::set_deadline`]) would have run past it,
/// and was stopped: the transaction must be rolled back (dropped), nothing of it is kept.
#[derive(Debug, thiserror::Error)]
#[error("the transaction passed its deadline and was stopped")]
pub struct DeadlinePassed;

/// Runs the same expression on whichever pool or transaction `$on` holds.
macro_rules! each {
    ($on:expr, $ty:ident, $inner:ident => $body:expr) => {
        match $on {
            $ty::Sqlite($inner) => $body,
            $ty::Postgres($inner) => $body,
            $ty::Mysql($inner) => $body,
        }
    };
}

impl Db {
    /// Connects to `sqlite://...`, `postgres://...` or `mysql://...` with the default pool
    /// (`database.max_connections`' default: 4 on SQLite, 8 on the servers).
    pub async fn connect(url: &str) -> Result<Db> {
        let sqlite = url.starts_with("sqlite:");
        Db::connect_sized(url, if sqlite { 4 } else { 8 }).await
    }

    /// Connects with a pool of at most `max_connections` connections.
    pub async fn connect_sized(url: &str, max_connections: u32) -> Result<Db> {
        let n = max_connections.max(1);
        match Backend::of_url(url) {
            Some(Backend::Sqlite) => Ok(Db::Sqlite(sqlite::connect(url, n).await?)),
            Some(Backend::Postgres) => Ok(Db::Postgres(postgres::connect(url, n).await?)),
            Some(Backend::Mysql) => Ok(Db::Mysql(mysql::connect(url, n).await?)),
            None => bail!("database.url must start with sqlite://, postgres:// or mysql://"),
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            Db::Sqlite(_) => Backend::Sqlite,
            Db::Postgres(_) => Backend::Postgres,
            Db::Mysql(_) => Backend::Mysql,
        }
    }

    /// SQLite: copies the write-ahead log into the database file (a passive checkpoint, which
    /// waits for no one and blocks no writer). Outside any transaction, so no lock of ours is
    /// held while it writes. The server backends checkpoint on their own: nothing to do.
    pub async fn checkpoint_wal(&self) -> Result<()> {
        if let Db::Sqlite(pool) = self {
            sqlite::execute(pool, &Query::new("PRAGMA wal_checkpoint(PASSIVE)")).await?;
        }
        Ok(())
    }

    /// SQLite: until the guard is dropped, no commit on this database checkpoints the
    /// write-ahead log (below `sqlite_wal::DEFERRED_LIMIT_FRAMES`); the holder checkpoints
    /// between its transactions with [`Db::checkpoint_wal_if_long`]. `None` elsewhere.
    pub fn defer_wal_checkpoints(&self) -> Option<sqlite_wal::Deferral> {
        self.wal_state().map(|state| state.defer())
    }

    /// SQLite: waits for this process's turn to write to the database ([`sqlite_turns`]), as
    /// long as SQLite's busy handler would wait for its lock. Nothing to wait for elsewhere.
    async fn write_turn(&self) -> Result<Option<sqlite_turns::Turn>> {
        match self {
            Db::Sqlite(pool) => Ok(Some(
                sqlite_turns::take(&sqlite::database_path(pool), sqlite::BUSY_TIMEOUT).await?,
            )),
            _ => Ok(None),
        }
    }

    /// SQLite: what the commit hooks of this database's connections share.
    fn wal_state(&self) -> Option<&'static sqlite_wal::WalState> {
        match self {
            Db::Sqlite(pool) => Some(sqlite_wal::WalState::of(&sqlite::database_path(pool))),
            _ => None,
        }
    }

    /// A [`Writer`] for a sequence of write transactions on this database; it holds a
    /// connection only if `several` (a single transaction gains nothing from it).
    pub async fn writer(&self, several: bool) -> Result<Writer<'_>> {
        let held = match self {
            Db::Sqlite(pool) if several => Some(sqlite::hold_writer(pool).await?),
            _ => None,
        };
        Ok(Writer { db: self, held })
    }

    /// SQLite: the write-ahead log's length in pages after the last commit this process made
    /// on the database. `None` elsewhere.
    pub fn wal_frames(&self) -> Option<i64> {
        self.wal_state().map(|state| state.frames())
    }

    /// After customers were erased: their removed values must not survive in the database's
    /// files (SPEC 3). SQLite zeroes freed content as it goes (`secure_delete`); here its
    /// write-ahead log, which still holds old page images, is checkpointed and truncated.
    /// PostgreSQL: `VACUUM` of the touched tables reclaims the dead row versions (skipped when
    /// `vacuum` is false, for operators who schedule their own). MySQL: InnoDB's purge thread
    /// reclaims them on its own, as PostgreSQL's VACUUM would; nothing to do.
    pub async fn scrub_files(&self, tables: &[&Ident], vacuum: bool) -> Result<()> {
        let list: Vec<String> = tables.iter().map(|t| t.q()).collect();
        match self {
            Db::Sqlite(pool) => sqlite::truncate_wal(pool).await,
            Db::Postgres(pool) if vacuum && !list.is_empty() => {
                postgres::execute_script(pool, &format!("VACUUM {}", list.join(", "))).await
            }
            Db::Postgres(_) | Db::Mysql(_) => Ok(()),
        }
    }

    /// Refreshes the planner's statistics of `table` after a large insert, where the backend
    /// does not keep up on its own. A failure only costs speed: the caller logs it.
    pub async fn refresh_statistics(&self, table: &str) -> Result<()> {
        match self {
            Db::Sqlite(_) => Ok(()),
            Db::Postgres(pool) => postgres::execute_script(pool, &format!("ANALYZE {table}")).await,
            Db::Mysql(pool) => {
                mysql::execute(pool, &Query::new(&format!("ANALYZE TABLE {table}"))).await?;
                Ok(())
            }
        }
    }

    /// Runs one statement that writes, outside any transaction (on SQLite in this process's
    /// turn to write, [`sqlite_turns`]).
    pub async fn execute(&self, q: &Query) -> Result<u64> {
        match self {
            Db::Sqlite(pool) => {
                let _turn = self.write_turn().await?;
                sqlite::execute(pool, q).await
            }
            Db::Postgres(pool) => postgres::execute(pool, q).await,
            Db::Mysql(pool) => mysql::execute(pool, q).await,
        }
    }

    pub async fn fetch_all(&self, q: &Query) -> Result<Vec<Row>> {
        match self {
            Db::Sqlite(pool) => sqlite::fetch_all(pool, q).await,
            Db::Postgres(pool) => postgres::fetch_all(pool, q).await,
            Db::Mysql(pool) => mysql::fetch_all(pool, q).await,
        }
    }

    /// [`Db::fetch_all`] for data read once in bulk (a report's CSV): on SQLite, through the
    /// connection's small page cache instead of the memory map, so the process does not keep
    /// every page it read mapped (the map had made the CSV's peak memory 170 MB at 300,000
    /// customers). Elsewhere the same as `fetch_all`.
    pub async fn fetch_all_once(&self, q: &Query) -> Result<Vec<Row>> {
        match self {
            Db::Sqlite(pool) => sqlite::fetch_all_unmapped(pool, q).await,
            _ => self.fetch_all(q).await,
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
        each!(self, Db, pool => { sqlx::raw_sql(sql).execute(pool).await?; });
        Ok(())
    }

    /// Begins a transaction that will write: on SQLite it takes the write lock up front
    /// (`BEGIN IMMEDIATE`) so that a read-then-write transaction cannot fail to upgrade.
    pub async fn begin(&self) -> Result<Tx<'static>> {
        let turn = self.write_turn().await?;
        let conn = match self {
            Db::Sqlite(pool) => TxConn::Sqlite(pool.begin_with("BEGIN IMMEDIATE").await?),
            Db::Postgres(pool) => TxConn::Postgres(pool.begin().await?),
            Db::Mysql(pool) => TxConn::Mysql(pool.begin().await?),
        };
        Ok(Tx {
            conn,
            deadline: None,
            timeout_given: None,
            _turn: turn,
        })
    }

    /// Whether the current database or schema has a table `name`.
    pub async fn table_exists(&self, name: &str) -> Result<bool> {
        let mut q = Query::new(match self.backend() {
            Backend::Sqlite => sqlite::TABLE_EXISTS,
            Backend::Postgres => postgres::TABLE_EXISTS,
            Backend::Mysql => mysql::TABLE_EXISTS,
        });
        q.param(name);
        Ok(self.fetch_one(&q).await?.i64(0)? > 0)
    }

    /// The columns of `table` in order; `None` when the table does not exist.
    pub async fn columns(&self, table: &Ident) -> Result<Option<Vec<ColumnInfo>>> {
        let (sql, classify): (&str, fn(&str) -> TypeKind) = match self.backend() {
            Backend::Sqlite => (sqlite::COLUMNS, sqlite::classify),
            Backend::Postgres => (postgres::COLUMNS, postgres::classify),
            Backend::Mysql => (mysql::COLUMNS, mysql::classify),
        };
        let mut q = Query::new(sql);
        q.param(table.name());
        let columns: Vec<ColumnInfo> = self
            .fetch_all(&q)
            .await?
            .iter()
            .map(|r| column_info(r, 0, classify))
            .collect::<Result<_>>()?;
        Ok((!columns.is_empty()).then_some(columns))
    }

    /// The columns of each of `tables` that exists, in order, by the table's name as given: one
    /// catalogue statement for them all on the servers (a run's checks read six to eight tables,
    /// and one statement each was a tenth of a fleet's dry run on MariaDB and PostgreSQL);
    /// SQLite's catalogue is read in the process, table by table.
    pub async fn columns_of(
        &self,
        tables: &[&Ident],
    ) -> Result<std::collections::BTreeMap<String, Vec<ColumnInfo>>> {
        let mut names: Vec<&str> = tables.iter().map(|t| t.name()).collect();
        names.sort_unstable();
        names.dedup();
        let mut found = std::collections::BTreeMap::new();
        if self.backend() == Backend::Sqlite {
            for table in tables {
                if found.contains_key(table.name()) {
                    continue;
                }
                if let Some(columns) = self.columns(table).await? {
                    found.insert(table.name().to_string(), columns);
                }
            }
            return Ok(found);
        }
        if names.is_empty() {
            return Ok(found);
        }
        let mut q = Query::default();
        let placeholders: Vec<String> = names.iter().map(|n| q.param(*n)).collect();
        let (sql, classify): (String, fn(&str) -> TypeKind) = match self.backend() {
            Backend::Postgres => (
                postgres::columns_of_tables(&placeholders),
                postgres::classify,
            ),
            _ => (mysql::columns_of_tables(&placeholders), mysql::classify),
        };
        q.push(&sql);
        for row in self.fetch_all(&q).await? {
            let table = row.text(0)?;
            // Keyed by the name as asked: MySQL may spell it in another case.
            let asked = names
                .iter()
                .find(|n| **n == table)
                .or_else(|| names.iter().find(|n| n.eq_ignore_ascii_case(&table)))
                .map_or(table, |n| n.to_string());
            found
                .entry(asked)
                .or_insert_with(Vec::new)
                .push(column_info(&row, 1, classify)?);
        }
        Ok(found)
    }

    /// `(table, column)` of every foreign key that points at `target`, in order.
    pub async fn foreign_keys_to(&self, target: &Ident) -> Result<Vec<(String, String)>> {
        let mut q = Query::new(match self.backend() {
            Backend::Sqlite => sqlite::FOREIGN_KEYS_TO,
            Backend::Postgres => postgres::FOREIGN_KEYS_TO,
            Backend::Mysql => mysql::FOREIGN_KEYS_TO,
        });
        q.param(target.name());
        self.fetch_all(&q)
            .await?
            .iter()
            .map(|r| Ok((r.text(0)?, r.text(1)?)))
            .collect()
    }

    /// The leading column of every index on `table`.
    pub async fn index_leading_columns(&self, table: &Ident) -> Result<Vec<String>> {
        let mut q = Query::new(match self.backend() {
            Backend::Sqlite => sqlite::INDEX_LEADING_COLUMNS,
            Backend::Postgres => postgres::INDEX_LEADING_COLUMNS,
            Backend::Mysql => mysql::INDEX_LEADING_COLUMNS,
        });
        q.param(table.name());
        self.fetch_all(&q)
            .await?
            .iter()
            .map(|r| r.text(0))
            .collect()
    }

    /// Problems of the server or of `table` that make it unfit for retentiond (MySQL: a table
    /// without transactions, a server too old, a missing privilege), each in one line; empty
    /// when there are none.
    pub async fn unfit(&self, tables: &[&Ident]) -> Result<Vec<String>> {
        match self {
            Db::Mysql(pool) => mysql::unfit(pool, tables).await,
            _ => Ok(Vec::new()),
        }
    }

    /// MySQL and MariaDB: InnoDB's buffer pool and what `tables` and their indexes take, in
    /// bytes (`check` warns when they do not fit). `None` elsewhere: PostgreSQL and SQLite read
    /// through the system's file cache as well as their own.
    pub async fn buffer_pool_and_tables(&self, tables: &[&Ident]) -> Result<Option<(u64, u64)>> {
        match self {
            Db::Mysql(pool) => Ok(Some(mysql::buffer_pool_and_tables(pool, tables).await?)),
            _ => Ok(None),
        }
    }

    /// Takes the cross-process lock of one venue's cycle, if free. On PostgreSQL and MySQL this
    /// is a lock of a session (an advisory lock, `GET_LOCK`), released with its session if the
    /// process dies; on SQLite an exclusive lock on a file beside the database, released by the
    /// OS if the process dies.
    pub async fn try_lock_venue(&self, venue_id: i64) -> Result<Option<NamedLock>> {
        let name = format!("venue:{venue_id}");
        Ok(match self {
            Db::Sqlite(pool) => sqlite::try_lock_venue(pool, venue_id)?.map(NamedLock::File),
            Db::Postgres(pool) => postgres::try_advisory_lock(pool, &name)
                .await?
                .map(|conn| NamedLock::Postgres(Some(conn), name)),
            Db::Mysql(pool) => mysql::try_named_lock(pool, &name, 0)
                .await?
                .map(|conn| NamedLock::Mysql(Some(conn), name)),
        })
    }

    /// Waits for the lock under which migrations run, so that instances starting together
    /// migrate one after the other. SQLite's write transaction already serialises them.
    pub async fn lock_migrations(&self) -> Result<NamedLock> {
        let name = "migrate".to_string();
        Ok(match self {
            Db::Sqlite(_) => NamedLock::None,
            Db::Postgres(pool) => {
                NamedLock::Postgres(Some(postgres::advisory_lock(pool, &name).await?), name)
            }
            Db::Mysql(pool) => {
                let conn = mysql::try_named_lock(pool, &name, 120)
                    .await?
                    .context("another instance held the migration lock for 2 minutes")?;
                NamedLock::Mysql(Some(conn), name)
            }
        })
    }

    /// Makes sure this process is the only daemon where the backend requires it: on SQLite one
    /// daemon (`run` or `demo`) serves a database, and a second one refuses with a clear message;
    /// operator commands take only venue locks, so they work while it runs. PostgreSQL and MySQL
    /// support several daemons, coordinated per venue by session locks. Keep the guard for the
    /// process's life.
    pub fn daemon_guard(&self) -> Result<InstanceGuard> {
        match self {
            Db::Sqlite(pool) => Ok(InstanceGuard(Some(sqlite::lock_daemon(pool)?))),
            Db::Postgres(_) | Db::Mysql(_) => Ok(InstanceGuard(None)),
        }
    }

    pub async fn close(&self) {
        each!(self, Db, pool => pool.close().await)
    }
}

/// Holds the single-instance lock (SQLite) until dropped.
pub struct InstanceGuard(#[allow(dead_code)] Option<std::fs::File>);

/// A held cross-process lock; release it with [`NamedLock::release`]. If dropped instead, a
/// session lock's connection is closed so that the lock can never leak back into the pool.
pub enum NamedLock {
    /// Nothing to hold (SQLite migrations).
    None,
    /// SQLite: the locked file, unlocked when closed.
    File(#[allow(dead_code)] std::fs::File),
    Postgres(Option<sqlx::pool::PoolConnection<sqlx::Postgres>>, String),
    Mysql(Option<sqlx::pool::PoolConnection<sqlx::MySql>>, String),
}

/// The lock of a venue's cycle.
pub type VenueLock = NamedLock;

impl NamedLock {
    pub async fn release(mut self) -> Result<()> {
        match &mut self {
            NamedLock::Postgres(conn, name) => {
                if let Some(conn) = conn.take() {
                    postgres::advisory_unlock(conn, name).await?;
                }
            }
            NamedLock::Mysql(conn, name) => {
                if let Some(conn) = conn.take() {
                    mysql::release_named_lock(conn, name).await?;
                }
            }
            NamedLock::None | NamedLock::File(_) => {}
        }
        Ok(())
    }
}

impl Drop for NamedLock {
    fn drop(&mut self) {
        match self {
            NamedLock::Postgres(conn, _) => {
                if let Some(conn) = conn.take() {
                    drop(conn.detach());
                }
            }
            NamedLock::Mysql(conn, _) => {
                if let Some(conn) = conn.take() {
                    drop(conn.detach());
                }
            }
            NamedLock::None | NamedLock::File(_) => {}
        }
    }
}

impl Tx<'_> {
    pub fn backend(&self) -> Backend {
        match self.conn {
            TxConn::Sqlite(_) => Backend::Sqlite,
            TxConn::Postgres(_) => Backend::Postgres,
            TxConn::Mysql(_) => Backend::Mysql,
        }
    }

    /// Stops any later statement of this transaction that would run past `deadline`, where the
    /// backend can stop a statement midway (PostgreSQL, through `statement_timeout`; see
    /// [`Backend::stops_statements_at_deadline`]). Such a statement fails with
    /// [`DeadlinePassed`] and the caller rolls the transaction back. Elsewhere this does nothing.
    pub fn set_deadline(&mut self, deadline: std::time::Instant) {
        if self.backend().stops_statements_at_deadline() {
            self.deadline = Some(deadline);
            self.timeout_given = None;
        }
    }

    /// Before a statement: gives it what is left until the deadline, or fails if nothing is.
    /// The timeout given to an earlier statement is kept while less than a tenth of it has
    /// passed since (a statement may then end up to that tenth past the deadline): a batch of a
    /// fleet's small report is a dozen quick statements, and a round trip before each one was
    /// 17,000 of them over 1,000 reports (PostgreSQL).
    async fn bound_next_statement(&mut self) -> Result<()> {
        if let (TxConn::Postgres(tx), Some(deadline)) = (&mut self.conn, self.deadline) {
            let now = std::time::Instant::now();
            let left = deadline.saturating_duration_since(now);
            if left.as_millis() == 0 {
                return Err(DeadlinePassed.into());
            }
            let still_close = self
                .timeout_given
                .is_some_and(|(given_at, given)| now.duration_since(given_at) * 10 < given);
            if !still_close {
                postgres::set_statement_timeout(tx, left).await?;
                self.timeout_given = Some((now, left));
            }
        }
        Ok(())
    }

    /// After a statement: a statement stopped at the deadline is reported as [`DeadlinePassed`].
    fn at_deadline<T>(&self, result: Result<T>) -> Result<T> {
        match result {
            Err(e) if self.deadline.is_some() && postgres::was_stopped_by_timeout(&e) => {
                Err(e.context(DeadlinePassed))
            }
            other => other,
        }
    }

    pub async fn execute(&mut self, q: &Query) -> Result<u64> {
        self.bound_next_statement().await?;
        let result = match &mut self.conn {
            TxConn::Sqlite(tx) => sqlite::execute(&mut **tx, q).await,
            TxConn::Postgres(tx) => postgres::execute(&mut **tx, q).await,
            TxConn::Mysql(tx) => mysql::execute(&mut **tx, q).await,
        };
        self.at_deadline(result)
    }

    pub async fn fetch_all(&mut self, q: &Query) -> Result<Vec<Row>> {
        self.bound_next_statement().await?;
        let result = match &mut self.conn {
            TxConn::Sqlite(tx) => sqlite::fetch_all(&mut **tx, q).await,
            TxConn::Postgres(tx) => postgres::fetch_all(&mut **tx, q).await,
            TxConn::Mysql(tx) => mysql::fetch_all(&mut **tx, q).await,
        };
        self.at_deadline(result)
    }

    pub async fn fetch_optional(&mut self, q: &Query) -> Result<Option<Row>> {
        Ok(self.fetch_all(q).await?.into_iter().next())
    }

    /// The integers of the first column of `q`'s rows, in no particular order (a caller that
    /// needs an order sorts them). On SQLite they come back in one row: the driver hands each
    /// row over from its own thread, and a batch's few hundred ids row by row cost a fleet's
    /// apply of 1,000 small reports about a tenth of its time (SPEC 11).
    pub async fn fetch_ids(&mut self, q: &Query) -> Result<Vec<i64>> {
        if self.backend() != Backend::Sqlite {
            return self.fetch_all(q).await?.iter().map(|r| r.i64(0)).collect();
        }
        let row = self.fetch_one(&sqlite::ids_in_one_row(q)).await?;
        sqlite::parse_id_list(&row)
    }

    pub async fn fetch_one(&mut self, q: &Query) -> Result<Row> {
        self.fetch_optional(q)
            .await?
            .context("query returned no row")
    }

    /// Runs an `INSERT` of one row and returns the value of its generated key `id_column`.
    pub async fn insert_returning_id(&mut self, q: &Query, id_column: &str) -> Result<i64> {
        match &mut self.conn {
            TxConn::Mysql(tx) => mysql::insert_returning_id(&mut **tx, q).await,
            _ => {
                let mut q = q.clone();
                q.push(&format!(" RETURNING {id_column}"));
                self.fetch_one(&q).await?.i64(0)
            }
        }
    }

    /// Runs `q` (a `SELECT` of the rows to lock) with a row lock held until the transaction
    /// ends, where the backend locks rows; SQLite's write transaction already serialises.
    pub async fn lock_for_update(&mut self, q: &Query) -> Result<()> {
        if self.backend() != Backend::Sqlite {
            let mut q = q.clone();
            q.push(" FOR UPDATE");
            self.fetch_all(&q).await?;
        }
        Ok(())
    }

    /// Lets this transaction's commit return before its log reaches the disk, where the backend
    /// allows it per transaction (PostgreSQL `synchronous_commit = off`). See `apply` for why
    /// that is safe for a batch.
    pub async fn relax_commit_flush(&mut self) -> Result<()> {
        if let TxConn::Postgres(tx) = &mut self.conn {
            postgres::execute(&mut **tx, &Query::new("SET LOCAL synchronous_commit = off")).await?;
        }
        Ok(())
    }

    /// Runs several statements separated by `;` inside the transaction; no parameters.
    pub async fn execute_script(&mut self, sql: &str) -> Result<()> {
        self.bound_next_statement().await?;
        let result = async {
            each!(&mut self.conn, TxConn, tx => { sqlx::raw_sql(sql).execute(&mut **tx).await?; });
            Ok(())
        }
        .await;
        self.at_deadline(result)
    }

    /// Commits. A deadline set on the transaction does not apply to the commit itself: the
    /// work is done by then, and a commit stopped midway would only throw it away.
    pub async fn commit(mut self) -> Result<()> {
        if let (TxConn::Postgres(tx), Some(_)) = (&mut self.conn, self.deadline) {
            postgres::set_statement_timeout(tx, std::time::Duration::ZERO).await?;
        }
        each!(self.conn, TxConn, tx => tx.commit().await?);
        Ok(())
    }
}

/// A catalogue row's column, its five fields from column `first` on: name, declared type,
/// NOT NULL, has a default, part of the primary key.
fn column_info(r: &Row, first: usize, classify: fn(&str) -> TypeKind) -> Result<ColumnInfo> {
    let data_type = r.text(first + 1)?.to_lowercase();
    Ok(ColumnInfo {
        name: r.text(first)?,
        kind: classify(&data_type),
        data_type,
        not_null: r.bool(first + 2)?,
        has_default: r.bool(first + 3)?,
        primary_key: r.bool(first + 4)?,
    })
}
