//! `retention_replays`: each customer `replay` erased again from a restored database, by
//! report, with the time of the last replay (another restore updates it).

use crate::db::{Db, Query, Tx};
use crate::policy::Action;
use anyhow::Result;
use chrono::{DateTime, Utc};

/// Records `ids` of `report_id` as replayed at `at`.
pub async fn record(
    tx: &mut Tx<'_>,
    venue_id: i64,
    action: Action,
    report_id: i64,
    ids: &[i64],
    at: DateTime<Utc>,
) -> Result<()> {
    let backend = tx.backend();
    let mut q = Query::new("INSERT INTO retention_replays (report_id, customer_id, venue_id, action, replayed_at) SELECT ");
    q.bind(report_id)
        .push(", ids.id, ")
        .bind(venue_id)
        .push(", ")
        .bind(action.as_str())
        .push(", ")
        .bind(at)
        .push(" FROM ");
    backend.push_ids_source(&mut q, ids);
    q.push(" WHERE true");
    q.push(&backend.upsert(&["report_id", "customer_id"], "replayed_at"));
    tx.execute(&q).await?;
    Ok(())
}

/// (report, customer, when) of every replay of the venue's reports (or all), in order.
pub async fn list(db: &Db, venue_id: Option<i64>) -> Result<Vec<(i64, i64, DateTime<Utc>)>> {
    let mut q = Query::new("SELECT report_id, customer_id, replayed_at FROM retention_replays");
    if let Some(v) = venue_id {
        q.push(" WHERE venue_id = ").bind(v);
    }
    q.push(" ORDER BY report_id, customer_id");
    db.fetch_all(&q)
        .await?
        .iter()
        .map(|r| {
            Ok((
                r.named_i64("report_id")?,
                r.named_i64("customer_id")?,
                r.named_time("replayed_at")?,
            ))
        })
        .collect()
}
