//! A vendor's fleet (SPEC 11): many venues in one database on one schedule second, driven
//! through the `retentiond run` binary on every backend: every venue gets its report and its
//! approval request over SMTP, no cycle fails, and the pages and `/healthz` answer while the run goes on.
//! Also the fleet's configuration: `venues_dir`, and the limits checked against each other.

use crate::common::smtp::SmtpSink;
use crate::common::{output_text, retentiond, TestDb};
use retentiond::db::Query;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Venues of the CI-sized fleet, and customers per venue (3 in 10 idle since 2019).
const VENUES: i64 = 200;
const PER_VENUE: i64 = 10;

/// Fills the reference schema with `VENUES` venues of `PER_VENUE` customers: customers whose id
/// ends in 7, 8 or 9 never ordered (candidates under "3 years"), the others ordered last month.
async fn fill_fleet(db: &TestDb) {
    let mut q = Query::new(&format!(
        "INSERT INTO customers (id, venue_id, first_name, last_name, email, postcode, created_at) \
         SELECT n, (n - 1) / {PER_VENUE} + 1, 'Fleet', 'Person', 'fleet' || n || '@example.org', 'LS1 4AP', "
    ));
    if db.backend() == retentiond::db::Backend::Mysql {
        q = Query::new(&format!(
            "INSERT INTO customers (id, venue_id, first_name, last_name, email, postcode, created_at) \
             SELECT n, (n - 1) DIV {PER_VENUE} + 1, 'Fleet', 'Person', CONCAT('fleet', n, '@example.org'), 'LS1 4AP', "
        ));
    }
    q.bind(crate::common::t("2019-01-01 00:00:00"))
        .push(&format!(
            " FROM {} ORDER BY n",
            crate::common::series((VENUES * PER_VENUE) as u32)
        ));
    db.db.execute(&q).await.unwrap();
    let recent = chrono::Utc::now() - chrono::Duration::days(30);
    let last_digit = match db.backend() {
        retentiond::db::Backend::Sqlite => "(id % 10)",
        _ => "MOD(id, 10)",
    };
    let mut q = Query::new(
        "INSERT INTO orders (venue_id, customer_id, placed_at, total_pence) SELECT venue_id, id, ",
    );
    q.bind(recent).push(&format!(
        ", 1000 FROM customers WHERE {last_digit} NOT IN (7, 8, 9)"
    ));
    db.db.execute(&q).await.unwrap();
}

/// One venue's file for `venues_dir`: a delete venue on the main file's schedule.
fn venue_file(id: i64) -> String {
    format!(
        "# written by the vendor's own systems\n[[venues]]\nid = {id}\nname = \"Fleet Venue {id}\"\napprovers = [\"boxoffice@venue{id}.example\"]\ninactive_for = \"3 years\"\naction = \"delete\"\n"
    )
}

async fn count(db: &TestDb, sql: &str) -> i64 {
    db.db
        .fetch_one(&Query::new(sql))
        .await
        .unwrap()
        .i64(0)
        .unwrap()
}

async fn every_venue_of_a_fleet_on_one_second_gets_its_report(db: TestDb) {
    db.migrate().await;
    fill_fleet(&db).await;
    let venues_dir = db.dir.path().join("venues.d");
    std::fs::create_dir_all(&venues_dir).unwrap();
    for id in 1..=VENUES {
        std::fs::write(
            venues_dir.join(format!("venue-{id:04}.toml")),
            venue_file(id),
        )
        .unwrap();
    }
    let port = crate::common::free_port();
    // Every venue on the same second: each 15 s, so the first run comes soon after start.
    let extra = format!(
        "[http]\nbind = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}\"\n\
         [schedule]\ncron = \"*/15 * * * * *\"\ntimezone = \"UTC\"\n"
    );
    let smtp = SmtpSink::start().await;
    let config = db.write_config(&extra);
    let text = std::fs::read_to_string(&config).unwrap();
    let text = format!("venues_dir = \"{}\"\n{text}", venues_dir.display()).replacen(
        "[mail]\n",
        &format!(
            "[mail]\nsmtp_url = \"{}\"\nops = \"ops@vendor.example\"\n",
            smtp.url()
        ),
        1,
    );
    std::fs::write(&config, text).unwrap();
    let checked = retentiond(&config, &["check"]);
    assert!(checked.status.success(), "{}", output_text(&checked));

    let mut child = Command::new(env!("CARGO_BIN_EXE_retentiond"))
        .arg("--config")
        .arg(&config)
        .arg("run")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    crate::common::wait_healthy(port).await;
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(240);
    let (mut health_checks, mut slowest_health) = (0, Duration::ZERO);
    let mut page_status = None;
    loop {
        let started = Instant::now();
        let health = client.get(format!("{base}/healthz")).send().await.unwrap();
        assert_eq!(health.status(), 200, "/healthz during the run");
        health_checks += 1;
        slowest_health = slowest_health.max(started.elapsed());
        let requests: Vec<_> = smtp
            .mails()
            .into_iter()
            .filter(|m| m.subject().starts_with("Approval needed"))
            .collect();
        if page_status.is_none() {
            if let Some(link) = requests.first().and_then(|m| m.link()) {
                let page = client.get(&link).send().await.unwrap();
                page_status = Some(page.status().as_u16());
            }
        }
        let reports = count(&db, "SELECT COUNT(*) FROM retention_reports").await;
        // Each venue has one approver: one request over SMTP to each of them.
        let requested = requests
            .iter()
            .flat_map(|m| m.to.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .len() as i64;
        if reports == VENUES && requested == VENUES {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after 240 s only {reports} of {VENUES} reports and {requested} approval requests"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let status = crate::common::sigterm_and_wait(&mut child, Duration::from_secs(60)).await;

    assert_eq!(status.code(), Some(0));
    assert_eq!(
        page_status,
        Some(200),
        "a report page answered during the run"
    );
    assert!(
        health_checks > 0 && slowest_health < Duration::from_secs(5),
        "slowest /healthz {slowest_health:?}"
    );
    let failed: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("retentiond_cycles_total") && l.contains("result=\"failed\""))
        .collect();
    assert!(failed.is_empty(), "no cycle failed: {failed:?}");
    let ok = metrics
        .lines()
        .filter(|l| l.starts_with("retentiond_cycles_total") && l.contains("result=\"ok\""))
        .count();
    assert_eq!(ok as i64, VENUES, "every venue's cycle counted ok");
    assert!(metrics.contains("retentiond_cycles_waiting"), "{metrics}");
    assert!(
        !smtp
            .mails()
            .iter()
            .any(|m| m.subject().starts_with("ALERT")),
        "no failure or brake alert"
    );
    // The night's requests share a few SMTP connections (`check`'s probe is one of them), not
    // one connection a message.
    let (messages, connections) = (smtp.mails().len(), smtp.connections());
    eprintln!("fleet run: {messages} messages over {connections} SMTP connections");
    assert!(
        messages as i64 >= VENUES && connections <= 10,
        "{messages} messages over {connections} connections"
    );
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM retention_report_items").await,
        VENUES * 3,
        "each report holds its venue's 3 idle customers"
    );
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(DISTINCT venue_id) FROM retention_reports WHERE customer_count = 3"
        )
        .await,
        VENUES
    );
}

/// A fleet's dry run counts all its venues in a few statements; what it says of each venue
/// must be what that venue's own dry run says, whatever its policy.
async fn a_fleet_dry_run_says_of_each_venue_what_its_own_dry_run_says(db: TestDb) {
    fleet_dry_run_matches_each_venues_own(db, true).await
}

/// The same without any hold (no `legal_hold` column configured): the fleet's count takes
/// another statement then (on SQLite, candidates and customers in one scan).
async fn a_fleet_dry_run_without_holds_says_of_each_venue_what_its_own_dry_run_says(db: TestDb) {
    fleet_dry_run_matches_each_venues_own(db, false).await
}

async fn fleet_dry_run_matches_each_venues_own(db: TestDb, holds: bool) {
    db.migrate().await;
    fill_fleet(&db).await;
    // Venue 6's idle customer 57 is on legal hold; venue 4 keeps its orders on customer 37.
    db.set_legal_hold(57).await;
    let venues = [
        crate::common::delete_venue(1, "3 years", ""),
        crate::common::anonymise_venue(2, "3 years", ""),
        crate::common::delete_venue(3, "1 year", ""),
        crate::common::delete_venue(4, "3 years", "unknown_customer_id = 37"),
        crate::common::delete_venue(5, "3 years", "").replace("max_share = 1.0", "max_share = 0.2"),
        crate::common::delete_venue(6, "2 years", ""),
        crate::common::anonymise_venue(7, "3 years", ""),
        crate::common::delete_venue(8, "3 years", ""),
        // A venue without a single customer yet (a new one).
        crate::common::delete_venue(NO_CUSTOMERS, "3 years", ""),
    ]
    .concat();
    let svc = if holds {
        db.service(&venues).await
    } else {
        let path = db.write_config(&venues);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("legal_hold = \"legal_hold\"\n"), "{text}");
        // The column is then a customers column like any other: the anonymise venues keep it.
        let text = text.replace("legal_hold = \"legal_hold\"\n", "").replace(
            "[venues.anonymise]\n",
            "[venues.anonymise]\nlegal_hold = \"keep\"\n",
        );
        std::fs::write(&path, text).unwrap();
        let config = retentiond::config::load(&path).unwrap();
        assert!(config.schema.holds.is_empty(), "no hold configured");
        retentiond::Service::new(db.db.clone(), config)
    };
    // Without the legal hold, venue 6's held customer 57 is a candidate like any other.
    let venue_6 = if holds { 2 } else { 3 };
    let now = retentiond::Clock::default().now();
    // Venue 7 already has a pending report.
    crate::common::cycle(&svc, 7, &now.format("%Y-%m-%d %H:%M:%S").to_string()).await;
    let dry = retentiond::fleet::RunOptions {
        dry_run: true,
        retry_for: Duration::ZERO,
        first_backoff: Duration::from_millis(10),
    };

    let fleet = retentiond::fleet::Fleet::new(svc.clone())
        .run(&svc.config.venues, now, dry)
        .await;

    let mut said = Vec::new();
    for run in &fleet {
        let retentiond::fleet::VenueOutcome::Done(together) = &run.outcome else {
            panic!("venue {}: {:?}", run.venue.id, run.outcome)
        };
        let alone = retentiond::cycle::run_venue_cycle(&svc, &run.venue, now, true)
            .await
            .unwrap();
        let (together, alone) = (
            format!("{:?}", together.selection),
            format!("{:?}", alone.selection),
        );
        assert_eq!(together, alone, "venue {}", run.venue.id);
        said.push(together);
    }
    assert!(said[0].contains("WouldCreate { customers: 3 }"), "{said:?}");
    assert!(
        said[3].contains("WouldCreate { customers: 2 }"),
        "the Unknown Customer: {said:?}"
    );
    assert!(said[4].contains("Brake"), "{said:?}");
    assert!(
        said[5].contains(&format!("WouldCreate {{ customers: {venue_6} }}")),
        "the legal hold: {said:?}"
    );
    assert!(said[6].contains("OpenReport"), "{said:?}");
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM retention_reports").await,
        1,
        "nothing made"
    );
    // The counts the fleet's venues read: every selecting venue in a few statements.
    let run = retentiond::run::RunContext::new();
    run.count_selecting_venues(&svc, &svc.config.venues, now, true)
        .await
        .unwrap();
    assert_eq!(run.counted(4), Some((2, 10)));
    assert_eq!(run.counted(6), Some((venue_6, 10)));
    assert_eq!(
        run.counted(7),
        None,
        "a venue with an open report selects nothing"
    );
    assert_eq!(
        run.counted(NO_CUSTOMERS),
        Some((0, 0)),
        "a venue without customers is counted with the rest, as none"
    );
    assert!(said[8].contains("NoCandidates"), "{said:?}");
}

/// A venue id no customer of `fill_fleet` has.
const NO_CUSTOMERS: i64 = VENUES + 1;

/// A fleet's run leaves the selection after each apply to the run, which reads every venue's
/// reports once and counts the candidates of those that may make a report in one statement:
/// what each venue gets must be what its own cycle would have made of it.
async fn a_fleet_run_selects_after_its_applies_as_each_venue_alone_would(db: TestDb) {
    db.migrate().await;
    fill_fleet(&db).await;
    if db.backend() == retentiond::db::Backend::Postgres {
        // The fleet's customers were given their ids: the Unknown Customers take the next ones.
        db.db
            .execute(&Query::new(
                "SELECT setval(pg_get_serial_sequence('customers', 'id'), (SELECT MAX(id) FROM customers))",
            ))
            .await
            .unwrap();
    }
    let daily = "report_interval = \"1 day\"";
    let venues = [
        crate::common::delete_venue(1, "3 years", daily),
        crate::common::anonymise_venue(2, "3 years", daily),
        crate::common::delete_venue(3, "3 years", "report_interval = \"30 days\""),
        crate::common::delete_venue(4, "3 years", daily),
        crate::common::delete_venue(5, "3 years", daily),
    ]
    .concat();
    let svc = db.service(&venues).await;
    let options = retentiond::fleet::RunOptions {
        dry_run: false,
        retry_for: Duration::ZERO,
        first_backoff: Duration::from_millis(10),
    };
    let now = chrono::Utc::now();
    let day = |n: i64| now + chrono::Duration::days(n);
    let fleet = retentiond::fleet::Fleet::new(svc.clone());
    // Before any report, a real run counts no venue ahead of its cycle (each finds its whole
    // backlog: counting first would read the customers twice); a dry run counts them all.
    let before = retentiond::run::RunContext::new();
    before
        .count_selecting_venues(&svc, &svc.config.venues, day(0), false)
        .await
        .unwrap();
    assert_eq!(before.counted(1), None);
    let dry = retentiond::run::RunContext::new();
    dry.count_selecting_venues(&svc, &svc.config.venues, day(0), true)
        .await
        .unwrap();
    assert_eq!(dry.counted(1).map(|(candidates, _)| candidates), Some(3));
    let first = fleet.run(&svc.config.venues, day(0), options).await;
    let made: Vec<i64> = first
        .iter()
        .map(|run| match &run.outcome {
            retentiond::fleet::VenueOutcome::Done(c) => match c.selection {
                Some(retentiond::cycle::Selection::Created { report_id, .. }) => report_id,
                ref other => panic!("venue {}: {other:?}", run.venue.id),
            },
            other => panic!("venue {}: {other:?}", run.venue.id),
        })
        .collect();
    // Venues 1, 2, 3 and 5 are approved; venue 4's report stays pending.
    for (i, report_id) in made.iter().enumerate() {
        if i != 3 {
            crate::common::operator_approves(&svc.db, *report_id, day(0)).await;
        }
    }
    // Since the reports were made, customer 1 of venue 1 lost their orders: a new candidate.
    db.db
        .execute(&Query::new("DELETE FROM orders WHERE customer_id = 1"))
        .await
        .unwrap();

    let second = fleet.run(&svc.config.venues, day(2), options).await;

    let said: Vec<String> = second
        .iter()
        .map(|run| match &run.outcome {
            retentiond::fleet::VenueOutcome::Done(c) => format!(
                "applied {} then {:?}",
                c.applied.iter().map(|a| a.processed()).sum::<u64>(),
                c.selection
            ),
            other => panic!("venue {}: {other:?}", run.venue.id),
        })
        .collect();
    assert!(
        said[0].starts_with("applied 3 then Some(Created {") && said[0].contains("customers: 1 }"),
        "the new candidate gets a report in the same run: {said:?}"
    );
    assert_eq!(said[1], "applied 3 then Some(NoCandidates)", "{said:?}");
    assert!(
        said[2].starts_with("applied 3 then Some(TooSoon {"),
        "the interval still counts: {said:?}"
    );
    assert!(
        said[3].starts_with("applied 0 then Some(OpenReport {"),
        "{said:?}"
    );
    assert_eq!(said[4], "applied 3 then Some(NoCandidates)", "{said:?}");
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM retention_reports WHERE venue_id = 1 AND state = 'pending'"
        )
        .await,
        1
    );
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM retention_reports").await,
        6,
        "five from the first night, one from the second"
    );
    // The run's own judgement, as it stands now: one read of the reports, one count.
    let venues: Vec<&retentiond::config::VenueConfig> = svc.config.venues.iter().collect();
    let settled = retentiond::run::RunContext::new()
        .settle_deferred_selections(&svc, &venues, day(2))
        .await
        .unwrap();
    let settled: Vec<String> = (1..=5).map(|v| format!("{:?}", settled[&v])).collect();
    assert!(settled[0].starts_with("Some(OpenReport {"), "{settled:?}");
    assert_eq!(settled[1], "Some(NoCandidates)", "{settled:?}");
    assert!(settled[2].starts_with("Some(TooSoon {"), "{settled:?}");
    assert!(settled[3].starts_with("Some(OpenReport {"), "{settled:?}");
    // Venue 5 gains a candidate: the run cannot answer it, the venue cycles again.
    db.db
        .execute(&Query::new("DELETE FROM orders WHERE customer_id = 41"))
        .await
        .unwrap();
    let settled = retentiond::run::RunContext::new()
        .settle_deferred_selections(&svc, &venues, day(2))
        .await
        .unwrap();
    assert!(settled[&5].is_none(), "{settled:?}");
    // What venue 2 said, its own cycle says too (nothing applied, nothing new).
    let alone = retentiond::cycle::run_venue_cycle(&svc, &svc.config.venues[1], day(2), false)
        .await
        .unwrap();
    assert!(
        matches!(
            alone.selection,
            Some(retentiond::cycle::Selection::NoCandidates)
        ),
        "{:?}",
        alone.selection
    );

    // A third night: venues 2 and 5 may make a report again, venue 2 with no candidate and
    // venue 5 with customer 41. The run counts both before their cycles: venue 2 is answered
    // from that count, with no cycle of its own to read or write; venue 5 cycles and selects.
    let run = retentiond::run::RunContext::new();
    run.count_selecting_venues(&svc, &svc.config.venues, day(4), false)
        .await
        .unwrap();
    assert!(run.counted_none(2), "{:?}", run.counted(2));
    assert_eq!(run.counted(5).map(|(candidates, _)| candidates), Some(1));
    assert_eq!(run.counted(1), None, "venue 1 has its pending report");
    assert!(
        run.answers_from_its_reads(&svc, &svc.config.venues[1], day(4), false)
            .await
    );
    assert!(
        !run.answers_from_its_reads(&svc, &svc.config.venues[4], day(4), false)
            .await
    );
    let third = fleet.run(&svc.config.venues, day(4), options).await;
    let said: Vec<String> = third
        .iter()
        .map(|run| match &run.outcome {
            retentiond::fleet::VenueOutcome::Done(c) => format!("{:?}", c.selection),
            other => panic!("venue {}: {other:?}", run.venue.id),
        })
        .collect();
    assert_eq!(said[1], "Some(NoCandidates)", "{said:?}");
    assert!(
        said[4].starts_with("Some(Created {") && said[4].contains("customers: 1 }"),
        "{said:?}"
    );
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM retention_reports").await,
        7,
        "venue 5's report is the third night's only one"
    );
}

/// The plan of `q` as `db`'s backend explains it, all on one line.
async fn plan_of(db: &TestDb, q: &Query) -> String {
    let mut explained = q.clone();
    explained.wrap(
        match db.backend() {
            retentiond::db::Backend::Sqlite => "EXPLAIN QUERY PLAN ",
            _ => "EXPLAIN ",
        },
        "",
    );
    format!("{:?}", db.db.fetch_all(&explained).await.unwrap())
}

/// What each venue's cycle reads of retentiond's reports (its open reports, and whether any
/// report has customers kept out) reads an index, not the fleet's reports: with 1,000 venues'
/// reports and the planner's statistics taken while the table was empty (a vendor's first
/// night), PostgreSQL had scanned every report once a venue.
async fn a_venues_cycle_reads_an_index_of_the_reports_not_the_fleets(db: TestDb) {
    retentiond::migrate::run(&db.db, chrono::Utc::now())
        .await
        .unwrap();
    // The servers' statistics, taken of the empty table (SQLite keeps none unless asked).
    match db.backend() {
        retentiond::db::Backend::Sqlite => {}
        retentiond::db::Backend::Postgres => db
            .db
            .execute_script("ANALYZE retention_reports")
            .await
            .unwrap(),
        retentiond::db::Backend::Mysql => db
            .db
            .execute_script("ANALYZE TABLE retention_reports")
            .await
            .unwrap(),
    }
    let at = crate::common::t("2026-06-15 03:00:00");
    let mut q = Query::new(
        "INSERT INTO retention_reports (venue_id, action, policy, cutoff, state, customer_count, \
         approvals_required, created_at, expires_at, kept_count) SELECT MOD(n - 1, 1000) + 1, 'delete', 'delete after 3 years inactive', ",
    );
    if db.backend() == retentiond::db::Backend::Sqlite {
        q = Query::new(
            "INSERT INTO retention_reports (venue_id, action, policy, cutoff, state, customer_count, \
             approvals_required, created_at, expires_at, kept_count) SELECT (n - 1) % 1000 + 1, 'delete', 'delete after 3 years inactive', ",
        );
    }
    q.bind(at)
        .push(", CASE WHEN n <= 1000 THEN 'cancelled' ELSE 'approved' END, 75, 1, ")
        .bind(at)
        .push(", ")
        .bind(at)
        .push(&format!(", 0 FROM {}", crate::common::series(2000)));
    assert_eq!(db.db.execute(&q).await.unwrap(), 2000);

    use retentiond::policy::ReportState;
    let open = retentiond::reports::in_states_query(
        500,
        &[
            ReportState::Pending,
            ReportState::Approved,
            ReportState::Applying,
        ],
    );
    let plan = plan_of(&db, &open).await;
    assert!(plan.contains("retention_reports_venue_state"), "{plan}");
    assert_eq!(
        retentiond::reports::in_states(
            &db.db,
            500,
            &[
                ReportState::Pending,
                ReportState::Approved,
                ReportState::Applying
            ]
        )
        .await
        .unwrap()
        .len(),
        1,
        "venue 500's one approved report"
    );

    let probe = Query::new(retentiond::selection::EXCLUSIONS_PROBE);
    let plan = plan_of(&db, &probe).await;
    match db.backend() {
        retentiond::db::Backend::Postgres => assert!(
            plan.contains("retention_reports_kept")
                && !plan.contains("Seq Scan on retention_reports"),
            "{plan}"
        ),
        retentiond::db::Backend::Sqlite => {
            assert!(
                plan.contains("COVERING INDEX retention_reports_kept"),
                "{plan}"
            )
        }
        // MariaDB reads the maximum from the index's end while planning.
        retentiond::db::Backend::Mysql => {
            assert!(plan.contains("Select tables optimized away"), "{plan}")
        }
    }
    // And it still says whether any report has customers kept out.
    let kept = |row: retentiond::db::Row| row.i64(2).unwrap();
    assert_eq!(kept(db.db.fetch_one(&probe).await.unwrap()), 0);
    let mut q = Query::new("UPDATE retention_reports SET kept_count = 2 WHERE id = ");
    q.bind(1700_i64);
    db.db.execute(&q).await.unwrap();
    assert!(kept(db.db.fetch_one(&probe).await.unwrap()) > 0);
}

on_both_backends!(
    a_venues_cycle_reads_an_index_of_the_reports_not_the_fleets,
    a_fleet_run_selects_after_its_applies_as_each_venue_alone_would,
    every_venue_of_a_fleet_on_one_second_gets_its_report,
    a_fleet_dry_run_says_of_each_venue_what_its_own_dry_run_says,
    a_fleet_dry_run_without_holds_says_of_each_venue_what_its_own_dry_run_says
);

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

const MAIN: &str = "[database]\nurl = \"sqlite://fleet.db\"\n";

#[test]
fn venues_dir_files_are_read_in_name_order_after_the_main_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("venues.d")).unwrap();
    write(&dir.path().join("venues.d"), "b.toml", &venue_file(3));
    write(
        &dir.path().join("venues.d"),
        "a.toml",
        &(venue_file(2) + &venue_file(4)),
    );
    write(
        &dir.path().join("venues.d"),
        "notes.txt",
        "not a venue file",
    );
    let main = write(
        dir.path(),
        "main.toml",
        &format!("venues_dir = \"venues.d\"\n{MAIN}{}", venue_file(1)),
    );

    let config = retentiond::config::load_with_env(&main, Default::default()).unwrap();

    let ids: Vec<i64> = config.venues.iter().map(|v| v.id).collect();
    assert_eq!(ids, vec![1, 2, 4, 3]);
}

/// Loads `main.toml` with `main` and the venue files, and returns the one-line error.
fn error_of(main: &str, files: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("venues.d")).unwrap();
    for (name, text) in files {
        write(&dir.path().join("venues.d"), name, text);
    }
    let path = write(dir.path(), "main.toml", main);
    retentiond::config::load_with_env(&path, Default::default())
        .unwrap_err()
        .to_string()
}

#[test]
fn a_venue_file_that_is_not_toml_is_named() {
    let e = error_of(
        &format!("venues_dir = \"venues.d\"\n{MAIN}{}", venue_file(1)),
        &[("0002.toml", "[[venues]\nid = 2")],
    );
    assert!(
        e.contains("0002.toml: (file): TOML parse error at line 1"),
        "{e}"
    );
    // One line, with what was wrong after where (not the crate's snippet with a caret).
    assert!(!e.contains('\n'), "{e}");
    assert!(!e.contains('^'), "{e}");
    let what = e
        .split_once(", column ")
        .map(|(_, rest)| rest)
        .unwrap_or("");
    assert!(what.contains(": ") && !what.ends_with(": "), "{e}");
}

#[test]
fn a_main_file_that_is_not_toml_is_one_line_naming_where() {
    let e = error_of("[database]\nurl = \"sqlite://x.db\"\ngarbage [[\n", &[]);
    assert!(
        e.contains("main.toml: (file): TOML parse error at line 3, column 9: "),
        "{e}"
    );
    assert!(!e.contains('\n'), "{e}");
}

#[test]
fn a_venue_id_in_two_files_names_both() {
    let e = error_of(
        &format!("venues_dir = \"venues.d\"\n{MAIN}"),
        &[("a.toml", &venue_file(7)), ("b.toml", &venue_file(7))],
    );
    assert!(
        e.contains("b.toml: venues[0].id: venue id 7 appears more than once"),
        "{e}"
    );
    assert!(e.contains("a.toml venues[0]"), "{e}");
}

#[test]
fn a_mistake_in_a_venue_file_names_the_file_and_key() {
    let bad = venue_file(2).replace("3 years", "3 eons");
    let e = error_of(
        &format!("venues_dir = \"venues.d\"\n{MAIN}{}", venue_file(1)),
        &[("0002.toml", &bad)],
    );
    assert!(e.contains("0002.toml: venues[0].inactive_for"), "{e}");
    let unknown = venue_file(3) + "colour = \"blue\"\n";
    let e = error_of(
        &format!("venues_dir = \"venues.d\"\n{MAIN}{}", venue_file(1)),
        &[("0003.toml", &unknown)],
    );
    assert!(e.contains("0003.toml") && e.contains("colour"), "{e}");
}

#[test]
fn a_fleet_without_venue_files_says_where_it_looked() {
    let e = error_of(
        &format!("venues_dir = \"venues.d\"\n{MAIN}"),
        &[("0001.txt", &venue_file(1))],
    );
    assert!(
        e.contains("main.toml: venues: expected at least one [[venues]] entry (none in the main file, and no *.toml file in venues_dir "),
        "{e}"
    );
    assert!(e.contains("venues.d"), "{e}");
    let alone = error_of(MAIN, &[]);
    assert!(
        alone.ends_with("venues: expected at least one [[venues]] entry"),
        "{alone}"
    );
}

#[test]
fn a_venues_dir_that_does_not_exist_is_named() {
    let e = error_of(
        &format!("venues_dir = \"nowhere.d\"\n{MAIN}{}", venue_file(1)),
        &[],
    );
    assert!(
        e.contains("main.toml: venues_dir: cannot read the folder"),
        "{e}"
    );
    assert!(e.contains("nowhere.d"), "{e}");
}

#[test]
fn more_cycles_than_the_pool_allows_is_refused_naming_both_keys() {
    let e = error_of(
        &format!(
            "[database]\nurl = \"postgres://u@h/db\"\nmax_connections = 8\n[schedule]\nmax_concurrent_cycles = 4\n{}",
            venue_file(1)
        ),
        &[],
    );
    assert!(e.contains("schedule.max_concurrent_cycles"), "{e}");
    assert!(e.contains("database.max_connections = 8"), "{e}");
    let ok = error_of(
        &format!(
            "[database]\nurl = \"postgres://u@h/db\"\nmax_connections = 10\n[schedule]\nmax_concurrent_cycles = 4\nretry_for = \"soon\"\n{}",
            venue_file(1)
        ),
        &[],
    );
    assert!(
        ok.contains("schedule.retry_for"),
        "4 cycles fit in 10 connections: {ok}"
    );
}

#[test]
fn the_defaults_leave_connections_for_the_pages() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "main.toml",
        &format!("[database]\nurl = \"postgres://u@h/db\"\n{}", venue_file(1)),
    );
    let config = retentiond::config::load_with_env(&path, Default::default()).unwrap();
    assert_eq!(config.max_connections, 8);
    assert_eq!(config.schedule.max_concurrent_cycles, 3, "(8 - 2) / 2");
    assert_eq!(config.schedule.retry_for, Duration::from_secs(2 * 3600));
}
