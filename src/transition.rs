//! The one place a report changes state (SPEC 4). [`change_state`] takes the row of
//! [`crate::policy::TRANSITIONS`] for the change and does all it says in the caller's
//! transaction: the new state and its time, the report's search index dropped when the report
//! closes, the approvers' mail queued, and the ledger event written. Approvals, rejections and
//! cancellations ([`crate::decision`]), expiry ([`crate::lifecycle`]) and apply
//! ([`crate::apply`]) all come through here, so "what happens when a report becomes X" is one
//! table row.

use crate::audit::{self, Event};
use crate::config::VenueConfig;
use crate::db::Tx;
use crate::policy::ReportState;
use crate::reports::Report;
use crate::{mail, store};
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};

/// Who changes a report's state, and what the ledger and the report keep of it.
pub struct Change<'a> {
    pub at: DateTime<Utc>,
    /// As the ledger names them: "retentiond", an approver's address, an operator.
    pub actor: String,
    /// The ledger's words for it: ids and counts, never personal data.
    pub detail: String,
    /// A reason kept with the report (free text stays out of the ledger).
    pub reason: Option<&'a str>,
    /// The report's venue, whose approvers get the change's mail (a change that mails needs it).
    pub venue: Option<&'a VenueConfig>,
}

/// Moves `report` to `to` with everything the transition causes, inside `tx`; fails (and the
/// caller's transaction with it) when the change is not allowed or another one got there first.
pub async fn change_state(
    tx: &mut Tx<'_>,
    report: &Report,
    to: ReportState,
    change: Change<'_>,
) -> Result<()> {
    let t = report
        .state
        .transition(to)
        .with_context(|| format!("report {}", report.id))?;
    crate::store::reports::set_state(tx, report, &t, change.at, change.reason).await?;
    if t.forgets_search_terms {
        store::terms::forget_report(tx, report.id).await?;
    }
    if let Some(kind) = t.mails {
        let venue = change.venue.with_context(|| {
            format!(
                "report {} becoming {to} mails its venue's approvers",
                report.id
            )
        })?;
        mail::queue_to_approvers(tx, venue, kind, report.id, change.at, |_| true).await?;
    }
    audit::record(
        tx,
        &Event {
            at: change.at,
            venue_id: report.venue_id,
            report_id: Some(report.id),
            event: t.event,
            actor: change.actor,
            detail: change.detail,
        },
    )
    .await
}
