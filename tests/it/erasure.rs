//! Personal data gone from every place it lives (SPEC 3, 9): linked tables scrubbed or deleted
//! with their customer, the database files, free text kept out of the ledger, and the erasure
//! journal replayed onto a database restored from a backup; on both backends.

use crate::common::{anonymise_venue, delete_venue, t, TestDb, HASH_KEY};
use retentiond::cycle::Selection;
use retentiond::db::Query;
use retentiond::decision::{decide, Actor, Decision};
use retentiond::policy::{keyed_hash, ReportState};
use retentiond::{approval, audit, reports, Service};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{approved_report, cycle, AT, NEXT_DAY};

use crate::common::{output_text as text, retentiond};

/// Every value of a row of `table` as text.
async fn rows(db: &TestDb, sql: &str) -> Vec<Vec<Option<String>>> {
    db.db
        .fetch_all(&Query::new(sql))
        .await
        .unwrap()
        .iter()
        .map(|r| r.0.iter().map(|v| v.to_text()).collect())
        .collect()
}

/// The personal values a fixture customer `n` carries (SPEC 8 fixture), as stored.
fn personal_values(n: u32) -> Vec<String> {
    vec![
        format!("Ann{n}"),
        format!("Smith{n}"),
        format!("ann{n}@example.org"),
        format!("07700 900{n:03}"),
        format!("{n} High Street"),
        format!("call Ann{n} Smith{n} on 07700 900{n:03}, lives at 1 Secret Lane {n}"),
    ]
}

/// A customer with orders (each with a billing and a shipping address) and a free-text note.
async fn customer_with_history(db: &TestDb, venue: i64, n: u32, ordered: &str) -> i64 {
    let id = db
        .customer_with(venue, "2019-01-01 00:00:00", n, false)
        .await;
    db.order(id, ordered).await;
    db.order(id, ordered).await;
    db.note_text(
        id,
        &format!("call Ann{n} Smith{n} on 07700 900{n:03}, lives at 1 Secret Lane {n}"),
    )
    .await;
    id
}

/// Every text of the customer tables, for "no removed value is left" assertions.
async fn all_customer_data(db: &TestDb) -> String {
    let mut all = String::new();
    for sql in [
        // created_at aside: the Unknown Customer is created when the erasure runs. Its id is
        // written as "unknown": on PostgreSQL a replay killed after creating it in a batch that
        // rolled back has used up an identity value (sequences are not transactional).
        "SELECT CASE WHEN id IN (SELECT customer_id FROM retention_unknown_customers) THEN -1 ELSE id END, \
         venue_id, title, first_name, last_name, email, phone, address_line1, address_line2, city, postcode, \
         country, date_of_birth, marketing_opt_in, legal_hold FROM customers ORDER BY id",
        "SELECT id, venue_id, CASE WHEN customer_id IN (SELECT customer_id FROM retention_unknown_customers) THEN -1 ELSE customer_id END, \
         placed_at, total_pence, billing_email FROM orders ORDER BY id",
        "SELECT * FROM order_addresses ORDER BY id",
        "SELECT * FROM customer_notes ORDER BY id",
    ] {
        for row in rows(db, sql).await {
            for v in row.into_iter().flatten() {
                all.push_str(&v);
                all.push('\n');
            }
        }
    }
    all
}

async fn anonymise_scrubs_linked_tables_and_deletes_notes(db: TestDb) {
    db.migrate().await;
    let svc = db.service(&anonymise_venue(1, "3 years", "")).await;
    let gone = customer_with_history(&db, 1, 501, "2020-02-02 10:00:00").await;
    let active = customer_with_history(&db, 1, 601, "2026-03-03 10:00:00").await;
    let active_before = all_customer_data(&db).await;
    approved_report(&svc, 1).await;

    cycle(&svc, 1, NEXT_DAY).await;

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
    let orders = rows(
        &db,
        &format!(
            "SELECT billing_email, total_pence, venue_id FROM orders WHERE customer_id = {gone}"
        ),
    )
    .await;
    assert_eq!(orders.len(), 2, "orders stay with the anonymised customer");
    for o in &orders {
        assert_eq!(
            o[0],
            Some(keyed_hash(HASH_KEY.as_bytes(), "ann501@example.org"))
        );
        assert_eq!(o[1].as_deref(), Some("2500"));
    }
    let addresses = rows(&db, &format!(
        "SELECT a.address_type, a.first_name, a.last_name, a.address_1, a.city, a.postcode, a.email, a.phone \
         FROM order_addresses a JOIN orders o ON o.id = a.order_id WHERE o.customer_id = {gone} ORDER BY a.id"
    )).await;
    assert_eq!(addresses.len(), 4);
    for a in &addresses {
        assert!(matches!(
            a[0].as_deref(),
            Some("billing") | Some("shipping")
        ));
        assert_eq!(
            (&a[1], &a[2], &a[3], &a[7]),
            (&None, &None, &None, &None),
            "{a:?}"
        );
        assert_eq!(a[4].as_deref(), Some("London"));
        assert_eq!(a[5].as_deref(), Some("SW1A"));
        assert_eq!(
            a[6],
            Some(keyed_hash(HASH_KEY.as_bytes(), "ann501@example.org"))
        );
    }
    let after = all_customer_data(&db).await;
    for value in personal_values(501) {
        assert!(
            !after.contains(&value),
            "{value:?} survived the anonymisation"
        );
    }
    for value in personal_values(601) {
        assert!(
            after.contains(&value) && active_before.contains(&value),
            "the active customer's {value:?} was touched"
        );
    }
}

async fn delete_scrubs_reassigned_orders_and_their_addresses(db: TestDb) {
    db.migrate().await;
    let svc = db.service(&delete_venue(2, "3 years", "")).await;
    let gone = customer_with_history(&db, 2, 502, "2020-02-02 10:00:00").await;
    let active = customer_with_history(&db, 2, 602, "2026-03-03 10:00:00").await;
    approved_report(&svc, 2).await;

    cycle(&svc, 2, NEXT_DAY).await;

    assert!(db.customer_row(gone).await.is_none());
    let unknown = db
        .count("SELECT customer_id FROM retention_unknown_customers WHERE venue_id = 2")
        .await;
    let orders = rows(
        &db,
        &format!("SELECT billing_email FROM orders WHERE customer_id = {unknown}"),
    )
    .await;
    assert_eq!(
        orders.len(),
        2,
        "order history kept on the Unknown Customer"
    );
    assert!(orders
        .iter()
        .all(|o| o[0] == Some(keyed_hash(HASH_KEY.as_bytes(), "ann502@example.org"))));
    let addresses = rows(&db, &format!(
        "SELECT a.first_name, a.email, a.postcode FROM order_addresses a JOIN orders o ON o.id = a.order_id WHERE o.customer_id = {unknown}"
    )).await;
    assert_eq!(addresses.len(), 4, "addresses follow their orders");
    assert!(addresses
        .iter()
        .all(|a| a[0].is_none() && a[2].as_deref() == Some("SW1A")));
    let after = all_customer_data(&db).await;
    for value in personal_values(502) {
        assert!(!after.contains(&value), "{value:?} survived the delete");
    }
    for value in personal_values(602) {
        assert!(
            after.contains(&value),
            "the active customer's {value:?} was touched"
        );
    }
    assert_eq!(
        db.count(&format!(
            "SELECT COUNT(*) FROM orders WHERE customer_id = {active}"
        ))
        .await,
        2
    );
}

async fn rows_via_a_deleted_parent_are_deleted_first(db: TestDb) {
    db.migrate().await;
    // Orders removed on anonymise: their addresses (a foreign key to orders) must go first.
    let venues = anonymise_venue(1, "3 years", "");
    let text = crate::common::config_toml(&db.url, &venues).replace(
        "on_delete = \"reassign\"",
        "on_delete = \"reassign\"\non_anonymise = \"delete\"",
    );
    let path = db.dir.path().join("via.toml");
    std::fs::write(&path, text).unwrap();
    let svc = Service::new(
        db.db.clone(),
        retentiond::config::load_with_env(&path, Default::default()).unwrap(),
    );
    let gone = customer_with_history(&db, 1, 503, "2020-02-02 10:00:00").await;
    let active = customer_with_history(&db, 1, 603, "2026-03-03 10:00:00").await;
    approved_report(&svc, 1).await;

    let result = cycle(&svc, 1, NEXT_DAY).await;

    assert!(result.applied[0].finished);
    assert_eq!(
        db.count(&format!(
            "SELECT COUNT(*) FROM orders WHERE customer_id = {gone}"
        ))
        .await,
        0
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM order_addresses").await,
        4,
        "only the active customer's addresses remain"
    );
    assert_eq!(
        db.count(&format!(
            "SELECT COUNT(*) FROM orders WHERE customer_id = {active}"
        ))
        .await,
        2
    );
}

async fn reasons_stay_out_of_the_ledger_and_are_erased_later(db: TestDb) {
    db.migrate().await;
    let svc = db
        .service(&anonymise_venue(
            1,
            "3 years",
            "report_interval = \"1 day\"",
        ))
        .await;
    db.customer(1, "2019-01-01 00:00:00").await;
    let Some(Selection::Created { report_id, .. }) = cycle(&svc, 1, AT).await.selection else {
        panic!("expected a report")
    };
    let reason = "keep Jane Doe, 07700 900555";
    let mut tx = svc.db.begin().await.unwrap();
    let report = reports::get_in(&mut tx, report_id).await.unwrap().unwrap();
    approval::mint(&mut tx, &report, "boxoffice@venue1.example", t(AT))
        .await
        .unwrap();
    tx.commit().await.unwrap();

    decide(
        &svc.db,
        report_id,
        Actor::Approver(
            "boxoffice@venue1.example",
            &svc.config.venue(1).unwrap().approvers,
        ),
        Decision::Reject {
            reason: Some(reason),
        },
        t(AT),
    )
    .await
    .unwrap()
    .unwrap();

    let report = reports::get(&svc.db, report_id).await.unwrap().unwrap();
    assert_eq!(report.state, ReportState::Rejected);
    assert_eq!(
        report.state_reason.as_deref(),
        Some(reason),
        "kept with the report"
    );
    let ledger = format!(
        "{:?} {:?}",
        audit::events(&svc.db, None).await.unwrap(),
        rows(&db, "SELECT * FROM retention_decisions").await
    );
    assert!(
        !ledger.contains("Jane") && !ledger.contains("900555"),
        "{ledger}"
    );
    assert!(ledger.contains("reason given"), "{ledger}");

    // Links expired: the next cycle purges the tokens; 91 days on, the reason is erased.
    cycle(&svc, 1, "2026-06-30 12:00:00").await;
    assert_eq!(db.count("SELECT COUNT(*) FROM retention_tokens").await, 0);
    assert!(
        reports::get(&svc.db, report_id)
            .await
            .unwrap()
            .unwrap()
            .state_reason
            .is_some(),
        "kept for 90 days"
    );
    cycle(&svc, 1, "2026-09-14 12:00:00").await;
    assert_eq!(
        reports::get(&svc.db, report_id)
            .await
            .unwrap()
            .unwrap()
            .state_reason,
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_tables_are_vacuumed_after_apply_unless_turned_off() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    db.migrate().await;
    let last_vacuum = |table: &'static str| {
        let db = &db;
        async move {
            db.db
                .fetch_one(&Query::new(&format!(
                    "SELECT CAST(COUNT(last_vacuum) AS BIGINT) FROM pg_stat_user_tables WHERE schemaname = current_schema() AND relname = '{table}'"
                )))
                .await
                .unwrap()
                .i64(0)
                .unwrap()
        }
    };
    let off = db
        .service(&(delete_venue(2, "3 years", "") + "\n[apply]\nvacuum = false\n"))
        .await;
    customer_with_history(&db, 2, 504, "2020-02-02 10:00:00").await;
    approved_report(&off, 2).await;
    cycle(&off, 2, NEXT_DAY).await;
    assert_eq!(
        last_vacuum("order_addresses").await,
        0,
        "vacuum = false leaves it to the operator"
    );

    let on = db.service(&anonymise_venue(1, "3 years", "")).await;
    customer_with_history(&db, 1, 505, "2020-02-02 10:00:00").await;
    approved_report(&on, 1).await;
    cycle(&on, 1, NEXT_DAY).await;
    let mut vacuumed = 0;
    for _ in 0..50 {
        vacuumed = last_vacuum("customers").await
            + last_vacuum("orders").await
            + last_vacuum("order_addresses").await
            + last_vacuum("customer_notes").await;
        if vacuumed == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(vacuumed, 4, "every touched table vacuumed");
}

/// A configuration file whose mail goes to `outbox/` as files (no SMTP server needed).
fn file_mail_config(db: &TestDb, venues: &str) -> std::path::PathBuf {
    db.write_config_with_file_mail(venues)
}

/// Venue 1 anonymises, venue 2 deletes; each has `n` customers to erase and one active.
fn journal_venues(journal: &Path, extra: &str) -> String {
    format!(
        "{}{}\n[journal]\npath = \"{}\"\n{extra}",
        anonymise_venue(1, "3 years", ""),
        delete_venue(2, "3 years", ""),
        journal.display()
    )
}

async fn erasure_fixture(db: &TestDb, n: u32) -> Vec<u32> {
    let mut erased = Vec::new();
    for venue in [1, 2] {
        for i in 0..n {
            let k = 1000 * venue as u32 + i;
            customer_with_history(db, venue, k, "2020-02-02 10:00:00").await;
            erased.push(k);
        }
        customer_with_history(db, venue, 9000 + venue as u32, "2026-03-03 10:00:00").await;
    }
    erased
}

/// Mail files hold live links: the directory is 0700 and each message 0600.
fn assert_private_mail_files(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(dir), 0o700, "outbox directory");
    let files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(!files.is_empty(), "mail was written");
    for f in files {
        assert_eq!(mode(&f), 0o600, "{}", f.display());
    }
}

fn journal_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Creates and approves a report per venue, then applies them, all through the binary.
fn approve_and_apply(config: &Path) {
    let made = retentiond(config, &["cycle", "--at", "2026-06-15T12:00:00Z"]);
    assert!(made.status.success(), "{}", text(&made));
    for id in ["1", "2"] {
        let approved = retentiond(config, &["reports", "approve", id, "--by", "tester"]);
        assert!(approved.status.success(), "{}", text(&approved));
    }
    let applied = retentiond(config, &["cycle", "--at", "2026-06-16T12:00:00Z"]);
    assert!(applied.status.success(), "{}", text(&applied));
}

async fn replay_after_restore_erases_again_and_twice_changes_nothing(db: TestDb) {
    db.migrate().await;
    let journal = db.dir.path().join("erasures.jsonl");
    let erased = erasure_fixture(&db, 3).await;
    let config = file_mail_config(&db, &journal_venues(&journal, ""));
    let backup = db.backup("before-erasure.backup").await;

    approve_and_apply(&config);

    assert_private_mail_files(&db.dir.path().join("outbox"));
    let lines = journal_lines(&journal);
    assert_eq!(lines.len(), 6, "one line per erased customer");
    let line = lines[0].as_object().unwrap();
    let mut keys: Vec<&str> = line.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "action",
            "at",
            "customer_id",
            "database",
            "mac",
            "outcome",
            "report_id",
            "venue_id"
        ]
    );
    let erased_state = all_customer_data(&db).await;

    // Last week's backup brings every erased customer back.
    let db = db.restore(&backup).await;
    let restored = all_customer_data(&db).await;
    for k in &erased {
        assert!(
            restored.contains(&format!("ann{k}@example.org")),
            "the restore brought {k} back"
        );
    }

    let dry = retentiond(&config, &["replay", journal.to_str().unwrap(), "--dry-run"]);
    assert!(dry.status.success(), "{}", text(&dry));
    assert!(
        text(&dry).contains("would erase again 6 (3 deleted, 3 anonymised)"),
        "{}",
        text(&dry)
    );
    assert_eq!(
        all_customer_data(&db).await,
        restored,
        "a dry run changes nothing"
    );

    let replay = retentiond(&config, &["replay", journal.to_str().unwrap()]);
    assert!(replay.status.success(), "{}", text(&replay));
    assert!(
        text(&replay).contains("erased again 6 (3 deleted, 3 anonymised)"),
        "{}",
        text(&replay)
    );
    let replayed = all_customer_data(&db).await;
    for k in &erased {
        for value in personal_values(*k) {
            assert!(!replayed.contains(&value), "{value:?} left after replay");
        }
    }
    assert_eq!(
        replayed, erased_state,
        "the replay ends where the original erasure ended"
    );
    assert_eq!(db.count("SELECT COUNT(*) FROM retention_replays").await, 6);
    let audit = retentiond(&config, &["audit", "--json"]);
    assert!(text(&audit).contains("\"replayed\""), "{}", text(&audit));

    let again = retentiond(&config, &["replay", journal.to_str().unwrap()]);
    assert!(again.status.success(), "{}", text(&again));
    assert!(text(&again).contains("erased again 0 (0 deleted, 0 anonymised); skipped 3 already gone, 3 already anonymised"), "{}", text(&again));
    assert_eq!(
        all_customer_data(&db).await,
        replayed,
        "a second replay changes nothing"
    );
}

async fn sigkill_during_replay_then_rerun_ends_the_same(db: TestDb) {
    db.migrate().await;
    let journal = db.dir.path().join("erasures.jsonl");
    let n = 150;
    erasure_fixture(&db, n).await;
    let config = file_mail_config(&db, &journal_venues(&journal, "[apply]\nbatch_size = 2\n"));
    let backup = db.backup("before.backup").await;
    approve_and_apply(&config);
    let erased_state = all_customer_data(&db).await;
    let db = db.restore(&backup).await;

    let replayed = || async { db.count("SELECT COUNT(*) FROM retention_replays").await };
    let (mut kills, mut partial) = (0, 0);
    let mut seed = std::process::id() as u64 | 1;
    for _ in 0..20 {
        if replayed().await == i64::from(2 * n) {
            break;
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_retentiond"))
            .arg("--config")
            .arg(&config)
            .args(["replay", journal.to_str().unwrap()])
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Kill at a random moment once this run has committed a batch of its own.
        let before = replayed().await;
        let started = std::time::Instant::now();
        while child.try_wait().unwrap().is_none()
            && replayed().await == before
            && started.elapsed() < Duration::from_secs(30)
        {
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        tokio::time::sleep(Duration::from_millis((seed >> 33) % 40)).await;
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        child.wait().unwrap();
        let done = replayed().await;
        if done > 0 && done < i64::from(2 * n) {
            partial += 1;
        }
    }
    let rerun = retentiond(&config, &["replay", journal.to_str().unwrap()]);
    assert!(rerun.status.success(), "{}", text(&rerun));

    assert!(
        kills >= 1 && partial >= 1,
        "the replay was killed part-way ({kills} kills, {partial} partial)"
    );
    assert_eq!(replayed().await, i64::from(2 * n));
    assert_eq!(
        all_customer_data(&db).await,
        erased_state,
        "killed and rerun, the replay ends the same"
    );
}

/// Writes `lines` (JSON values) as a journal file named `name` beside `beside`.
fn journal_file(beside: &Path, name: &str, lines: &[serde_json::Value]) -> std::path::PathBuf {
    let path = beside.with_file_name(name);
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&path, text).unwrap();
    path
}

/// `line` as an older retentiond wrote it: no database, no MAC.
fn unsigned(mut line: serde_json::Value) -> serde_json::Value {
    let map = line.as_object_mut().unwrap();
    map.remove("database");
    map.remove("mac");
    line
}

/// A replay of `journal` (with `extra` arguments) that must be refused with `reason` on line
/// `number`, changing nothing.
async fn assert_refused(
    db: &TestDb,
    config: &Path,
    journal: &Path,
    extra: &[&str],
    number: usize,
    reason: &str,
) {
    let before = all_customer_data(db).await;
    let mut args = vec!["replay", journal.to_str().unwrap()];
    args.extend_from_slice(extra);
    let replay = retentiond(config, &args);
    assert_eq!(replay.status.code(), Some(1), "{}", text(&replay));
    let name = journal.file_name().unwrap().to_str().unwrap();
    let expected = format!("{name}:{number}: {reason}");
    assert!(
        text(&replay).contains(&expected) && text(&replay).contains("nothing was replayed"),
        "expected {expected:?} in: {}",
        text(&replay)
    );
    assert_eq!(all_customer_data(db).await, before, "nothing replayed");
}

async fn replay_refuses_forged_changed_foreign_or_misapplied_lines(db: TestDb) {
    db.migrate().await;
    let journal = db.dir.path().join("erasures.jsonl");
    erasure_fixture(&db, 2).await;
    let config = file_mail_config(&db, &journal_venues(&journal, ""));
    let backup = db.backup("before.backup").await;
    approve_and_apply(&config);
    let signed = journal_lines(&journal);
    assert_eq!(signed.len(), 4);
    let anonymised = signed
        .iter()
        .find(|l| l["action"] == "anonymise")
        .unwrap()
        .clone();
    let deleted = signed
        .iter()
        .find(|l| l["action"] == "delete")
        .unwrap()
        .clone();

    // What the ledger of this database knows is checked, signed or not.
    let mut other_venue = unsigned(deleted.clone());
    other_venue["report_id"] = anonymised["report_id"].clone();
    let path = journal_file(
        &journal,
        "other-report.jsonl",
        &[signed[0].clone(), other_venue],
    );
    assert_refused(
        &db,
        &config,
        &path,
        &["--accept-unsigned"],
        2,
        "the ledger has report 1 as a anonymise report of venue 1, the line says delete of venue 2",
    )
    .await;
    let mut not_on_report = unsigned(anonymised.clone());
    not_on_report["customer_id"] = 9001.into();
    let path = journal_file(&journal, "not-on-report.jsonl", &[not_on_report]);
    assert_refused(
        &db,
        &config,
        &path,
        &["--accept-unsigned"],
        1,
        "the ledger has no customer 9001 on report 1",
    )
    .await;

    // Last week's backup, which knows none of these reports.
    let db = db.restore(&backup).await;
    let restored = all_customer_data(&db).await;

    // One field changed by hand: the active customer 9001 put in the place of an erased one.
    let mut changed = signed.clone();
    changed[1]["customer_id"] = 9001.into();
    let path = journal_file(&journal, "changed.jsonl", &changed);
    assert_refused(
        &db,
        &config,
        &path,
        &[],
        2,
        "the line's signature does not verify",
    )
    .await;

    // A line written by hand, unsigned, on an unknown report.
    let mut forged = unsigned(anonymised.clone());
    forged["report_id"] = 77.into();
    forged["customer_id"] = 9001.into();
    let mut with_forged = signed.clone();
    with_forged.push(forged.clone());
    let path = journal_file(&journal, "forged.jsonl", &with_forged);
    assert_refused(&db, &config, &path, &[], 5, "the line is not signed").await;

    // Accepted as unsigned, a line must still fit its venue: a delete at an anonymise venue.
    let mut wrong_action = unsigned(deleted.clone());
    wrong_action["venue_id"] = 1.into();
    wrong_action["customer_id"] = 1000.into();
    let path = journal_file(&journal, "wrong-action.jsonl", &[wrong_action]);
    assert_refused(
        &db,
        &config,
        &path,
        &["--accept-unsigned"],
        1,
        "the line says delete but venue 2 is configured to anonymise"
            .replace("venue 2", "venue 1")
            .as_str(),
    )
    .await;

    // The venue's Unknown Customer is never erased, even on a schema without foreign keys.
    let mut q = Query::new("INSERT INTO retention_unknown_customers (venue_id, customer_id, created_at) VALUES (2, 9002, ");
    q.bind(t(AT)).push(")");
    db.db.execute(&q).await.unwrap();
    let mut unknown = unsigned(deleted.clone());
    unknown["customer_id"] = 9002.into();
    let path = journal_file(&journal, "unknown.jsonl", &[unknown]);
    assert_refused(
        &db,
        &config,
        &path,
        &["--accept-unsigned"],
        1,
        "customer 9002 is venue 2's Unknown Customer",
    )
    .await;
    db.db
        .execute(&Query::new("DELETE FROM retention_unknown_customers"))
        .await
        .unwrap();
    assert_eq!(all_customer_data(&db).await, restored);

    // The same journal against another database (same customer ids, another identity).
    let other = db.sibling().await;
    other.migrate().await;
    erasure_fixture(&other, 2).await;
    let other_config = file_mail_config(&other, &journal_venues(&journal, ""));
    let identity = other
        .db
        .fetch_one(&Query::new("SELECT database_id FROM retention_identity"))
        .await
        .unwrap()
        .text(0)
        .unwrap();
    assert_ne!(Some(identity.as_str()), signed[0]["database"].as_str());
    assert_refused(
        &other,
        &other_config,
        &journal,
        &[],
        1,
        "the line was written for another database",
    )
    .await;

    // A journal of an older retentiond, accepted on request with a warning.
    let old: Vec<_> = signed.iter().cloned().map(unsigned).collect();
    let path = journal_file(&journal, "old.jsonl", &old);
    let replay = retentiond(
        &config,
        &["replay", path.to_str().unwrap(), "--accept-unsigned"],
    );
    assert!(replay.status.success(), "{}", text(&replay));
    assert!(
        text(&replay).contains("warning") && text(&replay).contains("4 unsigned lines"),
        "{}",
        text(&replay)
    );
    assert!(
        text(&replay).contains("erased again 4 (2 deleted, 2 anonymised)"),
        "{}",
        text(&replay)
    );
}

on_both_backends!(
    anonymise_scrubs_linked_tables_and_deletes_notes,
    delete_scrubs_reassigned_orders_and_their_addresses,
    rows_via_a_deleted_parent_are_deleted_first,
    reasons_stay_out_of_the_ledger_and_are_erased_later,
    replay_after_restore_erases_again_and_twice_changes_nothing,
    replay_refuses_forged_changed_foreign_or_misapplied_lines,
    sigkill_during_replay_then_rerun_ends_the_same,
);

/// Whether `needle` occurs anywhere in the file at `path` (missing file: no).
pub(crate) fn file_contains(path: &Path, needle: &str) -> bool {
    let Ok(bytes) = std::fs::read(path) else {
        return false;
    };
    bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_files_hold_no_removed_value_after_apply() {
    let db = TestDb::sqlite().await;
    db.migrate().await;
    let svc = db
        .service(&(anonymise_venue(1, "3 years", "") + &delete_venue(2, "3 years", "")))
        .await;
    let mut removed = Vec::new();
    for (venue, n) in [(1, 701), (1, 702), (2, 801), (2, 802)] {
        customer_with_history(&db, venue, n, "2020-02-02 10:00:00").await;
        removed.extend(personal_values(n));
    }
    for (venue, n) in [(1, 901), (2, 902)] {
        customer_with_history(&db, venue, n, "2026-03-03 10:00:00").await;
    }
    let files = [db.sqlite_path(), db.dir.path().join("customers.db-wal")];
    // The values are really in the files before (the search can find them).
    db.db.checkpoint_wal().await.unwrap();
    for value in &removed {
        assert!(
            files.iter().any(|f| file_contains(f, value)),
            "{value:?} not found before the apply"
        );
    }
    approved_report(&svc, 1).await;
    approved_report(&svc, 2).await;

    cycle(&svc, 1, NEXT_DAY).await;
    cycle(&svc, 2, NEXT_DAY).await;

    for value in &removed {
        for f in &files {
            assert!(
                !file_contains(f, value),
                "{value:?} is still in {}",
                f.display()
            );
        }
    }
    assert!(
        file_contains(&files[0], "ann901@example.org"),
        "kept customers stay readable"
    );
    let wal = std::fs::metadata(&files[1]).map(|m| m.len()).unwrap_or(0);
    assert_eq!(
        wal, 0,
        "the write-ahead log is truncated once a report is applied"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unclassified_column_of_a_staying_table_refuses_both_actions() {
    for venues in [
        anonymise_venue(1, "3 years", ""),
        delete_venue(1, "3 years", ""),
    ] {
        let db = TestDb::sqlite().await;
        db.db
            .execute(&Query::new(
                "ALTER TABLE order_addresses ADD COLUMN company TEXT",
            ))
            .await
            .unwrap();
        let c = customer_with_history(&db, 1, 511, "2020-02-02 10:00:00").await;
        let config = db.write_config(&venues);
        assert!(retentiond(&config, &["migrate"]).status.success());
        let before = all_customer_data(&db).await;

        let check = retentiond(&config, &["check"]);
        let cycle = retentiond(&config, &["cycle", "--at", "2026-06-15T12:00:00Z"]);

        assert_eq!(check.status.code(), Some(1), "{}", text(&check));
        assert!(
            text(&check).contains(
                "schema.references[2].columns: unclassified column(s) of order_addresses"
            ),
            "{}",
            text(&check)
        );
        assert!(text(&check).contains("company"), "{}", text(&check));
        assert_eq!(cycle.status.code(), Some(2), "{}", text(&cycle));
        assert!(
            text(&cycle).contains("order_addresses.company"),
            "{}",
            text(&cycle)
        );
        assert_eq!(all_customer_data(&db).await, before, "nothing touched");
        assert!(db.customer_row(c).await.is_some());
        assert_eq!(db.count("SELECT COUNT(*) FROM retention_reports").await, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_linked_columns_that_do_not_exist_or_break_not_null() {
    let db = TestDb::sqlite().await;
    let venues = delete_venue(2, "3 years", "");
    let path = db.write_config(&venues);
    let text_config = std::fs::read_to_string(&path).unwrap().replace(
        "address_type = \"keep\"",
        "address_type = \"null\"\ngift_wrap = \"keep\"",
    );
    std::fs::write(&path, text_config).unwrap();
    assert!(retentiond(&path, &["migrate"]).status.success());

    let check = retentiond(&path, &["check"]);

    let out = text(&check);
    assert_eq!(check.status.code(), Some(1), "{out}");
    assert!(out.contains("schema.references[2].columns.gift_wrap: column order_addresses.gift_wrap does not exist"), "{out}");
    assert!(out.contains("schema.references[2].columns.address_type: column order_addresses.address_type is NOT NULL"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_schema_passes_its_own_check_without_warning() {
    let db = TestDb::sqlite().await;
    let config = file_mail_config(
        &db,
        &(anonymise_venue(1, "3 years", "") + &delete_venue(2, "3 years", "")),
    );
    assert!(retentiond(&config, &["migrate"]).status.success());

    let check = retentiond(&config, &["check"]);

    assert_eq!(check.status.code(), Some(0), "{}", text(&check));
    assert!(!text(&check).contains("warning"), "{}", text(&check));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journal_is_caught_up_from_the_ledger_after_a_crash_between_commit_and_write() {
    let db = TestDb::sqlite().await;
    db.migrate().await;
    let journal = db.dir.path().join("erasures.jsonl");
    erasure_fixture(&db, 3).await;
    let config = file_mail_config(&db, &journal_venues(&journal, ""));
    approve_and_apply(&config);
    let complete = std::fs::read_to_string(&journal).unwrap();
    // A crash after the commit lost the last two lines, and left half of a third.
    let kept: Vec<&str> = complete.lines().take(3).collect();
    let half = &complete.lines().nth(3).unwrap()[..20];
    std::fs::write(&journal, format!("{}\n{half}", kept.join("\n"))).unwrap();

    let restart = retentiond(&config, &["cycle", "--at", "2026-06-17T12:00:00Z"]);

    assert!(restart.status.success(), "{}", text(&restart));
    let mut after: Vec<String> = std::fs::read_to_string(&journal)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let mut expected: Vec<String> = complete.lines().map(str::to_string).collect();
    after.sort();
    expected.sort();
    assert_eq!(
        after, expected,
        "every erasure journaled once, no partial line"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unwritable_journal_stops_before_any_customer_is_touched() {
    let db = TestDb::sqlite().await;
    db.migrate().await;
    erasure_fixture(&db, 2).await;
    let good = db.dir.path().join("erasures.jsonl");
    let config = file_mail_config(&db, &journal_venues(&good, ""));
    let made = retentiond(&config, &["cycle", "--at", "2026-06-15T12:00:00Z"]);
    assert!(made.status.success(), "{}", text(&made));
    assert!(
        retentiond(&config, &["reports", "approve", "1", "--by", "tester"])
            .status
            .success()
    );
    let before = all_customer_data(&db).await;
    let text_config = std::fs::read_to_string(&config).unwrap().replace(
        &good.display().to_string(),
        "/nonexistent-folder/erasures.jsonl",
    );
    std::fs::write(&config, text_config).unwrap();

    let apply = retentiond(&config, &["cycle", "--at", "2026-06-16T12:00:00Z"]);

    assert_eq!(apply.status.code(), Some(2), "{}", text(&apply));
    assert!(
        text(&apply).contains(
            "journal.path: cannot write the erasure journal /nonexistent-folder/erasures.jsonl"
        ),
        "{}",
        text(&apply)
    );
    assert_eq!(all_customer_data(&db).await, before, "nothing touched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_of_a_malformed_line_names_it_and_applies_nothing() {
    let db = TestDb::sqlite().await;
    db.migrate().await;
    let journal = db.dir.path().join("erasures.jsonl");
    erasure_fixture(&db, 2).await;
    let config = file_mail_config(&db, &journal_venues(&journal, ""));
    let backup = db.backup("before.backup").await;
    approve_and_apply(&config);
    let mut lines: Vec<String> = std::fs::read_to_string(&journal)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    lines.insert(2, "{\"report_id\": 1, \"customer_id\": \"seven\"}".into());
    std::fs::write(&journal, lines.join("\n") + "\n").unwrap();
    let db = db.restore(&backup).await;
    let before = all_customer_data(&db).await;

    let replay = retentiond(&config, &["replay", journal.to_str().unwrap()]);

    assert_eq!(replay.status.code(), Some(1), "{}", text(&replay));
    assert!(
        text(&replay).contains("erasures.jsonl:3: not a journal line"),
        "{}",
        text(&replay)
    );
    assert_eq!(all_customer_data(&db).await, before, "nothing replayed");
}

/// SQLite's automatic checkpoint is retentiond's commit hook (`db::sqlite_wal`): it records the
/// log's length after each commit and checkpoints past `AUTOMATIC_FRAMES`, except while an apply
/// holds it off and checkpoints between its own batches. Seen through the log's length: a log
/// that was checkpointed whole starts again from its first page at the next write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_commits_leave_the_checkpoint_to_a_running_apply() {
    use retentiond::db::sqlite_wal::{APPLY_CHECKPOINT_FRAMES, AUTOMATIC_FRAMES};
    let db = TestDb::sqlite().await;
    let d = &db.db;
    d.execute(&Query::new("CREATE TABLE filler (b BLOB NOT NULL)"))
        .await
        .unwrap();
    // A commit of about `pages` pages of the log: one 4 KB page a row.
    let write = |pages: i64| {
        Query::new(&format!(
            "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {pages}) \
             INSERT INTO filler (b) SELECT zeroblob(3900) FROM s"
        ))
    };
    let small = || Query::new("INSERT INTO filler (b) VALUES (x'00')");
    d.execute(&small()).await.unwrap();
    assert!(
        d.wal_frames().unwrap() > 0,
        "the hook records the log's length after a commit"
    );

    // While an apply holds the checkpoints off, a commit past the automatic length leaves the
    // log as it is: the next commit lengthens it.
    let deferral = d.defer_wal_checkpoints().expect("SQLite defers");
    d.execute(&write(AUTOMATIC_FRAMES + 500)).await.unwrap();
    let long = d.wal_frames().unwrap();
    assert!(long > AUTOMATIC_FRAMES, "{long} pages in the log");
    d.execute(&small()).await.unwrap();
    assert!(
        d.wal_frames().unwrap() > long,
        "a commit during an apply checkpointed the log"
    );
    // The apply's own checkpoint between batches, once the log is long enough for it.
    let mut writer = d.writer(false).await.unwrap();
    let checkpointed = writer.checkpoint_if_long().await.unwrap();
    assert_eq!(checkpointed, long >= APPLY_CHECKPOINT_FRAMES);
    writer.release().await.unwrap();
    drop(deferral);

    // Without an apply, a commit of a long log checkpoints it, as SQLite's own would: the
    // log starts again from its first page at the next write.
    d.execute(&write(AUTOMATIC_FRAMES + 500)).await.unwrap();
    d.execute(&small()).await.unwrap();
    assert!(
        d.wal_frames().unwrap() < 100,
        "after an automatic checkpoint the log starts again ({} pages)",
        d.wal_frames().unwrap()
    );
}

/// Apply's batches run on one held SQLite connection with a larger page cache (`db::Writer`):
/// every transaction the writer begins is on that connection (a temporary table, which only its
/// own connection sees, is still there), the pool's other connections keep SQLite's usual cache
/// meanwhile, and a released writer's connection goes back to the pool with the usual cache. A
/// writer dropped midway (a failed apply) closes its connection instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sqlite_writer_keeps_its_batches_on_one_connection() {
    let db = TestDb::sqlite().await;
    let d = &db.db;
    // (has the `mark` table, cache_size) of whichever connection the pool lends next.
    let lent = |mark: &'static str| async move {
        let row = d
            .fetch_one(&Query::new(&format!(
                "SELECT (SELECT COUNT(*) FROM temp.sqlite_master WHERE name = '{mark}'), \
                 (SELECT cache_size FROM pragma_cache_size)"
            )))
            .await
            .unwrap();
        (row.i64(0).unwrap() == 1, row.i64(1).unwrap())
    };
    let usual = lent("none").await.1;
    assert_eq!(usual, -2000, "SQLite's default cache");
    let memory = d
        .fetch_one(&Query::new("SELECT temp_store FROM pragma_temp_store"))
        .await
        .unwrap();
    assert_eq!(
        memory.i64(0).unwrap(),
        2,
        "statement journals in memory, never in a temporary file"
    );

    let mut writer = d.writer(true).await.unwrap();
    mark_connection(&mut writer, "mark").await;
    for _ in 0..3 {
        let mut tx = writer.begin().await.unwrap();
        let row = tx
            .fetch_one(&Query::new(
                "SELECT (SELECT COUNT(*) FROM temp.mark), (SELECT cache_size FROM pragma_cache_size)",
            ))
            .await
            .unwrap();
        assert_eq!(row.i64(0).unwrap(), 0, "the writer's own connection");
        assert_eq!(
            row.i64(1).unwrap(),
            -i64::from(retentiond::db::WRITER_CACHE_KIB)
        );
        tx.commit().await.unwrap();
        assert_eq!(
            lent("mark").await,
            (false, usual),
            "the pool lends another connection, with the usual cache"
        );
    }
    writer.release().await.unwrap();
    let seen: Vec<(bool, i64)> = one_after_another(8, || lent("mark")).await;
    assert!(
        seen.contains(&(true, usual)),
        "the released connection is lent again, with the usual cache: {seen:?}"
    );
    assert!(seen.iter().all(|(_, cache)| *cache == usual), "{seen:?}");

    let mut dropped = d.writer(true).await.unwrap();
    mark_connection(&mut dropped, "mark_dropped").await;
    drop(dropped);
    let seen = one_after_another(8, || lent("mark_dropped")).await;
    assert!(
        seen.iter()
            .all(|(marked, cache)| !marked && *cache == usual),
        "a writer dropped without release closes its connection: {seen:?}"
    );
}

/// Creates the temporary table `mark` in a transaction of `writer`: only the connection it ran
/// on sees it.
async fn mark_connection(writer: &mut retentiond::db::Writer<'_>, mark: &str) {
    let mut tx = writer.begin().await.unwrap();
    tx.execute(&Query::new(&format!(
        "CREATE TEMP TABLE {mark} (n INTEGER)"
    )))
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

/// `n` results of `f`, one after the other.
async fn one_after_another<T, F: std::future::Future<Output = T>>(
    n: usize,
    f: impl Fn() -> F,
) -> Vec<T> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(f().await);
    }
    out
}
