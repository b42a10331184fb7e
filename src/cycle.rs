//! One cycle of one venue (SPEC 1): apply what was approved, then the report lifecycle (expiry,
//! reminders; [`crate::lifecycle`]), then select anew and freeze a report when the policy allows
//! one. The scheduler and the `cycle` command both call [`run_venue_cycle`]; the clock is a
//! parameter so that tests and `--at` set it.

use crate::apply::{self, ApplySummary};
use crate::config::VenueConfig;
use crate::lifecycle;
pub use crate::lifecycle::Selection;
use crate::policy::{self, ReportState};
use crate::reports::{self, Rule};
use crate::run::RunContext;
use crate::selection::{self, Scope};
use crate::Service;
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde::Serialize;
use tracing::{info, warn};

/// A dry run's view of an approved report.
#[derive(Debug, Clone, Serialize)]
pub struct ApplyPreview {
    pub report_id: i64,
    pub would_process: u64,
    pub would_skip: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct VenueCycle {
    pub venue_id: i64,
    pub at: DateTime<Utc>,
    pub cutoff: DateTime<Utc>,
    pub dry_run: bool,
    /// False when another instance held the venue's lock and nothing was done.
    pub ran: bool,
    pub applied: Vec<ApplySummary>,
    pub previews: Vec<ApplyPreview>,
    /// Pending reports whose links expired in this cycle.
    pub expired: Vec<i64>,
    /// Pending reports whose approvers were reminded in this cycle.
    pub reminded: Vec<i64>,
    pub selection: Option<Selection>,
    /// What the holds kept back of the venue's otherwise-idle customers, when the cycle
    /// selected (a dry run, or a report made): SPEC 12.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_back: Option<selection::HeldBack>,
    /// With `[venues.prospects]`, what the prospects rule's selection decided (SPEC 12).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prospects: Option<Selection>,
}

/// Runs one cycle of `venue` as of `at`, under the venue's cross-instance lock, as a run of
/// its own: the files are scrubbed after an apply, and a failure is alerted to `mail.ops`.
/// Many venues at once go through [`crate::fleet::Fleet::run`].
pub async fn run_venue_cycle(
    svc: &Service,
    venue: &VenueConfig,
    at: DateTime<Utc>,
    dry_run: bool,
) -> Result<VenueCycle> {
    let run = RunContext::new();
    let result = run_venue_cycle_in(svc, &run, venue, at, dry_run).await;
    if !dry_run {
        run.finish(svc).await;
        if let Err(e) = &result {
            crate::run::alert_failures(svc, &[(venue, e)], at).await;
        }
    }
    result
}

/// One cycle of `venue` within `run`, whose once-only work (checks, file scrubbing, the alert)
/// the run does. Every failure is counted in `retentiond_cycles_total{result="failed"}`.
pub async fn run_venue_cycle_in(
    svc: &Service,
    run: &RunContext,
    venue: &VenueConfig,
    at: DateTime<Utc>,
    dry_run: bool,
) -> Result<VenueCycle> {
    let outcome = locked_cycle(svc, run, venue, at, dry_run).await;
    let label = match &outcome {
        Ok(r) if !r.ran => "skipped",
        Ok(_) => "ok",
        Err(_) => "failed",
    };
    metrics::counter!("retentiond_cycles_total", "venue" => venue.id.to_string(), "result" => label).increment(1);
    if let Ok(r) = &outcome {
        if r.ran && !dry_run {
            metrics::gauge!("retentiond_last_successful_cycle_timestamp_seconds", "venue" => venue.id.to_string()).set(at.timestamp() as f64);
        }
    }
    outcome
}

async fn locked_cycle(
    svc: &Service,
    run: &RunContext,
    venue: &VenueConfig,
    at: DateTime<Utc>,
    dry_run: bool,
) -> Result<VenueCycle> {
    let cutoff = policy::cutoff(at, venue.timezone, venue.inactive_for);
    let mut result = VenueCycle {
        venue_id: venue.id,
        at,
        cutoff,
        dry_run,
        ran: false,
        applied: vec![],
        previews: vec![],
        expired: vec![],
        reminded: vec![],
        selection: None,
        held_back: None,
        prospects: None,
    };
    if !dry_run {
        run.forget_old_details(svc, at).await?;
    }
    // Answered from the run's reads, with the same checks a cycle makes first: nothing to
    // apply, expire or remind and no new report allowed (the run's one read of the open
    // reports); or, in a real run, no open report, a new one allowed and no candidate in the
    // run's count of its selecting venues (what selecting would find, without a lock, a
    // transaction or a scan of its own).
    let answered = match run.nothing_to_do(svc, venue, at).await? {
        Some(reason) => Some(reason.into()),
        None if !dry_run && run.counted_none(venue.id) => Some(Selection::NoCandidates),
        None => None,
    };
    if let Some(selection) = answered {
        run.ensure_fit(svc).await?;
        run.ensure_all_classified(svc, venue).await?;
        result.ran = true;
        result.selection = Some(selection);
        return Ok(result);
    }
    // A dry run changes nothing, so it takes no lock: it never makes a daemon skip the venue's
    // cycle, and a cycle running elsewhere does not keep it from answering.
    let lock = if dry_run {
        None
    } else {
        let Some(lock) = svc.db.try_lock_venue(venue.id).await? else {
            info!(
                venue.id = venue.id,
                "another instance is running this venue's cycle; skipped"
            );
            return Ok(result);
        };
        Some(lock)
    };
    result.ran = true;
    let outcome = cycle_locked(svc, run, venue, at, dry_run, &mut result).await;
    if let Some(lock) = lock {
        if let Err(e) = lock.release().await {
            // The lock's connection is gone (and the lock with it); the cycle's own outcome matters more.
            warn!(venue.id = venue.id, error = %format!("{e:#}"), "could not release the venue lock cleanly");
        }
    }
    outcome.map(|()| result)
}

async fn cycle_locked(
    svc: &Service,
    run: &RunContext,
    venue: &VenueConfig,
    at: DateTime<Utc>,
    dry_run: bool,
    result: &mut VenueCycle,
) -> Result<()> {
    run.ensure_fit(svc).await?;
    run.ensure_all_classified(svc, venue).await?;

    // A fleet's dry run found this venue without an open report in its one read of them all.
    let counted_for_dry_run = dry_run && run.counted(venue.id).is_some();
    // The venue's open reports, read once: what to apply, what to expire or remind, and
    // whether a new report may be made are all judged on this read (a decision taken after it
    // counts from the next cycle on, as one taken just after the cycle does).
    let mut open = if counted_for_dry_run {
        Vec::new()
    } else {
        let states = [
            ReportState::Pending,
            ReportState::Approved,
            ReportState::Applying,
        ];
        reports::in_states(&svc.db, venue.id, &states).await?
    };
    let to_apply: Vec<reports::Report> = open
        .iter()
        .filter(|r| matches!(r.state, ReportState::Applying | ReportState::Approved))
        .cloned()
        .collect();
    for report in to_apply {
        if dry_run {
            let (would_process, would_skip) = apply::preview(svc, venue, &report, at).await?;
            result.previews.push(ApplyPreview {
                report_id: report.id,
                would_process,
                would_skip,
            });
            continue;
        }
        let summary = apply::apply_report(svc, run, venue, &report, at)
            .await
            .with_context(|| format!("venue {}: applying report {}", venue.id, report.id))?;
        info!(
            venue.id = venue.id,
            report.id = report.id,
            processed = summary.processed(),
            finished = summary.finished,
            "report applied"
        );
        let finished = summary.finished;
        if finished {
            run.note_applied();
            open.retain(|r| r.id != report.id);
        }
        result.applied.push(summary);
        if !finished {
            return Ok(());
        }
    }

    if !dry_run {
        let pending: Vec<&reports::Report> = open
            .iter()
            .filter(|r| r.state == ReportState::Pending)
            .collect();
        let (expired, reminded) = lifecycle::expire_and_remind(svc, venue, &pending, at).await?;
        open.retain(|r| !expired.contains(&r.id));
        result.expired = expired;
        result.reminded = reminded;
    }
    // After an apply, a fleet's run may count the new candidates of all its venues at once.
    let defer = !result.applied.is_empty() && venue.prospects.is_none();
    let Some((selection, held_back)) = select(
        svc,
        run,
        venue,
        &open,
        Rule::Customers,
        (at, result.cutoff),
        Mode { dry_run, defer },
    )
    .await?
    else {
        // Left to the run (`selection` stays empty until the run fills it in).
        return Ok(());
    };
    result.selection = Some(selection);
    result.held_back = held_back;
    if venue.prospects.is_some() {
        let cutoff = policy::cutoff(at, venue.timezone, venue.rule(Rule::Prospects).0);
        let selected = select(
            svc,
            run,
            venue,
            &open,
            Rule::Prospects,
            (at, cutoff),
            Mode {
                dry_run,
                defer: false,
            },
        )
        .await?;
        result.prospects = selected.map(|(selection, _)| selection);
    }
    Ok(())
}

/// What a dry run says of `candidates` out of the venue's `customers`.
fn dry_run_selection(venue: &VenueConfig, candidates: u64, customers: u64) -> Selection {
    if candidates == 0 {
        Selection::NoCandidates
    } else if policy::brake_engaged(candidates, customers, venue.max_share) {
        Selection::Brake {
            candidates,
            customers,
            max_share: venue.max_share,
        }
    } else {
        Selection::WouldCreate {
            customers: candidates,
        }
    }
}

/// How a cycle selects: as a dry run, and whether it may leave the selection to its run.
#[derive(Debug, Clone, Copy)]
struct Mode {
    dry_run: bool,
    defer: bool,
}

/// Selects anew for `rule` at `at` with its `cutoff`, `open` being the venue's reports still
/// open after this cycle's apply and expiry. `None` when a new report may be made but the
/// run takes the selection on ([`RunContext::defer_selection`]).
async fn select(
    svc: &Service,
    run: &RunContext,
    venue: &VenueConfig,
    open: &[reports::Report],
    rule: Rule,
    (at, cutoff): (DateTime<Utc>, DateTime<Utc>),
    Mode { dry_run, defer }: Mode,
) -> Result<Option<(Selection, Option<selection::HeldBack>)>> {
    if dry_run {
        // A fleet's dry run counted every venue that would select at once, judged on the same
        // read of the open reports.
        if let Some((candidates, customers)) = run.counted(venue.id) {
            return Ok(Some((
                dry_run_selection(venue, candidates, customers),
                run.counted_held_back(venue.id),
            )));
        }
    }
    let open: Vec<&reports::Report> = open.iter().filter(|r| r.rule == rule).collect();
    if defer && !dry_run && open.is_empty() && run.defer_selection(venue.id) {
        // The run judges the interval and counts the candidates of all such venues at once.
        return Ok(None);
    }
    let last = match venue.prospects {
        None => reports::last_created_at(&svc.db, venue.id).await?,
        Some(_) => reports::last_created_of_rule(&svc.db, venue.id, rule).await?,
    };
    if let Err(reason) = policy::may_create_report(
        open.first().map(|r| (r.id, r.state)),
        last,
        venue.report_interval,
        at,
    ) {
        return Ok(Some((reason.into(), None)));
    }
    let scope = Scope::for_rule(&svc.config, svc.db.backend(), venue, at, rule)
        .without_empty(&svc.db)
        .await?;
    debug_assert_eq!(scope.cutoff, cutoff);
    if dry_run {
        let (candidates, customers, held_back) =
            selection::dry_run_of_venue(&svc.db, &scope).await?;
        return Ok(Some((
            dry_run_selection(venue, candidates, customers),
            Some(held_back),
        )));
    }

    let (made, held_back) = lifecycle::create_report(svc, venue, &scope, at).await?;
    if matches!(made, Selection::Created { .. }) {
        run.note_report_made();
    }
    Ok(Some((made, held_back)))
}
