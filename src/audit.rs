//! The proof-of-disposal ledger: report events (who decided what, when) in `retention_audit` and
//! `retention_decisions`, and each customer id's outcome in `retention_report_items`. It holds
//! ids, counts and approvers' addresses, never a customer's personal data.

use crate::db::{Db, Query, Tx};
use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::Serialize;

pub use crate::policy::EventKind;

/// One report-level event.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub at: DateTime<Utc>,
    pub venue_id: i64,
    pub report_id: Option<i64>,
    pub event: EventKind,
    pub actor: String,
    pub detail: String,
}

/// Records an event inside the transaction of the change it describes.
pub async fn record(tx: &mut Tx, event: &Event) -> Result<()> {
    let mut q = Query::new(
        "INSERT INTO retention_audit (at, venue_id, report_id, event, actor, detail) VALUES (",
    );
    q.bind(event.at)
        .push(", ")
        .bind(event.venue_id)
        .push(", ")
        .bind(event.report_id)
        .push(", ")
        .bind(event.event.as_str())
        .push(", ")
        .bind(event.actor.as_str())
        .push(", ")
        .bind(event.detail.as_str())
        .push(")");
    tx.execute(&q).await?;
    Ok(())
}

/// The events of one venue (or all), oldest first.
pub async fn events(db: &Db, venue_id: Option<i64>) -> Result<Vec<Event>> {
    let mut q =
        Query::new("SELECT at, venue_id, report_id, event, actor, detail FROM retention_audit");
    if let Some(v) = venue_id {
        q.push(" WHERE venue_id = ").bind(v);
    }
    q.push(" ORDER BY id");
    db.fetch_all(&q)
        .await?
        .iter()
        .map(|r| {
            Ok(Event {
                at: r.time(0)?,
                venue_id: r.i64(1)?,
                report_id: r.opt_i64(2)?,
                event: r.text(3)?.parse().map_err(anyhow::Error::msg)?,
                actor: r.text(4)?,
                detail: r.text(5)?,
            })
        })
        .collect()
}

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
                report_id: r.i64(0)?,
                customer_id: r.i64(1)?,
                outcome: r.text(2)?,
                at: r.time(3)?,
            })
        })
        .collect()
}
