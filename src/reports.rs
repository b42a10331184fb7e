//! Reports as people meet them: the CSV of a report's customers, times in a venue's zone, and
//! the ledger's words for holds and reasons. The report rows and their customers are read and
//! written by the store ([`crate::store::reports`], [`crate::store::items`],
//! [`crate::store::listing`]), re-exported here.

use crate::config::Config;
use crate::db::Db;
use anyhow::{bail, Result};
use chrono::{DateTime, Utc};

pub use crate::store::decisions::{decisions, Decision};
pub use crate::store::items::{
    insert_request_item, outcome_and_held_counts, outcome_counts, search_window_end,
};
pub use crate::store::listing::*;
pub use crate::store::reports::*;

pub use crate::policy::Rule;

/// "Gift Aid declaration 2, legal hold 1".
pub fn holds_in_words(holds: &[(String, u64)]) -> String {
    holds
        .iter()
        .map(|(name, n)| format!("{name} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What the ledger says of a decision's reason: never the free text itself (it may name
/// people), which stays with the report until `approval.reasons_kept_for` has passed.
pub fn reason_note(given: bool) -> &'static str {
    if given {
        "reason given; kept with the report, not in the ledger"
    } else {
        "no reason given"
    }
}

/// The header row of a report's CSV.
pub const CSV_HEADER: [&str; 5] = ["customer_id", "name", "email", "last_activity", "kept"];

/// A CSV cell that a spreadsheet would run as a formula (it begins with `=`, `+`, `-`, `@`, a
/// tab or a carriage return) gets a leading `'`, so a customer named `=HYPERLINK(...)` stays text.
pub fn csv_cell(value: &str) -> String {
    if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{value}")
    } else {
        value.to_string()
    }
}

/// A time as a venue manager reads it: in the venue's zone, with its offset.
pub fn local_time_with_offset(t: DateTime<Utc>, tz: chrono_tz::Tz) -> String {
    t.with_timezone(&tz)
        .format("%Y-%m-%d %H:%M:%S%:z")
        .to_string()
}

impl ReportCustomer {
    /// This customer as a CSV row under [`CSV_HEADER`], times in the venue's zone.
    pub fn csv_record(&self, tz: chrono_tz::Tz) -> [String; 5] {
        [
            self.id.to_string(),
            csv_cell(&self.name),
            csv_cell(&self.email),
            self.last_activity.map_or_else(
                || "never ordered".to_string(),
                |t| local_time_with_offset(t, tz),
            ),
            if self.kept { "yes" } else { "no" }.to_string(),
        ]
    }
}

/// Writes a report's customers as CSV (header row, one row each), page by page. Refused once
/// the report is decided against or applied: its personal data is no longer to be exported.
pub async fn write_csv<W: std::io::Write>(
    db: &Db,
    config: &Config,
    report: &Report,
    out: W,
) -> Result<()> {
    if !report.state.shows_customers() {
        bail!(
            "report {} is {}: its customer list is no longer available",
            report.id,
            report.state
        );
    }
    let tz = config
        .venue(report.venue_id)
        .map_or(config.schedule.timezone, |v| v.timezone);
    let mut writer = csv::Writer::from_writer(out);
    writer.write_record(CSV_HEADER)?;
    let mut after = i64::MIN;
    loop {
        let page = csv_chunk(db, &config.schema, report.id, after, 1000).await?;
        let Some(last) = page.last() else { break };
        after = last.id;
        for c in &page {
            writer.write_record(c.csv_record(tz))?;
        }
    }
    match writer.flush() {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}
