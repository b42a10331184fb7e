//! Holds (SPEC 12) on every backend: a Gift Aid declaration protects for six years after it
//! was made, a non-zero balance protects, the legal-hold column is the hold "legal hold"; the
//! report counts what each keeps back, and a hold that appears between report and apply skips
//! the customer as `skipped_held`, naming the hold.

use crate::common::{anonymise_venue, approved_report, cycle, t, TestDb, AT, NEXT_DAY};
use retentiond::db::{Query, Value};
use retentiond::selection::{self, HeldBack, Scope};

const HOLDS: &str = r#"
[[schema.holds]]
name = "Gift Aid declaration"
table = "gift_aid_declarations"
column = "customer_id"
after = "declared_at"
for = "6 years"
[[schema.holds]]
name = "account balance"
table = "customers"
when = "balance_pence != 0"
"#;

impl TestDb {
    async fn declaration(&self, customer: i64, declared: &str) {
        let mut q =
            Query::new("INSERT INTO gift_aid_declarations (customer_id, declared_at) VALUES (");
        q.bind(customer)
            .push(", ")
            .bind(Value::Date(declared.parse().unwrap()))
            .push(")");
        self.db.execute(&q).await.unwrap();
    }

    async fn balance(&self, customer: i64, pence: Option<i64>) {
        // NOT NULL in the reference schema: None tests a NULL where a schema allows one.
        let mut q = Query::new("UPDATE customers SET balance_pence = ");
        q.bind(pence).push(" WHERE id = ").bind(customer);
        self.db.execute(&q).await.unwrap();
    }
}

async fn holds_keep_customers_back_and_are_counted(db: TestDb) {
    db.migrate().await;
    let svc = db
        .service(&(HOLDS.to_string() + &anonymise_venue(1, "3 years", "")))
        .await;
    let old = "2020-01-01 00:00:00";
    let declared_5_years_ago = db.customer(1, old).await;
    db.declaration(declared_5_years_ago, "2021-06-01").await;
    let declared_7_years_ago = db.customer(1, old).await;
    db.declaration(declared_7_years_ago, "2019-06-01").await;
    let in_credit = db.customer(1, old).await;
    db.balance(in_credit, Some(500)).await;
    let owing = db.customer(1, old).await;
    db.balance(owing, Some(-1200)).await;
    let settled = db.customer(1, old).await;
    db.balance(settled, Some(0)).await;
    let no_balance = db.customer(1, old).await;
    let legal = db.customer_with(1, old, 990, true).await;
    let declares_later = db.customer(1, old).await;
    db.balance(declares_later, Some(0)).await;

    let venue = svc.config.venue(1).unwrap();
    let scope = Scope::new(&svc.config, svc.db.backend(), venue, t(AT));
    assert_eq!(
        selection::candidate_ids(&svc.db, &scope).await.unwrap(),
        vec![declared_7_years_ago, settled, no_balance, declares_later]
    );
    let expected = HeldBack {
        total: 4,
        by_hold: vec![
            ("legal hold".into(), 1),
            ("Gift Aid declaration".into(), 1),
            ("account balance".into(), 2),
        ],
    };
    assert_eq!(scope.held_back(&svc.db).await.unwrap(), expected);
    assert_eq!(
        expected.in_words().unwrap(),
        "4 kept back: legal hold 1, Gift Aid declaration 1, account balance 2"
    );
    let dry = retentiond::cycle::run_venue_cycle(&svc, venue, t(AT), true)
        .await
        .unwrap();
    assert_eq!(
        dry.held_back.as_ref(),
        Some(&expected),
        "the dry run counts them"
    );
    assert!(
        matches!(
            dry.selection,
            Some(retentiond::cycle::Selection::WouldCreate { customers: 4 })
        ),
        "and the candidates in the same pass: {:?}",
        dry.selection
    );
    let _ = legal;

    let report_id = approved_report(&svc, 1).await;
    let report = retentiond::reports::get(&svc.db, report_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.held_back, expected, "the report records them");
    assert_eq!(report.customer_count, 4);

    // Between report and apply, one of them makes a Gift Aid declaration.
    db.declaration(declares_later, "2026-06-15").await;
    cycle(&svc, 1, NEXT_DAY).await;
    assert_eq!(
        db.count(&format!(
            "SELECT COUNT(*) FROM retention_report_items WHERE customer_id = {declares_later} \
             AND outcome = 'skipped_held' AND held_by = 'Gift Aid declaration'"
        ))
        .await,
        1
    );
    assert_eq!(
        retentiond::reports::outcome_and_held_counts(&svc.db, report_id)
            .await
            .unwrap()
            .1,
        vec![("Gift Aid declaration".to_string(), 1)]
    );
    assert_eq!(
        db.count(&format!(
            "SELECT COUNT(*) FROM retention_report_items WHERE report_id = {report_id} AND outcome = 'anonymised'"
        ))
        .await,
        3
    );
    let applied = db
        .count(&format!(
            "SELECT COUNT(*) FROM retention_audit WHERE report_id = {report_id} AND event = 'applied' \
             AND detail LIKE '%held: Gift Aid declaration 1%'"
        ))
        .await;
    assert_eq!(applied, 1, "the ledger names the hold");
}

on_both_backends!(holds_keep_customers_back_and_are_counted);
