//! Prometheus metrics (SPEC 7): counters are recorded where things happen (cycles, customers,
//! mail); gauges that describe stored state (reports by state, mail waiting) are read from the
//! database when `/metrics` is scraped.

use crate::policy::ReportState;
use crate::Service;
use anyhow::Result;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder on first use and returns its handle.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder was installed first; then ours simply stays empty.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// The Prometheus text exposition, with state gauges refreshed from the database.
pub async fn render(svc: &Service) -> Result<String> {
    let handle = install();
    let by_state = crate::store::reports::count_by_state(&svc.db).await?;
    for state in ReportState::ALL {
        let n = by_state.get(&state).copied().unwrap_or(0);
        metrics::gauge!("retentiond_reports", "state" => state.as_str()).set(n as f64);
    }
    metrics::gauge!("retentiond_mail_waiting").set(crate::mail::pending_count(svc).await? as f64);
    Ok(handle.render())
}
