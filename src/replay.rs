//! `retentiond replay JOURNAL` (SPEC 9): after a database was restored from a backup, every
//! erasure in the journal is applied again, without a new approval (it was approved), with the
//! venue's current configuration, in crash-safe batches. A customer that no longer exists, or
//! is already anonymised, is counted and skipped, so a second replay changes nothing.

use crate::audit::{self, Event, EventKind};
use crate::customers::lookup;
use crate::erase::Eraser;
use crate::journal;
use crate::policy::Action;
use crate::{store, Service};
use anyhow::{bail, Result};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use tracing::info;

/// What a replay did (or, dry, would do).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplaySummary {
    pub lines: u64,
    /// Distinct customers the journal names.
    pub customers: u64,
    pub deleted: u64,
    pub anonymised: u64,
    /// No longer in the database: nothing to do.
    pub already_gone: u64,
    /// Still there but already anonymised (or now of another venue): left alone.
    pub already_erased: u64,
    /// Lines without a signature, accepted with `--accept-unsigned`.
    pub unsigned_accepted: u64,
    pub dry_run: bool,
}

/// One venue's erasures of one report and action.
type Group = (i64, Action, i64);

/// How a replay runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReplayOptions {
    /// Count only; change nothing.
    pub dry_run: bool,
    /// Accept lines written before journal lines were signed (`--accept-unsigned`).
    pub accept_unsigned: bool,
}

/// Replays the journal at `path` as of `at`. Every line is checked before anything changes:
/// its signature and database, its venue and that venue's action, that its customer is not an
/// Unknown Customer, and that the ledger, where it knows the line's report, tells the same.
pub async fn run(
    svc: &Service,
    path: &Path,
    options: ReplayOptions,
    at: DateTime<Utc>,
) -> Result<ReplaySummary> {
    let dry_run = options.dry_run;
    let lines = journal::read_all(path)?;
    let mut summary = ReplaySummary {
        lines: lines.len() as u64,
        dry_run,
        ..ReplaySummary::default()
    };
    summary.unsigned_accepted = verify_lines(svc, path, &lines, options.accept_unsigned).await?;
    let mut groups: BTreeMap<Group, BTreeSet<i64>> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for (_, line) in &lines {
        let action = if line.action == "delete" {
            Action::Delete
        } else {
            Action::Anonymise
        };
        if seen.insert(line.customer_id) {
            groups
                .entry((line.venue_id, action, line.report_id))
                .or_default()
                .insert(line.customer_id);
        }
    }
    summary.customers = seen.len() as u64;
    let venues: BTreeSet<i64> = groups.keys().map(|(v, _, _)| *v).collect();
    crate::check::ensure_fit(&svc.db, &svc.config).await?;
    for venue_id in &venues {
        let venue = svc.config.venue(*venue_id).expect("verified");
        crate::check::ensure_all_classified(&svc.db, &svc.config, venue).await?;
    }
    svc.progress
        .start(format!("replay of {}", path.display()), summary.customers);
    for venue_id in venues {
        let venue = svc.config.venue(venue_id).expect("checked above");
        let Some(lock) = svc.db.try_lock_venue(venue_id).await? else {
            bail!("venue {venue_id}'s cycle is running in another process; replay again once it has finished");
        };
        let before = (summary.deleted, summary.anonymised);
        let outcome = async {
            for ((_, action, report_id), ids) in
                groups.iter().filter(|((v, _, _), _)| *v == venue_id)
            {
                let ids: Vec<i64> = ids.iter().copied().collect();
                for chunk in ids.chunks(svc.config.batch_size as usize) {
                    replay_batch(
                        svc,
                        venue,
                        *action,
                        *report_id,
                        chunk,
                        dry_run,
                        at,
                        &mut summary,
                    )
                    .await?;
                    svc.progress.advance(chunk.len() as u64);
                }
            }
            anyhow::Ok(())
        }
        .await;
        let _ = lock.release().await;
        outcome?;
        let (deleted, anonymised) = (summary.deleted - before.0, summary.anonymised - before.1);
        if !dry_run && deleted + anonymised > 0 {
            let mut tx = svc.db.begin().await?;
            audit::record(
                &mut tx,
                &Event {
                    at,
                    venue_id,
                    report_id: None,
                    event: EventKind::Replayed,
                    actor: "operator".into(),
                    detail: format!("{deleted} deleted and {anonymised} anonymised again from the erasure journal after a restore"),
                },
            )
            .await?;
            tx.commit().await?;
        }
    }
    svc.progress.finish();
    if !dry_run && summary.deleted + summary.anonymised > 0 {
        crate::erase::scrub_files(svc).await;
    }
    Ok(summary)
}

/// Checks every line before anything is replayed; the first that fails is named by its line
/// number with the reason, and nothing is replayed. Returns how many unsigned lines were
/// accepted.
async fn verify_lines(
    svc: &Service,
    path: &Path,
    lines: &[(usize, journal::Line)],
    accept_unsigned: bool,
) -> Result<u64> {
    let signer = journal::signer(svc).await?;
    let ledger = Ledger::read(svc, lines).await?;
    let mut unsigned = 0;
    for (number, line) in lines {
        let refuse = |reason: String| {
            anyhow::anyhow!(
                "{}:{number}: {reason}; nothing was replayed",
                path.display()
            )
        };
        match signer.verify(line) {
            Ok(()) => {}
            Err(journal::Unsigned::Old) if accept_unsigned => unsigned += 1,
            Err(journal::Unsigned::Old) => return Err(refuse(
                "the line is not signed (written before retentiond signed its journal lines, or by hand); if this journal is the one retentiond wrote, replay with --accept-unsigned".into(),
            )),
            Err(journal::Unsigned::BadMac) => return Err(refuse(
                "the line's signature does not verify: it was changed or written by hand, or signed with another secrets.hash_key".into(),
            )),
            Err(journal::Unsigned::OtherDatabase(theirs)) => return Err(refuse(format!(
                "the line was written for another database (identity {theirs}; this database is {})",
                signer.database()
            ))),
        }
        let venue = svc.config.venue(line.venue_id).ok_or_else(|| {
            refuse(format!(
                "venue {} is in the journal but not in {}",
                line.venue_id, svc.config.file
            ))
        })?;
        if !venue.actions().iter().any(|a| a.as_str() == line.action) {
            return Err(refuse(format!(
                "the line says {} but venue {} is configured to {}",
                line.action,
                venue.id,
                venue
                    .actions()
                    .iter()
                    .map(|a| a.as_str())
                    .collect::<Vec<_>>()
                    .join(" and ")
            )));
        }
        if venue.unknown_customer_id == Some(line.customer_id)
            || ledger.unknown.contains(&(line.venue_id, line.customer_id))
        {
            return Err(refuse(format!(
                "customer {} is venue {}'s Unknown Customer, which is never erased",
                line.customer_id, line.venue_id
            )));
        }
        if let Some((venue_id, action)) = ledger.reports.get(&line.report_id) {
            if *venue_id != line.venue_id || *action != line.action {
                return Err(refuse(format!(
                    "the ledger has report {} as a {action} report of venue {venue_id}, the line says {} of venue {}",
                    line.report_id, line.action, line.venue_id
                )));
            }
            match ledger.items.get(&(line.report_id, line.customer_id)) {
                None => {
                    return Err(refuse(format!(
                        "the ledger has no customer {} on report {}",
                        line.customer_id, line.report_id
                    )))
                }
                Some(Some(outcome)) if *outcome != line.outcome => {
                    return Err(refuse(format!(
                        "the ledger has customer {} of report {} as {outcome}, the line says {}",
                        line.customer_id, line.report_id, line.outcome
                    )))
                }
                Some(_) => {}
            }
        }
    }
    Ok(unsigned)
}

/// What the ledger knows of a journal's reports and customers.
struct Ledger {
    /// Report id to venue and action.
    reports: BTreeMap<i64, (i64, String)>,
    /// (report, customer) to its recorded outcome, if any.
    items: std::collections::HashMap<(i64, i64), Option<String>>,
    /// (venue, customer) of every Unknown Customer retentiond made.
    unknown: std::collections::HashSet<(i64, i64)>,
}

impl Ledger {
    async fn read(svc: &Service, lines: &[(usize, journal::Line)]) -> Result<Ledger> {
        let report_ids: Vec<i64> = lines
            .iter()
            .map(|(_, l)| l.report_id)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut reports = BTreeMap::new();
        let mut items = std::collections::HashMap::new();
        for chunk in report_ids.chunks(1000) {
            for (id, venue, action) in store::reports::venues_and_actions(&svc.db, chunk).await? {
                reports.insert(id, (venue, action));
            }
            items.extend(store::items::outcomes_of(&svc.db, chunk).await?);
        }
        let unknown = store::anonymised::unknown_customers(&svc.db).await?;
        Ok(Ledger {
            reports,
            items,
            unknown,
        })
    }
}

/// One batch in one transaction: erase the customers still there and not yet erased, and
/// record them as `replayed` in the ledger. Dry, it only counts.
#[allow(clippy::too_many_arguments)]
async fn replay_batch(
    svc: &Service,
    venue: &crate::config::VenueConfig,
    action: Action,
    report_id: i64,
    ids: &[i64],
    dry_run: bool,
    at: DateTime<Utc>,
    summary: &mut ReplaySummary,
) -> Result<()> {
    let s = &svc.config.schema;
    let mut tx = svc.db.begin().await?;
    let backend = tx.backend();
    let q = lookup::still_personal(backend, s, venue.id, ids);
    let present: Vec<i64> = tx
        .fetch_all(&q)
        .await?
        .iter()
        .map(|r| r.i64(0))
        .collect::<Result<_>>()?;
    let exists = lookup::count_existing(backend, s, ids);
    let existing = tx.fetch_one(&exists).await?.i64(0)? as u64;
    summary.already_gone += ids.len() as u64 - existing;
    summary.already_erased += existing - present.len() as u64;
    if dry_run || present.is_empty() {
        match action {
            Action::Delete => summary.deleted += present.len() as u64,
            Action::Anonymise => summary.anonymised += present.len() as u64,
        }
        return Ok(()); // a dry run only counts (nothing written, no sequence value taken)
    }
    let eraser = Eraser::new(svc, venue);
    match action {
        Action::Delete => eraser.delete(&mut tx, &present, at).await?,
        Action::Anonymise => eraser.anonymise(&mut tx, report_id, &present, at).await?,
    }
    store::replays::record(&mut tx, venue.id, action, report_id, &present, at).await?;
    match action {
        Action::Delete => summary.deleted += present.len() as u64,
        Action::Anonymise => summary.anonymised += present.len() as u64,
    }
    tx.commit().await?;
    info!(
        venue.id = venue.id,
        report.id = report_id,
        batch.size = present.len(),
        "erasures replayed"
    );
    Ok(())
}

/// The `replayed` outcomes recorded in the ledger, for `audit`.
pub async fn replayed(
    db: &crate::db::Db,
    venue_id: Option<i64>,
) -> Result<Vec<(i64, i64, DateTime<Utc>)>> {
    store::replays::list(db, venue_id).await
}
