//! Rendering the pages (templates in `templates/`) and streaming the CSV page by page, so memory
//! stays flat however large the report.

use crate::policy::Strategy;
use crate::reports::{self, Report, ReportCustomer};
use crate::Service;
use anyhow::Result;
use askama::Template;
use axum::body::Bytes;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;

/// Customers per page of the report table.
pub const PAGE_SIZE: u32 = 50;
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

#[derive(Template)]
#[template(path = "report.html")]
struct ReportPage<'a> {
    base: &'a str,
    report: &'a Report,
    venue_name: String,
    approver: &'a str,
    token: &'a str,
    cutoff: String,
    expires: String,
    approvals: usize,
    removed: String,
    kept: String,
    references: String,
    decidable: bool,
    shows_customers: bool,
    customers: Vec<ReportCustomer>,
    first_shown: i64,
    last_shown: i64,
    has_previous: bool,
    next_after: Option<i64>,
    next_page: u32,
    notice: Option<String>,
    error: Option<String>,
}

#[allow(clippy::too_many_arguments)]
pub async fn report(
    svc: &Service,
    report: &Report,
    approver: &str,
    token: &str,
    after: Option<(i64, u32)>,
    approvals: Option<i64>,
    notice: Option<String>,
    error: Option<String>,
    status: StatusCode,
) -> Result<Response> {
    let venue = svc.config.venue(report.venue_id);
    let tz = venue.map_or(svc.config.schedule.timezone, |v| v.timezone);
    let (mut removed, mut kept) = (Vec::new(), Vec::new());
    for (column, strategy) in venue.map(|v| v.anonymise.as_slice()).unwrap_or_default() {
        match strategy {
            Strategy::Keep => kept.push(column.to_string()),
            other => removed.push(format!("{column} ({})", other.in_words())),
        }
    }
    let references =
        crate::erase::linked_tables_in_words(&svc.config.schema, report.action).join(" ");
    let shows_customers = report.state.shows_customers();
    // The page number travels in the link, so no page needs to count the rows before it.
    let position = after.map_or(0, |(_, page)| i64::from(page) * i64::from(PAGE_SIZE));
    let mut customers = Vec::new();
    if shows_customers {
        let after_id = after.map_or(i64::MIN, |(id, _)| id);
        customers = reports::customers_page(
            &svc.db,
            &svc.config.schema,
            report.id,
            after_id,
            PAGE_SIZE + 1,
        )
        .await?;
    }
    let next_after = (customers.len() > PAGE_SIZE as usize).then(|| {
        customers.truncate(PAGE_SIZE as usize);
        customers.last().map(|c| c.id)
    });
    let page = ReportPage {
        base: &svc.config.http.base_path,
        report,
        venue_name: venue.map_or_else(|| format!("Venue {}", report.venue_id), |v| v.name.clone()),
        approver,
        token,
        cutoff: report
            .cutoff
            .with_timezone(&tz)
            .format("%-d %B %Y")
            .to_string(),
        expires: report
            .expires_at
            .with_timezone(&tz)
            .format("%-d %B %Y, %H:%M %Z")
            .to_string(),
        approvals: match approvals {
            Some(n) => n as usize,
            None => crate::approval::approvers_so_far(&svc.db, report.id)
                .await?
                .len(),
        },
        removed: removed.join(", "),
        kept: kept.join(", "),
        references,
        decidable: report.state == crate::policy::ReportState::Pending,
        shows_customers,
        first_shown: if customers.is_empty() {
            0
        } else {
            position + 1
        },
        last_shown: position + customers.len() as i64,
        has_previous: after.is_some(),
        next_after: next_after.flatten(),
        next_page: after.map_or(1, |(_, page)| page + 1),
        customers,
        notice,
        error,
    };
    Ok(html_response(status, page.render()?))
}

/// The report's customers as CSV (header row, one row each), fetched and sent chunk by chunk.
pub fn csv_stream(
    svc: Service,
    report_id: i64,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::unfold(Some(i64::MIN), move |after| {
        let svc = svc.clone();
        async move {
            let after = after?;
            let header = after == i64::MIN;
            let page = match reports::customers_page(
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
                let _ = writer.write_record(c.csv_record());
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
