//! The command line as an operator uses it: configuration errors (exit 2, database untouched),
//! `check`, the operator workflow, and crash safety under SIGKILL during apply.

use crate::common::{anonymise_venue, config_toml, delete_venue, t, TestDb, HASH_KEY};
use retentiond::cycle::{run_venue_cycle, Selection};
use retentiond::db::{Backend, Query};
use retentiond::policy::{keyed_hash, ReportState};
use retentiond::reports;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::common::retentiond;

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn bad_configuration_exits_2_naming_file_and_key_and_touches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("never-created.db");
    let url = format!("sqlite://{}", db_path.display());
    let good = config_toml(&url, &anonymise_venue(1, "3 years", ""));
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "unknown strategy",
            good.replace(
                "last_name = \"redact:gone\"\nemail = \"hash\"",
                "last_name = \"redact:gone\"\nemail = \"scramble\"",
            ),
            "venues[0].anonymise.email",
        ),
        (
            "bad duration",
            good.replace("inactive_for = \"3 years\"", "inactive_for = \"3 yeers\""),
            "venues[0].inactive_for",
        ),
        (
            "negative duration",
            good.replace("inactive_for = \"3 years\"", "inactive_for = \"-3 years\""),
            "venues[0].inactive_for",
        ),
        (
            "bad identifier",
            good.replace(
                "[schema]",
                "[schema]\ncustomers = \"customers; drop table x\"",
            ),
            "schema.customers",
        ),
        (
            "empty approvers",
            good.replace(
                "approvers = [\"boxoffice@venue1.example\"]",
                "approvers = []",
            ),
            "venues[0].approvers",
        ),
        (
            "missing approvers",
            good.replace("approvers = [\"boxoffice@venue1.example\"]", ""),
            "approvers",
        ),
        (
            "misspelt key",
            good.replace(
                "inactive_for =",
                "inactve_for = \"3 years\"\ninactive_for =",
            ),
            "inactve_for",
        ),
        (
            "bad time zone",
            good.replace("Europe/London", "Europe/Londn"),
            "venues[0].timezone",
        ),
        (
            "bad on_delete",
            good.replace("on_delete = \"delete\"", "on_delete = \"cascade\""),
            "schema.references[1].on_delete",
        ),
    ];
    for (what, text, key) in cases {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, text).unwrap();

        let out = retentiond(&path, &["cycle"]);

        assert_eq!(out.status.code(), Some(2), "{what}: {}", stderr(&out));
        let err = stderr(&out);
        assert_eq!(err.trim().lines().count(), 1, "{what}: one line: {err}");
        assert!(err.contains("bad.toml"), "{what}: names the file: {err}");
        assert!(err.contains(key), "{what}: names {key}: {err}");
        assert!(!db_path.exists(), "{what}: the database was touched");
    }
}

#[test]
fn missing_configuration_file_exits_2() {
    let out = retentiond(Path::new("/nonexistent/retentiond.toml"), &["check"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("/nonexistent/retentiond.toml"));
}

#[test]
fn usage_error_exits_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_retentiond"))
        .args(["cycle", "--at", "yesterday"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unclassified_column_is_named_by_check_and_refuses_anonymise() {
    let db = TestDb::sqlite().await;
    db.db
        .execute(&Query::new(
            "ALTER TABLE customers ADD COLUMN loyalty_number TEXT",
        ))
        .await
        .unwrap();
    db.customer(1, "2019-01-01 00:00:00").await;
    let config = db.write_config(&anonymise_venue(1, "3 years", ""));
    assert_eq!(retentiond(&config, &["migrate"]).status.code(), Some(0));

    let check = retentiond(&config, &["check"]);
    let cycle = retentiond(&config, &["cycle", "--at", "2026-06-15T12:00:00Z"]);

    assert_eq!(check.status.code(), Some(1));
    assert!(
        stdout(&check).contains("loyalty_number"),
        "{}",
        stdout(&check)
    );
    assert_eq!(cycle.status.code(), Some(2), "{}", stderr(&cycle));
    assert!(stdout(&cycle).contains("loyalty_number"));
    assert_eq!(db.count("SELECT COUNT(*) FROM retention_reports").await, 0);
}

async fn check_names_missing_tables_columns_unlisted_foreign_keys_and_not_null_conflicts(
    db: TestDb,
) {
    let drop_index = match db.backend() {
        // InnoDB keeps an index on every foreign key: the notes table is made without both.
        Backend::Mysql => "DROP TABLE customer_notes; CREATE TABLE customer_notes (id BIGINT AUTO_INCREMENT PRIMARY KEY, customer_id BIGINT NOT NULL, body TEXT NOT NULL)",
        _ => "DROP INDEX customer_notes_customer",
    };
    db.db.execute_script(drop_index).await.unwrap();
    db.db
        .execute(&Query::new(
            "CREATE TABLE lockers (id BIGINT PRIMARY KEY, holder BIGINT, FOREIGN KEY (holder) REFERENCES customers(id))",
        ))
        .await
        .unwrap();
    let venues = delete_venue(2, "3 years", "").replace(
        "[[venues]]",
        "[[schema.references]]\ntable = \"vouchers\"\ncolumn = \"customer_id\"\non_delete = \"delete\"\n\n[[venues]]",
    ) + &anonymise_venue(1, "3 years", "").replace("city = \"keep\"", "city = \"keep\"\nlegal_hold = \"keep\"").replace("marketing_opt_in = \"keep\"", "marketing_opt_in = \"null\"");
    let config = db.write_config(&venues);
    retentiond(&config, &["migrate"]);

    let out = retentiond(&config, &["check"]);

    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("table vouchers does not exist"), "{text}");
    assert!(text.contains("foreign key lockers.holder"), "{text}");
    assert!(
        text.contains(
            "venues[1].anonymise.marketing_opt_in: column customers.marketing_opt_in is NOT NULL"
        ),
        "{text}"
    );
    assert!(
        !text.contains("foreign key orders.customer_id"),
        "listed references are fine: {text}"
    );
    assert!(
        text.contains("warning: schema.references[1]: no index on customer_notes(customer_id)"),
        "{text}"
    );
}

/// The run's checks read the catalogue of many tables in one statement: what it finds for each
/// table is what the table's own read finds, a table whose name needs its case kept included,
/// and a table that does not exist is left out.
async fn the_catalogue_of_many_tables_is_read_as_each_table_alone(db: TestDb) {
    db.db
        .execute(&Query::new(
            "CREATE TABLE \"GiftCards\" (id BIGINT PRIMARY KEY, \"Holder\" BIGINT NOT NULL, issued_at DATE, code VARCHAR(20) DEFAULT 'x')",
        ))
        .await
        .unwrap();
    let name = |n: &str| retentiond::db::Ident::new(n).unwrap();
    let (customers, orders, cards, missing) = (
        name("customers"),
        name("orders"),
        name("GiftCards"),
        name("no_such_table"),
    );
    let asked = [&customers, &orders, &cards, &missing, &customers];

    let found = db.db.columns_of(&asked).await.unwrap();

    assert_eq!(
        found.keys().map(String::as_str).collect::<Vec<_>>(),
        ["GiftCards", "customers", "orders"],
        "every table that exists, once, by the name asked"
    );
    for table in [&customers, &orders, &cards] {
        let alone = db.db.columns(table).await.unwrap().unwrap();
        assert_eq!(found[table.name()], alone, "{table}");
    }
    let cards = &found["GiftCards"];
    assert_eq!(
        cards.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        ["id", "Holder", "issued_at", "code"],
        "in the table's order"
    );
    assert!(cards[0].primary_key && cards[1].not_null && cards[3].has_default);
    assert!(cards[2].is_temporal() && cards[3].is_textual());
    // Only MySQL's buffer pool is weighed against the tables (`check`'s warning).
    let weighed = db.db.buffer_pool_and_tables(&asked).await.unwrap();
    assert_eq!(weighed.is_some(), db.backend() == Backend::Mysql);
}

on_both_backends!(
    the_catalogue_of_many_tables_is_read_as_each_table_alone,
    check_names_missing_tables_columns_unlisted_foreign_keys_and_not_null_conflicts,
    sigkill_during_apply_processes_every_customer_exactly_once,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_workflow_from_the_command_line() {
    let db = TestDb::sqlite().await;
    let old = db.customer(2, "2019-01-01 00:00:00").await;
    db.order(old, "2020-01-01 00:00:00").await;
    let recent = db.customer(2, "2019-01-01 00:00:00").await;
    db.order(recent, "2026-01-01 00:00:00").await;
    let config = db.write_config(&delete_venue(2, "3 years", ""));
    assert!(retentiond(&config, &["migrate"]).status.success());
    assert!(retentiond(&config, &["check"]).status.success());

    let dry = retentiond(
        &config,
        &["cycle", "--at", "2026-06-15T12:00:00Z", "--dry-run"],
    );
    assert!(
        stdout(&dry).contains("would create a report of 1 customers"),
        "{}",
        stdout(&dry)
    );
    assert_eq!(db.count("SELECT COUNT(*) FROM retention_reports").await, 0);
    let created = retentiond(&config, &["cycle", "--at", "2026-06-15T12:00:00Z"]);
    assert!(
        stdout(&created).contains("created report 1: 1 customers"),
        "{}",
        stdout(&created)
    );
    let list: serde_json::Value =
        serde_json::from_slice(&retentiond(&config, &["reports", "list", "--json"]).stdout)
            .unwrap();
    assert_eq!(list[0]["state"], "pending");
    assert_eq!(list[0]["customer_count"], 1);
    let csv = stdout(&retentiond(&config, &["reports", "csv", "1"]));
    assert_eq!(csv.lines().count(), 2, "{csv}");
    assert!(
        csv.contains(&format!(
            "{old},Ann1 Smith1,ann1@example.org,2020-01-01 00:00:00"
        )),
        "{csv}"
    );
    let approve = retentiond(
        &config,
        &["reports", "approve", "1", "--by", "Sam (phone call)"],
    );
    assert!(approve.status.success(), "{}", stderr(&approve));
    let applied = retentiond(&config, &["cycle", "--at", "2026-06-16T12:00:00Z"]);
    assert!(
        stdout(&applied).contains("applied: 1 processed, 0 skipped"),
        "{}",
        stdout(&applied)
    );
    let shown: serde_json::Value =
        serde_json::from_slice(&retentiond(&config, &["reports", "show", "1", "--json"]).stdout)
            .unwrap();
    assert_eq!(shown["state"], "applied");
    assert_eq!(shown["outcomes"]["deleted"], 1);
    assert_eq!(
        retentiond(&config, &["reports", "csv", "1"]).status.code(),
        Some(1),
        "no CSV once applied"
    );

    let audit = retentiond(&config, &["audit", "--json"]);
    let text = stdout(&audit);
    let ledger: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(ledger["customers"][0]["customer_id"], old);
    assert_eq!(ledger["customers"][0]["outcome"], "deleted");
    assert!(text.contains("operator:Sam (phone call)"));
    for personal in ["Ann1", "Smith1", "ann1@example.org", "High Street", "07700"] {
        assert!(
            !text.contains(personal),
            "the ledger holds no personal data ({personal})"
        );
    }
}

/// Seeds `n` old, idle customers of venue 1 set-based, each with one old order.
async fn bulk_customers(db: &TestDb, n: u32) {
    let insert = match db.backend() {
        // Ids given, so that they are 1..n: InnoDB reserves keys for a bulk insert in blocks.
        Backend::Sqlite | Backend::Mysql => format!(
            "INSERT INTO customers (id, venue_id, title, first_name, last_name, email, phone, city, postcode, date_of_birth, created_at) \
             SELECT n, 1, 'Mr', 'Bulk' || n, 'Person', 'bulk' || n || '@example.org', '0700', 'Leeds', 'LS1 4AP', '1970-02-03', '2019-01-01 00:00:00' FROM {}",
            crate::common::series(n)
        ),
        Backend::Postgres => format!(
            "INSERT INTO customers (venue_id, title, first_name, last_name, email, phone, city, postcode, date_of_birth, created_at) \
             SELECT 1, 'Mr', 'Bulk' || n, 'Person', 'bulk' || n || '@example.org', '0700', 'Leeds', 'LS1 4AP', DATE '1970-02-03', \
             TIMESTAMPTZ '2019-01-01 00:00:00+00' FROM generate_series(1, {n}) AS s(n)"
        ),
    };
    db.db.execute(&Query::new(&insert)).await.unwrap();
    db.db
        .execute(&Query::new("INSERT INTO orders (venue_id, customer_id, placed_at, total_pence) SELECT venue_id, id, created_at, 100 FROM customers"))
        .await
        .unwrap();
}

fn env_number(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

const CUSTOMER_COLUMNS: &str = "id, venue_id, title, first_name, last_name, email, phone, address_line1, address_line2, city, postcode, country, date_of_birth, marketing_opt_in, legal_hold, created_at";

/// Crash safety (issue 4): a report applied while the process is SIGKILLed at random moments
/// ends identical to one clean run of the same report. Scale with RETENTIOND_PROOF_CUSTOMERS
/// and RETENTIOND_PROOF_KILLS (see scripts/proof.sh); CI runs the short default.
async fn sigkill_during_apply_processes_every_customer_exactly_once(db: TestDb) {
    let n = env_number("RETENTIOND_PROOF_CUSTOMERS", 3000);
    let max_kills = env_number("RETENTIOND_PROOF_KILLS", 25);
    let venues = anonymise_venue(1, "3 years", "") + "\n[apply]\nbatch_size = 5\n";
    let smtp = crate::common::smtp::SmtpSink::start().await;
    let (report_id, svc) = prepare_kill_fixture(&db, n, &venues).await;
    let config_path = db.write_config(&venues);
    let bystander = db.customer_row(i64::from(n) + 1).await;

    let processed = || async {
        db.count(&format!("SELECT COUNT(*) FROM retention_report_items WHERE report_id = {report_id} AND outcome IS NOT NULL")).await
    };
    let (mut kills, mut resumes, mut runs) = (0, 0, 0);
    let mut seed = std::process::id() as u64 ^ 0x9E37_79B9_7F4A_7C15;
    loop {
        runs += 1;
        assert!(runs < 10 * max_kills + 100, "the report never finished");
        let before = processed().await;
        // Once applied, the clock moves on (as it does in production), so a message leased by a
        // killed sender becomes due again.
        let finished = reports::get(&svc.db, report_id)
            .await
            .unwrap()
            .unwrap()
            .state
            == ReportState::Applied;
        let clock = if finished {
            format!("2026-06-16T{:02}:00:00Z", 13 + runs.min(10))
        } else {
            "2026-06-16T12:00:00Z".to_string()
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_retentiond"))
            .arg("--config")
            .arg(&config_path)
            .args(["cycle", "--venue", "1", "--at", &clock])
            .env("RUST_LOG", "error")
            .env("RETENTIOND__MAIL__SMTP_URL", smtp.url())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        // Kill at a random moment after this run has committed a batch of its own (how long
        // a process takes to get there depends on the machine's load).
        let wait_ms = if kills < max_kills {
            (seed >> 33) % 160
        } else {
            600_000
        };
        let started = std::time::Instant::now();
        while child.try_wait().unwrap().is_none()
            && processed().await == before
            && started.elapsed() < Duration::from_secs(60)
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let started = std::time::Instant::now();
        while child.try_wait().unwrap().is_none()
            && started.elapsed() < Duration::from_millis(wait_ms)
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // Kill only while the apply is in progress: once the report is applied the process is
        // sending mail, and a kill between the server's acceptance and the outbox update would
        // duplicate the message after its lease (the at-least-once window SMTP cannot close).
        let applying = reports::get(&svc.db, report_id)
            .await
            .unwrap()
            .unwrap()
            .state
            != ReportState::Applied;
        if applying && child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        child.wait().unwrap();
        let after = processed().await;
        if before > 0 && after > before {
            resumes += 1;
        }
        let applied = reports::get(&svc.db, report_id)
            .await
            .unwrap()
            .unwrap()
            .state
            == ReportState::Applied;
        if applied
            && smtp
                .mails()
                .iter()
                .any(|m| m.subject().starts_with("Done:"))
        {
            break;
        }
    }

    // The same report applied once, cleanly, in a fresh database.
    let clean = db.another().await;
    let (clean_report, clean_svc) = prepare_kill_fixture(&clean, n, &venues).await;
    let venue = clean_svc.config.venue(1).unwrap().clone();
    run_venue_cycle(&clean_svc, &venue, t("2026-06-16 12:00:00"), false)
        .await
        .unwrap();
    let partial = db
        .count(&format!(
            "SELECT COUNT(*) FROM customers c JOIN retention_report_items i ON i.customer_id = c.id AND i.report_id = {report_id} \
             WHERE NOT (c.first_name IS NULL AND c.last_name = 'gone' AND c.phone IS NULL AND length(c.email) = 64 AND c.postcode = 'LS1 ')"
        ))
        .await;
    let confirmations = smtp
        .mails()
        .iter()
        .filter(|m| m.subject().starts_with("Done:"))
        .count();
    eprintln!(
        "crash proof {:?}: {n} customers, {kills} SIGKILLs, {resumes} resumes, {runs} runs, {partial} partial customers, {confirmations} confirmation(s)",
        db.backend()
    );

    assert_eq!(clean_report, report_id);
    assert!(
        kills >= 1 && resumes >= 1,
        "no kill landed mid-apply ({kills} kills, {resumes} resumes)"
    );
    assert_eq!(partial, 0);
    assert_eq!(processed().await, i64::from(n));
    assert_eq!(
        db.count("SELECT COUNT(*) FROM retention_anonymised").await,
        i64::from(n)
    );
    assert!(
        db.dump("customers", CUSTOMER_COLUMNS, "id").await
            == clean.dump("customers", CUSTOMER_COLUMNS, "id").await,
        "identical to a clean run"
    );
    let items = "report_id, customer_id, outcome, processed_at";
    assert!(
        db.dump("retention_report_items", items, "customer_id")
            .await
            == clean
                .dump("retention_report_items", items, "customer_id")
                .await
    );
    assert_eq!(
        db.customer_row(i64::from(n) + 1).await,
        bystander,
        "a customer outside the report is untouched"
    );
    // Hashed exactly once: a second pass would have hashed the hash.
    let first = db
        .db
        .fetch_one(&Query::new("SELECT email FROM customers WHERE id = 1"))
        .await
        .unwrap()
        .text(0)
        .unwrap();
    assert_eq!(first, keyed_hash(HASH_KEY.as_bytes(), "bulk1@example.org"));
    assert_eq!(db.count(&format!("SELECT COUNT(*) FROM retention_audit WHERE report_id = {report_id} AND event = 'applied'")).await, 1);
    assert_eq!(db.count(&format!("SELECT COUNT(*) FROM retention_outbox WHERE report_id = {report_id} AND kind = 'applied'")).await, 1);
    assert_eq!(confirmations, 1, "exactly one confirmation sent");
}

/// `n` idle customers of venue 1 plus one active bystander, and an approved report of the `n`.
async fn prepare_kill_fixture(db: &TestDb, n: u32, venues: &str) -> (i64, retentiond::Service) {
    db.migrate().await;
    bulk_customers(db, n).await;
    let bystander = db.customer(1, "2019-01-01 00:00:00").await;
    assert_eq!(bystander, i64::from(n) + 1);
    db.order(bystander, "2026-05-01 00:00:00").await;
    let svc = db.service(venues).await;
    let venue = svc.config.venue(1).unwrap().clone();
    let Some(Selection::Created {
        report_id,
        customers,
    }) = run_venue_cycle(&svc, &venue, t("2026-06-15 12:00:00"), false)
        .await
        .unwrap()
        .selection
    else {
        panic!("expected a report")
    };
    assert_eq!(customers, u64::from(n));
    crate::common::operator_approves(&svc.db, report_id, t("2026-06-15 12:00:00")).await;
    (report_id, svc)
}

#[test]
fn a_mistyped_sqlite_path_is_refused_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("custmers.db");
    let config = dir.path().join("retentiond.toml");
    std::fs::write(
        &config,
        crate::common::config_toml(
            &format!("sqlite://{}", missing.display()),
            &crate::common::delete_venue(1, "3 years", ""),
        ),
    )
    .unwrap();

    for command in [&["check"][..], &["cycle"], &["reports", "list"], &["audit"]] {
        let out = crate::common::retentiond(&config, command);
        assert_eq!(out.status.code(), Some(1), "{command:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!(
                "cannot open the SQLite database {}: no such file",
                missing.display()
            )),
            "{command:?}: {}",
            stderr(&out)
        );
    }
    assert!(!missing.exists(), "no empty database was made");
    let migrate = crate::common::retentiond(&config, &["migrate"]);
    assert!(migrate.status.success(), "{}", stderr(&migrate));
    assert!(missing.exists(), "migrate creates it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relative_paths_are_read_from_the_configuration_folder_not_the_working_directory() {
    let db = TestDb::sqlite().await;
    db.migrate().await;
    db.customer(1, "2019-01-01 00:00:00").await;
    // The configuration lives in etc/, beside its database; the command starts elsewhere.
    let etc = db.dir.path().join("etc");
    std::fs::create_dir(&etc).unwrap();
    let text = config_toml(
        "sqlite://../customers.db",
        &anonymise_venue(1, "3 years", ""),
    )
    .replacen(
        "[mail]\n",
        "[mail]\ntransport = \"file\"\ndir = \"outbox\"\n",
        1,
    ) + "\n[journal]\npath = \"erasures.jsonl\"\n";
    let config = etc.join("retentiond.toml");
    std::fs::write(&config, text).unwrap();
    let elsewhere = tempfile::tempdir().unwrap();

    let cycle = Command::new(env!("CARGO_BIN_EXE_retentiond"))
        .current_dir(elsewhere.path())
        .args([
            "--config",
            config.to_str().unwrap(),
            "cycle",
            "--at",
            "2026-06-15T12:00:00Z",
        ])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();

    assert!(
        cycle.status.success(),
        "{}{}",
        stdout(&cycle),
        stderr(&cycle)
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM retention_reports").await,
        1,
        "the report was made in the database beside the configuration"
    );
    assert!(
        std::fs::read_dir(etc.join("outbox")).unwrap().count() > 0,
        "mail written to etc/outbox"
    );
    assert!(
        etc.join("erasures.jsonl").exists(),
        "the journal is etc/erasures.jsonl"
    );
    assert_eq!(
        std::fs::read_dir(elsewhere.path()).unwrap().count(),
        0,
        "nothing written where the command started"
    );
}

/// `whatif` (SPEC 12) prints, for each period, the candidates, their share and what the holds
/// keep back, and the customers by year of last activity; it changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whatif_compares_periods_and_changes_nothing() {
    let db = TestDb::sqlite().await;
    db.migrate().await;
    let recent = db.customer(1, "2019-01-01 00:00:00").await;
    db.order(recent, "2025-09-01 10:00:00").await;
    let lapsed = db.customer(1, "2019-01-01 00:00:00").await;
    db.order(lapsed, "2022-03-01 10:00:00").await;
    let _never = db.customer(1, "2019-01-01 00:00:00").await;
    let held = db.customer_with(1, "2019-01-01 00:00:00", 990, true).await;
    db.order(held, "2021-03-01 10:00:00").await;
    let config = db.write_config(&anonymise_venue(1, "3 years", ""));

    let out = retentiond(
        &config,
        &[
            "whatif",
            "--venue",
            "1",
            "--at",
            "2026-06-15",
            "--periods",
            "6 months,3 years",
            "--json",
        ],
    );

    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(json["customers"], 4);
    let periods = json["periods"].as_array().unwrap();
    assert_eq!(periods[0]["inactive_for"], "6 months");
    assert_eq!(
        periods[0]["candidates"], 3,
        "September 2025 is before mid-December 2025"
    );
    assert_eq!(
        periods[1]["candidates"], 2,
        "the lapsed (March 2022) and the never-active"
    );
    assert_eq!(periods[1]["held_back"]["total"], 1);
    assert_eq!(periods[1]["held_back"]["by_hold"][0][0], "legal hold");
    assert_eq!(
        json["by_year"],
        serde_json::json!([[null, 1], [2021, 1], [2022, 1], [2025, 1]])
    );
    let text = retentiond(&config, &["whatif", "--venue", "1", "--at", "2026-06-15"]);
    let text = stdout(&text);
    assert!(text.contains("10 years"), "{text}");
    assert!(text.contains("1 kept back: legal hold 1"), "{text}");
    assert_eq!(db.count("SELECT COUNT(*) FROM retention_reports").await, 0);
    let unknown = retentiond(&config, &["whatif", "--venue", "9"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        stderr(&unknown).contains("venue 9 is not in"),
        "{}",
        stderr(&unknown)
    );
}
