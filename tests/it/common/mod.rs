//! Shared test harness: a fresh database per test (a temp SQLite file, or a fresh PostgreSQL
//! schema under RETENTIOND_TEST_POSTGRES_URL) with the reference schema, fixture builders, and
//! configurations written to real files.
#![allow(dead_code)]

pub mod smtp;

use chrono::{DateTime, NaiveDate, Utc};
use retentiond::config::{self, Config};
use retentiond::db::{scratch, Backend, Db, Query, Value};
use retentiond::{migrate, Service};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

pub const HASH_KEY: &str = "test-hash-key-0123456789-abcdefghij";

pub struct TestDb {
    pub db: Db,
    pub url: String,
    pub dir: tempfile::TempDir,
    /// The PostgreSQL schema, or the MySQL database, of this test (None on SQLite).
    pub schema: Option<String>,
    next_customer: AtomicU32,
}

/// Parses `YYYY-MM-DD HH:MM:SS` as UTC.
pub fn t(s: &str) -> DateTime<Utc> {
    retentiond::db::parse_time_text(s).expect("fixture time")
}

impl TestDb {
    pub async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("customers.db").display());
        let db = Db::connect(&url).await.unwrap();
        db.execute_script(retentiond::reference::sql(Backend::Sqlite))
            .await
            .unwrap();
        TestDb {
            db,
            url,
            dir,
            schema: None,
            next_customer: AtomicU32::new(1),
        }
    }

    /// The SQLite database file (SQLite only).
    pub fn sqlite_path(&self) -> PathBuf {
        self.dir.path().join("customers.db")
    }

    /// Takes a backup as an operator would: SQLite `VACUUM INTO` a file; PostgreSQL `pg_dump`
    /// of the test's schema.
    pub async fn backup(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        match &self.schema {
            None => {
                let mut q = Query::new("VACUUM INTO ");
                q.bind(path.display().to_string());
                self.db.execute(&q).await.unwrap();
            }
            Some(database) if self.backend() == Backend::Mysql => {
                let out = std::process::Command::new("mysqldump")
                    .args(mysql_client_args())
                    .args(["--single-transaction", "--result-file"])
                    .arg(&path)
                    .arg(database)
                    .output()
                    .expect("mysqldump");
                assert!(
                    out.status.success(),
                    "mysqldump: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            Some(schema) => {
                let base = std::env::var("RETENTIOND_TEST_POSTGRES_URL").unwrap();
                let out = std::process::Command::new("pg_dump")
                    .args(["-Fc", "-n", schema, "-f"])
                    .arg(&path)
                    .arg(&base)
                    .output()
                    .expect("pg_dump");
                assert!(
                    out.status.success(),
                    "pg_dump: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        path
    }

    /// Restores a backup taken by [`TestDb::backup`] over this database, as an operator would
    /// (the service stopped): SQLite copies the file back; PostgreSQL drops the schema and runs
    /// `pg_restore`. Returns the database reopened.
    /// Another fresh database on the same backend, with the reference schema.
    pub async fn sibling(&self) -> TestDb {
        match self.backend() {
            Backend::Sqlite => TestDb::sqlite().await,
            Backend::Postgres => TestDb::postgres().await.expect("configured"),
            Backend::Mysql => TestDb::mysql().await.expect("configured"),
        }
    }

    pub async fn restore(self, backup: &std::path::Path) -> TestDb {
        let backend = self.backend();
        if self.schema.is_none() {
            // Nothing left in the log for a closing connection to write over the restored file.
            self.db
                .execute(&Query::new("PRAGMA wal_checkpoint(TRUNCATE)"))
                .await
                .unwrap();
        }
        self.db.close().await;
        match &self.schema {
            None => {
                let path = self.sqlite_path();
                // The last connection closes on its own thread, deleting the log when done:
                // wait for that, so it cannot touch the restored file or its new log.
                let wal = format!("{}-wal", path.display());
                for _ in 0..500 {
                    if !std::path::Path::new(&wal).exists() {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                for suffix in ["-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
                }
                // Into a new file renamed over the old: a connection of the closed pool that
                // is still finishing holds its locks on the old file, and a copy into that
                // same file left the reopened pool waiting on them (seen once under load).
                let incoming = path.with_extension("restoring");
                std::fs::copy(backup, &incoming).unwrap();
                std::fs::rename(&incoming, &path).unwrap();
            }
            Some(database) if backend == Backend::Mysql => {
                let sql = format!("DROP DATABASE {database}; CREATE DATABASE {database}; USE {database}; SOURCE {};", backup.display());
                let out = std::process::Command::new("mysql")
                    .args(mysql_client_args())
                    .args(["-e", &sql])
                    .output()
                    .expect("mysql");
                assert!(
                    out.status.success(),
                    "mysql restore: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            Some(schema) => {
                let base = std::env::var("RETENTIOND_TEST_POSTGRES_URL").unwrap();
                let admin = Db::connect(&base).await.unwrap();
                admin
                    .execute(&Query::new(&format!("DROP SCHEMA {schema} CASCADE")))
                    .await
                    .unwrap();
                admin.close().await;
                let out = std::process::Command::new("pg_restore")
                    .arg("-d")
                    .arg(&base)
                    .arg(backup)
                    .output()
                    .expect("pg_restore");
                assert!(
                    out.status.success(),
                    "pg_restore: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        // A SQLite connection of the closed pool may still be finishing on its own thread.
        let mut attempt = 0;
        let db = loop {
            match Db::connect(&self.url).await {
                Ok(db) => break db,
                Err(e) if attempt < 100 => {
                    eprintln!("reopening after restore: {e:#}");
                    attempt += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e) => panic!("cannot reopen the restored database: {e:#}"),
            }
        };
        TestDb {
            db,
            url: self.url,
            dir: self.dir,
            schema: self.schema,
            next_customer: AtomicU32::new(self.next_customer.load(Ordering::SeqCst)),
        }
    }

    /// A fresh schema in the PostgreSQL server named by RETENTIOND_TEST_POSTGRES_URL, or `None`
    /// when the variable is unset (CI always sets it, so there an unreachable server fails).
    pub async fn postgres() -> Option<TestDb> {
        TestDb::on_server(Backend::Postgres).await
    }

    /// A fresh database in the MySQL or MariaDB server named by RETENTIOND_TEST_MYSQL_URL, or
    /// `None` when the variable is unset (CI always sets it, so there an unreachable server fails).
    pub async fn mysql() -> Option<TestDb> {
        TestDb::on_server(Backend::Mysql).await
    }

    /// A fresh schema or database with the reference schema on the test server of `backend`
    /// (`retentiond::db::scratch`, as the benchmark makes its own).
    async fn on_server(backend: Backend) -> Option<TestDb> {
        let variable = scratch::server_variable(backend).expect("a server backend");
        let Ok(base) = std::env::var(variable) else {
            // In CI a backend that cannot be reached is a failure, never a silent skip.
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must set {variable} (.ci/run does)"
            );
            eprintln!("{variable} is not set: {} variant not run", backend.name());
            return None;
        };
        let name = format!("t_{}_{}", std::process::id(), rand_suffix());
        let url = scratch::create(backend, &base, &name)
            .await
            .unwrap_or_else(|e| panic!("{variable} must reach {}: {e:#}", backend.name()));
        let db = Db::connect(&url).await.unwrap();
        db.execute_script(retentiond::reference::sql(backend))
            .await
            .unwrap();
        Some(TestDb {
            db,
            url,
            dir: tempfile::tempdir().unwrap(),
            schema: Some(name),
            next_customer: AtomicU32::new(1),
        })
    }

    /// A second, fresh database of the same backend (for comparing with a clean run).
    pub async fn another(&self) -> TestDb {
        match self.backend() {
            Backend::Sqlite => TestDb::sqlite().await,
            Backend::Postgres => TestDb::postgres().await.expect("postgres configured"),
            Backend::Mysql => TestDb::mysql().await.expect("mysql configured"),
        }
    }

    /// Every row of `table` as text, ordered by `order_by`: for comparing two databases.
    pub async fn dump(
        &self,
        table: &str,
        columns: &str,
        order_by: &str,
    ) -> Vec<Vec<Option<String>>> {
        let rows = self
            .db
            .fetch_all(&Query::new(&format!(
                "SELECT {columns} FROM {table} ORDER BY {order_by}"
            )))
            .await
            .unwrap();
        rows.iter()
            .map(|r| r.0.iter().map(normalise).collect())
            .collect()
    }

    pub fn backend(&self) -> Backend {
        self.db.backend()
    }

    pub async fn migrate(&self) {
        migrate::run(&self.db, Utc::now()).await.unwrap();
    }

    /// A customer of `venue` created at `created_at`, with every personal field filled in.
    pub async fn customer(&self, venue: i64, created_at: &str) -> i64 {
        let n = self.next_customer.fetch_add(1, Ordering::SeqCst);
        self.customer_with(venue, created_at, n, false).await
    }

    pub async fn customer_with(
        &self,
        venue: i64,
        created_at: &str,
        n: u32,
        legal_hold: bool,
    ) -> i64 {
        let mut q = Query::new(
            "INSERT INTO customers (venue_id, title, first_name, last_name, email, phone, address_line1, address_line2, \
             city, postcode, country, date_of_birth, marketing_opt_in, legal_hold, created_at) VALUES (",
        );
        let values: Vec<Value> = vec![
            venue.into(),
            "Ms".into(),
            format!("Ann{n}").into(),
            format!("Smith{n}").into(),
            format!("ann{n}@example.org").into(),
            format!("07700 900{n:03}").into(),
            format!("{n} High Street").into(),
            "Flat 2".into(),
            "London".into(),
            "SW1A 1AA".into(),
            "GB".into(),
            Value::Date(NaiveDate::from_ymd_opt(1980, 5, 17).unwrap()),
            flag(self.backend(), true),
            flag(self.backend(), legal_hold),
            t(created_at).into(),
        ];
        for (i, v) in values.into_iter().enumerate() {
            if i > 0 {
                q.push(", ");
            }
            q.bind(v);
        }
        q.push(") RETURNING id");
        self.db.fetch_one(&q).await.unwrap().i64(0).unwrap()
    }

    /// An order of `customer`, with the buyer's email copied onto it and a billing and a
    /// shipping address copied from the customer (as shop systems keep them).
    pub async fn order(&self, customer: i64, placed_at: &str) -> i64 {
        let mut q = Query::new("INSERT INTO orders (venue_id, customer_id, placed_at, total_pence, billing_email) SELECT venue_id, id, ");
        q.bind(t(placed_at))
            .push(", 2500, email FROM customers WHERE id = ")
            .bind(customer)
            .push(" RETURNING id");
        let order = self.db.fetch_one(&q).await.unwrap().i64(0).unwrap();
        for kind in ["billing", "shipping"] {
            let mut q = Query::new("INSERT INTO order_addresses (order_id, address_type, first_name, last_name, address_1, city, postcode, email, phone) \
                SELECT ");
            q.bind(order)
                .push(", ")
                .bind(kind)
                .push(", first_name, last_name, address_line1, city, postcode, email, phone FROM customers WHERE id = ")
                .bind(customer);
            assert_eq!(self.db.execute(&q).await.unwrap(), 1);
        }
        order
    }

    pub async fn note(&self, customer: i64) {
        let mut q = Query::new("INSERT INTO customer_notes (customer_id, body) VALUES (");
        q.bind(customer).push(", 'prefers aisle seats')");
        self.db.execute(&q).await.unwrap();
    }

    /// A note of free text about `customer`, such as staff write.
    pub async fn note_text(&self, customer: i64, body: &str) {
        let mut q = Query::new("INSERT INTO customer_notes (customer_id, body) VALUES (");
        q.bind(customer).push(", ").bind(body).push(")");
        self.db.execute(&q).await.unwrap();
    }

    pub async fn set_legal_hold(&self, customer: i64) {
        let mut q = Query::new("UPDATE customers SET legal_hold = ");
        q.bind(flag(self.backend(), true))
            .push(" WHERE id = ")
            .bind(customer);
        self.db.execute(&q).await.unwrap();
    }

    pub async fn count(&self, sql: &str) -> i64 {
        self.db
            .fetch_one(&Query::new(sql))
            .await
            .unwrap()
            .i64(0)
            .unwrap()
    }

    /// Every column of a customer, as text, by column name; `None` when it does not exist.
    pub async fn customer_row(&self, id: i64) -> Option<BTreeMap<String, Option<String>>> {
        let cols = [
            "venue_id",
            "title",
            "first_name",
            "last_name",
            "email",
            "phone",
            "address_line1",
            "address_line2",
            "city",
            "postcode",
            "country",
            "date_of_birth",
            "marketing_opt_in",
            "legal_hold",
            "created_at",
        ];
        let mut q = Query::new(&format!(
            "SELECT {} FROM customers WHERE id = ",
            cols.join(", ")
        ));
        q.bind(id);
        let row = self.db.fetch_optional(&q).await.unwrap()?;
        Some(
            cols.iter()
                .enumerate()
                .map(|(i, c)| (c.to_string(), normalise(row.get(i))))
                .collect(),
        )
    }

    /// Writes a configuration file for this database and loads it.
    pub fn config(&self, venues_toml: &str) -> Config {
        self.config_with_env(venues_toml, &[])
    }

    /// As [`TestDb::config`], with `RETENTIOND__...` overrides.
    pub fn config_with_env(&self, venues_toml: &str, env: &[(&str, String)]) -> Config {
        let path = self.write_config(venues_toml);
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        config::load_with_env(&path, env).expect("test configuration is valid")
    }

    pub fn write_config(&self, venues_toml: &str) -> PathBuf {
        let path = self
            .dir
            .path()
            .join(format!("retentiond-{}.toml", rand_suffix()));
        std::fs::write(&path, config_toml(&self.url, venues_toml)).unwrap();
        path
    }

    pub async fn service(&self, venues_toml: &str) -> Service {
        Service::new(self.db.clone(), self.config(venues_toml))
    }
}

/// The cycle time of the library-level tests, and the day after (when an approved report is applied).
pub const AT: &str = "2026-06-15 12:00:00";
pub const NEXT_DAY: &str = "2026-06-16 12:00:00";

/// One cycle of `venue_id` at `at` (`YYYY-MM-DD HH:MM:SS` UTC), which must not fail.
pub async fn cycle(svc: &Service, venue_id: i64, at: &str) -> retentiond::cycle::VenueCycle {
    let venue = svc.config.venue(venue_id).unwrap().clone();
    retentiond::cycle::run_venue_cycle(svc, &venue, t(at), false)
        .await
        .unwrap()
}

/// Runs a cycle at [`AT`] that must create a report, approves it as an operator, and returns
/// its id.
pub async fn approved_report(svc: &Service, venue_id: i64) -> i64 {
    let selection = cycle(svc, venue_id, AT).await.selection;
    let Some(retentiond::cycle::Selection::Created { report_id, .. }) = selection else {
        panic!("expected a new report, got {selection:?}")
    };
    crate::common::operator_approves(&svc.db, report_id, t(AT)).await;
    report_id
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until a daemon on `port` answers `/healthz` with 200 (at most 20 s).
pub async fn wait_healthy(port: u16) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
        .await
        .map(|r| r.status() != 200)
        .unwrap_or(true)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon never came up"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Runs the `retentiond` binary with `--config config` and `args` (warnings and errors logged).
pub fn retentiond(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_retentiond"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("RETENTIOND_CONFIG")
        .output()
        .expect("run retentiond")
}

/// Standard output and standard error of a finished command, as one text.
pub fn output_text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

impl TestDb {
    /// A configuration file (as [`TestDb::write_config`]) whose mail is written as files to
    /// `outbox/` in the test's folder, so no SMTP server is needed.
    pub fn write_config_with_file_mail(&self, venues_toml: &str) -> PathBuf {
        let path = self.write_config(venues_toml);
        let text = std::fs::read_to_string(&path).unwrap().replacen(
            "[mail]\n",
            &format!(
                "[mail]\ntransport = \"file\"\ndir = \"{}\"\n",
                self.dir.path().join("outbox").display()
            ),
            1,
        );
        std::fs::write(&path, text).unwrap();
        path
    }
}

/// Booleans are 0/1 integers in the SQLite reference schema and BOOLEAN elsewhere.
pub fn flag(backend: Backend, on: bool) -> Value {
    match backend {
        Backend::Sqlite => Value::Int(on as i64),
        Backend::Postgres | Backend::Mysql => Value::Bool(on),
    }
}

/// A row source `s` of 1 to `count` (see `retentiond::reference::series`).
pub fn series(count: u32) -> String {
    retentiond::reference::series(u64::from(count))
}

/// The URL of database `database` on the server of RETENTIOND_TEST_MYSQL_URL.
pub fn mysql_url(database: &str) -> String {
    let base = std::env::var("RETENTIOND_TEST_MYSQL_URL").expect("RETENTIOND_TEST_MYSQL_URL");
    scratch::url_of(Backend::Mysql, &base, database)
}

impl TestDb {
    /// A URL of this test's database for a process named `name`, through `host_port` (the
    /// server's own address when `None`), so that the test can find its sessions: on PostgreSQL
    /// by `application_name`, on MySQL by a user of that name created for this database (MySQL
    /// sessions carry no application name). [`TestDb::sessions_of`] finds them.
    pub async fn url_for_process(
        &self,
        name: &str,
        host_port: Option<std::net::SocketAddr>,
    ) -> String {
        match self.backend() {
            Backend::Postgres => {
                let url = match host_port {
                    Some(addr) => {
                        let (scheme_user, rest) = self.url.split_once('@').unwrap();
                        let path = &rest[rest.find('/').unwrap()..];
                        format!("{scheme_user}@{addr}{path}")
                    }
                    None => self.url.clone(),
                };
                format!("{url}&application_name={name}")
            }
            Backend::Mysql => {
                let database = self.schema.as_deref().unwrap();
                let user = self.process_user(name);
                for sql in [
                    format!("CREATE USER IF NOT EXISTS '{user}'@'%'"),
                    format!("GRANT ALL PRIVILEGES ON {database}.* TO '{user}'@'%'"),
                ] {
                    self.db.execute(&Query::new(&sql)).await.unwrap();
                }
                let server = host_port.map_or_else(
                    || {
                        let args = mysql_client_args();
                        let host = args
                            .iter()
                            .find_map(|a| a.strip_prefix("--host="))
                            .unwrap()
                            .to_string();
                        let port = args
                            .iter()
                            .find_map(|a| a.strip_prefix("--port="))
                            .unwrap()
                            .to_string();
                        format!("{host}:{port}")
                    },
                    |a| a.to_string(),
                );
                format!("mysql://{user}@{server}/{database}")
            }
            Backend::Sqlite => panic!("SQLite has no sessions"),
        }
    }

    fn process_user(&self, name: &str) -> String {
        let database = self.schema.as_deref().unwrap();
        let mut user = format!("{name}_{}", database.trim_start_matches("t_"));
        user.truncate(32);
        user
    }

    /// The server-side session ids of the process named `name` (see [`TestDb::url_for_process`]).
    pub async fn sessions_of(&self, name: &str) -> Vec<i64> {
        let mut q = Query::new(match self.backend() {
            Backend::Postgres => "SELECT pid FROM pg_stat_activity WHERE application_name = ",
            _ => "SELECT id FROM information_schema.processlist WHERE user = ",
        });
        q.bind(match self.backend() {
            Backend::Postgres => name.to_string(),
            _ => self.process_user(name),
        });
        self.db
            .fetch_all(&q)
            .await
            .unwrap()
            .iter()
            .map(|r| r.i64(0).unwrap())
            .collect()
    }

    /// Ends the server sessions of the process named `name`, as a server restart or an
    /// administrator would: `pg_terminate_backend`, MySQL `KILL`.
    pub async fn kill_sessions_of(&self, name: &str) {
        for id in self.sessions_of(name).await {
            let sql = match self.backend() {
                Backend::Postgres => format!("SELECT pg_terminate_backend({id})"),
                _ => format!("KILL {id}"),
            };
            // A session may end by itself meanwhile.
            let _ = self.db.execute(&Query::new(&sql)).await;
        }
    }

    /// The name of the process (see [`TestDb::url_for_process`]) holding the lock of
    /// `venue_id`'s cycle, if one of `names` does.
    pub async fn venue_lock_holder(&self, venue_id: i64, names: &[&str]) -> Option<String> {
        let q = match self.backend() {
            Backend::Postgres => Query::new("SELECT a.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted"),
            _ => Query::new(&format!(
                "SELECT IS_USED_LOCK(CONCAT('retentiond:', SHA1(CONCAT(DATABASE(), ':venue:{venue_id}'))))"
            )),
        };
        let holders: Vec<i64> = self
            .db
            .fetch_all(&q)
            .await
            .unwrap()
            .iter()
            .filter_map(|r| r.opt_i64(0).unwrap())
            .collect();
        for name in names {
            if self
                .sessions_of(name)
                .await
                .iter()
                .any(|s| holders.contains(s))
            {
                return Some(name.to_string());
            }
        }
        None
    }
}

/// `mysql`/`mysqldump` arguments reaching the server of RETENTIOND_TEST_MYSQL_URL.
pub fn mysql_client_args() -> Vec<String> {
    let base = std::env::var("RETENTIOND_TEST_MYSQL_URL").expect("RETENTIOND_TEST_MYSQL_URL");
    let rest = base.split_once("://").map_or(base.as_str(), |(_, r)| r);
    let rest = rest.split(['/', '?']).next().unwrap_or("");
    let (user, host) = rest.rsplit_once('@').unwrap_or(("root", rest));
    let (user, password) = user.split_once(':').unwrap_or((user, ""));
    let (host, port) = host.split_once(':').unwrap_or((host, "3306"));
    let mut args = vec![
        format!("--user={user}"),
        format!("--host={host}"),
        format!("--port={port}"),
    ];
    if !password.is_empty() {
        args.push(format!("--password={password}"));
    }
    args
}

/// Makes values comparable across backends (booleans as 0/1, times as `datetime()` text).
fn normalise(v: &Value) -> Option<String> {
    match v {
        Value::Bool(b) => Some((*b as i64).to_string()),
        other => other.to_text(),
    }
}

pub fn rand_suffix() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    format!("{:x}", h.finish())
}

/// The configuration used by the tests: the reference schema, plus the given venues.
pub fn config_toml(url: &str, venues_toml: &str) -> String {
    let schema_toml = retentiond::reference::SCHEMA_TOML;
    format!(
        r#"
[database]
url = "{url}"
[mail]
from = "Data Retention <retention@example.org>"
[secrets]
hash_key = "{HASH_KEY}"
{schema_toml}{venues_toml}
"#
    )
}

/// An anonymise venue classifying every reference column.
pub fn anonymise_venue(id: i64, inactive_for: &str, extra: &str) -> String {
    format!(
        r#"
[[venues]]
id = {id}
name = "Anonymise Venue {id}"
approvers = ["boxoffice@venue{id}.example"]
inactive_for = "{inactive_for}"
action = "anonymise"
max_share = 1.0
timezone = "Europe/London"
{extra}
[venues.anonymise]
title = "redact"
first_name = "null"
last_name = "redact:gone"
email = "hash"
phone = "null"
address_line1 = "null"
address_line2 = "null"
city = "keep"
postcode = "prefix:4"
country = "keep"
date_of_birth = "year"
marketing_opt_in = "keep"
balance_pence = "keep"
"#
    )
}

pub fn delete_venue(id: i64, inactive_for: &str, extra: &str) -> String {
    format!(
        r#"
[[venues]]
id = {id}
name = "Delete Venue {id}"
approvers = ["boxoffice@venue{id}.example"]
inactive_for = "{inactive_for}"
action = "delete"
max_share = 1.0
timezone = "Europe/London"
{extra}
"#
    )
}

/// One module of tests named `$module`, each running its async test body on the database
/// `$open` gives (`None` when the backend is not configured; CI configures every one).
#[macro_export]
macro_rules! on_backend {
    ($module:ident, $open:expr, $($name:ident),*) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db: Option<$crate::common::TestDb> = $open;
                    if let Some(db) = db {
                        super::$name(db).await
                    }
                }
            )*
        }
    };
}

/// Runs the same async test body on SQLite and (when configured) PostgreSQL and MySQL/MariaDB.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        $crate::on_backend!(sqlite, Some($crate::common::TestDb::sqlite().await), $($name),*);
        $crate::on_server_backends!($($name),*);
    };
}

/// Runs the same async test body on the server backends, PostgreSQL and MySQL/MariaDB (when
/// configured): for what only a server has (sessions, connections to kill, several instances).
#[macro_export]
macro_rules! on_server_backends {
    ($($name:ident),* $(,)?) => {
        $crate::on_backend!(postgres, $crate::common::TestDb::postgres().await, $($name),*);
        $crate::on_mysql!($($name),*);
    };
}

/// Runs async test bodies on MySQL/MariaDB only (when configured): for what only it has.
#[macro_export]
macro_rules! on_mysql {
    ($($name:ident),* $(,)?) => {
        $crate::on_backend!(mysql, $crate::common::TestDb::mysql().await, $($name),*);
    };
}

/// An operator approves report `id` on the venue's behalf (`reports approve`), through the one
/// decision path.
pub async fn operator_approves(db: &Db, id: i64, at: DateTime<Utc>) {
    use retentiond::decision::{decide, Actor, Decision};
    decide(
        db,
        id,
        Actor::Operator("tester"),
        Decision::Approve { confirm: None },
        at,
    )
    .await
    .unwrap()
    .unwrap();
}

/// Sends SIGTERM to a `retentiond run` (or `demo`) and waits for it to exit, at most `limit`.
pub async fn sigterm_and_wait(
    child: &mut std::process::Child,
    limit: std::time::Duration,
) -> std::process::ExitStatus {
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let started = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(started.elapsed() < limit, "no exit after SIGTERM");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The service and its pages in this test's process, built as production builds them
/// ([`retentiond::app::App`]): a listener on port 0 whose address is `http.public_url`, the
/// configuration written for `venues` with `env` overrides, the test's database; the test
/// drives the cycles itself.
pub struct TestApp {
    pub svc: Service,
    /// `http://127.0.0.1:PORT`, where the pages answer.
    pub base: String,
}

impl TestApp {
    pub async fn spawn(db: &TestDb, venues: &str, env: &[(&str, String)]) -> TestApp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let mut env = env.to_vec();
        env.push(("RETENTIOND__HTTP__PUBLIC_URL", base.clone()));
        let svc = Service::new(db.db.clone(), db.config_with_env(venues, &env));
        tokio::spawn(
            retentiond::app::App::with_service(svc.clone(), listener)
                .serve_pages(std::future::pending()),
        );
        TestApp { svc, base }
    }
}
