//! An operator's day through the binary (SPEC 6, 7): `check` finds what would fail later, the
//! operator rejects a report on the venue's behalf, and `cycle --at` takes a date.

mod common;

use common::{delete_venue, TestDb};
use retentiond::db::Query;
use std::process::Command;

use common::{output_text as text, retentiond};

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
}

#[test]
fn database_errors_name_what_could_not_be_reached_and_env_values_are_blamed_on_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("retentiond.toml");
    std::fs::write(
        &config,
        common::config_toml(
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
