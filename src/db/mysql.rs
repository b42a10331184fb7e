//! MySQL and MariaDB specifics: the connection pool (every session in UTC, ANSI quotes, READ
//! COMMITTED), how `$n` placeholders become `?` and values are bound (id lists as JSON arrays
//! read by `JSON_TABLE`), how rows are decoded by column type, the named locks (`GET_LOCK`) that
//! keep a venue's cycle to one instance at a time, the checks that refuse a server or table
//! retentiond cannot work on safely, and the dialect (MySQL's spelling of what differs between
//! backends, and `information_schema` for introspection).

use super::{Columns, Ident, Query, Row, TypeKind, Value};
use anyhow::{bail, Context, Result};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use sqlx::mysql::{MySqlConnectOptions, MySqlConnection, MySqlPoolOptions, MySqlRow};
use sqlx::pool::PoolConnection;
use sqlx::{Column, Connection, Executor, MySql, MySqlPool, Row as _, TypeInfo, ValueRef};
use std::time::Duration;

/// What every session sets on top of what sqlx sets (`PIPES_AS_CONCAT`, `time_zone = '+00:00'`,
/// utf8mb4): double-quoted identifiers and standard string literals, so that the SQL the other
/// modules write once means the same here; strict inserts; and READ COMMITTED, as PostgreSQL,
/// so that a batch's re-check reads what is committed now and InnoDB takes no gap locks on the
/// orders index while reassigning.
const SESSION_SETUP: [&str; 2] = [
    "SET SESSION sql_mode = CONCAT(@@sql_mode, ',ANSI_QUOTES,NO_BACKSLASH_ESCAPES,STRICT_TRANS_TABLES')",
    "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
];

/// MariaDB only: a `NOT EXISTS` stays a lookup per row. MariaDB otherwise turns it into an
/// `IN` and materialises the whole subquery, so apply's re-check of 75 customers read every
/// report item, anonymised customer and Unknown Customer of the fleet each time (6.6 ms a batch
/// at 1,000 venues, 15 times what it took at 250: the one step that grew with venues times
/// customers). MySQL has no such rewrite (and no such switch).
const MARIADB_SETUP: &str = "SET SESSION optimizer_switch = 'exists_to_in=off'";

/// The oldest servers whose SQL retentiond uses (`JSON_TABLE`, `INSERT ... RETURNING` is not
/// needed): MySQL 8.0 and MariaDB 10.6.
const OLDEST_MYSQL: (u32, u32) = (8, 0);
const OLDEST_MARIADB: (u32, u32) = (10, 6);

pub async fn connect(url: &str, max_connections: u32) -> Result<MySqlPool> {
    let url = url.replacen("mariadb:", "mysql:", 1);
    let options: MySqlConnectOptions = url
        .parse()
        .context("database.url is not a valid MySQL URL")?;
    let Some(database) = options.get_database().map(str::to_string) else {
        bail!("database.url must name a database (mysql://user@host/DATABASE)");
    };
    let target = format!(
        "MySQL at {}:{} (database {database})",
        options.get_host(),
        options.get_port(),
    );
    let options = options.timezone(Some("+00:00".to_string()));
    // One connection first, so that an unreachable server, a missing database or an old
    // version is reported at once with its cause, not as a pool timeout.
    let mut first = tokio::time::timeout(
        Duration::from_secs(10),
        MySqlConnection::connect_with(&options),
    )
    .await
    .map_err(|_| anyhow::anyhow!("cannot connect to {target}: no answer within 10 s"))?
    .map_err(|e| anyhow::anyhow!("cannot connect to {target}: {}", describe(&e)))?;
    let version: String = sqlx::query_scalar("SELECT VERSION()")
        .fetch_one(&mut first)
        .await?;
    check_version(&version).with_context(|| format!("{target} cannot be used"))?;
    let mariadb = version.to_ascii_lowercase().contains("mariadb");
    drop(first);
    MySqlPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .test_before_acquire(false)
        .after_connect(move |conn, _| {
            Box::pin(async move {
                for statement in SESSION_SETUP {
                    conn.execute(statement).await?;
                }
                if mariadb {
                    conn.execute(MARIADB_SETUP).await?;
                }
                Ok(())
            })
        })
        .connect_with(options)
        .await
        .with_context(|| format!("cannot connect to {target}"))
}

/// Refuses servers older than the oldest supported, naming what was found.
fn check_version(version: &str) -> Result<()> {
    let mariadb = version.to_ascii_lowercase().contains("mariadb");
    let mut numbers = version
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse::<u32>().ok());
    let found = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    let (oldest, name) = if mariadb {
        (OLDEST_MARIADB, "MariaDB")
    } else {
        (OLDEST_MYSQL, "MySQL")
    };
    if found < oldest {
        bail!(
            "the server is {name} {version}; retentiond needs {name} {}.{} or later",
            oldest.0,
            oldest.1
        );
    }
    Ok(())
}

/// The cause of a connection failure in one phrase (the server's message, or the I/O error).
fn describe(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => db.message().to_string(),
        sqlx::Error::Io(io) => io.to_string(),
        other => other.to_string(),
    }
}

/// The SQL with each `$n` placeholder outside quotes replaced by `?`, and for each `?` in order
/// the index of the value it takes (a value used twice is bound twice).
pub fn positional(sql: &str) -> (String, Vec<usize>) {
    let mut out = String::with_capacity(sql.len());
    let mut order = Vec::new();
    let mut chars = sql.char_indices().peekable();
    let mut quote: Option<char> = None;
    while let Some((_, c)) = chars.next() {
        match quote {
            Some(q) => {
                out.push(c);
                if c == q {
                    quote = None;
                }
            }
            None if c == '\'' || c == '"' || c == '`' => {
                quote = Some(c);
                out.push(c);
            }
            None if c == '$' && chars.peek().is_some_and(|(_, d)| d.is_ascii_digit()) => {
                let mut n = 0usize;
                while let Some((_, d)) = chars.peek().copied().filter(|(_, d)| d.is_ascii_digit()) {
                    n = n * 10 + d.to_digit(10).expect("digit") as usize;
                    chars.next();
                }
                order.push(n - 1);
                out.push('?');
            }
            None => out.push(c),
        }
    }
    (out, order)
}

fn bind_all<'q>(
    sql: &'q str,
    q: &'q Query,
    order: &[usize],
) -> sqlx::query::Query<'q, MySql, sqlx::mysql::MySqlArguments> {
    let mut query = sqlx::query::<MySql>(sql);
    for &i in order {
        query = match &q.params[i] {
            Value::Null => query.bind(None::<String>),
            Value::NullInt => query.bind(None::<i64>),
            Value::NullTime => query.bind(None::<NaiveDateTime>),
            Value::Bool(b) => query.bind(*b),
            Value::Int(i) => query.bind(*i),
            Value::Float(f) => query.bind(*f),
            Value::Text(s) => query.bind(s.clone()),
            // DATETIME(6) in UTC: the session's time zone is UTC, whatever the server's is.
            Value::Time(t) => query.bind(t.naive_utc()),
            Value::Date(d) => query.bind(*d),
            Value::IntList(v) => query.bind(serde_json::to_string(v).expect("ids serialise")),
        };
    }
    query
}

/// A result's rows, sharing the names of its columns.
fn decode_all(rows: &[MySqlRow]) -> Result<Vec<Row>> {
    let columns = Columns::of(
        rows.first()
            .into_iter()
            .flat_map(|r| r.columns().iter().map(sqlx::Column::name)),
    );
    rows.iter().map(|r| decode(r, &columns)).collect()
}

fn decode(row: &MySqlRow, columns: &Columns) -> Result<Row> {
    let mut values = Vec::with_capacity(row.columns().len());
    for (i, column) in row.columns().iter().enumerate() {
        if row.try_get_raw(i)?.is_null() {
            values.push(Value::Null);
            continue;
        }
        let type_name = column.type_info().name();
        let value = match type_name {
            "BOOLEAN" | "TINYINT" | "SMALLINT" | "MEDIUMINT" | "INT" | "BIGINT" | "YEAR" => {
                Value::Int(row.try_get_unchecked::<i64, _>(i)?)
            }
            t if t.ends_with("UNSIGNED") || t == "BIT" => {
                let v = row.try_get_unchecked::<u64, _>(i)?;
                Value::Int(i64::try_from(v).with_context(|| {
                    format!(
                        "column {} holds {v}, too large for retentiond",
                        column.name()
                    )
                })?)
            }
            "FLOAT" | "DOUBLE" => Value::Float(row.try_get_unchecked::<f64, _>(i)?),
            "DECIMAL" => {
                let text = row.try_get_unchecked::<String, _>(i)?;
                text.parse::<i64>()
                    .map(Value::Int)
                    .or_else(|_| text.parse::<f64>().map(Value::Float))
                    .with_context(|| format!("column {} is not a number", column.name()))?
            }
            "DATETIME" => Value::Time(row.try_get_unchecked::<NaiveDateTime, _>(i)?.and_utc()),
            "TIMESTAMP" => Value::Time(row.try_get_unchecked::<DateTime<Utc>, _>(i)?),
            "DATE" => Value::Date(row.try_get_unchecked::<NaiveDate, _>(i)?),
            t if t.contains("BLOB") || t.contains("BINARY") => {
                let bytes = row.try_get_unchecked::<Vec<u8>, _>(i)?;
                match String::from_utf8(bytes) {
                    Ok(text) => Value::Text(text),
                    Err(e) => Value::Text(hex::encode(e.into_bytes())),
                }
            }
            "CHAR" | "VARCHAR" | "TINYTEXT" | "TEXT" | "MEDIUMTEXT" | "LONGTEXT" | "ENUM"
            | "SET" | "JSON" | "TIME" => Value::Text(row.try_get_unchecked::<String, _>(i)?),
            other => bail!(
                "column {} has type {other}, which retentiond cannot read; cast it in the query",
                column.name()
            ),
        };
        values.push(value);
    }
    Ok(Row(values, columns.clone()))
}

pub async fn execute<'e, E: sqlx::Executor<'e, Database = MySql>>(ex: E, q: &Query) -> Result<u64> {
    let (sql, order) = positional(&q.sql);
    Ok(bind_all(&sql, q, &order).execute(ex).await?.rows_affected())
}

pub async fn fetch_all<'e, E: sqlx::Executor<'e, Database = MySql>>(
    ex: E,
    q: &Query,
) -> Result<Vec<Row>> {
    let (sql, order) = positional(&q.sql);
    decode_all(&bind_all(&sql, q, &order).fetch_all(ex).await?)
}

/// Runs an `INSERT` of one row and returns its `AUTO_INCREMENT` key.
pub async fn insert_returning_id<'e, E: sqlx::Executor<'e, Database = MySql>>(
    ex: E,
    q: &Query,
) -> Result<i64> {
    let (sql, order) = positional(&q.sql);
    let done = bind_all(&sql, q, &order).execute(ex).await?;
    Ok(i64::try_from(done.last_insert_id())?)
}

/// The server-wide name of the named lock `name` in this database: lock names are global to a
/// server, so the database is part of the name (hashed to stay within 64 characters).
const LOCK_NAME: &str = "CONCAT('retentiond:', SHA1(CONCAT(DATABASE(), ':', ?)))";

/// Tries for `wait_seconds` the named lock `name` on a connection of its own; the connection
/// (and with it the lock) is returned to the caller, or to the pool if the lock is held
/// elsewhere.
pub async fn try_named_lock(
    pool: &MySqlPool,
    name: &str,
    wait_seconds: u32,
) -> Result<Option<PoolConnection<MySql>>> {
    let mut conn = pool.acquire().await?;
    let sql = format!("SELECT GET_LOCK({LOCK_NAME}, ?)");
    let locked: Option<i64> = sqlx::query_scalar(&sql)
        .bind(name)
        .bind(wait_seconds)
        .fetch_one(&mut *conn)
        .await?;
    Ok((locked == Some(1)).then_some(conn))
}

pub async fn release_named_lock(mut conn: PoolConnection<MySql>, name: &str) -> Result<()> {
    let sql = format!("SELECT RELEASE_LOCK({LOCK_NAME})");
    sqlx::query(&sql).bind(name).execute(&mut *conn).await?;
    Ok(())
}

/// What would make retentiond unsafe here, each in one line: a table without transactions (a
/// crash mid-batch would leave customers half erased), and a privilege the service needs.
pub async fn unfit(pool: &MySqlPool, tables: &[&Ident]) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    // Every table's engine in one statement (the run's checks read them once per run).
    let mut q = Query::default();
    let names: Vec<String> = tables.iter().map(|t| q.param(t.name())).collect();
    if !names.is_empty() {
        q.push(&format!(
            "SELECT CAST(table_name AS CHAR), CAST(engine AS CHAR) FROM information_schema.tables \
             WHERE table_schema = DATABASE() AND table_name IN ({})",
            names.join(", ")
        ));
        let engines = fetch_all(pool, &q).await?;
        for table in tables {
            let engine = engines
                .iter()
                .find(|r| {
                    r.text(0)
                        .is_ok_and(|n| n.eq_ignore_ascii_case(table.name()))
                })
                .and_then(|r| r.opt_text(1).ok().flatten());
            if let Some(engine) = engine.filter(|e| !e.eq_ignore_ascii_case("InnoDB")) {
                problems.push(format!(
                    "table {table} uses the {engine} engine, which has no transactions: a crash could leave customers half erased; convert it (ALTER TABLE {table} ENGINE = InnoDB)"
                ));
            }
        }
    }
    let grants: Vec<String> = sqlx::query_scalar("SHOW GRANTS FOR CURRENT_USER()")
        .fetch_all(pool)
        .await?;
    let database: String = sqlx::query_scalar("SELECT DATABASE()")
        .fetch_one(pool)
        .await?;
    let missing = missing_privileges(&grants, &database);
    if !missing.is_empty() {
        problems.push(format!(
            "the database user lacks the privilege{} {} on {database}",
            if missing.len() > 1 { "s" } else { "" },
            missing.join(", ")
        ));
    }
    Ok(problems)
}

/// InnoDB's buffer pool (`innodb_buffer_pool_size`) and what `tables` and their indexes take
/// (InnoDB's own estimate), in bytes.
pub async fn buffer_pool_and_tables(pool: &MySqlPool, tables: &[&Ident]) -> Result<(u64, u64)> {
    let mut q = Query::default();
    let names: Vec<String> = tables.iter().map(|t| q.param(t.name())).collect();
    q.push(&format!(
        "SELECT CAST(@@innodb_buffer_pool_size AS SIGNED), \
         CAST(COALESCE(SUM(data_length + index_length), 0) AS SIGNED) FROM information_schema.tables \
         WHERE table_schema = DATABASE() AND table_name IN ({})",
        if names.is_empty() { "NULL".to_string() } else { names.join(", ") }
    ));
    let row = fetch_all(pool, &q)
        .await?
        .into_iter()
        .next()
        .context("no answer to the buffer pool's size")?;
    Ok((row.i64(0)?.max(0) as u64, row.i64(1)?.max(0) as u64))
}

/// The privileges retentiond needs on `database` that none of `grants` (as `SHOW GRANTS`
/// prints them) gives.
fn missing_privileges(grants: &[String], database: &str) -> Vec<&'static str> {
    const NEEDED: [&str; 6] = ["SELECT", "INSERT", "UPDATE", "DELETE", "CREATE", "INDEX"];
    // Names are quoted with backquotes, or with double quotes under ANSI_QUOTES.
    let applies = |g: &str| {
        let on = g.split(" ON ").nth(1).unwrap_or("");
        let scope = on
            .split(" TO ")
            .next()
            .unwrap_or("")
            .trim()
            .replace(['`', '"'], "");
        scope == "*.*" || scope == format!("{database}.*")
    };
    let granted: Vec<String> = grants
        .iter()
        .filter(|g| applies(g))
        .map(|g| g.to_ascii_uppercase())
        .collect();
    NEEDED
        .into_iter()
        .filter(|p| {
            !granted.iter().any(|g| {
                let privileges = g.split(" ON ").next().unwrap_or("");
                privileges.contains("ALL PRIVILEGES")
                    || privileges
                        .trim_start_matches("GRANT ")
                        .split(',')
                        .any(|x| x.trim() == *p)
            })
        })
        .collect()
}

// The dialect: MySQL's spelling of what differs between backends (see `Backend`).

/// One placeholder per id: MySQL (and MariaDB before 11.1) runs an `UPDATE` or `DELETE` whose
/// `IN` holds a subquery as a scan of the whole table, but an `IN` list as index lookups. Lists
/// beyond the placeholder limit fall back to a `JSON_TABLE` subquery (correct, but scanning).
pub fn in_ids(q: &mut Query, ids: &[i64]) -> String {
    const MOST_PLACEHOLDERS: usize = 60_000;
    if ids.is_empty() {
        return " IN (NULL)".to_string();
    }
    if ids.len() > MOST_PLACEHOLDERS {
        let p = q.param(Value::IntList(ids.to_vec()));
        return format!(
            " IN (SELECT j.id FROM JSON_TABLE({p}, '$[*]' COLUMNS (id BIGINT PATH '$')) AS j)"
        );
    }
    let list: Vec<String> = ids.iter().map(|id| q.param(Value::Int(*id))).collect();
    format!(" IN ({})", list.join(", "))
}

pub fn ids_source(p: &str) -> String {
    format!("JSON_TABLE({p}, '$[*]' COLUMNS (id BIGINT PATH '$')) AS ids")
}

pub fn year_of(column: &str) -> String {
    format!("YEAR({column})")
}

pub fn year_only(column: &str) -> String {
    format!("MAKEDATE(YEAR({column}), 1)")
}

pub const TABLE_EXISTS: &str = "SELECT COUNT(*) FROM information_schema.tables \
     WHERE table_schema = DATABASE() AND table_name = $1";

/// name, declared type, NOT NULL, has a default, part of the primary key.
pub const COLUMNS: &str =
    "SELECT CAST(column_name AS CHAR), CAST(column_type AS CHAR), is_nullable = 'NO', \
     column_default IS NOT NULL OR extra LIKE '%auto_increment%', column_key = 'PRI' \
     FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name = $1 \
     ORDER BY ordinal_position";

/// [`COLUMNS`] of several tables at once, each row led by its table's name; `names` are the
/// placeholders of the tables' names.
pub fn columns_of_tables(names: &[String]) -> String {
    format!(
        "SELECT CAST(table_name AS CHAR), CAST(column_name AS CHAR), CAST(column_type AS CHAR), \
         is_nullable = 'NO', column_default IS NOT NULL OR extra LIKE '%auto_increment%', \
         column_key = 'PRI' FROM information_schema.columns \
         WHERE table_schema = DATABASE() AND table_name IN ({}) \
         ORDER BY table_name, ordinal_position",
        names.join(", ")
    )
}

pub const FOREIGN_KEYS_TO: &str = "SELECT CAST(table_name AS CHAR), CAST(column_name AS CHAR) \
     FROM information_schema.key_column_usage \
     WHERE table_schema = DATABASE() AND referenced_table_schema = DATABASE() \
     AND referenced_table_name = $1 ORDER BY 1, 2";

pub const INDEX_LEADING_COLUMNS: &str =
    "SELECT CAST(column_name AS CHAR) FROM information_schema.statistics \
     WHERE table_schema = DATABASE() AND table_name = $1 AND seq_in_index = 1";

/// MySQL column types as `information_schema.columns.column_type` spells them
/// (`bigint(20) unsigned`, `varchar(255)`, `tinyint(1)`, `datetime(6)`...).
pub fn classify(t: &str) -> TypeKind {
    let integer = t.contains("int") && !t.contains("point");
    TypeKind {
        temporal: t.starts_with("datetime") || t.starts_with("timestamp") || t == "date",
        textual: t.contains("char") || t.contains("text"),
        integer,
        flag: integer || t.starts_with("bool") || t.starts_with("bit(1)"),
        time_as_text: false,
    }
}

/// The keyed hash of `column` (HMAC-SHA-256 as lowercase hex, see
/// `policy::hmac_padded_keys`) with MySQL's own `SHA2`, the padded keys bound as hex text; the
/// value is hashed as its UTF-8 bytes whatever the column's character set, as in Rust; NULL
/// stays NULL.
pub fn keyed_hash(inner: &str, outer: &str, column: &str) -> String {
    format!(
        "LOWER(SHA2(CONCAT(UNHEX({outer}), UNHEX(SHA2(CONCAT(UNHEX({inner}), \
         CONVERT(CAST({column} AS CHAR) USING utf8mb4)), 256))), 256))"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_positional_outside_quotes() {
        let (sql, order) =
            positional("SELECT '$1', \"a$2\" FROM t WHERE a = $2 AND b = $1 OR c = $2");
        assert_eq!(
            sql,
            "SELECT '$1', \"a$2\" FROM t WHERE a = ? AND b = ? OR c = ?"
        );
        assert_eq!(order, vec![1, 0, 1]);
        let (sql, order) =
            positional("SELECT * FROM JSON_TABLE($12, '$[*]' COLUMNS (id BIGINT PATH '$'))");
        assert_eq!(
            sql,
            "SELECT * FROM JSON_TABLE(?, '$[*]' COLUMNS (id BIGINT PATH '$'))"
        );
        assert_eq!(order, vec![11]);
    }

    #[test]
    fn old_servers_are_named() {
        assert!(check_version("10.11.19-MariaDB-0+deb12u1").is_ok());
        assert!(check_version("8.0.36").is_ok());
        let e = check_version("10.4.32-MariaDB").unwrap_err().to_string();
        assert!(
            e.contains("MariaDB 10.4.32-MariaDB") && e.contains("10.6 or later"),
            "{e}"
        );
        let e = check_version("5.7.44-log").unwrap_err().to_string();
        assert!(
            e.contains("MySQL 5.7.44") && e.contains("8.0 or later"),
            "{e}"
        );
    }

    #[test]
    fn privileges_are_read_from_grants() {
        let all = vec!["GRANT ALL PRIVILEGES ON *.* TO `root`@`localhost`".to_string()];
        assert!(missing_privileges(&all, "shop").is_empty());
        let ansi = vec!["GRANT ALL PRIVILEGES ON \"shop\".* TO \"svc\"@\"%\"".to_string()];
        assert!(missing_privileges(&ansi, "shop").is_empty());
        assert_eq!(missing_privileges(&ansi, "shopping").len(), 6);
        let some = vec![
            "GRANT USAGE ON *.* TO `svc`@`%`".to_string(),
            "GRANT SELECT, INSERT, UPDATE ON `shop`.* TO `svc`@`%`".to_string(),
        ];
        assert_eq!(
            missing_privileges(&some, "shop"),
            vec!["DELETE", "CREATE", "INDEX"]
        );
        assert_eq!(missing_privileges(&some, "other").len(), 6);
    }
}
