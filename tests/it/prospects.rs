//! Prospects (SPEC 12): with `[venues.prospects]`, customers who never ordered follow their own
//! period and action, in reports of their own that say which rule they follow; buyers follow
//! the venue's policy.

use crate::common::{anonymise_venue, cycle, operator_approves, t, TestDb, AT, NEXT_DAY};
use retentiond::cycle::Selection;
use retentiond::policy::Action;
use retentiond::reports::{self, Rule};

async fn prospects_follow_their_own_rule(db: TestDb) {
    db.migrate().await;
    let svc = db
        .service(&anonymise_venue(
            1,
            "3 years",
            "[venues.prospects]\ninactive_for = \"1 year\"\naction = \"delete\"\n",
        ))
        .await;
    let buyer_lapsed = db.customer(1, "2019-01-01 00:00:00").await;
    db.order(buyer_lapsed, "2021-05-01 10:00:00").await;
    let buyer_recent = db.customer(1, "2019-01-01 00:00:00").await;
    db.order(buyer_recent, "2025-01-01 10:00:00").await;
    let prospect_lapsed = db.customer(1, "2024-06-01 00:00:00").await;
    let prospect_new = db.customer(1, "2026-01-01 00:00:00").await;
    let prospect_very_old = db.customer(1, "2018-01-01 00:00:00").await;

    let first = cycle(&svc, 1, AT).await;

    let (
        Some(Selection::Created {
            report_id: buyers,
            customers: 1,
        }),
        Some(Selection::Created {
            report_id: prospects,
            customers: 2,
        }),
    ) = (first.selection.clone(), first.prospects.clone())
    else {
        panic!(
            "expected a report per rule, got {:?} and {:?}",
            first.selection, first.prospects
        )
    };
    let buyers_report = reports::get(&svc.db, buyers).await.unwrap().unwrap();
    let prospects_report = reports::get(&svc.db, prospects).await.unwrap().unwrap();
    assert_eq!(
        (buyers_report.rule, buyers_report.action),
        (Rule::Customers, Action::Anonymise)
    );
    assert_eq!(
        (prospects_report.rule, prospects_report.action),
        (Rule::Prospects, Action::Delete)
    );
    assert!(
        prospects_report.policy.contains("prospects"),
        "{}",
        prospects_report.policy
    );
    let on = |id: i64| {
        let db = &db;
        async move {
            db.count(&format!(
                "SELECT report_id FROM retention_report_items WHERE customer_id = {id}"
            ))
            .await
        }
    };
    assert_eq!(on(buyer_lapsed).await, buyers);
    assert_eq!(on(prospect_lapsed).await, prospects);
    assert_eq!(on(prospect_very_old).await, prospects);

    // One open report per rule: the next cycle makes none, of either.
    let again = cycle(&svc, 1, "2026-06-15 13:00:00").await;
    assert!(
        matches!(again.selection, Some(Selection::OpenReport { .. })),
        "{:?}",
        again.selection
    );
    assert!(
        matches!(again.prospects, Some(Selection::OpenReport { .. })),
        "{:?}",
        again.prospects
    );

    operator_approves(&svc.db, buyers, t(AT)).await;
    operator_approves(&svc.db, prospects, t(AT)).await;
    cycle(&svc, 1, NEXT_DAY).await;
    assert!(
        db.customer_row(prospect_lapsed).await.is_none(),
        "a prospect is deleted"
    );
    assert!(db.customer_row(prospect_very_old).await.is_none());
    let buyer = db
        .customer_row(buyer_lapsed)
        .await
        .expect("a buyer is anonymised, not deleted");
    assert_eq!(buyer["first_name"], None);
    for kept in [buyer_recent, prospect_new] {
        assert!(db.customer_row(kept).await.unwrap()["first_name"].is_some());
    }
}

on_both_backends!(prospects_follow_their_own_rule);
