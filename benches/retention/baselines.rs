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
