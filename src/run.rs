//! What one run of many venue cycles shares (SPEC 11): the checks that hold for the whole run,
//! done once; every venue's open reports read once; a fleet dry run's counts for all venues at
//! once; what must happen once after the run's last cycle (the planner's statistics, the
//! scrubbing of the database files); and the run's one alert naming every venue that failed.
//! [`crate::fleet`] schedules the cycles; [`crate::cycle`] runs one; both share this.

use crate::check;
use crate::config::VenueConfig;
use crate::introspect::ColumnInfo;
use crate::selection::Scope;
use crate::{mail, policy, Service};
use anyhow::Result;
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::OnceCell;
use tracing::error;

/// The most venues one alert names line by line; the rest are counted.
const ALERT_LINES: usize = 200;

/// What one run shares between its venue cycles: the checks that hold for the whole run, done
/// once, and what must happen once after the run's last cycle.
#[derive(Default)]
pub struct RunContext {
    fit: OnceCell<Result<(), String>>,
    columns: OnceCell<BTreeMap<String, Vec<ColumnInfo>>>,
    open: OnceCell<OpenReports>,
    forgotten: OnceCell<()>,
    reports_made: AtomicBool,
    /// The apply batch sizers of the run's reports, by action, carried from report to report.
    sizers: Mutex<BTreeMap<policy::Action, policy::BatchSizer>>,
    /// A fleet's run: each selecting venue's candidates and customers, counted for all at once
    /// before the cycles ([`RunContext::count_selecting_venues`]).
    counts: OnceCell<HashMap<i64, (u64, u64)>>,
    /// The same count: what the holds keep back of each selecting venue.
    held: OnceCell<HashMap<i64, crate::selection::HeldBack>>,
    applied: AtomicBool,
    /// A fleet's run: the venues whose cycle applied a report and left its new selection to the
    /// run ([`RunContext::defer_selection`]); `None` when the run does not defer.
    selecting_after_applies: Mutex<Option<Vec<i64>>>,
}

/// Every venue's open reports and the time of its last report, read once per run.
type OpenReports = (
    HashMap<i64, Vec<policy::OpenReport>>,
    HashMap<i64, DateTime<Utc>>,
);

impl RunContext {
    pub fn new() -> Arc<RunContext> {
        Arc::new(RunContext::default())
    }

    /// `check::ensure_fit` once per run: the customer tables can be written safely.
    pub async fn ensure_fit(&self, svc: &Service) -> Result<()> {
        self.fit
            .get_or_init(|| async {
                let columns = self.catalogue(svc).await.map_err(|e| format!("{e:#}"))?;
                check::ensure_fit_with(&svc.db, &svc.config, columns)
                    .await
                    .map_err(|e| format!("{e:#}"))
            })
            .await
            .clone()
            .map_err(anyhow::Error::msg)
    }

    /// The tables' columns the run's checks judge ([`check::read_catalogue`]), read once per run.
    async fn catalogue(&self, svc: &Service) -> Result<&BTreeMap<String, Vec<ColumnInfo>>> {
        self.columns
            .get_or_try_init(|| check::read_catalogue(&svc.db, &svc.config))
            .await
    }

    /// `check::ensure_all_classified` for `venue`, with the tables' columns read once per run.
    pub async fn ensure_all_classified(&self, svc: &Service, venue: &VenueConfig) -> Result<()> {
        let columns = self.catalogue(svc).await?;
        match check::unclassified(&svc.config, venue, columns) {
            Some(refusal) => Err(refusal.into()),
            None => Ok(()),
        }
    }

    /// Why `venue`'s cycle at `at` would change nothing ([`policy::nothing_to_do`]), judged on
    /// every venue's open reports read once for the run: such a venue is answered for without
    /// its lock or a statement of its own, so an idle night costs a few statements, not a few
    /// per venue. (An approval given after the run read the reports waits for the next run, as
    /// one given just after a venue's cycle does.)
    pub async fn nothing_to_do(
        &self,
        svc: &Service,
        venue: &VenueConfig,
        at: DateTime<Utc>,
    ) -> Result<Option<policy::NoNewReport>> {
        if venue.prospects.is_some() {
            // Two rules, each with its own open report and interval: the venue's cycle judges.
            return Ok(None);
        }
        let (open, last) = self
            .open
            .get_or_try_init(|| crate::reports::open_by_venue(&svc.db))
            .await?;
        Ok(policy::nothing_to_do(
            open.get(&venue.id).map_or(&[][..], |r| r.as_slice()),
            last.get(&venue.id).copied(),
            venue.report_interval,
            svc.config.approval.remind_after,
            at,
        ))
    }

    /// Whether `venue`'s cycle at `at` is answered from what the run has read for all its
    /// venues, with no statement of its own: a dry run's venue counted by
    /// [`RunContext::count_selecting_venues`], a real run's venue counted there with no
    /// candidate ([`RunContext::counted_none`]), or a venue with nothing to do
    /// ([`RunContext::nothing_to_do`]). A read that fails says no: the cycle meets it again.
    pub async fn answers_from_its_reads(
        &self,
        svc: &Service,
        venue: &VenueConfig,
        at: DateTime<Utc>,
        dry_run: bool,
    ) -> bool {
        if dry_run && self.counted(venue.id).is_some() {
            return true;
        }
        if !dry_run && self.counted_none(venue.id) {
            return true;
        }
        matches!(self.nothing_to_do(svc, venue, at).await, Ok(Some(_)))
    }

    /// Counts, for a run of `venues`, the candidates and customers of every venue that would
    /// select (no open report, `report_interval` passed) in a few statements for them all
    /// ([`crate::selection::count_by_venue`]), before the venues' cycles. A fleet's dry run
    /// then costs about one pass over its customers: each venue's cycle reads its counts from
    /// here. A real run's venue counted with no candidate (most venues, most nights, once
    /// their first report is done) is answered "no customers fall under the policy" from here
    /// too, with no lock, transaction or scan of its own; a venue with candidates cycles and
    /// selects as ever. A real run counts only venues that made a report before: a venue's
    /// first selection finds its whole backlog, so counting it first would only read its
    /// customers twice (a whole pass more on a fleet's first night).
    pub async fn count_selecting_venues(
        &self,
        svc: &Service,
        venues: &[VenueConfig],
        at: DateTime<Utc>,
        dry_run: bool,
    ) -> Result<()> {
        let (open, last) = self
            .open
            .get_or_try_init(|| crate::reports::open_by_venue(&svc.db))
            .await?;
        let selecting: Vec<&VenueConfig> = venues
            .iter()
            // A venue with prospects selects by two rules: it counts its own.
            .filter(|v| v.prospects.is_none())
            .filter(|v| dry_run || last.contains_key(&v.id))
            .filter(|v| may_create_report(open, last, v, at).is_ok())
            .collect();
        if selecting.is_empty() {
            return Ok(());
        }
        let scopes = fleet_scopes(svc, &selecting, at).await?;
        // The run's checks (the tables fit, their columns are classified) read the catalogue
        // on a connection of their own meanwhile, so the dry run costs about the count alone
        // (they were a tenth of MariaDB's dry run of 250 venues). A check that fails is met
        // again by each venue's cycle, which reports it.
        let (counted, _) = tokio::join!(
            crate::selection::dry_run_by_venue(&svc.db, &scopes),
            self.ensure_fit(svc),
        );
        let counted = counted?;
        let counts = counted
            .iter()
            .map(|(venue, (candidates, customers, _))| (*venue, (*candidates, *customers)))
            .collect();
        let held = counted
            .into_iter()
            .map(|(venue, (_, _, held))| (venue, held))
            .collect();
        let _ = self.counts.set(counts);
        let _ = self.held.set(held);
        Ok(())
    }

    /// From now on, a venue whose cycle applied a report and may make a new one leaves that
    /// selection to the run: after its applies, the run counts every such venue's candidates in
    /// one statement and cycles again only the venues that have any (SPEC 11: the selection
    /// after an apply mostly finds nobody, and cost a fleet's apply night a transaction, a
    /// report row and a scan per venue).
    pub fn defer_selections_after_applies(&self) {
        *self
            .selecting_after_applies
            .lock()
            .expect("deferred selections") = Some(Vec::new());
    }

    /// Whether `venue_id`'s cycle leaves its selection after an apply to the run; noted if so.
    pub fn defer_selection(&self, venue_id: i64) -> bool {
        match self
            .selecting_after_applies
            .lock()
            .expect("deferred selections")
            .as_mut()
        {
            Some(venues) => {
                venues.push(venue_id);
                true
            }
            None => false,
        }
    }

    /// The venues whose selection was left to the run; from now on none is.
    pub fn take_deferred_selections(&self) -> Vec<i64> {
        self.selecting_after_applies
            .lock()
            .expect("deferred selections")
            .take()
            .unwrap_or_default()
    }

    /// What the selections `venues` left to the run come to, as of `at`: each venue's
    /// selection where the run can answer it (a report still open, `report_interval` not passed
    /// since the last one, or no candidates: every venue's reports read once and the others'
    /// candidates counted in one statement), `None` where the venue must cycle again to select.
    pub async fn settle_deferred_selections(
        &self,
        svc: &Service,
        venues: &[&VenueConfig],
        at: DateTime<Utc>,
    ) -> Result<HashMap<i64, Option<crate::lifecycle::Selection>>> {
        let (open, last) = crate::reports::open_by_venue(&svc.db).await?;
        let mut settled = HashMap::new();
        let mut counting = Vec::new();
        for venue in venues {
            match may_create_report(&open, &last, venue, at) {
                Err(reason) => {
                    settled.insert(venue.id, Some(reason.into()));
                }
                Ok(()) => counting.push(*venue),
            }
        }
        let scopes = fleet_scopes(svc, &counting, at).await?;
        let counts = crate::selection::count_by_venue(&svc.db, &scopes).await?;
        for venue in counting {
            let none = counts
                .get(&venue.id)
                .is_some_and(|(candidates, _)| *candidates == 0);
            settled.insert(
                venue.id,
                none.then_some(crate::lifecycle::Selection::NoCandidates),
            );
        }
        Ok(settled)
    }

    /// A venue's candidates and customers from [`RunContext::count_selecting_venues`], if
    /// counted.
    pub fn counted(&self, venue_id: i64) -> Option<(u64, u64)> {
        self.counts.get()?.get(&venue_id).copied()
    }

    /// Whether [`RunContext::count_selecting_venues`] counted `venue_id` with no candidate.
    pub fn counted_none(&self, venue_id: i64) -> bool {
        matches!(self.counted(venue_id), Some((0, _)))
    }

    /// What the holds keep back of a venue, from [`RunContext::count_selecting_venues`]: `None`
    /// if not counted there; nobody when the venue had no customers held.
    pub fn counted_held_back(&self, venue_id: i64) -> Option<crate::selection::HeldBack> {
        let held = self.held.get()?;
        Some(held.get(&venue_id).cloned().unwrap_or_default())
    }

    /// Old reasons and expired links erased for every venue, once per run.
    pub async fn forget_old_details(&self, svc: &Service, at: DateTime<Utc>) -> Result<()> {
        self.forgotten
            .get_or_try_init(|| crate::lifecycle::forget_old_details(svc, at))
            .await?;
        Ok(())
    }

    /// The batch sizer for the run's next report of `action`: what its earlier reports of that
    /// action learnt of the cost per customer, or a new one.
    pub fn batch_sizer(&self, svc: &Service, action: policy::Action) -> policy::BatchSizer {
        self.sizers
            .lock()
            .expect("sizers")
            .get(&action)
            .cloned()
            .unwrap_or_else(|| {
                policy::BatchSizer::new(svc.config.batch_size, svc.config.max_transaction_ms)
            })
    }

    /// Keeps what a finished apply's sizer learnt, for the run's next report of `action`.
    pub fn keep_batch_sizer(&self, action: policy::Action, sizer: policy::BatchSizer) {
        self.sizers.lock().expect("sizers").insert(action, sizer);
    }

    /// Notes that a report was applied in this run, so the files are scrubbed after it.
    pub fn note_applied(&self) {
        self.applied.store(true, Ordering::SeqCst);
    }

    /// What happens once after the run's last cycle: when reports were made, the planner's
    /// statistics of their items are refreshed; when a report was applied, removed values
    /// are scrubbed from the database files (SQLite's write-ahead log truncated, PostgreSQL's
    /// touched tables vacuumed), once for the run rather than once per report (SPEC 11).
    pub async fn finish(&self, svc: &Service) {
        if self.reports_made.swap(false, Ordering::SeqCst) {
            crate::reports::refresh_item_statistics(&svc.db).await;
        }
        if self.applied.swap(false, Ordering::SeqCst) {
            crate::erase::scrub_files(svc).await;
        }
    }

    /// Notes that a report was made in this run, so the planner's statistics of the report
    /// items are refreshed after it.
    pub fn note_report_made(&self) {
        self.reports_made.store(true, Ordering::SeqCst);
    }
}

/// Whether `venue` may make a report at `at` ([`policy::may_create_report`]), judged on one read
/// of every venue's open reports and last report time ([`OpenReports`]).
fn may_create_report(
    open: &HashMap<i64, Vec<policy::OpenReport>>,
    last: &HashMap<i64, DateTime<Utc>>,
    venue: &VenueConfig,
    at: DateTime<Utc>,
) -> Result<(), policy::NoNewReport> {
    policy::may_create_report(
        open.get(&venue.id)
            .and_then(|r| r.first())
            .map(|r| (r.id, r.state)),
        last.get(&venue.id).copied(),
        venue.report_interval,
        at,
    )
}

/// The customers-rule scopes of `venues` at `at` for one count of them all, sharing the
/// exclusions that have rows now (read once).
async fn fleet_scopes<'a>(
    svc: &'a Service,
    venues: &[&'a VenueConfig],
    at: DateTime<Utc>,
) -> Result<Vec<Scope<'a>>> {
    let Some(first) = venues.first() else {
        return Ok(Vec::new());
    };
    let backend = svc.db.backend();
    let exclusions = Scope::new(&svc.config, backend, first, at)
        .without_empty(&svc.db)
        .await?
        .exclusions;
    Ok(venues
        .iter()
        .map(|v| Scope {
            exclusions,
            ..Scope::new(&svc.config, backend, v, at)
        })
        .collect())
}

/// One alert to `mail.ops` naming every venue of the run whose cycle failed and why, queued in
/// one transaction; a failure to queue is logged, never hides the failures themselves.
pub(crate) async fn alert_failures(
    svc: &Service,
    failed: &[(&VenueConfig, &anyhow::Error)],
    at: DateTime<Utc>,
) {
    if failed.is_empty() || svc.config.mail.ops.is_none() {
        return;
    }
    let detail = failure_alert_text(failed, at, svc.config.schedule.retry_for);
    let venue_id = match failed {
        [(venue, _)] => venue.id,
        _ => 0,
    };
    let queued = async {
        let mut tx = svc.db.begin().await?;
        mail::queue_ops_alert(
            svc,
            &mut tx,
            mail::Kind::FailureAlert,
            venue_id,
            &detail,
            at,
        )
        .await?;
        tx.commit().await
    };
    if let Err(e) = queued.await {
        error!(venues = failed.len(), error = %format!("{e:#}"), "could not queue the failure alert");
    }
}

/// The words of a run's failure alert: how many failed, then a line per venue (at most
/// [`ALERT_LINES`]).
pub fn failure_alert_text(
    failed: &[(&VenueConfig, &anyhow::Error)],
    at: DateTime<Utc>,
    retry_for: Duration,
) -> String {
    let mut text = format!(
        "{} venue cycle(s) of the run at {} failed and will be tried again on their next scheduled run{}:\n",
        failed.len(),
        at.to_rfc3339(),
        if retry_for.is_zero() {
            String::new()
        } else {
            format!(
                " (passing failures were retried for up to {} minutes first)",
                retry_for.as_secs() / 60
            )
        }
    );
    for (venue, e) in failed.iter().take(ALERT_LINES) {
        text.push_str(&format!("- venue {} ({}): {e:#}\n", venue.id, venue.name));
    }
    if failed.len() > ALERT_LINES {
        text.push_str(&format!(
            "- and {} more venues (the log names each)\n",
            failed.len() - ALERT_LINES
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::tests::service_with_venues;

    #[tokio::test]
    async fn a_runs_next_report_starts_from_what_its_last_apply_learnt() {
        let svc = service_with_venues(1, "").await;
        let run = RunContext::new();
        let fresh = run.batch_sizer(&svc, policy::Action::Delete);
        assert_eq!(fresh.next(), 50, "a run's first report starts small");
        let mut learnt = fresh.clone();
        // Customers cost 0.1 ms each: the sizer grows (at most doubling a batch).
        learnt.observe(50, 5);
        learnt.observe(100, 10);
        assert!(learnt.next() > 100);
        run.keep_batch_sizer(policy::Action::Delete, learnt.clone());

        assert_eq!(
            run.batch_sizer(&svc, policy::Action::Delete).next(),
            learnt.next()
        );
        assert_eq!(
            run.batch_sizer(&svc, policy::Action::Anonymise).next(),
            50,
            "another action learns on its own"
        );
        assert_eq!(
            RunContext::new()
                .batch_sizer(&svc, policy::Action::Delete)
                .next(),
            50
        );
    }
}
