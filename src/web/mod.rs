//! The report pages (SPEC 4): `/r/{token}` with its CSV, approve and reject; `/healthz` and
//! `/metrics`. Every page is plain HTML that works without JavaScript, sent with `no-store`,
//! `no-referrer` and a restrictive Content-Security-Policy. Tokens never reach a log line.

mod pages;
pub use pages::{PAGE_SIZE, SEARCH_WINDOW};
mod rate_limit;
mod server;

pub use rate_limit::RateLimiter;

use crate::approval::{self, Lookup};
use crate::decision::{self, Actor, Decided, Decision, DecisionError};
use crate::Service;
use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;
use tracing::{error, info};

/// Requests carry at most a short form.
const BODY_LIMIT: usize = 16 * 1024;
/// A keep or unkeep may carry many ids pasted from the CSV.
const KEEP_BODY_LIMIT: usize = 2 * 1024 * 1024;

/// Serves the pages on `listener` until `shutdown` completes. Only [`crate::app::App`] starts
/// the web server (`run`, `demo`, the tests and the benchmark all come through it), so what the
/// tests exercise (client addresses for the rate limiter, trusted proxies, the path prefix) is
/// what production runs.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    svc: Service,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let max_connections = svc.config.http.max_connections;
    server::serve(listener, router(svc), max_connections, shutdown).await
}

tokio::task_local! {
    /// The path prefix of `http.public_url` for the request being served, for pages rendered
    /// where the service is out of reach (error pages).
    static BASE_PATH: String;
}

/// The path prefix the pages link under ("" without one).
pub(crate) fn base_path() -> String {
    BASE_PATH.try_with(Clone::clone).unwrap_or_default()
}

fn router(svc: Service) -> Router {
    let limiter = std::sync::Arc::new(RateLimiter::new(
        svc.config.http.link_requests_burst,
        svc.config.http.link_requests_per_second,
    ));
    let trusted = std::sync::Arc::new(svc.config.http.trusted_proxies.clone());
    let links = Router::new()
        .route("/r/{token}", get(report_page))
        .route("/r/{token}/report.csv", get(report_csv))
        .route("/r/{token}/approve", post(approve))
        .route("/r/{token}/reject", post(reject))
        // Up to 10,000 pasted ids and more: a larger body than the other forms.
        .route(
            "/r/{token}/keep",
            post(keep).layer(DefaultBodyLimit::max(KEEP_BODY_LIMIT)),
        )
        .route(
            "/r/{token}/unkeep",
            post(unkeep).layer(DefaultBodyLimit::max(KEEP_BODY_LIMIT)),
        )
        .layer(middleware::from_fn(move |request: Request, next: Next| {
            let limiter = limiter.clone();
            let trusted = trusted.clone();
            async move { rate_limited(&limiter, &trusted, request, next).await }
        }));
    let pages: Router<Service> = Router::new()
        .merge(links)
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/style.css", get(stylesheet));
    // Behind a proxy that keeps the prefix of public_url the requests arrive under it; behind
    // one that strips it they arrive at the root: both work.
    let base = svc.config.http.base_path.clone();
    let routes = if base.is_empty() {
        pages
    } else {
        Router::new().nest(&base, pages.clone()).merge(pages)
    };
    routes
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn(security_headers))
        .layer(middleware::from_fn(move |request: Request, next: Next| {
            BASE_PATH.scope(base.clone(), next.run(request))
        }))
        .with_state(svc)
}

/// The client a request comes from: the peer, or, when the peer is a trusted proxy, the last
/// address in `X-Forwarded-For` that is not itself a trusted proxy (the one the nearest
/// trusted proxy saw). An untrusted peer's header is ignored: anyone can write one. An
/// IPv4-mapped IPv6 address (`::ffff:127.0.0.1`, how a server bound to `[::]` sees an IPv4
/// peer) is taken as the IPv4 address it carries, for the trusted networks and the client alike.
pub fn client_address(
    peer: std::net::IpAddr,
    forwarded_for: Option<&str>,
    trusted: &[ipnet::IpNet],
) -> std::net::IpAddr {
    let peer = peer.to_canonical();
    let is_trusted = |ip: &std::net::IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    forwarded_for
        .into_iter()
        .flat_map(|header| header.split(','))
        .rev()
        .filter_map(|part| part.trim().parse::<std::net::IpAddr>().ok())
        .map(|ip| ip.to_canonical())
        .find(|ip| !is_trusted(ip))
        .unwrap_or(peer)
}

#[cfg(test)]
mod client_address_tests {
    use super::client_address;

    #[test]
    fn an_ipv4_mapped_proxy_is_recognised_and_its_clients_told_apart() {
        let trusted: Vec<ipnet::IpNet> = vec!["127.0.0.1/32".parse().unwrap()];
        let mapped_proxy: std::net::IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert_eq!(
            client_address(mapped_proxy, Some("203.0.113.7"), &trusted),
            "203.0.113.7".parse::<std::net::IpAddr>().unwrap()
        );
        assert_eq!(
            client_address(mapped_proxy, Some("::ffff:198.51.100.2"), &trusted),
            "198.51.100.2".parse::<std::net::IpAddr>().unwrap()
        );
        let stranger: std::net::IpAddr = "::ffff:192.0.2.9".parse().unwrap();
        assert_eq!(
            client_address(stranger, Some("203.0.113.7"), &trusted),
            "192.0.2.9".parse::<std::net::IpAddr>().unwrap(),
            "an untrusted peer's header is ignored"
        );
    }
}

async fn rate_limited(
    limiter: &RateLimiter,
    trusted: &[ipnet::IpNet],
    request: Request,
    next: Next,
) -> Response {
    let forwarded_for = request
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    let client = request
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|c| {
            client_address(
                c.0.ip(),
                Some(&forwarded_for)
                    .filter(|f| !f.is_empty())
                    .map(String::as_str),
                trusted,
            )
        });
    if let Some(client) = client {
        if !limiter.allow(client, std::time::Instant::now()) {
            metrics::counter!("retentiond_http_rate_limited_total").increment(1);
            let mut response = pages::plain(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many requests",
                &["Please wait a minute and try again."],
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
            return response;
        }
    }
    next.run(request).await
}

async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// What a visitor sees when something is wrong: a plain page, never internals.
pub enum WebError {
    NotFound,
    Expired,
    /// The link's approver is no longer among the venue's approvers.
    Forbidden,
    Internal(anyhow::Error),
}

impl From<anyhow::Error> for WebError {
    fn from(e: anyhow::Error) -> Self {
        WebError::Internal(e)
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        match self {
            WebError::NotFound => pages::plain(
                StatusCode::NOT_FOUND,
                "Link not found",
                &["This link is not valid. Check that you copied the whole link from the email."],
            ),
            WebError::Expired => pages::plain(
                StatusCode::GONE,
                "Link expired",
                &["This link has expired. Nothing was done to any customer through it."],
            ),
            WebError::Forbidden => pages::plain(
                StatusCode::FORBIDDEN,
                "No longer an approver",
                &["This link belongs to an address that is no longer an approver of this venue. Nothing can be decided through it."],
            ),
            WebError::Internal(e) => {
                error!(error = %format!("{e:#}"), "request failed");
                pages::plain(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong",
                    &["The page could not be shown. Please try again later."],
                )
            }
        }
    }
}

async fn valid(svc: &Service, token: &str) -> Result<(crate::reports::Report, String), WebError> {
    valid_with_approvals(svc, token)
        .await
        .map(|(report, approver, _)| (report, approver))
}

async fn valid_with_approvals(
    svc: &Service,
    token: &str,
) -> Result<(crate::reports::Report, String, i64), WebError> {
    match approval::lookup(&svc.db, token, svc.clock.now()).await? {
        Lookup::Valid {
            report,
            approver,
            approvals,
        } => {
            // An approver removed from the venue's list since the email decides nothing.
            let still_approver = svc
                .config
                .venue(report.venue_id)
                .is_some_and(|v| v.has_approver(&approver));
            if !still_approver {
                return Err(WebError::Forbidden);
            }
            Ok((report, approver, approvals))
        }
        Lookup::Expired => Err(WebError::Expired),
        Lookup::Unknown => Err(WebError::NotFound),
    }
}

#[derive(Deserialize)]
struct PageQuery {
    after: Option<i64>,
    page: Option<u32>,
    q: Option<String>,
    /// Set on the links of a search that reads the report's windows (part of a name), so that
    /// the next window does not first ask the search index again.
    within: Option<String>,
}

async fn report_page(
    State(svc): State<Service>,
    Path(token): Path<String>,
    Query(page): Query<PageQuery>,
) -> Result<Response, WebError> {
    let (report, approver, approvals) = valid_with_approvals(&svc, &token).await?;
    let search: Option<String> = page.q.map(|q| q.chars().take(200).collect());
    Ok(pages::report(
        &svc,
        &report,
        &approver,
        &token,
        pages::View {
            after: page
                .after
                .map(|after| (after, page.page.unwrap_or(1).min(100_000))),
            search: search.as_deref(),
            within_names: page.within.as_deref() == Some("names"),
            approvals: Some(approvals),
            ..pages::View::default()
        },
    )
    .await?)
}

async fn report_csv(
    State(svc): State<Service>,
    Path(token): Path<String>,
) -> Result<Response, WebError> {
    let (report, _) = valid(&svc, &token).await?;
    if !report.state.shows_customers() {
        return Ok(pages::plain(
            StatusCode::GONE,
            "No longer available",
            &["This report has been decided; its customer list is no longer available."],
        ));
    }
    info!(report.id = report.id, "report CSV downloaded");
    let body = Body::from_stream(pages::csv_stream(svc.clone(), report.id, report.venue_id));
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8"),
            ),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_str(&format!(
                    "attachment; filename=\"report-{}.csv\"",
                    report.id
                ))
                .expect("ascii"),
            ),
        ],
        body,
    )
        .into_response())
}

#[derive(Deserialize)]
struct ApproveForm {
    #[serde(default)]
    confirm: String,
}

async fn approve(
    State(svc): State<Service>,
    Path(token): Path<String>,
    Form(form): Form<ApproveForm>,
) -> Result<Response, WebError> {
    let confirm = Some(form.confirm.as_str());
    decide_through_link(&svc, &token, Decision::Approve { confirm }).await
}

#[derive(Deserialize)]
struct RejectForm {
    reason: Option<String>,
}

async fn reject(
    State(svc): State<Service>,
    Path(token): Path<String>,
    Form(form): Form<RejectForm>,
) -> Result<Response, WebError> {
    let reason = form.reason.as_deref();
    decide_through_link(&svc, &token, Decision::Reject { reason }).await
}

#[derive(Deserialize)]
struct KeepForm {
    #[serde(default)]
    ids: String,
    reason: Option<String>,
}

async fn keep(
    State(svc): State<Service>,
    Path(token): Path<String>,
    Form(form): Form<KeepForm>,
) -> Result<Response, WebError> {
    let ids = match crate::review::parse_ids(&form.ids) {
        Ok(ids) => ids,
        Err(e) => return refused_ids(&svc, &token, e).await,
    };
    let reason = form.reason.as_deref();
    decide_through_link(&svc, &token, Decision::Keep { ids: &ids, reason }).await
}

async fn unkeep(
    State(svc): State<Service>,
    Path(token): Path<String>,
    Form(form): Form<KeepForm>,
) -> Result<Response, WebError> {
    let ids = match crate::review::parse_ids(&form.ids) {
        Ok(ids) => ids,
        Err(e) => return refused_ids(&svc, &token, e).await,
    };
    decide_through_link(&svc, &token, Decision::Unkeep { ids: &ids }).await
}

/// The page after ids that could not be read (422); nothing was changed.
async fn refused_ids(
    svc: &Service,
    token: &str,
    e: crate::review::BadIds,
) -> Result<Response, WebError> {
    let (report, approver) = valid(svc, token).await?;
    let said = Said::error(e.to_string(), StatusCode::UNPROCESSABLE_ENTITY);
    decided_page(svc, report.id, &approver, token, said).await
}

/// Takes a decision through a link and shows the report as it now stands, with what happened.
/// An expired link is 410 before anything; a decided report refuses with 409, a wrong count
/// or ids not on the report with 422, changing nothing.
async fn decide_through_link(
    svc: &Service,
    token: &str,
    decision: Decision<'_>,
) -> Result<Response, WebError> {
    let (report, approver) = valid(svc, token).await?;
    let approvers = svc
        .config
        .venue(report.venue_id)
        .map(|v| v.approvers.clone())
        .unwrap_or_default();
    let outcome = decision::decide(
        &svc.db,
        report.id,
        Actor::Approver(&approver, &approvers),
        decision,
        svc.clock.now(),
    )
    .await?;
    let said = match outcome {
        Ok(decided) => {
            info!(report.id = report.id, decided = ?LoggedDecision(&decided), "decision taken through a link");
            Said::notice(decided_in_words(&decided))
        }
        Err(DecisionError::NotPending(crate::policy::ReportState::Expired)) => {
            return Err(WebError::Expired)
        }
        Err(e @ DecisionError::WrongConfirmation { .. }) => Said::error(
            format!("{e}. Nothing was approved."),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        Err(e @ DecisionError::NotOnReport(_)) => {
            Said::error(e.to_string(), StatusCode::UNPROCESSABLE_ENTITY)
        }
        Err(e) => Said::error(e.to_string(), StatusCode::CONFLICT),
    };
    decided_page(svc, report.id, &approver, token, said).await
}

/// A decision as logged: its kind and counts, never ids or reasons.
struct LoggedDecision<'a>(&'a Decided);

impl std::fmt::Debug for LoggedDecision<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Decided::Kept(change) | Decided::Unkept(change) => write!(
                f,
                "kept list: {} changed, {} kept",
                change.changed, change.kept
            ),
            other => write!(f, "{other:?}"),
        }
    }
}

/// What the approver is told after an accepted decision.
fn decided_in_words(decided: &Decided) -> String {
    match decided {
        Decided::Approved => {
            "Thank you: the report is approved. It will be applied on the next run.".into()
        }
        Decided::Approval {
            approvals,
            required,
        } => format!("Thank you: your approval is recorded ({approvals} of {required}). The report is applied once enough approvers agree."),
        Decided::AlreadyApprovedByYou => "You have already approved this report.".into(),
        Decided::Rejected => {
            "The report is rejected. Nothing will be done to these customers.".into()
        }
        Decided::Cancelled => "The report is cancelled.".into(),
        Decided::Kept(change) | Decided::Unkept(change) => {
            let verb = if matches!(decided, Decided::Kept(_)) {
                "kept out of the report"
            } else {
                "put back on the report"
            };
            let mut notice = format!(
                "{} customer(s) {verb}. {} customer(s) are kept out now.",
                change.changed, change.kept
            );
            if change.withdrawn > 0 {
                notice.push_str(" Approvals given before this change no longer count: approvers must approve again.");
            }
            notice
        }
    }
}

/// The message shown above the report after a request, and the status it is sent with.
struct Said {
    notice: Option<String>,
    error: Option<String>,
    status: StatusCode,
}

impl Said {
    fn notice(text: String) -> Said {
        Said {
            notice: Some(text),
            error: None,
            status: StatusCode::OK,
        }
    }

    fn error(text: String, status: StatusCode) -> Said {
        Said {
            notice: None,
            error: Some(text),
            status,
        }
    }
}

/// The report page after a decision, showing the report as it now stands.
async fn decided_page(
    svc: &Service,
    report_id: i64,
    approver: &str,
    token: &str,
    said: Said,
) -> Result<Response, WebError> {
    let report = crate::reports::get(&svc.db, report_id)
        .await?
        .ok_or(WebError::NotFound)?;
    Ok(pages::report(
        svc,
        &report,
        approver,
        token,
        pages::View {
            notice: said.notice,
            error: said.error,
            status: said.status,
            ..pages::View::default()
        },
    )
    .await?)
}

async fn healthz(State(svc): State<Service>) -> Response {
    match svc.db.fetch_one(&crate::db::Query::new("SELECT 1")).await {
        Ok(_) => (StatusCode::OK, "ok\n").into_response(),
        Err(e) => {
            error!(error = %format!("{e:#}"), "health check: database unreachable");
            (StatusCode::SERVICE_UNAVAILABLE, "database unreachable\n").into_response()
        }
    }
}

async fn metrics(State(svc): State<Service>) -> Result<Response, WebError> {
    let text = crate::metrics::render(&svc).await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        text,
    )
        .into_response())
}

async fn stylesheet() -> Response {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static("text/css"))],
        include_str!("../../templates/style.css"),
    )
        .into_response()
}

async fn not_found() -> WebError {
    WebError::NotFound
}
