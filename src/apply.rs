//! Applying an approved report (SPEC 3): batches of customers, each in one transaction that
//! re-checks every customer against the policy as of the apply cycle, deletes or anonymises
//! those still eligible, and records every customer's outcome. A process killed at any moment
//! leaves each customer fully processed or untouched, and the next cycle resumes where it stopped.

use crate::audit::{self, Event};
use crate::config::{OnDelete, VenueConfig};
use crate::db::{Ident, Query, Row, Tx};
use crate::policy::{self, Action, Outcome, ReportState, Strategy};
use crate::reports::{self, Report};
use crate::selection::Scope;
use crate::{mail, Service};
use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::time::Instant;
use tracing::info;

/// What one apply run did.
#[derive(Debug, Clone, Serialize)]
pub struct ApplySummary {
    pub report_id: i64,
    pub action: Action,
    /// Outcomes recorded by this run.
    pub counts: BTreeMap<Outcome, u64>,
    /// Whether the report is now fully applied (false when stopped by shutdown).
    pub finished: bool,
    /// Batches (transactions) this run committed, and the longest one in milliseconds.
    pub batches: u64,
    pub longest_batch_ms: u64,
}

impl ApplySummary {
    pub fn processed(&self) -> u64 {
        self.counts.values().sum()
    }
}

/// Applies `report` (approved, or applying after an interrupted run) as of `at`.
pub async fn apply_report(
    svc: &Service,
    venue: &VenueConfig,
    report: &Report,
    at: DateTime<Utc>,
) -> Result<ApplySummary> {
    if report.state == ReportState::Approved {
        let mut tx = svc.db.begin().await?;
        reports::transition(&mut tx, report, ReportState::Applying, at, None).await?;
        audit::record(
            &mut tx,
            &Event {
                at,
                venue_id: venue.id,
                report_id: Some(report.id),
                event: "apply_started".into(),
                actor: "retentiond".into(),
                detail: format!(
                    "{} of {} customers",
                    report.action.as_str(),
                    report.customer_count
                ),
            },
        )
        .await?;
        tx.commit().await?;
    } else if report.state != ReportState::Applying {
        bail!(
            "report {} is {}, only an approved report can be applied",
            report.id,
            report.state
        );
    }
    if report.action != venue.action {
        bail!(
            "report {} was made for {} but venue {} is now configured to {}; cancel it",
            report.id,
            report.action.as_str(),
            venue.id,
            venue.action.as_str()
        );
    }

    let scope = Scope {
        schema: &svc.config.schema,
        venue,
        cutoff: policy::cutoff(at, venue.timezone, venue.inactive_for),
    };
    let mut counts: BTreeMap<Outcome, u64> = BTreeMap::new();
    let (mut after_id, mut batches, mut longest_batch_ms) = (i64::MIN, 0_u64, 0_u64);
    let mut sizer = policy::BatchSizer::new(svc.config.batch_size, svc.config.max_transaction_ms);
    // Start from a checkpointed log, so no earlier writer's pages land in one of our commits.
    checkpoint(svc, report.id).await;
    let mut last_checkpoint = Instant::now();
    loop {
        if svc.shutdown.is_cancelled() {
            info!(
                venue.id = venue.id,
                report.id = report.id,
                "stopping apply for shutdown; the next cycle resumes"
            );
            return Ok(ApplySummary {
                report_id: report.id,
                action: report.action,
                counts,
                finished: false,
                batches,
                longest_batch_ms,
            });
        }
        let started = Instant::now();
        let mut tx = svc.db.begin().await?;
        let begin_ms = started.elapsed().as_millis() as u64;
        let ids = next_batch(&mut tx, report.id, after_id, sizer.next()).await?;
        let next_ms = started.elapsed().as_millis() as u64 - begin_ms;
        if ids.is_empty() {
            finish(&mut tx, venue, report, at).await?;
            tx.commit().await?;
            checkpoint(svc, report.id).await;
            break;
        }
        relax_commit_flush(&mut tx).await?;
        let batch = apply_batch(svc, &mut tx, &scope, report, &ids, at)
            .await
            .with_context(|| {
                format!(
                    "report {}: a batch of {} customers failed and was rolled back",
                    report.id,
                    ids.len()
                )
            })?;
        let before_commit = Instant::now();
        tx.commit().await?;
        let commit_ms = before_commit.elapsed().as_millis() as u64;
        let duration_ms = started.elapsed().as_millis() as u64;
        after_id = *ids.last().expect("a batch is never empty");
        batches += 1;
        longest_batch_ms = longest_batch_ms.max(duration_ms);
        // Sized by the work before the commit: on PostgreSQL the commit does not wait for the
        // flush, and SQLite's automatic WAL checkpoint runs in the commit call but after the
        // write lock is released, so neither keeps the box office waiting.
        sizer.observe(ids.len() as u32, duration_ms.saturating_sub(commit_ms));
        for (outcome, n) in &batch {
            *counts.entry(*outcome).or_default() += n;
            metrics::counter!("retentiond_customers_total", "outcome" => outcome.as_str())
                .increment(*n);
        }
        if last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
            checkpoint(svc, report.id).await;
            last_checkpoint = Instant::now();
        }
        info!(
            venue.id = venue.id,
            report.id = report.id,
            batch.size = ids.len(),
            batch.first_customer_id = ids[0],
            duration_ms,
            begin_ms,
            next_ms,
            commit_ms,
            "batch applied"
        );
    }
    Ok(ApplySummary {
        report_id: report.id,
        action: report.action,
        counts,
        finished: true,
        batches,
        longest_batch_ms,
    })
}

/// How often apply checkpoints SQLite's write-ahead log between batches: a checkpoint after
/// every commit rewrote the same pages batch after batch (a third of a delete's time), and one
/// inside a commit made that commit look as long as the copy.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// Checkpoints SQLite's write-ahead log between batches. Only speed depends on it (SQLite's
/// automatic checkpoint is the backstop), so a failure is logged and apply goes on.
async fn checkpoint(svc: &Service, report_id: i64) {
    let started = Instant::now();
    match svc.db.checkpoint_wal().await {
        Ok(()) => tracing::debug!(
            report.id = report_id,
            checkpoint_ms = started.elapsed().as_millis() as u64,
            "checkpointed"
        ),
        Err(e) => {
            tracing::warn!(report.id = report_id, error = %e, "cannot checkpoint the write-ahead log")
        }
    }
}

/// On PostgreSQL, a batch's commit does not wait for its WAL to reach the disk
/// (`synchronous_commit = off` for this transaction only). Its row locks are then released at
/// once instead of after the flush, which under a checkpoint took up to 640 ms with the box
/// office waiting. Nothing is given up that matters here: the batch is still atomic, and a
/// database crash can only lose the last batches whole (customers and their recorded outcomes
/// together), which the next cycle then applies again. The report's completion (and its
/// confirmation email) commits synchronously, which flushes every batch before it.
async fn relax_commit_flush(tx: &mut Tx) -> Result<()> {
    if tx.backend() == crate::db::Backend::Postgres {
        tx.execute(&Query::new("SET LOCAL synchronous_commit = off"))
            .await?;
    }
    Ok(())
}

/// The next unprocessed customers above `after_id` (keyset: each batch starts where the last
/// ended, so a large report is read once, not once per batch).
async fn next_batch(tx: &mut Tx, report_id: i64, after_id: i64, size: u32) -> Result<Vec<i64>> {
    let mut q = Query::new("SELECT customer_id FROM retention_report_items WHERE report_id = ");
    q.bind(report_id)
        .push(" AND customer_id > ")
        .bind(after_id)
        .push(" AND outcome IS NULL ORDER BY customer_id LIMIT ")
        .bind(i64::from(size));
    tx.fetch_all(&q).await?.iter().map(|r| r.i64(0)).collect()
}

/// Marks the report applied once every customer has an outcome, with the ledger entry.
/// The approvers' confirmation is queued in the same transaction, so exactly one is sent.
async fn finish(
    tx: &mut Tx,
    venue: &VenueConfig,
    report: &Report,
    at: DateTime<Utc>,
) -> Result<()> {
    let current = reports::get_in(tx, report.id)
        .await?
        .context("report vanished")?;
    reports::transition(tx, &current, ReportState::Applied, at, None).await?;
    let mut q =
        Query::new("SELECT outcome, COUNT(*) FROM retention_report_items WHERE report_id = ");
    q.bind(report.id).push(" GROUP BY outcome ORDER BY outcome");
    let detail = tx
        .fetch_all(&q)
        .await?
        .iter()
        .map(|r| Ok(format!("{} {}", r.text(0)?, r.i64(1)?)))
        .collect::<Result<Vec<_>>>()?
        .join(", ");
    for approver in &venue.approvers {
        let message = mail::Outgoing {
            kind: mail::Kind::Applied,
            venue_id: venue.id,
            report_id: Some(report.id),
            recipient: approver,
            detail: None,
        };
        mail::queue(tx, &message, at).await?;
    }
    audit::record(
        tx,
        &Event {
            at,
            venue_id: report.venue_id,
            report_id: Some(report.id),
            event: "applied".into(),
            actor: "retentiond".into(),
            detail,
        },
    )
    .await
}

/// One batch inside `tx`: re-check, act on those still eligible, record every outcome.
async fn apply_batch(
    svc: &Service,
    tx: &mut Tx,
    scope: &Scope<'_>,
    report: &Report,
    ids: &[i64],
    at: DateTime<Utc>,
) -> Result<BTreeMap<Outcome, u64>> {
    let phase = Instant::now();
    // An anonymise batch carries the columns to hash through the re-check, reading each row once.
    let carry: Vec<&Ident> = match report.action {
        Action::Anonymise => hashed_columns(scope.venue),
        Action::Delete => Vec::new(),
    };
    let still = crate::selection::recheck(tx, scope, ids, &carry).await?;
    let eligible_set: HashSet<i64> = still.iter().map(|r| r.i64(0)).collect::<Result<_>>()?;
    let recheck_ms = phase.elapsed().as_millis() as u64;
    let eligible: Vec<i64> = ids
        .iter()
        .copied()
        .filter(|id| eligible_set.contains(id))
        .collect();
    let skipped: Vec<i64> = ids
        .iter()
        .copied()
        .filter(|id| !eligible_set.contains(id))
        .collect();

    let mut outcomes: BTreeMap<Outcome, Vec<i64>> = BTreeMap::new();
    if !skipped.is_empty() {
        for (id, outcome) in classify_skipped(tx, scope, &skipped).await? {
            outcomes.entry(outcome).or_default().push(id);
        }
    }
    let phase = Instant::now();
    if !eligible.is_empty() {
        match report.action {
            Action::Delete => delete_customers(tx, scope, &eligible, at).await?,
            Action::Anonymise => {
                anonymise_customers(svc, tx, scope, report.id, &eligible, &still, at).await?
            }
        }
        let done = if report.action == Action::Delete {
            Outcome::Deleted
        } else {
            Outcome::Anonymised
        };
        outcomes.insert(done, eligible);
    }
    let action_ms = phase.elapsed().as_millis() as u64;
    let phase = Instant::now();
    let backend = tx.backend();
    let mut counts = BTreeMap::new();
    for (outcome, ids) in outcomes {
        let mut q = Query::new("UPDATE retention_report_items SET outcome = ");
        q.bind(outcome.as_str())
            .push(", processed_at = ")
            .bind(at)
            .push(" WHERE report_id = ")
            .bind(report.id);
        // Only items still without an outcome: a second process would update fewer rows.
        q.push(" AND outcome IS NULL AND customer_id");
        backend.push_in_ids(&mut q, &ids);
        let updated = tx.execute(&q).await?;
        if updated != ids.len() as u64 {
            bail!("recorded {updated} outcomes for {} customers; another process is applying this report", ids.len());
        }
        counts.insert(outcome, updated);
    }
    tracing::debug!(
        report.id = report.id,
        recheck_ms,
        action_ms,
        record_ms = phase.elapsed().as_millis() as u64,
        "batch phases"
    );
    Ok(counts)
}

/// Why each of `ids` is no longer a candidate.
async fn classify_skipped(
    tx: &mut Tx,
    scope: &Scope<'_>,
    ids: &[i64],
) -> Result<Vec<(i64, Outcome)>> {
    let s = scope.schema;
    let hold = s.legal_hold.as_ref().map_or("0".to_string(), |h| {
        format!("COALESCE(CAST({} AS INTEGER), 0)", h.q())
    });
    let mut q = Query::new(&format!(
        "SELECT {id}, {venue}, {hold} FROM {customers} WHERE {id}",
        id = s.customer_id.q(),
        venue = s.customer_venue.q(),
        customers = s.customers.q()
    ));
    tx.backend().push_in_ids(&mut q, ids);
    let mut found = BTreeMap::new();
    for row in tx.fetch_all(&q).await? {
        found.insert(
            row.i64(0)?,
            (row.i64(1)? == scope.venue.id, row.i64(2)? != 0),
        );
    }
    Ok(ids
        .iter()
        .map(|id| {
            let outcome = match found.get(id) {
                None => Outcome::for_skipped(false, false, false),
                Some(&(same_venue, on_hold)) => Outcome::for_skipped(true, same_venue, on_hold),
            };
            (*id, outcome)
        })
        .collect())
}

/// Delete: references reassigned to the Unknown Customer or deleted, then the customers.
async fn delete_customers(
    tx: &mut Tx,
    scope: &Scope<'_>,
    ids: &[i64],
    at: DateTime<Utc>,
) -> Result<()> {
    let s = scope.schema;
    let backend = tx.backend();
    let needs_unknown = s
        .references
        .iter()
        .any(|r| r.on_delete == OnDelete::Reassign);
    let unknown = if needs_unknown {
        Some(unknown_customer(tx, scope, at).await?)
    } else {
        None
    };
    for reference in &s.references {
        let mut q = match (reference.on_delete, unknown) {
            (OnDelete::Reassign, Some(unknown)) => {
                let mut q = Query::new(&format!(
                    "UPDATE {} SET {} = ",
                    reference.table.q(),
                    reference.column.q()
                ));
                q.bind(unknown)
                    .push(&format!(" WHERE {}", reference.column.q()));
                q
            }
            _ => Query::new(&format!(
                "DELETE FROM {} WHERE {}",
                reference.table.q(),
                reference.column.q()
            )),
        };
        backend.push_in_ids(&mut q, ids);
        tx.execute(&q)
            .await
            .with_context(|| format!("updating {}.{}", reference.table, reference.column))?;
    }
    let mut q = Query::new(&format!(
        "DELETE FROM {} WHERE {}",
        s.customers.q(),
        s.customer_id.q()
    ));
    backend.push_in_ids(&mut q, ids);
    let deleted = tx
        .execute(&q)
        .await
        .with_context(|| format!("deleting from {}", s.customers))?;
    if deleted != ids.len() as u64 {
        bail!("deleted {deleted} of {} customers; rolled back", ids.len());
    }
    Ok(())
}

/// The venue's Unknown Customer: configured, remembered, or created now (inside the batch's
/// transaction, so it is created exactly once) and remembered.
async fn unknown_customer(tx: &mut Tx, scope: &Scope<'_>, at: DateTime<Utc>) -> Result<i64> {
    let s = scope.schema;
    let venue = scope.venue;
    if let Some(id) = venue.unknown_customer_id {
        if !is_customer_of_venue(tx, scope, id).await? {
            bail!(
                "venues.unknown_customer_id {id} is not a customer of venue {}",
                venue.id
            );
        }
        return Ok(id);
    }
    let mut q = Query::new("SELECT customer_id FROM retention_unknown_customers WHERE venue_id = ");
    q.bind(venue.id);
    if let Some(row) = tx.fetch_optional(&q).await? {
        let id = row.i64(0)?;
        if !is_customer_of_venue(tx, scope, id).await? {
            bail!("the Unknown Customer record {id} of venue {} no longer exists; restore it or set unknown_customer_id", venue.id);
        }
        return Ok(id);
    }
    let mut columns = vec![s.customer_venue.q(), s.customer_created_at.q()];
    let mut q = Query::new("");
    let mut values = vec![q.param(venue.id), q.param(at)];
    let labels: &[&str] = if s.display_name.len() >= 2 {
        &["Unknown", "Customer"]
    } else {
        &["Unknown Customer"]
    };
    for (column, label) in s.display_name.iter().zip(labels) {
        columns.push(column.q());
        values.push(q.param(*label));
    }
    q.push(&format!(
        "INSERT INTO {} ({}) VALUES ({}) RETURNING {}",
        s.customers.q(),
        columns.join(", "),
        values.join(", "),
        s.customer_id.q()
    ));
    let id = tx
        .fetch_one(&q)
        .await
        .with_context(|| {
            format!(
                "cannot create the Unknown Customer record of venue {}; set unknown_customer_id",
                venue.id
            )
        })?
        .i64(0)?;
    let mut q = Query::new(
        "INSERT INTO retention_unknown_customers (venue_id, customer_id, created_at) VALUES (",
    );
    q.bind(venue.id)
        .push(", ")
        .bind(id)
        .push(", ")
        .bind(at)
        .push(")");
    tx.execute(&q).await?;
    info!(
        venue.id = venue.id,
        customer.id = id,
        "created the Unknown Customer record"
    );
    Ok(id)
}

async fn is_customer_of_venue(tx: &mut Tx, scope: &Scope<'_>, id: i64) -> Result<bool> {
    let q = crate::selection::customer_of_venue(scope.schema, scope.venue.id, id);
    Ok(tx.fetch_one(&q).await?.i64(0)? == 1)
}

/// Anonymise: every classified column gets its strategy, set-based for the whole batch; keyed
/// hashes are computed here (SQLite has no HMAC) and bound as one list.
async fn anonymise_customers(
    svc: &Service,
    tx: &mut Tx,
    scope: &Scope<'_>,
    report_id: i64,
    ids: &[i64],
    carried: &[Row],
    at: DateTime<Utc>,
) -> Result<()> {
    let s = scope.schema;
    let backend = tx.backend();
    let table = s.customers.q();
    let qualified = |column: &crate::db::Ident| format!("{table}.{}", column.q());
    let mut q = Query::new(&format!("UPDATE {table} SET "));
    let mut sets = Vec::new();
    let mut hashed = Vec::new();
    for (column, strategy) in &scope.venue.anonymise {
        let target = column.q();
        match strategy {
            Strategy::Keep => {}
            Strategy::Null => sets.push(format!("{target} = NULL")),
            Strategy::Redact(text) => {
                let p = q.param(text.as_str());
                sets.push(format!("{target} = {p}"));
            }
            Strategy::Year => sets.push(format!(
                "{target} = {}",
                backend.year_only(&qualified(column))
            )),
            Strategy::Prefix(n) => {
                sets.push(format!("{target} = substr({}, 1, {n})", qualified(column)))
            }
            Strategy::Hash => hashed.push(column),
        }
    }
    if !hashed.is_empty() {
        let key = svc
            .config
            .hash_key
            .as_ref()
            .context("secrets.hash_key is required for the hash strategy")?;
        let rows = carried;
        let mut row_ids = Vec::with_capacity(rows.len());
        let mut columns: Vec<Vec<Option<String>>> =
            vec![Vec::with_capacity(rows.len()); hashed.len()];
        for row in rows {
            row_ids.push(row.i64(0)?);
            for (i, column) in columns.iter_mut().enumerate() {
                column.push(
                    row.get(i + 1)
                        .to_text()
                        .map(|v| policy::keyed_hash(key.expose_secret().as_bytes(), &v)),
                );
            }
        }
        for (i, column) in hashed.iter().enumerate() {
            sets.push(format!("{} = v.v{i}", column.q()));
        }
        q.push(&sets.join(", ")).push(" FROM ");
        backend.push_values_source(&mut q, row_ids, columns);
        q.push(&format!(" WHERE {} = v.id", qualified(&s.customer_id)));
    } else if !sets.is_empty() {
        q.push(&sets.join(", "))
            .push(&format!(" WHERE {}", s.customer_id.q()));
        backend.push_in_ids(&mut q, ids);
    }
    if !sets.is_empty() {
        let updated = tx
            .execute(&q)
            .await
            .with_context(|| format!("anonymising {}", s.customers))?;
        if updated != ids.len() as u64 {
            bail!(
                "anonymised {updated} of {} customers; rolled back",
                ids.len()
            );
        }
    }
    let mut mark = Query::new("INSERT INTO retention_anonymised (customer_id, venue_id, report_id, anonymised_at) SELECT ids.id, ");
    mark.bind(scope.venue.id)
        .push(", ")
        .bind(report_id)
        .push(", ")
        .bind(at)
        .push(" FROM ");
    backend.push_ids_source(&mut mark, ids);
    tx.execute(&mark).await?;
    Ok(())
}

/// The columns a venue anonymises with a keyed hash, in configuration order.
fn hashed_columns(venue: &VenueConfig) -> Vec<&Ident> {
    venue
        .anonymise
        .iter()
        .filter(|(_, s)| *s == Strategy::Hash)
        .map(|(c, _)| c)
        .collect()
}

/// For dry runs: of a report's remaining customers, how many would be acted on now.
pub async fn preview(
    svc: &Service,
    venue: &VenueConfig,
    report: &Report,
    at: DateTime<Utc>,
) -> Result<(u64, u64)> {
    let scope = Scope {
        schema: &svc.config.schema,
        venue,
        cutoff: policy::cutoff(at, venue.timezone, venue.inactive_for),
    };
    let mut tx = svc.db.begin().await?;
    let mut q = Query::new("SELECT customer_id FROM retention_report_items WHERE report_id = ");
    q.bind(report.id).push(" AND outcome IS NULL");
    let remaining: Vec<i64> = tx
        .fetch_all(&q)
        .await?
        .iter()
        .map(|r| r.i64(0))
        .collect::<Result<_>>()?;
    let eligible: HashSet<i64> =
        crate::selection::still_candidates(&mut tx, &scope, &remaining).await?;
    drop(tx); // rolls back: a dry run changes nothing
    Ok((
        eligible.len() as u64,
        (remaining.len() - eligible.len()) as u64,
    ))
}
