//! Several instances: on PostgreSQL two daemons share a database (advisory locks keep each
//! venue's cycle to one instance; killing the lock holder mid-apply hands the work over); on
//! SQLite a second instance refuses with a clear message.

mod common;

use common::smtp::SmtpSink;
use common::{delete_venue, TestDb};
use retentiond::cycle::{run_venue_cycle, Selection};
use retentiond::db::Query;
use retentiond::policy::ReportState;
use retentiond::reports;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn spawn_daemon(config: &Path, smtp_url: &str, app_name: &str, database_url: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_retentiond"))
        .arg("--config")
        .arg(config)
        .arg("run")
        .env("RUST_LOG", "error")
        .env("RETENTIOND__MAIL__SMTP_URL", smtp_url)
        .env(
            "RETENTIOND__DATABASE__URL",
            format!("{database_url}&application_name={app_name}"),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http_section(port: u16) -> String {
    format!("\n[http]\nbind = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}\"\n[apply]\nbatch_size = 10\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_postgres_instances_apply_once_and_take_over_from_a_killed_one() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    db.migrate().await;
    const N: i64 = 1500;
    let mut q = Query::new("INSERT INTO customers (venue_id, first_name, email, created_at) SELECT 2, 'Bulk', 'bulk' || n || '@example.org', TIMESTAMPTZ '2019-01-01 00:00:00+00' FROM generate_series(1, ");
    q.bind(N).push(") AS s(n)");
    db.db.execute(&q).await.unwrap();
    let smtp = SmtpSink::start().await;
    let venue = delete_venue(2, "3 years", "cron = \"* * * * * *\"");
    let svc = db.service(&venue).await;
    let v = svc.config.venue(2).unwrap().clone();
    let Some(Selection::Created { report_id, .. }) =
        run_venue_cycle(&svc, &v, chrono::Utc::now(), false)
            .await
            .unwrap()
            .selection
    else {
        panic!()
    };
    reports::approve_by_operator(&svc.db, report_id, "tester", chrono::Utc::now())
        .await
        .unwrap();
    let configs = [
        db.write_config(&(venue.clone() + &http_section(free_port()))),
        db.write_config(&(venue.clone() + &http_section(free_port()))),
    ];
    let mut daemons = vec![
        (
            "instance_a",
            spawn_daemon(&configs[0], &smtp.url(), "instance_a", &db.url),
        ),
        (
            "instance_b",
            spawn_daemon(&configs[1], &smtp.url(), "instance_b", &db.url),
        ),
    ];
    let processed = || async {
        db.count(&format!("SELECT COUNT(*) FROM retention_report_items WHERE report_id = {report_id} AND outcome IS NOT NULL")).await
    };

    // Wait until the apply is under way, then kill whichever instance holds the venue's lock.
    let deadline = Instant::now() + Duration::from_secs(30);
    let holder = loop {
        let rows = db
            .db
            .fetch_all(&Query::new("SELECT a.application_name::text FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted"))
            .await
            .unwrap();
        let done = processed().await;
        if done > 0 && done < N {
            if let Some(name) = rows
                .iter()
                .filter_map(|r| r.text(0).ok())
                .find(|n| n.starts_with("instance_"))
            {
                break name;
            }
        }
        assert!(
            Instant::now() < deadline,
            "never caught an instance mid-apply"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let index = daemons
        .iter()
        .position(|(name, _)| *name == holder)
        .unwrap();
    let (_, mut killed) = daemons.remove(index);
    killed.kill().unwrap();
    killed.wait().unwrap();
    let at_kill = processed().await;

    let deadline = Instant::now() + Duration::from_secs(60);
    while reports::get(&db.db, report_id)
        .await
        .unwrap()
        .unwrap()
        .state
        != ReportState::Applied
    {
        assert!(
            Instant::now() < deadline,
            "the surviving instance never finished the report"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !smtp
        .mails()
        .iter()
        .any(|m| m.subject().starts_with("Done:"))
    {
        assert!(Instant::now() < deadline, "no confirmation");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await; // let a duplicate show itself, if there were one
    for (_, mut daemon) in daemons {
        Command::new("kill")
            .args(["-TERM", &daemon.id().to_string()])
            .status()
            .unwrap();
        daemon.wait().unwrap();
    }

    eprintln!("killed {holder} with {at_kill} of {N} customers processed");
    assert!(at_kill < N);
    assert_eq!(processed().await, N);
    assert_eq!(db.count(&format!("SELECT COUNT(*) FROM retention_report_items WHERE report_id = {report_id} AND outcome = 'deleted'")).await, N);
    assert_eq!(
        db.count("SELECT COUNT(*) FROM customers WHERE first_name = 'Bulk'")
            .await,
        0
    );
    assert_eq!(db.count(&format!("SELECT COUNT(*) FROM retention_audit WHERE report_id = {report_id} AND event = 'applied'")).await, 1);
    let confirmations = smtp
        .mails()
        .iter()
        .filter(|m| m.subject().starts_with("Done:"))
        .count();
    assert_eq!(confirmations, 1, "exactly one confirmation");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sqlite_instance_refuses_with_a_clear_message() {
    let db = TestDb::sqlite().await;
    db.migrate().await;
    let port = free_port();
    let config = db.write_config(&(delete_venue(2, "3 years", "") + &http_section(port)));
    let mut first = Command::new(env!("CARGO_BIN_EXE_retentiond"))
        .arg("--config")
        .arg(&config)
        .arg("run")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
        .await
        .map(|r| r.status() != 200)
        .unwrap_or(true)
    {
        assert!(Instant::now() < deadline, "first instance never came up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let second = Command::new(env!("CARGO_BIN_EXE_retentiond"))
        .arg("--config")
        .arg(&config)
        .arg("cycle")
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    Command::new("kill")
        .args(["-TERM", &first.id().to_string()])
        .status()
        .unwrap();
    first.wait().unwrap();
    let after = Command::new(env!("CARGO_BIN_EXE_retentiond"))
        .arg("--config")
        .arg(&config)
        .arg("cycle")
        .env("RUST_LOG", "error")
        .output()
        .unwrap();

    assert_eq!(second.status.code(), Some(1));
    let message = String::from_utf8_lossy(&second.stderr);
    assert!(
        message.contains("another retentiond instance is running"),
        "{message}"
    );
    assert_eq!(message.trim().lines().count(), 1);
    assert!(
        after.status.success(),
        "once the first stops, a cycle runs: {}",
        String::from_utf8_lossy(&after.stderr)
    );
}
