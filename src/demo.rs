//! `retentiond demo`: the whole product on the embedded default in a minute. It creates `demo/`
//! with a SQLite database of synthetic customers over two venues (one anonymises, one deletes),
//! a configuration that writes mail to `demo/outbox`, runs a first cycle, prints the approval
//! links, and runs the daemon with a one-minute schedule.

use crate::db::{Db, Query, Value};
use crate::{config, cycle, mail, migrate};
use anyhow::{Context, Result};
use chrono::{DateTime, Duration, SubsecRound, Utc};
use secrecy::ExposeSecret;
use std::path::Path;

const FIRST_NAMES: &[&str] = &[
    "Olivia", "Amelia", "Isla", "Ava", "Mia", "Noah", "Oliver", "George", "Arthur", "Leo", "Harry",
    "Freya", "Grace", "Jack", "Ivy", "Theo", "Rosie", "Alfie", "Evie", "Oscar",
];
const LAST_NAMES: &[&str] = &[
    "Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson", "Davies", "Patel",
    "Wright", "Walker", "Evans", "Thomas", "Roberts", "Khan", "Green", "Hall", "Wood", "Clarke",
    "Hughes",
];
const TOWNS: &[(&str, &str)] = &[
    ("London", "SE1 9"),
    ("Bristol", "BS1 4"),
    ("Leeds", "LS1 6"),
    ("York", "YO1 7"),
    ("Bath", "BA1 1"),
    ("Brighton", "BN1 3"),
];

/// A small deterministic generator (xorshift), so every demo has the same customers.
struct Synthetic(u64);

impl Synthetic {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

fn demo_config(_dir: &Path, hash_key: &str) -> String {
    let schema_toml = crate::reference::SCHEMA_TOML;
    let anonymise_toml = crate::reference::ANONYMISE_TOML;
    let activity_toml = crate::reference::ACTIVITY_TOML;
    format!(
        r#"# Written by `retentiond demo`: the demo's own configuration.
[database]
url = "sqlite://retention.db"   # relative paths are read from this file's folder
[http]
bind = "127.0.0.1:8080"
public_url = "http://127.0.0.1:8080"
[mail]
from = "Data Retention <retention@demo.example>"
transport = "file"
dir = "outbox"
ops = "ops@demo.example"
[schedule]
cron = "0 * * * * *"            # every minute, so an approval is applied within a minute
timezone = "Europe/London"
[approval]
required = 1
link_valid_for = "14 days"
remind_after = "7 days"
[secrets]
hash_key = "{hash_key}"
[journal]
path = "erasures.jsonl"      # the erasure journal: `retentiond replay` after a restore
{schema_toml}
{activity_toml}
[[venues]]
id = 1
name = "The Grand Theatre"
approvers = ["boxoffice@grand.example"]
inactive_for = "3 years"
action = "anonymise"
report_interval = "1 day"
[venues.prospects]             # customers who never ordered: deleted after a year
inactive_for = "1 year"
action = "delete"
{anonymise_toml}
[[venues]]
id = 2
name = "Riverside Arts Centre"
approvers = ["manager@riverside.example"]
inactive_for = "2 years"
action = "delete"
report_interval = "1 day"
"#
    )
}

/// Synthetic customers: created over the last ten years, most with a few orders spread up to
/// now, so that roughly a third have been inactive for years.
async fn seed(db: &Db, customers: u32, now: DateTime<Utc>) -> Result<()> {
    let mut rng = Synthetic(0x2545_F491_4F6C_DD1D);
    let mut tx = db.begin().await?;
    for chunk_start in (1..=customers).step_by(200) {
        let mut q = Query::new(
            "INSERT INTO customers (id, venue_id, title, first_name, last_name, email, phone, address_line1, city, postcode, country, date_of_birth, marketing_opt_in, legal_hold, created_at) VALUES ",
        );
        let mut orders = Query::new(
            "INSERT INTO orders (venue_id, customer_id, placed_at, total_pence) VALUES ",
        );
        let mut first_order = true;
        for id in chunk_start..(chunk_start + 200).min(customers + 1) {
            let venue = 1 + i64::from(id % 2);
            let first = *rng.pick(FIRST_NAMES);
            let last = *rng.pick(LAST_NAMES);
            let (town, district) = *rng.pick(TOWNS);
            let created = now - Duration::days(200 + rng.below(3300) as i64);
            let values: Vec<Value> = vec![
                i64::from(id).into(),
                venue.into(),
                (*rng.pick(&["Mr", "Ms", "Mx", "Dr"])).into(),
                first.into(),
                last.into(),
                format!(
                    "{}.{}{}@example.com",
                    first.to_lowercase(),
                    last.to_lowercase(),
                    id
                )
                .into(),
                format!("07700 9{:05}", rng.below(100_000)).into(),
                format!("{} {} Road", 1 + rng.below(200), rng.pick(LAST_NAMES)).into(),
                town.into(),
                format!(
                    "{district}{}{}",
                    rng.below(10),
                    (b'A' + rng.below(26) as u8) as char
                )
                .into(),
                "GB".into(),
                format!(
                    "{}-{:02}-{:02}",
                    1940 + rng.below(65),
                    1 + rng.below(12),
                    1 + rng.below(28)
                )
                .into(),
                Value::Int((rng.below(3) == 0) as i64),
                Value::Int((rng.below(100) == 0) as i64),
                created.into(),
            ];
            q.push(if id == chunk_start { "(" } else { ", (" });
            for (i, v) in values.into_iter().enumerate() {
                if i > 0 {
                    q.push(", ");
                }
                q.bind(v);
            }
            q.push(")");
            let span = (now - created).num_days().max(1) as u64;
            // The last order falls anywhere in the customer's life: about a third are long idle.
            let last_order_days_ago = rng.below(span.min(2000));
            for k in 0..rng.below(4) {
                let placed = now - Duration::days((last_order_days_ago + k * 90).min(span) as i64);
                orders.push(if first_order { "(" } else { ", (" });
                first_order = false;
                orders
                    .bind(venue)
                    .push(", ")
                    .bind(i64::from(id))
                    .push(", ")
                    .bind(placed)
                    .push(", ")
                    .bind(1500 + rng.below(9000) as i64)
                    .push(")");
            }
        }
        tx.execute(&q).await?;
        if !first_order {
            tx.execute(&orders).await?;
        }
    }
    // As shop systems keep them: the buyer's email on each order, a billing and a shipping
    // address per order, and staff notes in free text about some customers.
    tx.execute_script(
        "UPDATE orders SET billing_email = (SELECT email FROM customers c WHERE c.id = orders.customer_id);
         INSERT INTO order_addresses (order_id, address_type, first_name, last_name, address_1, city, postcode, email, phone)
           SELECT o.id, t.kind, c.first_name, c.last_name, c.address_line1, c.city, c.postcode, c.email, c.phone
           FROM orders o JOIN customers c ON c.id = o.customer_id
           CROSS JOIN (SELECT 'billing' AS kind UNION ALL SELECT 'shipping') t;
         INSERT INTO customer_notes (customer_id, body)
           SELECT id, 'Prefers an aisle seat; call ' || first_name || ' on ' || phone FROM customers WHERE id % 7 = 0;",
    )
    .await?;
    // What else keeps a customer (SPEC 12): tickets (some for performances still to come on
    // orders placed long ago), memberships running and lapsed, Gift Aid declarations of five
    // and of seven years ago, and a few balances on account.
    let mut q = Query::new(
        "INSERT INTO tickets (order_id, performance_at, seat) SELECT id, CASE WHEN customer_id % 37 = 0 THEN ",
    );
    q.bind(now + Duration::days(120)).push(
        " ELSE placed_at END, 'Row ' || (id % 20) FROM orders WHERE id % 3 = 0 OR customer_id % 37 = 0",
    );
    tx.execute(&q).await?;
    let mut q = Query::new(
        "INSERT INTO memberships (customer_id, level, expires_at) SELECT id, 'Friend', CASE WHEN id % 2 = 0 THEN ",
    );
    q.bind(Value::Date((now + Duration::days(200)).date_naive()))
        .push(" ELSE ")
        .bind(Value::Date((now - Duration::days(4 * 365)).date_naive()))
        .push(" END FROM customers WHERE id % 23 = 0");
    tx.execute(&q).await?;
    let mut q = Query::new(
        "INSERT INTO gift_aid_declarations (customer_id, declared_at) SELECT id, CASE WHEN id % 17 = 0 THEN ",
    );
    q.bind(Value::Date((now - Duration::days(5 * 365)).date_naive()))
        .push(" ELSE ")
        .bind(Value::Date((now - Duration::days(7 * 365)).date_naive()))
        .push(" END FROM customers WHERE id % 17 = 0 OR id % 19 = 0");
    tx.execute(&q).await?;
    tx.execute(&Query::new(
        "UPDATE customers SET balance_pence = 1500 WHERE id % 41 = 0",
    ))
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Finds the approval links in the `.eml` files written to `outbox` (undoing quoted-printable
/// soft line breaks).
pub fn links_in_outbox(outbox: &Path) -> Result<Vec<String>> {
    let mut links = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(outbox)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file)?.replace("=\r\n", "");
        for word in text.split(|c: char| c.is_whitespace() || c == '"' || c == '<' || c == '>') {
            if word.contains("/r/")
                && word.starts_with("http")
                && !links.contains(&word.to_string())
            {
                links.push(word.to_string());
            }
        }
    }
    Ok(links)
}

pub async fn run(dir: &Path) -> Result<()> {
    // A demo already serving this folder keeps it: starting afresh would delete its database.
    let db_file = dir.join("retention.db");
    let lock_path = crate::db::daemon_lock_path(&db_file);
    if lock_path.exists() && crate::db::try_lock_file(&lock_path)?.is_none() {
        anyhow::bail!(
            "another retentiond daemon (run or demo) is running against {} (lock {}); stop it first",
            db_file.display(),
            lock_path.display()
        );
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir)?;
    let hash_key = crate::approval::new_token()?;
    let config_path = dir.join("retentiond.toml");
    std::fs::write(&config_path, demo_config(dir, &hash_key))?;
    let config = config::load(&config_path)?;
    crate::logging::init(config.log_format);
    let db = Db::connect(config.database_url.expose_secret()).await?;
    db.execute_script(crate::reference::sql(db.backend()))
        .await?;
    let now = Utc::now().trunc_subsecs(0);
    seed(&db, 3000, now).await?;
    migrate::run(&db, now).await?;
    db.close().await;
    // From here on, the demo is the daemon `retentiond run` starts.
    let app = crate::app::App::build(config).await?;
    let svc = app.service();
    println!(
        "demo: 3000 synthetic customers over two venues in {}/retention.db",
        dir.display()
    );
    for venue in &svc.config.venues {
        let result = cycle::run_venue_cycle(svc, venue, now, false).await?;
        if let Some(selection) = &result.selection {
            println!(
                "demo: {} ({}): {}",
                venue.name,
                venue.action.as_str(),
                serde_json::to_string(selection)?
            );
        }
        if let Some(held) = result.held_back.as_ref().and_then(|h| h.in_words()) {
            println!("demo: {}: {held}", venue.name);
        }
        if let (Some(selection), Some(rule)) = (&result.prospects, venue.prospects) {
            println!(
                "demo: {} prospects, never ordered ({}): {}",
                venue.name,
                rule.action.as_str(),
                serde_json::to_string(selection)?
            );
        }
    }
    let mailer = mail::Mailer::from_config(&svc.config.mail)?;
    mail::deliver_due(svc, &mailer, now).await?;
    println!(
        "\nApproval links (the emails are in {}/outbox):",
        dir.display()
    );
    for link in links_in_outbox(&dir.join("outbox"))? {
        println!("  {link}");
    }
    println!("\nOpen a link, type the number of customers and approve: the next minute's cycle applies it");
    println!(
        "and a confirmation email appears in {}/outbox. Try `retentiond --config {} audit`.",
        dir.display(),
        config_path.display()
    );
    println!("Serving on {} (Ctrl-C stops).", svc.config.http.bind);
    app.run(crate::app::signal()).await
}
