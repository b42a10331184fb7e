//! The integration suite in one test binary (it links once): each module is one area, run
//! against the real databases (SQLite always, PostgreSQL with RETENTIOND_TEST_POSTGRES_URL), real
//! SMTP listeners, the `retentiond` binary and, for the browser tests, headless Chromium.

#[macro_use]
mod common;

mod apply;
mod approval_loop;
mod browser;
mod cli;
mod config;
mod daemon;
mod erasure;
mod faults;
mod fleet;
mod holds;
mod http;
mod instances;
mod mysql_shop;
mod operations;
mod properties;
mod prospects;
mod requests;
mod review;
mod selection;
mod walkthrough;
