//! retentiond: keeps venues' customer databases in line with their data-retention policies.
//!
//! The loop reads off the modules: [`config`] says what each venue's policy is, [`policy`] holds
//! the pure rules (cutoff, strategies, report states), [`selection`] finds candidates,
//! [`reports`] freezes and decides reports, [`apply`] deletes or anonymises, [`cycle`] runs one
//! venue's pass, [`audit`] is the ledger, and [`db`] hides the SQLite/PostgreSQL differences.

pub mod apply;
pub mod approval;
pub mod audit;
pub mod check;
pub mod cli;
pub mod config;
pub mod cycle;
pub mod daemon;
pub mod db;
pub mod demo;
pub mod erase;
pub mod introspect;
pub mod journal;
pub mod logging;
pub mod mail;
pub mod metrics;
pub mod migrate;
pub mod policy;
pub mod reference;
pub mod replay;
pub mod reports;
pub mod review;
pub mod scheduler;
pub mod selection;
pub mod web;

use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// What every part of the service works with: the database, the configuration, and the
/// shutdown signal that long work checks between batches.
#[derive(Clone)]
pub struct Service {
    pub db: db::Db,
    pub config: Arc<config::Config>,
    pub shutdown: CancellationToken,
}

impl Service {
    pub fn new(db: db::Db, config: config::Config) -> Self {
        Service {
            db,
            config: Arc::new(config),
            shutdown: CancellationToken::new(),
        }
    }
}
