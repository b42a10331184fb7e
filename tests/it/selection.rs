//! Selection edge cases of SPEC 2, on both backends.

use crate::common::{anonymise_venue, delete_venue, t, TestDb};
use retentiond::cycle::{run_venue_cycle, Selection};
use retentiond::db::Query;
use retentiond::selection::{self, Exclusions, Scope};
use retentiond::Service;

/// Cycle time: 12:00 UTC on 15 June 2026 (BST). Three years back in London is midnight BST on
/// 15 June 2023, i.e. 2023-06-14 23:00:00 UTC.
const AT: &str = "2026-06-15 12:00:00";
const CUTOFF: &str = "2023-06-14 23:00:00";

/// The candidates as the cycle selects them (leaving out retentiond's exclusion tables that
/// have no rows), checked against the selection that consults all of them.
async fn candidates(svc: &Service, venue_id: i64, at: &str) -> Vec<i64> {
    let venue = svc.config.venue(venue_id).unwrap();
    let all_checks = Scope::new(&svc.config, svc.db.backend(), venue, t(at));
    let as_the_cycle = all_checks.without_empty(&svc.db).await.unwrap();
    let found = selection::candidate_ids(&svc.db, &as_the_cycle)
        .await
        .unwrap();
    assert_eq!(
        found,
        selection::candidate_ids(&svc.db, &all_checks)
            .await
            .unwrap(),
        "leaving out empty tables ({:?}) changed the selection",
        as_the_cycle.exclusions
    );
    found
}

async fn exclusions_of(svc: &Service) -> Exclusions {
    let venue = svc.config.venue(1).unwrap();
    Scope::new(&svc.config, svc.db.backend(), venue, t(AT))
        .without_empty(&svc.db)
        .await
        .unwrap()
        .exclusions
}

async fn cutoff_boundaries_are_exact(db: TestDb) {
    db.migrate().await;
    let svc = db.service(&anonymise_venue(1, "3 years", "")).await;
    let at_cutoff = db.customer(1, "2020-01-01 00:00:00").await;
    db.order(at_cutoff, CUTOFF).await;
    let second_before = db.customer(1, "2020-01-01 00:00:00").await;
    db.order(second_before, "2023-06-14 22:59:59").await;
    let no_orders_old = db.customer(1, "2020-01-01 00:00:00").await;
    let no_orders_new = db.customer(1, "2024-01-01 00:00:00").await;
    let created_at_cutoff = db.customer(1, CUTOFF).await;
    let created_second_before = db.customer(1, "2023-06-14 22:59:59").await;
    let future_order = db.customer(1, "2020-01-01 00:00:00").await;
    db.order(future_order, "2030-01-01 00:00:00").await;

    let found = candidates(&svc, 1, AT).await;

    assert_eq!(
        found,
        vec![second_before, no_orders_old, created_second_before]
    );
    for excluded in [at_cutoff, no_orders_new, created_at_cutoff, future_order] {
        assert!(!found.contains(&excluded));
    }
}

async fn legal_hold_and_other_venues_are_excluded(db: TestDb) {
    db.migrate().await;
    let svc = db
        .service(&(anonymise_venue(1, "3 years", "") + &delete_venue(2, "3 years", "")))
        .await;
    let held = db.customer_with(1, "2020-01-01 00:00:00", 900, true).await;
    let free = db.customer(1, "2020-01-01 00:00:00").await;
    let other_venue = db.customer(2, "2020-01-01 00:00:00").await;

    assert_eq!(candidates(&svc, 1, AT).await, vec![free]);
    assert_eq!(candidates(&svc, 2, AT).await, vec![other_venue]);
    assert!(!candidates(&svc, 1, AT).await.contains(&held));
}

async fn configured_unknown_customer_is_never_selected(db: TestDb) {
    db.migrate().await;
    let unknown = db.customer(2, "2010-01-01 00:00:00").await;
    let old = db.customer(2, "2010-01-01 00:00:00").await;
    let svc = db
        .service(&delete_venue(
            2,
            "3 years",
            &format!("unknown_customer_id = {unknown}"),
        ))
        .await;

    assert_eq!(candidates(&svc, 2, AT).await, vec![old]);
}

async fn already_anonymised_customers_are_not_selected_again(db: TestDb) {
    db.migrate().await;
    let svc = db.service(&anonymise_venue(1, "3 years", "")).await;
    let venue = svc.config.venue(1).unwrap().clone();
    let c = db.customer(1, "2020-01-01 00:00:00").await;
    let none = Exclusions {
        unknown_customers: false,
        anonymised: false,
        kept: false,
    };
    assert_eq!(exclusions_of(&svc).await, none, "a new database");
    let Selection::Created { report_id, .. } = run_venue_cycle(&svc, &venue, t(AT), false)
        .await
        .unwrap()
        .selection
        .unwrap()
    else {
        panic!("expected a report")
    };
    crate::common::operator_approves(&svc.db, report_id, t(AT)).await;
    run_venue_cycle(&svc, &venue, t("2026-06-16 12:00:00"), false)
        .await
        .unwrap();

    assert_eq!(
        db.count("SELECT COUNT(*) FROM retention_anonymised").await,
        1
    );
    assert_eq!(
        exclusions_of(&svc).await,
        Exclusions {
            anonymised: true,
            ..none
        },
        "the anonymised customers are consulted once there are any"
    );
    assert!(
        candidates(&svc, 1, "2030-01-01 00:00:00").await.is_empty(),
        "customer {c} was selected again"
    );
}

async fn month_end_cutoff_clamps_to_last_day_of_february(db: TestDb) {
    db.migrate().await;
    let svc = db
        .service(&anonymise_venue(1, "1 month", "").replace("Europe/London", "UTC"))
        .await;
    let before = db.customer(1, "2025-01-01 00:00:00").await;
    db.order(before, "2026-02-27 23:59:59").await;
    let on_cutoff = db.customer(1, "2025-01-01 00:00:00").await;
    db.order(on_cutoff, "2026-02-28 00:00:00").await;

    assert_eq!(
        candidates(&svc, 1, "2026-03-31 12:00:00").await,
        vec![before]
    );
}

async fn cutoff_across_dst_uses_local_midnight(db: TestDb) {
    db.migrate().await;
    // Autumn: on 26 October 2026 (GMT) one day back is 25 October, whose midnight was BST (23:00 UTC on the 24th).
    let svc = db.service(&anonymise_venue(1, "1 day", "")).await;
    let before = db.customer(1, "2025-01-01 00:00:00").await;
    db.order(before, "2026-10-24 22:59:59").await;
    let after = db.customer(1, "2025-01-01 00:00:00").await;
    db.order(after, "2026-10-24 23:00:00").await;

    assert_eq!(
        candidates(&svc, 1, "2026-10-26 10:00:00").await,
        vec![before]
    );
}

async fn activity_columns_count_as_activity(db: TestDb) {
    db.execute_add_column().await;
    db.migrate().await;
    let venue = anonymise_venue(1, "3 years", "").replace(
        "marketing_opt_in = \"keep\"",
        "marketing_opt_in = \"keep\"\nlast_login = \"null\"",
    );
    let mut config = db.config(&venue);
    config.schema.customer_activity = vec![retentiond::db::Ident::new("last_login").unwrap()];
    let svc = Service::new(db.db.clone(), config);
    let logged_in = db.customer(1, "2020-01-01 00:00:00").await;
    let mut q = Query::new("UPDATE customers SET last_login = ");
    q.bind(t("2025-01-01 00:00:00"))
        .push(" WHERE id = ")
        .bind(logged_in);
    db.db.execute(&q).await.unwrap();
    let idle = db.customer(1, "2020-01-01 00:00:00").await;

    assert_eq!(candidates(&svc, 1, AT).await, vec![idle]);
}

impl TestDb {
    async fn execute_add_column(&self) {
        let ty = match self.backend() {
            retentiond::db::Backend::Sqlite => "TEXT",
            retentiond::db::Backend::Postgres => "TIMESTAMPTZ",
            retentiond::db::Backend::Mysql => "DATETIME(6)",
        };
        self.db
            .execute(&Query::new(&format!(
                "ALTER TABLE customers ADD COLUMN last_login {ty}"
            )))
            .await
            .unwrap();
    }
}

/// `[[schema.activity]]` of the tests, on the reference schema's tables: tickets keyed by
/// order (a performance time) and memberships keyed by customer (an expiry date).
const ACTIVITY_TABLES: &str = r#"
[[schema.activity]]
table = "tickets"
column = "order_id"
via = "orders"
at = "performance_at"
[[schema.activity]]
table = "memberships"
column = "customer_id"
at = "expires_at"
"#;

impl TestDb {
    async fn ticket(&self, order: i64, performance_at: &str) {
        let mut q = Query::new("INSERT INTO tickets (order_id, performance_at) VALUES (");
        q.bind(order).push(", ").bind(t(performance_at)).push(")");
        self.db.execute(&q).await.unwrap();
    }

    async fn membership(&self, customer: i64, expires: chrono::NaiveDate) {
        let mut q = Query::new("INSERT INTO memberships (customer_id, level, expires_at) VALUES (");
        q.bind(customer)
            .push(", 'Friend', ")
            .bind(retentiond::db::Value::Date(expires))
            .push(")");
        self.db.execute(&q).await.unwrap();
    }
}

/// A ticket for a performance after the cutoff (next spring's, bought four years ago) and a
/// membership running past it keep a customer; old ones do not. The report's last activity is
/// the latest of orders and every activity table, and the re-check at apply honours activity
/// that appeared after the report was made.
async fn activity_tables_count_as_activity(db: TestDb) {
    db.migrate().await;
    let date = |y, m, d| chrono::NaiveDate::from_ymd_opt(y, m, d).unwrap();
    let svc = db
        .service(&(ACTIVITY_TABLES.to_string() + &anonymise_venue(1, "3 years", "")))
        .await;
    let season_ticket = db.customer(1, "2020-01-01 00:00:00").await;
    let order = db.order(season_ticket, "2022-05-01 10:00:00").await;
    db.ticket(order, "2027-03-20 19:30:00").await;
    let member = db.customer(1, "2020-01-01 00:00:00").await;
    db.membership(member, date(2027, 1, 31)).await;
    let lapsed_member = db.customer(1, "2020-01-01 00:00:00").await;
    db.order(lapsed_member, "2020-06-01 10:00:00").await;
    db.membership(lapsed_member, date(2021, 6, 30)).await;
    let old_ticket = db.customer(1, "2020-01-01 00:00:00").await;
    let order = db.order(old_ticket, "2020-02-01 10:00:00").await;
    db.ticket(order, "2020-04-01 19:30:00").await;
    let turns_active = db.customer(1, "2020-01-01 00:00:00").await;

    assert_eq!(
        candidates(&svc, 1, AT).await,
        vec![lapsed_member, old_ticket, turns_active]
    );

    let report_id = crate::common::approved_report(&svc, 1).await;
    let shown = retentiond::reports::customers_with_ids(
        &svc.db,
        &svc.config.schema,
        report_id,
        &[lapsed_member, old_ticket, turns_active],
    )
    .await
    .unwrap();
    let last: Vec<Option<chrono::NaiveDate>> = shown
        .iter()
        .map(|c| c.last_activity.map(|t| t.date_naive()))
        .collect();
    assert_eq!(
        last,
        vec![Some(date(2021, 6, 30)), Some(date(2020, 4, 1)), None],
        "the latest of orders, tickets and memberships"
    );

    // Between report and apply, the last one buys a ticket for a future performance.
    let order = db.order(turns_active, "2019-01-01 10:00:00").await;
    db.ticket(order, "2026-09-01 19:30:00").await;
    crate::common::cycle(&svc, 1, crate::common::NEXT_DAY).await;
    let outcome = |id: i64| {
        let db = &db;
        async move {
            db.count(&format!(
                "SELECT COUNT(*) FROM retention_report_items WHERE customer_id = {id} AND outcome = 'skipped_active'"
            ))
            .await
        }
    };
    assert_eq!(
        outcome(turns_active).await,
        1,
        "re-checked as active at apply"
    );
    assert_eq!(
        db.count(&format!(
            "SELECT COUNT(*) FROM retention_report_items WHERE report_id = {report_id} AND outcome = 'anonymised'"
        ))
        .await,
        2
    );
}

on_both_backends!(
    cutoff_boundaries_are_exact,
    legal_hold_and_other_venues_are_excluded,
    configured_unknown_customer_is_never_selected,
    already_anonymised_customers_are_not_selected_again,
    month_end_cutoff_clamps_to_last_day_of_february,
    cutoff_across_dst_uses_local_midnight,
    activity_columns_count_as_activity,
    activity_tables_count_as_activity,
);
