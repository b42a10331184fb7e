//! `retention_reports`: one row per report (the frozen list approvers review), decoded by
//! column name into [`Report`]. Its state is written only through `crate::transition`.

use crate::db::{Db, Query, Row, Tx};
use crate::policy::{Action, ReportState, Rule};
use anyhow::{bail, Result};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::HashMap;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub id: i64,
    pub venue_id: i64,
    pub action: Action,
    pub policy: String,
    pub cutoff: DateTime<Utc>,
    pub state: ReportState,
    pub customer_count: i64,
    pub approvals_required: i64,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub decided_at: Option<DateTime<Utc>>,
    pub applied_at: Option<DateTime<Utc>>,
    pub state_reason: Option<String>,
    /// Customers an approver kept out of the report.
    pub kept_count: i64,
    /// Changes each time the kept list changes: an approval counts for the version it was given for.
    pub kept_version: i64,
    /// The venue's customers when the report was made (its share of the venue).
    pub venue_customers: Option<i64>,
    /// The report's customers by year of last order, frozen with it: `[[year or null, count]]`.
    pub activity_years: Option<String>,
    /// What each hold kept back of the venue's otherwise-idle customers when it was made.
    pub held_back: crate::selection::HeldBack,
    /// The rule the report follows: the venue's customers or its prospects (SPEC 12).
    pub rule: Rule,
}

impl Report {
    /// The customers an approval covers: the report's, less those kept out.
    pub fn to_approve(&self) -> i64 {
        self.customer_count - self.kept_count
    }
}

const COLUMNS: &str =
    "id, venue_id, action, policy, cutoff, state, customer_count, approvals_required, \
                       created_at, expires_at, decided_at, applied_at, state_reason, kept_count, kept_version, venue_customers, activity_years, held_back, rule";

impl Report {
    /// The report's columns qualified with `alias`, as [`Report::from_row`] reads them (by
    /// name: a query may select more beside them).
    pub(crate) fn columns_of(alias: &str) -> String {
        COLUMNS
            .split(',')
            .map(|c| format!("{alias}.{}", c.trim()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub(crate) fn from_row(r: &Row) -> Result<Report> {
        Ok(Report {
            id: r.named_i64("id")?,
            venue_id: r.named_i64("venue_id")?,
            action: r
                .named_text("action")?
                .parse()
                .map_err(anyhow::Error::msg)?,
            policy: r.named_text("policy")?,
            cutoff: r.named_time("cutoff")?,
            state: r.named_text("state")?.parse().map_err(anyhow::Error::msg)?,
            customer_count: r.named_i64("customer_count")?,
            approvals_required: r.named_i64("approvals_required")?,
            created_at: r.named_time("created_at")?,
            expires_at: r.named_time("expires_at")?,
            decided_at: r.named_opt_time("decided_at")?,
            applied_at: r.named_opt_time("applied_at")?,
            state_reason: r.named_opt_text("state_reason")?,
            kept_count: r.named_i64("kept_count")?,
            kept_version: r.named_i64("kept_version")?,
            venue_customers: r.named_opt_i64("venue_customers")?,
            activity_years: r.named_opt_text("activity_years")?,
            held_back: r
                .named_opt_text("held_back")?
                .and_then(|j| serde_json::from_str(&j).ok())
                .unwrap_or_default(),
            rule: match r.named_opt_text("rule")? {
                Some(rule) => rule.parse().map_err(anyhow::Error::msg)?,
                None => Rule::Customers,
            },
        })
    }
}

/// A new report row; its items are frozen separately in the same transaction.
pub struct NewReport<'a> {
    pub venue_id: i64,
    pub action: Action,
    pub policy: &'a str,
    pub cutoff: DateTime<Utc>,
    pub approvals_required: u32,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub rule: Rule,
}

/// Inserts a pending report with a zero count and returns its id.
pub async fn insert(tx: &mut Tx<'_>, new: &NewReport<'_>) -> Result<i64> {
    let q = Query::insert(
        "retention_reports",
        &[
            "venue_id",
            "action",
            "policy",
            "cutoff",
            "state",
            "customer_count",
            "approvals_required",
            "created_at",
            "expires_at",
            "rule",
        ],
        vec![
            new.venue_id.into(),
            new.action.as_str().into(),
            new.policy.into(),
            new.cutoff.into(),
            ReportState::Pending.as_str().into(),
            0_i64.into(),
            i64::from(new.approvals_required).into(),
            new.created_at.into(),
            new.expires_at.into(),
            new.rule.as_str().into(),
        ],
    );
    tx.insert_returning_id(&q, "id").await
}

/// Counts the report's customers by year of last order (for the page's chart), once, so no
/// page has to group the whole report.
pub async fn activity_years(tx: &mut Tx<'_>, report_id: i64) -> Result<Vec<(Option<i64>, i64)>> {
    let year = tx.backend().year_of("last_order_at");
    let mut q = Query::new(&format!(
        "SELECT {year}, COUNT(*) FROM retention_report_items WHERE report_id = "
    ));
    q.bind(report_id).push(" GROUP BY 1 ORDER BY 1");
    tx.fetch_all(&q)
        .await?
        .iter()
        .map(|r| Ok((r.opt_i64(0)?, r.i64(1)?)))
        .collect()
}

/// What a new report freezes besides its customers, written once they are.
pub struct Frozen<'a> {
    /// The report's customers, and the venue's (for its share of the venue).
    pub customer_count: u64,
    pub venue_customers: u64,
    /// What the holds kept back.
    pub held_back: &'a crate::selection::HeldBack,
    /// Its customers by year of last order ([`activity_years`]).
    pub activity_years: &'a [(Option<i64>, i64)],
}

/// Writes `frozen` on the new report `report_id` in one statement (three updates of the same
/// row before; a fleet's first night makes a report for every venue).
pub async fn record_frozen(tx: &mut Tx<'_>, report_id: i64, frozen: &Frozen<'_>) -> Result<()> {
    let mut q = Query::new("UPDATE retention_reports SET customer_count = ");
    q.bind(frozen.customer_count as i64)
        .push(", venue_customers = ")
        .bind(frozen.venue_customers as i64)
        .push(", held_back = ")
        .bind(serde_json::to_string(frozen.held_back)?)
        .push(", activity_years = ")
        .bind(serde_json::to_string(frozen.activity_years)?)
        .push(" WHERE id = ")
        .bind(report_id);
    tx.execute(&q).await?;
    Ok(())
}

impl Report {
    /// The frozen chart data: (year of last order, or `None` for never ordered, customers).
    pub fn years(&self) -> Vec<(Option<i64>, i64)> {
        self.activity_years
            .as_deref()
            .and_then(|j| serde_json::from_str(j).ok())
            .unwrap_or_default()
    }
}

fn by_id(id: i64) -> Query {
    let mut q = Query::new(&format!(
        "SELECT {COLUMNS} FROM retention_reports WHERE id = "
    ));
    q.bind(id);
    q
}

pub async fn get(db: &Db, id: i64) -> Result<Option<Report>> {
    db.fetch_optional(&by_id(id))
        .await?
        .as_ref()
        .map(Report::from_row)
        .transpose()
}

/// Reads a report inside a transaction (the state a decision is taken on).
pub async fn get_in(tx: &mut Tx<'_>, id: i64) -> Result<Option<Report>> {
    tx.fetch_optional(&by_id(id))
        .await?
        .as_ref()
        .map(Report::from_row)
        .transpose()
}

/// Reports, newest first, of one venue or all.
/// Newest first, of one venue or all, in the given states or any (a fleet's list reads an
/// index: `retention_reports_venue` or `retention_reports_state`).
pub async fn list(db: &Db, venue_id: Option<i64>, states: &[ReportState]) -> Result<Vec<Report>> {
    let mut q = Query::new(&format!(
        "SELECT {COLUMNS} FROM retention_reports WHERE 1 = 1"
    ));
    if let Some(v) = venue_id {
        q.push(" AND venue_id = ").bind(v);
    }
    if !states.is_empty() {
        q.push(" AND state IN (");
        for (i, state) in states.iter().enumerate() {
            if i > 0 {
                q.push(", ");
            }
            q.bind(state.as_str());
        }
        q.push(")");
    }
    q.push(" ORDER BY id DESC");
    db.fetch_all(&q)
        .await?
        .iter()
        .map(Report::from_row)
        .collect()
}

/// The venue's reports in the given states, oldest first.
pub async fn in_states(db: &Db, venue_id: i64, states: &[ReportState]) -> Result<Vec<Report>> {
    db.fetch_all(&in_states_query(venue_id, states))
        .await?
        .iter()
        .map(Report::from_row)
        .collect()
}

/// The statement of [`in_states`]: once a venue a cycle, so it reads the venue's own reports
/// through `retention_reports_venue_state` whatever the fleet's size (a test checks its plan).
pub fn in_states_query(venue_id: i64, states: &[ReportState]) -> Query {
    let mut q = Query::new(&format!(
        "SELECT {COLUMNS} FROM retention_reports WHERE venue_id = "
    ));
    q.bind(venue_id).push(" AND state IN (");
    for (i, state) in states.iter().enumerate() {
        if i > 0 {
            q.push(", ");
        }
        q.bind(state.as_str());
    }
    q.push(") ORDER BY id");
    q
}

/// When the venue's most recent report was created.
pub async fn last_created_at(db: &Db, venue_id: i64) -> Result<Option<DateTime<Utc>>> {
    let mut q = Query::new("SELECT MAX(created_at) FROM retention_reports WHERE venue_id = ");
    q.bind(venue_id).push(NOT_A_REQUEST);
    db.fetch_one(&q).await?.opt_time(0)
}

/// Leaves out the reports that record an erasure on request: they are no policy's report, so
/// they never start a venue's `report_interval`.
const NOT_A_REQUEST: &str = " AND (rule IS NULL OR rule <> 'request')";

/// Inserts the report that records one erasure on request (SPEC 13): applied at `at`, one
/// customer, decided by `by`.
pub async fn insert_request(
    tx: &mut Tx<'_>,
    venue_id: i64,
    action: Action,
    by: &str,
    at: DateTime<Utc>,
) -> Result<i64> {
    let policy = format!("{} on request, by {}", action.as_str(), by.trim());
    let q = Query::insert(
        "retention_reports",
        &[
            "venue_id",
            "action",
            "policy",
            "cutoff",
            "state",
            "customer_count",
            "approvals_required",
            "created_at",
            "expires_at",
            "decided_at",
            "applied_at",
            "rule",
        ],
        vec![
            venue_id.into(),
            action.as_str().into(),
            policy.into(),
            at.into(),
            ReportState::Applied.as_str().into(),
            1_i64.into(),
            0_i64.into(),
            at.into(),
            at.into(),
            at.into(),
            at.into(),
            Rule::Request.as_str().into(),
        ],
    );
    tx.insert_returning_id(&q, "id").await
}

/// When the venue's last report of `rule` was made (reports made before rules count as the
/// customers rule's).
pub async fn last_created_of_rule(
    db: &Db,
    venue_id: i64,
    rule: Rule,
) -> Result<Option<DateTime<Utc>>> {
    let mut q = Query::new("SELECT MAX(created_at) FROM retention_reports WHERE venue_id = ");
    q.bind(venue_id)
        .push(" AND COALESCE(rule, 'customers') = ")
        .bind(rule.as_str());
    db.fetch_one(&q).await?.opt_time(0)
}

/// Writes a report's new state (`t.to`, with the time `t` stamps and the reason) if it is still
/// in `t.from`; fails (changing nothing) when another decision got there first. Only
/// [`crate::transition::change_state`] calls it, with the effects of the change.
pub(crate) async fn set_state(
    tx: &mut Tx<'_>,
    report: &Report,
    t: &crate::policy::Transition,
    at: DateTime<Utc>,
    reason: Option<&str>,
) -> Result<()> {
    let mut q = Query::new("UPDATE retention_reports SET state = ");
    q.bind(t.to.as_str());
    match t.stamps {
        crate::policy::Stamp::AppliedAt => {
            q.push(", applied_at = ").bind(at);
        }
        crate::policy::Stamp::DecidedAt => {
            q.push(", decided_at = ").bind(at);
        }
        crate::policy::Stamp::Nothing => {}
    }
    if let Some(reason) = reason {
        q.push(", state_reason = ").bind(reason);
    }
    q.push(" WHERE id = ")
        .bind(report.id)
        .push(" AND state = ")
        .bind(t.from.as_str());
    if tx.execute(&q).await? != 1 {
        bail!(
            "report {} changed state meanwhile; nothing was done",
            report.id
        );
    }
    Ok(())
}

/// Housekeeping of a venue's decided reports as of `at`: reasons older than `kept_for` are
/// erased from their report, and the token rows of reports no longer pending are deleted once
/// their links have expired (the hashes are of no use after that). Returns (reasons erased,
/// tokens purged).
pub async fn forget_expired_details(
    db: &Db,
    kept_for: crate::policy::CalendarPeriod,
    at: DateTime<Utc>,
) -> Result<(u64, u64)> {
    let mut erase = Query::new(
        "UPDATE retention_reports SET state_reason = NULL WHERE state_reason IS NOT NULL AND decided_at IS NOT NULL AND decided_at <= ",
    );
    erase.bind(kept_for.before(at));
    let reasons = db.execute(&erase).await?;
    let mut purge = Query::new("DELETE FROM retention_tokens WHERE expires_at <= ");
    purge
        .bind(at)
        .push(" AND report_id IN (SELECT id FROM retention_reports WHERE state <> 'pending')");
    let tokens = db.execute(&purge).await?;
    Ok((reasons, tokens))
}

/// Every venue's pending, approved and applying reports (oldest first) and the time of each
/// venue's last report: what a run needs to see which venues have nothing to do, in two
/// statements for the whole fleet.
pub async fn open_by_venue(
    db: &Db,
) -> Result<(
    HashMap<i64, Vec<crate::policy::OpenReport>>,
    HashMap<i64, DateTime<Utc>>,
)> {
    let rows = db
        .fetch_all(&Query::new(
            "SELECT id, venue_id, state, created_at, expires_at, reminded_at FROM retention_reports WHERE state IN ('pending', 'approved', 'applying') ORDER BY id",
        ))
        .await?;
    let mut open: HashMap<i64, Vec<crate::policy::OpenReport>> = HashMap::new();
    for row in &rows {
        open.entry(row.i64(1)?)
            .or_default()
            .push(crate::policy::OpenReport {
                id: row.i64(0)?,
                state: row.text(2)?.parse().map_err(anyhow::Error::msg)?,
                created_at: row.time(3)?,
                expires_at: row.time(4)?,
                reminded: row.opt_time(5)?.is_some(),
            });
    }
    let last = db
        .fetch_all(&Query::new(
            &format!("SELECT venue_id, MAX(created_at) FROM retention_reports WHERE 1 = 1{NOT_A_REQUEST} GROUP BY venue_id"),
        ))
        .await?
        .iter()
        .map(|r| Ok((r.i64(0)?, r.time(1)?)))
        .collect::<Result<_>>()?;
    Ok((open, last))
}

/// When the report's approvers were reminded, if they were.
pub async fn reminded_at(db: &Db, id: i64) -> Result<Option<DateTime<Utc>>> {
    let mut q = Query::new("SELECT reminded_at FROM retention_reports WHERE id = ");
    q.bind(id);
    db.fetch_one(&q).await?.opt_time(0)
}

/// Records the one reminder; false when another cycle got there first.
pub async fn mark_reminded(tx: &mut Tx<'_>, id: i64, at: DateTime<Utc>) -> Result<bool> {
    let mut q = Query::new("UPDATE retention_reports SET reminded_at = ");
    q.bind(at)
        .push(" WHERE id = ")
        .bind(id)
        .push(" AND reminded_at IS NULL AND state = 'pending'");
    Ok(tx.execute(&q).await? == 1)
}

/// Refreshes the planner's statistics of the report items after a run added reports. Until
/// autovacuum gets to it, the planner takes a fresh report for a few rows and sorts the whole
/// report for each apply batch (90 ms at 300,000 items instead of under 1 ms). Once per run,
/// not per report: each ANALYZE samples the whole table, so one per report made a fleet's
/// first night grow with reports times items. A failure only costs speed, so it is logged.
pub async fn refresh_item_statistics(db: &Db) {
    if let Err(e) = db.refresh_statistics("retention_report_items").await {
        tracing::warn!(error = %e, "cannot refresh the statistics of retention_report_items");
    }
}

/// Reports counted by state (states without one are left out).
pub async fn count_by_state(db: &Db) -> Result<HashMap<ReportState, i64>> {
    db.fetch_all(&Query::new(
        "SELECT state, COUNT(*) AS reports FROM retention_reports GROUP BY state",
    ))
    .await?
    .iter()
    .map(|r| {
        Ok((
            r.named_text("state")?.parse().map_err(anyhow::Error::msg)?,
            r.named_i64("reports")?,
        ))
    })
    .collect()
}

/// Records the report's kept count after a change of its kept list, whose new version
/// withdraws the approvals given for the old one.
pub async fn set_kept_count(tx: &mut Tx<'_>, report_id: i64, kept: i64) -> Result<()> {
    let mut q = Query::new("UPDATE retention_reports SET kept_count = ");
    q.bind(kept)
        .push(", kept_version = kept_version + 1 WHERE id = ")
        .bind(report_id);
    tx.execute(&q).await?;
    Ok(())
}

/// Locks the report's row until the transaction ends (a row lock on the server backends;
/// SQLite's write transaction already serialises).
pub async fn lock(tx: &mut Tx<'_>, id: i64) -> Result<()> {
    let mut q = Query::new("SELECT id FROM retention_reports WHERE id = ");
    q.bind(id);
    tx.lock_for_update(&q).await?;
    Ok(())
}

/// The venue and action of each of `ids` that exists.
pub async fn venues_and_actions(db: &Db, ids: &[i64]) -> Result<Vec<(i64, i64, String)>> {
    let mut q = Query::new("SELECT id, venue_id, action FROM retention_reports WHERE id");
    db.backend().push_in_ids(&mut q, ids);
    db.fetch_all(&q)
        .await?
        .iter()
        .map(|r| {
            Ok((
                r.named_i64("id")?,
                r.named_i64("venue_id")?,
                r.named_text("action")?,
            ))
        })
        .collect()
}
