//! One person's request (SPEC 13) through the binary, on every backend: erase by id and by
//! email address with both actions, then a restored backup and `replay` erase them again;
//! export of a customer's orders, addresses and notes matches the database; refusals (a hold,
//! another venue's customer, an address of nobody or of two, an unknown venue) change nothing.

use crate::common::{
    anonymise_venue, cycle, delete_venue, operator_approves, output_text as text, retentiond, t,
    TestDb, AT, NEXT_DAY,
};

fn request_config(db: &TestDb, journal: &std::path::Path) -> std::path::PathBuf {
    db.write_config_with_file_mail(&format!(
        "{}{}\n[journal]\npath = \"{}\"\n",
        anonymise_venue(1, "3 years", ""),
        delete_venue(2, "3 years", ""),
        journal.display()
    ))
}

async fn email_of(db: &TestDb, id: i64) -> String {
    db.customer_row(id).await.unwrap()["email"].clone().unwrap()
}

async fn erase_by_id_and_by_email_then_replay_after_restore(db: TestDb) {
    db.migrate().await;
    let journal = db.dir.path().join("erasures.jsonl");
    let config = request_config(&db, &journal);
    let to_delete = db.customer(2, "2025-01-01 00:00:00").await;
    let order = db.order(to_delete, "2025-06-01 10:00:00").await;
    db.note(to_delete).await;
    let to_anonymise = db.customer(1, "2025-01-01 00:00:00").await;
    db.order(to_anonymise, "2025-06-01 10:00:00").await;
    let bystander = db.customer(1, "2025-01-01 00:00:00").await;
    let address = email_of(&db, to_anonymise).await.to_uppercase();
    let backup = db.backup("before.backup").await;

    let dry = retentiond(
        &config,
        &[
            "erase",
            "--venue",
            "2",
            "--customer",
            &to_delete.to_string(),
            "--by",
            "Sam, ticket 4711",
            "--dry-run",
        ],
    );
    assert!(dry.status.success(), "{}", text(&dry));
    assert!(
        text(&dry).contains(&format!("customer {to_delete} of venue 2: would delete")),
        "{}",
        text(&dry)
    );
    assert!(
        text(&dry).contains("orders: 1 row(s) kept, moved to the venue's Unknown Customer record"),
        "{}",
        text(&dry)
    );
    assert!(
        text(&dry).contains("customer_notes: 1 row(s) deleted"),
        "{}",
        text(&dry)
    );
    assert!(
        !text(&dry).contains("@example.org"),
        "no values: {}",
        text(&dry)
    );
    assert!(
        db.customer_row(to_delete).await.is_some(),
        "a dry run changes nothing"
    );

    let deleted = retentiond(
        &config,
        &[
            "erase",
            "--venue",
            "2",
            "--customer",
            &to_delete.to_string(),
            "--by",
            "Sam, ticket 4711",
        ],
    );
    assert!(deleted.status.success(), "{}", text(&deleted));
    let anonymised = retentiond(
        &config,
        &["erase", "--venue", "1", "--email", &address, "--by", "Sam"],
    );
    assert!(anonymised.status.success(), "{}", text(&anonymised));

    assert!(db.customer_row(to_delete).await.is_none());
    assert_eq!(
        db.count(&format!(
            "SELECT COUNT(*) FROM orders WHERE id = {order} AND customer_id <> {to_delete}"
        ))
        .await,
        1,
        "the order stays, on the Unknown Customer"
    );
    let row = db.customer_row(to_anonymise).await.unwrap();
    assert_eq!(row["first_name"], None);
    assert!(db.customer_row(bystander).await.unwrap()["first_name"].is_some());
    assert_eq!(db.count("SELECT COUNT(*) FROM retention_audit WHERE event = 'erased_on_request' AND actor LIKE 'Sam%'").await, 2);
    let again = retentiond(
        &config,
        &[
            "erase",
            "--venue",
            "1",
            "--customer",
            &to_anonymise.to_string(),
            "--by",
            "Sam",
        ],
    );
    assert_eq!(
        again.status.code(),
        Some(1),
        "exactly once: {}",
        text(&again)
    );
    assert!(
        text(&again).contains("anonymised already"),
        "{}",
        text(&again)
    );

    // A restored backup brings both back; replay erases them again.
    let db = db.restore(&backup).await;
    assert!(db.customer_row(to_delete).await.is_some());
    let replay = retentiond(&config, &["replay", journal.to_str().unwrap()]);
    assert!(replay.status.success(), "{}", text(&replay));
    assert!(
        text(&replay).contains("erased again 2 (1 deleted, 1 anonymised)"),
        "{}",
        text(&replay)
    );
    assert!(db.customer_row(to_delete).await.is_none());
    assert_eq!(
        db.customer_row(to_anonymise).await.unwrap()["first_name"],
        None
    );
}

async fn refusals_name_what_and_touch_nothing(db: TestDb) {
    db.migrate().await;
    let journal = db.dir.path().join("erasures.jsonl");
    let config = request_config(&db, &journal);
    let held = db.customer_with(1, "2025-01-01 00:00:00", 901, true).await;
    let other_venue = db.customer(2, "2025-01-01 00:00:00").await;
    let twin_a = db.customer_with(1, "2025-01-01 00:00:00", 902, false).await;
    let twin_b = db.customer_with(1, "2025-01-01 00:00:00", 902, false).await;
    let before = db
        .count("SELECT COUNT(*) FROM customers WHERE first_name IS NOT NULL")
        .await;

    let cases: Vec<(Vec<String>, String)> = vec![
        (
            vec![
                "erase".into(),
                "--venue".into(),
                "1".into(),
                "--customer".into(),
                held.to_string(),
            ],
            "is under the hold \"legal hold\"".into(),
        ),
        (
            vec![
                "export".into(),
                "--venue".into(),
                "1".into(),
                "--customer".into(),
                held.to_string(),
            ],
            "is under the hold \"legal hold\"".into(),
        ),
        (
            vec![
                "erase".into(),
                "--venue".into(),
                "1".into(),
                "--customer".into(),
                other_venue.to_string(),
            ],
            format!("customer {other_venue} is not a customer of venue 1"),
        ),
        (
            vec![
                "erase".into(),
                "--venue".into(),
                "1".into(),
                "--email".into(),
                "nobody@example.org".into(),
            ],
            "no customer of venue 1".into(),
        ),
        (
            vec![
                "erase".into(),
                "--venue".into(),
                "1".into(),
                "--email".into(),
                "ANN902@example.org".into(),
            ],
            "2 customers of venue 1 (Anonymise Venue 1) have that email address".into(),
        ),
        (
            vec![
                "export".into(),
                "--venue".into(),
                "9".into(),
                "--customer".into(),
                twin_a.to_string(),
            ],
            "venue 9 is not in".into(),
        ),
    ];
    for (args, expected) in cases {
        let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
        args.extend(["--by", "Sam"]);
        let out = retentiond(&config, &args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
        assert!(text(&out).contains(&expected), "{args:?}: {}", text(&out));
    }
    assert_eq!(
        db.count("SELECT COUNT(*) FROM customers WHERE first_name IS NOT NULL")
            .await,
        before
    );
    assert_eq!(db.count("SELECT COUNT(*) FROM retention_audit").await, 0);
    let _ = twin_b;
}

async fn export_holds_what_the_database_holds(db: TestDb) {
    db.migrate().await;
    let journal = db.dir.path().join("erasures.jsonl");
    let config = request_config(&db, &journal);
    let id = db.customer(1, "2025-01-01 00:00:00").await;
    db.order(id, "2025-06-01 10:00:00").await;
    db.order(id, "2025-07-01 10:00:00").await;
    db.note(id).await;
    let email = email_of(&db, id).await;

    let out = retentiond(
        &config,
        &[
            "export",
            "--venue",
            "1",
            "--email",
            &email,
            "--by",
            "Sam, SAR 12",
        ],
    );

    assert!(out.status.success(), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["customer_id"], id);
    assert_eq!(json["customer"]["Email"], email.as_str());
    assert_eq!(
        json["customer"]["First name"],
        db.customer_row(id).await.unwrap()["first_name"]
            .clone()
            .unwrap()
            .as_str()
    );
    let rows = |table: &str| {
        json["linked"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["table"] == table)
            .unwrap()["rows"]
            .as_array()
            .unwrap()
            .len() as i64
    };
    assert_eq!(
        rows("orders"),
        db.count(&format!(
            "SELECT COUNT(*) FROM orders WHERE customer_id = {id}"
        ))
        .await
    );
    assert_eq!(
        rows("order_addresses"),
        4,
        "a billing and a shipping address per order"
    );
    assert_eq!(rows("customer_notes"), 1);
    let orders = json["linked"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == "orders")
        .unwrap();
    assert_eq!(
        orders["rows"][0]["Billing email"],
        email.as_str(),
        "each value under its label"
    );
    assert_eq!(db.count("SELECT COUNT(*) FROM retention_audit WHERE event = 'exported' AND actor = 'Sam, SAR 12' AND detail NOT LIKE '%@%'").await, 1);
}

/// A customer erased on request while on an approved report stays on it and is counted
/// `skipped_gone` when the report is applied.
async fn a_report_skips_a_customer_erased_on_request(db: TestDb) {
    db.migrate().await;
    let journal = db.dir.path().join("erasures.jsonl");
    let config = request_config(&db, &journal);
    let svc = db
        .service(&format!(
            "{}{}",
            anonymise_venue(1, "3 years", ""),
            delete_venue(2, "3 years", "")
        ))
        .await;
    let asks = db.customer(1, "2019-01-01 00:00:00").await;
    let other = db.customer(1, "2019-01-01 00:00:00").await;
    let Some(retentiond::cycle::Selection::Created { report_id, .. }) =
        cycle(&svc, 1, AT).await.selection
    else {
        panic!("expected a report")
    };
    operator_approves(&svc.db, report_id, t(AT)).await;
    let out = retentiond(
        &config,
        &[
            "erase",
            "--venue",
            "1",
            "--customer",
            &asks.to_string(),
            "--by",
            "Sam",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    cycle(&svc, 1, NEXT_DAY).await;
    assert_eq!(db.count(&format!("SELECT COUNT(*) FROM retention_report_items WHERE report_id = {report_id} AND customer_id = {asks} AND outcome = 'skipped_gone'")).await, 1);
    assert_eq!(db.count(&format!("SELECT COUNT(*) FROM retention_report_items WHERE report_id = {report_id} AND customer_id = {other} AND outcome = 'anonymised'")).await, 1);
}

on_both_backends!(
    erase_by_id_and_by_email_then_replay_after_restore,
    refusals_name_what_and_touch_nothing,
    export_holds_what_the_database_holds,
    a_report_skips_a_customer_erased_on_request,
);

/// An erasure on request leaves no removed value in SQLite's database file or its log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_files_hold_no_value_erased_on_request() {
    let db = TestDb::sqlite().await;
    db.migrate().await;
    let journal = db.dir.path().join("erasures.jsonl");
    let config = request_config(&db, &journal);
    let id = db.customer_with(2, "2025-01-01 00:00:00", 777, false).await;
    db.order(id, "2025-06-01 10:00:00").await;
    let kept = db.customer_with(2, "2025-01-01 00:00:00", 778, false).await;
    let files = [db.sqlite_path(), db.dir.path().join("customers.db-wal")];
    db.db.checkpoint_wal().await.unwrap();
    let present = |value: &str| {
        files
            .iter()
            .any(|f| crate::erasure::file_contains(f, value))
    };
    assert!(
        present("ann777@example.org"),
        "the search finds the value before"
    );

    let out = retentiond(
        &config,
        &[
            "erase",
            "--venue",
            "2",
            "--customer",
            &id.to_string(),
            "--by",
            "Sam",
        ],
    );

    assert!(out.status.success(), "{}", text(&out));
    for value in ["ann777@example.org", "Smith777", "777 High Street"] {
        assert!(!present(value), "{value:?} is still in the files");
    }
    assert!(
        present("ann778@example.org"),
        "customer {kept} stays readable"
    );
}
