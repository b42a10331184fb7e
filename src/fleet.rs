//! A run: the cycles of many venues started together (one schedule second of the daemon, or one
//! `cycle` command), as a vendor's fleet of hundreds or thousands of venues needs (SPEC 11).
//! At most `schedule.max_concurrent_cycles` cycles run at once and the rest wait their turn in
//! order, so a cycle never fails for want of a connection; a cycle that fails for a passing
//! reason (a lost connection, a pool or lock wait timeout, a deadlock, a serialization failure)
//! is retried with back-off for `schedule.retry_for`; what still fails is alerted in one mail
//! per run; and the work that does not need doing per report (checking the tables fit, the
//! scrubbing of the database files) is done once per run ([`crate::run`]).

use crate::config::VenueConfig;
use crate::cycle::{self, VenueCycle};
use crate::run::{alert_failures, RunContext};
use crate::Service;
use anyhow::Result;
use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{error, info, warn};

/// The first wait before a failed cycle is tried again; each next wait doubles, up to
/// [`LONGEST_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(2);
/// The longest wait between two tries of a failed cycle.
pub const LONGEST_BACKOFF: Duration = Duration::from_secs(5 * 60);

/// One venue cycle of a run, as the fleet calls it (tests give one that fails or panics).
pub type CycleFn = Arc<
    dyn Fn(
            Service,
            Arc<RunContext>,
            VenueConfig,
            DateTime<Utc>,
            bool,
        ) -> BoxFuture<'static, Result<VenueCycle>>
        + Send
        + Sync,
>;

/// How a run treats failures.
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    pub dry_run: bool,
    /// How long passing failures are retried (zero: not at all).
    pub retry_for: Duration,
    /// The first wait before a retry; it doubles each time, up to [`LONGEST_BACKOFF`].
    pub first_backoff: Duration,
}

/// How one venue's part of a run ended.
#[derive(Debug)]
pub enum VenueOutcome {
    Done(Box<VenueCycle>),
    Failed(anyhow::Error),
    /// The venue's cycle of an earlier run was still going: this occurrence was skipped.
    StillRunning,
    /// Shutdown came before the venue's turn.
    Stopped,
}

#[derive(Debug)]
pub struct VenueRun {
    pub venue: VenueConfig,
    pub outcome: VenueOutcome,
    /// How many times the cycle was started (1 when it was not retried).
    pub attempts: u32,
}

/// The venue cycles of a process: the slots they take turns on, and which venues are running.
pub struct Fleet {
    svc: Service,
    slots: Arc<Semaphore>,
    running: Mutex<HashSet<i64>>,
    cycle: CycleFn,
}

/// The cycle production runs: [`cycle::run_venue_cycle_in`].
fn production_cycle() -> CycleFn {
    Arc::new(|svc, run, venue, at, dry_run| {
        async move { cycle::run_venue_cycle_in(&svc, &run, &venue, at, dry_run).await }.boxed()
    })
}

impl Fleet {
    /// Cycles take turns on `schedule.max_concurrent_cycles` slots.
    pub fn new(svc: Service) -> Fleet {
        let slots = svc.config.schedule.max_concurrent_cycles.max(1) as usize;
        Fleet {
            svc,
            slots: Arc::new(Semaphore::new(slots)),
            running: Mutex::new(HashSet::new()),
            cycle: production_cycle(),
        }
    }

    /// A fleet whose cycles run one at a time, in the order given: the `cycle` command, whose
    /// operator reads the venues' results (and their new reports' ids) in configuration order.
    pub fn one_at_a_time(svc: Service) -> Fleet {
        Fleet {
            slots: Arc::new(Semaphore::new(1)),
            ..Fleet::new(svc)
        }
    }

    /// The same fleet with another cycle (tests).
    pub fn with_cycle(mut self, cycle: CycleFn) -> Fleet {
        self.cycle = cycle;
        self
    }

    /// Runs the cycles of `venues` as of `at`, at most `max_concurrent_cycles` at once, in the
    /// order given; returns each venue's outcome in that order. After the last one, the run's
    /// once-only work is done and, unless it was a dry run, one alert to `mail.ops` names every
    /// venue whose cycle failed.
    pub async fn run(
        &self,
        venues: &[VenueConfig],
        at: DateTime<Utc>,
        options: RunOptions,
    ) -> Vec<VenueRun> {
        let run = RunContext::new();
        if venues.len() > 1 {
            if let Err(e) = run
                .count_selecting_venues(&self.svc, venues, at, options.dry_run)
                .await
            {
                // Each venue's cycle then counts its own, as a single venue's does.
                warn!(error = %format!("{e:#}"), "the fleet's count of its selecting venues failed; venues count one by one");
            }
        }
        if !options.dry_run && venues.len() > 1 {
            run.defer_selections_after_applies();
        }
        let tasks = self.start(&run, venues, at, options).await;
        let mut results = self.collect(venues, tasks).await;
        let deferred = run.take_deferred_selections();
        if !deferred.is_empty() {
            self.select_after_applies(&run, &mut results, &deferred, at, options)
                .await;
        }
        if !options.dry_run {
            run.finish(&self.svc).await;
            let failed: Vec<(&VenueConfig, &anyhow::Error)> = results
                .iter()
                .filter_map(|r| match &r.outcome {
                    VenueOutcome::Failed(e) => Some((&r.venue, e)),
                    _ => None,
                })
                .collect();
            alert_failures(&self.svc, &failed, at).await;
        }
        results
    }

    /// The selections the venues of `deferred` left to the run after their applies: answered
    /// from one read of every venue's reports and one count of their candidates
    /// ([`RunContext::settle_deferred_selections`]); a venue that may make a report and has
    /// candidates cycles again (nothing left to apply, it selects and makes its report). When
    /// the read or the count fails, every one of them cycles again.
    async fn select_after_applies(
        &self,
        run: &Arc<RunContext>,
        results: &mut [VenueRun],
        deferred: &[i64],
        at: DateTime<Utc>,
        options: RunOptions,
    ) {
        let of: Vec<&VenueConfig> = results
            .iter()
            .map(|r| &r.venue)
            .filter(|v| deferred.contains(&v.id))
            .collect();
        let mut settled = match run.settle_deferred_selections(&self.svc, &of, at).await {
            Ok(settled) => settled,
            Err(e) => {
                warn!(error = %format!("{e:#}"), "the run's count after its applies failed; the venues select one by one");
                Default::default()
            }
        };
        let again: Vec<VenueConfig> = of
            .into_iter()
            .filter(|v| !matches!(settled.get(&v.id), Some(Some(_))))
            .cloned()
            .collect();
        for r in results.iter_mut() {
            if let (VenueOutcome::Done(cycle), Some(Some(selection))) =
                (&mut r.outcome, settled.remove(&r.venue.id))
            {
                cycle.selection = Some(selection);
            }
        }
        if again.is_empty() {
            return;
        }
        let tasks = self.start(run, &again, at, options).await;
        for second in self.collect(&again, tasks).await {
            let Some(first) = results.iter_mut().find(|r| r.venue.id == second.venue.id) else {
                continue;
            };
            first.attempts += second.attempts;
            match second.outcome {
                VenueOutcome::Done(selected) => {
                    if let VenueOutcome::Done(applied) = &mut first.outcome {
                        applied.selection = selected.selection;
                        applied.held_back = selected.held_back;
                        applied.expired.extend(selected.expired);
                        applied.reminded.extend(selected.reminded);
                    }
                }
                VenueOutcome::Failed(e) => {
                    error!(venue.id = first.venue.id, error = %format!("{e:#}"), "the venue's report was applied, but selecting anew after it failed");
                    first.outcome = VenueOutcome::Failed(e);
                }
                // Shutdown, or another run's cycle of the venue: the next run selects.
                VenueOutcome::Stopped | VenueOutcome::StillRunning => {}
            }
        }
    }

    /// Starts the cycles of `venues`, in order, each when a slot is free.
    async fn start(
        &self,
        run: &Arc<RunContext>,
        venues: &[VenueConfig],
        at: DateTime<Utc>,
        options: RunOptions,
    ) -> Vec<Option<Turn>> {
        let mut tasks = Vec::with_capacity(venues.len());
        // Slots are handed out here, in the order given, so that the queue is fair (and one
        // slot runs the venues in exactly that order); a retry queues again for a slot.
        metrics::gauge!("retentiond_cycles_waiting").increment(venues.len() as f64);
        for venue in venues {
            let claimed = self.running.lock().expect("running set").insert(venue.id);
            if !claimed {
                metrics::gauge!("retentiond_cycles_waiting").decrement(1.0);
                info!(
                    venue.id = venue.id,
                    "the venue's previous cycle is still running; this occurrence is skipped"
                );
                tasks.push(None);
                continue;
            }
            let slot = tokio::select! {
                slot = self.slots.clone().acquire_owned() => slot.ok(),
                _ = self.svc.shutdown.cancelled() => None,
            };
            metrics::gauge!("retentiond_cycles_waiting").decrement(1.0);
            let Some(slot) = slot else {
                self.running.lock().expect("running set").remove(&venue.id);
                tasks.push(Some(Turn::Ended(VenueOutcome::Stopped)));
                continue;
            };
            if run
                .answers_from_its_reads(&self.svc, venue, at, options.dry_run)
                .await
            {
                // Nothing for the cycle to read or write of its own: it is answered here, as
                // a task of its own would have cost two wake-ups across threads (64 of a fleet
                // dry run's 230 ms at 1,000 venues on SQLite, more than its own work).
                let started = Instant::now();
                let first = try_once(
                    &self.svc,
                    run,
                    slot,
                    &self.cycle,
                    venue,
                    at,
                    options.dry_run,
                )
                .await;
                if let Try::Done(result) = first {
                    tasks.push(Some(Turn::Ended(VenueOutcome::Done(Box::new(result)))));
                } else {
                    tasks.push(Some(Turn::Spawned(tokio::spawn(until_done(
                        self.svc.clone(),
                        run.clone(),
                        self.slots.clone(),
                        self.cycle.clone(),
                        venue.clone(),
                        options,
                        started,
                        first,
                    )))));
                }
                continue;
            }
            tasks.push(Some(Turn::Spawned(tokio::spawn(attempt(
                self.svc.clone(),
                run.clone(),
                self.slots.clone(),
                slot,
                self.cycle.clone(),
                venue.clone(),
                at,
                options,
            )))));
        }
        tasks
    }

    /// Waits for the cycles `start` began; each venue's outcome, in order.
    async fn collect(&self, venues: &[VenueConfig], tasks: Vec<Option<Turn>>) -> Vec<VenueRun> {
        let mut results = Vec::with_capacity(venues.len());
        for (venue, task) in venues.iter().zip(tasks) {
            let (outcome, attempts) = match task {
                None => (VenueOutcome::StillRunning, 0),
                Some(Turn::Ended(outcome)) => {
                    self.running.lock().expect("running set").remove(&venue.id);
                    (outcome, 1)
                }
                Some(Turn::Spawned(task)) => {
                    let joined = task.await;
                    self.running.lock().expect("running set").remove(&venue.id);
                    joined.unwrap_or_else(|e| {
                        (
                            VenueOutcome::Failed(anyhow::anyhow!("the cycle's task ended: {e}")),
                            1,
                        )
                    })
                }
            };
            results.push(VenueRun {
                venue: venue.clone(),
                outcome,
                attempts,
            });
        }
        results
    }
}

/// A venue's turn in a run: answered in the run's own task, or a task of its own.
enum Turn {
    Ended(VenueOutcome),
    Spawned(tokio::task::JoinHandle<(VenueOutcome, u32)>),
}

/// How one try of a venue's cycle ended. One is made per try and consumed at once, so its size
/// does not matter and the cycle's result is not boxed.
#[allow(clippy::large_enum_variant)]
enum Try {
    Done(VenueCycle),
    Failed(anyhow::Error),
    Panicked(String),
}

/// One try of `venue`'s cycle on `slot`, which is given back when it ends.
async fn try_once(
    svc: &Service,
    run: &Arc<RunContext>,
    slot: OwnedSemaphorePermit,
    cycle: &CycleFn,
    venue: &VenueConfig,
    at: DateTime<Utc>,
    dry_run: bool,
) -> Try {
    metrics::gauge!("retentiond_cycles_running").increment(1.0);
    let outcome =
        std::panic::AssertUnwindSafe(cycle(svc.clone(), run.clone(), venue.clone(), at, dry_run))
            .catch_unwind()
            .await;
    metrics::gauge!("retentiond_cycles_running").decrement(1.0);
    drop(slot);
    match outcome {
        Ok(Ok(result)) => Try::Done(result),
        Ok(Err(e)) => Try::Failed(e),
        // Whatever the cycle held, its lock included, was dropped with it.
        Err(panic) => Try::Panicked(
            panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into()),
        ),
    }
}

/// One venue's part of a run: runs the cycle on `first_slot`, then [`until_done`].
#[allow(clippy::too_many_arguments)]
async fn attempt(
    svc: Service,
    run: Arc<RunContext>,
    slots: Arc<Semaphore>,
    first_slot: OwnedSemaphorePermit,
    cycle: CycleFn,
    venue: VenueConfig,
    at: DateTime<Utc>,
    options: RunOptions,
) -> (VenueOutcome, u32) {
    let started = Instant::now();
    let first = try_once(&svc, &run, first_slot, &cycle, &venue, at, options.dry_run).await;
    until_done(svc, run, slots, cycle, venue, options, started, first).await
}

/// After a venue's first try (begun at `started`): a passing failure is retried after a
/// back-off (holding no slot while it waits) until `retry_for` has passed; how it ended, and
/// after how many tries.
#[allow(clippy::too_many_arguments)]
async fn until_done(
    svc: Service,
    run: Arc<RunContext>,
    slots: Arc<Semaphore>,
    cycle: CycleFn,
    venue: VenueConfig,
    options: RunOptions,
    started: Instant,
    first: Try,
) -> (VenueOutcome, u32) {
    let mut backoff = options.first_backoff;
    let mut attempts = 1;
    let mut last = first;
    loop {
        let error = match last {
            Try::Done(result) => return (VenueOutcome::Done(Box::new(result)), attempts),
            Try::Failed(e) => e,
            Try::Panicked(what) => {
                error!(venue.id = venue.id, panic = %what, "venue cycle panicked; the schedule goes on");
                metrics::counter!("retentiond_cycles_total", "venue" => venue.id.to_string(), "result" => "failed").increment(1);
                return (
                    VenueOutcome::Failed(anyhow::anyhow!("the cycle panicked: {what}")),
                    attempts,
                );
            }
        };
        let passing = is_passing(&error);
        let retry = passing
            && !svc.shutdown.is_cancelled()
            && started.elapsed() + backoff <= options.retry_for;
        if !retry {
            error!(venue.id = venue.id, attempts, passing, error = %format!("{error:#}"), "venue cycle failed");
            return (VenueOutcome::Failed(error), attempts);
        }
        warn!(
            venue.id = venue.id,
            attempts,
            retry_in_ms = backoff.as_millis() as u64,
            error = %format!("{error:#}"),
            "venue cycle failed for a passing reason; it will be tried again"
        );
        metrics::counter!("retentiond_cycle_retries_total").increment(1);
        metrics::gauge!("retentiond_cycles_waiting").increment(1.0);
        let stopped = tokio::select! {
            _ = tokio::time::sleep(backoff) => false,
            _ = svc.shutdown.cancelled() => true,
        };
        if stopped {
            metrics::gauge!("retentiond_cycles_waiting").decrement(1.0);
            return (VenueOutcome::Failed(error), attempts);
        }
        backoff = (backoff * 2).min(LONGEST_BACKOFF);
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.ok(),
            _ = svc.shutdown.cancelled() => None,
        };
        metrics::gauge!("retentiond_cycles_waiting").decrement(1.0);
        let Some(slot) = slot else {
            return (VenueOutcome::Stopped, attempts);
        };
        attempts += 1;
        // A retry is a cycle of its own time: its cutoff, report time and link expiry.
        last = try_once(
            &svc,
            &run,
            slot,
            &cycle,
            &venue,
            svc.clock.now(),
            options.dry_run,
        )
        .await;
    }
}

/// Whether `e` is a failure that passes by itself, so that the same cycle may succeed when
/// tried again: a lost or refused connection, a pool that had no connection free in time, a
/// lock wait that timed out, a deadlock or a serialization failure. Everything else (a
/// configuration that does not fit the database, a constraint, a bug) fails the same way each
/// time and is alerted at once.
pub fn is_passing(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<sqlx::Error>()
            .is_some_and(sqlx_error_is_passing)
            // SQLite's lock, waited for in this process's queue of writers.
            || cause.downcast_ref::<crate::db::sqlite_turns::NoTurn>().is_some()
    })
}

fn sqlx_error_is_passing(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => true,
        sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            passing_database_code(&code, db.message())
        }
        _ => false,
    }
}

/// The database error codes of passing failures, by SQLSTATE (PostgreSQL, MySQL) or SQLite
/// result code.
fn passing_database_code(code: &str, message: &str) -> bool {
    matches!(
        code,
        // Serialization failure, deadlock (PostgreSQL 40P01, MySQL 1213 reports 40001).
        "40001" | "40P01"
        // PostgreSQL: lock not available (lock_timeout), too many connections, shutting down,
        // cannot connect now.
        | "55P03" | "53300" | "57P01" | "57P02" | "57P03"
        // MySQL: too many connections (08004).
        | "08004"
        // SQLite: busy (5) and locked (6), with their extended codes.
        | "5" | "6" | "261" | "262" | "517"
    ) || code.starts_with("08")
        // MySQL reports a lock wait timeout (1205) as HY000.
        || message.contains("Lock wait timeout exceeded")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A service on a fresh SQLite database with `venues` delete venues (ids 1..), each with
    /// `extra` lines, `mail.ops` set and at most 2 cycles at once.
    pub(crate) async fn service_with_venues(venues: u32, extra: &str) -> Service {
        let dir = std::env::temp_dir().join(format!(
            "retentiond-fleet-{}-{}",
            std::process::id(),
            Utc::now().timestamp_nanos_opt().unwrap_or(0)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}/db.sqlite", dir.display());
        let mut text = format!(
            "venues_dir = \"venues.d\"\n[database]\nurl = \"{url}\"\nmax_connections = 4\n[schedule]\nmax_concurrent_cycles = 2\n[mail]\nops = \"ops@b.c\"\n"
        );
        // Half of the venues in the main file, half in a folder of one file per venue.
        std::fs::create_dir_all(dir.join("venues.d")).unwrap();
        for id in 1..=venues {
            let venue = format!("[[venues]]\nid = {id}\nname = \"V{id}\"\napprovers = [\"a@b.c\"]\ninactive_for = \"3 years\"\naction = \"delete\"\n{extra}\n");
            if id % 2 == 0 {
                std::fs::write(dir.join(format!("venues.d/{id:04}.toml")), venue).unwrap();
            } else {
                text.push_str(&venue);
            }
        }
        let path = dir.join("c.toml");
        std::fs::write(&path, text).unwrap();
        let config = crate::config::load_with_env(&path, Default::default()).unwrap();
        assert_eq!(config.venues.len(), venues as usize);
        let db = crate::db::Db::connect(&url).await.unwrap();
        crate::migrate::run(&db, Utc::now()).await.unwrap();
        Service::new(db, config)
    }

    /// What a cycle that found nothing to do returns.
    pub(crate) fn nothing_done(venue: &VenueConfig, at: DateTime<Utc>) -> VenueCycle {
        VenueCycle {
            venue_id: venue.id,
            at,
            cutoff: at,
            dry_run: false,
            ran: true,
            applied: vec![],
            previews: vec![],
            expired: vec![],
            reminded: vec![],
            selection: None,
            held_back: None,
            prospects: None,
        }
    }

    fn options(retry_for: Duration) -> RunOptions {
        RunOptions {
            dry_run: false,
            retry_for,
            first_backoff: Duration::from_millis(10),
        }
    }

    async fn failure_alerts(svc: &Service) -> Vec<String> {
        svc.db
            .fetch_all(&crate::db::Query::new(
                "SELECT detail FROM retention_outbox WHERE kind = 'failure_alert'",
            ))
            .await
            .unwrap()
            .iter()
            .map(|r| r.text(0).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn no_more_cycles_run_at_once_than_the_slots_allow() {
        let svc = service_with_venues(12, "").await;
        let (now, most) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
        let (n, m) = (now.clone(), most.clone());
        let cycle: CycleFn = Arc::new(move |_, _, venue, at, _| {
            let (n, m) = (n.clone(), m.clone());
            async move {
                let running = n.fetch_add(1, Ordering::SeqCst) + 1;
                m.fetch_max(running, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(30)).await;
                n.fetch_sub(1, Ordering::SeqCst);
                Ok(nothing_done(&venue, at))
            }
            .boxed()
        });
        let fleet = Fleet::new(svc.clone()).with_cycle(cycle);

        let results = fleet
            .run(&svc.config.venues, Utc::now(), options(Duration::ZERO))
            .await;

        assert_eq!(most.load(Ordering::SeqCst), 2, "max_concurrent_cycles = 2");
        assert_eq!(results.len(), 12);
        assert!(results
            .iter()
            .all(|r| matches!(r.outcome, VenueOutcome::Done(_))));
        // The main file's venues first, then venues_dir's files in name order.
        let order: Vec<i64> = results.iter().map(|r| r.venue.id).collect();
        assert_eq!(order, vec![1, 3, 5, 7, 9, 11, 2, 4, 6, 8, 10, 12]);
    }

    #[tokio::test]
    async fn a_passing_failure_is_retried_until_it_succeeds() {
        let svc = service_with_venues(3, "").await;
        let tries = Arc::new(AtomicU32::new(0));
        let t = tries.clone();
        let cycle: CycleFn = Arc::new(move |_, _, venue, at, _| {
            let t = t.clone();
            async move {
                // Venue 2 finds the pool busy twice, then gets through.
                if venue.id == 2 && t.fetch_add(1, Ordering::SeqCst) < 2 {
                    return Err(anyhow::Error::new(sqlx::Error::PoolTimedOut)
                        .context("venue 2: taking the lock"));
                }
                Ok(nothing_done(&venue, at))
            }
            .boxed()
        });
        let fleet = Fleet::new(svc.clone()).with_cycle(cycle);

        let results = fleet
            .run(
                &svc.config.venues,
                Utc::now(),
                options(Duration::from_secs(60)),
            )
            .await;

        let second = results.iter().find(|r| r.venue.id == 2).unwrap();
        assert!(
            matches!(second.outcome, VenueOutcome::Done(_)),
            "{:?}",
            second.outcome
        );
        assert_eq!(second.attempts, 3);
        assert!(
            failure_alerts(&svc).await.is_empty(),
            "nothing left to alert"
        );
    }

    #[tokio::test]
    async fn what_still_fails_is_alerted_in_one_mail_naming_each_venue() {
        let svc = service_with_venues(5, "").await;
        let cycle: CycleFn = Arc::new(move |_, _, venue, at, _| {
            async move {
                match venue.id {
                    // A passing failure that does not pass within retry_for.
                    1 => Err(anyhow::Error::new(sqlx::Error::PoolTimedOut)),
                    // A failure that would fail the same way again: not retried.
                    4 => Err(anyhow::anyhow!("no such table: customers")),
                    _ => Ok(nothing_done(&venue, at)),
                }
            }
            .boxed()
        });
        let fleet = Fleet::new(svc.clone()).with_cycle(cycle);

        let results = fleet
            .run(
                &svc.config.venues,
                Utc::now(),
                options(Duration::from_millis(100)),
            )
            .await;

        let of = |id: i64| results.iter().find(|r| r.venue.id == id).unwrap();
        assert!(of(1).attempts > 1, "the passing failure was retried");
        assert_eq!(of(4).attempts, 1, "the lasting failure was not");
        let alerts = failure_alerts(&svc).await;
        assert_eq!(alerts.len(), 1, "one alert for the run: {alerts:?}");
        assert!(alerts[0].starts_with("2 venue cycle(s)"), "{}", alerts[0]);
        assert!(
            alerts[0].contains("- venue 1 (V1): pool timed out"),
            "{}",
            alerts[0]
        );
        assert!(
            alerts[0].contains("- venue 4 (V4): no such table"),
            "{}",
            alerts[0]
        );
    }

    #[tokio::test]
    async fn a_venue_still_running_is_skipped_not_overlapped() {
        let svc = service_with_venues(1, "").await;
        let cycle: CycleFn = Arc::new(move |_, _, venue, at, _| {
            async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                Ok(nothing_done(&venue, at))
            }
            .boxed()
        });
        let fleet = Arc::new(Fleet::new(svc.clone()).with_cycle(cycle));
        let venues = svc.config.venues.clone();
        let first = {
            let (fleet, venues) = (fleet.clone(), venues.clone());
            tokio::spawn(async move {
                fleet
                    .run(&venues, Utc::now(), options(Duration::ZERO))
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;

        let second = fleet
            .run(&venues, Utc::now(), options(Duration::ZERO))
            .await;

        assert!(matches!(second[0].outcome, VenueOutcome::StillRunning));
        assert!(matches!(
            first.await.unwrap()[0].outcome,
            VenueOutcome::Done(_)
        ));
    }

    #[test]
    fn pool_timeouts_lost_connections_and_deadlocks_pass() {
        assert!(is_passing(&anyhow::Error::new(sqlx::Error::PoolTimedOut)));
        let lost = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert!(is_passing(
            &anyhow::Error::new(sqlx::Error::Io(lost)).context("venue 3: selecting")
        ));
        assert!(passing_database_code("40P01", "deadlock detected"));
        assert!(passing_database_code("40001", "could not serialize access"));
        assert!(passing_database_code(
            "HY000",
            "Lock wait timeout exceeded; try restarting transaction"
        ));
        assert!(passing_database_code("5", "database is locked"));
        assert!(passing_database_code("08006", "connection failure"));
        let no_turn = crate::db::sqlite_turns::NoTurn {
            waited: Duration::from_secs(30),
        };
        assert!(is_passing(
            &anyhow::Error::new(no_turn).context("venue 3: applying")
        ));
    }

    #[test]
    fn configuration_and_constraint_failures_do_not_pass() {
        assert!(!is_passing(&anyhow::anyhow!(
            "schema.customers: no such table"
        )));
        assert!(!is_passing(&anyhow::Error::new(sqlx::Error::RowNotFound)));
        assert!(!passing_database_code(
            "23503",
            "violates foreign key constraint"
        ));
        assert!(!passing_database_code("42P01", "relation does not exist"));
    }
}
