//! One decision path for every decision taken on a report (SPEC 4): approve, reject, keep and
//! unkeep by an approver through the emailed link, and approve, reject, keep and cancel by an
//! operator on the venue's behalf. [`decide`] locks the report, checks that the decision may be
//! taken in the report's state ([`allowed`], pure), records it, writes one typed ledger event and
//! commits, all in one transaction. Free text (reasons) stays with the report or the kept row,
//! never in the ledger.

use crate::audit::{self, Event, EventKind};
use crate::db::{Db, Tx};
use crate::policy::ReportState;
use crate::reports::{self, Report};
use crate::store;
use crate::transition::{change_state, Change};
use anyhow::Result;
use chrono::{DateTime, Utc};
use std::collections::HashSet;

/// The longest reason kept, in characters.
const MAX_REASON_CHARS: usize = 2000;

/// A decision on a report.
#[derive(Debug, Clone, Copy)]
pub enum Decision<'a> {
    /// Approvers confirm with the number of customers not kept out (`Some`); an operator's
    /// approval is decisive and needs no confirmation (`None`).
    Approve {
        confirm: Option<&'a str>,
    },
    Reject {
        reason: Option<&'a str>,
    },
    /// Only operators cancel, a pending or approved report, before it is applied.
    Cancel {
        reason: &'a str,
    },
    /// Keeps customers out of the report (they are never touched by it).
    Keep {
        ids: &'a [i64],
        reason: Option<&'a str>,
    },
    /// Puts kept customers back on the report.
    Unkeep {
        ids: &'a [i64],
    },
}

/// Who takes a decision.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Actor<'a> {
    /// An approver, through the link emailed to them, and the venue's approvers as configured
    /// now: only their approvals count (SPEC 4), so one given by a removed approver does not.
    Approver(&'a str, &'a [String]),
    /// An operator on the command line (`reports ...`); the name given with `--by`, if any.
    Operator(&'a str),
}

impl Actor<'_> {
    /// How the actor is named in the ledger and in `retention_decisions`.
    pub fn ledger_name(&self) -> String {
        match self {
            Actor::Approver(address, _) => address.to_string(),
            Actor::Operator(name) if name.trim().is_empty() => "operator".into(),
            Actor::Operator(name) => format!("operator:{}", name.trim()),
        }
    }

    fn via(&self) -> &'static str {
        match self {
            Actor::Approver(..) => "link",
            Actor::Operator(_) => "operator",
        }
    }
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
    Cancelled,
    /// The kept list after a keep.
    Kept(KeptChange),
    /// The kept list after an unkeep.
    Unkept(KeptChange),
}

/// What a keep or unkeep changed.
#[derive(Debug, PartialEq)]
pub struct KeptChange {
    /// Customers whose kept state changed (ids already in that state are not counted).
    pub changed: u64,
    /// Customers kept out of the report now.
    pub kept: i64,
    /// Approvals withdrawn because the list they were given for changed.
    pub withdrawn: i64,
}

/// Why a decision was refused; nothing was changed.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecisionError {
    #[error("there is no report {0}")]
    NoReport(i64),
    #[error("type the number of customers ({expected}) to approve")]
    WrongConfirmation { expected: i64 },
    #[error("this report is {0} and can no longer be decided")]
    NotPending(ReportState),
    #[error("report is {0}; only a pending or approved report can be cancelled")]
    NotCancellable(ReportState),
    #[error("not on this report: {0}; nothing was changed")]
    NotOnReport(String),
}

/// Whether `decision` by `actor` may be taken on `report` at `now`. Approvers (and keeps by
/// anyone) need a pending report whose links have not expired; an operator approves or rejects
/// any pending report; a cancel takes a pending or approved one.
pub fn allowed(
    decision: &Decision,
    actor: &Actor,
    report: &Report,
    now: DateTime<Utc>,
) -> Result<(), DecisionError> {
    match (decision, actor) {
        (Decision::Cancel { .. }, _) => match report.state {
            ReportState::Pending | ReportState::Approved => Ok(()),
            other => Err(DecisionError::NotCancellable(other)),
        },
        (Decision::Approve { .. } | Decision::Reject { .. }, Actor::Operator(_)) => {
            match report.state {
                ReportState::Pending => Ok(()),
                other => Err(DecisionError::NotPending(other)),
            }
        }
        _ => match report.state {
            ReportState::Pending if report.expires_at <= now => {
                Err(DecisionError::NotPending(ReportState::Expired))
            }
            ReportState::Pending => Ok(()),
            other => Err(DecisionError::NotPending(other)),
        },
    }
}

/// Takes `decision` on report `report_id` for `actor` at `now`, in one transaction.
pub async fn decide(
    db: &Db,
    report_id: i64,
    actor: Actor<'_>,
    decision: Decision<'_>,
    now: DateTime<Utc>,
) -> Result<Result<Decided, DecisionError>> {
    let mut tx = db.begin().await?;
    let Some(report) = lock_report(&mut tx, report_id).await? else {
        return Ok(Err(DecisionError::NoReport(report_id)));
    };
    if let Err(e) = allowed(&decision, &actor, &report, now) {
        return Ok(Err(e));
    }
    let taken = match decision {
        Decision::Approve { confirm } => approve(&mut tx, &report, &actor, confirm, now).await?,
        Decision::Reject { reason } => {
            let reason = trimmed(reason);
            Ok(settle(&mut tx, &report, &actor, ReportState::Rejected, reason, now).await?)
        }
        Decision::Cancel { reason } => {
            let reason = trimmed(Some(reason));
            Ok(settle(
                &mut tx,
                &report,
                &actor,
                ReportState::Cancelled,
                reason,
                now,
            )
            .await?)
        }
        Decision::Keep { ids, reason } => {
            set_kept(&mut tx, &report, &actor, ids, Some(trimmed(reason)), now).await?
        }
        Decision::Unkeep { ids } => set_kept(&mut tx, &report, &actor, ids, None, now).await?,
    };
    let taken = match taken {
        Ok(taken) => taken,
        Err(refused) => return Ok(Err(refused)),
    };
    match taken.effect {
        Effect::Becomes(to, reason) => {
            let change = Change {
                at: now,
                actor: actor.ledger_name(),
                detail: taken.detail,
                reason: reason.as_deref(),
                venue: None,
            };
            change_state(&mut tx, &report, to, change).await?;
        }
        Effect::Records(event) => {
            audit::record(
                &mut tx,
                &Event {
                    at: now,
                    venue_id: report.venue_id,
                    report_id: Some(report.id),
                    event,
                    actor: actor.ledger_name(),
                    detail: taken.detail,
                },
            )
            .await?;
        }
        Effect::Nothing => {}
    }
    tx.commit().await?;
    Ok(Ok(taken.decided))
}

/// A decision taken, what it does to the report, and the ledger's words for it.
struct Taken {
    decided: Decided,
    effect: Effect,
    detail: String,
}

/// What a decision does beyond its own row.
enum Effect {
    /// The report changes state (with the reason kept with it), through
    /// [`change_state`], which writes the ledger event the transition names.
    Becomes(ReportState, Option<String>),
    /// The report stays as it is and the ledger records this event.
    Records(EventKind),
    /// Nothing more: an approval already given, or a keep that changed nothing.
    Nothing,
}

/// Locks the report for a decision (a row lock on the server backends; SQLite's write
/// transaction already serialises) and reads its current state.
async fn lock_report(tx: &mut Tx<'_>, id: i64) -> Result<Option<Report>> {
    store::reports::lock(tx, id).await?;
    reports::get_in(tx, id).await
}

/// A reason as kept: trimmed, blank as none, at most `MAX_REASON_CHARS` characters.
fn trimmed(reason: Option<&str>) -> Option<String> {
    reason
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(|r| r.chars().take(MAX_REASON_CHARS).collect())
}

/// Inserts one row of `retention_decisions`, for the kept list as it is now; `via` says whether
/// `decided_by` is an approver or an operator.
async fn record(
    tx: &mut Tx<'_>,
    report: &Report,
    actor: &Actor<'_>,
    decision: &str,
    at: DateTime<Utc>,
) -> Result<()> {
    let decided_by = match actor {
        Actor::Operator(name) if !name.trim().is_empty() => name.trim(),
        Actor::Operator(_) => "operator",
        Actor::Approver(address, _) => address,
    };
    let row = store::decisions::NewDecision {
        report_id: report.id,
        decision,
        decided_by,
        via: actor.via(),
        at,
        kept_version: report.kept_version,
    };
    store::decisions::insert(tx, &row).await
}

/// Approves: through a link `confirm` must be the number of customers not kept out, and
/// distinct approvers count (addresses compared without case), each for the kept list as it is
/// now; an operator's approval is decisive.
async fn approve(
    tx: &mut Tx<'_>,
    report: &Report,
    actor: &Actor<'_>,
    confirm: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Result<Taken, DecisionError>> {
    let Actor::Approver(approver, approvers) = *actor else {
        record(tx, report, actor, "approve", now).await?;
        return Ok(Ok(Taken {
            decided: Decided::Approved,
            effect: Effect::Becomes(ReportState::Approved, None),
            detail: format!(
                "approved on the venue's behalf for {} customers",
                report.to_approve()
            ),
        }));
    };
    let typed = confirm.map(|c| c.trim().replace(',', ""));
    if typed.and_then(|c| c.parse::<i64>().ok()) != Some(report.to_approve()) {
        return Ok(Err(DecisionError::WrongConfirmation {
            expected: report.to_approve(),
        }));
    }
    if store::decisions::approved_by(tx, report.id, approver, report.kept_version).await? {
        return Ok(Ok(Taken {
            decided: Decided::AlreadyApprovedByYou,
            effect: Effect::Nothing,
            detail: String::new(),
        }));
    }
    record(tx, report, actor, "approve", now).await?;
    let approvals = approvals_counting(tx, report, Some(approvers)).await?;
    let complete = approvals >= report.approvals_required;
    Ok(Ok(Taken {
        decided: if complete {
            Decided::Approved
        } else {
            Decided::Approval {
                approvals,
                required: report.approvals_required,
            }
        },
        effect: if complete {
            Effect::Becomes(ReportState::Approved, None)
        } else {
            Effect::Records(EventKind::Approval)
        },
        detail: format!(
            "approval {approvals} of {} through the emailed link",
            report.approvals_required
        ),
    }))
}

/// Distinct approvers who approved the kept list as it is now: all of them (`None`), or those
/// among the venue's `approvers` as configured now, whose approvals count.
async fn approvals_counting(
    tx: &mut Tx<'_>,
    report: &Report,
    approvers: Option<&[String]>,
) -> Result<i64> {
    store::decisions::approvals(tx, report.id, report.kept_version, approvers).await
}

/// Rejects or cancels: the report moves to `to`, the reason stays with the report and the
/// ledger only says whether one was given.
async fn settle(
    tx: &mut Tx<'_>,
    report: &Report,
    actor: &Actor<'_>,
    to: ReportState,
    reason: Option<String>,
    now: DateTime<Utc>,
) -> Result<Taken> {
    let (decision, decided) = if to == ReportState::Cancelled {
        ("cancel", Decided::Cancelled)
    } else {
        ("reject", Decided::Rejected)
    };
    record(tx, report, actor, decision, now).await?;
    Ok(Taken {
        decided,
        detail: reports::reason_note(reason.is_some()).into(),
        effect: Effect::Becomes(to, reason),
    })
}

/// Keeps `ids` out of the report (`keep` is `Some(reason)`) or puts them back (`None`). Every
/// id must be on the report; a change of the list withdraws the approvals given for it.
async fn set_kept(
    tx: &mut Tx<'_>,
    report: &Report,
    actor: &Actor<'_>,
    ids: &[i64],
    keep: Option<Option<String>>,
    at: DateTime<Utc>,
) -> Result<Result<Taken, DecisionError>> {
    let found: HashSet<i64> = store::items::on_report(tx, report.id, ids).await?;
    let missing: Vec<String> = ids
        .iter()
        .filter(|id| !found.contains(id))
        .map(i64::to_string)
        .collect();
    if !missing.is_empty() {
        let mut shown = missing[..missing.len().min(10)].to_vec();
        if missing.len() > 10 {
            shown.push(format!("and {} more", missing.len() - 10));
        }
        return Ok(Err(DecisionError::NotOnReport(shown.join(", "))));
    }
    let by = actor.ledger_name();
    let kept_as = keep.as_ref().map(|reason| (by.as_str(), reason.as_deref()));
    let changed = store::items::set_kept(tx, report.id, ids, kept_as, at).await?;
    let mut change = KeptChange {
        changed,
        kept: report.kept_count,
        withdrawn: 0,
    };
    let (event, decided): (_, fn(KeptChange) -> Decided) = if keep.is_some() {
        (EventKind::Kept, Decided::Kept)
    } else {
        (EventKind::Unkept, Decided::Unkept)
    };
    if changed == 0 {
        return Ok(Ok(Taken {
            decided: decided(change),
            effect: Effect::Nothing,
            detail: String::new(),
        }));
    }
    change.withdrawn = approvals_counting(tx, report, None).await?;
    change.kept += if keep.is_some() {
        changed as i64
    } else {
        -(changed as i64)
    };
    store::reports::set_kept_count(tx, report.id, change.kept).await?;
    let verb = if keep.is_some() {
        "kept out of"
    } else {
        "put back on"
    };
    let mut detail = format!(
        "{changed} customers {verb} the report; {} kept out",
        change.kept
    );
    if change.withdrawn > 0 {
        detail.push_str(&format!(
            "; {} earlier approval(s) no longer count",
            change.withdrawn
        ));
    }
    if matches!(keep, Some(Some(_))) {
        detail.push_str("; reason given, kept with the report");
    }
    Ok(Ok(Taken {
        decided: decided(change),
        effect: Effect::Records(event),
        detail,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Action;
    use chrono::TimeZone;

    fn report(state: ReportState, expires_at: DateTime<Utc>) -> Report {
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        Report {
            id: 1,
            venue_id: 1,
            action: Action::Delete,
            policy: "2 years".into(),
            cutoff: t,
            state,
            customer_count: 10,
            approvals_required: 1,
            created_at: t,
            expires_at,
            decided_at: None,
            applied_at: None,
            state_reason: None,
            kept_count: 0,
            kept_version: 0,
            venue_customers: None,
            activity_years: None,
            held_back: Default::default(),
            rule: Default::default(),
        }
    }

    #[test]
    fn who_may_decide_what_in_which_state() {
        let now = Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap();
        let live = now + chrono::Duration::days(1);
        let lapsed = now - chrono::Duration::days(1);
        let approvers = ["a@venue.example".to_string()];
        let approver = Actor::Approver("a@venue.example", &approvers);
        let operator = Actor::Operator("sam");
        let approve = Decision::Approve { confirm: None };
        let cancel = Decision::Cancel { reason: "moved" };
        let keep = Decision::Keep {
            ids: &[1],
            reason: None,
        };
        let pending = report(ReportState::Pending, live);
        for actor in [&approver, &operator] {
            assert_eq!(allowed(&approve, actor, &pending, now), Ok(()));
            assert_eq!(allowed(&keep, actor, &pending, now), Ok(()));
        }
        // Links that have lapsed decide nothing; an operator still may approve.
        let expired = report(ReportState::Pending, lapsed);
        assert_eq!(
            allowed(&approve, &approver, &expired, now),
            Err(DecisionError::NotPending(ReportState::Expired))
        );
        assert_eq!(allowed(&approve, &operator, &expired, now), Ok(()));
        assert!(allowed(&keep, &operator, &expired, now).is_err());
        // Only a cancel reaches an approved report.
        let approved = report(ReportState::Approved, live);
        assert_eq!(allowed(&cancel, &operator, &approved, now), Ok(()));
        for actor in [&approver, &operator] {
            assert_eq!(
                allowed(&approve, actor, &approved, now),
                Err(DecisionError::NotPending(ReportState::Approved))
            );
        }
        let applied = report(ReportState::Applied, live);
        assert_eq!(
            allowed(&cancel, &operator, &applied, now),
            Err(DecisionError::NotCancellable(ReportState::Applied))
        );
    }

    #[test]
    fn operators_are_named_as_operators_in_the_ledger() {
        assert_eq!(Actor::Operator(" sam ").ledger_name(), "operator:sam");
        assert_eq!(Actor::Operator("").ledger_name(), "operator");
        assert_eq!(
            Actor::Approver("A@x.example", &[]).ledger_name(),
            "A@x.example"
        );
        assert_eq!(trimmed(Some("  ")), None);
        assert_eq!(
            trimmed(Some(&"x".repeat(3000))).unwrap().len(),
            MAX_REASON_CHARS
        );
    }
}
