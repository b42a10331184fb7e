//! `retention_audit`: the ledger's report-level events (who decided what, when), written in the
//! transaction of the change each describes. Ids, counts and approvers' addresses only.

use crate::db::{Db, Query, Tx};
use crate::policy::EventKind;
use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::Serialize;

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
pub async fn record(tx: &mut Tx<'_>, event: &Event) -> Result<()> {
    let q = Query::insert(
        "retention_audit",
        &["at", "venue_id", "report_id", "event", "actor", "detail"],
        vec![
            event.at.into(),
            event.venue_id.into(),
            event.report_id.into(),
            event.event.as_str().into(),
            event.actor.as_str().into(),
            event.detail.as_str().into(),
        ],
    );
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
                at: r.named_time("at")?,
                venue_id: r.named_i64("venue_id")?,
                report_id: r.named_opt_i64("report_id")?,
                event: r.named_text("event")?.parse().map_err(anyhow::Error::msg)?,
                actor: r.named_text("actor")?,
                detail: r.named_text("detail")?,
            })
        })
        .collect()
}
