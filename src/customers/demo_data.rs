//! The demo's synthetic customers in the reference schema (SPEC 8): names, addresses and orders
//! spread over ten years, with the tickets, memberships, Gift Aid declarations and balances that
//! keep some of them (SPEC 12). Deterministic, so every demo shows the same venues.

use crate::db::{Db, Query, Value};
use anyhow::Result;
use chrono::{DateTime, Duration, Utc};

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

/// Synthetic customers: created over the last ten years, most with a few orders spread up to
/// now, so that roughly a third have been inactive for years.
pub async fn seed(db: &Db, customers: u32, now: DateTime<Utc>) -> Result<()> {
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
