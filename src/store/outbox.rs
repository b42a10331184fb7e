//! `retention_outbox`: mail queued in the transaction of the change it reports, claimed by one
//! sender at a time (a lease), marked sent or given a later attempt.

use crate::db::{Db, Query, Row, Tx};
use crate::policy::MailKind;
use anyhow::Result;
use chrono::{DateTime, Duration, Utc};

/// A message to queue.
pub struct Outgoing<'a> {
    pub kind: MailKind,
    pub venue_id: i64,
    pub report_id: Option<i64>,
    pub recipient: &'a str,
    /// Alert text (never personal data).
    pub detail: Option<&'a str>,
}

/// A queued message, as a sender reads it.
#[derive(Debug, Clone)]
pub struct Queued {
    pub id: i64,
    /// The kind as stored; `None` when this build does not know it.
    pub kind: Option<MailKind>,
    pub venue_id: i64,
    pub report_id: Option<i64>,
    pub recipient: String,
    pub detail: Option<String>,
    /// Attempts so far.
    pub attempts: i64,
}

impl Queued {
    fn from_row(r: &Row) -> Result<Queued> {
        Ok(Queued {
            id: r.named_i64("id")?,
            kind: MailKind::parse(&r.named_text("kind")?),
            venue_id: r.named_i64("venue_id")?,
            report_id: r.named_opt_i64("report_id")?,
            recipient: r.named_text("recipient")?,
            detail: r.named_opt_text("detail")?,
            attempts: r.named_i64("attempts")?,
        })
    }
}

/// Queues `message` inside `tx`, so it exists exactly when the change it reports does.
pub async fn queue(tx: &mut Tx<'_>, message: &Outgoing<'_>, now: DateTime<Utc>) -> Result<()> {
    let q = Query::insert(
        "retention_outbox",
        &[
            "kind",
            "venue_id",
            "report_id",
            "recipient",
            "detail",
            "created_at",
            "next_attempt_at",
        ],
        vec![
            message.kind.as_str().into(),
            message.venue_id.into(),
            message.report_id.into(),
            message.recipient.into(),
            message.detail.into(),
            now.into(),
            now.into(),
        ],
    );
    tx.execute(&q).await?;
    Ok(())
}

/// Up to `limit` unsent messages due at `now` with ids above `after_id`, in id order.
pub async fn due(db: &Db, now: DateTime<Utc>, after_id: i64, limit: i64) -> Result<Vec<Queued>> {
    let mut q = Query::new("SELECT id, kind, venue_id, report_id, recipient, detail, attempts FROM retention_outbox WHERE sent_at IS NULL AND next_attempt_at <= ");
    q.bind(now)
        .push(" AND id > ")
        .bind(after_id)
        .push(" ORDER BY id LIMIT ")
        .bind(limit);
    db.fetch_all(&q)
        .await?
        .iter()
        .map(Queued::from_row)
        .collect()
}

/// Claims `message` for one send: its attempt counted and leased for `lease`; false when
/// another sender claimed it first.
pub async fn claim(db: &Db, message: &Queued, now: DateTime<Utc>, lease: Duration) -> Result<bool> {
    Ok(db.execute(&claim_query(message, now, lease)).await? == 1)
}

/// [`claim`] inside `tx`, committed with what else the send needs (an approval link's token).
pub async fn claim_in(
    tx: &mut Tx<'_>,
    message: &Queued,
    now: DateTime<Utc>,
    lease: Duration,
) -> Result<bool> {
    Ok(tx.execute(&claim_query(message, now, lease)).await? == 1)
}

fn claim_query(message: &Queued, now: DateTime<Utc>, lease: Duration) -> Query {
    let mut q = Query::new("UPDATE retention_outbox SET attempts = ");
    q.bind(message.attempts + 1)
        .push(", next_attempt_at = ")
        .bind(now + lease)
        .push(" WHERE id = ")
        .bind(message.id)
        .push(" AND sent_at IS NULL AND next_attempt_at <= ")
        .bind(now);
    q
}

/// A failed send (of a message this sender claimed): tried again at `retry_at`, with what went
/// wrong.
pub async fn retry_later(db: &Db, id: i64, retry_at: DateTime<Utc>, error: &str) -> Result<()> {
    let mut q = Query::new("UPDATE retention_outbox SET next_attempt_at = ");
    q.bind(retry_at)
        .push(", last_error = ")
        .bind(error)
        .push(" WHERE id = ")
        .bind(id);
    db.execute(&q).await?;
    Ok(())
}

/// Done with: sent, or (with `note`) no longer needed.
pub async fn mark_done(db: &Db, id: i64, now: DateTime<Utc>, note: Option<&str>) -> Result<()> {
    let mut q = Query::new("UPDATE retention_outbox SET sent_at = ");
    q.bind(now)
        .push(", last_error = ")
        .bind(note)
        .push(" WHERE id = ")
        .bind(id);
    db.execute(&q).await?;
    Ok(())
}

/// Messages not yet sent.
pub async fn unsent(db: &Db) -> Result<i64> {
    db.fetch_one(&Query::new(
        "SELECT COUNT(*) FROM retention_outbox WHERE sent_at IS NULL",
    ))
    .await?
    .i64(0)
}
