//! The report lifecycle around a cycle's apply (SPEC 4): a report frozen from the candidates
//! (or the brake instead), pending reports expired when their links run out, and the one
//! reminder. `cycle.rs` reads as apply, then this lifecycle, then selection; whether a venue may
//! get a new report at all is the pure [`crate::policy::may_create_report`].

use crate::audit::{self, Event, EventKind};
use crate::config::VenueConfig;
use crate::policy::{self, ReportState};
use crate::reports::{self, NewReport};
use crate::selection::{self, Scope};
use crate::transition::{change_state, Change};
use crate::{mail, Service};
use anyhow::Result;
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use serde::Serialize;
use tracing::{error, info, warn};

/// What the selection step of a cycle decided.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Selection {
    Created {
        report_id: i64,
        customers: u64,
    },
    WouldCreate {
        customers: u64,
    },
    NoCandidates,
    OpenReport {
        report_id: i64,
        state: ReportState,
    },
    TooSoon {
        last_report_at: DateTime<Utc>,
        next_allowed_at: DateTime<Utc>,
    },
    /// More than `max_share` of the venue's customers matched: no report, an alert instead.
    Brake {
        candidates: u64,
        customers: u64,
        max_share: f64,
    },
}

impl From<policy::NoNewReport> for Selection {
    fn from(reason: policy::NoNewReport) -> Selection {
        match reason {
            policy::NoNewReport::Open { report_id, state } => {
                Selection::OpenReport { report_id, state }
            }
            policy::NoNewReport::TooSoon {
                last_report_at,
                next_allowed_at,
            } => Selection::TooSoon {
                last_report_at,
                next_allowed_at,
            },
        }
    }
}

/// Pending reports whose links have expired become `expired` (approvers are told); those
/// pending for longer than `approval.remind_after` get one reminder to approvers yet to approve.
/// Returns the reports expired and the reports reminded.
/// Erases reject, cancel and keep reasons older than `approval.reasons_kept_for` and purges
/// the expired links of reports no longer pending, for every venue at once: once per run.
/// Before expiring: a link that expires in this cycle still answers 410 until the next one.
pub async fn forget_old_details(svc: &Service, at: DateTime<Utc>) -> Result<()> {
    let kept_for = svc.config.approval.reasons_kept_for;
    let (reasons, tokens) = reports::forget_expired_details(&svc.db, kept_for, at).await?;
    let keep_reasons = crate::review::forget_keep_reasons(&svc.db, kept_for.before(at)).await?;
    let reasons = reasons + keep_reasons;
    if reasons + tokens > 0 {
        info!(
            reasons.erased = reasons,
            tokens.purged = tokens,
            "old reasons erased and expired tokens purged"
        );
    }
    Ok(())
}

/// Expires the `pending` reports (the venue's, as its cycle read them) whose links have
/// expired, and reminds the approvers of those due a reminder. Returns the ids expired and
/// reminded.
pub async fn expire_and_remind(
    svc: &Service,
    venue: &VenueConfig,
    pending: &[&reports::Report],
    at: DateTime<Utc>,
) -> Result<(Vec<i64>, Vec<i64>)> {
    let (mut expired, mut reminded) = (Vec::new(), Vec::new());
    for &report in pending {
        if report.expires_at <= at {
            let mut tx = svc.db.begin().await?;
            let why = "links expired without a decision";
            let change = Change {
                at,
                actor: "retentiond".into(),
                detail: why.into(),
                reason: Some(why),
                venue: Some(venue),
            };
            change_state(&mut tx, report, ReportState::Expired, change).await?;
            tx.commit().await?;
            info!(venue.id = venue.id, report.id = report.id, "report expired");
            expired.push(report.id);
        } else if reports::reminded_at(&svc.db, report.id).await?.is_none()
            && svc.config.approval.remind_after.after(report.created_at) <= at
        {
            let approved = crate::approval::approvers_so_far(&svc.db, report.id).await?;
            let mut tx = svc.db.begin().await?;
            if !reports::mark_reminded(&mut tx, report.id, at).await? {
                continue;
            }
            // Only those whose approval does not count yet.
            mail::queue_to_approvers(&mut tx, venue, mail::Kind::Reminder, report.id, at, |a| {
                !approved.contains(&a.trim().to_lowercase())
            })
            .await?;
            tx.commit().await?;
            info!(
                venue.id = venue.id,
                report.id = report.id,
                "approvers reminded"
            );
            reminded.push(report.id);
        }
    }
    Ok((expired, reminded))
}

/// Freezes the venue's candidates into a new pending report and asks its approvers, all in one
/// transaction; no report without candidates, and the brake (an alert instead of a report) when
/// the candidates are more than `max_share` of the venue's customers.
pub async fn create_report(
    svc: &Service,
    venue: &VenueConfig,
    scope: &Scope<'_>,
    at: DateTime<Utc>,
) -> Result<(Selection, Option<crate::selection::HeldBack>)> {
    let cutoff = scope.cutoff;
    let mut tx = svc.db.begin().await?;
    let report_id = reports::insert(
        &mut tx,
        &NewReport {
            venue_id: venue.id,
            action: venue.rule(scope.rule).1,
            policy: &match scope.rule {
                reports::Rule::Customers | reports::Rule::Request => format!(
                    "{} after {} inactive",
                    venue.action.as_str(),
                    venue.inactive_for
                ),
                reports::Rule::Prospects => format!(
                    "prospects (customers who never ordered): {} after {} inactive",
                    venue.rule(scope.rule).1.as_str(),
                    venue.rule(scope.rule).0
                ),
            },
            cutoff,
            approvals_required: svc.config.approval.required,
            created_at: at,
            expires_at: svc.config.approval.link_valid_for.after(at),
            rule: scope.rule,
        },
    )
    .await?;
    let candidates = selection::freeze_into_report(&mut tx, scope, report_id).await?;
    if candidates == 0 {
        drop(tx); // rolled back: no report without candidates
        return Ok((Selection::NoCandidates, None));
    }
    // The brake's denominator, counted only when there is a report to judge (a fleet's apply
    // night selects again after every apply, mostly to find nobody), in the same transaction.
    let customers = selection::count_customers_in(&mut tx, &svc.config.schema, venue.id).await?;
    if policy::brake_engaged(candidates, customers, venue.max_share) {
        drop(tx);
        error!(
            venue.id = venue.id,
            candidates,
            customers,
            max_share = venue.max_share,
            "brake: the policy selects more than max_share of the venue's customers; no report made, check inactive_for"
        );
        let mut tx = svc.db.begin().await?;
        audit::record(
            &mut tx,
            &Event {
                at,
                venue_id: venue.id,
                report_id: None,
                event: EventKind::Brake,
                actor: "retentiond".into(),
                detail: format!("{candidates} of {customers} customers selected, more than max_share {}; no report made", venue.max_share),
            },
        )
        .await?;
        let alert = format!(
            "The policy of venue {} ({}, {}) selects {candidates} of its {customers} customers, more than max_share {}. \
             No report was made. Check inactive_for in the configuration.",
            venue.id, venue.name, venue.inactive_for, venue.max_share
        );
        mail::queue_ops_alert(svc, &mut tx, mail::Kind::BrakeAlert, venue.id, &alert, at).await?;
        tx.commit().await?;
        return Ok((
            Selection::Brake {
                candidates,
                customers,
                max_share: venue.max_share,
            },
            None,
        ));
    }
    let held_back = scope.held_back_in(&mut tx).await?;
    let activity_years = reports::activity_years(&mut tx, report_id).await?;
    reports::record_frozen(
        &mut tx,
        report_id,
        &reports::Frozen {
            customer_count: candidates,
            venue_customers: customers,
            held_back: &held_back,
            activity_years: &activity_years,
        },
    )
    .await?;
    if let Some(key) = &svc.config.hash_key {
        crate::store::terms::index_report(
            &mut tx,
            &svc.config.schema,
            key.expose_secret().as_bytes(),
            report_id,
        )
        .await?;
    }
    audit::record(
        &mut tx,
        &Event {
            at,
            venue_id: venue.id,
            report_id: Some(report_id),
            event: EventKind::ReportCreated,
            actor: "retentiond".into(),
            detail: match held_back.in_words() {
                Some(held) => format!(
                    "{candidates} customers, cutoff {}; {held}",
                    cutoff.to_rfc3339()
                ),
                None => format!("{candidates} customers, cutoff {}", cutoff.to_rfc3339()),
            },
        },
    )
    .await?;
    mail::queue_to_approvers(
        &mut tx,
        venue,
        mail::Kind::ApprovalRequest,
        report_id,
        at,
        |_| true,
    )
    .await?;
    tx.commit().await?;
    if candidates * 2 > customers {
        warn!(
            venue.id = venue.id,
            report.id = report_id,
            candidates,
            customers,
            "report selects over half of the venue's customers"
        );
    }
    info!(
        venue.id = venue.id,
        report.id = report_id,
        candidates,
        "report created"
    );
    Ok((
        Selection::Created {
            report_id,
            customers: candidates,
        },
        Some(held_back),
    ))
}
