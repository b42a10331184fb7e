//! When each venue's cycle runs: its cron expression (with seconds) in its own time zone. The
//! scheduler only decides *when*; the work is [`crate::cycle::run_venue_cycle`]. Next times are
//! computed from local wall-clock time, so a 02:00 run stays at 02:00 local across DST changes.

use crate::config::VenueConfig;
use crate::cycle;
use crate::Service;
use chrono::{DateTime, SubsecRound, Utc};
use chrono_tz::Tz;
use cron::Schedule;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tracing::{error, info};

/// The first run of `schedule` in `tz` strictly after `after`.
pub fn next_run(schedule: &Schedule, tz: Tz, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    schedule
        .after(&after.with_timezone(&tz))
        .next()
        .map(|t| t.with_timezone(&Utc))
}

/// Runs `venue`'s cycles on its schedule until shutdown; one cycle at a time, so a venue's
/// cycle never overlaps itself. `mail_due` is notified after each cycle so its mail goes out.
pub async fn venue_loop(svc: Service, venue: VenueConfig, mail_due: Arc<Notify>) {
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
        match cycle::run_venue_cycle(&svc, &venue, at, false).await {
            Ok(result) => info!(
                venue.id = venue.id,
                ran = result.ran,
                "venue cycle finished"
            ),
            Err(e) => error!(venue.id = venue.id, error = %format!("{e:#}"), "venue cycle failed"),
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
