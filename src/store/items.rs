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

/// The report's customers skipped at apply because a hold held them, by hold.
pub async fn held_counts(db: &Db, report_id: i64) -> Result<Vec<(String, u64)>> {
    let mut q = Query::new(
        "SELECT held_by, COUNT(*) FROM retention_report_items WHERE held_by IS NOT NULL AND report_id = ",
    );
    q.bind(report_id).push(" GROUP BY held_by ORDER BY held_by");
    db.fetch_all(&q)
        .await?
        .iter()
        .map(|r| Ok((r.text(0)?, r.i64(1)? as u64)))
        .collect()
}

/// The one item of a request's report, with its outcome.
pub async fn insert_request_item(
    tx: &mut Tx,
    report_id: i64,
    customer_id: i64,
    outcome: Outcome,
    at: DateTime<Utc>,
) -> Result<()> {
    let mut q = Query::new(
        "INSERT INTO retention_report_items (report_id, customer_id, outcome, processed_at) VALUES (",
    );
    q.bind(report_id)
        .push(", ")
        .bind(customer_id)
        .push(", ")
        .bind(outcome.as_str())
        .push(", ")
        .bind(at)
        .push(")");
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
