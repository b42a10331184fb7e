//! Applying an approved report (SPEC 3): batches of customers, each in one transaction that
//! re-checks every customer against the policy as of the apply cycle, deletes or anonymises
//! those still eligible, and records every customer's outcome. A process killed at any moment
//! leaves each customer fully processed or untouched, and the next cycle resumes where it stopped.

use crate::config::VenueConfig;
use crate::db::{DeadlinePassed, Tx, Writer};
use crate::erase::Eraser;
use crate::journal::{Journal, Line as JournalLine};
use crate::policy::{Action, Outcome, ReportState};
use crate::reports::{self, Report};
use crate::run::RunContext;
use crate::selection::Scope;
use crate::store::items;
use crate::transition::{change_state, Change};
use crate::Service;
use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};
use tracing::info;

/// What one apply run did.
#[derive(Debug, Clone, Serialize)]
pub struct ApplySummary {
    pub report_id: i64,
    pub action: Action,
    /// Outcomes recorded by this run.
    pub counts: BTreeMap<Outcome, u64>,
    /// Whether the report is now fully applied (false when stopped by shutdown).
    pub finished: bool,
    /// Batches (transactions) this run committed, and the longest one in milliseconds (batches
    /// given up at their deadline included).
    pub batches: u64,
    pub longest_batch_ms: u64,
    /// Batches rolled back at their deadline and retried smaller (PostgreSQL; see `apply_report`).
    pub batches_given_up: u64,
}

impl ApplySummary {
    pub fn processed(&self) -> u64 {
        self.counts.values().sum()
    }
}

/// Applies `report` (approved, or applying after an interrupted run) as of `at`.
pub async fn apply_report(
    svc: &Service,
    run: &RunContext,
    venue: &VenueConfig,
    report: &Report,
    at: DateTime<Utc>,
) -> Result<ApplySummary> {
    // The journal must be writable before any customer is touched; catching up also adds what
    // a crash between a commit and its journal lines left out.
    let journal = Journal::open(svc).await?;
    if let Some(journal) = &journal {
        let added = journal.catch_up(&svc.db, None).await?;
        if added > 0 {
            tracing::warn!(
                report.id = report.id,
                lines = added,
                "erasure journal caught up from the ledger"
            );
        }
    }
    if report.state != ReportState::Approved && report.state != ReportState::Applying {
        bail!(
            "report {} is {}, only an approved report can be applied",
            report.id,
            report.state
        );
    }
    let configured = venue.rule(report.rule).1;
    if report.action != configured {
        bail!(
            "report {} was made for {} but venue {} is now configured to {} (its {} rule); cancel it",
            report.id,
            report.action.as_str(),
            venue.id,
            configured.as_str(),
            report.rule.as_str()
        );
    }

    let scope = Scope::for_rule(&svc.config, svc.db.backend(), venue, at, report.rule);
    // An approved report's items are all still to do (those kept out are counted as they are
    // recorded); an interrupted one's are counted.
    let left = if report.state == ReportState::Approved {
        report.customer_count.max(0) as u64
    } else {
        items::unprocessed(&svc.db, report.id).await?
    };
    // Until the transaction that marks the report applying commits, every batch's transaction
    // starts by doing so (a batch rolled back at its deadline rolls that back too).
    let mut to_start = report.state == ReportState::Approved;
    let applying = Report {
        state: ReportState::Applying,
        ..report.clone()
    };
    svc.progress.start(
        format!("report {} ({})", report.id, report.action.as_str()),
        left,
    );
    let mut counts: BTreeMap<Outcome, u64> = BTreeMap::new();
    let (mut after_id, mut batches, mut longest_batch_ms) = (i64::MIN, 0_u64, 0_u64);
    let mut batches_given_up = 0_u64;
    // Where the database can stop a statement midway, a batch that overruns the ceiling twice
    // over is stopped and rolled back, and its customers retried in a batch half the size. Not at
    // the ceiling itself: batches are sized to end near it, and stopping every one that ran a
    // little long threw away one batch in eight (PostgreSQL, 1,000,000 customers). A tenth is
    // left for the commit and the rollback. A batch of one customer is never stopped, so that
    // every customer is processed however slow.
    let deadline_after =
        Duration::from_millis(u64::from(svc.config.max_transaction_ms) * 2 * 9 / 10);
    // What the run's earlier reports of this action taught the sizer (a fleet applies hundreds
    // of small reports: each starting again at the first batch's 50 customers cost a batch more
    // each); a single report starts from scratch.
    let mut sizer = run.batch_sizer(svc, report.action);
    // On SQLite no batch's commit checkpoints the write-ahead log: apply does it between
    // batches, outside any transaction, each time enough was written to it (`db::sqlite_wal`),
    // and before its first batch when earlier writers already left that much.
    let _deferral = svc.db.defer_wal_checkpoints();
    // Every batch on one connection, which keeps the pages the last batches read and wrote
    // (SQLite; see `db::Writer`), when the report takes more than one batch: a fleet's small
    // reports, one batch each, gain nothing from it and paid two statements more each.
    let several_batches = left > u64::from(sizer.next());
    let mut writer = svc.db.writer(several_batches).await?;
    checkpoint_if_long(&mut writer, report.id).await;
    loop {
        if svc.shutdown.is_cancelled() {
            svc.progress.finish();
            release(writer, report.id).await;
            info!(
                venue.id = venue.id,
                report.id = report.id,
                "stopping apply for shutdown; the next cycle resumes"
            );
            return Ok(ApplySummary {
                report_id: report.id,
                action: report.action,
                counts,
                finished: false,
                batches,
                longest_batch_ms,
                batches_given_up,
            });
        }
        let started = Instant::now();
        let mut tx = writer.begin().await?;
        let begin_ms = started.elapsed().as_millis() as u64;
        let kept = if to_start {
            start(&mut tx, venue, report, at).await?
        } else {
            0
        };
        let asked = sizer.next();
        let ids = items::next_unprocessed(&mut tx, report.id, after_id, asked).await?;
        let next_ms = started.elapsed().as_millis() as u64 - begin_ms;
        if ids.is_empty() {
            if !finish_if_done(&mut tx, venue, &applying, at).await? {
                bail!("report {}: customers without an outcome were not found by the batch that looked for them", report.id);
            }
            tx.commit().await?;
            note_kept(kept);
            svc.progress.finish();
            // The run scrubs the database files once, after its last apply (SPEC 11).
            break;
        }
        relax_commit_flush(&mut tx).await?;
        if ids.len() > 1 {
            tx.set_deadline(started + deadline_after);
        }
        let batch = match apply_batch(svc, &mut tx, &scope, report, &ids, at).await {
            Err(e) if e.downcast_ref::<DeadlinePassed>().is_some() => {
                drop(tx);
                let duration_ms = started.elapsed().as_millis() as u64;
                longest_batch_ms = longest_batch_ms.max(duration_ms);
                batches_given_up += 1;
                sizer.gave_up(ids.len() as u32, duration_ms);
                metrics::counter!("retentiond_batches_given_up_total").increment(1);
                tracing::debug!(
                    venue.id = venue.id,
                    report.id = report.id,
                    batch.size = ids.len(),
                    duration_ms,
                    retry_size = sizer.next(),
                    "batch stopped at its deadline and rolled back; retrying smaller"
                );
                continue;
            }
            result => result.with_context(|| {
                format!(
                    "report {}: a batch of {} customers failed and was rolled back",
                    report.id,
                    ids.len()
                )
            })?,
        };
        // A batch shorter than asked was the report's last: it is finished in the same
        // transaction (one commit less per report; a fleet applies hundreds of small ones).
        let finished_here =
            (ids.len() as u32) < asked && finish_if_done(&mut tx, venue, &applying, at).await?;
        let before_commit = Instant::now();
        tx.commit().await?;
        let commit_ms = before_commit.elapsed().as_millis() as u64;
        to_start = false;
        note_kept(kept);
        if let Some(journal) = &journal {
            journal.append(journal_lines(venue, report, &batch, at))?;
        }
        let duration_ms = started.elapsed().as_millis() as u64;
        after_id = *ids.last().expect("a batch is never empty");
        batches += 1;
        longest_batch_ms = longest_batch_ms.max(duration_ms);
        // Sized by the whole transaction, its commit included: the commit is where SQLite
        // writes the batch's pages to its log, and the longest batches were long there.
        sizer.observe(ids.len() as u32, duration_ms);
        for (outcome, ids) in &batch {
            let n = ids.len() as u64;
            *counts.entry(*outcome).or_default() += n;
            metrics::counter!("retentiond_customers_total", "outcome" => outcome.as_str())
                .increment(n);
        }
        checkpoint_if_long(&mut writer, report.id).await;
        svc.progress.advance(ids.len() as u64);
        if finished_here {
            svc.progress.finish();
            break;
        }
        // One line a batch is hundreds for a large report: debug, with the progress bar and
        // the summary for people.
        tracing::debug!(
            venue.id = venue.id,
            report.id = report.id,
            batch.size = ids.len(),
            batch.first_customer_id = ids[0],
            duration_ms,
            begin_ms,
            next_ms,
            commit_ms,
            "batch applied"
        );
    }
    // Released first: on SQLite a cycle holds one connection at a time (`config::connections_per_cycle`).
    release(writer, report.id).await;
    if let Some(journal) = &journal {
        journal.catch_up(&svc.db, Some(report.id)).await?;
    }
    run.keep_batch_sizer(report.action, sizer);
    Ok(ApplySummary {
        report_id: report.id,
        action: report.action,
        counts,
        finished: true,
        batches,
        longest_batch_ms,
        batches_given_up,
    })
}

/// Marks an approved report applying, with the customers an approver kept out recorded as kept
/// (so no batch ever reads them) and the ledger's `apply_started`: inside the report's first
/// batch's transaction, so a report of one batch costs one transaction, not three.
async fn start(
    tx: &mut Tx<'_>,
    venue: &VenueConfig,
    report: &Report,
    at: DateTime<Utc>,
) -> Result<u64> {
    let change = Change {
        at,
        actor: "retentiond".into(),
        detail: format!(
            "{} of {} customers",
            report.action.as_str(),
            report.customer_count
        ),
        reason: None,
        venue: Some(venue),
    };
    change_state(tx, report, ReportState::Applying, change).await?;
    items::record_kept(tx, report.id, at).await
}

/// Checkpoints SQLite's write-ahead log between batches when it is long. Only speed and the
/// log's size depend on it (the commit hook is the backstop), so a failure is logged and apply
/// goes on.
async fn checkpoint_if_long(writer: &mut Writer<'_>, report_id: i64) {
    let started = Instant::now();
    match writer.checkpoint_if_long().await {
        Ok(true) => tracing::debug!(
            report.id = report_id,
            checkpoint_ms = started.elapsed().as_millis() as u64,
            "checkpointed"
        ),
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(report.id = report_id, error = %e, "cannot checkpoint the write-ahead log")
        }
    }
}

/// Lends the batches' connection back to the pool. Only the pool's memory depends on it (a
/// connection whose cache cannot be set back is closed), so a failure is logged and apply goes
/// on.
async fn release(writer: Writer<'_>, report_id: i64) {
    if let Err(e) = writer.release().await {
        tracing::warn!(report.id = report_id, error = %e, "cannot lend the batches' connection back");
    }
}

/// On PostgreSQL, a batch's commit does not wait for its WAL to reach the disk
/// (`synchronous_commit = off` for this transaction only). Its row locks are then released at
/// once instead of after the flush, which under a checkpoint took up to 640 ms with the box
/// office waiting. Nothing is given up that matters here: the batch is still atomic, and a
/// database crash can only lose the last batches whole (customers and their recorded outcomes
/// together), which the next cycle then applies again. The report's completion (and its
/// confirmation email) commits synchronously, which flushes every batch before it.
async fn relax_commit_flush(tx: &mut Tx<'_>) -> Result<()> {
    tx.relax_commit_flush().await
}

fn note_kept(kept: u64) {
    if kept > 0 {
        metrics::counter!("retentiond_customers_total", "outcome" => Outcome::Kept.as_str())
            .increment(kept);
    }
}

/// Marks the applying `report` applied, with the ledger entry, when every customer has an
/// outcome; false (and nothing changed) while some have none.
/// The approvers' confirmation is queued in the same transaction, so exactly one is sent.
async fn finish_if_done(
    tx: &mut Tx<'_>,
    venue: &VenueConfig,
    report: &Report,
    at: DateTime<Utc>,
) -> Result<bool> {
    let mut by_outcome: BTreeMap<String, i64> = BTreeMap::new();
    let mut holds: Vec<(String, u64)> = Vec::new();
    for (outcome, hold, n) in items::outcomes_by_hold(tx, report.id).await? {
        let Some(outcome) = outcome else {
            return Ok(false);
        };
        *by_outcome.entry(outcome).or_default() += n;
        if let Some(hold) = hold {
            holds.push((hold, n as u64));
        }
    }
    let parts: Vec<String> = by_outcome
        .iter()
        .map(|(outcome, n)| format!("{outcome} {n}"))
        .collect();
    let mut detail = parts.join(", ");
    if !holds.is_empty() {
        detail.push_str(&format!(" (held: {})", reports::holds_in_words(&holds)));
    }
    let change = Change {
        at,
        actor: "retentiond".into(),
        detail,
        reason: None,
        venue: Some(venue),
    };
    change_state(tx, report, ReportState::Applied, change).await?;
    Ok(true)
}

/// The journal lines of a committed batch: its erased customers.
fn journal_lines(
    venue: &VenueConfig,
    report: &Report,
    batch: &BTreeMap<Outcome, Vec<i64>>,
    at: DateTime<Utc>,
) -> Vec<JournalLine> {
    batch
        .iter()
        .filter(|(outcome, _)| !outcome.is_skip())
        .flat_map(|(outcome, ids)| {
            ids.iter().map(move |id| JournalLine {
                report_id: report.id,
                venue_id: venue.id,
                customer_id: *id,
                action: report.action.as_str().to_string(),
                outcome: outcome.as_str().to_string(),
                at,
                database: None,
                mac: None,
            })
        })
        .collect()
}

/// One batch inside `tx`: re-check, act on those still eligible, record every outcome.
/// Returns the customer ids by outcome.
async fn apply_batch(
    svc: &Service,
    tx: &mut Tx<'_>,
    scope: &Scope<'_>,
    report: &Report,
    ids: &[i64],
    at: DateTime<Utc>,
) -> Result<BTreeMap<Outcome, Vec<i64>>> {
    let phase = Instant::now();
    let eligible_set: HashSet<i64> = crate::selection::still_candidates(tx, scope, ids).await?;
    let recheck_ms = phase.elapsed().as_millis() as u64;
    let eligible: Vec<i64> = ids
        .iter()
        .copied()
        .filter(|id| eligible_set.contains(id))
        .collect();
    let skipped: Vec<i64> = ids
        .iter()
        .copied()
        .filter(|id| !eligible_set.contains(id))
        .collect();

    let mut outcomes: BTreeMap<Outcome, Vec<i64>> = BTreeMap::new();
    let mut held_by: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    if !skipped.is_empty() {
        for (id, outcome, hold) in classify_skipped(tx, scope, &skipped).await? {
            outcomes.entry(outcome).or_default().push(id);
            if let Some(hold) = hold {
                held_by.entry(hold).or_default().push(id);
            }
        }
    }
    let phase = Instant::now();
    if !eligible.is_empty() {
        let eraser = Eraser::new(svc, scope.venue);
        match report.action {
            Action::Delete => eraser.delete(tx, &eligible, at).await?,
            Action::Anonymise => eraser.anonymise(tx, report.id, &eligible, at).await?,
        }
        let done = if report.action == Action::Delete {
            Outcome::Deleted
        } else {
            Outcome::Anonymised
        };
        outcomes.insert(done, eligible);
    }
    let action_ms = phase.elapsed().as_millis() as u64;
    let phase = Instant::now();
    for (outcome, ids) in &outcomes {
        let updated = items::record_outcome(tx, report.id, *outcome, ids, at).await?;
        if updated != ids.len() as u64 {
            bail!("recorded {updated} outcomes for {} customers; another process is applying this report", ids.len());
        }
    }
    for (hold, ids) in &held_by {
        items::record_held_by(tx, report.id, hold, ids).await?;
    }
    tracing::debug!(
        report.id = report.id,
        recheck_ms,
        action_ms,
        record_ms = phase.elapsed().as_millis() as u64,
        "batch phases"
    );
    Ok(outcomes)
}

/// Why each of `ids` is no longer a candidate, and for one under a hold, the hold's name.
async fn classify_skipped(
    tx: &mut Tx<'_>,
    scope: &Scope<'_>,
    ids: &[i64],
) -> Result<Vec<(i64, Outcome, Option<String>)>> {
    let found: BTreeMap<i64, bool> = crate::selection::venues_of(tx, scope, ids)
        .await?
        .into_iter()
        .map(|(id, venue)| (id, venue == scope.venue.id))
        .collect();
    let of_venue: Vec<i64> = found
        .iter()
        .filter(|(_, same)| **same)
        .map(|(id, _)| *id)
        .collect();
    let mut held = if of_venue.is_empty() {
        Default::default()
    } else {
        scope.holding(tx, &of_venue).await?
    };
    // Anonymised since the report was made (on request, SPEC 13): gone, as a deleted one is.
    let erased = if of_venue.is_empty() {
        HashSet::new()
    } else {
        crate::store::anonymised::among(tx, &of_venue).await?
    };
    Ok(ids
        .iter()
        .map(|id| {
            let hold = held.remove(id);
            let outcome = match found.get(id) {
                _ if erased.contains(id) => Outcome::SkippedGone,
                None => Outcome::for_skipped(false, false, false),
                Some(&same_venue) => Outcome::for_skipped(true, same_venue, hold.is_some()),
            };
            (*id, outcome, hold)
        })
        .collect())
}

/// For dry runs: of a report's remaining customers, how many would be acted on now.
pub async fn preview(
    svc: &Service,
    venue: &VenueConfig,
    report: &Report,
    at: DateTime<Utc>,
) -> Result<(u64, u64)> {
    let scope = Scope::for_rule(&svc.config, svc.db.backend(), venue, at, report.rule);
    let mut tx = svc.db.begin().await?;
    let remaining = items::unprocessed_ids(&mut tx, report.id).await?;
    let eligible: HashSet<i64> =
        crate::selection::still_candidates(&mut tx, &scope, &remaining).await?;
    drop(tx); // rolls back: a dry run changes nothing
    Ok((
        eligible.len() as u64,
        (remaining.len() - eligible.len()) as u64,
    ))
}
