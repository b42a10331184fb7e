//! The report page in a real browser: headless Chromium (Debian's chromium and chromium-driver,
//! which .ci/run installs) opens an emailed link, reads the table, types the count, approves and
//! sees the approved state. A screenshot is written to target/test-artifacts/report-page.png.

use crate::common::smtp::SmtpSink;
use crate::common::{delete_venue, TestApp, TestDb};
use base64::Engine;
use chrono::{SubsecRound, Utc};
use retentiond::cycle::{run_venue_cycle, Selection};
use retentiond::mail::{self, Mailer};
use retentiond::policy::ReportState;
use retentiond::reports;
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Driver {
    base: String,
    session: String,
    http: reqwest::Client,
    process: Child,
}

impl Driver {
    async fn start() -> Option<Driver> {
        if !std::path::Path::new("/usr/bin/chromedriver").exists() {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must have chromium-driver installed (.ci/run installs it)"
            );
            eprintln!("chromedriver not installed: browser test not run");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let process = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while http.get(format!("{base}/status")).send().await.is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().unwrap().keep();
        let capabilities = json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--window-size=1200,1400", format!("--user-data-dir={}", profile.display())]
        }}}});
        let mut driver = Driver {
            base,
            session: String::new(),
            http,
            process,
        };
        let created = driver.call("POST", "/session", Some(capabilities)).await;
        driver.session = created["sessionId"]
            .as_str()
            .expect("a session")
            .to_string();
        Some(driver)
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let value = self.send(method, path, body).await;
        assert!(
            value["value"].get("error").is_none(),
            "webdriver {path}: {value}"
        );
        value["value"].clone()
    }

    /// One WebDriver command; its whole answer, an error included.
    async fn send(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = if path == "/session" {
            format!("{}/session", self.base)
        } else {
            format!("{}/session/{}{path}", self.base, self.session)
        };
        let request = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self
                .http
                .post(url)
                .header("content-type", "application/json")
                .body(body.unwrap_or(json!({})).to_string()),
        };
        let text = request.send().await.unwrap().text().await.unwrap();
        serde_json::from_str(&text).unwrap()
    }

    async fn find_all(&self, css: &str) -> Vec<String> {
        let found = self
            .call(
                "POST",
                "/elements",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        found
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                e.as_object()
                    .unwrap()
                    .values()
                    .next()
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    }

    async fn find(&self, css: &str) -> String {
        self.find_all(css)
            .await
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("no element {css}"))
    }

    /// Waits for `css` to appear (a form submission navigates asynchronously).
    async fn wait_for(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(element) = self.find_all(css).await.into_iter().next() {
                return element;
            }
            assert!(Instant::now() < deadline, "no element {css}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The text of the first element matching `css`, or `None` while the page is being
    /// replaced (no such element yet, or the one found was replaced before its text was read).
    async fn text_now(&self, css: &str) -> Option<String> {
        let element = self.find_all(css).await.into_iter().next()?;
        let answer = self
            .send("GET", &format!("/element/{element}/text"), None)
            .await;
        answer["value"].as_str().map(str::to_string)
    }

    async fn text(&self, element: &str) -> String {
        self.call("GET", &format!("/element/{element}/text"), None)
            .await
            .as_str()
            .unwrap()
            .to_string()
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.process.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approver_approves_in_a_real_browser() {
    let Some(driver) = Driver::start().await else {
        return;
    };
    let db = TestDb::sqlite().await;
    db.migrate().await;
    for _ in 0..3 {
        let c = db.customer(2, "2019-01-01 00:00:00").await;
        db.order(c, "2020-05-05 10:00:00").await;
    }
    let smtp = SmtpSink::start().await;
    let env = [("RETENTIOND__MAIL__SMTP_URL", smtp.url())];
    let TestApp { svc, .. } = TestApp::spawn(&db, &delete_venue(2, "3 years", ""), &env).await;
    let venue = svc.config.venue(2).unwrap().clone();
    let now = Utc::now().trunc_subsecs(0);
    let Some(Selection::Created { report_id, .. }) = run_venue_cycle(&svc, &venue, now, false)
        .await
        .unwrap()
        .selection
    else {
        panic!()
    };
    mail::deliver_due(&svc, &Mailer::from_config(&svc.config.mail).unwrap(), now)
        .await
        .unwrap();
    let link = smtp.mails()[0].link().unwrap();

    driver
        .call("POST", "/url", Some(json!({"url": link})))
        .await;
    let rows = driver.find_all("table.customers tbody tr").await;
    let first_row = driver.text(&rows[0]).await;
    let shot = driver.call("GET", "/screenshot", None).await;
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot.as_str().unwrap())
        .unwrap();
    let artifacts = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    std::fs::write(artifacts.join("report-page.png"), &png).unwrap();
    let confirm = driver.find("#confirm").await;
    driver
        .call(
            "POST",
            &format!("/element/{confirm}/value"),
            Some(json!({"text": "3"})),
        )
        .await;
    let approve = driver.find("button.approve").await;
    driver
        .call("POST", &format!("/element/{approve}/click"), None)
        .await;
    let notice = driver.text(&driver.wait_for(".notice").await).await;
    let state = driver.text(&driver.find(".state").await).await;
    driver.call("DELETE", "", None).await;

    assert_eq!(rows.len(), 3);
    assert!(first_row.contains("ann1@example.org"), "{first_row}");
    assert!(png.starts_with(b"\x89PNG"));
    assert_eq!(state, "approved");
    assert!(notice.contains("approved"), "{notice}");
    assert_eq!(
        reports::get(&db.db, report_id)
            .await
            .unwrap()
            .unwrap()
            .state,
        ReportState::Approved
    );
}

impl Driver {
    async fn go(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url }))).await;
    }

    async fn click(&self, element: &str) {
        self.call("POST", &format!("/element/{element}/click"), None)
            .await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        self.call(
            "POST",
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// Waits until `css` matches exactly `n` elements (the page after a form has loaded).
    async fn wait_for_count(&self, css: &str, n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let found = self.find_all(css).await;
            if found.len() == n {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "{css}: {} elements, expected {n}",
                found.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn page_text(&self) -> String {
        let body = self.find("body").await;
        self.text(&body).await
    }

    async fn screenshot(&self, name: &str) {
        let shot = self.call("GET", "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot.as_str().unwrap())
            .unwrap();
        let artifacts =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
        std::fs::create_dir_all(&artifacts).unwrap();
        std::fs::write(artifacts.join(name), &png).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approver_searches_keeps_customers_out_and_approves_the_rest_in_a_real_browser() {
    let Some(driver) = Driver::start().await else {
        return;
    };
    let db = TestDb::sqlite().await;
    db.migrate().await;
    let mut idle = Vec::new();
    for _ in 0..6 {
        let c = db.customer(2, "2019-01-01 00:00:00").await;
        db.order(c, "2020-05-05 10:00:00").await;
        idle.push(c);
    }
    let active = db.customer(2, "2019-01-01 00:00:00").await;
    db.order(active, &Utc::now().format("%Y-%m-%d 00:00:00").to_string())
        .await;
    let smtp = SmtpSink::start().await;
    let env = [("RETENTIOND__MAIL__SMTP_URL", smtp.url())];
    let venues = delete_venue(2, "3 years", "report_interval = \"1 day\"");
    let TestApp { svc, .. } = TestApp::spawn(&db, &venues, &env).await;
    let venue = svc.config.venue(2).unwrap().clone();
    let now = Utc::now().trunc_subsecs(0);
    let Some(Selection::Created {
        report_id,
        customers,
    }) = run_venue_cycle(&svc, &venue, now, false)
        .await
        .unwrap()
        .selection
    else {
        panic!("expected a report")
    };
    assert_eq!(customers, 6);
    mail::deliver_due(&svc, &Mailer::from_config(&svc.config.mail).unwrap(), now)
        .await
        .unwrap();
    let link = smtp.mails()[0].link().unwrap();

    // The pending page, in words, with a search.
    driver.go(&link).await;
    driver.screenshot("review-pending.png").await;
    let pending = driver.page_text().await;
    assert!(pending.contains("6 of 7 customers, 86%"), "{pending}");
    assert!(
        pending.contains("never ordered") || pending.contains("2020"),
        "{pending}"
    );
    driver.type_into("#q", &format!("ann{}@", idle[1])).await;
    driver.click(&driver.find("button.search").await).await;
    // The results page may still be replacing the form's page (for a moment it has no body):
    // read it once it shows the row.
    let expected = format!("ann{}@example.org", idle[1]);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !driver
        .text_now("body")
        .await
        .is_some_and(|text| text.contains(&expected))
    {
        assert!(
            Instant::now() < deadline,
            "the search never showed {expected}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        driver.find_all("table.customers tbody tr").await.len(),
        1,
        "only the customer searched for"
    );

    // Keep two with the row buttons, one through the text box, then undo one.
    driver.go(&link).await;
    let buttons = driver
        .wait_for_count("table.customers button.keep", 6)
        .await;
    driver.click(&buttons[0]).await;
    driver.wait_for_count("table.kept tbody tr", 1).await;
    let buttons = driver
        .wait_for_count("table.customers button.keep", 5)
        .await;
    driver.click(&buttons[0]).await;
    driver.wait_for_count("table.kept tbody tr", 2).await;
    driver
        .type_into("#keep-ids", &format!("{}\n", idle[3]))
        .await;
    driver.type_into("#keep-reason", "board member").await;
    driver.click(&driver.find("button.keep-many").await).await;
    driver.wait_for_count("table.kept tbody tr", 3).await;
    let undo = driver.find_all("table.kept button.undo").await;
    driver.click(&undo[0]).await; // idle[0]
    driver.wait_for_count("table.kept tbody tr", 2).await;
    driver.screenshot("review-kept.png").await;
    let kept_page = driver.page_text().await;
    assert!(
        kept_page.contains("2 kept out by approvers, so 4 to delete"),
        "{kept_page}"
    );
    assert!(kept_page.contains("board member"), "{kept_page}");

    // Approve the rest with the new count; the next cycle applies it.
    driver.type_into("#confirm", "4").await;
    driver.click(&driver.find("button.approve").await).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    // The form's answer replaces the page while it is polled.
    while driver.text_now(".state").await.as_deref() != Some("approved") {
        assert!(Instant::now() < deadline, "never approved");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let applied = run_venue_cycle(&svc, &venue, now + chrono::Duration::minutes(1), false)
        .await
        .unwrap();
    assert!(applied.applied[0].finished);
    driver.go(&link).await;
    driver.screenshot("review-applied.png").await;
    let applied_page = driver.page_text().await;
    driver.call("DELETE", "", None).await;

    let kept = [idle[1], idle[3]];
    for c in &idle {
        let exists = db.customer_row(*c).await.is_some();
        assert_eq!(
            exists,
            kept.contains(c),
            "customer {c}: kept ones untouched, the rest deleted"
        );
    }
    let outcomes = retentiond::audit::customer_outcomes(&db.db, Some(2))
        .await
        .unwrap();
    let kept_outcomes: Vec<i64> = outcomes
        .iter()
        .filter(|o| o.outcome == "kept")
        .map(|o| o.customer_id)
        .collect();
    assert_eq!(kept_outcomes, kept.to_vec());
    assert!(applied_page.contains("4 deleted"), "{applied_page}");
    assert!(
        applied_page.contains("2 left untouched: kept out of the report by an approver"),
        "{applied_page}"
    );
    assert!(
        applied_page.contains("Approved by boxoffice@venue2.example through the emailed link"),
        "{applied_page}"
    );

    // Within approval.keep_for the kept customers are not selected again; after it they are.
    let soon = run_venue_cycle(&svc, &venue, now + chrono::Duration::days(2), false)
        .await
        .unwrap();
    assert!(
        matches!(soon.selection, Some(Selection::NoCandidates)),
        "{:?}",
        soon.selection
    );
    let later = run_venue_cycle(&svc, &venue, now + chrono::Duration::days(368), false)
        .await
        .unwrap();
    assert!(
        matches!(
            later.selection,
            Some(Selection::Created { customers: 2, .. })
        ),
        "{:?}",
        later.selection
    );
    assert_eq!(
        reports::get(&db.db, report_id)
            .await
            .unwrap()
            .unwrap()
            .state,
        ReportState::Applied
    );
}
