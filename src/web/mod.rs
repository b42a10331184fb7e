//! The report pages (SPEC 4): `/r/{token}` with its CSV, approve and reject; `/healthz` and
//! `/metrics`. Every page is plain HTML that works without JavaScript, sent with `no-store`,
//! `no-referrer` and a restrictive Content-Security-Policy. Tokens never reach a log line.

mod pages;
mod rate_limit;

pub use rate_limit::RateLimiter;

use crate::approval::{self, Decided, DecisionError, Lookup};
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

/// Serves the pages on `listener` until `shutdown` completes. This is the only way the web
/// server is started (`run`, `demo`, the tests and the benchmark all come through here), so
/// what the tests exercise (client addresses for the rate limiter, trusted proxies, the path
/// prefix) is what production runs.
pub async fn serve(
    listener: tokio::net::TcpListener,
    svc: Service,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router(svc).into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
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
/// trusted proxy saw). An untrusted peer's header is ignored: anyone can write one.
pub fn client_address(
    peer: std::net::IpAddr,
    forwarded_for: Option<&str>,
    trusted: &[ipnet::IpNet],
) -> std::net::IpAddr {
    let is_trusted = |ip: &std::net::IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    forwarded_for
        .into_iter()
        .flat_map(|header| header.split(','))
        .rev()
        .filter_map(|part| part.trim().parse::<std::net::IpAddr>().ok())
        .find(|ip| !is_trusted(ip))
        .unwrap_or(peer)
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
    let (report, approver) = valid(&svc, &token).await?;
    let outcome = approval::approve(
        &svc.db,
        report.id,
        &approver,
        &form.confirm,
        svc.clock.now(),
    )
    .await?;
    let (notice, error, status) = match outcome {
        Ok(Decided::Approved) => {
            info!(report.id = report.id, "report approved through its link");
            (
                Some(
                    "Thank you: the report is approved. It will be applied on the next run."
                        .to_string(),
                ),
                None,
                StatusCode::OK,
            )
        }
        Ok(Decided::Approval {
            approvals,
            required,
        }) => {
            info!(
                report.id = report.id,
                approvals, required, "approval recorded through its link"
            );
            (Some(format!("Thank you: your approval is recorded ({approvals} of {required}). The report is applied once enough approvers agree.")), None, StatusCode::OK)
        }
        Ok(Decided::AlreadyApprovedByYou) => (
            Some("You have already approved this report.".to_string()),
            None,
            StatusCode::OK,
        ),
        Ok(Decided::Rejected) => unreachable!("approve never rejects"),
        Err(DecisionError::WrongConfirmation { .. }) => (
            None,
            Some(format!("{}. Nothing was approved.", outcome.unwrap_err())),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        Err(e @ DecisionError::NotPending(_)) => (None, Some(e.to_string()), StatusCode::CONFLICT),
    };
    decided_page(&svc, report.id, &approver, &token, notice, error, status).await
}

/// The report page after a decision, showing the report as it now stands.
async fn decided_page(
    svc: &Service,
    report_id: i64,
    approver: &str,
    token: &str,
    notice: Option<String>,
    error: Option<String>,
    status: StatusCode,
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
            notice,
            error,
            status,
            ..pages::View::default()
        },
    )
    .await?)
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
    set_kept(svc, token, form, true).await
}

async fn unkeep(
    State(svc): State<Service>,
    Path(token): Path<String>,
    Form(form): Form<KeepForm>,
) -> Result<Response, WebError> {
    set_kept(svc, token, form, false).await
}

/// Keeps customers out of the report (or puts them back) through the link; the page then shows
/// the report as it now stands. Refused (changing nothing) for ids that are not on the report
/// (422), or once the report is decided (409); an expired link is 410 before anything.
async fn set_kept(
    svc: Service,
    token: String,
    form: KeepForm,
    keep: bool,
) -> Result<Response, WebError> {
    use crate::review::{self, ReviewError};
    let (report, approver) = valid(&svc, &token).await?;
    let outcome = match review::parse_ids(&form.ids) {
        Ok(ids) => {
            review::set_kept(
                &svc.db,
                report.id,
                &ids,
                keep,
                &approver,
                form.reason.as_deref(),
                svc.clock.now(),
            )
            .await?
        }
        Err(e) => Err(e),
    };
    let (notice, error, status) = match outcome {
        Ok(changed) => {
            info!(
                report.id = report.id,
                customers = changed.changed,
                keep,
                "kept list changed through a link"
            );
            let verb = if keep {
                "kept out of the report"
            } else {
                "put back on the report"
            };
            let mut notice = format!(
                "{} customer(s) {verb}. {} customer(s) are kept out now.",
                changed.changed, changed.kept
            );
            if changed.withdrawn > 0 {
                notice.push_str(" Approvals given before this change no longer count: approvers must approve again.");
            }
            (Some(notice), None, StatusCode::OK)
        }
        Err(e @ (ReviewError::BadIds(_) | ReviewError::NotOnReport(_))) => {
            (None, Some(e.to_string()), StatusCode::UNPROCESSABLE_ENTITY)
        }
        Err(ReviewError::NotDecidable(DecisionError::NotPending(
            crate::policy::ReportState::Expired,
        ))) => return Err(WebError::Expired),
        Err(ReviewError::NotDecidable(e)) => (None, Some(e.to_string()), StatusCode::CONFLICT),
    };
    decided_page(&svc, report.id, &approver, &token, notice, error, status).await
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
    let (report, approver) = valid(&svc, &token).await?;
    let (notice, error, status) = match approval::reject(
        &svc.db,
        report.id,
        &approver,
        form.reason.as_deref(),
        svc.clock.now(),
    )
    .await?
    {
        Ok(_) => {
            info!(report.id = report.id, "report rejected through its link");
            (
                Some(
                    "The report is rejected. Nothing will be done to these customers.".to_string(),
                ),
                None,
                StatusCode::OK,
            )
        }
        Err(e) => (None, Some(e.to_string()), StatusCode::CONFLICT),
    };
    decided_page(&svc, report.id, &approver, &token, notice, error, status).await
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
