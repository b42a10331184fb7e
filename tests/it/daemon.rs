//! `retentiond run`: schedules fire cycles that apply approved reports and send mail; the web
//! pages, `/healthz` and `/metrics` answer; SIGTERM stops it cleanly with exit code 0.

use crate::common::smtp::SmtpSink;
use crate::common::{delete_venue, TestDb};
use chrono::{SubsecRound, Utc};
use retentiond::app::App;
use retentiond::cycle::{run_venue_cycle, Selection};
use retentiond::policy::ReportState;
use retentiond::{reports, Service};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

async fn daemon_applies_approved_reports_on_schedule_and_stops_on_request(db: TestDb) {
    db.migrate().await;
    let smtp = SmtpSink::start().await;
    let c = db.customer(2, "2019-01-01 00:00:00").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let venue = delete_venue(2, "3 years", "cron = \"* * * * * *\"");
    let config = db.config_with_env(
        &venue,
        &[
            ("RETENTIOND__MAIL__SMTP_URL", smtp.url()),
            ("RETENTIOND__HTTP__PUBLIC_URL", base.clone()),
        ],
    );
    let svc = Service::new(db.db.clone(), config);
    let v = svc.config.venue(2).unwrap().clone();
    let Some(Selection::Created { report_id, .. }) =
        run_venue_cycle(&svc, &v, Utc::now().trunc_subsecs(0), false)
            .await
            .unwrap()
            .selection
    else {
        panic!()
    };
    crate::common::operator_approves(&svc.db, report_id, Utc::now()).await;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(App::with_service(svc.clone(), listener).run(async {
        let _ = stop_rx.await;
    }));

    let deadline = Instant::now() + Duration::from_secs(20);
    while !smtp
        .mails()
        .iter()
        .any(|m| m.subject().starts_with("Done:"))
    {
        assert!(
            Instant::now() < deadline,
            "the scheduled cycle never applied the report and confirmed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let health = reqwest::get(format!("{base}/healthz")).await.unwrap();
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    stop_tx.send(()).unwrap();
    let stopped = tokio::time::timeout(Duration::from_secs(30), running).await;

    assert_eq!(health.status(), 200);
    assert!(metrics.contains("retentiond_cycles_total"), "{metrics}");
    assert!(
        metrics.contains("retentiond_reports{state=\"applied\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("retentiond_customers_total{outcome=\"deleted\"}"),
        "{metrics}"
    );
    assert!(stopped.expect("stopped in time").unwrap().is_ok());
    assert_eq!(
        reports::get(&db.db, report_id)
            .await
            .unwrap()
            .unwrap()
            .state,
        ReportState::Applied
    );
    assert!(db.customer_row(c).await.is_none());
}

on_both_backends!(daemon_applies_approved_reports_on_schedule_and_stops_on_request);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_daemon_with_exit_code_0() {
    let db = TestDb::sqlite().await;
    db.migrate().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let venues = delete_venue(2, "3 years", "")
        + &format!(
            "\n[http]\nbind = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}\"\n"
        );
    let config = db.write_config(&venues);
    let mut child = Command::new(env!("CARGO_BIN_EXE_retentiond"))
        .arg("--config")
        .arg(&config)
        .arg("run")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = reqwest::get(format!("http://127.0.0.1:{port}/healthz")).await {
            if r.status() == 200 {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the daemon never answered /healthz"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let status = crate::common::sigterm_and_wait(&mut child, Duration::from_secs(30)).await;

    assert_eq!(status.code(), Some(0));
}

/// Runs the whole loop through the real binary with debug logs in `format`, and checks that no
/// customer's personal data and no token appears anywhere in the log output.
async fn logs_hold_no_personal_data_or_tokens(format: &str) {
    let db = TestDb::sqlite().await;
    db.migrate().await;
    let mut fixtures = Vec::new();
    for n in 1..=3 {
        let c = db.customer_with(2, "2019-01-01 00:00:00", n, false).await;
        db.order(c, "2020-01-01 00:00:00").await;
        db.note(c).await;
        fixtures.extend([
            format!("Ann{n}"),
            format!("Smith{n}"),
            format!("ann{n}@example.org"),
            format!("07700 900{n:03}"),
            format!("{n} High Street"),
        ]);
    }
    fixtures.extend([
        "Flat 2".to_string(),
        "SW1A 1AA".to_string(),
        "prefers aisle seats".to_string(),
    ]);
    let smtp = SmtpSink::start().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let venues = delete_venue(2, "3 years", "cron = \"* * * * * *\"")
        + &format!("\n[http]\nbind = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}\"\n[log]\nformat = \"{format}\"\n");
    let config = db.write_config(&venues);
    let log_path = db.dir.path().join(format!("log-{format}.txt"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_retentiond"))
        .arg("--config")
        .arg(&config)
        .arg("run")
        .env("RUST_LOG", "debug")
        .env("RETENTIOND__MAIL__SMTP_URL", smtp.url())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let wait_for = |subject: &'static str| {
        let smtp = &smtp;
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Some(mail) = smtp
                    .mails()
                    .into_iter()
                    .find(|m| m.subject().starts_with(subject))
                {
                    return mail;
                }
                assert!(Instant::now() < deadline, "no {subject} mail");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let link = wait_for("Approval needed").await.link().unwrap();
    let token = link.rsplit('/').next().unwrap().to_string();
    let http = reqwest::Client::new();
    assert_eq!(http.get(&link).send().await.unwrap().status(), 200);
    assert_eq!(
        http.get(format!("{link}/report.csv"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        http.post(format!("{link}/approve"))
            .form(&[("confirm", "99")])
            .send()
            .await
            .unwrap()
            .status(),
        422
    );
    assert_eq!(
        http.post(format!("{link}/approve"))
            .form(&[("confirm", "3")])
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    wait_for("Done:").await;
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));

    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.lines().count() > 20, "debug logging produced output");
    if format == "json" {
        for line in log.lines() {
            assert!(
                serde_json::from_str::<serde_json::Value>(line).is_ok(),
                "not a JSON line: {line}"
            );
        }
    }
    assert!(!log.contains(&token), "a token appears in the log");
    assert!(
        !log.contains(&token[..16]),
        "part of a token appears in the log"
    );
    for personal in &fixtures {
        assert!(
            !log.contains(personal.as_str()),
            "{personal:?} appears in the {format} log"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_logs_hold_no_personal_data_or_tokens() {
    logs_hold_no_personal_data_or_tokens("text").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_hold_no_personal_data_or_tokens() {
    logs_hold_no_personal_data_or_tokens("json").await;
}
