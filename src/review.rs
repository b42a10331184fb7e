//! The approver's review (SPEC 4): customers kept out of a pending report (who kept each, when
//! and why), and putting them back. Kept customers are never touched by the report, get the
//! outcome `kept` when it is applied, and are not selected again for `approval.keep_for`. Each
//! change of the kept list withdraws the approvals given for the list as it was.

use crate::approval::{decidable, lock_report, DecisionError};
use crate::audit::{self, Event, EventKind};
use crate::config::SchemaConfig;
use crate::db::{Db, Query};
use crate::reports::Report;
use anyhow::Result;
use chrono::{DateTime, Utc};

/// The most ids one request may name.
pub const MAX_IDS: usize = 100_000;

/// Why a keep or unkeep was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ReviewError {
    #[error("{0}")]
    BadIds(String),
    #[error("not on this report: {0}; nothing was changed")]
    NotOnReport(String),
    #[error(transparent)]
    NotDecidable(#[from] DecisionError),
}

/// Customer ids from a text box or form field: separated by commas, spaces or new lines (as
/// pasted from the CSV), duplicates dropped. A word that is not an id is named.
pub fn parse_ids(text: &str) -> Result<Vec<i64>, ReviewError> {
    let mut ids = Vec::new();
    for word in text
        .split(|c: char| c == ',' || c == ';' || c.is_whitespace())
        .filter(|w| !w.is_empty())
    {
        let id = word.parse::<i64>().map_err(|_| {
            let shown: String = word.chars().take(40).collect();
            ReviewError::BadIds(format!(
                "{shown:?} is not a customer id; nothing was changed"
            ))
        })?;
        ids.push(id);
        if ids.len() > MAX_IDS {
            return Err(ReviewError::BadIds(format!(
                "at most {MAX_IDS} ids at once; nothing was changed"
            )));
        }
    }
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        return Err(ReviewError::BadIds(
            "no customer id given; nothing was changed".into(),
        ));
    }
    Ok(ids)
}

/// What a keep or unkeep changed.
#[derive(Debug, PartialEq)]
pub struct Changed {
    /// Customers whose kept state changed (ids already in that state are not counted).
    pub changed: u64,
    /// Customers kept out of the report now.
    pub kept: i64,
    /// Approvals withdrawn because the list they were given for changed.
    pub withdrawn: i64,
}

/// Keeps `ids` out of pending report `report_id` (`keep = true`) or puts them back.
pub async fn set_kept(
    db: &Db,
    report_id: i64,
    ids: &[i64],
    keep: bool,
    by: &str,
    reason: Option<&str>,
    at: DateTime<Utc>,
) -> Result<Result<Changed, ReviewError>> {
    let reason = reason
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(|r| r.chars().take(2000).collect::<String>());
    let mut tx = db.begin().await?;
    let backend = tx.backend();
    let report = lock_report(&mut tx, report_id).await?;
    if let Err(e) = decidable(&report, at) {
        return Ok(Err(e.into()));
    }
    let mut on_report =
        Query::new("SELECT customer_id FROM retention_report_items WHERE report_id = ");
    on_report.bind(report_id).push(" AND customer_id");
    backend.push_in_ids(&mut on_report, ids);
    let found: std::collections::HashSet<i64> = tx
        .fetch_all(&on_report)
        .await?
        .iter()
        .map(|r| r.i64(0))
        .collect::<Result<_>>()?;
    let missing: Vec<i64> = ids
        .iter()
        .copied()
        .filter(|id| !found.contains(id))
        .collect();
    if !missing.is_empty() {
        let mut shown: Vec<String> = missing.iter().take(10).map(i64::to_string).collect();
        if missing.len() > 10 {
            shown.push(format!("and {} more", missing.len() - 10));
        }
        return Ok(Err(ReviewError::NotOnReport(shown.join(", "))));
    }
    let mut update = Query::new("UPDATE retention_report_items SET ");
    if keep {
        update
            .push("kept_by = ")
            .bind(by)
            .push(", kept_at = ")
            .bind(at)
            .push(", kept_reason = ")
            .bind(reason.as_deref())
            .push(" WHERE kept_at IS NULL AND report_id = ");
    } else {
        update.push("kept_by = NULL, kept_at = NULL, kept_reason = NULL WHERE kept_at IS NOT NULL AND report_id = ");
    }
    update.bind(report_id).push(" AND customer_id");
    backend.push_in_ids(&mut update, ids);
    let changed = tx.execute(&update).await?;
    let mut withdrawn = 0;
    let mut kept = report.kept_count;
    if changed > 0 {
        let mut q = Query::new(
            "SELECT COUNT(DISTINCT lower(decided_by)) FROM retention_decisions WHERE decision = 'approve' AND report_id = ",
        );
        q.bind(report_id)
            .push(" AND kept_version = ")
            .bind(report.kept_version);
        withdrawn = tx.fetch_one(&q).await?.i64(0)?;
        kept += if keep {
            changed as i64
        } else {
            -(changed as i64)
        };
        let mut q = Query::new("UPDATE retention_reports SET kept_count = ");
        q.bind(kept)
            .push(", kept_version = kept_version + 1 WHERE id = ")
            .bind(report_id);
        tx.execute(&q).await?;
        let verb = if keep { "kept out of" } else { "put back on" };
        let mut detail = format!("{changed} customers {verb} the report; {kept} kept out");
        if withdrawn > 0 {
            detail.push_str(&format!(
                "; {withdrawn} earlier approval(s) no longer count"
            ));
        }
        if keep && reason.is_some() {
            detail.push_str("; reason given, kept with the report");
        }
        audit::record(
            &mut tx,
            &Event {
                at,
                venue_id: report.venue_id,
                report_id: Some(report_id),
                event: if keep {
                    EventKind::Kept
                } else {
                    EventKind::Unkept
                },
                actor: by.to_string(),
                detail,
            },
        )
        .await?;
    }
    tx.commit().await?;
    Ok(Ok(Changed {
        changed,
        kept,
        withdrawn,
    }))
}

/// A customer kept out of a report, as shown to approvers.
#[derive(Debug, Clone)]
pub struct KeptCustomer {
    pub id: i64,
    pub name: String,
    pub kept_by: String,
    pub kept_at: DateTime<Utc>,
    pub reason: Option<String>,
}

/// The customers kept out of a report, in id order (at most `limit`).
pub async fn kept_list(
    db: &Db,
    schema: &SchemaConfig,
    report: &Report,
    limit: u32,
) -> Result<Vec<KeptCustomer>> {
    let name = crate::reports::name_expression(db.backend(), schema, "c");
    let mut q = Query::new(&format!(
        "SELECT i.customer_id, {name}, i.kept_by, i.kept_at, i.kept_reason FROM retention_report_items i \
         LEFT JOIN {} c ON c.{} = i.customer_id WHERE i.report_id = ",
        schema.customers.q(),
        schema.customer_id.q()
    ));
    q.bind(report.id)
        .push(" AND i.kept_at IS NOT NULL ORDER BY i.customer_id LIMIT ")
        .bind(i64::from(limit));
    db.fetch_all(&q)
        .await?
        .iter()
        .map(|r| {
            Ok(KeptCustomer {
                id: r.i64(0)?,
                name: r.opt_text(1)?.unwrap_or_default().trim().to_string(),
                kept_by: r.text(2)?,
                kept_at: r.time(3)?,
                reason: r.opt_text(4)?,
            })
        })
        .collect()
}

/// Keep reasons are free text: erased once `kept_for` has passed since they were given.
pub async fn forget_keep_reasons(db: &Db, before: DateTime<Utc>) -> Result<u64> {
    let mut q = Query::new("UPDATE retention_report_items SET kept_reason = NULL WHERE kept_at IS NOT NULL AND kept_reason IS NOT NULL AND kept_at <= ");
    q.bind(before);
    db.execute(&q).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_read_from_commas_spaces_and_lines() {
        assert_eq!(parse_ids("3, 1\n2 2\t7;9").unwrap(), vec![1, 2, 3, 7, 9]);
        assert_eq!(
            parse_ids("1, two, 3").unwrap_err(),
            ReviewError::BadIds("\"two\" is not a customer id; nothing was changed".into())
        );
        assert!(matches!(parse_ids(" , \n"), Err(ReviewError::BadIds(_))));
        let many: String = (0..=MAX_IDS).map(|i| format!("{i},")).collect();
        assert!(matches!(parse_ids(&many), Err(ReviewError::BadIds(m)) if m.contains("at most")));
    }
}
