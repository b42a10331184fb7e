//! Approval links (SPEC 4): tokens of 256 bits from the OS random source, sent once in an email,
//! stored only as a SHA-256 hash, checked in constant time, and the decisions taken through them.

use crate::db::{Db, Tx};
use crate::policy::ReportState;
use crate::reports::Report;
use crate::store;
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
    tx: &mut Tx<'_>,
    report: &Report,
    approver: &str,
    now: DateTime<Utc>,
) -> Result<String> {
    let token = new_token()?;
    store::tokens::insert(tx, &token_hash(&token), report, approver, now).await?;
    Ok(token)
}

/// Forgets a token whose email could not be sent.
pub async fn revoke(db: &Db, token: &str) -> Result<()> {
    store::tokens::delete(db, &token_hash(token)).await
}

/// What a presented token leads to. One is made per request and dropped with it, so its size
/// does not matter and the report is not boxed.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
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
    let Some(found) = store::tokens::find(db, &presented).await? else {
        return Ok(Lookup::Unknown);
    };
    if !bool::from(found.token_hash.as_bytes().ct_eq(presented.as_bytes())) {
        return Ok(Lookup::Unknown);
    }
    if found.expires_at <= now || found.report.state == ReportState::Expired {
        return Ok(Lookup::Expired);
    }
    Ok(Lookup::Valid {
        report: found.report,
        approver: found.approver,
        approvals: found.approvals,
    })
}

/// The approvers (lowercase) whose approvals count so far: given for the kept list as it is.
pub async fn approvers_so_far(db: &Db, report_id: i64) -> Result<Vec<String>> {
    store::decisions::approvers_of_kept_list(db, report_id).await
}

/// Whether `approver` approved an earlier kept list and has not approved the current one: the
/// page tells them their approval was withdrawn.
pub async fn approval_withdrawn(db: &Db, report: &Report, approver: &str) -> Result<bool> {
    let latest = store::decisions::latest_approved_version(db, report.id, approver).await?;
    Ok(latest.is_some_and(|v| v < report.kept_version))
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
