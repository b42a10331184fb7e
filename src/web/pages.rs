//! Rendering the pages (templates in `templates/`) and streaming the CSV page by page, so memory
//! stays flat however large the report.

use crate::policy::Strategy;
use crate::reports::{self, Report};
use crate::Service;
use anyhow::Result;
use askama::Template;
use axum::body::Bytes;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use secrecy::ExposeSecret;

/// Customers per page of the report table.
pub const PAGE_SIZE: u32 = 50;
/// How many of a report's customers a search within names (part of a name) reads for one page:
/// four pages' worth, so that such a page costs the database about what a plain page costs
/// (on PostgreSQL at 1,000,000 customers, 0.2 to 0.5 ms against 0.2 ms; 500 took 0.9 to 1.5 ms
/// and the page's p99 under load was twice a plain page's).
pub const SEARCH_WINDOW: u32 = 200;
/// Customers per chunk of the streamed CSV.
const CSV_CHUNK: u32 = 2000;

#[derive(Template)]
#[template(path = "page.html")]
struct PlainPage<'a> {
    base: String,
    title: &'a str,
    lines: &'a [&'a str],
}

pub fn plain(status: StatusCode, title: &str, lines: &[&str]) -> Response {
    let base = super::base_path();
    let html = PlainPage { base, title, lines }
        .render()
        .unwrap_or_else(|_| title.to_string());
    html_response(status, html)
}

fn html_response(status: StatusCode, html: String) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        )],
        html,
    )
        .into_response()
}

/// One row of the customers table, in the venue manager's words and time zone.
struct CustomerRow {
    id: i64,
    name: String,
    email: String,
    last_activity: String,
    kept: bool,
}

/// One customer of the Kept list.
struct KeptRow {
    id: i64,
    name: String,
    kept_by: String,
    kept_at: String,
    reason: String,
}

/// One bar of the chart of customers by year of last order.
struct Bar {
    label: String,
    count: i64,
    max: i64,
}

#[derive(Template)]
#[template(path = "report.html")]
struct ReportPage<'a> {
    base: &'a str,
    report: &'a Report,
    venue_name: String,
    approver: &'a str,
    token: &'a str,
    cutoff: String,
    created: String,
    expires: String,
    customers_line: String,
    /// What the holds kept back when the report was made (SPEC 12).
    held_back: Option<String>,
    to_approve: i64,
    approvals: usize,
    /// Approvers whose approval no longer counts: they are no longer the venue's approvers.
    no_longer_counting: String,
    withdrawn: bool,
    removed: String,
    kept_fields: String,
    references: String,
    decidable: bool,
    shows_customers: bool,
    customers: Vec<CustomerRow>,
    kept: Vec<KeptRow>,
    chart: Vec<Bar>,
    search: String,
    first_shown: i64,
    last_shown: i64,
    has_previous: bool,
    next_after: Option<i64>,
    /// A search that read a window of the report without filling the page: where it stopped.
    searched_to: Option<i64>,
    /// The search found whole names or emails through the report's search index.
    searched_whole: bool,
    /// The search reads windows of the report: its links say so (`within=names`).
    searched_within: bool,
    /// A number searched for that is no customer id on this report.
    id_not_on_report: Option<i64>,
    next_page: u32,
    decisions: Vec<String>,
    outcomes: Vec<String>,
    applied: String,
    notice: Option<String>,
    error: Option<String>,
}

/// A count as a person writes it: 1500 is "1,500".
pub fn with_commas(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// What the page shows besides the report itself.
pub struct View<'a> {
    pub after: Option<(i64, u32)>,
    pub search: Option<&'a str>,
    /// A later window of a search within names (the search index had no match on its first page).
    pub within_names: bool,
    pub approvals: Option<i64>,
    pub notice: Option<String>,
    pub error: Option<String>,
    pub status: StatusCode,
}

impl Default for View<'_> {
    fn default() -> Self {
        View {
            after: None,
            search: None,
            within_names: false,
            approvals: None,
            notice: None,
            error: None,
            status: StatusCode::OK,
        }
    }
}

pub async fn report(
    svc: &Service,
    report: &Report,
    approver: &str,
    token: &str,
    view: View<'_>,
) -> Result<Response> {
    let schema = &svc.config.schema;
    let venue = svc.config.venue(report.venue_id);
    let words = crate::wording::VenueWords::of(&svc.config, report.venue_id);
    let local = |t: chrono::DateTime<chrono::Utc>| words.time(t);
    let (mut removed, mut kept_fields) = (Vec::new(), Vec::new());
    for (column, strategy) in venue.map(|v| v.anonymise.as_slice()).unwrap_or_default() {
        match strategy {
            Strategy::Keep => kept_fields.push(schema.label(column.name())),
            other => removed.push(format!(
                "{} ({})",
                schema.label(column.name()),
                other.in_words()
            )),
        }
    }
    let references = crate::wording::linked_tables_in_words(schema, report.action).join(" ");
    let shows_customers = report.state.shows_customers();
    let decidable = report.state == crate::policy::ReportState::Pending;
    // The page number travels in the link, so no page needs to count the rows before it.
    let position = view
        .after
        .map_or(0, |(_, page)| i64::from(page) * i64::from(PAGE_SIZE));
    let search = view.search.map(str::trim).filter(|q| !q.is_empty());
    let mut customers = Vec::new();
    let mut kept = Vec::new();
    let mut next_after = None;
    let mut searched_to = None;
    let mut searched_whole = false;
    let mut searched_within = false;
    let mut id_not_on_report = None;
    if shows_customers {
        let after_id = view.after.map_or(i64::MIN, |(id, _)| id);
        // A number is an id, looked up at once (ids are what the CSV and the kept list show;
        // a number is not also searched as text, which would cost a window for every miss).
        // Other text is searched a window of the report at a time, so that a search page
        // costs about what any page costs however large the report.
        if let Some(id) = search.and_then(|s| s.parse::<i64>().ok()) {
            if view.after.is_none() {
                customers =
                    reports::customers_page(&svc.db, schema, report.id, id - 1, 1, None, Some(id))
                        .await?;
            }
            id_not_on_report = customers.is_empty().then_some(id);
        } else if let Some(ids) = match (search, &svc.config.hash_key) {
            // A whole name or email: the report's search index finds it anywhere in the report.
            (Some(text), Some(key)) if !view.within_names => {
                crate::store::terms::find(
                    &svc.db,
                    key.expose_secret().as_bytes(),
                    report.id,
                    text,
                    after_id,
                    PAGE_SIZE + 1,
                )
                .await?
            }
            _ => None,
        } {
            searched_whole = true;
            customers = reports::customers_with_ids(&svc.db, schema, report.id, &ids).await?;
            if ids.len() > PAGE_SIZE as usize {
                customers.retain(|c| c.id <= ids[PAGE_SIZE as usize - 1]);
                next_after = Some(ids[PAGE_SIZE as usize - 1]);
            }
        } else {
            searched_within = search.is_some();
            let window_end = match search {
                Some(_) => {
                    reports::search_window_end(&svc.db, report.id, after_id, SEARCH_WINDOW).await?
                }
                None => None,
            };
            customers = reports::customers_page(
                &svc.db,
                schema,
                report.id,
                after_id,
                PAGE_SIZE + 1,
                search,
                window_end,
            )
            .await?;
            if customers.len() > PAGE_SIZE as usize {
                customers.truncate(PAGE_SIZE as usize);
                next_after = customers.last().map(|c| c.id);
            } else if window_end.is_some() {
                next_after = window_end;
                searched_to = window_end;
            }
        }
        if report.kept_count > 0 {
            kept = crate::review::kept_list(&svc.db, schema, report, 1000).await?;
        }
    }
    let customers_line = match report.venue_customers.filter(|n| *n > 0) {
        Some(all) => format!(
            "{} of {} customers, {}%",
            with_commas(report.customer_count),
            with_commas(all),
            (report.customer_count * 100 + all / 2) / all
        ),
        None => format!("{} customers", with_commas(report.customer_count)),
    };
    let years = report.years();
    let max = years.iter().map(|(_, n)| *n).max().unwrap_or(0);
    let chart = years
        .iter()
        .map(|(year, count)| Bar {
            label: year.map_or_else(|| "never ordered".to_string(), |y| y.to_string()),
            count: *count,
            max,
        })
        .collect();
    let mut decisions = Vec::new();
    let mut outcomes = Vec::new();
    if !decidable {
        for d in reports::decisions(&svc.db, report.id).await? {
            let verb = match d.decision.as_str() {
                "approve" => "Approved",
                "reject" => "Rejected",
                "cancel" => "Cancelled",
                other => other,
            };
            let how = if d.via == "operator" {
                "on the venue's behalf"
            } else {
                "through the emailed link"
            };
            decisions.push(format!(
                "{verb} by {} {how}, {}",
                d.decided_by,
                local(d.decided_at)
            ));
        }
        if report.state == crate::policy::ReportState::Applied {
            let (counts, holds) = reports::outcome_and_held_counts(&svc.db, report.id).await?;
            for (outcome, n) in counts {
                let words = match outcome {
                    Some(crate::policy::Outcome::Deleted) => "deleted".to_string(),
                    Some(crate::policy::Outcome::Anonymised) => "anonymised".to_string(),
                    Some(o @ crate::policy::Outcome::SkippedHeld) if !holds.is_empty() => format!(
                        "left untouched: {} ({})",
                        crate::mail::compose::skip_reason(o),
                        reports::holds_in_words(&holds)
                    ),
                    Some(o) => format!("left untouched: {}", crate::mail::compose::skip_reason(o)),
                    None => "not processed".to_string(),
                };
                outcomes.push(format!("{} {words}", with_commas(n as i64)));
            }
        }
    }
    // Only approvals by the venue's approvers as configured now count (SPEC 4); the others
    // are named, so the remaining approvers know an approval stopped counting.
    let given = match view.approvals {
        Some(0) => Vec::new(),
        _ => crate::approval::approvers_so_far(&svc.db, report.id).await?,
    };
    let (counting, no_longer_counting): (Vec<String>, Vec<String>) = given
        .into_iter()
        .partition(|a| venue.is_some_and(|v| v.has_approver(a)));
    let approvals = counting.len();
    // Only a change of the kept list withdraws approvals: no query while nothing was kept.
    let withdrawn = decidable
        && report.kept_version > 0
        && crate::approval::approval_withdrawn(&svc.db, report, approver).await?;
    let page = ReportPage {
        base: &svc.config.http.base_path,
        report,
        venue_name: words.name.clone(),
        approver,
        token,
        cutoff: words.date(report.cutoff),
        created: local(report.created_at),
        expires: local(report.expires_at),
        customers_line,
        held_back: report.held_back.in_words(),
        to_approve: report.to_approve(),
        approvals,
        no_longer_counting: no_longer_counting.join(", "),
        withdrawn,
        removed: removed.join(", "),
        kept_fields: kept_fields.join(", "),
        references,
        decidable,
        shows_customers,
        first_shown: if customers.is_empty() {
            0
        } else {
            position + 1
        },
        last_shown: position + customers.len() as i64,
        has_previous: view.after.is_some(),
        next_after,
        searched_to,
        searched_whole,
        searched_within,
        id_not_on_report,
        next_page: view.after.map_or(1, |(_, page)| page + 1),
        customers: customers
            .into_iter()
            .map(|c| CustomerRow {
                id: c.id,
                name: c.name,
                email: c.email,
                last_activity: c
                    .last_activity
                    .map_or_else(|| "never ordered".to_string(), &local),
                kept: c.kept,
            })
            .collect(),
        kept: kept
            .into_iter()
            .map(|k| KeptRow {
                id: k.id,
                name: k.name,
                kept_by: k.kept_by,
                kept_at: local(k.kept_at),
                reason: k.reason.unwrap_or_default(),
            })
            .collect(),
        chart,
        search: search.unwrap_or_default().to_string(),
        decisions,
        outcomes,
        applied: report.applied_at.map(local).unwrap_or_default(),
        notice: view.notice,
        error: view.error,
    };
    Ok(html_response(view.status, page.render()?))
}

/// The report's customers as CSV (header row, one row each), fetched and sent chunk by chunk.
pub fn csv_stream(
    svc: Service,
    report_id: i64,
    venue_id: i64,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> {
    let tz = svc
        .config
        .venues
        .iter()
        .find(|v| v.id == venue_id)
        .map_or(svc.config.schedule.timezone, |v| v.timezone);
    futures_util::stream::unfold(Some(i64::MIN), move |after| {
        let svc = svc.clone();
        async move {
            let after = after?;
            let header = after == i64::MIN;
            let page = match reports::csv_chunk(
                &svc.db,
                &svc.config.schema,
                report_id,
                after,
                CSV_CHUNK,
            )
            .await
            {
                Ok(page) => page,
                Err(e) => {
                    tracing::error!(report.id = report_id, error = %format!("{e:#}"), "CSV stream failed");
                    return Some((Err(std::io::Error::other("report CSV failed")), None));
                }
            };
            if page.is_empty() && !header {
                return None;
            }
            let mut writer = csv::Writer::from_writer(Vec::new());
            if header {
                let _ = writer.write_record(reports::CSV_HEADER);
            }
            for c in &page {
                let _ = writer.write_record(c.csv_record(tz));
            }
            let bytes = writer.into_inner().unwrap_or_default();
            let next = if page.len() < CSV_CHUNK as usize {
                None
            } else {
                page.last().map(|c| c.id)
            };
            Some((Ok(Bytes::from(bytes)), next))
        }
    })
}
