//! Faults: an SMTP server that is down, then flaps, across process restarts; PostgreSQL
//! connections killed and the server unreachable in the middle of an apply.

use crate::common::smtp::SmtpSink;
use crate::common::{anonymise_venue, delete_venue, t, TestDb, HASH_KEY};
use retentiond::cycle::{run_venue_cycle, Selection};
use retentiond::db::Query;
use retentiond::policy::keyed_hash;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

fn cycle_at(config: &Path, at: &str, env: &[(&str, String)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_retentiond"));
    command
        .arg("--config")
        .arg(config)
        .args(["cycle", "--at", at])
        .env("RUST_LOG", "error");
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_survives_an_outage_a_flapping_server_and_restarts_exactly_once() {
    let db = TestDb::sqlite().await;
    db.migrate().await;
    for _ in 0..3 {
        db.customer(2, "2019-01-01 00:00:00").await;
    }
    let venue = delete_venue(2, "3 years", "").replace(
        r#"approvers = ["boxoffice@venue2.example"]"#,
        r#"approvers = ["a@venue2.example", "b@venue2.example", "c@venue2.example"]"#,
    );
    let config = db.write_config(&venue);
    let addr = SmtpSink::unused_addr().await;
    let smtp = [("RETENTIOND__MAIL__SMTP_URL", format!("smtp://{addr}"))];

    let down = cycle_at(&config, "2026-06-15T12:00:00Z", &smtp); // server down: queued, not sent
    let mut flapping = SmtpSink::start_flapping_at(addr).await;
    let flap = cycle_at(&config, "2026-06-15T12:10:00Z", &smtp); // a restart; the server drops mid-message
    flapping.stop();
    drop(flapping);
    let healthy = SmtpSink::start_at(addr).await;
    let recovered = cycle_at(&config, "2026-06-15T14:00:00Z", &smtp); // another restart; healthy again
    let later = cycle_at(&config, "2026-06-15T18:00:00Z", &smtp);

    assert!(
        down.status.success()
            && flap.status.success()
            && recovered.status.success()
            && later.status.success()
    );
    assert!(
        String::from_utf8_lossy(&down.stdout).contains("0 sent, 3 failed"),
        "{}",
        String::from_utf8_lossy(&down.stdout)
    );
    assert!(
        String::from_utf8_lossy(&flap.stdout).contains("0 sent, 3 failed"),
        "{}",
        String::from_utf8_lossy(&flap.stdout)
    );
    let mails = healthy.mails();
    let recipients: BTreeSet<String> = mails.iter().map(|m| m.to[0].clone()).collect();
    let ids: BTreeSet<String> = mails
        .iter()
        .filter_map(|m| {
            m.data
                .lines()
                .find(|l| l.starts_with("Message-ID:"))
                .map(str::to_string)
        })
        .collect();
    eprintln!(
        "fault proof mail: 3 queued, {} delivered after outage and flapping, {} distinct",
        mails.len(),
        ids.len()
    );
    assert_eq!(mails.len(), 3, "none lost, none duplicated");
    assert_eq!(ids.len(), 3);
    assert_eq!(recipients.len(), 3);
    assert_eq!(
        db.count("SELECT COUNT(*) FROM retention_outbox WHERE sent_at IS NULL")
            .await,
        0
    );
    for mail in &mails {
        let link = mail.link().unwrap();
        assert!(
            link.contains("/r/"),
            "each delivered request carries a link"
        );
    }
}

/// A TCP proxy to PostgreSQL that the test can cut (every connection dropped, new ones
/// refused) and restore: the database "briefly unreachable" without stopping the shared server.
struct Proxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = Proxy {
            addr: listener.local_addr().unwrap(),
            upstream,
            tasks: Arc::new(Mutex::new(Vec::new())),
        };
        proxy.serve(listener);
        proxy
    }

    fn serve(&self, listener: TcpListener) {
        let (tasks, upstream) = (self.tasks.clone(), self.upstream);
        let inner = tasks.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let conn = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                inner.lock().unwrap().push(conn);
            }
        });
        tasks.lock().unwrap().push(accept);
    }

    fn cut(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    async fn restore(&self) {
        for _ in 0..50 {
            if let Ok(listener) = TcpListener::bind(self.addr).await {
                return self.serve(listener);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("cannot rebind the proxy");
    }
}

async fn processed(db: &TestDb, report_id: i64) -> i64 {
    db.count(&format!("SELECT COUNT(*) FROM retention_report_items WHERE report_id = {report_id} AND outcome IS NOT NULL")).await
}

/// The database server becomes unreachable, then kills the service's sessions, each in the
/// middle of an apply (PostgreSQL and MySQL; SQLite has no server).
async fn server_outage_mid_apply_fails_clearly_changes_nothing_half_way_and_resumes(db: TestDb) {
    db.migrate().await;
    const N: i64 = 2000;
    let mut q = Query::new(
        "INSERT INTO customers (venue_id, first_name, last_name, email, postcode, created_at) \
         SELECT 1, 'Bulk', 'Person', 'bulk' || n || '@example.org', 'LS1 4AP', ",
    );
    q.bind(t("2019-01-01 00:00:00")).push(&format!(
        " FROM {} ORDER BY n",
        crate::common::series(N as u32)
    ));
    db.db.execute(&q).await.unwrap();
    // Not retried, so that each fault ends its command (the retry has tests of its own).
    let venues = anonymise_venue(1, "3 years", "")
        + "\n[apply]\nbatch_size = 5\n[schedule]\nretry_for = \"0 seconds\"\n";
    let svc = db.service(&venues).await;
    let venue = svc.config.venue(1).unwrap().clone();
    let Some(Selection::Created { report_id, .. }) =
        run_venue_cycle(&svc, &venue, t("2026-06-15 12:00:00"), false)
            .await
            .unwrap()
            .selection
    else {
        panic!()
    };
    crate::common::operator_approves(&svc.db, report_id, t("2026-06-15 12:00:00")).await;
    let config = db.write_config(&venues);
    let server = match db.backend() {
        retentiond::db::Backend::Postgres => "127.0.0.1:5432",
        _ => "127.0.0.1:3306",
    };
    let proxy = Proxy::start(server.parse().unwrap()).await;
    let via_proxy = db.url_for_process("victim", Some(proxy.addr)).await;

    let run = |url: String| {
        Command::new(env!("CARGO_BIN_EXE_retentiond"))
            .arg("--config")
            .arg(&config)
            .args(["cycle", "--venue", "1", "--at", "2026-06-16T12:00:00Z"])
            .env("RUST_LOG", "error")
            .env("RETENTIOND__DATABASE__URL", url)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let wait_for_progress = |above: i64| {
        let db = &db;
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            while processed(db, report_id).await <= above {
                assert!(Instant::now() < deadline, "no progress");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };

    // 1. The server becomes unreachable in the middle of the apply.
    let child = run(via_proxy.clone());
    wait_for_progress(0).await;
    proxy.cut();
    let unreachable = child.wait_with_output().unwrap();
    let after_cut = processed(&db, report_id).await;
    proxy.restore().await;

    // 2. Its connections are killed by the server in the middle of the apply.
    let child = run(via_proxy.clone());
    wait_for_progress(after_cut).await;
    db.kill_sessions_of("victim").await;
    let terminated = child.wait_with_output().unwrap();
    let after_kill = processed(&db, report_id).await;

    // 3. The next cycle finishes the work.
    let finished = run(via_proxy).wait_with_output().unwrap();

    let stderr = |o: &Output| String::from_utf8_lossy(&o.stderr).into_owned();
    eprintln!("fault proof database {:?}: cut at {after_cut}/{N}, terminated at {after_kill}/{N}, then finished", db.backend());
    assert_eq!(
        unreachable.status.code(),
        Some(1),
        "{}",
        stderr(&unreachable)
    );
    assert!(
        stderr(&unreachable).contains("cycle(s) failed"),
        "{}",
        stderr(&unreachable)
    );
    assert_eq!(terminated.status.code(), Some(1), "{}", stderr(&terminated));
    assert!(after_cut < N && after_kill < N, "both faults hit mid-apply");
    assert!(finished.status.success(), "{}", stderr(&finished));
    assert_eq!(processed(&db, report_id).await, N);
    let rows = db
        .db
        .fetch_all(&Query::new(
            "SELECT id, email, first_name, last_name, postcode FROM customers ORDER BY id",
        ))
        .await
        .unwrap();
    assert_eq!(rows.len() as i64, N);
    for row in rows {
        let id = row.i64(0).unwrap();
        assert_eq!(
            row.text(1).unwrap(),
            keyed_hash(HASH_KEY.as_bytes(), &format!("bulk{id}@example.org")),
            "customer {id} hashed exactly once"
        );
        assert_eq!(row.opt_text(2).unwrap(), None);
        assert_eq!(row.text(3).unwrap(), "gone");
        assert_eq!(row.text(4).unwrap(), "LS1 ");
    }
}

crate::on_server_backends!(
    server_outage_mid_apply_fails_clearly_changes_nothing_half_way_and_resumes
);
