//! The HTTP server under the pages, as a deployment without a proxy needs it: at most
//! `http.max_connections` connections (one more is closed at once), a request's headers must
//! arrive within [`HEADER_TIMEOUT`] and its answer be ready within [`REQUEST_TIMEOUT`], and on
//! shutdown requests in progress get [`DRAIN`] to finish while a half-sent one is not waited for.

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;
use tracing::{debug, warn};

/// How long a client may take to send a request's headers (also the longest a kept-alive
/// connection waits idle for its next request).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a request may take until its answer starts (a form's body included); a CSV then
/// streams as long as it needs.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long shutdown waits for the requests in progress.
pub const DRAIN: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `shutdown` completes, with at most `max_connections` open.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    max_connections: u32,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(max_connections as usize));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait a moment, do not spin.
                    warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics::counter!("retentiond_http_connections_refused_total").increment(1);
            debug!("connection limit reached; a connection was closed");
            drop(stream);
            continue;
        };
        let app = app.clone();
        let service = hyper::service::service_fn(
            move |mut request: hyper::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                let app = app.clone();
                async move {
                    let answer =
                        tokio::time::timeout(REQUEST_TIMEOUT, app.oneshot(request.map(Body::new)));
                    Ok::<_, std::convert::Infallible>(match answer.await {
                        Ok(Ok(response)) => response,
                        Ok(Err(never)) => match never {},
                        Err(_) => {
                            (StatusCode::REQUEST_TIMEOUT, "request timed out").into_response()
                        }
                    })
                }
            },
        );
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _ = connection.await;
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        warn!("requests still in progress after the drain were dropped");
    }
    Ok(())
}
