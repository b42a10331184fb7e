//! When each venue's cycle runs: its cron expression (with seconds) in its own time zone. The
//! scheduler only decides *when*; the work is [`crate::cycle::run_venue_cycle`]. Next times are
//! computed on local wall-clock time, so a 02:00 run stays at 02:00 local across DST changes; a
//! time in the hour skipped in spring runs at the first valid time after it that day, and one in
//! the hour repeated in autumn runs once. A cycle that fails or panics is logged and alerted,
//! and the schedule goes on.

use crate::config::VenueConfig;
use crate::cycle;
use crate::Service;
use chrono::{DateTime, LocalResult, NaiveDateTime, SubsecRound, TimeZone, Utc};
use chrono_tz::Tz;
use cron::Schedule;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tracing::{error, info};

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

/// One cycle of a venue at a time: what the schedule runs.
pub type CycleFn = Arc<
    dyn Fn(Service, VenueConfig, DateTime<Utc>) -> BoxFuture<'static, anyhow::Result<()>>
        + Send
        + Sync,
>;

/// Runs `venue`'s cycles on its schedule until shutdown; one cycle at a time, so a venue's
/// cycle never overlaps itself. `mail_due` is notified after each cycle so its mail goes out.
pub async fn venue_loop(svc: Service, venue: VenueConfig, mail_due: Arc<Notify>) {
    let cycle: CycleFn = Arc::new(|svc, venue, at| {
        async move {
            let result = cycle::run_venue_cycle(&svc, &venue, at, false).await?;
            info!(
                venue.id = venue.id,
                ran = result.ran,
                "venue cycle finished"
            );
            Ok(())
        }
        .boxed()
    });
    run_schedule(svc, venue, mail_due, cycle).await
}

/// [`venue_loop`] with the cycle given (tests give one that fails or panics).
pub async fn run_schedule(svc: Service, venue: VenueConfig, mail_due: Arc<Notify>, cycle: CycleFn) {
    let schedule = Schedule::from_str(&venue.cron).expect("cron validated with the configuration");
    let mut after = Utc::now();
    while let Some(next) = next_run(&schedule, venue.timezone, after) {
        info!(venue.id = venue.id, next_run = %next.to_rfc3339(), "venue cycle scheduled");
        // Sleep in short steps so that a wall-clock jump (suspend, NTP) is noticed.
        loop {
            let now = Utc::now();
            if now >= next {
                break;
            }
            let step = (next - now)
                .to_std()
                .unwrap_or_default()
                .min(Duration::from_secs(30));
            tokio::select! {
                _ = svc.shutdown.cancelled() => return,
                _ = tokio::time::sleep(step) => {}
            }
        }
        let at = Utc::now().trunc_subsecs(0);
        // A panic in a cycle must not end the venue's schedule: it is caught, logged and
        // alerted like a failure (whatever the cycle held, its lock included, was dropped).
        let outcome = std::panic::AssertUnwindSafe(cycle(svc.clone(), venue.clone(), at))
            .catch_unwind()
            .await;
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                error!(venue.id = venue.id, error = %format!("{e:#}"), "venue cycle failed")
            }
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                error!(venue.id = venue.id, panic = %what, "venue cycle panicked; the schedule goes on");
                cycle::alert_failure(
                    &svc,
                    &venue,
                    &anyhow::anyhow!("the cycle panicked: {what}"),
                    at,
                )
                .await;
            }
        }
        mail_due.notify_one();
        if svc.shutdown.is_cancelled() {
            return;
        }
        after = next.max(at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let dir = std::env::temp_dir().join(format!(
            "retentiond-sched-{}-{}",
            std::process::id(),
            Utc::now().timestamp_nanos_opt().unwrap_or(0)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(
            &path,
            format!("[database]\nurl = \"sqlite://{}/db.sqlite\"\n[mail]\nops = \"ops@b.c\"\n[[venues]]\nid = 1\nname = \"V\"\napprovers = [\"a@b.c\"]\ninactive_for = \"3 years\"\naction = \"delete\"\ncron = \"* * * * * *\"\n", dir.display()),
        )
        .unwrap();
        let config = crate::config::load_with_env(&path, Default::default()).unwrap();
        let db = crate::db::Db::connect(&format!("sqlite://{}/db.sqlite", dir.display()))
            .await
            .unwrap();
        crate::migrate::run(&db, Utc::now()).await.unwrap();
        let svc = Service::new(db, config);
        let venue = svc.config.venues[0].clone();
        let calls = Arc::new(AtomicU32::new(0));
        let counted = calls.clone();
        let cycle: CycleFn = Arc::new(move |_, _, _| {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    panic!("boom");
                }
                Ok(())
            }
            .boxed()
        });
        let stop = svc.shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(2500)).await;
            stop.cancel();
        });

        run_schedule(svc.clone(), venue, Arc::new(Notify::new()), cycle).await;

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
