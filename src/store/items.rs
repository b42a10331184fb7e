//! `retention_report_items`: each report's customers, their outcome when applied and whether
//! an approver kept them out. (Its other statements are still in `reports`, `review`,
//! `selection` and `apply`.)

use crate::db::{Db, Query};
use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::Serialize;

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
