//! The proof-of-disposal ledger: report events (who decided what, when) in `retention_audit` and
//! `retention_decisions`, and each customer id's outcome in `retention_report_items`. It holds
//! ids, counts and approvers' addresses, never a customer's personal data.

use crate::db::{Db, Query, Tx};
use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::Serialize;

/// What happened to a report (or, for `Brake` and `Replayed`, to a venue).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    ReportCreated,
    Brake,
    /// One approval of several required.
    Approval,
    Approved,
    Rejected,
    Cancelled,
    Kept,
    Unkept,
    Expired,
    ApplyStarted,
    Applied,
    Replayed,
    /// A customer erased on an individual request (SPEC 13), by whom.
    ErasedOnRequest,
    /// What retentiond would remove of a customer was exported for them (SPEC 13), by whom.
    Exported,
}

impl EventKind {
    pub const ALL: [EventKind; 14] = [
        EventKind::ReportCreated,
        EventKind::Brake,
        EventKind::Approval,
        EventKind::Approved,
        EventKind::Rejected,
        EventKind::Cancelled,
        EventKind::Kept,
        EventKind::Unkept,
        EventKind::Expired,
        EventKind::ApplyStarted,
        EventKind::Applied,
        EventKind::Replayed,
        EventKind::ErasedOnRequest,
        EventKind::Exported,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::ReportCreated => "report_created",
            EventKind::Brake => "brake",
            EventKind::Approval => "approval",
            EventKind::Approved => "approved",
            EventKind::Rejected => "rejected",
            EventKind::Cancelled => "cancelled",
            EventKind::Kept => "kept",
            EventKind::Unkept => "unkept",
            EventKind::Expired => "expired",
            EventKind::ApplyStarted => "apply_started",
            EventKind::Applied => "applied",
            EventKind::Replayed => "replayed",
            EventKind::ErasedOnRequest => "erased_on_request",
            EventKind::Exported => "exported",
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for EventKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown ledger event {s:?}"))
    }
}

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
