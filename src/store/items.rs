//! `retention_report_items`: each report's customers, their outcome when applied and whether
//! an approver kept them out. (Its other statements are still in `reports`, `review`,
//! `selection` and `apply`.)

use crate::db::{Db, Query, Tx};
use crate::policy::Outcome;
use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeMap;

/// What was done to one customer id, and when.
#[derive(Debug, Clone, Serialize)]
pub struct CustomerOutcome {
    pub report_id: i64,
    pub customer_id: i64,
    pub outcome: String,
    pub at: DateTime<Utc>,
}

/// Every processed customer of the venue's reports (or all), by report then id.
pub async fn customer_outcomes(db: &Db, venue_id: Option<i64>) -> Result<Vec<CustomerOutcome>> {
    let mut q = Query::new(
        "SELECT i.report_id, i.customer_id, i.outcome, i.processed_at FROM retention_report_items i \
         JOIN retention_reports r ON r.id = i.report_id WHERE i.outcome IS NOT NULL",
    );
    if let Some(v) = venue_id {
        q.push(" AND r.venue_id = ").bind(v);
    }
    q.push(" ORDER BY i.report_id, i.customer_id");
    db.fetch_all(&q)
        .await?
        .iter()
        .map(|r| {
            Ok(CustomerOutcome {
                report_id: r.named_i64("report_id")?,
                customer_id: r.named_i64("customer_id")?,
                outcome: r.named_text("outcome")?,
                at: r.named_time("processed_at")?,
            })
        })
        .collect()
}

/// The one item of a request's report, with its outcome.
pub async fn insert_request_item(
    tx: &mut Tx<'_>,
    report_id: i64,
    customer_id: i64,
    outcome: Outcome,
    at: DateTime<Utc>,
) -> Result<()> {
    let q = Query::insert(
        "retention_report_items",
        &["report_id", "customer_id", "outcome", "processed_at"],
        vec![
            report_id.into(),
            customer_id.into(),
            outcome.as_str().into(),
            at.into(),
        ],
    );
    tx.execute(&q).await?;
    Ok(())
}

/// Outcome counts of a report's customers; `None` counts those not yet processed.
pub async fn outcome_counts(db: &Db, id: i64) -> Result<BTreeMap<Option<Outcome>, u64>> {
    let mut q =
        Query::new("SELECT outcome, COUNT(*) FROM retention_report_items WHERE report_id = ");
    q.bind(id).push(" GROUP BY outcome");
    let mut counts = BTreeMap::new();
    for row in db.fetch_all(&q).await? {
        let outcome = row
            .opt_text(0)?
            .map(|o| o.parse::<Outcome>().map_err(anyhow::Error::msg))
            .transpose()?;
        counts.insert(outcome, row.i64(1)? as u64);
    }
    Ok(counts)
}

/// [`outcome_counts`] and the customers a hold kept at apply, by hold, of a report, from one
/// grouped read of its items (the page of an applied report and its confirmation mail show both).
pub async fn outcome_and_held_counts(
    db: &Db,
    id: i64,
) -> Result<(BTreeMap<Option<Outcome>, u64>, Vec<(String, u64)>)> {
    let mut q = Query::new(
        "SELECT outcome, held_by, COUNT(*) AS customers FROM retention_report_items WHERE report_id = ",
    );
    q.bind(id)
        .push(" GROUP BY outcome, held_by ORDER BY outcome, held_by");
    let mut counts: BTreeMap<Option<Outcome>, u64> = BTreeMap::new();
    let mut held: BTreeMap<String, u64> = BTreeMap::new();
    for row in db.fetch_all(&q).await? {
        let outcome = row
            .named_opt_text("outcome")?
            .map(|o| o.parse::<Outcome>().map_err(anyhow::Error::msg))
            .transpose()?;
        let n = row.named_i64("customers")? as u64;
        *counts.entry(outcome).or_default() += n;
        if let Some(hold) = row.named_opt_text("held_by")? {
            *held.entry(hold).or_default() += n;
        }
    }
    Ok((counts, held.into_iter().collect()))
}

/// The id that ends a search window: the `window`-th customer of the report after `after_id`,
/// or `None` when fewer remain. A search reads at most that many customers per page (the
/// primary key's index finds the end), so its cost does not grow with the report.
pub async fn search_window_end(
    db: &Db,
    report_id: i64,
    after_id: i64,
    window: u32,
) -> Result<Option<i64>> {
    let mut q = Query::new("SELECT customer_id FROM retention_report_items WHERE report_id = ");
    q.bind(report_id)
        .push(" AND customer_id > ")
        .bind(after_id)
        .push(" ORDER BY customer_id LIMIT 1 OFFSET ")
        .bind(i64::from(window.max(1) - 1));
    Ok(match db.fetch_optional(&q).await? {
        Some(row) => Some(row.i64(0)?),
        None => None,
    })
}

/// How many of the report's customers have no outcome yet.
pub async fn unprocessed(db: &Db, report_id: i64) -> Result<u64> {
    let mut q = Query::new(
        "SELECT COUNT(*) FROM retention_report_items WHERE outcome IS NULL AND report_id = ",
    );
    q.bind(report_id);
    Ok(db.fetch_one(&q).await?.i64(0)? as u64)
}

/// The report's customers without an outcome yet, in id order.
pub async fn unprocessed_ids(tx: &mut Tx<'_>, report_id: i64) -> Result<Vec<i64>> {
    let mut q = Query::new("SELECT customer_id FROM retention_report_items WHERE report_id = ");
    q.bind(report_id)
        .push(" AND outcome IS NULL ORDER BY customer_id");
    tx.fetch_all(&q)
        .await?
        .iter()
        .map(|r| r.named_i64("customer_id"))
        .collect()
}

/// The next `size` customers without an outcome above `after_id` (keyset: each batch starts
/// where the last ended, so a large report is read once, not once per batch).
pub async fn next_unprocessed(
    tx: &mut Tx<'_>,
    report_id: i64,
    after_id: i64,
    size: u32,
) -> Result<Vec<i64>> {
    let mut q = Query::new("SELECT customer_id FROM retention_report_items WHERE report_id = ");
    q.bind(report_id)
        .push(" AND customer_id > ")
        .bind(after_id)
        .push(" AND outcome IS NULL ORDER BY customer_id LIMIT ")
        .bind(i64::from(size));
    let mut ids = tx.fetch_ids(&q).await?;
    ids.sort_unstable();
    Ok(ids)
}

/// The customers an approver kept out get the outcome `kept` (once the report starts applying,
/// so that no batch reads them); returns how many.
pub async fn record_kept(tx: &mut Tx<'_>, report_id: i64, at: DateTime<Utc>) -> Result<u64> {
    let mut q = Query::new("UPDATE retention_report_items SET outcome = 'kept', processed_at = ");
    q.bind(at)
        .push(" WHERE report_id = ")
        .bind(report_id)
        .push(" AND kept_at IS NOT NULL AND outcome IS NULL");
    tx.execute(&q).await
}

/// Records `outcome` for `ids` of the report, only those still without one (a second process
/// would update fewer rows); returns how many were updated.
pub async fn record_outcome(
    tx: &mut Tx<'_>,
    report_id: i64,
    outcome: Outcome,
    ids: &[i64],
    at: DateTime<Utc>,
) -> Result<u64> {
    let backend = tx.backend();
    let mut q = Query::new("UPDATE retention_report_items SET outcome = ");
    q.bind(outcome.as_str())
        .push(", processed_at = ")
        .bind(at)
        .push(" WHERE report_id = ")
        .bind(report_id)
        .push(" AND outcome IS NULL AND customer_id");
    backend.push_in_ids(&mut q, ids);
    tx.execute(&q).await
}

/// Names the hold that held `ids` of the report at apply.
pub async fn record_held_by(
    tx: &mut Tx<'_>,
    report_id: i64,
    hold: &str,
    ids: &[i64],
) -> Result<()> {
    let backend = tx.backend();
    let mut q = Query::new("UPDATE retention_report_items SET held_by = ");
    q.bind(hold)
        .push(" WHERE report_id = ")
        .bind(report_id)
        .push(" AND customer_id");
    backend.push_in_ids(&mut q, ids);
    tx.execute(&q).await?;
    Ok(())
}

/// The report's customers counted by outcome (`None`: not yet processed) and hold, in order.
pub async fn outcomes_by_hold(
    tx: &mut Tx<'_>,
    report_id: i64,
) -> Result<Vec<(Option<String>, Option<String>, i64)>> {
    let mut q = Query::new(
        "SELECT outcome, held_by, COUNT(*) AS customers FROM retention_report_items WHERE report_id = ",
    );
    q.bind(report_id)
        .push(" GROUP BY outcome, held_by ORDER BY outcome, held_by");
    tx.fetch_all(&q)
        .await?
        .iter()
        .map(|r| {
            Ok((
                r.named_opt_text("outcome")?,
                r.named_opt_text("held_by")?,
                r.named_i64("customers")?,
            ))
        })
        .collect()
}

/// Those of `ids` that are on the report.
pub async fn on_report(
    tx: &mut Tx<'_>,
    report_id: i64,
    ids: &[i64],
) -> Result<std::collections::HashSet<i64>> {
    let backend = tx.backend();
    let mut q = Query::new("SELECT customer_id FROM retention_report_items WHERE report_id = ");
    q.bind(report_id).push(" AND customer_id");
    backend.push_in_ids(&mut q, ids);
    tx.fetch_all(&q)
        .await?
        .iter()
        .map(|r| r.named_i64("customer_id"))
        .collect()
}

/// Keeps `ids` out of the report (`keep` is `Some((by, reason))`) or puts them back (`None`);
/// returns how many changed (those already so are left as they are).
pub async fn set_kept(
    tx: &mut Tx<'_>,
    report_id: i64,
    ids: &[i64],
    keep: Option<(&str, Option<&str>)>,
    at: DateTime<Utc>,
) -> Result<u64> {
    let backend = tx.backend();
    let mut q = Query::new("UPDATE retention_report_items SET ");
    match keep {
        Some((by, reason)) => {
            q.push("kept_by = ")
                .bind(by)
                .push(", kept_at = ")
                .bind(at)
                .push(", kept_reason = ")
                .bind(reason)
                .push(" WHERE kept_at IS NULL AND report_id = ");
        }
        None => {
            q.push("kept_by = NULL, kept_at = NULL, kept_reason = NULL WHERE kept_at IS NOT NULL AND report_id = ");
        }
    }
    q.bind(report_id).push(" AND customer_id");
    backend.push_in_ids(&mut q, ids);
    tx.execute(&q).await
}

/// Keep reasons are free text: erased once given before `before`; returns how many.
pub async fn forget_keep_reasons(db: &Db, before: DateTime<Utc>) -> Result<u64> {
    let mut q = Query::new("UPDATE retention_report_items SET kept_reason = NULL WHERE kept_at IS NOT NULL AND kept_reason IS NOT NULL AND kept_at <= ");
    q.bind(before);
    db.execute(&q).await
}

/// One erased customer as the ledger records it, for the journal.
pub struct Erased {
    pub report_id: i64,
    pub venue_id: i64,
    pub customer_id: i64,
    pub action: String,
    pub outcome: String,
    pub at: DateTime<Utc>,
}

/// Every customer the ledger records as deleted or anonymised (of one report, or all), in
/// report then id order.
pub async fn erased(db: &Db, report_id: Option<i64>) -> Result<Vec<Erased>> {
    let mut q = Query::new(
        "SELECT i.report_id, r.venue_id, i.customer_id, r.action, i.outcome, i.processed_at \
         FROM retention_report_items i JOIN retention_reports r ON r.id = i.report_id \
         WHERE i.outcome IN ('deleted', 'anonymised')",
    );
    if let Some(id) = report_id {
        q.push(" AND i.report_id = ").bind(id);
    }
    q.push(" ORDER BY i.report_id, i.customer_id");
    db.fetch_all(&q)
        .await?
        .iter()
        .map(|r| {
            Ok(Erased {
                report_id: r.named_i64("report_id")?,
                venue_id: r.named_i64("venue_id")?,
                customer_id: r.named_i64("customer_id")?,
                action: r.named_text("action")?,
                outcome: r.named_text("outcome")?,
                at: r.named_time("processed_at")?,
            })
        })
        .collect()
}

/// The outcome of every item of `report_ids`: (report, customer) -> outcome, if any.
pub async fn outcomes_of(
    db: &Db,
    report_ids: &[i64],
) -> Result<std::collections::HashMap<(i64, i64), Option<String>>> {
    let mut q = Query::new(
        "SELECT report_id, customer_id, outcome FROM retention_report_items WHERE report_id",
    );
    db.backend().push_in_ids(&mut q, report_ids);
    db.fetch_all(&q)
        .await?
        .iter()
        .map(|r| {
            Ok((
                (r.named_i64("report_id")?, r.named_i64("customer_id")?),
                r.named_opt_text("outcome")?,
            ))
        })
        .collect()
}
