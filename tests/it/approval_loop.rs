//! The approval loop end to end (SPEC 4, 7): a real SMTP listener captures the mail, links are
//! pulled out of it and followed against the web app on port 0; on both backends.

use crate::common::smtp::{Mail, SmtpSink};
use crate::common::{delete_venue, TestApp, TestDb};
use chrono::{DateTime, Duration, SubsecRound, Utc};
use retentiond::cycle::{run_venue_cycle, Selection, VenueCycle};
use retentiond::db::Query;
use retentiond::mail::{self, Mailer};
use retentiond::policy::ReportState;
use retentiond::{reports, Service};
use std::net::SocketAddr;

struct App {
    svc: Service,
    base: String,
    http: reqwest::Client,
    smtp_addr: SocketAddr,
}

const APPROVERS_2: &str = r#"approvers = ["boxoffice@venue2.example", "dpo@venue2.example"]"#;

impl App {
    /// The web app on port 0 against `db`, mail to `smtp_addr`, with `required` approvers.
    async fn start(db: &TestDb, smtp_addr: SocketAddr, required: u32) -> App {
        let venue = delete_venue(2, "3 years", "")
            .replace(r#"approvers = ["boxoffice@venue2.example"]"#, APPROVERS_2);
        let env = [
            ("RETENTIOND__MAIL__SMTP_URL", format!("smtp://{smtp_addr}")),
            ("RETENTIOND__APPROVAL__REQUIRED", required.to_string()),
        ];
        let TestApp { svc, base } = TestApp::spawn(db, &venue, &env).await;
        App {
            svc,
            base,
            http: reqwest::Client::new(),
            smtp_addr,
        }
    }

    async fn cycle(&self, at: DateTime<Utc>) -> VenueCycle {
        let venue = self.svc.config.venue(2).unwrap().clone();
        run_venue_cycle(&self.svc, &venue, at, false).await.unwrap()
    }

    async fn deliver(&self, at: DateTime<Utc>) -> mail::Delivery {
        let mailer = Mailer::from_config(&self.svc.config.mail).unwrap();
        mail::deliver_due(&self.svc, &mailer, at).await.unwrap()
    }

    async fn state(&self, id: i64) -> ReportState {
        reports::get(&self.svc.db, id).await.unwrap().unwrap().state
    }

    async fn get(&self, url: &str) -> (u16, String) {
        let r = self.http.get(url).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn post(&self, url: &str, form: &[(&str, &str)]) -> (u16, String) {
        let r = self.http.post(url).form(form).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }
}

fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(0)
}

/// Three idle customers and one active one at venue 2.
/// How most tests here start: a migrated database, an SMTP sink, the app on both, then the
/// customers of [`customers`]; the idle customers' ids.
async fn started(db: &TestDb) -> (SmtpSink, App, Vec<i64>) {
    db.migrate().await;
    let smtp = SmtpSink::start().await;
    let app = App::start(db, smtp.addr, 1).await;
    let idle = customers(db).await;
    (smtp, app, idle)
}

async fn customers(db: &TestDb) -> Vec<i64> {
    let mut idle = Vec::new();
    for _ in 0..3 {
        let c = db.customer(2, "2019-01-01 00:00:00").await;
        db.order(c, "2020-05-05 10:00:00").await;
        idle.push(c);
    }
    let active = db.customer(2, "2019-01-01 00:00:00").await;
    db.order(
        active,
        &(Utc::now() - Duration::days(3))
            .format("%Y-%m-%d %H:%M:%S")
            .to_string(),
    )
    .await;
    idle
}

fn requests_to(mails: &[Mail]) -> Vec<(String, String)> {
    mails
        .iter()
        .filter(|m| m.subject().starts_with("Approval needed"))
        .map(|m| (m.to[0].clone(), m.link().expect("a link")))
        .collect()
}

async fn report_mail_links_show_exactly_the_report(db: TestDb) {
    let (smtp, app, idle) = started(&db).await;

    let Some(Selection::Created {
        report_id,
        customers: 3,
    }) = app.cycle(now()).await.selection
    else {
        panic!("expected a report of 3")
    };
    // A later order, still before the cutoff: the report keeps the last order it was made with.
    db.order(idle[0], "2021-01-01 00:00:00").await;
    let delivery = app.deliver(now()).await;

    assert_eq!(delivery.sent, 2);
    let requests = requests_to(&smtp.mails());
    assert_eq!(requests.len(), 2, "one email per approver");
    assert_ne!(
        requests[0].1, requests[1].1,
        "each approver has a link of their own"
    );
    for mail in smtp.mails() {
        for n in 1..=4 {
            assert!(
                !mail.text().contains(&format!("ann{n}@example.org")),
                "no customer data in mail"
            );
            assert!(
                !mail.text().contains(&format!("Smith{n}")),
                "no customer data in mail"
            );
        }
    }
    let link = &requests[0].1;
    assert!(link.starts_with(&format!("{}/r/", app.base)));
    let (status, page) = app.get(link).await;
    assert_eq!(status, 200);
    for n in 1..=3 {
        assert!(
            page.contains(&format!("ann{n}@example.org")),
            "page lists customer {n}"
        );
    }
    assert!(
        !page.contains("ann4@example.org"),
        "the active customer is not on the page"
    );
    let (status, csv) = app.get(&format!("{link}/report.csv")).await;
    assert_eq!(status, 200);
    let ids: Vec<i64> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(ids, idle);
    assert_eq!(
        csv.lines().next(),
        Some("customer_id,name,email,last_activity,kept")
    );
    assert!(
        csv.lines()
            .skip(1)
            .all(|l| l.ends_with(",2020-05-05 11:00:00+01:00,no")),
        "each row shows the customer's last order, frozen with the report, in the venue's zone: {csv}"
    );
    assert!(
        page.contains("5 May 2020, 11:00 BST"),
        "the page shows it too, in the venue's zone"
    );

    // A report frozen before items kept their last order (migration 5) looks it up instead.
    let mut forget =
        Query::new("UPDATE retention_report_items SET last_order_at = NULL WHERE report_id = ");
    forget.bind(report_id);
    db.db.execute(&forget).await.unwrap();
    let (_, csv) = app.get(&format!("{link}/report.csv")).await;
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert!(
        rows[0].starts_with(&format!("{},", idle[0]))
            && rows[0].ends_with(",2021-01-01 00:00:00+00:00,no"),
        "{csv}"
    );
    assert!(
        rows[1..]
            .iter()
            .all(|l| l.ends_with(",2020-05-05 11:00:00+01:00,no")),
        "{csv}"
    );
}

async fn pages_send_protective_headers_and_get_changes_nothing(db: TestDb) {
    let (smtp, app, _) = started(&db).await;
    let Some(Selection::Created { report_id, .. }) = app.cycle(now()).await.selection else {
        panic!()
    };
    app.deliver(now()).await;
    let link = requests_to(&smtp.mails())[0].1.clone();

    for url in [
        link.clone(),
        format!("{link}/report.csv"),
        format!("{link}/approve"),
        format!("{link}/reject"),
    ] {
        let r = app.http.get(&url).send().await.unwrap();
        let h = r.headers();
        assert_eq!(h["cache-control"], "no-store");
        assert_eq!(h["referrer-policy"], "no-referrer");
        assert!(h["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'"));
    }

    assert_eq!(app.state(report_id).await, ReportState::Pending);
    let (status, page) = app
        .post(&format!("{link}/approve"), &[("confirm", "2")])
        .await;
    assert_eq!(status, 422);
    assert!(page.contains("type the number of customers (3)"), "{page}");
    assert_eq!(app.state(report_id).await, ReportState::Pending);
}

async fn approve_then_next_cycle_applies_and_confirms(db: TestDb) {
    let (smtp, app, idle) = started(&db).await;
    let t0 = now();
    let Some(Selection::Created { report_id, .. }) = app.cycle(t0).await.selection else {
        panic!()
    };
    app.deliver(t0).await;
    let link = requests_to(&smtp.mails())[0].1.clone();
    db.order(
        idle[2],
        &(Utc::now()).format("%Y-%m-%d %H:%M:%S").to_string(),
    )
    .await; // active again

    let (status, page) = app
        .post(&format!("{link}/approve"), &[("confirm", "3")])
        .await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("the report is approved"));
    assert_eq!(app.state(report_id).await, ReportState::Approved);
    let result = app.cycle(t0 + Duration::days(1)).await;
    app.deliver(t0 + Duration::days(1)).await;

    assert_eq!(result.applied.len(), 1);
    assert_eq!(app.state(report_id).await, ReportState::Applied);
    assert!(db.customer_row(idle[0]).await.is_none());
    assert!(db.customer_row(idle[2]).await.is_some());
    let done: Vec<Mail> = smtp
        .mails()
        .into_iter()
        .filter(|m| m.subject().starts_with("Done:"))
        .collect();
    assert_eq!(done.len(), 2, "one confirmation per approver");
    assert!(
        done[0].subject().contains("2 customers deleted"),
        "{}",
        done[0].subject()
    );
    assert!(done[0].text().contains("1 customers skipped"));
    assert!(done[0]
        .text()
        .contains("1 active again since the report was made"));
    let (status, _) = app.get(&format!("{link}/report.csv")).await;
    assert_eq!(status, 410, "no CSV once applied");
    let (_, page) = app.get(&link).await;
    assert!(page.contains("This report is applied") && !page.contains("<form"));
}

async fn rejection_rejects_and_nothing_is_applied(db: TestDb) {
    db.migrate().await;
    let smtp = SmtpSink::start().await;
    let app = App::start(&db, smtp.addr, 2).await;
    let idle = customers(&db).await;
    let t0 = now();
    let Some(Selection::Created { report_id, .. }) = app.cycle(t0).await.selection else {
        panic!()
    };
    app.deliver(t0).await;
    let requests = requests_to(&smtp.mails());

    let (status, _) = app
        .post(
            &format!("{}/reject", requests[1].1),
            &[("reason", "we still need these")],
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = app
        .post(&format!("{}/approve", requests[0].1), &[("confirm", "3")])
        .await;
    assert_eq!(status, 409, "a rejected report cannot be approved");
    app.cycle(t0 + Duration::days(1)).await;

    assert_eq!(app.state(report_id).await, ReportState::Rejected);
    assert!(db.customer_row(idle[0]).await.is_some());
    let (_, page) = app.get(&requests[0].1).await;
    assert!(page.contains("This report is rejected") && !page.contains("<form"));
}

async fn two_required_approvers_must_both_approve(db: TestDb) {
    db.migrate().await;
    let smtp = SmtpSink::start().await;
    let app = App::start(&db, smtp.addr, 2).await;
    customers(&db).await;
    let Some(Selection::Created { report_id, .. }) = app.cycle(now()).await.selection else {
        panic!()
    };
    app.deliver(now()).await;
    let requests = requests_to(&smtp.mails());

    let (_, first) = app
        .post(&format!("{}/approve", requests[0].1), &[("confirm", "3")])
        .await;
    assert!(first.contains("1 of 2"), "{first}");
    assert_eq!(app.state(report_id).await, ReportState::Pending);
    let (_, again) = app
        .post(&format!("{}/approve", requests[0].1), &[("confirm", "3")])
        .await;
    assert!(again.contains("already approved"));
    assert_eq!(
        app.state(report_id).await,
        ReportState::Pending,
        "the same approver twice is one approval"
    );
    app.post(&format!("{}/approve", requests[1].1), &[("confirm", "3")])
        .await;

    assert_eq!(app.state(report_id).await, ReportState::Approved);
}

async fn reminder_then_expiry_by_moving_the_cycle_clock(db: TestDb) {
    let (smtp, app, _) = started(&db).await;
    let t0 = now() - Duration::days(15);
    let Some(Selection::Created { report_id, .. }) = app.cycle(t0).await.selection else {
        panic!()
    };
    app.deliver(t0).await;
    let link = requests_to(&smtp.mails())[0].1.clone();

    let day8 = app.cycle(t0 + Duration::days(8)).await;
    app.cycle(t0 + Duration::days(9)).await;
    app.deliver(t0 + Duration::days(9)).await;
    let reminders = smtp
        .mails()
        .iter()
        .filter(|m| m.subject().starts_with("Reminder"))
        .count();
    let day15 = app.cycle(t0 + Duration::days(15)).await;
    app.deliver(t0 + Duration::days(15)).await;

    assert_eq!(day8.reminded, vec![report_id]);
    assert_eq!(reminders, 2, "one reminder per approver, once");
    assert_eq!(day15.expired, vec![report_id]);
    assert_eq!(app.state(report_id).await, ReportState::Expired);
    assert_eq!(
        smtp.mails()
            .iter()
            .filter(|m| m.subject().starts_with("Expired"))
            .count(),
        2
    );
    let (status, page) = app.get(&link).await;
    assert_eq!(status, 410);
    assert!(
        !page.contains("ann1"),
        "an expired link shows nothing of the report"
    );
}

async fn unknown_malformed_and_wrong_case_tokens_get_404(db: TestDb) {
    let (smtp, app, _) = started(&db).await;
    app.cycle(now()).await;
    app.deliver(now()).await;
    let link = requests_to(&smtp.mails())[0].1.clone();
    let token = link.rsplit('/').next().unwrap().to_string();

    for bad in [
        "abc".to_string(),
        "0".repeat(64),
        token.to_uppercase(),
        format!("{token}0"),
        token[..63].to_string(),
    ] {
        let (status, page) = app.get(&format!("{}/r/{bad}", app.base)).await;
        assert_eq!(status, 404, "{bad}");
        assert!(!page.contains("Venue"), "no hint of which reports exist");
        let (status, _) = app
            .post(
                &format!("{}/r/{bad}/approve", app.base),
                &[("confirm", "3")],
            )
            .await;
        assert_eq!(status, 404);
    }
    let (status, _) = app.get(&format!("{}/nothing-here", app.base)).await;
    assert_eq!(status, 404);
}

async fn smtp_outage_delays_mail_and_every_message_arrives_once(db: TestDb) {
    db.migrate().await;
    let down = SmtpSink::unused_addr().await;
    let app = App::start(&db, down, 1).await;
    customers(&db).await;
    let t0 = now();
    app.cycle(t0).await;

    let failed = app.deliver(t0).await;
    assert_eq!((failed.sent, failed.failed), (0, 2));
    assert_eq!(mail::pending_count(&app.svc).await.unwrap(), 2);
    // Each failed attempt is counted (its claim was committed with its token), and the
    // tokens of the messages that did not go are revoked.
    let attempts = "SELECT COUNT(*) FROM retention_outbox WHERE attempts = ";
    assert_eq!(db.count(&format!("{attempts}1")).await, 2);
    assert_eq!(db.count("SELECT COUNT(*) FROM retention_tokens").await, 0);
    let too_soon = app.deliver(t0 + Duration::seconds(5)).await;
    assert_eq!(
        too_soon.failed + too_soon.sent,
        0,
        "back-off: not retried at once"
    );
    let smtp = SmtpSink::start_at(app.smtp_addr).await;
    let delivered = app.deliver(t0 + Duration::minutes(5)).await;
    let again = app.deliver(t0 + Duration::hours(2)).await;

    assert_eq!(delivered.sent, 2);
    assert_eq!(again.sent, 0);
    assert_eq!(db.count(&format!("{attempts}2")).await, 2);
    assert_eq!(db.count("SELECT COUNT(*) FROM retention_tokens").await, 2);
    let mails = smtp.mails();
    assert_eq!(mails.len(), 2, "every message exactly once");
    let (status, _) = app.get(&mails[0].link().unwrap()).await;
    assert_eq!(status, 200, "the link minted at the successful send works");
    assert_eq!(mail::pending_count(&app.svc).await.unwrap(), 0);
}

/// Two senders over one outbox at once (two instances, or `cycle` beside the daemon): each
/// approval request goes once, with one working link, and the other sender counts it neither
/// sent nor failed.
async fn racing_senders_send_each_approval_request_once(db: TestDb) {
    let (smtp, app, _) = started(&db).await;
    let t0 = now();
    app.cycle(t0).await;

    let (a, b) = tokio::join!(app.deliver(t0), app.deliver(t0));
    assert_eq!(a.sent + b.sent, 2, "{a:?} {b:?}");
    assert_eq!(a.failed + b.failed, 0, "{a:?} {b:?}");
    let requests = requests_to(&smtp.mails());
    assert_eq!(requests.len(), 2, "each approver's request once");
    assert_eq!(db.count("SELECT COUNT(*) FROM retention_tokens").await, 2);
    for (_, link) in &requests {
        let (status, _) = app.get(link).await;
        assert_eq!(status, 200);
    }
    assert_eq!(mail::pending_count(&app.svc).await.unwrap(), 0);
}

/// A queued approval request that no message can be built for (its recipient is no address):
/// a failed attempt, counted and retried after the back-off, whose minted token is revoked;
/// the report's other requests go.
async fn an_approval_request_that_cannot_be_built_leaves_no_link_and_is_retried(db: TestDb) {
    let (smtp, app, _) = started(&db).await;
    let t0 = now();
    let Some(Selection::Created { report_id, .. }) = app.cycle(t0).await.selection else {
        panic!("expected a report")
    };
    let mut tx = app.svc.db.begin().await.unwrap();
    mail::queue(
        &mut tx,
        &mail::Outgoing {
            kind: mail::Kind::ApprovalRequest,
            venue_id: 2,
            report_id: Some(report_id),
            recipient: "not an address",
            detail: None,
        },
        t0,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    let delivered = app.deliver(t0).await;
    assert_eq!((delivered.sent, delivered.failed), (2, 1));
    assert_eq!(requests_to(&smtp.mails()).len(), 2);
    assert_eq!(
        db.count("SELECT COUNT(*) FROM retention_tokens").await,
        2,
        "the unbuilt message's token is revoked"
    );
    assert_eq!(
        db.count(
            "SELECT COUNT(*) FROM retention_outbox WHERE sent_at IS NULL AND attempts = 1 \
             AND last_error LIKE '%invalid recipient%'"
        )
        .await,
        1
    );
    let too_soon = app.deliver(t0 + Duration::seconds(5)).await;
    assert_eq!((too_soon.sent, too_soon.failed), (0, 0), "back-off");
    let later = app.deliver(t0 + Duration::minutes(5)).await;
    assert_eq!((later.sent, later.failed), (0, 1));
    assert_eq!(
        db.count("SELECT COUNT(*) FROM retention_outbox WHERE sent_at IS NULL AND attempts = 2")
            .await,
        1
    );
    assert_eq!(db.count("SELECT COUNT(*) FROM retention_tokens").await, 2);
}

async fn report_table_pages_through_every_customer(db: TestDb) {
    db.migrate().await;
    let smtp = SmtpSink::start().await;
    let app = App::start(&db, smtp.addr, 1).await;
    for _ in 0..120 {
        db.customer(2, "2019-01-01 00:00:00").await;
    }
    app.cycle(now()).await;
    app.deliver(now()).await;
    let link = requests_to(&smtp.mails())[0].1.clone();

    let mut url = link.clone();
    let mut seen = Vec::new();
    let mut captions = Vec::new();
    loop {
        let (status, page) = app.get(&url).await;
        assert_eq!(status, 200);
        let caption = page
            .split("<caption")
            .nth(1)
            .and_then(|t| t.split('>').nth(1))
            .and_then(|t| t.split('<').next());
        captions.push(
            caption
                .unwrap_or_default()
                .trim_start_matches("Customers ")
                .to_string(),
        );
        seen.extend(
            page.matches("@example.org</td>")
                .count()
                .to_string()
                .parse::<usize>(),
        );
        match page.split("href=\"").find(|h| h.contains("?after=")) {
            Some(href) => {
                url = format!(
                    "{}{}",
                    app.base,
                    href.split('"').next().unwrap().replace("&amp;", "&")
                )
            }
            None => break,
        }
    }

    assert_eq!(seen, vec![50, 50, 20]);
    assert_eq!(
        captions,
        vec!["1 to 50 of 120", "51 to 100 of 120", "101 to 120 of 120"]
    );
}

async fn approval_requested(
    db: &TestDb,
    required: u32,
) -> (App, SmtpSink, i64, Vec<(String, String)>) {
    db.migrate().await;
    let smtp = SmtpSink::start().await;
    let app = App::start(db, smtp.addr, required).await;
    customers(db).await;
    let Some(Selection::Created { report_id, .. }) = app.cycle(now()).await.selection else {
        panic!("expected a report")
    };
    app.deliver(now()).await;
    let requests = requests_to(&smtp.mails());
    (app, smtp, report_id, requests)
}

async fn decisions(db: &TestDb, report_id: i64) -> i64 {
    db.count(&format!(
        "SELECT COUNT(*) FROM retention_decisions WHERE report_id = {report_id}"
    ))
    .await
}

async fn raced_approvals_record_exactly_one_decision(db: TestDb) {
    let (app, _smtp, report_id, requests) = approval_requested(&db, 1).await;
    let (a, b) = (
        format!("{}/approve", requests[0].1),
        format!("{}/approve", requests[1].1),
    );

    let (ra, rb) = tokio::join!(
        app.post(&a, &[("confirm", "3")]),
        app.post(&b, &[("confirm", "3")])
    );
    let replay = app.post(&a, &[("confirm", "3")]).await;

    let mut statuses = [ra.0, rb.0];
    statuses.sort();
    assert_eq!(
        statuses,
        [200, 409],
        "one approval wins, the other finds it decided"
    );
    assert_eq!(replay.0, 409, "a replayed approval changes nothing");
    assert_eq!(decisions(&db, report_id).await, 1);
    assert_eq!(app.state(report_id).await, ReportState::Approved);
}

async fn raced_approve_and_reject_record_exactly_one_decision(db: TestDb) {
    let (app, _smtp, report_id, requests) = approval_requested(&db, 1).await;

    let (approve_url, reject_url) = (
        format!("{}/approve", requests[0].1),
        format!("{}/reject", requests[1].1),
    );
    let (approve, reject) = tokio::join!(
        app.post(&approve_url, &[("confirm", "3")]),
        app.post(&reject_url, &[("reason", "no")])
    );

    assert_eq!(decisions(&db, report_id).await, 1);
    let state = app.state(report_id).await;
    match state {
        ReportState::Approved => assert_eq!((approve.0, reject.0), (200, 409)),
        ReportState::Rejected => assert_eq!((approve.0, reject.0), (409, 200)),
        other => panic!("unexpected state {other}"),
    }
}

async fn hostile_requests_change_nothing_and_floods_get_429(db: TestDb) {
    let (app, _smtp, report_id, requests) = approval_requested(&db, 1).await;
    let link = &requests[0].1;

    // Its own client: the server closes a connection whose body it refused.
    let oversized = reqwest::Client::new()
        .post(format!("{link}/approve"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("confirm=3&pad={}", "x".repeat(100_000)))
        .send()
        .await
        .unwrap();
    assert_eq!(oversized.status(), 413, "request bodies are limited");
    for method in [
        reqwest::Method::PUT,
        reqwest::Method::DELETE,
        reqwest::Method::PATCH,
    ] {
        let r = app
            .http
            .request(method, link.as_str())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405);
    }
    let (status, _) = app.get(&format!("{}/r/../../etc/passwd", app.base)).await;
    assert_eq!(status, 404);
    let (status, _) = app
        .post(
            &format!("{link}/approve"),
            &[("confirm", "3; DROP TABLE customers")],
        )
        .await;
    assert_eq!(status, 422);
    let (status, _) = app.get(&format!("{link}/approve?confirm=3")).await;
    assert_eq!(status, 405, "GET never approves");
    let mut limited = 0;
    for i in 0..150 {
        let (status, _) = app.get(&format!("{}/r/{:064x}", app.base, i)).await;
        if status == 429 {
            limited += 1;
        }
    }
    let health = app
        .http
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap()
        .status();

    assert!(limited >= 50, "a flood is answered 429 ({limited} of 150)");
    assert_eq!(health, 200, "the service stays up");
    assert_eq!(app.state(report_id).await, ReportState::Pending);
    assert_eq!(decisions(&db, report_id).await, 0);
    assert_eq!(db.count("SELECT COUNT(*) FROM customers").await, 4);
}

on_both_backends!(
    report_mail_links_show_exactly_the_report,
    pages_send_protective_headers_and_get_changes_nothing,
    approve_then_next_cycle_applies_and_confirms,
    rejection_rejects_and_nothing_is_applied,
    two_required_approvers_must_both_approve,
    reminder_then_expiry_by_moving_the_cycle_clock,
    unknown_malformed_and_wrong_case_tokens_get_404,
    smtp_outage_delays_mail_and_every_message_arrives_once,
    racing_senders_send_each_approval_request_once,
    an_approval_request_that_cannot_be_built_leaves_no_link_and_is_retried,
    raced_approvals_record_exactly_one_decision,
    raced_approve_and_reject_record_exactly_one_decision,
    hostile_requests_change_nothing_and_floods_get_429,
    report_table_pages_through_every_customer,
);

/// A send stopped at its deadline (a server that trickles its answer) does not leave its
/// connection to the next message: that connection would read the stopped message's answer as
/// the next command's. The next message goes over a new connection and arrives; the stopped
/// one is retried later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_stopped_at_its_deadline_leaves_its_connection_behind() {
    let db = TestDb::sqlite().await;
    db.migrate().await;
    let smtp = SmtpSink::start_trickling_first().await;
    let app = App::start(&db, smtp.addr, 1).await;
    customers(&db).await;
    let t0 = now();
    app.cycle(t0).await;
    let mailer = Mailer::from_config(&app.svc.config.mail)
        .unwrap()
        .with_send_timeout(std::time::Duration::from_secs(1));

    let first = mail::deliver_due(&app.svc, &mailer, t0).await.unwrap();

    assert_eq!(
        (first.sent, first.failed),
        (1, 1),
        "the trickled send is given up, the other sent"
    );
    assert_eq!(
        smtp.connections(),
        2,
        "the second message opened a connection of its own"
    );
    let later = mail::deliver_due(&app.svc, &mailer, t0 + Duration::minutes(5))
        .await
        .unwrap();
    assert_eq!(
        (later.sent, later.failed),
        (1, 0),
        "the given-up one is retried"
    );
    let approvers: std::collections::BTreeSet<String> = requests_to(&smtp.mails())
        .into_iter()
        .map(|(to, _)| to)
        .collect();
    assert_eq!(approvers.len(), 2, "both approvers have their request");
    assert_eq!(mail::pending_count(&app.svc).await.unwrap(), 0);
}
