//! `retention_tokens`: one row per approval link, holding only the SHA-256 hash of its token,
//! the approver it was sent to and when it expires.

use crate::db::{Db, Query, Row, Tx};
use crate::store::reports::Report;
use anyhow::Result;
use chrono::{DateTime, Utc};

/// Stores the hash of a new token for `approver` of `report`, valid as long as its links.
pub async fn insert(
    tx: &mut Tx<'_>,
    token_hash: &str,
    report: &Report,
    approver: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    let q = Query::insert(
        "retention_tokens",
        &[
            "token_hash",
            "report_id",
            "approver",
            "created_at",
            "expires_at",
        ],
        vec![
            token_hash.into(),
            report.id.into(),
            approver.into(),
            now.into(),
            report.expires_at.into(),
        ],
    );
    tx.execute(&q).await?;
    Ok(())
}

/// Forgets the token whose hash is `token_hash`.
pub async fn delete(db: &Db, token_hash: &str) -> Result<()> {
    let mut q = Query::new("DELETE FROM retention_tokens WHERE token_hash = ");
    q.bind(token_hash);
    db.execute(&q).await?;
    Ok(())
}

/// A stored token with its report and the distinct approvers who approved the report's kept
/// list as it is now.
pub struct Found {
    /// As stored, for the caller's constant-time comparison.
    pub token_hash: String,
    pub approver: String,
    pub expires_at: DateTime<Utc>,
    pub report: Report,
    pub approvals: i64,
}

/// The token stored with hash `token_hash`, in one query.
pub async fn find(db: &Db, token_hash: &str) -> Result<Option<Found>> {
    let mut q = Query::new(&format!(
        "SELECT {}, t.token_hash, t.approver, t.expires_at AS token_expires_at, \
         (SELECT COUNT(DISTINCT lower(d.decided_by)) FROM retention_decisions d WHERE d.report_id = r.id AND d.decision = 'approve' AND d.kept_version = r.kept_version) AS approvals \
         FROM retention_tokens t JOIN retention_reports r ON r.id = t.report_id WHERE t.token_hash = ",
        Report::columns_of("r")
    ));
    q.bind(token_hash);
    db.fetch_optional(&q).await?.as_ref().map(found).transpose()
}

fn found(r: &Row) -> Result<Found> {
    Ok(Found {
        token_hash: r.named_text("token_hash")?,
        approver: r.named_text("approver")?,
        expires_at: r.named_time("token_expires_at")?,
        report: Report::from_row(r)?,
        approvals: r.named_i64("approvals")?,
    })
}
