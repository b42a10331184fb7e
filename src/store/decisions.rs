//! `retention_decisions`: one row per decision taken on a report (approve, reject, cancel), by
//! whom and through what, for the kept list as it was then (`kept_version`): an approval counts
//! only for the list it was given for.

use crate::db::{Db, Query, Tx};
use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::Serialize;

/// One decision to record.
pub struct NewDecision<'a> {
    pub report_id: i64,
    /// "approve", "reject" or "cancel".
    pub decision: &'a str,
    pub decided_by: &'a str,
    /// "link" (an approver) or "operator".
    pub via: &'a str,
    pub at: DateTime<Utc>,
    pub kept_version: i64,
}

pub async fn insert(tx: &mut Tx<'_>, d: &NewDecision<'_>) -> Result<()> {
    // The reason stays with the report (or the kept row), never here.
    let q = Query::insert(
        "retention_decisions",
        &[
            "report_id",
            "decision",
            "decided_by",
            "via",
            "decided_at",
            "kept_version",
        ],
        vec![
            d.report_id.into(),
            d.decision.into(),
            d.decided_by.into(),
            d.via.into(),
            d.at.into(),
            d.kept_version.into(),
        ],
    );
    tx.execute(&q).await?;
    Ok(())
}

/// Whether `approver` (compared without case) approved `report_id`'s kept list `kept_version`.
pub async fn approved_by(
    tx: &mut Tx<'_>,
    report_id: i64,
    approver: &str,
    kept_version: i64,
) -> Result<bool> {
    let mut q = Query::new("SELECT COUNT(*) FROM retention_decisions WHERE report_id = ");
    q.bind(report_id)
        .push(" AND decision = 'approve' AND lower(decided_by) = ")
        .bind(approver.trim().to_lowercase())
        .push(" AND kept_version = ")
        .bind(kept_version);
    Ok(tx.fetch_one(&q).await?.i64(0)? > 0)
}

/// Distinct approvers (compared without case) who approved `report_id`'s kept list
/// `kept_version`: all of them (`None`), or those among `approvers`.
pub async fn approvals(
    tx: &mut Tx<'_>,
    report_id: i64,
    kept_version: i64,
    approvers: Option<&[String]>,
) -> Result<i64> {
    let mut q = Query::new(
        "SELECT COUNT(DISTINCT lower(decided_by)) FROM retention_decisions WHERE report_id = ",
    );
    q.bind(report_id)
        .push(" AND decision = 'approve' AND kept_version = ")
        .bind(kept_version);
    if let Some(approvers) = approvers {
        if approvers.is_empty() {
            return Ok(0);
        }
        q.push(" AND lower(decided_by) IN (");
        for (i, approver) in approvers.iter().enumerate() {
            if i > 0 {
                q.push(", ");
            }
            q.bind(approver.trim().to_lowercase());
        }
        q.push(")");
    }
    tx.fetch_one(&q).await?.i64(0)
}

/// The approvers (lowercase, in order) who approved the report's kept list as it is now.
pub async fn approvers_of_kept_list(db: &Db, report_id: i64) -> Result<Vec<String>> {
    let mut q = Query::new(
        "SELECT DISTINCT lower(d.decided_by) AS approver FROM retention_decisions d JOIN retention_reports r ON r.id = d.report_id \
         WHERE d.report_id = ",
    );
    q.bind(report_id)
        .push(" AND d.decision = 'approve' AND d.kept_version = r.kept_version ORDER BY 1");
    db.fetch_all(&q)
        .await?
        .iter()
        .map(|r| r.named_text("approver"))
        .collect()
}

/// The latest kept list `approver` approved on the report, if any.
pub async fn latest_approved_version(
    db: &Db,
    report_id: i64,
    approver: &str,
) -> Result<Option<i64>> {
    let mut q = Query::new(
        "SELECT MAX(kept_version) FROM retention_decisions WHERE decision = 'approve' AND report_id = ",
    );
    q.bind(report_id)
        .push(" AND lower(decided_by) = ")
        .bind(approver.trim().to_lowercase());
    db.fetch_one(&q).await?.opt_i64(0)
}

/// One decision on a report, for the decided page.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub decision: String,
    pub decided_by: String,
    pub via: String,
    pub decided_at: DateTime<Utc>,
}

/// The decisions on a report, oldest first.
pub async fn decisions(db: &Db, report_id: i64) -> Result<Vec<Decision>> {
    let mut q = Query::new(
        "SELECT decision, decided_by, via, decided_at FROM retention_decisions WHERE report_id = ",
    );
    q.bind(report_id).push(" ORDER BY id");
    db.fetch_all(&q)
        .await?
        .iter()
        .map(|r| {
            Ok(Decision {
                decision: r.text(0)?,
                decided_by: r.text(1)?,
                via: r.text(2)?,
                decided_at: r.time(3)?,
            })
        })
        .collect()
}
