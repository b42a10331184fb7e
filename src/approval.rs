//! Approval links (SPEC 4): tokens of 256 bits from the OS random source, sent once in an email,
//! stored only as a SHA-256 hash, checked in constant time, and the decisions taken through them.

use crate::audit::{self, Event, EventKind};
use crate::db::{Db, Query, Tx};
use crate::policy::ReportState;
use crate::reports::{self, Report};
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Length of a token as it appears in a link: 32 random bytes, lowercase hex.
pub const TOKEN_LEN: usize = 64;

/// A fresh token: 256 bits from the OS random source, hex-encoded (URL-safe).
pub fn new_token() -> Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).context("the OS random source failed")?;
    Ok(hex::encode(bytes))
}

fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Whether `token` has the shape of a token (exactly 64 lowercase hex digits).
pub fn well_formed(token: &str) -> bool {
    token.len() == TOKEN_LEN
        && token
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Mints a token for one approver of one report, valid until the report's links expire, and
/// stores its hash. The raw token is returned once, to be put in the email.
pub async fn mint(
    tx: &mut Tx,
    report: &Report,
    approver: &str,
    now: DateTime<Utc>,
) -> Result<String> {
    let token = new_token()?;
    let mut q = Query::new("INSERT INTO retention_tokens (token_hash, report_id, approver, created_at, expires_at) VALUES (");
    q.bind(token_hash(&token))
        .push(", ")
        .bind(report.id)
        .push(", ")
        .bind(approver)
        .push(", ")
        .bind(now)
        .push(", ")
        .bind(report.expires_at)
        .push(")");
    tx.execute(&q).await?;
    Ok(token)
}

/// Forgets a token whose email could not be sent.
pub async fn revoke(db: &Db, token: &str) -> Result<()> {
    let mut q = Query::new("DELETE FROM retention_tokens WHERE token_hash = ");
    q.bind(token_hash(token));
    db.execute(&q).await?;
    Ok(())
}

/// What a presented token leads to.
#[derive(Debug)]
pub enum Lookup {
    /// `approvals` counts the distinct approvers who have approved so far.
    Valid {
        report: Report,
        approver: String,
        approvals: i64,
    },
    Expired,
    Unknown,
}

/// Finds the report, approver and approvals so far of `token` in one query; malformed tokens
/// never reach the database.
pub async fn lookup(db: &Db, token: &str, now: DateTime<Utc>) -> Result<Lookup> {
    if !well_formed(token) {
        return Ok(Lookup::Unknown);
    }
    let presented = token_hash(token);
    // The report's columns first, read by `Report::from_row`; the token's after them.
    let mut q = Query::new(&format!(
        "SELECT {}, t.token_hash, t.approver, t.expires_at, \
         (SELECT COUNT(DISTINCT lower(d.decided_by)) FROM retention_decisions d WHERE d.report_id = r.id AND d.decision = 'approve' AND d.kept_version = r.kept_version) \
         FROM retention_tokens t JOIN retention_reports r ON r.id = t.report_id WHERE t.token_hash = ",
        Report::columns_of("r")
    ));
    q.bind(presented.as_str());
    let Some(row) = db.fetch_optional(&q).await? else {
        return Ok(Lookup::Unknown);
    };
    let token = Report::COLUMN_COUNT;
    if !bool::from(row.text(token)?.as_bytes().ct_eq(presented.as_bytes())) {
        return Ok(Lookup::Unknown);
    }
    let report = Report::from_row(&row)?;
    if row.time(token + 2)? <= now || report.state == ReportState::Expired {
        return Ok(Lookup::Expired);
    }
    Ok(Lookup::Valid {
        report,
        approver: row.text(token + 1)?,
        approvals: row.i64(token + 3)?,
    })
}

/// Why a decision through a link was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecisionError {
    #[error("type the number of customers ({expected}) to approve")]
    WrongConfirmation { expected: i64 },
    #[error("this report is {0} and can no longer be decided")]
    NotPending(ReportState),
}

/// The result of an accepted decision.
#[derive(Debug, PartialEq)]
pub enum Decided {
    /// Recorded; more approvers are needed.
    Approval {
        approvals: i64,
        required: i64,
    },
    /// This approval completed the report's approval.
    Approved,
    AlreadyApprovedByYou,
    Rejected,
}

/// Locks the report for a decision: a row lock on PostgreSQL (SQLite's write transaction
/// already serialises), and returns its current state.
pub(crate) async fn lock_report(tx: &mut Tx, id: i64) -> Result<Report> {
    let mut q = Query::new("SELECT id FROM retention_reports WHERE id = ");
    q.bind(id);
    tx.lock_for_update(&q).await?;
    reports::get_in(tx, id).await?.context("report vanished")
}

/// A decision can be taken on a pending report whose links have not expired.
pub(crate) fn decidable(report: &Report, now: DateTime<Utc>) -> Result<(), DecisionError> {
    match report.state {
        ReportState::Pending if report.expires_at <= now => {
            Err(DecisionError::NotPending(ReportState::Expired))
        }
        ReportState::Pending => Ok(()),
        other => Err(DecisionError::NotPending(other)),
    }
}

/// Approves through a link: `confirm` must be the number of customers not kept out; distinct
/// approvers count (addresses compared without case), each for the kept list as it is now: if
/// the list changes afterwards, the approval no longer counts.
pub async fn approve(
    db: &Db,
    report_id: i64,
    approver: &str,
    confirm: &str,
    now: DateTime<Utc>,
) -> Result<Result<Decided, DecisionError>> {
    let mut tx = db.begin().await?;
    let report = lock_report(&mut tx, report_id).await?;
    if let Err(e) = decidable(&report, now) {
        return Ok(Err(e));
    }
    if confirm.trim().replace(',', "").parse::<i64>().ok() != Some(report.to_approve()) {
        return Ok(Err(DecisionError::WrongConfirmation {
            expected: report.to_approve(),
        }));
    }
    let mut q = Query::new("SELECT COUNT(*) FROM retention_decisions WHERE report_id = ");
    q.bind(report_id)
        .push(" AND decision = 'approve' AND lower(decided_by) = ")
        .bind(approver.trim().to_lowercase())
        .push(" AND kept_version = ")
        .bind(report.kept_version);
    if tx.fetch_one(&q).await?.i64(0)? > 0 {
        return Ok(Ok(Decided::AlreadyApprovedByYou));
    }
    let mut q = Query::new("INSERT INTO retention_decisions (report_id, decision, decided_by, via, reason, decided_at, kept_version) VALUES (");
    q.bind(report_id)
        .push(", 'approve', ")
        .bind(approver)
        .push(", 'link', NULL, ")
        .bind(now)
        .push(", ")
        .bind(report.kept_version)
        .push(")");
    tx.execute(&q).await?;
    let mut q = Query::new(
        "SELECT COUNT(DISTINCT lower(decided_by)) FROM retention_decisions WHERE report_id = ",
    );
    q.bind(report_id)
        .push(" AND decision = 'approve' AND kept_version = ")
        .bind(report.kept_version);
    let approvals = tx.fetch_one(&q).await?.i64(0)?;
    let decided = if approvals >= report.approvals_required {
        reports::transition(&mut tx, &report, ReportState::Approved, now, None).await?;
        Decided::Approved
    } else {
        Decided::Approval {
            approvals,
            required: report.approvals_required,
        }
    };
    audit::record(
        &mut tx,
        &Event {
            at: now,
            venue_id: report.venue_id,
            report_id: Some(report_id),
            event: if decided == Decided::Approved {
                EventKind::Approved
            } else {
                EventKind::Approval
            },
            actor: approver.to_string(),
            detail: format!(
                "approval {approvals} of {} through the emailed link",
                report.approvals_required
            ),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(Ok(decided))
}

/// Rejects through a link; one rejection rejects the report.
pub async fn reject(
    db: &Db,
    report_id: i64,
    approver: &str,
    reason: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Result<Decided, DecisionError>> {
    let reason = reason
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(|r| r.chars().take(2000).collect::<String>());
    let mut tx = db.begin().await?;
    let report = lock_report(&mut tx, report_id).await?;
    if let Err(e) = decidable(&report, now) {
        return Ok(Err(e));
    }
    reports::transition(
        &mut tx,
        &report,
        ReportState::Rejected,
        now,
        reason.as_deref(),
    )
    .await?;
    // The reason is free text and may name people: it stays with the report, not the ledger.
    reports::record_decision(&mut tx, report_id, "reject", approver, "link", None, now).await?;
    audit::record(
        &mut tx,
        &Event {
            at: now,
            venue_id: report.venue_id,
            report_id: Some(report_id),
            event: EventKind::Rejected,
            actor: approver.to_string(),
            detail: reports::reason_note(reason.is_some()).into(),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(Ok(Decided::Rejected))
}

/// The approvers (lowercase) whose approvals count so far: given for the kept list as it is.
pub async fn approvers_so_far(db: &Db, report_id: i64) -> Result<Vec<String>> {
    let mut q = Query::new(
        "SELECT DISTINCT lower(d.decided_by) FROM retention_decisions d JOIN retention_reports r ON r.id = d.report_id \
         WHERE d.report_id = ",
    );
    q.bind(report_id)
        .push(" AND d.decision = 'approve' AND d.kept_version = r.kept_version ORDER BY 1");
    db.fetch_all(&q).await?.iter().map(|r| r.text(0)).collect()
}

/// Whether `approver` approved an earlier kept list and has not approved the current one: the
/// page tells them their approval was withdrawn.
pub async fn approval_withdrawn(db: &Db, report: &Report, approver: &str) -> Result<bool> {
    let mut q = Query::new(
        "SELECT COALESCE(MAX(kept_version), -1) FROM retention_decisions WHERE decision = 'approve' AND report_id = ",
    );
    q.bind(report.id)
        .push(" AND lower(decided_by) = ")
        .bind(approver.trim().to_lowercase());
    let latest = db.fetch_one(&q).await?.i64(0)?;
    Ok(latest >= 0 && latest < report.kept_version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_256_bits_hex_and_unique() {
        let a = new_token().unwrap();
        let b = new_token().unwrap();
        assert_eq!(a.len(), 64);
        assert!(well_formed(&a));
        assert_ne!(a, b);
        assert!(!well_formed(&a.to_uppercase()));
        assert!(!well_formed(&a[..63]));
        assert!(!well_formed(&format!("{a}0")));
        assert_ne!(token_hash(&a), a, "only the hash is stored");
    }
}
