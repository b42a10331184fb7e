//! Property tests: the SQL selection against a plain in-memory reading of SPEC 2 on both
//! backends, and hostile configuration values that must be refused with the key named.

use crate::common::{config_toml, delete_venue, t, TestDb};
use chrono::Duration;
use proptest::prelude::*;
use retentiond::config::load_with_env;
use retentiond::db::Query;
use retentiond::policy::{self, CalendarPeriod};
use retentiond::selection::{self, Scope};
use std::collections::BTreeMap;

#[derive(Debug, Clone)]
struct Customer {
    venue: i64,
    created: i64,
    hold: bool,
    orders: Vec<i64>,
}

/// Offsets in seconds from the cutoff that sit on and around its edges.
fn offset() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(0_i64),
        Just(-1),
        Just(1),
        Just(-86_400),
        Just(3_600),
        -40_000_000_i64..40_000_000,
    ]
}

fn customer() -> impl Strategy<Value = Customer> {
    (
        1_i64..=2,
        offset(),
        proptest::bool::weighted(0.15),
        proptest::collection::vec(offset(), 0..4),
    )
        .prop_map(|(venue, created, hold, orders)| Customer {
            venue,
            created,
            hold,
            orders,
        })
}

fn case() -> impl Strategy<Value = (String, String, i64, Vec<Customer>)> {
    (
        prop_oneof![
            Just("Europe/London"),
            Just("America/New_York"),
            Just("UTC"),
            Just("Asia/Kolkata"),
            Just("Australia/Sydney")
        ],
        prop_oneof![
            Just("1 day"),
            Just("1 month"),
            Just("18 months"),
            Just("3 years"),
            Just("400 days")
        ],
        0_i64..(4 * 365 * 86_400),
        proptest::collection::vec(customer(), 0..25),
    )
        .prop_map(|(tz, period, at, customers)| (tz.to_string(), period.to_string(), at, customers))
}

fn selection_matches_model(db: TestDb) {
    let rt = tokio::runtime::Handle::current();
    let config = proptest::test_runner::Config {
        cases: 48,
        failure_persistence: None,
        ..Default::default()
    };
    proptest!(config, |((tz, period, at_offset, customers) in case())| {
        let at = t("2024-01-01 00:00:00") + Duration::seconds(at_offset);
        let venue_toml = delete_venue(1, &period, "").replace("Europe/London", &tz);
        let cfg = db.config(&venue_toml);
        let venue = cfg.venue(1).unwrap().clone();
        let period: CalendarPeriod = period.parse().unwrap();
        let cutoff = policy::cutoff(at, venue.timezone, period);
        let at_cutoff = |offset: i64| cutoff + Duration::seconds(offset);
        let found = tokio::task::block_in_place(|| rt.block_on(async {
            db.db.execute(&Query::new("DELETE FROM orders")).await.unwrap();
            db.db.execute(&Query::new("DELETE FROM customers")).await.unwrap();
            let mut ids = Vec::new();
            for c in &customers {
                let mut q = Query::new("INSERT INTO customers (venue_id, legal_hold, created_at) VALUES (");
                q.bind(c.venue).push(", ").bind(crate::common::flag(db.backend(), c.hold)).push(", ").bind(at_cutoff(c.created)).push(") RETURNING id");
                let id = db.db.fetch_one(&q).await.unwrap().i64(0).unwrap();
                for o in &c.orders {
                    let mut q = Query::new("INSERT INTO orders (venue_id, customer_id, placed_at, total_pence) VALUES (");
                    q.bind(c.venue).push(", ").bind(id).push(", ").bind(at_cutoff(*o)).push(", 100)");
                    db.db.execute(&q).await.unwrap();
                }
                ids.push(id);
            }
            let scope = Scope { backend: db.db.backend(), schema: &cfg.schema, venue: &venue, cutoff, at: cutoff, kept_since: cutoff, exclusions: retentiond::selection::Exclusions::ALL, rule: Default::default() };
            (ids, selection::candidate_ids(&db.db, &scope).await.unwrap())
        }));
        let (ids, selected) = found;
        // SPEC 2, read plainly.
        let expected: Vec<i64> = customers
            .iter()
            .zip(&ids)
            .filter(|(c, _)| c.venue == 1 && at_cutoff(c.created) < cutoff && !c.hold && c.orders.iter().all(|o| at_cutoff(*o) < cutoff))
            .map(|(_, id)| *id)
            .collect();
        prop_assert_eq!(selected, expected);
    });
}

fn run_blocking(body: fn(TestDb), postgres: bool) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let db = rt.block_on(async {
        let db = if postgres {
            TestDb::postgres().await
        } else {
            Some(TestDb::sqlite().await)
        };
        if let Some(db) = &db {
            db.migrate().await;
        }
        db
    });
    let Some(db) = db else { return };
    let _guard = rt.enter();
    rt.block_on(async move { tokio::task::block_in_place(|| body(db)) });
}

#[test]
fn sqlite_selection_matches_an_in_memory_model() {
    run_blocking(selection_matches_model, false);
}

#[test]
fn postgres_selection_matches_an_in_memory_model() {
    run_blocking(selection_matches_model, true);
}

/// A configuration value that a hostile or careless hand might write.
fn hostile_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("customers; drop table x".to_string()),
        Just("\"quoted\"".to_string()),
        Just("naïve".to_string()),
        Just("ünïcödé".to_string()),
        Just("".to_string()),
        Just("-3 years".to_string()),
        Just("0 days".to_string()),
        Just("99999999999 years".to_string()),
        Just("3 fortnights".to_string()),
        Just("61 * * * * *".to_string()),
        Just("Mars/Olympus_Mons".to_string()),
        "[a-z ;'\"\\-]{0,20}".prop_map(|s| s),
    ]
}

#[test]
fn hostile_configuration_values_are_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("retentiond.toml");
    let keys: &[(&str, &str, &str)] = &[
        (
            "[schema]\ncustomers = \"customers\"",
            "[schema]\ncustomers = \"{}\"",
            "schema.customers",
        ),
        (
            "inactive_for = \"3 years\"",
            "inactive_for = \"{}\"",
            "venues[0].inactive_for",
        ),
        (
            "timezone = \"Europe/London\"",
            "timezone = \"{}\"",
            "venues[0].timezone",
        ),
        (
            "max_share = 1.0",
            "max_share = 1.0\ncron = \"{}\"",
            "venues[0].cron",
        ),
        (
            "approvers = [\"boxoffice@venue2.example\"]",
            "approvers = [\"{}\"]",
            "venues[0].approvers[0]",
        ),
    ];
    let good = config_toml(
        "sqlite:///nonexistent/never.db",
        &delete_venue(2, "3 years", ""),
    )
    .replace("[schema]", "[schema]\ncustomers = \"customers\"");
    assert!(load_with_env(
        &{
            std::fs::write(&path, &good).unwrap();
            path.clone()
        },
        BTreeMap::new()
    )
    .is_ok());
    let config = proptest::test_runner::Config {
        cases: 200,
        failure_persistence: None,
        ..Default::default()
    };
    proptest!(config, |(value in hostile_value(), which in 0..keys.len())| {
        let (find, replace, key) = keys[which];
        let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
        let text = good.replace(find, &replace.replace("{}", &escaped));
        std::fs::write(&path, &text).unwrap();
        let loaded = std::panic::catch_unwind(|| load_with_env(&path, BTreeMap::new()));
        let loaded = loaded.expect("loading never panics");
        if let Err(e) = &loaded {
            let message = e.to_string();
            prop_assert!(message.contains("retentiond.toml"), "names the file: {}", message);
            prop_assert!(!message.contains('\n'), "one line: {}", message);
        }
        // Whatever a random string was, an accepted value must be a valid one for its key.
        if let Ok(config) = loaded {
            let venue = &config.venues[0];
            prop_assert!(retentiond::db::Ident::new(config.schema.customers.name()).is_ok());
            prop_assert!(venue.approvers[0].contains('@'));
        } else if let Err(e) = loaded {
            prop_assert!(e.to_string().contains(key), "names {}: {}", key, e);
        }
    });
}

#[test]
fn duplicate_venue_ids_and_empty_approvers_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("retentiond.toml");
    std::fs::write(
        &path,
        config_toml(
            "sqlite://x.db",
            &(delete_venue(2, "3 years", "") + &delete_venue(2, "1 year", "")),
        ),
    )
    .unwrap();
    assert!(load_with_env(&path, BTreeMap::new())
        .unwrap_err()
        .to_string()
        .contains("venues[1].id"));
    std::fs::write(
        &path,
        config_toml(
            "sqlite://x.db",
            &delete_venue(2, "3 years", "").replace("[\"boxoffice@venue2.example\"]", "[]"),
        ),
    )
    .unwrap();
    assert!(load_with_env(&path, BTreeMap::new())
        .unwrap_err()
        .to_string()
        .contains("venues[0].approvers"));
}
