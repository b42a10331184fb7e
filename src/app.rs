//! The composition root: the one way the service is put together and run. `retentiond run`,
//! `demo`, the benchmark and the tests all build an [`App`] and run it, so what they exercise is
//! what production runs: the venue schedules, the web pages and the mail sender in one process,
//! the pages, `/healthz` and mail on connections of their own. SIGTERM or SIGINT stops new work;
//! cycles finish the batch in hand; the web server drains; what can be sent is flushed; then the
//! process exits 0.

use crate::config::{Config, CONNECTIONS_FOR_PAGES};
use crate::db::{Db, InstanceGuard};
use crate::fleet::Fleet;
use crate::mail::{self, Mailer};
use crate::{migrate, scheduler, web, Service};
use anyhow::{Context, Result};
use secrecy::ExposeSecret;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

/// The service, ready to run: its cycles' pool and configuration, and the listener its pages
/// answer on.
pub struct App {
    svc: Service,
    listener: TcpListener,
    /// Held while the app lives: one daemon per SQLite database file.
    _instance: Option<InstanceGuard>,
}

impl App {
    /// The service `config` describes, as `retentiond run` starts it: the cycles' pool (what
    /// `database.max_connections` leaves once the pages' connections are kept aside) on a
    /// database whose retentiond tables are current, one daemon per SQLite file, the metrics
    /// recorder, and the listener on `http.bind`.
    pub async fn build(config: Config) -> Result<App> {
        let db = Db::connect_sized(
            config.database_url.expose_secret(),
            cycles_pool_size(&config),
        )
        .await?;
        migrate::ensure_current(&db).await?;
        let instance = db.daemon_guard()?;
        let listener = TcpListener::bind(&config.http.bind)
            .await
            .with_context(|| format!("cannot listen on http.bind {}", config.http.bind))?;
        let mut app = App::with_service(Service::new(db, config), listener);
        app._instance = Some(instance);
        Ok(app)
    }

    /// The app around a service already made (a test's database, configuration and clock) on
    /// a listener already bound (a test binds port 0 first, so that `http.public_url` can name
    /// the port).
    pub fn with_service(svc: Service, listener: TcpListener) -> App {
        crate::metrics::install();
        App {
            svc,
            listener,
            _instance: None,
        }
    }

    /// The service the app runs (the demo and the tests run cycles on it before or beside).
    pub fn service(&self) -> &Service {
        &self.svc
    }

    /// Where the pages answer.
    pub fn address(&self) -> Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Runs the whole service until `stop` completes (the signal handler in production, a
    /// trigger in tests), then shuts down as the module header says.
    pub async fn run(self, stop: impl Future<Output = ()>) -> Result<()> {
        run(self.svc, self.listener, stop).await
    }

    /// Serves the pages alone (no schedule, no mail sender) until `stop` completes: tests of
    /// the pages that drive the cycles themselves, and the benchmark's page server.
    pub async fn serve_pages(self, stop: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        web::serve(self.listener, self.svc, stop)
            .await
            .context("web server")
    }
}

/// The pool the daemon's cycles use: what `database.max_connections` leaves once the pages'
/// connections are kept aside.
pub fn cycles_pool_size(config: &crate::config::Config) -> u32 {
    config.max_connections - CONNECTIONS_FOR_PAGES
}

/// How often the outbox is checked when nothing notifies the sender.
const MAIL_POLL: Duration = Duration::from_secs(15);
/// How long shutdown waits for a last delivery of queued mail.
const FINAL_FLUSH: Duration = Duration::from_secs(20);

/// The daemon until `stop` completes. The venue cycles use `svc.db` (sized by
/// [`cycles_pool_size`]); the pages, `/healthz` and mail a pool of [`CONNECTIONS_FOR_PAGES`] of
/// their own.
async fn run(svc: Service, listener: TcpListener, stop: impl Future<Output = ()>) -> Result<()> {
    let mailer = Arc::new(Mailer::from_config(&svc.config.mail)?);
    crate::journal::catch_up_on_start(&svc).await?;
    // The pages, /healthz and mail have connections of their own, so that they answer while
    // the night's cycles use every connection of theirs (SPEC 11).
    let pages = Service {
        db: Db::connect_sized(
            svc.config.database_url.expose_secret(),
            CONNECTIONS_FOR_PAGES,
        )
        .await?,
        ..svc.clone()
    };
    let mail_due = Arc::new(Notify::new());
    let tracker = TaskTracker::new();
    let fleet = Arc::new(Fleet::new(svc.clone()));
    tracker.spawn(scheduler::run_schedules(
        svc.clone(),
        fleet,
        mail_due.clone(),
    ));
    tracker.spawn(mail_loop(pages.clone(), mailer.clone(), mail_due.clone()));
    let address = listener.local_addr()?;
    let server = tokio::spawn(web::serve(
        listener,
        pages.clone(),
        svc.shutdown.clone().cancelled_owned(),
    ));
    info!(
        http.address = %address,
        venues = svc.config.venues.len(),
        max_concurrent_cycles = svc.config.schedule.max_concurrent_cycles,
        "retentiond running"
    );

    tokio::select! {
        _ = stop => info!("shutdown requested: finishing the work in hand"),
        _ = svc.shutdown.cancelled() => {}
    }
    svc.shutdown.cancel();
    tracker.close();
    tracker.wait().await;
    server
        .await
        .context("web server task")?
        .context("web server")?;
    match tokio::time::timeout(
        FINAL_FLUSH,
        mail::deliver_due(&pages, &mailer, pages.clock.now()),
    )
    .await
    {
        Ok(Ok(d)) => info!(
            mail.sent = d.sent,
            mail.failed = d.failed,
            "final mail delivery"
        ),
        Ok(Err(e)) => {
            warn!(error = %format!("{e:#}"), "final mail delivery failed; the outbox keeps it")
        }
        Err(_) => warn!("final mail delivery timed out; the outbox keeps it"),
    }
    pages.db.close().await;
    info!("retentiond stopped");
    Ok(())
}

async fn mail_loop(svc: Service, mailer: Arc<Mailer>, due: Arc<Notify>) {
    loop {
        match mail::deliver_due(&svc, &mailer, svc.clock.now()).await {
            Ok(d) if d.sent + d.failed > 0 => {
                info!(mail.sent = d.sent, mail.failed = d.failed, "mail delivery")
            }
            Ok(_) => {}
            Err(e) => warn!(error = %format!("{e:#}"), "mail delivery pass failed"),
        }
        tokio::select! {
            _ = svc.shutdown.cancelled() => return,
            _ = due.notified() => {}
            _ = tokio::time::sleep(MAIL_POLL) => {}
        }
    }
}

/// Completes on SIGTERM or SIGINT.
pub async fn signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = interrupt => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
