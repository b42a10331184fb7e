//! MySQL/MariaDB as shops keep it (SPEC 1, 5, 10): a WooCommerce-shaped database of one store
//! (no venue column, `bigint unsigned` ids, `varchar`/`text`/`datetime` columns, addresses in a
//! table keyed by the order, no foreign keys), configured only through `[schema]`; and the
//! servers and tables retentiond must refuse before touching a customer.

use crate::common::{output_text, retentiond, TestDb, HASH_KEY};
use retentiond::db::Query;
use retentiond::policy::keyed_hash;

const WOOCOMMERCE: &str = "
CREATE TABLE wp_wc_customer_lookup (
  customer_id bigint(20) unsigned NOT NULL AUTO_INCREMENT PRIMARY KEY,
  user_id bigint(20) unsigned DEFAULT NULL,
  username varchar(60) NOT NULL DEFAULT '',
  first_name varchar(255) NOT NULL,
  last_name varchar(255) NOT NULL,
  email varchar(100) DEFAULT NULL,
  date_last_active datetime DEFAULT NULL,
  date_registered datetime DEFAULT NULL,
  country char(2) NOT NULL DEFAULT '',
  postcode varchar(20) NOT NULL DEFAULT '',
  city varchar(100) NOT NULL DEFAULT '',
  state varchar(100) NOT NULL DEFAULT ''
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE TABLE wp_wc_orders (
  id bigint(20) unsigned NOT NULL PRIMARY KEY,
  status varchar(20) DEFAULT NULL,
  currency varchar(10) DEFAULT NULL,
  total_amount decimal(26,8) DEFAULT NULL,
  customer_id bigint(20) unsigned DEFAULT NULL,
  billing_email varchar(320) DEFAULT NULL,
  date_created_gmt datetime DEFAULT NULL,
  KEY customer_id_date (customer_id, date_created_gmt)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE TABLE wp_wc_order_addresses (
  id bigint(20) unsigned NOT NULL AUTO_INCREMENT PRIMARY KEY,
  order_id bigint(20) unsigned NOT NULL,
  address_type varchar(20) DEFAULT NULL,
  first_name text, last_name text, company text, address_1 text, address_2 text,
  city text, state text, postcode text, country text,
  email varchar(320) DEFAULT NULL, phone varchar(100) DEFAULT NULL,
  KEY order_id (order_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
INSERT INTO wp_wc_customer_lookup (customer_id, first_name, last_name, email, date_last_active, date_registered, country, postcode, city)
VALUES (1, 'Jane', 'Doe', 'jane@example.org', '2019-03-01 10:00:00', '2018-01-05 09:00:00', 'GB', 'SW1A 1AA', 'London'),
       (2, 'Active', 'Buyer', 'buyer@example.org', '2026-05-01 10:00:00', '2018-01-05 09:00:00', 'GB', 'LS1 4AP', 'Leeds');
INSERT INTO wp_wc_orders VALUES
  (101, 'wc-completed', 'GBP', 25.50000000, 1, 'jane@example.org', '2019-03-01 10:00:00'),
  (102, 'wc-completed', 'GBP', 12.00000000, 2, 'buyer@example.org', '2026-05-01 10:00:00');
INSERT INTO wp_wc_order_addresses (order_id, address_type, first_name, last_name, address_1, city, postcode, country, email, phone)
VALUES (101, 'billing', 'Jane', 'Doe', '1 Secret Lane', 'London', 'SW1A 1AA', 'GB', 'jane@example.org', '07700 900123'),
       (101, 'shipping', 'Jane', 'Doe', '1 Secret Lane', 'London', 'SW1A 1AA', 'GB', NULL, NULL),
       (102, 'billing', 'Active', 'Buyer', '2 Main St', 'Leeds', 'LS1 4AP', 'GB', 'buyer@example.org', '0113 000');
";

/// The configuration of the shop: one venue, no `customer_venue`, every name through `[schema]`.
fn shop_config(url: &str, dir: &std::path::Path) -> String {
    format!(
        r#"[database]
url = "{url}"
[mail]
from = "Data Retention <retention@example.org>"
transport = "file"
dir = "{mail}"
[secrets]
hash_key = "{HASH_KEY}"
[schema]
customers = "wp_wc_customer_lookup"
customer_id = "customer_id"
customer_created_at = "date_registered"
customer_activity = ["date_last_active"]
orders = "wp_wc_orders"
order_customer = "customer_id"
order_placed_at = "date_created_gmt"
display_name = ["first_name", "last_name"]
display_email = "email"
[[schema.references]]
table = "wp_wc_orders"
column = "customer_id"
on_delete = "reassign"
[schema.references.columns]
status = "keep"
currency = "keep"
total_amount = "keep"
date_created_gmt = "keep"
billing_email = "hash"
[[schema.references]]
table = "wp_wc_order_addresses"
column = "order_id"
via = "wp_wc_orders"
via_key = "id"
[schema.references.columns]
address_type = "keep"
first_name = "null"
last_name = "null"
company = "null"
address_1 = "null"
address_2 = "null"
city = "keep"
state = "keep"
postcode = "prefix:4"
country = "keep"
email = "hash"
phone = "null"
[[venues]]
id = 1
name = "The Shop"
approvers = ["owner@shop.example"]
inactive_for = "3 years"
action = "delete"
max_share = 1.0
timezone = "Europe/London"
"#,
        mail = dir.join("outbox").display()
    )
}

async fn woocommerce_database_of_one_store_is_kept_in_line(db: TestDb) {
    db.db
        .execute_script("DROP TABLE tickets, memberships, gift_aid_declarations, customer_notes, order_addresses, orders, customers")
        .await
        .unwrap();
    db.db.execute_script(WOOCOMMERCE).await.unwrap();
    let config = db.dir.path().join("shop.toml");
    std::fs::write(&config, shop_config(&db.url, db.dir.path())).unwrap();
    assert!(retentiond(&config, &["migrate"]).status.success());
    let check = retentiond(&config, &["check"]);
    assert_eq!(check.status.code(), Some(0), "{}", output_text(&check));

    let created = retentiond(&config, &["cycle", "--at", "2026-06-15T12:00:00Z"]);
    assert!(created.status.success(), "{}", output_text(&created));
    let items = db
        .db
        .fetch_all(&Query::new(
            "SELECT customer_id FROM retention_report_items",
        ))
        .await
        .unwrap();
    assert_eq!(items.len(), 1, "only the idle customer: {items:?}");
    assert_eq!(items[0].i64(0).unwrap(), 1);
    let approved = retentiond(&config, &["reports", "approve", "1", "--by", "owner"]);
    assert!(approved.status.success(), "{}", output_text(&approved));
    let applied = retentiond(&config, &["cycle", "--at", "2026-06-16T12:00:00Z"]);
    assert!(applied.status.success(), "{}", output_text(&applied));

    assert_eq!(
        db.count("SELECT COUNT(*) FROM wp_wc_customer_lookup WHERE customer_id = 1")
            .await,
        0
    );
    let unknown = db
        .db
        .fetch_one(&Query::new(
            "SELECT customer_id FROM wp_wc_orders WHERE id = 101",
        ))
        .await
        .unwrap()
        .i64(0)
        .unwrap();
    assert!(
        unknown > 2,
        "the order moved to the shop's Unknown Customer"
    );
    let order = db
        .db
        .fetch_one(&Query::new(
            "SELECT billing_email, total_amount FROM wp_wc_orders WHERE id = 101",
        ))
        .await
        .unwrap();
    assert_eq!(
        order.text(0).unwrap(),
        keyed_hash(HASH_KEY.as_bytes(), "jane@example.org")
    );
    assert_eq!(order.text(1).unwrap(), "25.5", "the amount is kept");
    let addresses = db
        .db
        .fetch_all(&Query::new("SELECT first_name, address_1, postcode, email, phone, city FROM wp_wc_order_addresses WHERE order_id = 101 ORDER BY id"))
        .await
        .unwrap();
    assert_eq!(addresses.len(), 2);
    for a in &addresses {
        assert_eq!(a.opt_text(0).unwrap(), None);
        assert_eq!(a.opt_text(1).unwrap(), None);
        assert_eq!(a.text(2).unwrap(), "SW1A");
        assert_eq!(a.opt_text(4).unwrap(), None);
        assert_eq!(a.text(5).unwrap(), "London");
    }
    assert_eq!(
        addresses[0].text(3).unwrap(),
        keyed_hash(HASH_KEY.as_bytes(), "jane@example.org")
    );
    // The active buyer and their order are untouched.
    assert_eq!(db.count("SELECT COUNT(*) FROM wp_wc_customer_lookup WHERE customer_id = 2 AND email = 'buyer@example.org'").await, 1);
    assert_eq!(db.count("SELECT COUNT(*) FROM wp_wc_order_addresses WHERE order_id = 102 AND address_1 = '2 Main St'").await, 1);
}

/// A customers table without transactions (MyISAM), and a database user without the
/// privileges to erase: `check` names each (exit 1) and no cycle touches a customer.
async fn tables_without_transactions_and_missing_privileges_are_refused(db: TestDb) {
    db.db
        .execute_script("DROP TABLE tickets, memberships, gift_aid_declarations, customer_notes, order_addresses, orders; ALTER TABLE customers ENGINE = MyISAM")
        .await
        .unwrap();
    // The linked tables again, without foreign keys (InnoDB cannot refer to a MyISAM table).
    db.db
        .execute_script(
            "CREATE TABLE orders (id BIGINT AUTO_INCREMENT PRIMARY KEY, venue_id BIGINT NOT NULL, customer_id BIGINT NOT NULL, \
               placed_at DATETIME(6) NOT NULL, total_pence BIGINT NOT NULL, billing_email VARCHAR(255), INDEX (customer_id, placed_at)); \
             CREATE TABLE order_addresses (id BIGINT AUTO_INCREMENT PRIMARY KEY, order_id BIGINT NOT NULL, address_type VARCHAR(20) NOT NULL, \
               first_name VARCHAR(100), last_name VARCHAR(100), address_1 VARCHAR(255), city VARCHAR(100), postcode VARCHAR(20), \
               email VARCHAR(255), phone VARCHAR(40), INDEX (order_id)); \
             CREATE TABLE customer_notes (id BIGINT AUTO_INCREMENT PRIMARY KEY, customer_id BIGINT NOT NULL, body TEXT NOT NULL, INDEX (customer_id))",
        )
        .await
        .unwrap();
    db.migrate().await;
    let old = db.customer(2, "2019-01-01 00:00:00").await;
    let venues = crate::common::delete_venue(2, "3 years", "");
    let config = db.write_config(&venues);
    let check = retentiond(&config, &["check"]);
    let text = output_text(&check);
    assert_eq!(check.status.code(), Some(1), "{text}");
    assert!(
        text.contains("table customers uses the MyISAM engine, which has no transactions"),
        "{text}"
    );
    let cycle = retentiond(&config, &["cycle", "--at", "2026-06-15T12:00:00Z"]);
    assert_eq!(cycle.status.code(), Some(1), "{}", output_text(&cycle));
    assert!(
        output_text(&cycle).contains("MyISAM"),
        "{}",
        output_text(&cycle)
    );
    assert_eq!(db.count("SELECT COUNT(*) FROM retention_reports").await, 0);
    assert!(db.customer_row(old).await.is_some());

    // A user who may only read.
    db.db
        .execute_script("ALTER TABLE customers ENGINE = InnoDB")
        .await
        .unwrap();
    let database = db.schema.clone().unwrap();
    let user = format!("ro_{}", database.trim_start_matches("t_"));
    let mut user = user;
    user.truncate(32);
    db.db
        .execute_script(&format!(
            "CREATE USER IF NOT EXISTS '{user}'@'%'; GRANT SELECT ON {database}.* TO '{user}'@'%'"
        ))
        .await
        .unwrap();
    let readonly = std::fs::read_to_string(&config).unwrap().replace(
        &db.url,
        &crate::common::mysql_url(&database).replace("root@", &format!("{user}@")),
    );
    std::fs::write(&config, readonly).unwrap();
    let check = retentiond(&config, &["check"]);
    let text = output_text(&check);
    assert_eq!(check.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!("the database user lacks the privileges INSERT, UPDATE, DELETE, CREATE, INDEX on {database}")),
        "{text}"
    );
    assert!(db.customer_row(old).await.is_some());
}

/// Times are written and read in UTC: the service's sessions run in UTC whatever the server's
/// zone, and a client session in another zone sees the same DATETIME values.
async fn times_are_utc_whatever_a_sessions_time_zone(db: TestDb) {
    db.migrate().await;
    // The session of the service is UTC whatever the server's zone; a session that is not
    // (as an operator's client might be) must see the same instants.
    let c = db.customer(2, "2019-01-01 00:00:00").await;
    db.order(c, "2020-06-01 23:30:00").await;
    let svc = db
        .service(&crate::common::delete_venue(2, "3 years", ""))
        .await;
    let venue = svc.config.venue(2).unwrap().clone();
    retentiond::cycle::run_venue_cycle(
        &svc,
        &venue,
        crate::common::t("2026-06-15 12:00:00"),
        false,
    )
    .await
    .unwrap();
    let frozen = db
        .db
        .fetch_one(&Query::new(
            "SELECT last_order_at FROM retention_report_items",
        ))
        .await
        .unwrap()
        .time(0)
        .unwrap();
    assert_eq!(frozen, crate::common::t("2020-06-01 23:30:00"));
    let args = crate::common::mysql_client_args();
    let out = std::process::Command::new("mysql")
        .args(&args)
        .arg(db.schema.as_deref().unwrap())
        .args(["-NBe", "SET time_zone = '+05:00'; SELECT COUNT(*) FROM retention_report_items WHERE last_order_at = '2020-06-01 23:30:00'"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "1",
        "DATETIME holds UTC, whatever a session's zone"
    );
}

/// The selection's plan on MySQL: the customers are read once and the orders index answers the
/// NOT EXISTS; the UPDATE and DELETE of a batch look rows up by index (no scan of the table).
async fn selection_and_batch_statements_use_the_indexes(db: TestDb) {
    db.migrate().await;
    for i in 0..200 {
        let c = db.customer(2, "2019-01-01 00:00:00").await;
        db.order(
            c,
            if i % 2 == 0 {
                "2020-01-01 00:00:00"
            } else {
                "2026-01-01 00:00:00"
            },
        )
        .await;
    }
    db.db
        .execute_script("ANALYZE TABLE customers, orders, order_addresses")
        .await
        .unwrap();
    let svc = db
        .service(&crate::common::delete_venue(2, "3 years", ""))
        .await;
    let venue = svc.config.venue(2).unwrap().clone();
    let scope = retentiond::selection::Scope::new(
        &svc.config,
        svc.db.backend(),
        &venue,
        crate::common::t("2026-06-15 12:00:00"),
    );
    let mut q = Query::new("EXPLAIN SELECT COUNT(*)");
    scope.push_from_candidates(&mut q);
    let plan: Vec<String> = db
        .db
        .fetch_all(&q)
        .await
        .unwrap()
        .iter()
        .map(|r| {
            r.0.iter()
                .filter_map(|v| v.to_text())
                .collect::<Vec<_>>()
                .join(" | ")
        })
        .collect();
    let orders = plan
        .iter()
        .find(|l| l.contains("| o |"))
        .unwrap_or_else(|| panic!("{plan:#?}"));
    assert!(orders.contains("orders_customer_placed"), "{plan:#?}");
    // retentiond's own tables are looked up per customer, never read whole: MariaDB would turn
    // each NOT EXISTS into a materialised IN, a read of every report item and anonymised
    // customer of the fleet for each statement (its session turns that rewrite off).
    assert_eq!(
        scope.exclusions,
        retentiond::selection::Exclusions::ALL,
        "every exclusion is in the statement"
    );
    assert!(
        plan.iter().all(|l| !l.contains("MATERIALIZED")),
        "{plan:#?}"
    );
    // A batch's statements, as erase writes them: by an id list, not a subquery.
    let mut update = Query::new("EXPLAIN UPDATE orders SET billing_email = NULL WHERE customer_id");
    svc.db.backend().push_in_ids(&mut update, &[1, 2, 3]);
    let plan = db.db.fetch_all(&update).await.unwrap();
    let text = format!("{plan:?}");
    assert!(
        text.contains("orders_customer_placed") && !text.contains("ALL"),
        "{text}"
    );
}

/// `check` sets InnoDB's buffer pool against what the customer tables and their indexes take:
/// it reads the server's real setting and the tables' sizes, and warns (naming both) only when
/// they do not fit.
async fn check_weighs_the_buffer_pool_against_the_customer_tables(db: TestDb) {
    for venue in 0..200 {
        db.customer(venue % 3 + 1, "2019-01-01 00:00:00").await;
    }
    db.db
        .execute(&Query::new("ANALYZE TABLE customers"))
        .await
        .unwrap();
    let name = |n: &str| retentiond::db::Ident::new(n).unwrap();
    let (customers, orders) = (name("customers"), name("orders"));
    let setting = db
        .count("SELECT CAST(@@innodb_buffer_pool_size AS SIGNED)")
        .await as u64;

    let (pool, tables) = db
        .db
        .buffer_pool_and_tables(&[&customers, &orders])
        .await
        .unwrap()
        .expect("MySQL has a buffer pool");
    let customers_alone = db
        .db
        .buffer_pool_and_tables(&[&customers])
        .await
        .unwrap()
        .unwrap()
        .1;

    assert_eq!(pool, setting);
    assert!(
        customers_alone > 0 && tables > customers_alone,
        "{customers_alone} {tables}"
    );
    assert!(tables < pool, "a test's tables fit any pool");
    let config = db.write_config(&crate::common::delete_venue(2, "3 years", ""));
    let text = output_text(&retentiond(&config, &["check"]));
    assert!(!text.contains("innodb_buffer_pool_size"), "{text}");
    let warning = retentiond::check::buffer_pool_warning(128 << 20, 400 << 20).unwrap();
    assert!(
        warning.contains("innodb_buffer_pool_size is 128 MB")
            && warning.contains("take about 400 MB"),
        "{warning}"
    );
    assert_eq!(retentiond::check::buffer_pool_warning(pool, tables), None);
}

crate::on_mysql!(
    check_weighs_the_buffer_pool_against_the_customer_tables,
    selection_and_batch_statements_use_the_indexes,
    woocommerce_database_of_one_store_is_kept_in_line,
    tables_without_transactions_and_missing_privileges_are_refused,
    times_are_utc_whatever_a_sessions_time_zone,
);

/// `schema.customer_venue` left out (one venue) on a customers table that has a `venue_id`
/// column: taken for a configuration that relied on the old default, and refused (any backend).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_venue_column_left_out_of_a_shared_table_is_refused() {
    let db = TestDb::sqlite().await;
    db.migrate().await;
    let other_venue = db.customer(3, "2019-01-01 00:00:00").await;
    let config = db.write_config(&crate::common::delete_venue(2, "3 years", ""));
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("customer_venue = \"venue_id\"\n", "");
    std::fs::write(&config, text).unwrap();
    let check = retentiond(&config, &["check"]);
    assert_eq!(check.status.code(), Some(1), "{}", output_text(&check));
    assert!(
        output_text(&check).contains("schema.customer_venue is left out, so every customer in customers would count as venue 2's, but the table has a venue_id column"),
        "{}",
        output_text(&check)
    );
    let cycle = retentiond(&config, &["cycle", "--at", "2026-06-15T12:00:00Z"]);
    assert_eq!(cycle.status.code(), Some(1), "{}", output_text(&cycle));
    assert_eq!(db.count("SELECT COUNT(*) FROM retention_reports").await, 0);
    assert!(db.customer_row(other_venue).await.is_some());
}
