//! `retentiond whatif` (SPEC 12): before a venue picks its policy, for each candidate period
//! the customers it would select, their share of the venue and what each hold keeps back, and
//! the venue's customers by year of last activity. Reads only; changes nothing.

use crate::config::VenueConfig;
use crate::db::Query;
use crate::policy::{self, CalendarPeriod};
use crate::selection::{self, HeldBack, Scope};
use crate::Service;
use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::Serialize;

/// The periods asked about when none are given.
pub const DEFAULT_PERIODS: [&str; 7] = [
    "1 year", "2 years", "3 years", "4 years", "5 years", "7 years", "10 years",
];

#[derive(Debug, Clone, Serialize)]
pub struct WhatIf {
    pub venue_id: i64,
    pub at: DateTime<Utc>,
    /// All the venue's customers.
    pub customers: u64,
    pub periods: Vec<PeriodFigures>,
    /// The venue's customers by the year of their last activity (`None`: never active).
    pub by_year: Vec<(Option<i64>, u64)>,
}

/// What one `inactive_for` would select now.
#[derive(Debug, Clone, Serialize)]
pub struct PeriodFigures {
    pub inactive_for: String,
    pub cutoff: DateTime<Utc>,
    pub candidates: u64,
    /// Of all the venue's customers, 0 to 1.
    pub share: f64,
    pub held_back: HeldBack,
}

/// The figures of `venue` as of `at` for each of `periods`, with the venue's holds, activity
/// tables and exclusions as a cycle would apply them.
pub async fn whatif(
    svc: &Service,
    venue: &VenueConfig,
    at: DateTime<Utc>,
    periods: &[CalendarPeriod],
) -> Result<WhatIf> {
    let schema = &svc.config.schema;
    let customers = selection::count_customers(&svc.db, schema, venue.id).await?;
    let mut figures = Vec::new();
    for period in periods {
        let mut scope = Scope::new(&svc.config, svc.db.backend(), venue, at);
        scope.cutoff = policy::cutoff(at, venue.timezone, *period);
        let candidates = selection::count_candidates(&svc.db, &scope).await?;
        figures.push(PeriodFigures {
            inactive_for: period.to_string(),
            cutoff: scope.cutoff,
            candidates,
            share: if customers == 0 {
                0.0
            } else {
                candidates as f64 / customers as f64
            },
            held_back: scope.held_back(&svc.db).await?,
        });
    }
    let backend = svc.db.backend();
    let last =
        selection::last_activity_of(backend, schema, &format!("c.{}", schema.customer_id.q()));
    let mut q = Query::new(&format!(
        "SELECT {year}, COUNT(*) FROM (SELECT {last} AS last_activity FROM {customers} c WHERE 1 = 1",
        year = backend.year_of("last_activity"),
        customers = schema.customers.q()
    ));
    selection::push_venue_filter(&mut q, schema, "c.", venue.id);
    q.push(") a GROUP BY 1 ORDER BY 1");
    let by_year = svc
        .db
        .fetch_all(&q)
        .await?
        .iter()
        .map(|r| Ok((r.opt_i64(0)?, r.i64(1)? as u64)))
        .collect::<Result<_>>()?;
    Ok(WhatIf {
        venue_id: venue.id,
        at,
        customers,
        periods: figures,
        by_year,
    })
}

/// The figures as a table for a terminal.
pub fn in_lines(w: &WhatIf, venue_name: &str) -> Vec<String> {
    let mut lines = vec![
        format!(
            "venue {} ({venue_name}): {} customers, as of {}",
            w.venue_id,
            w.customers,
            w.at.to_rfc3339()
        ),
        String::new(),
        format!(
            "{:<14} {:>10} {:>7}  {}",
            "inactive for", "candidates", "share", "kept back by holds"
        ),
    ];
    for p in &w.periods {
        lines.push(format!(
            "{:<14} {:>10} {:>6.1}%  {}",
            p.inactive_for,
            p.candidates,
            p.share * 100.0,
            p.held_back.in_words().unwrap_or_else(|| "none".into())
        ));
    }
    lines.push(String::new());
    lines.push(format!("{:<14} {:>10}", "last active", "customers"));
    for (year, n) in &w.by_year {
        let year = year.map_or_else(|| "never".to_string(), |y| y.to_string());
        lines.push(format!("{year:<14} {n:>10}"));
    }
    lines
}
