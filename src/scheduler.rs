//! When each venue's cycle runs: its cron expression (with seconds) in its own time zone. The
//! scheduler only decides *when*; the venues due at one second are handed to
//! [`crate::fleet::Fleet::run`] as one run. Next times are
//! computed on local wall-clock time, so a 02:00 run stays at 02:00 local across DST changes; a
//! time in the hour skipped in spring runs at the first valid time after it that day, and one in
//! the hour repeated in autumn runs once. A cycle that fails or panics is logged and alerted,
//! and the schedule goes on.

use crate::config::VenueConfig;
use crate::fleet::{Fleet, RunOptions, VenueOutcome};
use crate::Service;
use chrono::{DateTime, LocalResult, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use cron::Schedule;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::task::TaskTracker;
use tracing::info;

/// The first run of `schedule` in `tz` strictly after `after`. The cron expression is read on
/// the local wall clock: a local time that does not exist (the spring-forward gap) becomes the
/// first valid time after it, and one that exists twice (autumn) runs at its first occurrence.
pub fn next_run(schedule: &Schedule, tz: Tz, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let local_after = after.with_timezone(&tz).naive_local();
    // Utc stands in for "no zone": the schedule walks wall-clock times.
    for wall in schedule
        .after(&Utc.from_utc_datetime(&local_after))
        .take(10_000)
    {
        let wall = wall.naive_utc();
        let instant = match tz.from_local_datetime(&wall) {
            LocalResult::Single(t) => t,
            LocalResult::Ambiguous(earliest, _) => earliest,
            LocalResult::None => first_valid_after(tz, wall)?,
        }
        .with_timezone(&Utc);
        if instant > after {
            return Some(instant);
        }
    }
    None
}

/// The first valid local time after `wall`, which falls in a DST gap (gaps end on a minute).
fn first_valid_after(tz: Tz, wall: NaiveDateTime) -> Option<DateTime<Tz>> {
    let minute = chrono::Duration::minutes(1);
    let mut t = wall;
    for _ in 0..24 * 60 {
        t += minute;
        let t0 = t - chrono::Duration::seconds(i64::from(chrono::Timelike::second(&t)));
        if let Some(valid) = tz.from_local_datetime(&t0).earliest() {
            return Some(valid);
        }
    }
    None
}

/// Runs every venue's schedule until shutdown. The venues due at the same second make one run
/// ([`Fleet::run`]): their cycles take turns on the fleet's slots, passing failures are
/// retried, and one alert names what still failed. A venue's cycle never overlaps itself: an
/// occurrence that comes while the venue's previous cycle still runs is skipped. `mail_due` is
/// notified after each run so its mail goes out.
pub async fn run_schedules(svc: Service, fleet: Arc<Fleet>, mail_due: Arc<Notify>) {
    let schedules: Vec<(VenueConfig, Schedule)> = svc
        .config
        .venues
        .iter()
        .map(|v| {
            let schedule =
                Schedule::from_str(&v.cron).expect("cron validated with the configuration");
            (v.clone(), schedule)
        })
        .collect();
    let options = RunOptions {
        dry_run: false,
        retry_for: svc.config.schedule.retry_for,
        first_backoff: crate::fleet::FIRST_BACKOFF,
    };
    let now = svc.clock.now();
    let mut next: Vec<Option<DateTime<Utc>>> = schedules
        .iter()
        .map(|(v, s)| next_run(s, v.timezone, now))
        .collect();
    let runs = TaskTracker::new();
    while let Some(due_at) = next.iter().flatten().min().copied() {
        let venues_due = next.iter().filter(|n| **n == Some(due_at)).count();
        info!(next_run = %due_at.to_rfc3339(), venues = venues_due, "next run scheduled");
        // Sleep in short steps so that a wall-clock jump (suspend, NTP) is noticed, until the
        // scheduled second itself (not its fraction later).
        loop {
            let now = svc.clock.precise_now();
            if now >= due_at {
                break;
            }
            let step = (due_at - now)
                .to_std()
                .unwrap_or_default()
                .min(Duration::from_secs(30));
            tokio::select! {
                _ = svc.shutdown.cancelled() => {
                    runs.close();
                    runs.wait().await;
                    return;
                }
                _ = tokio::time::sleep(step) => {}
            }
        }
        let now = svc.clock.now();
        let mut due = Vec::new();
        for (i, (venue, schedule)) in schedules.iter().enumerate() {
            if next[i].is_some_and(|t| t <= now) {
                due.push(venue.clone());
                // Occurrences missed while the process slept are not made up: the next is
                // the first after now.
                next[i] = next_run(schedule, venue.timezone, now);
            }
        }
        let at = svc.clock.now();
        let (fleet, mail_due) = (fleet.clone(), mail_due.clone());
        runs.spawn(async move {
            let started = std::time::Instant::now();
            let results = fleet.run(&due, at, options).await;
            let failed = results
                .iter()
                .filter(|r| matches!(r.outcome, VenueOutcome::Failed(_)))
                .count();
            info!(
                venues = results.len(),
                failed,
                duration_ms = started.elapsed().as_millis() as u64,
                "run finished"
            );
            mail_due.notify_one();
        });
    }
    runs.close();
    runs.wait().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn runs(expr: &str, tz: &str, from: &str, n: usize) -> Vec<DateTime<Utc>> {
        let schedule = Schedule::from_str(expr).unwrap();
        let tz: Tz = tz.parse().unwrap();
        let mut at = utc(from);
        (0..n)
            .map(|_| {
                at = next_run(&schedule, tz, at).unwrap();
                at
            })
            .collect()
    }

    #[test]
    fn two_am_london_stays_two_am_local_across_spring_change() {
        // Clocks go forward at 01:00 GMT on 29 March 2026.
        assert_eq!(
            runs("0 0 2 * * *", "Europe/London", "2026-03-27T12:00:00Z", 3),
            vec![
                utc("2026-03-28T02:00:00Z"),
                utc("2026-03-29T01:00:00Z"),
                utc("2026-03-30T01:00:00Z")
            ]
        );
    }

    #[test]
    fn two_am_london_stays_two_am_local_across_autumn_change() {
        // Clocks go back at 01:00 GMT (02:00 BST) on 25 October 2026.
        assert_eq!(
            runs("0 0 2 * * *", "Europe/London", "2026-10-23T12:00:00Z", 3),
            vec![
                utc("2026-10-24T01:00:00Z"),
                utc("2026-10-25T02:00:00Z"),
                utc("2026-10-26T02:00:00Z")
            ]
        );
    }

    #[test]
    fn a_time_in_the_spring_gap_runs_at_the_first_valid_time_that_day() {
        // 01:30 does not exist in London on 29 March 2026: it runs at 02:00 BST (01:00 UTC).
        assert_eq!(
            runs("0 30 1 * * *", "Europe/London", "2026-03-27T12:00:00Z", 3),
            vec![
                utc("2026-03-28T01:30:00Z"),
                utc("2026-03-29T01:00:00Z"),
                utc("2026-03-30T00:30:00Z")
            ]
        );
    }

    #[test]
    fn a_time_in_the_repeated_autumn_hour_runs_once() {
        // 01:30 happens twice in London on 25 October 2026 (BST, then GMT): one run, the first.
        assert_eq!(
            runs("0 30 1 * * *", "Europe/London", "2026-10-24T12:00:00Z", 2),
            vec![utc("2026-10-25T00:30:00Z"), utc("2026-10-26T01:30:00Z")]
        );
    }

    #[tokio::test]
    async fn a_panicking_cycle_does_not_end_the_schedule() {
        use std::sync::atomic::{AtomicU32, Ordering};
        let svc = crate::fleet::tests::service_with_venues(1, "cron = \"* * * * * *\"").await;
        let calls = Arc::new(AtomicU32::new(0));
        let counted = calls.clone();
        let cycle: crate::fleet::CycleFn = Arc::new(move |_, _, venue, at, _| {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    panic!("boom");
                }
                Ok(crate::fleet::tests::nothing_done(&venue, at))
            }
            .boxed()
        });
        let fleet = Arc::new(Fleet::new(svc.clone()).with_cycle(cycle));
        let stop = svc.shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(2500)).await;
            stop.cancel();
        });

        run_schedules(svc.clone(), fleet, Arc::new(Notify::new())).await;

        assert!(
            calls.load(Ordering::SeqCst) >= 2,
            "the schedule went on after the panic"
        );
        let alerts = svc
            .db
            .fetch_one(&crate::db::Query::new(
                "SELECT COUNT(*) FROM retention_outbox WHERE kind = 'failure_alert'",
            ))
            .await
            .unwrap()
            .i64(0)
            .unwrap();
        assert_eq!(alerts, 1, "the panic was alerted to mail.ops");
    }

    #[tokio::test]
    async fn a_run_starts_at_its_scheduled_second_not_a_fraction_later() {
        use std::sync::Mutex;
        let svc = crate::fleet::tests::service_with_venues(1, "cron = \"* * * * * *\"").await;
        let started: Arc<Mutex<Vec<DateTime<Utc>>>> = Arc::default();
        let seen = started.clone();
        let cycle: crate::fleet::CycleFn = Arc::new(move |_, _, venue, at, _| {
            seen.lock().unwrap().push(Utc::now());
            async move { Ok(crate::fleet::tests::nothing_done(&venue, at)) }.boxed()
        });
        let fleet = Arc::new(Fleet::new(svc.clone()).with_cycle(cycle));
        // The daemon starts 0.6 s into a second; a wait computed from whole seconds ended 0.6 s
        // after each scheduled second.
        let into_second = Utc::now().timestamp_subsec_millis();
        tokio::time::sleep(Duration::from_millis(u64::from(
            (1600 - into_second) % 1000,
        )))
        .await;
        let stop = svc.shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(2500)).await;
            stop.cancel();
        });

        run_schedules(svc.clone(), fleet, Arc::new(Notify::new())).await;

        let started = started.lock().unwrap();
        assert!(started.len() >= 2, "runs: {started:?}");
        for at in started.iter() {
            assert!(
                at.timestamp_subsec_millis() < 300,
                "a run started {} ms after its second: {started:?}",
                at.timestamp_subsec_millis()
            );
        }
    }

    #[test]
    fn venue_zone_is_respected() {
        assert_eq!(
            runs(
                "0 30 3 * * *",
                "America/New_York",
                "2026-07-01T00:00:00Z",
                1
            ),
            vec![utc("2026-07-01T07:30:00Z")]
        );
    }
}
