//! The plain-SQL baselines: the same work as retentiond set-based, per dialect, with their plans.

use super::*;

/// The plan of `q` as the backend explains it, one line per step.
pub(crate) async fn explain(db: &Db, q: &Query) -> String {
    let mut explained = Query::new(explain_prefix(db.backend()));
    explained.push(q.sql());
    // The same values, bound again in the same order.
    for value in q.values() {
        explained.param(value.clone());
    }
    plan_lines(&db.fetch_all(&explained).await.unwrap())
}

/// How the backend asks for a plan.
pub(crate) fn explain_prefix(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "EXPLAIN QUERY PLAN ",
        Backend::Postgres | Backend::Mysql => "EXPLAIN ",
    }
}

/// A plan's rows, one line each, their cells joined by ` | `.
pub(crate) fn plan_lines(rows: &[retentiond::db::Row]) -> String {
    rows.iter()
        .map(|row| {
            row.0
                .iter()
                .filter_map(|v| v.to_text())
                .collect::<Vec<_>>()
                .join(" | ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The plans of the baseline's statements (issue 13: a baseline is the fastest plain SQL for the
/// work, and its plan says whether it is), each under its statement, explained in a transaction
/// with the baseline's own `SET LOCAL`s and rolled back.
pub(crate) async fn explain_all(db: &Db, statements: &[String]) -> String {
    let prefix = explain_prefix(db.backend());
    let mut tx = db.begin().await.unwrap();
    let mut plans = Vec::new();
    for sql in statements {
        if sql.starts_with("SET") {
            tx.execute(&Query::new(sql)).await.unwrap();
            plans.push(sql.clone());
        } else if !sql.starts_with("INSERT") {
            let rows = tx
                .fetch_all(&Query::new(&format!("{prefix}{sql}")))
                .await
                .unwrap();
            plans.push(format!("{sql}\n{}", plan_lines(&rows)));
        }
    }
    drop(tx);
    plans.join("\n\n")
}

/// PostgreSQL's planner takes the set-based baselines' few thousand customers for a large share
/// of the orders and hash-joins a scan of the whole table (seen with `EXPLAIN` at 300,000
/// customers: `Seq Scan on orders`, JIT compiled); steered like this it probes the
/// `orders(customer_id, placed_at)` and `order_addresses(order_id)` indexes, as the batches do.
pub(crate) const POSTGRES_BASELINE_SETTINGS: [&str; 3] = [
    "SET LOCAL enable_hashjoin = off",
    "SET LOCAL enable_mergejoin = off",
    "SET LOCAL jit = off",
];

/// The settings a baseline's transaction starts with on `backend` (see above).
pub(crate) fn baseline_settings(backend: Backend) -> Vec<String> {
    match backend {
        Backend::Postgres => POSTGRES_BASELINE_SETTINGS
            .iter()
            .map(|s| s.to_string())
            .collect(),
        Backend::Sqlite | Backend::Mysql => Vec::new(),
    }
}

/// The benchmark's `secrets.hash_key`.
pub(crate) const BENCH_HASH_KEY: &str = "benchmark-hash-key-0123456789-abcdef";

/// The keyed hash of `column` in a baseline: the very SQL apply hashes with in its UPDATEs (the
/// same work).
pub(crate) fn baseline_hash(backend: Backend, column: &str) -> String {
    backend.keyed_hash_sql(BENCH_HASH_KEY.as_bytes(), column, &mut |v| format!("'{v}'"))
}

/// The reference strategies of the order addresses, set-based.
pub(crate) fn scrub_addresses_set(backend: Backend) -> String {
    format!(
        "first_name = NULL, last_name = NULL, address_1 = NULL, postcode = substr(postcode, 1, 4), \
         email = {}, phone = NULL",
        baseline_hash(backend, "email")
    )
}

/// Runs `statements` in one transaction and commits; returns the seconds it took, including
/// what apply does to the files once a report is applied (SPEC 3: SQLite's WAL checkpointed and
/// truncated, PostgreSQL's touched tables vacuumed), as apply's time includes its own.
pub(crate) async fn timed_committed(db: &Db, statements: &[String]) -> f64 {
    db.checkpoint_wal().await.unwrap();
    let started = Instant::now();
    let mut tx = db.begin().await.unwrap();
    for sql in statements {
        tx.execute(&Query::new(sql)).await.unwrap();
    }
    tx.commit().await.unwrap();
    let touched: Vec<retentiond::db::Ident> =
        ["customers", "orders", "order_addresses", "customer_notes"]
            .iter()
            .map(|t| retentiond::db::Ident::new(t).unwrap())
            .collect();
    // As apply in this benchmark: the WAL truncated on SQLite; no VACUUM on PostgreSQL (one
    // VACUUM of the whole tables, the same on both sides, drowned the batches' cost).
    db.scrub_files(&touched.iter().collect::<Vec<_>>(), false)
        .await
        .unwrap();
    started.elapsed().as_secs_f64()
}

/// Seconds `count` takes on a connection of its own, opened before the clock starts and closed
/// after it stops.
pub(crate) async fn on_fresh_connection(url: &str, count: impl AsyncFnOnce(&Db)) -> f64 {
    let fresh = Db::connect(url).await.unwrap();
    let started = Instant::now();
    count(&fresh).await;
    let seconds = started.elapsed().as_secs_f64();
    fresh.close().await;
    seconds
}

/// How far the server's write-ahead log (PostgreSQL's WAL, InnoDB's redo log) has run, in bytes;
/// none on SQLite, whose log is truncated as it goes. What a stage wrote to it is what sizes
/// the log a night of that work needs (`innodb_log_file_size`, `max_wal_size`).
pub(crate) async fn log_position(db: &Db) -> Option<i64> {
    let sql = match db.backend() {
        Backend::Sqlite => return None,
        Backend::Postgres => "SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint",
        Backend::Mysql => return Some(innodb_status(db, "INNODB_LSN_CURRENT").await.unwrap()),
    };
    Some(
        db.fetch_one(&Query::new(sql))
            .await
            .unwrap()
            .i64(0)
            .unwrap(),
    )
}

/// One of InnoDB's counters (`SHOW GLOBAL STATUS`), by its name in `information_schema`.
async fn innodb_status(db: &Db, name: &str) -> anyhow::Result<i64> {
    let mut q = Query::new(
        "SELECT CAST(VARIABLE_VALUE AS SIGNED) FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = ",
    );
    q.bind(name.to_string());
    db.fetch_one(&q).await?.i64(0)
}

/// Waits until the server has written out what earlier stages left in memory, so that a timed
/// stage does not pay for the data generated or the steps run just before it: as a nightly run
/// meets a server quiet since the day's last writes. PostgreSQL: a `CHECKPOINT`. InnoDB: its
/// dirty pages flushed (`innodb_max_dirty_pages_pct` at 0 until they are, then put back) and
/// the undo of deleted rows purged. SQLite's file is copied to disk and its log checkpointed
/// before each stage already. Without the privilege it needs, it says so once a call and goes on.
pub(crate) async fn settle(db: &Db) {
    match db.backend() {
        Backend::Sqlite => {}
        Backend::Postgres => {
            if let Err(e) = db.execute(&Query::new("CHECKPOINT")).await {
                eprintln!("cannot settle the server before a timed stage: {e:#}");
            }
        }
        Backend::Mysql => {
            let old = db
                .fetch_one(&Query::new(
                    "SELECT CAST(@@GLOBAL.innodb_max_dirty_pages_pct AS CHAR)",
                ))
                .await
                .unwrap()
                .text(0)
                .unwrap();
            if let Err(e) = db
                .execute(&Query::new("SET GLOBAL innodb_max_dirty_pages_pct = 0"))
                .await
            {
                eprintln!("cannot settle the server before a timed stage: {e:#}");
                return;
            }
            let started = Instant::now();
            let waited: anyhow::Result<()> = async {
                loop {
                    let dirty = innodb_status(db, "INNODB_BUFFER_POOL_PAGES_DIRTY").await?;
                    let unpurged = innodb_status(db, "INNODB_HISTORY_LIST_LENGTH").await?;
                    if dirty < 100 && unpurged < 100 {
                        return Ok(());
                    }
                    if started.elapsed() > std::time::Duration::from_secs(120) {
                        anyhow::bail!("not settled in 120 s: {dirty} dirty pages, {unpurged} undo logs unpurged");
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
            .await;
            if let Err(e) = waited {
                eprintln!("the server before a timed stage: {e:#}");
            }
            // Put back whatever happened while waiting.
            db.execute(&Query::new(&format!(
                "SET GLOBAL innodb_max_dirty_pages_pct = {}",
                old.parse::<f64>().unwrap()
            )))
            .await
            .unwrap();
        }
    }
}
