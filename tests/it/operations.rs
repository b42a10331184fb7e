//! An operator's day through the binary (SPEC 6, 7): `check` finds what would fail later, the
//! operator rejects a report on the venue's behalf, and `cycle --at` takes a date.

use crate::common::{delete_venue, TestDb};
use retentiond::db::Query;
use std::process::Command;

use crate::common::{output_text as text, retentiond};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_an_unknown_customer_that_could_not_be_created() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    db.db
        .execute(&Query::new(
            "ALTER TABLE customers ALTER COLUMN id DROP IDENTITY",
        ))
        .await
        .unwrap();
    let config = db.write_config_with_file_mail(&delete_venue(2, "3 years", ""));
    assert!(retentiond(&config, &["migrate"]).status.success());

    let check = retentiond(&config, &["check"]);

    assert_eq!(check.status.code(), Some(1), "{}", text(&check));
    assert!(
        text(&check).contains("venues[0].unknown_customer_id: not set, and the Unknown Customer record of venue 2 cannot be created: column(s) id of customers have no default"),
        "{}",
        text(&check)
    );
    let with_record = db.write_config(&delete_venue(2, "3 years", "unknown_customer_id = 1"));
    db.db
        .execute(&Query::new(
            "INSERT INTO customers (id, venue_id, created_at) VALUES (1, 2, now())",
        ))
        .await
        .unwrap();
    let fixed = retentiond(&with_record, &["check"]);
    assert!(
        !text(&fixed).contains("cannot be created"),
        "{}",
        text(&fixed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_warns_when_the_smtp_server_does_not_answer() {
    let db = TestDb::sqlite().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = db.write_config(&delete_venue(2, "3 years", ""));
    let text_config = std::fs::read_to_string(&config).unwrap().replacen(
        "[mail]\n",
        &format!("[mail]\nsmtp_url = \"smtp://127.0.0.1:{closed}\"\n"),
        1,
    );
    std::fs::write(&config, text_config).unwrap();
    assert!(retentiond(&config, &["migrate"]).status.success());

    let check = retentiond(&config, &["check"]);

    assert_eq!(
        check.status.code(),
        Some(0),
        "a warning, not a problem: {}",
        text(&check)
    );
    assert!(
        text(&check).contains("warning: mail: cannot reach the SMTP server"),
        "{}",
        text(&check)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_rejects_on_the_venues_behalf_and_cycle_takes_a_date() {
    let db = TestDb::sqlite().await;
    db.customer(2, "2019-01-01 00:00:00").await;
    let config = db.write_config_with_file_mail(&delete_venue(2, "3 years", ""));
    assert!(retentiond(&config, &["migrate"]).status.success());
    let empty = retentiond(&config, &["audit"]);
    assert!(
        empty.status.success(),
        "an empty ledger is not an error: {}",
        text(&empty)
    );
    assert!(text(&empty).contains("the ledger is empty"));

    let cycle = retentiond(&config, &["cycle", "--at", "2026-06-15"]);
    let reject = retentiond(
        &config,
        &[
            "reports",
            "reject",
            "1",
            "--by",
            "Sam, phone call",
            "--reason",
            "the venue wants to keep Ann",
        ],
    );
    let show = retentiond(&config, &["reports", "show", "1"]);
    let audit = retentiond(&config, &["audit"]);
    let other_venue = retentiond(&config, &["audit", "--venue", "9"]);
    let none_pending = retentiond(
        &config,
        &[
            "reports", "list", "--venue", "2", "--state", "pending", "--state", "approved",
        ],
    );
    let rejected = retentiond(&config, &["reports", "list", "--state", "rejected"]);

    assert!(cycle.status.success(), "{}", text(&cycle));
    assert!(
        text(&cycle).contains("at 2026-06-14T23:00:00+00:00"),
        "local midnight in Europe/London: {}",
        text(&cycle)
    );
    assert!(reject.status.success(), "{}", text(&reject));
    assert!(
        text(&reject).contains("report 1 is rejected"),
        "{}",
        text(&reject)
    );
    assert!(
        text(&show).contains("the venue wants to keep Ann"),
        "{}",
        text(&show)
    );
    assert!(
        text(&audit)
            .contains("rejected  by operator:Sam, phone call: reason given; kept with the report"),
        "{}",
        text(&audit)
    );
    assert!(
        !text(&audit).contains("keep Ann"),
        "no free text in the ledger: {}",
        text(&audit)
    );
    // An empty answer names what was asked for, and a venue id the configuration lacks.
    assert!(
        text(&other_venue).contains(
            "the ledger has nothing of venue 9 (not a configured venue): no report has been made for it yet"
        ),
        "{}",
        text(&other_venue)
    );
    assert!(
        !text(&other_venue).contains("rejected"),
        "{}",
        text(&other_venue)
    );
    assert!(
        text(&none_pending).contains("no reports of venue 2 in state pending or approved"),
        "{}",
        text(&none_pending)
    );
    assert!(
        !text(&rejected).contains("no reports") && text(&rejected).contains("rejected"),
        "{}",
        text(&rejected)
    );
}

#[test]
fn database_errors_name_what_could_not_be_reached_and_env_values_are_blamed_on_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("retentiond.toml");
    std::fs::write(
        &config,
        crate::common::config_toml(
            "sqlite:///nonexistent-folder/x.db",
            &delete_venue(2, "3 years", ""),
        ),
    )
    .unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();

    let missing_folder = retentiond(&config, &["check"]);
    let unreachable = Command::new(env!("CARGO_BIN_EXE_retentiond"))
        .arg("--config")
        .arg(&config)
        .arg("check")
        .env(
            "RETENTIOND__DATABASE__URL",
            format!("postgres://postgres@127.0.0.1:{closed}/test"),
        )
        .output()
        .unwrap();
    let bad_env = Command::new(env!("CARGO_BIN_EXE_retentiond"))
        .arg("--config")
        .arg(&config)
        .arg("check")
        .env("RETENTIOND__DATABASE__URL", "mysqlx://somewhere")
        .output()
        .unwrap();

    assert_eq!(missing_folder.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&missing_folder.stderr).trim(),
        "retentiond: cannot open the SQLite database /nonexistent-folder/x.db: the folder /nonexistent-folder does not exist"
    );
    let err = String::from_utf8_lossy(&unreachable.stderr);
    assert_eq!(unreachable.status.code(), Some(1));
    assert!(err.contains(&format!("cannot connect to PostgreSQL at 127.0.0.1:{closed} (database test): Connection refused")), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let err = String::from_utf8_lossy(&bad_env.stderr);
    assert_eq!(bad_env.status.code(), Some(2));
    assert!(
        err.contains("environment: RETENTIOND__DATABASE__URL: expected a URL"),
        "{err}"
    );
    assert!(
        !err.contains("retentiond.toml"),
        "not blamed on the file: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_written_to_a_file_carry_no_colour_codes() {
    let db = TestDb::sqlite().await;
    db.customer(2, "2019-01-01 00:00:00").await;
    let config = db.write_config_with_file_mail(&delete_venue(2, "3 years", ""));
    assert!(retentiond(&config, &["migrate"]).status.success());

    let out = Command::new(env!("CARGO_BIN_EXE_retentiond"))
        .arg("--config")
        .arg(&config)
        .arg("cycle")
        .env("RUST_LOG", "info")
        .output()
        .unwrap();

    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("report created"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "no ANSI escape codes when stderr is not a terminal: {log:?}"
    );
}

#[test]
fn a_second_demo_or_run_is_refused_while_the_demo_serves() {
    let dir = tempfile::tempdir().unwrap();
    let spawn = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_retentiond"))
            .current_dir(dir.path())
            .args(args)
            .env("RUST_LOG", "error")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut demo = spawn(&["demo"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !dir.path().join("demo/outbox").exists()
        || std::net::TcpStream::connect("127.0.0.1:8080").is_err()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the demo never came up"
        );
        assert!(demo.try_wait().unwrap().is_none(), "the demo stopped");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    let second = spawn(&["demo"]).wait_with_output().unwrap();
    let run = spawn(&["--config", "demo/retentiond.toml", "run"])
        .wait_with_output()
        .unwrap();
    let cycle = Command::new(env!("CARGO_BIN_EXE_retentiond"))
        .current_dir(dir.path())
        .args(["--config", "demo/retentiond.toml", "cycle"])
        .output()
        .unwrap();
    let _ = Command::new("kill")
        .args(["-TERM", &demo.id().to_string()])
        .status();
    demo.wait().unwrap();

    for (what, out) in [("demo", &second), ("run", &run)] {
        assert_eq!(out.status.code(), Some(1), "{what}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("another retentiond daemon (run or demo) is running"),
            "{what}: {err}"
        );
    }
    assert!(
        cycle.status.success(),
        "an operator's cycle works beside the demo: {}",
        String::from_utf8_lossy(&cycle.stderr)
    );
    assert!(
        dir.path().join("demo/retention.db").exists(),
        "the second demo did not wipe the first"
    );
}

/// Pastes the lines that follow each "# add under HEADER ..." comment of a proposal under the
/// `nth` occurrence of that header in `config`.
fn paste(config: &str, proposal: &str, header: &str, nth: usize, marker: &str) -> String {
    let lines: Vec<&str> = proposal
        .lines()
        .skip_while(|l| !l.starts_with(marker))
        .skip(1)
        .take_while(|l| {
            !l.starts_with('#')
                && !l.starts_with("problem")
                && !l.starts_with("warning")
                && !l.starts_with("ok:")
        })
        .collect();
    assert!(
        !lines.is_empty(),
        "nothing proposed after {marker}: {proposal}"
    );
    let mut seen = 0;
    let mut out = String::new();
    for line in config.lines() {
        out.push_str(line);
        out.push('\n');
        if line.trim() == header {
            if seen == nth {
                for l in &lines {
                    out.push_str(l);
                    out.push('\n');
                }
            }
            seen += 1;
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_suggest_proposes_strategies_that_make_check_pass() {
    let db = TestDb::sqlite().await;
    for sql in [
        "ALTER TABLE customers ADD COLUMN loyalty_email TEXT",
        "ALTER TABLE order_addresses ADD COLUMN company TEXT",
    ] {
        db.db.execute(&Query::new(sql)).await.unwrap();
    }
    let c = db.customer(1, "2019-01-01 00:00:00").await;
    db.order(c, "2020-01-01 00:00:00").await;
    db.db
        .execute(&Query::new(
            "UPDATE customers SET loyalty_email = 'secret.person@example.org'",
        ))
        .await
        .unwrap();
    let config = db.write_config_with_file_mail(&crate::common::anonymise_venue(1, "3 years", ""));
    assert!(retentiond(&config, &["migrate"]).status.success());

    let suggest = retentiond(&config, &["check", "--suggest"]);

    let proposal = text(&suggest);
    assert!(proposal.contains("loyalty_email = \"hash\""), "{proposal}");
    assert!(proposal.contains("company = \"null\""), "{proposal}");
    assert!(
        !proposal.contains("secret.person"),
        "no value is ever printed: {proposal}"
    );
    let original = std::fs::read_to_string(&config).unwrap();
    let pasted = paste(
        &original,
        &proposal,
        "[venues.anonymise]",
        0,
        "# add under [venues.anonymise]",
    );
    let pasted = paste(
        &pasted,
        &proposal,
        "[schema.references.columns]",
        1,
        "# add under [schema.references.columns] of schema.references[2]",
    );
    std::fs::write(&config, pasted).unwrap();
    let check = retentiond(&config, &["check"]);
    assert_eq!(check.status.code(), Some(0), "{}", text(&check));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_suggest_fills_a_missing_anonymise_table_and_lists_unlisted_foreign_keys() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("club.db").display());
    let db = retentiond::db::Db::connect(&url).await.unwrap();
    db.execute_script(
        "CREATE TABLE members (member_no INTEGER PRIMARY KEY, club INTEGER NOT NULL, joined TEXT NOT NULL,
           mail TEXT, mobile TEXT);
         CREATE TABLE purchases (id INTEGER PRIMARY KEY, member_no INTEGER NOT NULL REFERENCES members(member_no),
           bought_at TEXT NOT NULL, amount INTEGER NOT NULL);
         CREATE INDEX purchases_member ON purchases (member_no, bought_at);
         CREATE TABLE tickets (id INTEGER PRIMARY KEY, holder INTEGER REFERENCES members(member_no), seat TEXT);
         CREATE INDEX tickets_holder ON tickets (holder);
         CREATE INDEX members_club ON members (club);
         INSERT INTO members VALUES (1, 7, '2019-01-01 00:00:00', 'pat@example.org', '07700 900123');
         INSERT INTO purchases VALUES (1, 1, '2020-01-01 00:00:00', 1500);
         INSERT INTO tickets VALUES (1, 1, 'B12');",
    )
    .await
    .unwrap();
    db.close().await;
    let config = dir.path().join("club.toml");
    std::fs::write(
        &config,
        format!(
            r#"[database]
url = "{url}"
[mail]
transport = "file"
dir = "{}"
[secrets]
hash_key = "{}"
[schema]
customers = "members"
customer_id = "member_no"
customer_venue = "club"
customer_created_at = "joined"
orders = "purchases"
order_customer = "member_no"
order_placed_at = "bought_at"
display_name = ["mail"]
display_email = "mail"
[[schema.references]]
table = "purchases"
column = "member_no"
on_delete = "reassign"
[schema.references.columns]
amount = "keep"
bought_at = "keep"
[[venues]]
id = 7
name = "Jazz Club"
approvers = ["door@jazz.example"]
inactive_for = "3 years"
action = "anonymise"
"#,
            dir.path().join("outbox").display(),
            crate::common::HASH_KEY
        ),
    )
    .unwrap();
    let refused = retentiond(&config, &["check"]);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert!(
        text(&refused).contains("[venues.anonymise]"),
        "{}",
        text(&refused)
    );

    let suggest = retentiond(&config, &["check", "--suggest"]);

    let proposal = text(&suggest);
    for line in [
        "[venues.anonymise]",
        "mail = \"hash\"",
        "mobile = \"null\"",
        "[[schema.references]]",
        "table = \"tickets\"",
        "column = \"holder\"",
    ] {
        assert!(
            proposal.lines().any(|l| l.trim_start().starts_with(line)),
            "{line} in {proposal}"
        );
    }
    assert!(!proposal.contains("pat@example.org"), "{proposal}");
    // Pasted as printed, at the end of the file (after the venue), it makes check pass.
    let pasted: String = proposal
        .lines()
        .filter(|l| l.starts_with('[') || l.contains(" = "))
        .map(|l| format!("{l}\n"))
        .collect();
    let original = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, original + &pasted).unwrap();
    let migrate = retentiond(&config, &["migrate"]);
    assert!(migrate.status.success(), "{}\n{pasted}", text(&migrate));
    let check = retentiond(&config, &["check"]);
    assert_eq!(check.status.code(), Some(0), "{}\n{pasted}", text(&check));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_suggest_works_on_a_schema_with_other_names() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("club.db").display());
    let db = retentiond::db::Db::connect(&url).await.unwrap();
    db.execute_script(
        "CREATE TABLE members (member_no INTEGER PRIMARY KEY, club INTEGER NOT NULL, joined TEXT NOT NULL,
           mail TEXT, mobile TEXT, zip TEXT, born TEXT, remarks TEXT);
         CREATE TABLE purchases (id INTEGER PRIMARY KEY, member_no INTEGER NOT NULL REFERENCES members(member_no),
           bought_at TEXT NOT NULL, amount INTEGER NOT NULL);
         CREATE INDEX purchases_member ON purchases (member_no, bought_at);
         INSERT INTO members VALUES (1, 7, '2019-01-01 00:00:00', 'pat@example.org', '07700 900123', 'SW1A 1AA', '1980-05-17', 'likes jazz');
         INSERT INTO purchases VALUES (1, 1, '2020-01-01 00:00:00', 1500);",
    )
    .await
    .unwrap();
    db.close().await;
    let config = dir.path().join("club.toml");
    std::fs::write(
        &config,
        format!(
            r#"[database]
url = "{url}"
[mail]
transport = "file"
dir = "{}"
[secrets]
hash_key = "{}"
[schema]
customers = "members"
customer_id = "member_no"
customer_venue = "club"
customer_created_at = "joined"
orders = "purchases"
order_customer = "member_no"
order_placed_at = "bought_at"
display_name = ["remarks"]
display_email = "mail"
[[schema.references]]
table = "purchases"
column = "member_no"
on_delete = "reassign"
[schema.references.columns]
[[venues]]
id = 7
name = "Jazz Club"
approvers = ["door@jazz.example"]
inactive_for = "3 years"
action = "anonymise"
[venues.anonymise]
"#,
            dir.path().join("outbox").display(),
            crate::common::HASH_KEY
        ),
    )
    .unwrap();
    assert!(retentiond(&config, &["migrate"]).status.success());

    let proposal = text(&retentiond(&config, &["check", "--suggest"]));

    for line in [
        "mail = \"hash\"",
        "mobile = \"null\"",
        "zip = \"prefix:4\"",
        "born = \"year\"",
        "remarks = \"null\"",
        "amount = \"keep\"",
    ] {
        assert!(proposal.contains(line), "{line} in {proposal}");
    }
    assert!(
        !proposal.contains("pat@example.org") && !proposal.contains("jazz"),
        "{proposal}"
    );
    let original = std::fs::read_to_string(&config).unwrap();
    let pasted = paste(
        &original,
        &proposal,
        "[venues.anonymise]",
        0,
        "# add under [venues.anonymise]",
    );
    let pasted = paste(
        &pasted,
        &proposal,
        "[schema.references.columns]",
        0,
        "# add under [schema.references.columns]",
    );
    std::fs::write(&config, pasted).unwrap();
    let check = retentiond(&config, &["check"]);
    assert_eq!(check.status.code(), Some(0), "{}", text(&check));
}

/// `deploy/` as written: the image copies everything `cargo build` reads (the manifest names
/// the benchmark target), the build context leaves out `target/`, the start command hands the
/// process over to retentiond so `docker stop` reaches it, and the health check uses a shell
/// that has `/dev/tcp`. (No Docker engine runs here; these are what broke the build and stop.)
#[test]
fn the_deploy_files_copy_what_the_build_reads_and_stop_gracefully() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dockerfile = std::fs::read_to_string(root.join("deploy/Dockerfile")).unwrap();
    for folder in ["src", "migrations", "templates", "config", "benches"] {
        assert!(
            dockerfile.contains(&format!("COPY {folder} {folder}")),
            "the image copies {folder}/"
        );
    }
    let cmd = dockerfile.lines().find(|l| l.starts_with("CMD")).unwrap();
    assert!(cmd.contains("exec retentiond run"), "{cmd}");
    let health = dockerfile
        .lines()
        .find(|l| l.starts_with("HEALTHCHECK"))
        .unwrap();
    assert!(
        health.contains("/bin/bash") && health.contains("/healthz"),
        "{health}"
    );
    let ignored = std::fs::read_to_string(root.join(".dockerignore")).unwrap();
    assert!(ignored.lines().any(|l| l.trim() == "target"));
    let compose = std::fs::read_to_string(root.join("deploy/compose.yaml")).unwrap();
    assert!(compose.contains("RETENTIOND__JOURNAL__PATH") && compose.contains("retentiond-state:"));
    assert!(
        !compose.contains("change-me"),
        "no placeholder key that passes validation"
    );
    for unit in [
        "deploy/retentiond.service",
        "deploy/retentiond-cycle.service",
    ] {
        let text = std::fs::read_to_string(root.join(unit)).unwrap();
        assert!(
            text.contains("WorkingDirectory=/var/lib/retentiond"),
            "{unit}"
        );
    }
}

/// Times written as "02/12/2022" in a SQLite text column compare wrongly with the cutoff:
/// `check` names the column, and a cycle refuses before any report is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn times_retentiond_cannot_read_are_named_and_stop_the_cycle() {
    let db = crate::common::TestDb::sqlite().await;
    db.migrate().await;
    for i in 1..=5 {
        db.db
            .execute(&retentiond::db::Query::new(&format!(
                "INSERT INTO customers (venue_id, first_name, created_at) VALUES (1, 'P{i}', '02/12/2022')"
            )))
            .await
            .unwrap();
    }
    let config = db.write_config(&crate::common::delete_venue(1, "3 years", ""));

    let check = crate::common::retentiond(&config, &["check"]);
    let cycle = crate::common::retentiond(&config, &["cycle"]);

    let check_text = crate::common::output_text(&check);
    assert_eq!(check.status.code(), Some(1), "{check_text}");
    assert!(
        check_text.contains("schema.customer_created_at: column customers.created_at holds times retentiond cannot read (5 of 5 sampled values)"),
        "{check_text}"
    );
    assert!(
        !check_text.contains("02/12/2022"),
        "values are never printed"
    );
    let cycle_text = crate::common::output_text(&cycle);
    assert_ne!(cycle.status.code(), Some(0), "{cycle_text}");
    assert!(cycle_text.contains("cannot read"), "{cycle_text}");
    assert_eq!(db.count("SELECT COUNT(*) FROM retention_reports").await, 0);
}

/// `check` names an activity table that does not exist and an activity time column of the
/// wrong type, and warns about an activity table without an index on its reference column.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_activity_tables_that_do_not_fit() {
    let db = TestDb::sqlite().await;
    db.migrate().await;
    db.db
        .execute(&Query::new(
            "CREATE TABLE subscriptions (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL, expires_at INTEGER NOT NULL)",
        ))
        .await
        .unwrap();
    let activity = "[[schema.activity]]\ntable = \"box_tickets\"\ncolumn = \"order_id\"\nvia = \"orders\"\nat = \"performance_at\"\n\
                    [[schema.activity]]\ntable = \"subscriptions\"\ncolumn = \"customer_id\"\nat = \"expires_at\"\n\
                    [[schema.holds]]\nname = \"odd\"\ntable = \"customers\"\nwhen = \"email > 5 and nothing_here is null\"\n";
    let config =
        db.write_config_with_file_mail(&(activity.to_string() + &delete_venue(2, "3 years", "")));

    let check = retentiond(&config, &["check"]);

    let out = text(&check);
    assert_eq!(check.status.code(), Some(1), "{out}");
    assert!(
        out.contains("schema.activity[0].column: table box_tickets does not exist"),
        "{out}"
    );
    assert!(
        out.contains("schema.activity[1].at: column subscriptions.expires_at has type integer, expected a date or timestamp"),
        "{out}"
    );
    assert!(
        out.contains(
            "warning: schema.activity[1]: no index on subscriptions(customer_id, expires_at)"
        ),
        "{out}"
    );
}
