//! The benchmark's databases: a fresh SQLite file, PostgreSQL schema or MySQL database per
//! run, the reference schema loaded with a generated shape of data (skewed, even or fleet),
//! and the configuration that points retentiond at it.

use super::*;

pub(crate) struct Bench {
    pub(crate) db: Db,
    pub(crate) url: String,
    pub(crate) dir: tempfile::TempDir,
}

pub(crate) async fn open(backend: Backend) -> Bench {
    // RETENTIOND_BENCH_KEEP=1 keeps the SQLite database or PostgreSQL schema after the run.
    let mut dir = tempfile::tempdir().unwrap();
    if std::env::var_os("RETENTIOND_BENCH_KEEP").is_some() {
        dir.disable_cleanup(true);
        eprintln!("keeping {}", dir.path().display());
    }
    // The test kit's scratch databases (`retentiond::db::scratch`), named for this run.
    let url = match scratch::server_variable(backend) {
        None => format!("sqlite://{}", dir.path().join("bench.db").display()),
        Some(variable) => {
            let base = std::env::var(variable).unwrap();
            scratch::create(backend, &base, &bench_schema())
                .await
                .unwrap()
        }
    };
    Bench {
        db: Db::connect(&url).await.unwrap(),
        url,
        dir,
    }
}

/// This run's PostgreSQL schema or MySQL database.
pub(crate) fn bench_schema() -> String {
    format!("bench_{}", std::process::id())
}

/// The reference schema filled set-based: `n` customers over 5 venues (60% at venue 1) and 10
/// orders each. Half of venue 1 and a quarter of the other venues have bought nothing for over
/// three years (about 40% of all customers); the rest ordered in the last three years.
pub(crate) async fn generate(bench: &Bench, n: u64, shape: Shape) {
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
    // `RETENTIOND_BENCH_ORDERS_BY_TIME=1` writes the orders in the order they were placed, as a
    // live shop's table grows, instead of each customer's together: a customer's orders are then
    // spread over the table's pages (the layout a vendor's database has).
    let order_layout = if std::env::var_os("RETENTIOND_BENCH_ORDERS_BY_TIME").is_some() {
        "ORDER BY 3, 2"
    } else {
        "ORDER BY c.id, k.i"
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
                 ELSE datetime(c.created_at, '+' || ((c.id + k.i * 37) % 200) || ' days') END, 1000 + k.i, c.email FROM customers c JOIN k ON k.i < {orders_of} {order_layout}"
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
                 ELSE c.created_at + ((c.id + k.i * 37) % 200) * INTERVAL '1 day' END, 1000 + k.i, c.email FROM customers c JOIN generate_series(0, 19) AS k(i) ON k.i < {orders_of} {order_layout}"
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
                 JOIN (SELECT n - 1 AS i FROM {}) k ON k.i < {orders_of} {order_layout}",
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
        // As PostgreSQL's CHECKPOINT above: the load's last writes (its indexes, the
        // statistics) go to the database file now, so that the measurements do not read them
        // from a long log that only the load left (a box office's own commits keep SQLite's
        // log short with its automatic checkpoints).
        bench
            .db
            .execute_script("PRAGMA wal_checkpoint(TRUNCATE)")
            .await
            .unwrap();
    }
}

/// Every reference customers column classified, as venue 1 (and venue 4) anonymise them.
pub(crate) const ANONYMISE: &str = retentiond::reference::ANONYMISE_TOML;

pub(crate) fn config_text(url: &str, port: u16) -> String {
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

/// A full-size schema holds gigabytes: dropped unless asked to keep it for inspection.
pub(crate) async fn drop_unless_kept(backend: Backend) {
    if std::env::var_os("RETENTIOND_BENCH_KEEP").is_none() {
        if let Some(variable) = scratch::server_variable(backend) {
            scratch::drop(backend, &std::env::var(variable).unwrap(), &bench_schema())
                .await
                .unwrap();
        }
    }
}
