//! The report page in a real browser: headless Chromium (Debian's chromium and chromium-driver,
//! which .ci/run installs) opens an emailed link, reads the table, types the count, approves and
//! sees the approved state. A screenshot is written to target/test-artifacts/report-page.png.

mod common;

use base64::Engine;
use chrono::{SubsecRound, Utc};
use common::smtp::SmtpSink;
use common::{delete_venue, TestDb};
use retentiond::cycle::{run_venue_cycle, Selection};
use retentiond::mail::{self, Mailer};
use retentiond::policy::ReportState;
use retentiond::{reports, web, Service};
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
        let value: Value = serde_json::from_str(&text).unwrap();
        assert!(
            value["value"].get("error").is_none(),
            "webdriver {path}: {text}"
        );
        value["value"].clone()
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
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let config = db.config_with_env(
        &delete_venue(2, "3 years", ""),
        &[
            ("RETENTIOND__MAIL__SMTP_URL", smtp.url()),
            ("RETENTIOND__HTTP__PUBLIC_URL", base),
        ],
    );
    let svc = Service::new(db.db.clone(), config);
    tokio::spawn(web::serve(listener, svc.clone(), std::future::pending()));
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
