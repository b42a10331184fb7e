//! The performance benchmark (issue 5): the reference schema at scale on SQLite, PostgreSQL and
//! MySQL/MariaDB, retentiond's work timed against plain set-based SQL doing the same in the same
//! run.
//!
//! `cargo bench --bench retention` runs the full size (1,000,000 customers, 10,000,000 orders,
//! 5 venues); `-- --customers N` changes it, `-- --backend sqlite|postgres|mysql` picks one, and
//! the figures go to stdout and `target/bench/results.json`. Under `cargo test` it runs a small
//! smoke size only. PostgreSQL needs RETENTIOND_TEST_POSTGRES_URL, MySQL
//! RETENTIOND_TEST_MYSQL_URL.

use chrono::{DateTime, Duration, TimeZone, Utc};
use retentiond::config::{self, Config};
use retentiond::cycle::{run_venue_cycle, Selection};
use retentiond::db::{Backend, Db, Query};
use retentiond::decision::{decide, Actor, Decision};
use retentiond::policy::{self, ReportState};
use retentiond::selection::{self, Scope};
use retentiond::{approval, reports, Service};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

#[path = "retention/activity.rs"]
mod activity;
#[path = "retention/fleet.rs"]
mod fleet;

/// The shape of the generated data.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Shape {
    /// Venue 1 holds half the customers, venues 2 to 5 an eighth each; every customer has 10
    /// orders; a tenth have a note. Half of venue 1 and a quarter of the others are idle.
    Skewed,
    /// Five venues of equal size; 0 to 20 orders a customer (10 on average); no notes. A
    /// quarter of each venue is idle, and so is every customer who never ordered.
    Even,
    /// A vendor's fleet (`fleet.rs`): many venues of `per_venue` customers, 3 orders each, a
    /// note for one in ten; a quarter of each venue idle.
    Fleet { per_venue: u64 },
}

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Shape::Skewed => "skewed",
            Shape::Even => "even",
            Shape::Fleet { .. } => "fleet",
        }
    }
}

struct Options {
    /// The sizes to run, in customers (`--customers 1000000,3000000`); with more than one, the
    /// benchmark prints how each step grows from the first size to the last.
    sizes: Vec<u64>,
    shape: Shape,
    /// The fleet sizes, in venues (`--venues 250,1000`), for `--shape fleet`.
    venues: Vec<u64>,
    backends: Vec<Backend>,
    clients: usize,
    requests_per_client: usize,
    json: PathBuf,
    smoke: bool,
    /// `--generate-only`: load the data, write the configuration, keep both and stop.
    generate_only: bool,
    /// `--selection-only`: the selection figures (with activity and holds too; a fleet: its
    /// count and dry run), then stop.
    selection_only: bool,
}

fn options() -> Options {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let smoke = !args.iter().any(|a| a == "--bench");
    let sizes = value("--customers")
        .map(|v| {
            v.split(',')
                .map(|n| {
                    n.trim().parse().unwrap_or_else(|_| {
                        panic!("--customers {v}: expected numbers separated by commas")
                    })
                })
                .collect()
        })
        .unwrap_or_else(|| vec![if smoke { 2_000 } else { 1_000_000 }]);
    let backends = match value("--backend").as_deref() {
        Some("sqlite") => vec![Backend::Sqlite],
        Some("postgres") => vec![Backend::Postgres],
        Some("mysql") => vec![Backend::Mysql],
        _ => vec![Backend::Sqlite, Backend::Postgres, Backend::Mysql],
    };
    let json = value("--json")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench/results.json"));
    let shape = match value("--shape").as_deref() {
        None | Some("skewed") => Shape::Skewed,
        Some("even") => Shape::Even,
        Some("fleet") => Shape::Fleet {
            per_venue: if smoke {
                fleet::SMOKE_PER_VENUE
            } else {
                fleet::PER_VENUE
            },
        },
        Some(other) => panic!("--shape {other}: expected skewed, even or fleet"),
    };
    let venues = value("--venues")
        .map(|v| {
            v.split(',')
                .map(|n| {
                    n.trim()
                        .parse()
                        .expect("--venues: numbers separated by commas")
                })
                .collect()
        })
        .unwrap_or_else(|| if smoke { vec![10, 40] } else { vec![250, 1000] });
    Options {
        sizes,
        shape,
        venues,
        backends,
        clients: if smoke { 5 } else { 50 },
        requests_per_client: if smoke { 10 } else { 60 },
        json,
        smoke,
        generate_only: args.iter().any(|a| a == "--generate-only"),
        selection_only: args.iter().any(|a| a == "--selection-only"),
    }
}

/// The cycle clock of the benchmark: a fixed day, so the data and the cutoff are reproducible.
fn at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 28, 2, 0, 0).unwrap()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--serve") {
        return serve_child(Path::new(&args[i + 1]), &args[i + 2]);
    }
    let options = options();
    if options.generate_only {
        // Kept for inspection and for commands run by hand against it.
        std::env::set_var("RETENTIOND_BENCH_KEEP", "1");
    }
    if std::env::var_os("RUST_LOG").is_some() {
        retentiond::logging::init(retentiond::config::LogFormat::Text);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let fleet_shape = matches!(options.shape, Shape::Fleet { .. });
    if fleet_shape || options.smoke {
        run_fleets(&rt, &options);
        if fleet_shape {
            return;
        }
    }
    let mut results = BTreeMap::new();
    for backend in &options.backends {
        if let Some(variable) = server_variable(*backend) {
            if std::env::var(variable).is_err() {
                // In CI a backend that cannot be reached is a failure, never a silent skip.
                assert!(std::env::var_os("CI").is_none(), "CI must set {variable}");
                eprintln!("{variable} is not set: {} not benchmarked", backend.name());
                continue;
            }
        }
        for &customers in &options.sizes {
            let mut figures = rt.block_on(run_backend(*backend, &options, customers));
            let misses = missed(&figures);
            figures["missed"] = json!(misses);
            eprintln!("{backend:?} figures at {customers}: {figures}");
            results.insert(result_key(*backend, customers, &options), figures);
        }
    }
    if options.generate_only {
        return;
    }
    print_table(&results, &options);
    let growth = growth(&results, &options);
    std::fs::create_dir_all(options.json.parent().unwrap()).unwrap();
    let document = json!({"customers": options.sizes, "orders_per_customer": 10, "shape": options.shape.name(), "smoke": options.smoke, "results": results, "growth": growth});
    std::fs::write(
        &options.json,
        serde_json::to_string_pretty(&document).unwrap(),
    )
    .unwrap();
    println!("figures written to {}", options.json.display());
}

/// The fleet shape on every backend and fleet size; under `cargo test`, at the smoke size.
fn run_fleets(rt: &tokio::runtime::Runtime, options: &Options) {
    let mut document = serde_json::Map::new();
    for backend in &options.backends {
        if let Some(variable) = server_variable(*backend) {
            if std::env::var(variable).is_err() {
                assert!(std::env::var_os("CI").is_none(), "CI must set {variable}");
                continue;
            }
        }
        let mut by_size = Vec::new();
        for &venues in &options.venues {
            let mut figures = rt.block_on(fleet::run_fleet(*backend, options, venues));
            figures["missed"] = json!(fleet::fleet_missed(&figures));
            eprintln!("{backend:?} fleet figures at {venues} venues: {figures}");
            by_size.push((venues, figures));
        }
        fleet::print_fleet(*backend, &by_size);
        let name = format!("{backend:?}").to_lowercase();
        for (venues, figures) in by_size {
            document.insert(format!("{name}-{venues}-venues"), figures);
        }
    }
    let path = options.json.with_file_name("fleet-results.json");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let document = json!({"shape": "fleet", "customers_per_venue": if options.smoke { fleet::SMOKE_PER_VENUE } else { fleet::PER_VENUE }, "smoke": options.smoke, "results": document});
    std::fs::write(&path, serde_json::to_string_pretty(&document).unwrap()).unwrap();
    println!("fleet figures written to {}", path.display());
}

/// The web pages of a benchmark database in a process of their own, so that its peak memory
/// can be read from /proc; it serves until its standard input closes.
fn serve_child(config_path: &Path, port: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut config = config::load(config_path).unwrap();
        config.http.bind = format!("127.0.0.1:{port}");
        let app = retentiond::app::App::build(config).await.unwrap();
        let stop = async {
            let _ = tokio::task::spawn_blocking(|| {
                std::io::Read::read(&mut std::io::stdin(), &mut [0u8; 1])
            })
            .await;
        };
        app.serve_pages(stop).await.unwrap();
    });
}

/// The variable naming the server of a server backend.
fn server_variable(backend: Backend) -> Option<&'static str> {
    match backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some("RETENTIOND_TEST_POSTGRES_URL"),
        Backend::Mysql => Some("RETENTIOND_TEST_MYSQL_URL"),
    }
}

struct Bench {
    db: Db,
    url: String,
    dir: tempfile::TempDir,
}

async fn open(backend: Backend) -> Bench {
    // RETENTIOND_BENCH_KEEP=1 keeps the SQLite database or PostgreSQL schema after the run.
    let mut dir = tempfile::tempdir().unwrap();
    if std::env::var_os("RETENTIOND_BENCH_KEEP").is_some() {
        dir.disable_cleanup(true);
        eprintln!("keeping {}", dir.path().display());
    }
    match backend {
        Backend::Mysql => {
            let base = std::env::var("RETENTIOND_TEST_MYSQL_URL").unwrap();
            let database = bench_schema();
            on_server(
                &base,
                &[
                    format!("DROP DATABASE IF EXISTS {database}"),
                    format!("CREATE DATABASE {database}"),
                ],
            )
            .await;
            let (server, query) = base
                .split_once('?')
                .map_or((base.as_str(), ""), |(s, q)| (s, q));
            let server = server.rsplit_once('/').map_or(server, |(s, _)| s);
            let url = if query.is_empty() {
                format!("{server}/{database}")
            } else {
                format!("{server}/{database}?{query}")
            };
            Bench {
                db: Db::connect(&url).await.unwrap(),
                url,
                dir,
            }
        }
        Backend::Sqlite => {
            let url = format!("sqlite://{}", dir.path().join("bench.db").display());
            Bench {
                db: Db::connect(&url).await.unwrap(),
                url,
                dir,
            }
        }
        Backend::Postgres => {
            let base = std::env::var("RETENTIOND_TEST_POSTGRES_URL").unwrap();
            let schema = bench_schema();
            on_server(
                &base,
                &[
                    format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
                    format!("CREATE SCHEMA {schema}"),
                ],
            )
            .await;
            let sep = if base.contains('?') { '&' } else { '?' };
            let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
            Bench {
                db: Db::connect(&url).await.unwrap(),
                url,
                dir,
            }
        }
    }
}

/// This run's PostgreSQL schema or MySQL database.
fn bench_schema() -> String {
    format!("bench_{}", std::process::id())
}

/// Runs `statements` on the server at `url`, outside the benchmark's schema or database.
async fn on_server(url: &str, statements: &[String]) {
    let admin = Db::connect(url).await.unwrap();
    for sql in statements {
        admin.execute(&Query::new(sql)).await.unwrap();
    }
    admin.close().await;
}

/// The reference schema filled set-based: `n` customers over 5 venues (60% at venue 1) and 10
/// orders each. Half of venue 1 and a quarter of the other venues have bought nothing for over
/// three years (about 40% of all customers); the rest ordered in the last three years.
async fn generate(bench: &Bench, n: u64, shape: Shape) {
    let schema = retentiond::reference::sql(bench.db.backend());
    let without_index: String = schema
        .lines()
        .filter(|l| !l.starts_with("CREATE INDEX"))
        .collect::<Vec<_>>()
        .join("\n");
    bench.db.execute_script(&without_index).await.unwrap();
    let fleet_venue = match shape {
        Shape::Fleet { per_venue } => fleet::venue_expression(bench.db.backend(), per_venue),
        _ => String::new(),
    };
    let (venue, idle, orders_of, recent_order, notes_every) = match shape {
        Shape::Fleet { .. } => (
            fleet_venue.as_str(),
            "((c.id * 31) % 100) < 25",
            "3",
            "k.i = 0",
            Some(10),
        ),
        Shape::Skewed => (
            "CASE n % 10 WHEN 6 THEN 2 WHEN 7 THEN 3 WHEN 8 THEN 4 WHEN 9 THEN 5 ELSE 1 END",
            "((c.id * 31) % 100) < (CASE c.venue_id WHEN 1 THEN 50 ELSE 25 END)",
            // Every customer has orders 0 to 9; the last is recent unless the customer is idle.
            "10",
            "k.i = 9",
            Some(10),
        ),
        Shape::Even => (
            "n % 5 + 1",
            "((c.id * 31) % 100) < 25",
            "((c.id * 13) % 21)",
            "k.i = 0",
            None,
        ),
    };
    let (customers, orders, notes) = match bench.db.backend() {
        Backend::Sqlite => (
            format!(
                "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {n}) \
                 INSERT INTO customers (id, venue_id, title, first_name, last_name, email, phone, address_line1, city, postcode, country, date_of_birth, created_at) \
                 SELECT n, {venue}, 'Mx', 'First' || n, 'Last' || n, 'c' || n || '@example.com', '07700 900000', n || ' High Street', 'London', 'SW1A 1AA', 'GB', '1980-01-01', \
                 datetime('2015-01-01', '+' || (n * 7919 % 2500) || ' days') FROM s"
            ),
            format!(
                "WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE i < 19) \
                 INSERT INTO orders (venue_id, customer_id, placed_at, total_pence, billing_email) \
                 SELECT c.venue_id, c.id, CASE WHEN {recent_order} AND NOT {idle} THEN datetime('2024-01-01', '+' || (c.id * 13 % 1000) || ' days') \
                 ELSE datetime(c.created_at, '+' || ((c.id + k.i * 37) % 200) || ' days') END, 1000 + k.i, c.email FROM customers c JOIN k ON k.i < {orders_of} ORDER BY c.id, k.i"
            ),
            "INSERT INTO customer_notes (customer_id, body) SELECT id, 'prefers aisle seats' FROM customers WHERE id % 10 = 3".to_string(),
        ),
        Backend::Postgres => (
            format!(
                "INSERT INTO customers (id, venue_id, title, first_name, last_name, email, phone, address_line1, city, postcode, country, date_of_birth, created_at) \
                 SELECT n, {venue}, 'Mx', 'First' || n, 'Last' || n, 'c' || n || '@example.com', '07700 900000', n || ' High Street', 'London', 'SW1A 1AA', 'GB', DATE '1980-01-01', \
                 TIMESTAMPTZ '2015-01-01 00:00:00+00' + (n * 7919 % 2500) * INTERVAL '1 day' FROM generate_series(CAST(1 AS BIGINT), {n}) AS s(n)"
            ),
            format!(
                "INSERT INTO orders (venue_id, customer_id, placed_at, total_pence, billing_email) \
                 SELECT c.venue_id, c.id, CASE WHEN {recent_order} AND NOT {idle} THEN TIMESTAMPTZ '2024-01-01 00:00:00+00' + (c.id * 13 % 1000) * INTERVAL '1 day' \
                 ELSE c.created_at + ((c.id + k.i * 37) % 200) * INTERVAL '1 day' END, 1000 + k.i, c.email FROM customers c JOIN generate_series(0, 19) AS k(i) ON k.i < {orders_of} ORDER BY c.id, k.i"
            ),
            "INSERT INTO customer_notes (customer_id, body) SELECT id, 'prefers aisle seats' FROM customers WHERE id % 10 = 3".to_string(),
        ),
        Backend::Mysql => (
            format!(
                "INSERT INTO customers (id, venue_id, title, first_name, last_name, email, phone, address_line1, city, postcode, country, date_of_birth, created_at) \
                 SELECT n, {venue}, 'Mx', 'First' || n, 'Last' || n, 'c' || n || '@example.com', '07700 900000', n || ' High Street', 'London', 'SW1A 1AA', 'GB', DATE '1980-01-01', \
                 TIMESTAMP '2015-01-01 00:00:00' + INTERVAL (n * 7919 % 2500) DAY FROM {} ORDER BY n",
                retentiond::reference::series(n)
            ),
            format!(
                "INSERT INTO orders (venue_id, customer_id, placed_at, total_pence, billing_email) \
                 SELECT c.venue_id, c.id, CASE WHEN {recent_order} AND NOT {idle} THEN TIMESTAMP '2024-01-01 00:00:00' + INTERVAL (c.id * 13 % 1000) DAY \
                 ELSE c.created_at + INTERVAL ((c.id + k.i * 37) % 200) DAY END, 1000 + k.i, c.email FROM customers c \
                 JOIN (SELECT n - 1 AS i FROM {}) k ON k.i < {orders_of} ORDER BY c.id, k.i",
                retentiond::reference::series(20)
            ),
            "INSERT INTO customer_notes (customer_id, body) SELECT id, 'prefers aisle seats' FROM customers WHERE id % 10 = 3".to_string(),
        ),
    };
    // A billing and a shipping address per order, copied from the customer, as shops keep them.
    let addresses = "INSERT INTO order_addresses (order_id, address_type, first_name, last_name, address_1, city, postcode, email, phone) \
         SELECT o.id, t.kind, c.first_name, c.last_name, c.address_line1, c.city, c.postcode, c.email, c.phone \
         FROM orders o JOIN customers c ON c.id = o.customer_id \
         CROSS JOIN (SELECT 'billing' AS kind UNION ALL SELECT 'shipping') t ORDER BY o.id, t.kind"
        .to_string();
    // The indexes operators are told to have (README, `retentiond check`): every reference
    // column, so that deletes and their foreign-key checks do not scan. MySQL's spelling
    // declares them with the tables (InnoDB needs them for the foreign keys).
    let indexes = [
        "CREATE INDEX customers_venue ON customers (venue_id)".to_string(),
        "CREATE INDEX orders_customer_placed ON orders (customer_id, placed_at)".to_string(),
        "CREATE INDEX customer_notes_customer ON customer_notes (customer_id)".to_string(),
        "CREATE INDEX order_addresses_order ON order_addresses (order_id)".to_string(),
        // The activity and hold tables (SPEC 12), filled only for their own measurement.
        "CREATE INDEX tickets_order ON tickets (order_id)".to_string(),
        "CREATE INDEX memberships_customer ON memberships (customer_id, expires_at)".to_string(),
        "CREATE INDEX gift_aid_declarations_customer ON gift_aid_declarations (customer_id, declared_at)".to_string(),
    ];
    let mut load = vec![customers];
    if bench.db.backend() == Backend::Sqlite {
        // SQLite's log holds a whole transaction: load the orders and their addresses a slice
        // of customers at a time, checkpointing between, so that 3,000,000 customers do not
        // need a log of many gigabytes. A slice's orders are the ids it added.
        const SLICE: u64 = 250_000;
        let db = &bench.db;
        let last_order = || async {
            let q = Query::new("SELECT COALESCE(MAX(id), 0) FROM orders");
            db.fetch_one(&q).await.unwrap().i64(0).unwrap()
        };
        let run = |sql: String| async move { db.execute(&Query::new(&sql)).await.unwrap() };
        run(load.remove(0)).await;
        for lo in (0..n).step_by(SLICE as usize) {
            let hi = lo + SLICE;
            let slice = |sql: &str, range: String| {
                sql.replacen(" ORDER BY", &format!(" WHERE {range} ORDER BY"), 1)
            };
            let before = last_order().await;
            run(slice(&orders, format!("c.id > {lo} AND c.id <= {hi}"))).await;
            let after = last_order().await;
            run(slice(
                &addresses,
                format!("o.id > {before} AND o.id <= {after}"),
            ))
            .await;
            db.execute_script("PRAGMA wal_checkpoint(TRUNCATE)")
                .await
                .unwrap();
        }
    } else {
        load.extend([orders, addresses]);
    }
    if let Some(every) = notes_every {
        load.push(notes.replace("id % 10 = 3", &format!("id % {every} = 3")));
    }
    if bench.db.backend() != Backend::Mysql {
        load.extend(indexes);
    }
    for sql in load {
        if bench.db.backend() == Backend::Mysql {
            // One session for the load: foreign keys are checked by construction here.
            bench
                .db
                .execute_script(&format!(
                    "SET SESSION foreign_key_checks = 0; {sql}; SET SESSION foreign_key_checks = 1"
                ))
                .await
                .unwrap();
        } else {
            bench.db.execute(&Query::new(&sql)).await.unwrap();
        }
    }
    if bench.db.backend() == Backend::Postgres {
        bench.db.execute(&Query::new("SELECT setval(pg_get_serial_sequence('customers', 'id'), (SELECT MAX(id) FROM customers))")).await.unwrap();
        for table in ["customers", "orders", "order_addresses", "customer_notes"] {
            bench
                .db
                .execute(&Query::new(&format!("VACUUM ANALYZE {table}")))
                .await
                .unwrap();
        }
        // Write the loaded data out now, so the measurements do not run under the load's
        // checkpoints.
        bench.db.execute(&Query::new("CHECKPOINT")).await.unwrap();
    } else if bench.db.backend() == Backend::Mysql {
        bench
            .db
            .execute_script("ANALYZE TABLE customers, orders, order_addresses, customer_notes")
            .await
            .unwrap();
    } else {
        bench.db.execute_script("ANALYZE").await.unwrap();
    }
}

/// Every reference customers column classified, as venue 1 (and venue 4) anonymise them.
const ANONYMISE: &str = retentiond::reference::ANONYMISE_TOML;

fn config_text(url: &str, port: u16) -> String {
    let schema_toml = retentiond::reference::SCHEMA_TOML;
    format!(
        r#"
[database]
url = "{url}"
[http]
bind = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}"
link_requests_burst = 1000000
link_requests_per_second = 1000000
[mail]
from = "Data Retention <retention@example.org>"
[apply]
vacuum = false
[secrets]
hash_key = "{BENCH_HASH_KEY}"
{schema_toml}
[[venues]]
id = 1
name = "Venue 1"
approvers = ["a@venue1.example"]
inactive_for = "3 years"
action = "anonymise"
max_share = 0.9
timezone = "Europe/London"
{ANONYMISE}
[[venues]]
id = 4
name = "Venue 4 (baseline only)"
approvers = ["a@venue4.example"]
inactive_for = "3 years"
action = "anonymise"
max_share = 0.9
timezone = "Europe/London"
{ANONYMISE}
[[venues]]
id = 2
name = "Venue 2"
approvers = ["a@venue2.example"]
inactive_for = "3 years"
action = "delete"
max_share = 0.9
timezone = "Europe/London"
"#
    )
}

fn median(mut times: Vec<f64>) -> f64 {
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    times[times.len() / 2]
}

fn proc_status_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// CPU seconds (user + system) used so far by process `pid`, from /proc (Linux).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime and stime are 14 and 15.
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU seconds used so far by the live `postgres` processes on this machine: those serving a
/// TCP connection (backends), and the rest (checkpointer, WAL writer, autovacuum).
fn postgres_cpu_seconds() -> (f64, f64) {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return (0.0, 0.0);
    };
    let (mut backends, mut background) = (0.0, 0.0);
    for pid in entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()) {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() != "postgres" {
            continue;
        }
        let title = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if title.contains("127.0.0.1(") {
            backends += cpu_seconds(pid);
        } else {
            background += cpu_seconds(pid);
        }
    }
    (backends, background)
}

struct Server {
    child: Child,
    base: String,
}

impl Server {
    async fn start(config_path: &Path, port: u16) -> Server {
        let child = Command::new(std::env::current_exe().unwrap())
            .arg("--serve")
            .arg(config_path)
            .arg(port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        while reqwest::get(format!("{base}/healthz"))
            .await
            .map(|r| !r.status().is_success())
            .unwrap_or(true)
        {
            assert!(
                started.elapsed().as_secs() < 30,
                "the page server did not start"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        Server { child, base }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

async fn link_for(svc: &Service, report_id: i64) -> String {
    let report = reports::get(&svc.db, report_id).await.unwrap().unwrap();
    let mut tx = svc.db.begin().await.unwrap();
    let approver = svc.config.venue(report.venue_id).unwrap().approvers[0].clone();
    let token = approval::mint(&mut tx, &report, &approver, Utc::now())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    token
}

/// Downloads a report's CSV through the page server; returns (rows, seconds).
async fn download_csv(server: &Server, token: &str) -> (u64, f64) {
    let started = Instant::now();
    let mut response = reqwest::get(format!("{}/r/{token}/report.csv", server.base))
        .await
        .unwrap();
    assert!(response.status().is_success());
    let mut newlines = 0_u64;
    while let Some(chunk) = response.chunk().await.unwrap() {
        newlines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
    }
    (newlines.saturating_sub(1), started.elapsed().as_secs_f64())
}

/// `clients` concurrent approvers paging through the report; latencies in milliseconds.
async fn page_load(
    server: &Server,
    token: &str,
    query: &str,
    clients: usize,
    requests: usize,
) -> (Vec<f64>, usize) {
    let http = reqwest::Client::new();
    let mut tasks = Vec::new();
    for client in 0..clients {
        let (http, base, token, query) = (
            http.clone(),
            server.base.clone(),
            token.to_string(),
            query.to_string(),
        );
        tasks.push(tokio::spawn(async move {
            let (mut latencies, mut errors) = (Vec::new(), 0);
            let mut url = format!("{base}/r/{token}{query}");
            // Start clients at different depths so the load covers the whole report.
            for i in 0..requests + client % 7 {
                let started = Instant::now();
                let response = http.get(&url).send().await;
                let body = match response {
                    Ok(r) if r.status().is_success() => r.text().await.unwrap_or_default(),
                    _ => {
                        errors += 1;
                        String::new()
                    }
                };
                if i >= client % 7 {
                    latencies.push(started.elapsed().as_secs_f64() * 1000.0);
                }
                url = match body.split("href=\"").find(|h| h.contains("?after=")) {
                    Some(href) => format!(
                        "{base}{}",
                        href.split('"').next().unwrap().replace("&amp;", "&")
                    ),
                    None => format!("{base}/r/{token}{query}"),
                };
            }
            (latencies, errors)
        }));
    }
    let (mut all, mut errors) = (Vec::new(), 0);
    for task in tasks {
        let (latencies, e) = task.await.unwrap();
        all.extend(latencies);
        errors += e;
    }
    all.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (all, errors)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn run_backend(backend: Backend, options: &Options, customers: u64) -> Value {
    let bench = open(backend).await;
    let mut figures = serde_json::Map::new();
    figures.insert("customers".into(), json!(customers));
    let started = Instant::now();
    generate(&bench, customers, options.shape).await;
    let generate_s = started.elapsed().as_secs_f64();
    figures.insert("generate_s".into(), json!(generate_s));
    eprintln!(
        "{backend:?}: generated {customers} customers and about {} orders in {generate_s:.1} s",
        customers * 10
    );
    retentiond::migrate::run(&bench.db, Utc::now())
        .await
        .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config_path = bench.dir.path().join("bench.toml");
    std::fs::write(&config_path, config_text(&bench.url, port)).unwrap();
    if options.generate_only {
        eprintln!("{backend:?}: configuration in {}", config_path.display());
        bench.db.close().await;
        return Value::Object(figures);
    }
    let config: Config = config::load(&config_path).unwrap();
    let svc = Service::new(bench.db.clone(), config);
    let v1 = svc.config.venue(1).unwrap().clone();
    let v2 = svc.config.venue(2).unwrap().clone();
    let cutoff = policy::cutoff(at(), v1.timezone, v1.inactive_for);

    // Selection: retentiond's candidate query against the bare NOT EXISTS query.
    // As the cycle selects: retentiond's own exclusion tables are all empty before the first
    // report, so it consults none of them. Later selections consult those with rows, timed
    // here with all three (`selection_all_checks_s`).
    let all_checks = Scope::new(&svc.config, svc.db.backend(), &v1, at());
    let scope = all_checks.without_empty(&svc.db).await.unwrap();
    // Bound as retentiond binds them: the venue as an integer, the cutoff as a timestamp.
    let mut bare = Query::new("SELECT COUNT(*) FROM customers c WHERE c.venue_id = ");
    bare.bind(1_i64).push(" AND c.created_at < ").bind(cutoff).push(" AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.customer_id = c.id AND o.placed_at >= ").bind(cutoff).push(")");
    // The same count excluding what retentiond's three tables exclude, written by hand: the
    // same work as the selection once those tables have rows. (On SQLite, `NOT IN` over each
    // table measured the same as `NOT EXISTS`, within 5%, with the `sqlite3` shell at 1M.)
    let mut bare_all_checks = bare.clone();
    bare_all_checks
        .push(" AND NOT EXISTS (SELECT 1 FROM retention_unknown_customers u WHERE u.customer_id = c.id)")
        .push(" AND NOT EXISTS (SELECT 1 FROM retention_anonymised a WHERE a.customer_id = c.id)")
        .push(" AND NOT EXISTS (SELECT 1 FROM retention_report_items k WHERE k.customer_id = c.id AND k.kept_at IS NOT NULL AND k.kept_at > ")
        .bind(all_checks.kept_since)
        .push(")");
    // Timed in turns (ours, bare, ours, ...), each the median of five, so that background work
    // after the data load (checkpoints) weighs on both alike.
    let (mut ours_times, mut bare_times, mut all_checks_times, mut bare_all_checks_times) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // Each on a connection of its own, opened before the clock starts: on the benchmark's
    // shared pool SQLite's bare count took 2 to 4 times as long as retentiond's count with the
    // same plan (selection ratios of 0.30 and 0.44), a slow baseline rather than a fast product.
    let url = &bench.url;
    for _ in 0..5 {
        ours_times.push(
            on_fresh_connection(url, async |db| {
                selection::count_candidates(db, &scope).await.unwrap();
            })
            .await,
        );
        bare_times.push(
            on_fresh_connection(url, async |db| {
                db.fetch_one(&bare).await.unwrap();
            })
            .await,
        );
        all_checks_times.push(
            on_fresh_connection(url, async |db| {
                selection::count_candidates(db, &all_checks).await.unwrap();
            })
            .await,
        );
        bare_all_checks_times.push(
            on_fresh_connection(url, async |db| {
                db.fetch_one(&bare_all_checks).await.unwrap();
            })
            .await,
        );
    }
    let (ours, baseline) = (median(ours_times), median(bare_times));
    let (all_checks_s, all_checks_baseline) =
        (median(all_checks_times), median(bare_all_checks_times));
    figures.insert("selection_all_checks_s".into(), json!(all_checks_s));
    figures.insert(
        "selection_all_checks_baseline_s".into(),
        json!(all_checks_baseline),
    );
    figures.insert(
        "selection_all_checks_ratio".into(),
        json!(all_checks_s / all_checks_baseline),
    );
    // What the exclusions themselves cost plain SQL (no goal: it is the work, not overhead).
    figures.insert(
        "exclusion_checks_cost_ratio".into(),
        json!(all_checks_baseline / baseline),
    );
    // Both plans, as the database shows them: the orders index must serve the NOT EXISTS.
    let mut ours_query = Query::new("SELECT COUNT(*)");
    scope.push_from_candidates(&mut ours_query);
    let ours_plan = explain(&svc.db, &ours_query).await;
    let bare_plan = explain(&svc.db, &bare).await;
    eprintln!("{backend:?} selection plan, retentiond:\n{ours_plan}\n{backend:?} selection plan, bare:\n{bare_plan}");
    let uses_index = |plan: &str| plan.contains("orders_customer_placed");
    figures.insert(
        "selection_plans_use_orders_index".into(),
        json!(i64::from(uses_index(&ours_plan) && uses_index(&bare_plan))),
    );
    figures.insert("selection_plan".into(), json!(ours_plan));
    figures.insert("selection_baseline_plan".into(), json!(bare_plan));
    figures.insert("selection_s".into(), json!(ours));
    figures.insert("selection_baseline_s".into(), json!(baseline));
    figures.insert("selection_ratio".into(), json!(ours / baseline));
    activity::measure(&bench, &config_path, cutoff, &mut figures).await;
    if options.selection_only {
        svc.db.close().await;
        bench.db.close().await;
        drop_unless_kept(backend).await;
        return Value::Object(figures);
    }

    // The dry run as an operator runs it (`retentiond cycle --venue 1 --dry-run`, a process of
    // its own: configuration, connection, checks, the brake's count and the selection) against
    // the bare count on a fresh connection; the median of five each, in turns. Its memory is
    // read from /proc while it runs: the peak resident set, and the peak of the part that is
    // not a mapped file (SQLite reads through a memory map of the database file).
    let (mut dry_times, mut fresh_times) = (Vec::new(), Vec::new());
    let (mut dry_peak_kb, mut dry_anon_kb) = (0, 0);
    for _ in 0..5 {
        let started = Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_retentiond"))
            .args([
                "--config",
                config_path.to_str().unwrap(),
                "cycle",
                "--venue",
                "1",
                "--dry-run",
                "--at",
            ])
            .arg(at().to_rfc3339())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            dry_peak_kb = dry_peak_kb.max(proc_status_kb(child.id(), "VmHWM:"));
            dry_anon_kb = dry_anon_kb.max(proc_status_kb(child.id(), "RssAnon:"));
            std::thread::sleep(std::time::Duration::from_millis(2));
        };
        dry_times.push(started.elapsed().as_secs_f64());
        let mut stderr = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
        assert!(status.success(), "dry run failed: {stderr}");
        let started = Instant::now();
        let fresh = Db::connect(&bench.url).await.unwrap();
        fresh.fetch_one(&bare).await.unwrap();
        fresh_times.push(started.elapsed().as_secs_f64());
        fresh.close().await;
    }
    figures.insert(
        "dry_run_peak_rss_mb".into(),
        json!(dry_peak_kb as f64 / 1024.0),
    );
    figures.insert(
        "dry_run_peak_anon_mb".into(),
        json!(dry_anon_kb as f64 / 1024.0),
    );
    let (dry, fresh) = (median(dry_times), median(fresh_times));
    figures.insert("dry_run_s".into(), json!(dry));
    figures.insert("dry_run_baseline_s".into(), json!(fresh));
    figures.insert("dry_run_ratio".into(), json!(dry / fresh));

    // Report creation for every candidate of venues 1 and 2.
    let started = Instant::now();
    let Some(Selection::Created {
        report_id: r1,
        customers: c1,
    }) = run_venue_cycle(&svc, &v1, at(), false)
        .await
        .unwrap()
        .selection
    else {
        panic!("no report for venue 1")
    };
    let report_s = started.elapsed().as_secs_f64();
    let Some(Selection::Created {
        report_id: r2,
        customers: c2,
    }) = run_venue_cycle(&svc, &v2, at(), false)
        .await
        .unwrap()
        .selection
    else {
        panic!("no report for venue 2")
    };
    // The first cycle of the two venues: both selected and frozen into reports.
    figures.insert(
        "first_cycle_s".into(),
        json!(started.elapsed().as_secs_f64()),
    );
    figures.insert("report_customers".into(), json!(c1));
    figures.insert("report_rows_per_s".into(), json!(c1 as f64 / report_s));
    figures.insert("delete_report_customers".into(), json!(c2));

    // CSV export and the page under load, from a separate server process.
    let server = Server::start(&config_path, port).await;
    let small_token = link_for(&svc, r2).await;
    let (small_rows, _) = download_csv(&server, &small_token).await;
    let small_peak_kb = proc_status_kb(server.child.id(), "VmHWM:");
    let token = link_for(&svc, r1).await;
    let (rows, csv_s) = download_csv(&server, &token).await;
    let peak_kb = proc_status_kb(server.child.id(), "VmHWM:");
    assert_eq!(rows, c1, "the CSV has one row per customer");
    figures.insert("csv_rows".into(), json!(rows));
    figures.insert("csv_rows_per_s".into(), json!(rows as f64 / csv_s));
    figures.insert(
        "csv_peak_rss_mb_small".into(),
        json!(small_peak_kb as f64 / 1024.0),
    );
    figures.insert("csv_rows_small".into(), json!(small_rows));
    figures.insert("csv_peak_rss_mb".into(), json!(peak_kb as f64 / 1024.0));
    // Where the CPU goes during the page load (the machine's cores are shared by all three).
    let cpu_before = (
        cpu_seconds(server.child.id()),
        cpu_seconds(std::process::id()),
        postgres_cpu_seconds(),
    );
    let load_started = Instant::now();
    let (latencies, errors) = page_load(
        &server,
        &token,
        "",
        options.clients,
        options.requests_per_client,
    )
    .await;
    let load_s = load_started.elapsed().as_secs_f64();
    let per_request_ms =
        |before: f64, after: f64| (after - before) * 1000.0 / latencies.len() as f64;
    figures.insert(
        "page_cpu_ms_per_request_server".into(),
        json!(per_request_ms(cpu_before.0, cpu_seconds(server.child.id()))),
    );
    figures.insert(
        "page_cpu_ms_per_request_client".into(),
        json!(per_request_ms(
            cpu_before.1,
            cpu_seconds(std::process::id())
        )),
    );
    if backend == Backend::Postgres {
        let (backends, background) = postgres_cpu_seconds();
        figures.insert(
            "page_cpu_ms_per_request_postgres".into(),
            json!(per_request_ms(cpu_before.2 .0, backends)),
        );
        figures.insert(
            "page_cpu_ms_per_request_postgres_background".into(),
            json!(per_request_ms(cpu_before.2 .1, background)),
        );
    }
    figures.insert(
        "page_requests_per_s".into(),
        json!(latencies.len() as f64 / load_s),
    );
    figures.insert("page_requests".into(), json!(latencies.len()));
    figures.insert("page_p50_ms".into(), json!(percentile(&latencies, 0.5)));
    figures.insert("page_p99_ms".into(), json!(percentile(&latencies, 0.99)));
    figures.insert("page_errors".into(), json!(errors));
    // The same load searching the report for a whole surname (of the report's last customer,
    // found through the report's search index), for part of a surname (about one customer in
    // ten thousand matches and none as a whole name, so each page reads windows far into the
    // report), then for an id typed from the CSV.
    let mut last =
        Query::new("SELECT MAX(customer_id) FROM retention_report_items WHERE report_id = ");
    last.bind(r1);
    let last = svc.db.fetch_one(&last).await.unwrap().i64(0).unwrap();
    let surname = format!("?q=Last{last}");
    for (key, query) in [
        ("page_search", surname.as_str()),
        ("page_search_part", "?q=ast1234"),
        ("page_search_id", "?q=777"),
    ] {
        let (latencies, errors) = page_load(
            &server,
            &token,
            query,
            options.clients,
            (options.requests_per_client / 6).max(2),
        )
        .await;
        figures.insert(format!("{key}_p50_ms"), json!(percentile(&latencies, 0.5)));
        figures.insert(format!("{key}_p99_ms"), json!(percentile(&latencies, 0.99)));
        figures.insert(format!("{key}_errors"), json!(errors));
    }
    drop(server);

    // Anonymise: retentiond's apply, against one set-based UPDATE with the same strategies
    // (committed, as a real run would be; keyed hashes replaced by a built-in).
    approve_for_venue(&svc, r1).await;
    let started = Instant::now();
    let applied = run_venue_cycle(&svc, &v1, at() + Duration::days(1), false)
        .await
        .unwrap();
    let apply_s = started.elapsed().as_secs_f64();
    let summary = &applied.applied[0];
    assert!(
        summary.finished
            && reports::get(&svc.db, r1).await.unwrap().unwrap().state == ReportState::Applied
    );
    // The baseline runs on venue 4, whose idle customers have the same shape as venue 1's and
    // are still untouched (rewriting venue 1's already anonymised rows would flatter it).
    let mut venue4 = Query::new("CREATE TABLE bench_anonymise_ids AS SELECT c.id FROM customers c WHERE c.venue_id = 4 AND c.created_at < ");
    venue4.bind(cutoff).push(" AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.customer_id = c.id AND o.placed_at >= ").bind(cutoff).push(")");
    svc.db.execute(&venue4).await.unwrap();
    svc.db
        .execute(&Query::new(
            "CREATE UNIQUE INDEX bench_anonymise_ids_id ON bench_anonymise_ids (id)",
        ))
        .await
        .unwrap();
    let c4 = svc
        .db
        .fetch_one(&Query::new("SELECT COUNT(*) FROM bench_anonymise_ids"))
        .await
        .unwrap()
        .i64(0)
        .unwrap() as f64;
    let year = backend.year_only("date_of_birth");
    let ids = "(SELECT id FROM bench_anonymise_ids)";
    let customers_set = format!(
        "title = NULL, first_name = NULL, last_name = NULL, email = {}, phone = NULL, \
         address_line1 = NULL, address_line2 = NULL, postcode = substr(postcode, 1, 4), date_of_birth = {year}",
        baseline_hash(backend, "email")
    );
    let statements = match backend {
        // MySQL runs a single-table UPDATE or DELETE filtered by a subquery as a scan of the
        // whole table: its fastest set-based form joins instead.
        Backend::Mysql => vec![
            format!("UPDATE order_addresses JOIN orders o ON o.id = order_addresses.order_id JOIN bench_anonymise_ids b ON b.id = o.customer_id SET {}", scrub_addresses_set(backend)),
            format!("UPDATE orders JOIN bench_anonymise_ids b ON b.id = orders.customer_id SET billing_email = {}", baseline_hash(backend, "billing_email")),
            "DELETE customer_notes FROM customer_notes JOIN bench_anonymise_ids b ON b.id = customer_notes.customer_id".to_string(),
            format!("UPDATE customers JOIN bench_anonymise_ids b ON b.id = customers.id SET {customers_set}"),
        ],
        _ => [
            baseline_settings(backend),
            vec![
            format!("UPDATE order_addresses SET {} WHERE order_id IN (SELECT id FROM orders WHERE customer_id IN {ids})", scrub_addresses_set(backend)),
            format!("UPDATE orders SET billing_email = {} WHERE customer_id IN {ids}", baseline_hash(backend, "billing_email")),
            format!("DELETE FROM customer_notes WHERE customer_id IN {ids}"),
            format!("UPDATE customers SET {customers_set} WHERE id IN {ids}"),
        ]]
        .concat(),
    };
    let plans = explain_all(&svc.db, &statements).await;
    eprintln!("{backend:?} anonymise baseline plans:\n{plans}");
    figures.insert("anonymise_baseline_plan".into(), json!(plans));
    let baseline_s = timed_committed(&svc.db, &statements).await;
    figures.insert("anonymise_apply_s".into(), json!(apply_s));
    figures.insert("anonymise_baseline_s".into(), json!(baseline_s));
    figures.insert("anonymise_rows_per_s".into(), json!(c1 as f64 / apply_s));
    figures.insert("anonymise_baseline_customers".into(), json!(c4));
    figures.insert(
        "anonymise_baseline_rows_per_s".into(),
        json!(c4 / baseline_s),
    );
    figures.insert(
        "anonymise_ratio".into(),
        json!((c1 as f64 / apply_s) / (c4 / baseline_s)),
    );
    figures.insert(
        "anonymise_longest_tx_ms".into(),
        json!(summary.longest_batch_ms),
    );
    figures.insert(
        "anonymise_batches_given_up".into(),
        json!(summary.batches_given_up),
    );

    // Delete with order reassignment: retentiond's apply of venue 2's report, and the set-based
    // equivalent (committed) for venue 3, whose customers have the same shape.
    approve_for_venue(&svc, r2).await;
    // The box office keeps selling during the apply: an order for an active customer of the same
    // venue every 20 ms, its latency recorded (InnoDB's gap and next-key locks on the orders
    // index are where a reassignment could hold it up; on SQLite it waits for a batch's lock).
    let mut active = Query::new(
        "SELECT MIN(o.customer_id) FROM orders o WHERE o.venue_id = 2 AND o.placed_at >= ",
    );
    active.bind(cutoff);
    let buyer = svc.db.fetch_one(&active).await.unwrap().i64(0).unwrap();
    let selling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let box_office = {
        let (db, selling) = (svc.db.clone(), selling.clone());
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            while selling.load(std::sync::atomic::Ordering::SeqCst) {
                let mut sale = Query::new(
                    "INSERT INTO orders (venue_id, customer_id, placed_at, total_pence) VALUES (2, ",
                );
                sale.bind(buyer).push(", ").bind(at()).push(", 100)");
                let started = Instant::now();
                db.execute(&sale).await.unwrap();
                latencies.push(started.elapsed().as_secs_f64() * 1000.0);
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            latencies
        })
    };
    let started = Instant::now();
    let applied = run_venue_cycle(&svc, &v2, at() + Duration::days(1), false)
        .await
        .unwrap();
    let apply_s = started.elapsed().as_secs_f64();
    selling.store(false, std::sync::atomic::Ordering::SeqCst);
    let mut sales = box_office.await.unwrap();
    sales.sort_by(|a, b| a.partial_cmp(b).unwrap());
    figures.insert("box_office_writes".into(), json!(sales.len()));
    figures.insert(
        "box_office_write_p50_ms".into(),
        json!(percentile(&sales, 0.5)),
    );
    figures.insert(
        "box_office_write_p99_ms".into(),
        json!(percentile(&sales, 0.99)),
    );
    figures.insert(
        "box_office_write_max_ms".into(),
        json!(percentile(&sales, 1.0)),
    );
    let summary = &applied.applied[0];
    let mut venue3 = Query::new(
        "CREATE TABLE bench_delete_ids AS SELECT c.id FROM customers c WHERE c.venue_id = 3 AND c.created_at < ",
    );
    venue3.bind(cutoff).push(" AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.customer_id = c.id AND o.placed_at >= ").bind(cutoff).push(")");
    svc.db.execute(&venue3).await.unwrap();
    svc.db
        .execute(&Query::new(
            "CREATE UNIQUE INDEX bench_delete_ids_id ON bench_delete_ids (id)",
        ))
        .await
        .unwrap();
    let c3 = svc
        .db
        .fetch_one(&Query::new("SELECT COUNT(*) FROM bench_delete_ids"))
        .await
        .unwrap()
        .i64(0)
        .unwrap() as f64;
    let unknown = match backend {
        Backend::Sqlite | Backend::Mysql => "INSERT INTO customers (id, venue_id, created_at) VALUES (99999999, 3, '2026-01-01 00:00:00')",
        Backend::Postgres => "INSERT INTO customers (id, venue_id, created_at) VALUES (99999999, 3, now())",
    };
    let ids = "(SELECT id FROM bench_delete_ids)";
    let statements = match backend {
        Backend::Mysql => vec![
            unknown.to_string(),
            format!("UPDATE order_addresses JOIN orders o ON o.id = order_addresses.order_id JOIN bench_delete_ids b ON b.id = o.customer_id SET {}", scrub_addresses_set(backend)),
            format!("UPDATE orders JOIN bench_delete_ids b ON b.id = orders.customer_id SET customer_id = 99999999, billing_email = {}", baseline_hash(backend, "billing_email")),
            "DELETE customer_notes FROM customer_notes JOIN bench_delete_ids b ON b.id = customer_notes.customer_id".to_string(),
            "DELETE customers FROM customers JOIN bench_delete_ids b ON b.id = customers.id".to_string(),
        ],
        _ => [
            baseline_settings(backend),
            vec![
            unknown.to_string(),
            format!("UPDATE order_addresses SET {} WHERE order_id IN (SELECT id FROM orders WHERE customer_id IN {ids})", scrub_addresses_set(backend)),
            format!("UPDATE orders SET customer_id = 99999999, billing_email = {} WHERE customer_id IN {ids}", baseline_hash(backend, "billing_email")),
            format!("DELETE FROM customer_notes WHERE customer_id IN {ids}"),
            format!("DELETE FROM customers WHERE id IN {ids}"),
        ]]
        .concat(),
    };
    let plans = explain_all(&svc.db, &statements).await;
    eprintln!("{backend:?} delete baseline plans:\n{plans}");
    figures.insert("delete_baseline_plan".into(), json!(plans));
    let baseline_s = timed_committed(&svc.db, &statements).await;
    figures.insert("delete_apply_s".into(), json!(apply_s));
    figures.insert("delete_baseline_s".into(), json!(baseline_s));
    figures.insert("delete_rows_per_s".into(), json!(c2 as f64 / apply_s));
    figures.insert("delete_baseline_customers".into(), json!(c3));
    figures.insert("delete_baseline_rows_per_s".into(), json!(c3 / baseline_s));
    figures.insert(
        "delete_ratio".into(),
        json!((c2 as f64 / apply_s) / (c3 / baseline_s)),
    );
    figures.insert(
        "delete_longest_tx_ms".into(),
        json!(summary.longest_batch_ms),
    );
    figures.insert(
        "delete_batches_given_up".into(),
        json!(summary.batches_given_up),
    );
    bench.db.close().await;
    drop_unless_kept(backend).await;
    Value::Object(figures)
}

/// A full-size schema holds gigabytes: dropped unless asked to keep it for inspection.
async fn drop_unless_kept(backend: Backend) {
    if std::env::var_os("RETENTIOND_BENCH_KEEP").is_none() {
        let drop = match backend {
            Backend::Postgres => format!("DROP SCHEMA {} CASCADE", bench_schema()),
            Backend::Mysql => format!("DROP DATABASE {}", bench_schema()),
            Backend::Sqlite => String::new(),
        };
        if let Some(variable) = server_variable(backend) {
            on_server(&std::env::var(variable).unwrap(), &[drop]).await;
        }
    }
}

/// An operator approves report `id` on the venue's behalf (`reports approve`).
async fn approve_for_venue(svc: &Service, id: i64) {
    let approve = Decision::Approve { confirm: None };
    decide(&svc.db, id, Actor::Operator("bench"), approve, at())
        .await
        .unwrap()
        .unwrap();
}

/// The plan of `q` as the backend explains it, one line per step.
async fn explain(db: &Db, q: &Query) -> String {
    let mut explained = Query::new(explain_prefix(db.backend()));
    explained.push(q.sql());
    // The same values, bound again in the same order.
    for value in q.values() {
        explained.param(value.clone());
    }
    plan_lines(&db.fetch_all(&explained).await.unwrap())
}

/// How the backend asks for a plan.
fn explain_prefix(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "EXPLAIN QUERY PLAN ",
        Backend::Postgres | Backend::Mysql => "EXPLAIN ",
    }
}

/// A plan's rows, one line each, their cells joined by ` | `.
fn plan_lines(rows: &[retentiond::db::Row]) -> String {
    rows.iter()
        .map(|row| {
            row.0
                .iter()
                .filter_map(|v| v.to_text())
                .collect::<Vec<_>>()
                .join(" | ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The plans of the baseline's statements (issue 13: a baseline is the fastest plain SQL for the
/// work, and its plan says whether it is), each under its statement, explained in a transaction
/// with the baseline's own `SET LOCAL`s and rolled back.
async fn explain_all(db: &Db, statements: &[String]) -> String {
    let prefix = explain_prefix(db.backend());
    let mut tx = db.begin().await.unwrap();
    let mut plans = Vec::new();
    for sql in statements {
        if sql.starts_with("SET") {
            tx.execute(&Query::new(sql)).await.unwrap();
            plans.push(sql.clone());
        } else if !sql.starts_with("INSERT") {
            let rows = tx
                .fetch_all(&Query::new(&format!("{prefix}{sql}")))
                .await
                .unwrap();
            plans.push(format!("{sql}\n{}", plan_lines(&rows)));
        }
    }
    drop(tx);
    plans.join("\n\n")
}

/// PostgreSQL's planner takes the set-based baselines' few thousand customers for a large share
/// of the orders and hash-joins a scan of the whole table (seen with `EXPLAIN` at 300,000
/// customers: `Seq Scan on orders`, JIT compiled); steered like this it probes the
/// `orders(customer_id, placed_at)` and `order_addresses(order_id)` indexes, as the batches do.
const POSTGRES_BASELINE_SETTINGS: [&str; 3] = [
    "SET LOCAL enable_hashjoin = off",
    "SET LOCAL enable_mergejoin = off",
    "SET LOCAL jit = off",
];

/// The settings a baseline's transaction starts with on `backend` (see above).
fn baseline_settings(backend: Backend) -> Vec<String> {
    match backend {
        Backend::Postgres => POSTGRES_BASELINE_SETTINGS
            .iter()
            .map(|s| s.to_string())
            .collect(),
        Backend::Sqlite | Backend::Mysql => Vec::new(),
    }
}

/// The benchmark's `secrets.hash_key`.
const BENCH_HASH_KEY: &str = "benchmark-hash-key-0123456789-abcdef";

/// The keyed hash of `column` in a baseline: the very SQL apply hashes with in its UPDATEs (the
/// same work).
fn baseline_hash(backend: Backend, column: &str) -> String {
    backend.keyed_hash_sql(BENCH_HASH_KEY.as_bytes(), column, &mut |v| format!("'{v}'"))
}

/// The reference strategies of the order addresses, set-based.
fn scrub_addresses_set(backend: Backend) -> String {
    format!(
        "first_name = NULL, last_name = NULL, address_1 = NULL, postcode = substr(postcode, 1, 4), \
         email = {}, phone = NULL",
        baseline_hash(backend, "email")
    )
}

/// Runs `statements` in one transaction and commits; returns the seconds it took, including
/// what apply does to the files once a report is applied (SPEC 3: SQLite's WAL checkpointed and
/// truncated, PostgreSQL's touched tables vacuumed), as apply's time includes its own.
async fn timed_committed(db: &Db, statements: &[String]) -> f64 {
    db.checkpoint_wal().await.unwrap();
    let started = Instant::now();
    let mut tx = db.begin().await.unwrap();
    for sql in statements {
        tx.execute(&Query::new(sql)).await.unwrap();
    }
    tx.commit().await.unwrap();
    let touched: Vec<retentiond::db::Ident> =
        ["customers", "orders", "order_addresses", "customer_notes"]
            .iter()
            .map(|t| retentiond::db::Ident::new(t).unwrap())
            .collect();
    // As apply in this benchmark: the WAL truncated on SQLite; no VACUUM on PostgreSQL (one
    // VACUUM of the whole tables, the same on both sides, drowned the batches' cost).
    db.scrub_files(&touched.iter().collect::<Vec<_>>(), false)
        .await
        .unwrap();
    started.elapsed().as_secs_f64()
}

/// Seconds `count` takes on a connection of its own, opened before the clock starts and closed
/// after it stops.
async fn on_fresh_connection(url: &str, count: impl AsyncFnOnce(&Db)) -> f64 {
    let fresh = Db::connect(url).await.unwrap();
    let started = Instant::now();
    count(&fresh).await;
    let seconds = started.elapsed().as_secs_f64();
    fresh.close().await;
    seconds
}

/// The printed measures: JSON key, label, goal (empty when there is none).
const ROWS: &[(&str, &str, &str)] = &[
    ("generate_s", "data generation (s)", ""),
    ("selection_s", "selection, retentiond (s)", ""),
    ("selection_baseline_s", "selection, bare NOT EXISTS (s)", ""),
    ("selection_ratio", "selection ratio", "<= 1.2"),
    (
        "activity_selection_s",
        "selection with 2 activity tables and 2 holds (s)",
        "",
    ),
    (
        "activity_selection_baseline_s",
        "the same by hand, NOT EXISTS (s)",
        "",
    ),
    (
        "activity_selection_ratio",
        "selection ratio, activity and holds",
        "<= 1.2",
    ),
    (
        "selection_all_checks_s",
        "selection, all exclusion tables consulted (s)",
        "",
    ),
    (
        "selection_all_checks_baseline_s",
        "bare NOT EXISTS, the same exclusions written by hand (s)",
        "",
    ),
    (
        "selection_all_checks_ratio",
        "selection ratio, all exclusion tables consulted",
        "<= 1.2",
    ),
    (
        "exclusion_checks_cost_ratio",
        "bare with exclusions / bare without (the exclusions' own cost)",
        "",
    ),
    (
        "dry_run_s",
        "cycle --venue 1 --dry-run, median of 5 (s)",
        "",
    ),
    (
        "dry_run_baseline_s",
        "bare count on a fresh connection (s)",
        "",
    ),
    ("dry_run_ratio", "dry run ratio", "<= 1.2"),
    (
        "dry_run_peak_rss_mb",
        "dry run peak RSS, file map included (MB)",
        "",
    ),
    (
        "dry_run_peak_anon_mb",
        "dry run peak anonymous memory (MB)",
        "",
    ),
    (
        "selection_plans_use_orders_index",
        "both plans use the orders index (1 = yes)",
        "",
    ),
    ("report_customers", "largest report (customers)", ""),
    ("report_rows_per_s", "report creation (rows/s)", ""),
    (
        "first_cycle_s",
        "first cycle, venues 1 and 2 into reports (s)",
        "",
    ),
    ("csv_rows_per_s", "CSV export (rows/s)", ""),
    ("csv_rows_small", "CSV rows, small report", ""),
    (
        "csv_peak_rss_mb_small",
        "server peak RSS after small CSV (MB)",
        "",
    ),
    (
        "csv_peak_rss_mb",
        "server peak RSS after largest CSV (MB)",
        "< 100, flat",
    ),
    ("page_requests", "report page requests", ""),
    ("page_p50_ms", "report page p50 (ms)", ""),
    ("page_p99_ms", "report page p99 (ms)", "< 50"),
    ("page_errors", "report page errors", "0"),
    (
        "page_search_p50_ms",
        "page searching a surname, p50 (ms)",
        "",
    ),
    (
        "page_search_p99_ms",
        "page searching a surname, p99 (ms)",
        "< 50",
    ),
    (
        "page_search_part_p50_ms",
        "page searching part of a surname, p50 (ms)",
        "",
    ),
    (
        "page_search_part_p99_ms",
        "page searching part of a surname, p99 (ms)",
        "< 50",
    ),
    (
        "page_search_id_p50_ms",
        "page searching an id, p50 (ms)",
        "",
    ),
    (
        "page_search_id_p99_ms",
        "page searching an id, p99 (ms)",
        "< 50",
    ),
    (
        "page_requests_per_s",
        "report page throughput (requests/s)",
        "",
    ),
    (
        "page_cpu_ms_per_request_server",
        "CPU per page: server (ms)",
        "",
    ),
    (
        "page_cpu_ms_per_request_postgres",
        "CPU per page: PostgreSQL backends (ms)",
        "",
    ),
    (
        "page_cpu_ms_per_request_postgres_background",
        "CPU per page: PostgreSQL background (ms)",
        "",
    ),
    (
        "page_cpu_ms_per_request_client",
        "CPU per page: load generator (ms)",
        "",
    ),
    ("anonymise_apply_s", "anonymise apply (s)", ""),
    ("anonymise_baseline_s", "anonymise, set-based (s)", ""),
    ("anonymise_rows_per_s", "anonymise apply (rows/s)", ""),
    (
        "anonymise_baseline_rows_per_s",
        "anonymise, one UPDATE (rows/s)",
        "",
    ),
    ("anonymise_ratio", "anonymise ratio", ">= 0.8"),
    (
        "anonymise_longest_tx_ms",
        "anonymise longest transaction (ms)",
        "<= 250",
    ),
    (
        "anonymise_batches_given_up",
        "anonymise batches stopped and retried",
        "",
    ),
    ("delete_report_customers", "delete report (customers)", ""),
    (
        "box_office_writes",
        "box-office orders during the delete",
        "",
    ),
    ("box_office_write_p50_ms", "box-office order p50 (ms)", ""),
    ("box_office_write_p99_ms", "box-office order p99 (ms)", ""),
    ("box_office_write_max_ms", "box-office order max (ms)", ""),
    ("delete_apply_s", "delete apply (s)", ""),
    ("delete_baseline_s", "delete, set-based (s)", ""),
    ("delete_rows_per_s", "delete apply (rows/s)", ""),
    (
        "delete_baseline_rows_per_s",
        "delete, set-based (rows/s)",
        "",
    ),
    ("delete_ratio", "delete ratio", ">= 0.7"),
    (
        "delete_longest_tx_ms",
        "delete longest transaction (ms)",
        "<= 250",
    ),
    (
        "delete_batches_given_up",
        "delete batches stopped and retried",
        "",
    ),
];

/// Whether `value` meets `goal` ("<= 1.2", ">= 0.8", "< 50", "< 100, flat", "0"); `None`
/// when there is no goal or no value.
fn meets(goal: &str, value: f64) -> Option<bool> {
    let goal = goal.split(',').next()?.trim();
    if goal.is_empty() || value.is_nan() {
        return None;
    }
    let (op, number) = goal.split_once(' ').map_or(("=", goal), |(op, n)| (op, n));
    let limit: f64 = number.parse().ok()?;
    Some(match op {
        "<=" => value <= limit,
        ">=" => value >= limit,
        "<" => value < limit,
        ">" => value > limit,
        _ => value == limit,
    })
}

/// The keys of `figures` whose value misses its goal.
fn missed(figures: &Value) -> Vec<&'static str> {
    ROWS.iter()
        .filter(|(key, _, goal)| {
            let value = figures
                .get(*key)
                .and_then(Value::as_f64)
                .unwrap_or(f64::NAN);
            meets(goal, value) == Some(false)
        })
        .map(|(key, _, _)| *key)
        .collect()
}

/// The key of a run's figures: the backend, and its size when several sizes run.
fn result_key(backend: Backend, customers: u64, options: &Options) -> String {
    let name = format!("{backend:?}").to_lowercase();
    if options.sizes.len() > 1 {
        format!("{name}@{customers}")
    } else {
        name
    }
}

/// How each step grows from the first size to the last, retentiond's time beside the bare SQL's
/// for the same work: (label, retentiond's key, the baseline's key). A step grows as it should
/// when its time grows no more than 15% faster than its baseline's (the run-to-run noise of
/// this machine), or, without a baseline, than the data. Memory that is not a mapped file is
/// held to flat (at most 25% more).
const GROWTH: &[(&str, &str, Option<&str>)] = &[
    ("selection", "selection_s", Some("selection_baseline_s")),
    (
        "selection, all exclusion tables",
        "selection_all_checks_s",
        Some("selection_all_checks_baseline_s"),
    ),
    (
        "cycle --venue 1 --dry-run",
        "dry_run_s",
        Some("dry_run_baseline_s"),
    ),
    (
        "first cycle, two venues into reports",
        "first_cycle_s",
        None,
    ),
    (
        "anonymise apply",
        "anonymise_apply_s",
        Some("anonymise_baseline_s"),
    ),
    ("delete apply", "delete_apply_s", Some("delete_baseline_s")),
    (
        "dry run peak anonymous memory",
        "dry_run_peak_anon_mb",
        None,
    ),
    (
        "dry run peak RSS, file map included",
        "dry_run_peak_rss_mb",
        None,
    ),
];

/// Prints and returns the growth of every backend run at more than one size.
fn growth(results: &BTreeMap<String, Value>, options: &Options) -> Value {
    let (Some(&small), Some(&large)) = (options.sizes.first(), options.sizes.last()) else {
        return json!({});
    };
    if small == large {
        return json!({});
    }
    let data = large as f64 / small as f64;
    let mut out = serde_json::Map::new();
    for backend in &options.backends {
        let (Some(a), Some(b)) = (
            results.get(&result_key(*backend, small, options)),
            results.get(&result_key(*backend, large, options)),
        ) else {
            continue;
        };
        println!("\n{backend:?}: growth from {small} to {large} customers (x{data:.1} the data)");
        println!(
            "{:<40}{:>12}{:>12}{:>10}{:>12}{:>10}  goal",
            "step", "small", "large", "growth", "bare growth", ""
        );
        let figure = |v: &Value, key: &str| v.get(key).and_then(Value::as_f64).unwrap_or(f64::NAN);
        let mut rows = Vec::new();
        let mut misses = Vec::new();
        for (label, key, bare) in GROWTH {
            let grew = figure(b, key) / figure(a, key);
            let bare_grew = bare.map(|k| figure(b, k) / figure(a, k));
            let (limit, goal) = match (bare_grew, *key == "dry_run_peak_anon_mb") {
                (Some(g), _) => (g * 1.15, "<= 1.15 x bare growth".to_string()),
                (None, true) => (1.25, "flat (<= x1.25)".to_string()),
                (None, false) if *key == "dry_run_peak_rss_mb" => (f64::INFINITY, String::new()),
                (None, false) => (data * 1.15, format!("<= 1.15 x data growth (x{data:.1})")),
            };
            let missed = grew.is_finite() && grew > limit;
            if missed {
                misses.push(*key);
            }
            println!(
                "{label:<40}{:>12.2}{:>12.2}{:>10}{:>12}{:>10}  {goal}",
                figure(a, key),
                figure(b, key),
                format!("x{grew:.2}"),
                bare_grew.map_or(String::new(), |g| format!("x{g:.2}")),
                if missed { "MISSED" } else { "" }
            );
            rows.push(json!({"step": label, "key": key, "small": figure(a, key), "large": figure(b, key), "growth": grew, "bare_growth": bare_grew, "missed": missed}));
        }
        out.insert(
            format!("{backend:?}").to_lowercase(),
            json!({"from": small, "to": large, "steps": rows, "missed": misses}),
        );
    }
    Value::Object(out)
}

fn print_table(results: &BTreeMap<String, Value>, options: &Options) {
    let sizes: Vec<String> = options.sizes.iter().map(u64::to_string).collect();
    println!(
        "\nretentiond benchmark: {} customers, 10 orders a customer on average, 5 venues{}",
        sizes.join(" and "),
        if options.smoke { " (smoke size)" } else { "" }
    );
    let rows = ROWS;
    let backends: Vec<&String> = results.keys().collect();
    print!("{:<42}", "measure");
    for b in &backends {
        print!("{b:>16}");
    }
    println!("  goal");
    for (key, label, goal) in rows {
        print!("{label:<42}");
        for b in &backends {
            let v = results[*b]
                .get(*key)
                .and_then(Value::as_f64)
                .unwrap_or(f64::NAN);
            let shown = if v.fract() == 0.0 && v.abs() < 1e12 {
                format!("{}", v as i64)
            } else {
                format!("{v:.2}")
            };
            // A figure that misses its goal is marked where it is printed.
            let mark = if meets(goal, v) == Some(false) {
                " MISSED"
            } else {
                ""
            };
            print!("{:>16}", format!("{shown}{mark}"));
        }
        println!("  {goal}");
    }
}
