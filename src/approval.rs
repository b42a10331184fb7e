//! Approval links (SPEC 4): tokens of 256 bits from the OS random source, sent once in an email,
//! stored only as a SHA-256 hash, checked in constant time, and the decisions taken through them.

use crate::db::{Db, Query, Tx};
use crate::policy::ReportState;
use crate::reports::Report;
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
