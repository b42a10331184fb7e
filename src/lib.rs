//! retentiond: keeps venues' customer databases in line with their data-retention policies.
//!
//! The loop reads off the modules: [`app`] puts the service together, [`config`] says what each
//! venue's policy is, [`policy`] holds the pure rules (cutoff, strategies, report states and what
//! each change of state causes), [`fleet`] and [`run`] run many venues, [`cycle`] runs one
//! venue's pass, [`selection`] finds candidates, [`lifecycle`] makes reports, [`decision`] takes
//! decisions, [`transition`] changes a report's state, [`apply`] and [`erase`] delete or
//! anonymise, [`store`] keeps retentiond's own tables, [`customers`] holds the SQL of the
//! customer database built from the configuration, and [`db`] hides the SQLite, PostgreSQL
//! and MySQL differences.

pub mod app;
pub mod apply;
pub mod approval;
pub mod audit;
pub mod check;
pub mod cli;
pub mod config;
pub mod customers;
pub mod cycle;

pub mod db;
pub mod decision;
pub mod demo;
pub mod fleet;
pub mod holds;
pub mod journal;
pub mod lifecycle;
pub mod logging;
pub mod mail;
pub mod metrics;
pub mod policy;
pub mod progress;
pub mod replay;
pub mod reports;
pub mod request;
pub mod review;
pub mod run;
pub mod runtime;
pub mod scheduler;
pub mod store;
// The customer-schema modules and the migrations are used by these short paths throughout.
pub use customers::{erase, introspect, reference, selection, whatif};
pub use store::migrate;
pub mod suggest;
pub mod transition;
pub mod web;
pub mod wording;

use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// What every part of the service works with: the database, the configuration, the clock, and
/// the shutdown signal that long work checks between batches.
#[derive(Clone)]
pub struct Service {
    pub db: db::Db,
    pub config: Arc<config::Config>,
    pub shutdown: CancellationToken,
    /// The time the pages and commands act at: the system's, or one a test sets.
    pub clock: Clock,
    /// Where long work reports its progress (a terminal's progress bar, or nowhere).
    pub progress: progress::Progress,
}

impl Service {
    pub fn new(db: db::Db, config: config::Config) -> Self {
        Service {
            db,
            config: Arc::new(config),
            shutdown: CancellationToken::new(),
            clock: Clock::default(),
            progress: progress::Progress::default(),
        }
    }
}

/// The service clock: now, to the second (stored times are whole seconds), or a time a test
/// sets and moves on.
#[derive(Clone, Default)]
pub struct Clock(Option<Arc<std::sync::Mutex<chrono::DateTime<chrono::Utc>>>>);

impl Clock {
    /// A clock stopped at `at` until [`Clock::set`] moves it.
    pub fn fixed(at: chrono::DateTime<chrono::Utc>) -> Clock {
        Clock(Some(Arc::new(std::sync::Mutex::new(at))))
    }

    /// Moves a fixed clock to `at` (a system clock ignores it).
    pub fn set(&self, at: chrono::DateTime<chrono::Utc>) {
        if let Some(time) = &self.0 {
            *time.lock().expect("clock lock") = at;
        }
    }

    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        use chrono::SubsecRound;
        match &self.0 {
            Some(_) => self.precise_now(),
            None => self.precise_now().trunc_subsecs(0),
        }
    }

    /// The time with its fraction of a second, for waiting until an instant: a wait computed
    /// from [`Clock::now`], which is whole seconds, ends as late as that fraction.
    pub fn precise_now(&self) -> chrono::DateTime<chrono::Utc> {
        match &self.0 {
            Some(time) => *time.lock().expect("clock lock"),
            None => chrono::Utc::now(),
        }
    }
}
