//! Reports and actions (SPEC 3, 4): delete, anonymise, the re-check at apply time, the brake,
//! and a batch that fails part-way; on both backends.

use crate::common::{anonymise_venue, delete_venue, t, TestDb, HASH_KEY};
use retentiond::cycle::{run_venue_cycle, Selection};
use retentiond::db::Query;
use retentiond::decision::{decide, Actor, Decision};
use retentiond::policy::{keyed_hash, Outcome, ReportState};
use retentiond::{reports, selection, Service};

use crate::common::{approved_report, cycle, AT, NEXT_DAY};

async fn delete_moves_orders_to_unknown_customer_and_removes_notes(db: TestDb) {
    db.migrate().await;
    let svc = db.service(&delete_venue(2, "3 years", "")).await;
    let gone = db.customer(2, "2019-01-01 00:00:00").await;
    db.order(gone, "2020-02-02 10:00:00").await;
    db.order(gone, "2020-03-03 10:00:00").await;
    db.note(gone).await;
    let active = db.customer(2, "2019-01-01 00:00:00").await;
    db.order(active, "2026-01-01 10:00:00").await;
    db.note(active).await;
    let report = approved_report(&svc, 2).await;

    let result = cycle(&svc, 2, NEXT_DAY).await;

    assert_eq!(result.applied[0].counts.get(&Outcome::Deleted), Some(&1));
    assert!(db.customer_row(gone).await.is_none());
    let unknown = db
        .count("SELECT customer_id FROM retention_unknown_customers WHERE venue_id = 2")
        .await;
    assert_eq!(
        db.count(&format!(
            "SELECT COUNT(*) FROM orders WHERE customer_id = {unknown}"
        ))
        .await,
        2
    );
    assert_eq!(
        db.count(&format!(
            "SELECT COUNT(*) FROM customer_notes WHERE customer_id = {gone}"
        ))
        .await,
        0
    );
    assert_eq!(
        db.count(&format!(
            "SELECT COUNT(*) FROM customer_notes WHERE customer_id = {active}"
        ))
        .await,
        1
    );
    assert_eq!(
        db.count(&format!(
            "SELECT COUNT(*) FROM orders WHERE customer_id = {active}"
        ))
        .await,
        1
    );
    assert_eq!(
        reports::get(&svc.db, report).await.unwrap().unwrap().state,
        ReportState::Applied
    );
}

async fn unknown_customer_is_created_once_and_reused(db: TestDb) {
    db.migrate().await;
    let svc = db
        .service(&delete_venue(2, "3 years", "report_interval = \"1 day\""))
        .await;
    let first = db.customer(2, "2019-01-01 00:00:00").await;
    db.order(first, "2020-01-01 00:00:00").await;
    approved_report(&svc, 2).await;
    cycle(&svc, 2, NEXT_DAY).await;
    let unknown = db
        .count("SELECT customer_id FROM retention_unknown_customers WHERE venue_id = 2")
        .await;

    let second = db.customer(2, "2019-01-01 00:00:00").await;
    db.order(second, "2020-01-01 00:00:00").await;
    let Some(Selection::Created {
        report_id,
        customers,
    }) = cycle(&svc, 2, "2026-06-18 12:00:00").await.selection
    else {
        panic!("expected a second report")
    };
    assert_eq!(customers, 1, "the Unknown Customer must not be selected");
    crate::common::operator_approves(&svc.db, report_id, t(AT)).await;
    cycle(&svc, 2, "2026-06-19 12:00:00").await;

    assert_eq!(
        db.count("SELECT COUNT(*) FROM retention_unknown_customers")
            .await,
        1
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM customers WHERE first_name = 'Unknown'")
            .await,
        1
    );
    assert_eq!(
        db.count(&format!(
            "SELECT COUNT(*) FROM orders WHERE customer_id = {unknown}"
        ))
        .await,
        2
    );
}

async fn anonymise_applies_every_strategy_and_keeps_the_rest(db: TestDb) {
    db.migrate().await;
    let svc = db.service(&anonymise_venue(1, "3 years", "")).await;
    let c = db.customer(1, "2019-01-01 00:00:00").await;
    db.order(c, "2020-01-01 00:00:00").await;
    let before = db.customer_row(c).await.unwrap();
    approved_report(&svc, 1).await;

    cycle(&svc, 1, NEXT_DAY).await;

    let after = db.customer_row(c).await.unwrap();
    let email = before["email"].clone().unwrap();
    assert_eq!(after["title"].as_deref(), Some("[removed]"));
    assert_eq!(after["first_name"], None);
    assert_eq!(after["last_name"].as_deref(), Some("gone"));
    assert_eq!(
        after["email"],
        Some(keyed_hash(HASH_KEY.as_bytes(), &email))
    );
    assert_ne!(
        after["email"],
        Some(keyed_hash(b"another-key-0123456789", &email))
    );
    assert_eq!(after["phone"], None);
    assert_eq!(after["address_line1"], None);
    assert_eq!(after["address_line2"], None);
    assert_eq!(after["postcode"].as_deref(), Some("SW1A"));
    assert_eq!(after["date_of_birth"].as_deref(), Some("1980-01-01"));
    for kept in [
        "city",
        "country",
        "marketing_opt_in",
        "venue_id",
        "created_at",
        "legal_hold",
    ] {
        assert_eq!(after[kept], before[kept], "{kept} must be kept");
    }
    assert_eq!(
        db.count(&format!(
            "SELECT COUNT(*) FROM orders WHERE customer_id = {c}"
        ))
        .await,
        1
    );
}

async fn hash_is_stable_for_one_key(db: TestDb) {
    db.migrate().await;
    let svc = db.service(&anonymise_venue(1, "3 years", "")).await;
    let a = db.customer_with(1, "2019-01-01 00:00:00", 7, false).await;
    let b = db.customer_with(1, "2019-01-01 00:00:00", 7, false).await; // same email as a
    approved_report(&svc, 1).await;

    cycle(&svc, 1, NEXT_DAY).await;

    let (ra, rb) = (
        db.customer_row(a).await.unwrap(),
        db.customer_row(b).await.unwrap(),
    );
    assert_eq!(ra["email"], rb["email"]);
    assert_eq!(ra["email"].as_ref().unwrap().len(), 64);
}

/// The database's keyed hash is Rust's, byte for byte, for any text: accents, symbols, empty,
/// and a key longer than SHA-256's block.
async fn keyed_hash_in_sql_is_rusts_for_any_text(db: TestDb) {
    let long_key = "k".repeat(100);
    for key in [HASH_KEY, long_key.as_str()] {
        for value in ["ann@example.org", "Zoë Ünïcode ✓ 07700 900123", ""] {
            let mut q = Query::default();
            let placeholder = q.param(value.to_string());
            let hash = db
                .db
                .backend()
                .keyed_hash_sql(key.as_bytes(), &placeholder, &mut |v| q.param(v));
            q.push(&format!("SELECT {hash}"));
            let row = db.db.fetch_one(&q).await.unwrap();
            assert_eq!(
                row.get(0).to_text(),
                Some(keyed_hash(key.as_bytes(), value)),
                "{value:?} with a key of {} bytes",
                key.len()
            );
        }
    }
}

async fn apply_skips_customers_who_became_active_held_or_gone(db: TestDb) {
    db.migrate().await;
    let svc = db.service(&delete_venue(2, "3 years", "")).await;
    let ordered_since = db.customer(2, "2019-01-01 00:00:00").await;
    let held_since = db.customer(2, "2019-01-01 00:00:00").await;
    let gone_since = db.customer(2, "2019-01-01 00:00:00").await;
    let still_idle = db.customer(2, "2019-01-01 00:00:00").await;
    let report = approved_report(&svc, 2).await;
    db.order(ordered_since, "2026-06-15 18:00:00").await;
    db.set_legal_hold(held_since).await;
    db.db
        .execute(&Query::new(&format!(
            "DELETE FROM customers WHERE id = {gone_since}"
        )))
        .await
        .unwrap();
    let not_on_report = db.customer(2, "2019-01-01 00:00:00").await;
    let before = db.customer_row(ordered_since).await;

    let result = cycle(&svc, 2, NEXT_DAY).await;

    let counts = &result.applied[0].counts;
    assert_eq!(counts.get(&Outcome::Deleted), Some(&1));
    assert_eq!(counts.get(&Outcome::SkippedActive), Some(&1));
    assert_eq!(counts.get(&Outcome::SkippedHeld), Some(&1));
    assert_eq!(counts.get(&Outcome::SkippedGone), Some(&1));
    assert!(db.customer_row(still_idle).await.is_none());
    assert_eq!(
        db.customer_row(ordered_since).await,
        before,
        "a customer active again is untouched"
    );
    assert!(db.customer_row(held_since).await.is_some());
    assert!(
        db.customer_row(not_on_report).await.is_some(),
        "a customer not on the report is never touched"
    );
    let stored = reports::outcome_counts(&svc.db, report).await.unwrap();
    assert_eq!(stored.get(&None), None, "every customer has an outcome");
}

async fn nothing_happens_without_approval(db: TestDb) {
    db.migrate().await;
    let svc = db.service(&delete_venue(2, "3 years", "")).await;
    let c = db.customer(2, "2019-01-01 00:00:00").await;
    let first = cycle(&svc, 2, AT).await;
    assert!(matches!(first.selection, Some(Selection::Created { .. })));

    let second = cycle(&svc, 2, NEXT_DAY).await;

    assert!(second.applied.is_empty());
    assert!(matches!(
        second.selection,
        Some(Selection::OpenReport {
            state: ReportState::Pending,
            ..
        })
    ));
    assert!(db.customer_row(c).await.is_some());
}

async fn brake_stops_a_mistyped_policy(db: TestDb) {
    db.migrate().await;
    let svc = db
        .service(&delete_venue(2, "3 days", "").replace("max_share = 1.0", "max_share = 0.75"))
        .await;
    for i in 0..20 {
        let c = db.customer(2, "2019-01-01 00:00:00").await;
        if i == 0 {
            db.order(c, "2026-06-14 12:00:00").await;
        }
    }

    let result = cycle(&svc, 2, AT).await;

    assert!(matches!(
        result.selection,
        Some(Selection::Brake {
            candidates: 19,
            customers: 20,
            ..
        })
    ));
    assert_eq!(db.count("SELECT COUNT(*) FROM retention_reports").await, 0);
    assert_eq!(
        db.count("SELECT COUNT(*) FROM retention_report_items")
            .await,
        0
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM retention_audit WHERE event = 'brake'")
            .await,
        1
    );
}

async fn dry_run_changes_nothing(db: TestDb) {
    db.migrate().await;
    let svc = db.service(&delete_venue(2, "3 years", "")).await;
    db.customer(2, "2019-01-01 00:00:00").await;
    let venue = svc.config.venue(2).unwrap().clone();

    let result = run_venue_cycle(&svc, &venue, t(AT), true).await.unwrap();

    assert!(
        matches!(
            result.selection,
            Some(Selection::WouldCreate { customers: 1 })
        ),
        "{:?}",
        result.selection
    );
    assert_eq!(db.count("SELECT COUNT(*) FROM retention_reports").await, 0);
    let report = approved_report(&svc, 2).await;
    let preview = run_venue_cycle(&svc, &venue, t(NEXT_DAY), true)
        .await
        .unwrap();
    assert_eq!(preview.previews[0].would_process, 1);
    assert_eq!(
        reports::get(&svc.db, report).await.unwrap().unwrap().state,
        ReportState::Approved
    );
    assert_eq!(db.count("SELECT COUNT(*) FROM customers").await, 1);
}

async fn a_dry_run_answers_while_a_cycle_holds_the_venue_and_holds_nothing(db: TestDb) {
    db.migrate().await;
    let svc = db.service(&delete_venue(2, "3 years", "")).await;
    db.customer(2, "2019-01-01 00:00:00").await;
    let venue = svc.config.venue(2).unwrap().clone();
    let held = svc
        .db
        .try_lock_venue(2)
        .await
        .unwrap()
        .expect("the lock is free");

    let dry = run_venue_cycle(&svc, &venue, t(AT), true).await.unwrap();
    assert!(
        dry.ran,
        "a dry run takes no lock, so none keeps it from running"
    );
    assert!(
        matches!(dry.selection, Some(Selection::WouldCreate { customers: 1 })),
        "{:?}",
        dry.selection
    );
    let blocked = run_venue_cycle(&svc, &venue, t(AT), false).await.unwrap();
    assert!(!blocked.ran, "a cycle waits for the venue's lock");

    held.release().await.unwrap();
    let _dry = run_venue_cycle(&svc, &venue, t(AT), true).await.unwrap();
    let cycle = run_venue_cycle(&svc, &venue, t(AT), false).await.unwrap();
    assert!(cycle.ran, "the dry run left no lock behind");
}

async fn dry_run_decides_the_brake_as_a_whole_count_would(db: TestDb) {
    // The dry run counts the venue's customers in the selection's scan (SQLite) or only as far
    // as the brake needs (the others); its decision and, when the brake holds, the count it
    // reports must be those of the whole count.
    db.migrate().await;
    let svc = db
        .service(&delete_venue(2, "3 days", "").replace("max_share = 1.0", "max_share = 0.75"))
        .await;
    let venue = svc.config.venue(2).unwrap().clone();
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(db.customer(2, "2019-01-01 00:00:00").await);
    }
    async fn dry(svc: &Service, venue: &retentiond::config::VenueConfig) -> Option<Selection> {
        run_venue_cycle(svc, venue, t(AT), true)
            .await
            .unwrap()
            .selection
    }
    for &c in &idle[..4] {
        db.order(c, "2026-06-14 12:00:00").await;
    }
    // 16 of 20 is more than 0.75 of them.
    let selection = dry(&svc, &venue).await;
    assert!(
        matches!(
            selection,
            Some(Selection::Brake {
                candidates: 16,
                customers: 20,
                ..
            })
        ),
        "{selection:?}"
    );
    // 15 of 20 is exactly 0.75: the count stops at the 20th customer, the brake is off.
    db.order(idle[4], "2026-06-14 12:00:00").await;
    let selection = dry(&svc, &venue).await;
    assert!(
        matches!(selection, Some(Selection::WouldCreate { customers: 15 })),
        "{selection:?}"
    );
    // 15 of 100: the count stops after 20 of them.
    for _ in 0..80 {
        let c = db.customer(2, "2019-01-01 00:00:00").await;
        db.order(c, "2026-06-14 12:00:00").await;
    }
    let selection = dry(&svc, &venue).await;
    assert!(
        matches!(selection, Some(Selection::WouldCreate { customers: 15 })),
        "{selection:?}"
    );
    assert_eq!(
        selection::count_customers_up_to(&svc.db, &svc.config.schema, 2, 20)
            .await
            .unwrap(),
        20
    );
    assert_eq!(
        selection::count_customers_up_to(&svc.db, &svc.config.schema, 2, 1_000)
            .await
            .unwrap(),
        100
    );
    let scope = selection::Scope::new(&svc.config, svc.db.backend(), &venue, t(AT));
    assert_eq!(
        selection::count_candidates_and_customers(&svc.db, &scope)
            .await
            .unwrap(),
        (15, 100)
    );
    assert_eq!(db.count("SELECT COUNT(*) FROM retention_reports").await, 0);
}

async fn failed_batch_rolls_back_and_the_report_resumes(db: TestDb) {
    // A table that references customers but is not in schema.references blocks the delete of
    // one customer in the second batch.
    db.db
        .execute(&Query::new("CREATE TABLE lockers (id INTEGER PRIMARY KEY, customer_id BIGINT NOT NULL REFERENCES customers(id))"))
        .await
        .unwrap();
    db.migrate().await;
    let mut config = db.config(&delete_venue(2, "3 years", ""));
    config.batch_size = 5;
    let svc = Service::new(db.db.clone(), config);
    let mut ids = Vec::new();
    for _ in 0..12 {
        let c = db.customer(2, "2019-01-01 00:00:00").await;
        db.order(c, "2020-01-01 00:00:00").await;
        ids.push(c);
    }
    db.db
        .execute(&Query::new(&format!(
            "INSERT INTO lockers (id, customer_id) VALUES (1, {})",
            ids[7]
        )))
        .await
        .unwrap();
    let report = approved_report(&svc, 2).await;
    let venue = svc.config.venue(2).unwrap().clone();

    let failed = run_venue_cycle(&svc, &venue, t(NEXT_DAY), false).await;

    assert!(failed.is_err());
    for id in &ids[..5] {
        assert!(
            db.customer_row(*id).await.is_none(),
            "first batch was applied"
        );
    }
    for id in &ids[5..] {
        assert!(
            db.customer_row(*id).await.is_some(),
            "customer {id} of the failed batch is untouched"
        );
        assert_eq!(
            db.count(&format!(
                "SELECT COUNT(*) FROM orders WHERE customer_id = {id}"
            ))
            .await,
            1
        );
    }
    assert_eq!(
        reports::get(&svc.db, report).await.unwrap().unwrap().state,
        ReportState::Applying
    );

    db.db
        .execute(&Query::new("DELETE FROM lockers"))
        .await
        .unwrap();
    let resumed = run_venue_cycle(&svc, &venue, t("2026-06-17 12:00:00"), false)
        .await
        .unwrap();

    assert_eq!(resumed.applied[0].counts.get(&Outcome::Deleted), Some(&7));
    assert_eq!(
        db.count("SELECT COUNT(*) FROM retention_report_items WHERE outcome = 'deleted'")
            .await,
        12
    );
    assert_eq!(
        reports::get(&svc.db, report).await.unwrap().unwrap().state,
        ReportState::Applied
    );
}

/// A batch held up past `apply.max_transaction_ms` (here by a row lock another session holds) is
/// stopped, rolled back and retried smaller; every customer is still processed exactly once.
async fn a_batch_past_its_deadline_is_rolled_back_and_retried_smaller(db: TestDb) {
    db.migrate().await;
    let mut config = db.config(&anonymise_venue(1, "3 years", ""));
    config.max_transaction_ms = 150; // batches past 270 ms are stopped
    let svc = Service::new(db.db.clone(), config);
    let mut ids = Vec::new();
    for _ in 0..40 {
        let c = db.customer(1, "2019-01-01 00:00:00").await;
        db.order(c, "2020-01-01 00:00:00").await;
        ids.push(c);
    }
    let report = approved_report(&svc, 1).await;
    let venue = svc.config.venue(1).unwrap().clone();
    // Another session (a box office, say) holds customer 30's row for 1.5 s.
    let mut holder = db.db.begin().await.unwrap();
    holder
        .lock_for_update(&Query::new(&format!(
            "SELECT id FROM customers WHERE id = {}",
            ids[30]
        )))
        .await
        .unwrap();
    let released = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        holder.commit().await.unwrap();
    });

    let result = run_venue_cycle(&svc, &venue, t(NEXT_DAY), false)
        .await
        .unwrap();
    released.await.unwrap();

    let applied = &result.applied[0];
    assert!(
        applied.batches_given_up >= 1,
        "the held-up batch was stopped at its deadline: {applied:?}"
    );
    assert_eq!(applied.counts.get(&Outcome::Anonymised), Some(&40));
    for id in &ids {
        let row = db.customer_row(*id).await.unwrap();
        assert_eq!(row["first_name"], None, "customer {id} was anonymised");
    }
    assert_eq!(
        db.count(&format!(
            "SELECT COUNT(*) FROM retention_report_items WHERE outcome = 'anonymised' AND report_id = {report}"
        ))
        .await,
        40
    );
    assert_eq!(
        reports::get(&svc.db, report).await.unwrap().unwrap().state,
        ReportState::Applied
    );
}

async fn cancelled_report_is_never_applied(db: TestDb) {
    db.migrate().await;
    let svc = db.service(&delete_venue(2, "3 years", "")).await;
    let c = db.customer(2, "2019-01-01 00:00:00").await;
    let report = approved_report(&svc, 2).await;
    let cancel = |reason| {
        decide(
            &svc.db,
            report,
            Actor::Operator(""),
            Decision::Cancel { reason },
            t(AT),
        )
    };
    cancel("venue changed its mind").await.unwrap().unwrap();

    let result = cycle(&svc, 2, NEXT_DAY).await;

    assert!(result.applied.is_empty());
    assert!(db.customer_row(c).await.is_some());
    assert!(
        cancel("again").await.unwrap().is_err(),
        "a cancelled report is not cancelled twice"
    );
}

/// A cycle that finishes a report selects anew in the same pass, judged on what its one read of
/// the open reports leaves open: after an apply, a customer who became a candidate since the
/// report was made gets a report of their own (never the applied ones); after an expiry, the
/// expired report's customers are reported again at once.
async fn a_cycle_selects_anew_after_it_applies_or_expires_a_report(db: TestDb) {
    db.migrate().await;
    let svc = db
        .service(&delete_venue(2, "3 years", "report_interval = \"1 day\""))
        .await;
    let gone = db.customer(2, "2019-01-01 00:00:00").await;
    db.order(gone, "2020-02-02 10:00:00").await;
    let applied = approved_report(&svc, 2).await;
    // Imported after the report was made, idle for years.
    let later = db.customer(2, "2019-05-05 00:00:00").await;

    let night = cycle(&svc, 2, NEXT_DAY).await;

    assert_eq!(night.applied[0].report_id, applied);
    assert_eq!(night.applied[0].counts.get(&Outcome::Deleted), Some(&1));
    let Some(Selection::Created {
        report_id,
        customers,
    }) = night.selection
    else {
        panic!(
            "expected a new report after the apply, got {:?}",
            night.selection
        )
    };
    assert_eq!(customers, 1);
    assert_eq!(
        db.count(&format!(
            "SELECT customer_id FROM retention_report_items WHERE report_id = {report_id}"
        ))
        .await,
        later
    );

    // Left pending past its links' life, it expires, and the same cycle reports its customer again.
    let expiring = report_id;
    let weeks_later = cycle(&svc, 2, "2026-07-06 12:00:00").await;
    assert_eq!(weeks_later.expired, vec![expiring]);
    let Some(Selection::Created {
        report_id,
        customers,
    }) = weeks_later.selection
    else {
        panic!(
            "expected a new report after the expiry, got {:?}",
            weeks_later.selection
        )
    };
    assert_ne!(report_id, expiring);
    assert_eq!(customers, 1);
    assert_eq!(
        reports::get(&svc.db, expiring)
            .await
            .unwrap()
            .unwrap()
            .state,
        ReportState::Expired
    );
}

on_both_backends!(
    a_cycle_selects_anew_after_it_applies_or_expires_a_report,
    delete_moves_orders_to_unknown_customer_and_removes_notes,
    unknown_customer_is_created_once_and_reused,
    anonymise_applies_every_strategy_and_keeps_the_rest,
    hash_is_stable_for_one_key,
    keyed_hash_in_sql_is_rusts_for_any_text,
    apply_skips_customers_who_became_active_held_or_gone,
    nothing_happens_without_approval,
    brake_stops_a_mistyped_policy,
    dry_run_changes_nothing,
    dry_run_decides_the_brake_as_a_whole_count_would,
    a_dry_run_answers_while_a_cycle_holds_the_venue_and_holds_nothing,
    failed_batch_rolls_back_and_the_report_resumes,
    cancelled_report_is_never_applied,
);

// Only PostgreSQL stops a statement at a transaction's deadline (`Backend::stops_statements_at_deadline`).
crate::on_backend!(
    postgres_deadline,
    crate::common::TestDb::postgres().await,
    a_batch_past_its_deadline_is_rolled_back_and_retried_smaller
);
